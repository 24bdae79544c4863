"""GET …/inventory/changes?since=N: devices added or updated since N (full representation), ids
removed, the seeds, fromVersion and version; 410 Gone outside the retained log; 400 for a bad since."""

from __future__ import annotations

import pytest

from inventory.models import InventoryChange
from tests.inventory.test_inventory_api import (
    SITE,
    by_name,
    changes_path,
    device,
    device_path,
    err,
    get_inventory,
    ok,
    post_devices,
    put_inventory,
    seed,
    version_of,
)


def changes(api, since, **params) -> dict:
    return ok(api.get(changes_path(), {"since": since, **params}), "GET", changes_path())


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


def test_devices_added_or_updated_since_a_version(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")], discoverySeeds=[seed("S")])
    v1 = version_of()
    post_devices(admin_api, [device("c", "127.0.0.3")])
    post_devices(admin_api, [device("a", "127.0.0.1", sysDescr="upgraded")])
    v3 = version_of()
    assert v3 == v1 + 2

    body = changes(admin_api, v1)
    assert set(body) == {"fromVersion", "version", "devices", "removedDeviceIds", "discoverySeeds"}
    assert body["fromVersion"] == v1 and body["version"] == v3
    assert body["removedDeviceIds"] == []
    full = by_name(get_inventory(admin_api))
    # The full representation, exactly as GET inventory shows it.
    assert sorted(body["devices"], key=lambda d: d["sysName"]) == [full["a"], full["c"]]
    assert full["a"]["sysDescr"] == "upgraded"
    assert [s["name"] for s in body["discoverySeeds"]] == ["S"]
    assert body["discoverySeeds"] == get_inventory(admin_api)["discoverySeeds"]

    body = changes(admin_api, v1 + 1)
    assert [d["sysName"] for d in body["devices"]] == ["a"]
    assert body["fromVersion"] == v1 + 1

    body = changes(admin_api, v1 - 1)
    assert sorted(d["sysName"] for d in body["devices"]) == ["a", "b", "c"]


def test_since_the_current_version_is_empty(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    current = version_of()
    body = changes(admin_api, current)
    assert body["fromVersion"] == body["version"] == current
    assert body["devices"] == [] and body["removedDeviceIds"] == []


def test_an_unchanged_post_is_not_a_change(site, admin_api):
    post_devices(admin_api, [device("a", "127.0.0.1")])
    current = version_of()
    post_devices(admin_api, [device("a", "127.0.0.1")])  # lastSeen refreshed only
    body = changes(admin_api, current)
    assert body["devices"] == [] and body["version"] == current


def test_removed_device_ids(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2"), device("c", "127.0.0.3")])
    ids = {name: d["id"] for name, d in by_name(get_inventory(admin_api)).items()}
    since = version_of()
    assert admin_api.delete(device_path(ids["a"])).status_code == 204
    put_inventory(admin_api, [device("c", "127.0.0.3"), device("d", "127.0.0.4")], mode="replace")

    body = changes(admin_api, since)
    assert sorted(body["removedDeviceIds"]) == sorted([ids["a"], ids["b"]])
    assert [d["sysName"] for d in body["devices"]] == ["d"]
    assert body["version"] == since + 2


def test_removed_then_re_added_with_the_same_sys_name(site, admin_api):
    post_devices(admin_api, [device("edge-01", "127.0.0.1")])
    since = version_of()
    old_id = by_name(get_inventory(admin_api))["edge-01"]["id"]
    assert admin_api.delete(device_path(old_id)).status_code == 204
    post_devices(admin_api, [device("edge-01", "127.0.0.1")])
    new_id = by_name(get_inventory(admin_api))["edge-01"]["id"]
    assert new_id != old_id

    body = changes(admin_api, since)
    assert body["removedDeviceIds"] == [old_id]
    assert [(d["id"], d["sysName"]) for d in body["devices"]] == [(new_id, "edge-01")]


def test_410_when_since_is_older_than_the_retained_log(site, admin_api, settings):
    settings.INVENTORY_CHANGE_LOG_RETENTION = 3
    start = version_of()
    for i in range(5):
        post_devices(admin_api, [device(f"d{i}", f"127.0.0.{i + 1}")])
    current = version_of()
    assert current == start + 5
    kept = list(InventoryChange.objects.filter(site_id=SITE).values_list("version", flat=True))
    assert kept == [current - 2, current - 1, current]

    for since in (start, start + 1, current - 4, 0):
        body = err(admin_api.get(changes_path(), {"since": since}), 410, "gone")
        assert body["fields"] == {} and body["detail"]

    # The oldest answerable `since` is just before the oldest kept entry.
    body = changes(admin_api, current - 3)
    assert sorted(d["sysName"] for d in body["devices"]) == ["d2", "d3", "d4"]


def test_410_when_since_is_newer_than_the_current_version(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    current = version_of()
    for since in (current + 1, current + 1000):
        body = err(admin_api.get(changes_path(), {"since": since}), 410, "gone")
        assert body["detail"]


def test_since_the_current_version_answers_nothing_new_even_with_an_empty_log(site, admin_api):
    # A new site has a version and no log yet: only since=<that version> is answerable.
    start = version_of()
    body = changes(admin_api, start)
    assert (body["fromVersion"], body["version"], body["devices"], body["removedDeviceIds"]) == (
        start,
        start,
        [],
        [],
    )
    assert start >= 1
    err(admin_api.get(changes_path(), {"since": start - 1}), 410, "gone")
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    current = version_of()
    body = changes(admin_api, current)
    assert (body["version"], body["devices"], body["removedDeviceIds"]) == (current, [], [])
    assert [d["sysName"] for d in changes(admin_api, current - 1)["devices"]] == ["a"]


@pytest.mark.parametrize("query", ["", "?since=", "?since=abc", "?since=-1", "?since=1.5", "?since=1e3"])
def test_missing_or_garbage_since_is_400(site, admin_api, query):
    body = err(admin_api.get(changes_path() + query), 400, "validation_error")
    assert list(body["fields"]) == ["since"]


def test_changes_of_an_unknown_site_is_404(db, admin_api):
    err(admin_api.get(changes_path("nowhere"), {"since": 1}), 404, "not_found")


def test_changes_masks_and_reveals_like_the_inventory(site, admin_api, client_for):
    put_inventory(admin_api, [device("a", "127.0.0.1")])
    since = version_of()
    post_devices(admin_api, [device("a", "127.0.0.1", sysDescr="changed")])

    masked = changes(client_for("read"), since)
    assert masked["devices"][0]["agents"][0]["readCommunity"] == "****"
    revealed = changes(admin_api, since, includeCredentials="true")
    assert revealed["devices"][0]["agents"][0]["readCommunity"] == "public123"
    err(
        client_for("read").get(changes_path(), {"since": since, "includeCredentials": "true"}),
        403,
        "forbidden",
    )
    revealed = changes(client_for("instance", site=SITE), since, includeCredentials="true")
    assert revealed["devices"][0]["agents"][0]["readCommunity"] == "public123"
