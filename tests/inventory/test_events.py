"""inventory_updated: one event per change set, sent after commit to the site's group ("site.<id>"),
with the spec's fields; nothing for a no-op or a refused change."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync

from sites.models import Site
from tests.inventory.test_inventory_api import (
    ISO_Z,
    OTHER,
    SITE,
    by_name,
    device,
    device_path,
    devices_path,
    err,
    get_inventory,
    inventory_path,
    post_devices,
    put_inventory,
    seed,
    version_of,
)

ADMIN_ACTOR = "token:test admin"  # str(Actor) of the admin_api fixture's token


def pending(layer, channel: str) -> int:
    """Messages waiting on an in-memory channel (without waiting for one)."""
    queue = layer.channels.get(channel)
    return 0 if queue is None else queue.qsize()


def only_event(layer, channel: str) -> dict:
    assert pending(layer, channel) == 1
    message = async_to_sync(layer.receive)(channel)
    assert pending(layer, channel) == 0
    assert set(message) == {"type", "event"} and message["type"] == "event.message"
    return message["event"]


def assert_inventory_updated(event: dict, *, change_type: str, device_ids: list[str], source: str, by: str):
    # requestId: the X-Request-ID of the request that caused it (core.events)
    assert set(event) - {"requestId"} == {"type", "timestamp", "siteId", "payload", "seq"}
    assert isinstance(event.get("requestId", ""), str)
    # seq numbers the site's events in commit order
    assert event["seq"] == Site.objects.get(pk=SITE).event_seq
    assert event["type"] == "inventory_updated"
    assert ISO_Z.match(event["timestamp"])
    assert event["siteId"] == SITE
    payload = event["payload"]
    assert set(payload) == {"version", "changeType", "deviceIds", "source", "triggeredBy"}
    assert payload["version"] == version_of()
    assert payload["changeType"] == change_type
    assert sorted(payload["deviceIds"]) == sorted(device_ids)
    assert payload["source"] == source
    assert payload["triggeredBy"] == by


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


def test_post_that_only_adds_is_device_added(
    site, register, client_for, layer, listen, django_capture_on_commit_callbacks
):
    leader = register(SITE, "host-a")
    channel = listen(f"site.{SITE}")
    api = client_for("instance", site=SITE)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        body = post_devices(
            api,
            [device("access-sw-15", "127.0.3.15"), device("access-sw-16", "127.0.3.16")],
            source="discovery",
            instanceId=leader,
        )
        assert pending(layer, channel) == 0  # not before the commit
    assert len(callbacks) == 1
    event = only_event(layer, channel)
    assert_inventory_updated(
        event,
        change_type="device_added",
        device_ids=[d["id"] for d in body["devices"]],
        source="discovery",
        by=leader,
    )
    assert event["payload"]["version"] == body["newVersion"]


def test_post_that_only_updates_is_device_updated(
    site, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    first = post_devices(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        post_devices(admin_api, [device("a", "127.0.0.1", sysDescr="new"), device("b", "127.0.0.2")])
    assert len(callbacks) == 1
    assert_inventory_updated(
        only_event(layer, channel),
        change_type="device_updated",
        device_ids=[first["devices"][0]["id"]],
        source="api",
        by=ADMIN_ACTOR,
    )


def test_post_that_adds_and_updates_is_bulk_import(
    site, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    first = post_devices(admin_api, [device("a", "127.0.0.1")])
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True):
        body = post_devices(admin_api, [device("a", "127.0.0.1", interfaces=1), device("b", "127.0.0.2")])
    event = only_event(layer, channel)
    assert_inventory_updated(
        event,
        change_type="bulk_import",
        device_ids=[first["devices"][0]["id"], body["devices"][1]["id"]],
        source="api",
        by=ADMIN_ACTOR,
    )


def test_put_merge_is_bulk_import(site, admin_api, layer, listen, django_capture_on_commit_callbacks):
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    before = by_name(get_inventory(admin_api))
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        result = put_inventory(admin_api, [device("b", "127.0.0.2", sysDescr="x"), device("c", "127.0.0.3")])
    assert len(callbacks) == 1
    after = by_name(get_inventory(admin_api))
    event = only_event(layer, channel)
    assert_inventory_updated(
        event,
        change_type="bulk_import",
        device_ids=[before["b"]["id"], after["c"]["id"]],
        source="import",
        by=ADMIN_ACTOR,
    )
    assert event["payload"]["version"] == result["version"]


@pytest.mark.parametrize("mode", ["merge", "addOnly"])
def test_put_that_only_adds_is_still_bulk_import(
    site, admin_api, layer, listen, django_capture_on_commit_callbacks, mode
):
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True):
        put_inventory(admin_api, [device("a", "127.0.0.1")], mode=mode)
    assert_inventory_updated(
        only_event(layer, channel),
        change_type="bulk_import",
        device_ids=[by_name(get_inventory(admin_api))["a"]["id"]],
        source="import",
        by=ADMIN_ACTOR,
    )


def test_put_replace_is_full_sync(site, admin_api, layer, listen, django_capture_on_commit_callbacks):
    put_inventory(
        admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")], discoverySeeds=[seed("S1")]
    )
    before = by_name(get_inventory(admin_api))
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        put_inventory(
            admin_api, [device("b", "127.0.0.2"), device("c", "127.0.0.3")], mode="replace", discoverySeeds=[]
        )
    assert len(callbacks) == 1
    after = by_name(get_inventory(admin_api))
    assert_inventory_updated(
        only_event(layer, channel),
        change_type="full_sync",
        device_ids=[before["a"]["id"], after["c"]["id"]],
        source="import",
        by=ADMIN_ACTOR,
    )


def test_delete_is_device_removed(site, admin_api, layer, listen, django_capture_on_commit_callbacks):
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    device_id = by_name(get_inventory(admin_api))["a"]["id"]
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert admin_api.delete(device_path(device_id)).status_code == 204
        assert pending(layer, channel) == 0
    assert len(callbacks) == 1
    assert_inventory_updated(
        only_event(layer, channel),
        change_type="device_removed",
        device_ids=[device_id],
        source="api",
        by=ADMIN_ACTOR,
    )


def test_no_event_for_a_no_op(site, admin_api, layer, listen, django_capture_on_commit_callbacks):
    payload = [device("a", "127.0.0.1"), device("b", "127.0.0.2")]
    put_inventory(admin_api, payload, discoverySeeds=[seed("S1")])
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert put_inventory(admin_api, payload, discoverySeeds=[seed("S1")])["changed"] is False
        assert post_devices(admin_api, payload)["unchanged"] == 2
        assert (
            put_inventory(admin_api, [device("a", "127.0.0.1", sysDescr="x")], mode="addOnly")["changed"]
            is False
        )
    assert callbacks == []
    assert pending(layer, channel) == 0


def test_no_event_for_a_refused_change(
    site, admin_api, register, client_for, layer, listen, django_capture_on_commit_callbacks
):
    register(SITE, "host-a")
    follower = register(SITE, "host-b")
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    channel = listen(f"site.{SITE}")
    bad = device("b", "127.0.0.2")
    bad["agents"][0]["version"] = "2"
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_api.put(
            inventory_path(), {"devices": [device("c", "127.0.0.3"), bad]}, format="json"
        )
        err(response, 400, "validation_error")
        response = client_for("instance", site=SITE).post(
            devices_path(),
            {"devices": [device("d", "127.0.0.4")], "source": "discovery", "instanceId": follower},
            format="json",
        )
        err(response, 409, "not_leader")
        assert post_devices(admin_api, [bad])["failed"] == 1
        err(admin_api.delete(device_path("dev_unknown")), 404, "not_found")
        err(admin_api.post(devices_path(), {"devices": "nope"}, format="json"), 400)
    assert callbacks == []
    assert pending(layer, channel) == 0


def test_one_event_per_change_set(site, admin_api, layer, listen, django_capture_on_commit_callbacks):
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        put_inventory(admin_api, [device(f"d{i}", f"127.0.1.{i + 1}") for i in range(50)])
    assert len(callbacks) == 1
    event = only_event(layer, channel)
    assert len(event["payload"]["deviceIds"]) == 50

    versions = []
    for i in range(3):
        with django_capture_on_commit_callbacks(execute=True):
            post_devices(admin_api, [device(f"d{i}", f"127.0.1.{i + 1}", interfaces=i)])
        versions.append(only_event(layer, channel)["payload"]["version"])
    assert versions == [event["payload"]["version"] + n for n in (1, 2, 3)]


def test_events_go_to_the_changed_site_only(
    make_site, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    make_site(SITE)
    make_site(OTHER)
    mine, theirs = listen(f"site.{SITE}"), listen(f"site.{OTHER}")
    with django_capture_on_commit_callbacks(execute=True):
        put_inventory(admin_api, [device("a", "127.0.0.1")], site=OTHER)
    assert pending(layer, mine) == 0
    event = only_event(layer, theirs)
    assert event["siteId"] == OTHER and event["payload"]["version"] == version_of(OTHER)
