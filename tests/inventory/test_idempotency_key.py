"""Idempotency-Key on POST …/inventory/devices (the agent's queued discovery results): the first request
with a key is applied and its answer kept; a repeat answers the same and changes nothing; the same key
with another body is a 422; keys are per site and caller; two at once apply once; bad keys are 400."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.events import site_group
from core.models import AuditLog
from instances.election import leader_assign
from inventory.models import Device, IdempotencyKey, InventoryChange
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_events import pending
from tests.inventory.test_inventory_api import (
    OTHER,
    SITE,
    device,
    devices_path,
    err,
    ok,
    version_of,
)


def results(*names: str, instance_id: str = "", **extra) -> dict:
    body = {
        "devices": [device(name, f"127.0.0.{i + 1}") for i, name in enumerate(names)],
        "source": "discovery",
    }
    if instance_id:
        body["instanceId"] = instance_id
    return {**body, **extra}


def post(api, body: dict, key: str | None, site: str = SITE):
    headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
    return api.post(devices_path(site), body, format="json", **headers)


def counts(site: str = SITE) -> tuple[int, int, int, int]:
    """devices, version, change-log rows, audit rows of the site: what a change set moves."""
    return (
        Device.objects.filter(site_id=site).count(),
        version_of(site),
        InventoryChange.objects.filter(site_id=site).count(),
        AuditLog.objects.filter(site_id=site).count(),
    )


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


@pytest.fixture
def leader(site, register) -> str:
    return register(SITE, "host-a", "pod-a")


def test_a_repeat_answers_the_stored_response_and_changes_nothing(
    leader, client_for, layer, listen, django_capture_on_commit_callbacks
):
    api = client_for("instance", site=SITE)
    key = str(uuid.uuid4())
    body = results("edge-1", "edge-2", instance_id=leader)
    events = listen(site_group(SITE))
    before = counts()

    with django_capture_on_commit_callbacks(execute=True):
        first = post(api, body, key)
    answer = ok(first, "POST", devices_path())
    assert answer["added"] == 2
    assert "Idempotent-Replayed" not in first.headers
    after_first = counts()
    assert after_first == (before[0] + 2, before[1] + 1, before[2] + 1, before[3] + 1)
    assert pending(layer, events) == 1
    async_to_sync(layer.receive)(events)
    seen = {d.pk: d.last_seen for d in Device.objects.filter(site_id=SITE)}

    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            again = post(api, body, key)
        assert callbacks == []
        assert again.status_code == 200
        assert again.json() == answer  # same status and body, ids included
        assert again.headers["Idempotent-Replayed"] == "true"
    assert counts() == after_first  # no version, no change row, no audit row
    assert pending(layer, events) == 0  # no event
    assert {d.pk: d.last_seen for d in Device.objects.filter(site_id=SITE)} == seen  # not even lastSeen

    # Without the key the same body is processed: unchanged devices, no version (the old behaviour).
    plain = ok(post(api, body, None), "POST", devices_path())
    assert (plain["added"], plain["unchanged"]) == (0, 2)


def test_the_same_key_with_another_body_is_422_and_changes_nothing(leader, client_for):
    api = client_for("instance", site=SITE)
    key = str(uuid.uuid4())
    ok(post(api, results("edge-1", instance_id=leader), key), "POST", devices_path())
    before = counts()
    body = err(post(api, results("edge-1", "edge-9", instance_id=leader), key), 422, "idempotency_key_reused")
    assert "Idempotency-Key" in body["fields"]
    assert counts() == before
    assert not Device.objects.filter(sys_name="edge-9").exists()


@pytest.mark.parametrize("key", ["", "   ", "k" * 256, "bad\x7fkey"])
def test_an_empty_or_too_long_key_is_400(leader, client_for, key):
    api = client_for("instance", site=SITE)
    before = counts()
    body = err(post(api, results("edge-1", instance_id=leader), key), 400, "validation_error")
    assert "Idempotency-Key" in body["fields"]
    assert counts() == before
    assert IdempotencyKey.objects.count() == 0


def test_a_key_of_255_characters_is_fine(leader, client_for):
    api = client_for("instance", site=SITE)
    ok(post(api, results("edge-1", instance_id=leader), "k" * 255), "POST", devices_path())
    assert IdempotencyKey.objects.get().key == "k" * 255


def test_keys_are_per_site_and_per_caller(make_site, register, client_for, admin_api):
    make_site(SITE)
    make_site(OTHER)
    here = register(SITE, "host-a")
    there = register(OTHER, "host-z")
    key = "shared-key"
    api = client_for("instance")  # an unbound instance token may post for both sites' leaders
    ok(post(api, results("edge-1", instance_id=here), key), "POST", devices_path())
    # The same key in another site is another request.
    other = ok(post(api, results("edge-1", instance_id=there), key, site=OTHER), "POST", devices_path(OTHER))
    assert other["added"] == 1 and Device.objects.filter(site_id=OTHER).count() == 1
    # The same key from another caller of the same site (an admin, no instanceId) is its own too.
    mine = ok(post(admin_api, results("edge-7"), key), "POST", devices_path())
    assert mine["added"] == 1
    assert IdempotencyKey.objects.count() == 3


def test_the_key_holds_across_a_new_token_of_the_same_instance(leader, client_for):
    """An instance that registers again gets a new token; its queued batch must still be stored once."""
    key = str(uuid.uuid4())
    body = results("edge-1", instance_id=leader)
    first = ok(post(client_for("instance", site=SITE), body, key), "POST", devices_path())
    second_token = client_for("instance", site=SITE)  # (its creation is audited: counted before)
    before = counts()
    again = post(second_token, body, key)
    assert again.json() == first and again.headers["Idempotent-Replayed"] == "true"
    assert counts() == before


def test_an_error_is_not_stored_so_a_repeat_is_processed_afresh(site, register, client_for):
    leader = register(SITE, "host-a", "pod-a")
    follower = register(SITE, "host-b", "pod-b")
    api = client_for("instance", site=SITE)
    key = str(uuid.uuid4())
    body = results("edge-1", instance_id=follower)
    err(post(api, body, key), 409, "not_leader")
    assert IdempotencyKey.objects.count() == 0
    # The follower becomes the leader; the same batch with the same key now goes through.
    leader_assign(site_id=SITE, instance_id=follower, actor=TEST_ACTOR)
    assert ok(post(api, body, key), "POST", devices_path())["added"] == 1
    assert leader != follower


@pytest.mark.django_db(transaction=True)
def test_two_requests_with_the_same_key_at_once_apply_once(make_site, register, make_token):
    from rest_framework.test import APIClient

    make_site(SITE)
    leader = register(SITE, "host-a")
    token = make_token(["instance"], site=SITE)
    key = str(uuid.uuid4())
    body = results("edge-1", "edge-2", "edge-3", instance_id=leader)
    before = counts()
    answers: list = []

    def send() -> None:
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        try:
            response = post(api, body, key)
            answers.append(
                (response.status_code, response.json(), response.headers.get("Idempotent-Replayed"))
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(2)]
    # Hold the site row so that both requests are inside the view, waiting on the same lock, before
    # either may go on: then they really are concurrent.
    with transaction.atomic():
        Site.objects.select_for_update().get(pk=SITE)
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with connection.cursor() as cursor:
                # This database's sessions only (other test runs share the server); the statistics are
                # a snapshot per transaction unless cleared.
                cursor.execute("SELECT pg_stat_clear_snapshot()")
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
                if cursor.fetchone()[0] >= 2:
                    break
            time.sleep(0.05)
        else:
            raise AssertionError("the two requests never waited on the site lock")
    for thread in threads:
        thread.join(30)
    assert len(answers) == 2, answers
    (status_a, body_a, replay_a), (status_b, body_b, replay_b) = answers
    assert status_a == status_b == 200
    assert body_a == body_b and body_a["added"] == 3
    assert sorted([replay_a or "", replay_b or ""]) == ["", "true"]  # one applied, one replayed
    assert counts() == (before[0] + 3, before[1] + 1, before[2] + 1, before[3] + 1)


def test_keys_older_than_a_day_are_pruned_when_a_key_is_stored(leader, client_for, settings):
    api = client_for("instance", site=SITE)
    ok(post(api, results("edge-1", instance_id=leader), "old-key"), "POST", devices_path())
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, minutes=1))
    ok(post(api, results("edge-2", instance_id=leader), "recent-key"), "POST", devices_path())
    ok(post(api, results("edge-3", instance_id=leader), "new-key"), "POST", devices_path())
    assert sorted(IdempotencyKey.objects.values_list("key", flat=True)) == ["new-key", "recent-key"]
    # A key younger than a day stays, and still replays.
    IdempotencyKey.objects.filter(key="recent-key").update(created_at=timezone.now() - timedelta(hours=23))
    ok(post(api, results("edge-4", instance_id=leader), "newer-key"), "POST", devices_path())
    again = post(api, results("edge-2", instance_id=leader), "recent-key")
    assert again.headers["Idempotent-Replayed"] == "true"
    # An expired key is forgotten: the same key is a new request then.
    assert (
        post(api, results("edge-1", instance_id=leader), "old-key").headers.get("Idempotent-Replayed") is None
    )


def test_a_replay_costs_the_same_queries_however_many_keys_and_devices(leader, client_for):
    api = client_for("instance", site=SITE)

    def replay_queries(key: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            response = post(api, results("edge-1", instance_id=leader), key)
        assert response.headers["Idempotent-Replayed"] == "true"
        return len(captured)

    ok(post(api, results("edge-1", instance_id=leader), "probe"), "POST", devices_path())
    small = replay_queries("probe")
    for index in range(30):
        names = [f"bulk-{index}-{n}" for n in range(5)]
        ok(post(api, results(*names, instance_id=leader), f"key-{index}"), "POST", devices_path())
    assert replay_queries("probe") == small
