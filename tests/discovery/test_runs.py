"""Discovery runs: trigger → run_discovery to the leader (or pending until there is one), redispatch on a
leader change, progress and completion frames through the real consumer, results posted with runId,
timeouts, the runs API (bodies, 400s, 404s, 409s, scopes)."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.utils import timezone

from core.models import AuditLog
from discovery import runs
from discovery.models import DiscoveryRun, RunStatus
from instances.election import leader_assign
from instances.frames import FrameRejected
from instances.models import Instance
from instances.services import instance_deregister
from inventory.models import DiscoverySeed
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import device
from tests.openapi import assert_matches_schema

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
RUNS = f"/api/v1/sites/{SITE}/discovery-runs"
CORE = {  # two /24 networks: 512 estimated targets, as the spec's example
    "name": "Core Network",
    "targets": ["10.0.1.0/24", "10.0.2.0/24"],
    "snmpConfig": {"version": 2, "readCommunity": "c0mmunity-1"},
}
EDGE = {
    "name": "Edge",
    "targets": ["127.0.0.1-127.0.0.20", "127.0.1.1"],
    "snmpConfig": {"version": 2, "readCommunity": "c0mmunity-2"},
}
RUN_FIELDS = {
    "runId",
    "seedId",
    "seedIds",
    "status",
    "startedAt",
    "completedAt",
    "targetsScanned",
    "devicesFound",
    "devicesNew",
    "devicesUpdated",
    "errors",
    "errorDetail",
    "triggeredBy",
    "leaderInstance",
    "estimatedTargets",
    "createdAt",
    "dispatchedAt",
}


def run_path(seed_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/discovery-seeds/{seed_id}/run"


def ok(response, method: str, path: str, status: int = 200) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert_matches_schema(response, method, path)
    return response.json()


def err(response, status: int, code: str, method: str, path: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert_matches_schema(response, method, path)
    body = response.json()
    assert body["error"] == code, body
    return body


def create_seed(api, body: dict, site: str = SITE, **extra) -> str:
    path = f"/api/v1/sites/{site}/discovery-seeds"
    return ok(api.post(path, {**body, **extra}, format="json"), "POST", path, 201)["id"]


def trigger(api, seed_id: str, site: str = SITE) -> dict:
    return ok(api.post(run_path(seed_id, site)), "POST", run_path(seed_id, site), 202)


def get_run(api, run_id: str, site: str = SITE) -> dict:
    path = f"/api/v1/sites/{site}/discovery-runs/{run_id}"
    body = ok(api.get(path), "GET", path)
    assert set(body) == RUN_FIELDS
    return body


def get_seed(api, seed_id: str) -> dict:
    path = f"/api/v1/sites/{SITE}/discovery-seeds/{seed_id}"
    return ok(api.get(path), "GET", path)


# --- the in-memory channel layer ----------------------------------------------------------------------


def drain(layer, channel: str) -> list[dict]:
    """Every event waiting on an in-memory channel (without waiting for more)."""
    events = []
    while (queue := layer.channels.get(channel)) is not None and queue.qsize():
        message = async_to_sync(layer.receive)(channel)
        assert message["type"] == "event.message"
        events.append(message["event"])
    return events


def of_type(events: list[dict], event_type: str) -> list[dict]:
    return [event for event in events if event["type"] == event_type]


def assert_run_discovery(event: dict, *, run_id: str, seed_ids: list[str], triggered_by: str = "manual"):
    # requestId: the X-Request-ID of the request that caused it (core.events)
    assert set(event) - {"requestId"} == {"type", "timestamp", "siteId", "payload", "seq"}
    assert isinstance(event.get("requestId", ""), str)
    assert event["type"] == "run_discovery"
    assert ISO_Z.match(event["timestamp"])
    assert event["siteId"] == SITE
    assert isinstance(event["seq"], int) and event["seq"] >= 1
    assert event["payload"] == {"runId": run_id, "seedIds": seed_ids, "triggeredBy": triggered_by}


@pytest.fixture
def site(make_site) -> str:
    make_site(OTHER)
    return make_site(SITE)


@pytest.fixture
def core_seed(site, admin_api) -> str:
    return create_seed(admin_api, CORE)


# --- trigger and dispatch -----------------------------------------------------------------------------


def test_trigger_with_a_leader_dispatches_run_discovery_to_the_leader(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    leader = register(SITE, "host-a")
    follower = register(SITE, "host-b")
    to_leader, to_follower, to_site = (
        listen(f"instance.{leader}"),
        listen(f"instance.{follower}"),
        listen(f"site.{SITE}"),
    )
    with django_capture_on_commit_callbacks(execute=True):
        body = trigger(admin_api, core_seed)
        assert drain(layer, to_leader) == []  # not before the commit
    assert set(body) == {"status", "runId", "estimatedTargets", "leaderInstance"}
    assert body["status"] == "started"
    assert body["runId"].startswith("run_")
    assert body["estimatedTargets"] == 512
    assert body["leaderInstance"] == leader

    [event] = drain(layer, to_leader)
    assert_run_discovery(event, run_id=body["runId"], seed_ids=[core_seed])
    assert event["seq"] == Site.objects.get(pk=SITE).event_seq
    assert drain(layer, to_follower) == [] and drain(layer, to_site) == []

    run = DiscoveryRun.objects.get(pk=body["runId"])
    assert run.status == RunStatus.DISPATCHED and run.dispatched_to == leader
    assert run.leader_term == Site.objects.get(pk=SITE).leader_term
    assert run.triggered_by == "manual" and run.requested_by == "token:test admin"
    audit = AuditLog.objects.get(action="discovery_run_started", entity_id=run.pk)
    assert audit.site_id == SITE and audit.instance_id == leader
    assert audit.details["seedIds"] == [core_seed] and audit.details["status"] == "dispatched"

    got = get_run(admin_api, run.pk)
    assert got["status"] == "dispatched"
    assert got["runId"] == run.pk and got["seedId"] == core_seed and got["seedIds"] == [core_seed]
    assert got["leaderInstance"] == leader and got["estimatedTargets"] == 512
    assert got["triggeredBy"] == "manual"
    assert got["startedAt"] is None and got["completedAt"] is None
    assert ISO_Z.match(got["createdAt"]) and ISO_Z.match(got["dispatchedAt"])
    assert (got["targetsScanned"], got["devicesFound"], got["devicesNew"], got["devicesUpdated"]) == (
        0,
        0,
        0,
        0,
    )
    assert got["errors"] == 0 and got["errorDetail"] is None


def test_no_leader_is_pending_then_dispatched_when_a_leader_registers(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    body = trigger(admin_api, core_seed)
    assert body == {
        "status": "pending",
        "runId": body["runId"],
        "estimatedTargets": 512,
        "leaderInstance": None,
    }
    run = DiscoveryRun.objects.get(pk=body["runId"])
    assert run.status == RunStatus.PENDING and run.dispatched_to == "" and run.dispatched_at is None
    assert get_run(admin_api, run.pk)["leaderInstance"] is None

    with django_capture_on_commit_callbacks(execute=True):
        leader = register(SITE, "host-a")  # becomes leader: the listener runs after the commit
        channel = listen(f"instance.{leader}")
    events = drain(layer, channel)
    assert [event["type"] for event in events] == ["leader_assigned", "run_discovery"]
    assert_run_discovery(events[1], run_id=run.pk, seed_ids=[core_seed])
    assert events[1]["seq"] > events[0]["seq"]
    run.refresh_from_db()
    assert run.status == RunStatus.DISPATCHED and run.dispatched_to == leader
    assert run.dispatch_history == [leader]
    got = get_run(admin_api, run.pk)
    assert got["status"] == "dispatched" and got["leaderInstance"] == leader


def test_leader_change_during_a_run_dispatches_it_again_to_the_new_leader(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    first = register(SITE, "host-a")
    second = register(SITE, "host-b")
    run_id = trigger(admin_api, core_seed)["runId"]
    runs.run_progress(instance_id=first, run_id=run_id, targets_scanned=100, devices_found=7)
    to_first, to_second = listen(f"instance.{first}"), listen(f"instance.{second}")

    with django_capture_on_commit_callbacks(execute=True):
        leader_assign(site_id=SITE, actor=TEST_ACTOR, instance_id=second)
    to_second_events = drain(layer, to_second)
    assert [event["type"] for event in to_second_events] == ["leader_assigned", "run_discovery"]
    assert_run_discovery(to_second_events[1], run_id=run_id, seed_ids=[core_seed])
    assert [event["type"] for event in drain(layer, to_first)] == ["leader_revoked"]

    run = DiscoveryRun.objects.get(pk=run_id)
    assert run.status == RunStatus.DISPATCHED and run.dispatched_to == second
    assert run.dispatch_history == [first, second] and run.dispatch_count == 2
    assert run.leader_term == Site.objects.get(pk=SITE).leader_term
    assert run.targets_scanned == 0 and run.devices_found == 7  # the scan starts over; found stays
    assert get_run(admin_api, run_id)["leaderInstance"] == second

    # The old leader may no longer report on it; the new one does.
    with pytest.raises(FrameRejected) as rejected:
        runs.run_progress(instance_id=first, run_id=run_id, targets_scanned=200, devices_found=9)
    assert rejected.value.code == "not_dispatched"
    runs.run_progress(instance_id=second, run_id=run_id, targets_scanned=10, devices_found=1)
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.targets_scanned == 10 and run.devices_found == 7


def test_leader_leaving_without_successor_puts_the_run_back_to_pending(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    first = register(SITE, "host-a")
    run_id = trigger(admin_api, core_seed)["runId"]
    with django_capture_on_commit_callbacks(execute=True):
        instance_deregister(actor=TEST_ACTOR, instance_id=first)
    run = DiscoveryRun.objects.get(pk=run_id)
    assert run.status == RunStatus.PENDING and run.dispatched_to == ""
    assert get_run(admin_api, run_id)["leaderInstance"] is None

    with django_capture_on_commit_callbacks(execute=True):
        second = register(SITE, "host-b")
        channel = listen(f"instance.{second}")
    assert_run_discovery(
        of_type(drain(layer, channel), "run_discovery")[0], run_id=run_id, seed_ids=[core_seed]
    )
    run.refresh_from_db()
    assert run.status == RunStatus.DISPATCHED and run.dispatched_to == second


def test_a_leader_past_the_timeout_gets_nothing_and_the_sweep_dispatches_when_it_is_back(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks, settings
):
    leader = register(SITE, "host-a")
    stale = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_SECONDS + 5)
    Instance.objects.filter(pk=leader).update(last_heartbeat=stale)
    channel = listen(f"instance.{leader}")
    with django_capture_on_commit_callbacks(execute=True):
        body = trigger(admin_api, core_seed)
        assert runs.runs_sweep().dispatched == []  # still no live leader
    assert body["status"] == "pending" and body["leaderInstance"] is None
    assert drain(layer, channel) == []

    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now())  # back, same leader
    with django_capture_on_commit_callbacks(execute=True):
        result = runs.runs_sweep()
    assert result.dispatched == [body["runId"]] and result.expired == []
    [event] = drain(layer, channel)
    assert_run_discovery(event, run_id=body["runId"], seed_ids=[core_seed])


def test_run_start_service_for_every_enabled_seed_and_scheduled(
    site, admin_api, register, layer, listen, django_capture_on_commit_callbacks
):
    core = create_seed(admin_api, CORE)
    create_seed(admin_api, {**EDGE, "name": "Disabled"}, enabled=False)
    edge = create_seed(admin_api, EDGE)
    leader = register(SITE, "host-a")
    channel = listen(f"instance.{leader}")
    with django_capture_on_commit_callbacks(execute=True):
        run = runs.run_start(actor=TEST_ACTOR, site_id=SITE, seed_ids=None, triggered_by="scheduled")
    assert run.seed_ids == [core, edge]  # enabled ones, oldest first
    assert run.targets_estimated == 512 + 20 + 1
    [event] = drain(layer, channel)
    assert_run_discovery(event, run_id=run.pk, seed_ids=[core, edge], triggered_by="scheduled")
    assert get_run(admin_api, run.pk)["triggeredBy"] == "scheduled"
    with pytest.raises(ValueError):
        runs.run_start(actor=TEST_ACTOR, site_id=SITE, seed_ids=None, triggered_by="whenever")


def test_post_discovery_runs_with_several_seeds(site, admin_api, register):
    core = create_seed(admin_api, CORE)
    edge = create_seed(admin_api, EDGE)
    leader = register(SITE, "host-a")
    body = ok(admin_api.post(RUNS, {"seedIds": [edge, core, edge]}, format="json"), "POST", RUNS, 202)
    assert body == {
        "status": "started",
        "runId": body["runId"],
        "estimatedTargets": 533,
        "leaderInstance": leader,
        "seedIds": [edge, core],  # repeats dropped, order kept
    }
    got = get_run(admin_api, body["runId"])
    assert got["seedId"] == edge and got["seedIds"] == [edge, core]
    runs.run_complete(instance_id=leader, run_id=body["runId"], status="completed", counts={}, errors=0)
    everything = ok(admin_api.post(RUNS, {}, format="json"), "POST", RUNS, 202)
    assert everything["seedIds"] == [core, edge]


# --- frames through the real consumer ---------------------------------------------------------------


def socket_session(token: str, instance_id: str, frames: list[dict]) -> list[dict]:
    """Connect, send each frame followed by a ping, and return what came back before each pong, but
    run_discovery: a leader's socket that opens gets its dispatched runs again (test_runs_guards.py)."""
    from config.asgi import application

    async def session():
        communicator = WebsocketCommunicator(
            application, f"/api/v1/ws?instanceId={instance_id}&token={token}"
        )
        connected, _ = await communicator.connect(timeout=5)
        assert connected
        answers = []
        for frame in frames:
            await communicator.send_to(text_data=json.dumps(frame))
            await communicator.send_to(text_data=json.dumps({"type": "ping"}))
            while True:
                reply = json.loads(await communicator.receive_from(timeout=5))
                if reply["type"] == "pong":
                    break
                if reply["type"] != "run_discovery":
                    answers.append(reply)
        await communicator.disconnect()
        return answers

    return async_to_sync(session)()


def progress(run_id, scanned, found) -> dict:
    return {
        "type": "discovery_progress",
        "payload": {"runId": run_id, "targetsScanned": scanned, "devicesFound": found},
    }


def complete(run_id, status="completed", **extra) -> dict:
    return {"type": "discovery_complete", "payload": {"runId": run_id, "status": status, **extra}}


@pytest.mark.django_db(transaction=True)
def test_progress_and_complete_frames_update_the_run_the_seed_and_the_site(
    make_site, register, make_token, client_for
):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader = register(SITE, "host-a")
    follower = register(SITE, "host-b")
    token = make_token(["instance"], site=SITE)
    run_id = trigger(admin, seed_id)["runId"]

    assert socket_session(token, leader, [progress(run_id, 256, 20)]) == []
    run = get_run(admin, run_id)
    assert run["status"] == "running" and ISO_Z.match(run["startedAt"]) and run["completedAt"] is None
    assert (run["targetsScanned"], run["devicesFound"]) == (256, 20)

    # Only the instance the run is dispatched to reports; the others get an error frame.
    [error] = socket_session(token, follower, [progress(run_id, 300, 30)])
    assert error["type"] == "error" and error["payload"]["error"] == "not_dispatched"
    assert get_run(admin, run_id)["targetsScanned"] == 256

    answers = socket_session(
        token,
        leader,
        [
            complete(
                run_id,
                counts={"targetsScanned": 512, "devicesFound": 45, "devicesNew": 3, "devicesUpdated": 42},
                errors=5,
            ),
            progress(run_id, 512, 45),  # after the end
        ],
    )
    assert [(a["type"], a["payload"]["error"]) for a in answers] == [("error", "run_finished")]
    run = get_run(admin, run_id)
    assert run["status"] == "completed" and ISO_Z.match(run["completedAt"])
    assert (run["targetsScanned"], run["devicesFound"], run["devicesNew"], run["devicesUpdated"]) == (
        512,
        45,
        3,
        42,
    )
    assert run["errors"] == 5
    seed = get_seed(admin, seed_id)
    assert seed["lastRun"] == run["startedAt"]
    assert seed["lastRunStatus"] == "success" and seed["devicesFound"] == 45
    site = Site.objects.get(pk=SITE)
    assert site.last_discovery_at is not None
    assert AuditLog.objects.filter(action="discovery_run_completed", entity_id=run_id).count() == 1

    # A failed run, its errors as messages.
    second = trigger(admin, seed_id)["runId"]
    assert socket_session(token, leader, [complete(second, "failed", errors=["timeout 10.0.1.1", "x"])]) == []
    run = get_run(admin, second)
    assert run["status"] == "failed" and run["errors"] == 2
    assert run["errorDetail"] == "timeout 10.0.1.1\nx"
    assert run["startedAt"] == run["dispatchedAt"]  # no progress was reported: started when dispatched
    seed = get_seed(admin, seed_id)
    assert seed["lastRunStatus"] == "failed" and seed["devicesFound"] == 0


@pytest.mark.django_db(transaction=True)
def test_bad_discovery_frames_get_validation_errors_and_change_nothing(
    make_site, register, make_token, client_for
):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader = register(SITE, "host-a")
    token = make_token(["instance"], site=SITE)
    run_id = trigger(admin, seed_id)["runId"]
    bad = [
        ({"type": "discovery_progress", "payload": {"targetsScanned": 1, "devicesFound": 1}}, {"runId"}),
        (progress(run_id, "5", 1), {"targetsScanned"}),
        (progress(run_id, 5, True), {"devicesFound"}),
        (progress(run_id, -1, 1), {"targetsScanned"}),
        ({"type": "discovery_progress", "payload": {"runId": run_id}}, {"targetsScanned", "devicesFound"}),
        (complete(run_id, "done"), {"status"}),
        (complete(run_id, counts=[1]), {"counts"}),
        (complete(run_id, counts={"devicesFound": 1.5}), {"counts.devicesFound"}),
        (complete(run_id, errors="many"), {"errors"}),
        (complete(run_id, errors=[1, 2]), {"errors"}),
    ]
    answers = socket_session(token, leader, [frame for frame, _ in bad])
    assert len(answers) == len(bad)
    for answer, (_, fields) in zip(answers, bad, strict=True):
        assert answer["type"] == "error" and answer["siteId"] == SITE
        assert answer["payload"]["error"] == "validation_error"
        assert set(answer["payload"]["fields"]) == fields, answer
    [unknown] = socket_session(token, leader, [progress("run_nope", 1, 1)])
    assert unknown["payload"]["error"] == "not_found"
    run = DiscoveryRun.objects.get(pk=run_id)
    assert run.status == RunStatus.DISPATCHED and run.targets_scanned == 0 and run.errors == 0


# --- results posted with runId ----------------------------------------------------------------------


def post_results(api, devices: list, site: str = SITE, **extra):
    return api.post(
        f"/api/v1/sites/{site}/inventory/devices",
        {"devices": devices, "source": "discovery", **extra},
        format="json",
    )


def test_results_with_run_id_count_on_the_run_and_the_dispatched_instance_may_post_after_losing_leadership(
    core_seed, register, admin_api, client_for, django_capture_on_commit_callbacks
):
    instance_api = client_for("instance", site=SITE)
    first = register(SITE, "host-a")
    second = register(SITE, "host-b")
    run_id = trigger(admin_api, core_seed)["runId"]
    path = f"/api/v1/sites/{SITE}/inventory/devices"

    body = ok(
        post_results(
            instance_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")], runId=run_id, instanceId=first
        ),
        "POST",
        path,
    )
    assert body["added"] == 2
    with django_capture_on_commit_callbacks(execute=True):  # first is a follower; the run goes to second
        leader_assign(site_id=SITE, actor=TEST_ACTOR, instance_id=second)
    assert DiscoveryRun.objects.get(pk=run_id).dispatched_to == second

    # The rest of its scan: one updated, one unchanged, one new, one bad.
    body = ok(
        post_results(
            instance_api,
            [
                device("a", "127.0.0.1", sysDescr="new"),
                device("b", "127.0.0.2"),
                device("c", "127.0.0.3"),
                {},
            ],
            runId=run_id,
            instanceId=first,
        ),
        "POST",
        path,
    )
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (1, 1, 1, 1)
    run = get_run(admin_api, run_id)
    assert (run["devicesNew"], run["devicesUpdated"], run["devicesFound"]) == (3, 1, 5)

    # Without the runId a follower may not post; nor with a run that was never dispatched to it.
    err(
        post_results(instance_api, [device("d", "127.0.0.4")], instanceId=first),
        409,
        "not_leader",
        "POST",
        path,
    )
    third = register(SITE, "host-c")
    err(
        post_results(instance_api, [device("d", "127.0.0.4")], runId=run_id, instanceId=third),
        409,
        "not_leader",
        "POST",
        path,
    )
    # An unknown run, or another site's, is a 400 on runId; a non-string runId too.
    body = err(
        post_results(admin_api, [device("d", "127.0.0.4")], runId="run_nope"),
        400,
        "validation_error",
        "POST",
        path,
    )
    assert set(body["fields"]) == {"runId"}
    body = err(
        post_results(admin_api, [device("d", "127.0.0.4")], runId=5), 400, "validation_error", "POST", path
    )
    assert set(body["fields"]) == {"runId"}
    assert get_run(admin_api, run_id)["devicesNew"] == 3

    # The new leader's results with the seedId only land on the run it was dispatched.
    body = ok(
        post_results(instance_api, [device("e", "127.0.0.5")], seedId=core_seed, instanceId=second),
        "POST",
        path,
    )
    assert body["added"] == 1
    run = get_run(admin_api, run_id)
    assert (run["devicesNew"], run["devicesFound"]) == (4, 6)
    # The completion's counts never go below what the results counted.
    runs.run_complete(
        instance_id=second,
        run_id=run_id,
        status="completed",
        counts={"devicesFound": 2, "devicesNew": 1},
        errors=0,
    )
    run = get_run(admin_api, run_id)
    assert (run["status"], run["devicesNew"], run["devicesUpdated"], run["devicesFound"]) == (
        "completed",
        4,
        1,
        6,
    )
    assert DiscoverySeed.objects.get(pk=core_seed).devices_found == 6


# --- timeouts ---------------------------------------------------------------------------------------


def test_pending_and_dispatched_runs_time_out(
    core_seed, register, admin_api, settings, django_capture_on_commit_callbacks
):
    settings.DISCOVERY_PENDING_TIMEOUT_SECONDS = 600
    settings.DISCOVERY_RUN_TIMEOUT_SECONDS = 1800
    edge, third, fourth = (create_seed(admin_api, EDGE, name=name) for name in ("Edge", "Third", "Fourth"))
    now = timezone.now()
    old_pending = trigger(admin_api, core_seed)["runId"]
    young_pending = trigger(admin_api, edge)["runId"]
    DiscoveryRun.objects.filter(pk=old_pending).update(created_at=now - timedelta(seconds=601))
    DiscoveryRun.objects.filter(pk=young_pending).update(created_at=now - timedelta(seconds=590))

    assert runs.runs_expire(now=now) == [old_pending]
    timed_out = get_run(admin_api, old_pending)
    assert timed_out["status"] == "timed_out" and ISO_Z.match(timed_out["completedAt"])
    assert "600" in timed_out["errorDetail"]
    assert get_run(admin_api, young_pending)["status"] == "pending"
    seed = get_seed(admin_api, core_seed)
    assert seed["lastRunStatus"] == "timed_out" and seed["devicesFound"] is None
    assert Site.objects.get(pk=SITE).last_discovery_at is None  # nothing ran
    audit = AuditLog.objects.get(action="discovery_run_timed_out", entity_id=old_pending)
    assert audit.details == {"previousStatus": "pending", "timeoutSeconds": 600}

    with django_capture_on_commit_callbacks(execute=True):
        leader = register(SITE, "host-a")  # young_pending is dispatched now
    running = trigger(admin_api, third)["runId"]
    runs.run_progress(instance_id=leader, run_id=running, targets_scanned=1, devices_found=0)
    DiscoveryRun.objects.filter(pk__in=[young_pending, running]).update(
        dispatched_at=now - timedelta(seconds=1801)
    )
    fresh = trigger(admin_api, fourth)["runId"]
    assert sorted(runs.runs_expire(now=now)) == sorted([young_pending, running])
    assert get_run(admin_api, running)["status"] == "timed_out"
    assert get_run(admin_api, fresh)["status"] == "dispatched"
    with pytest.raises(FrameRejected) as rejected:
        runs.run_complete(instance_id=leader, run_id=running, status="completed", counts={}, errors=0)
    assert rejected.value.code == "run_finished"
    assert runs.runs_expire(now=now) == []  # nothing left


def test_sweep_expires_with_the_default_timeouts(core_seed, admin_api):
    run_id = trigger(admin_api, core_seed)["runId"]
    DiscoveryRun.objects.filter(pk=run_id).update(created_at=timezone.now() - timedelta(seconds=3601))
    assert runs.runs_sweep().expired == [run_id]


# --- the runs API -----------------------------------------------------------------------------------


def test_list_runs_newest_first_with_paging_and_status(
    core_seed, admin_api, client_for, register, django_capture_on_commit_callbacks
):
    edge, spare = create_seed(admin_api, EDGE), create_seed(admin_api, EDGE, name="Spare")
    first = trigger(admin_api, core_seed)["runId"]
    with django_capture_on_commit_callbacks(execute=True):
        register(SITE, "host-a")
    second = trigger(admin_api, edge)["runId"]
    third = trigger(admin_api, spare)["runId"]
    reader = client_for("read")
    body = ok(reader.get(RUNS), "GET", RUNS)
    assert body["total"] == 3 and [r["runId"] for r in body["discoveryRuns"]] == [third, second, first]
    assert all(set(r) == RUN_FIELDS for r in body["discoveryRuns"])
    body = ok(reader.get(RUNS, {"limit": 1, "offset": 1}), "GET", RUNS)
    assert body["total"] == 3 and [r["runId"] for r in body["discoveryRuns"]] == [second]
    body = ok(client_for("instance", site=SITE).get(RUNS, {"status": "dispatched"}), "GET", RUNS)
    assert body["total"] == 3  # the first was dispatched when the leader registered
    body = ok(reader.get(RUNS, {"status": "pending,completed"}), "GET", RUNS)
    assert body == {"discoveryRuns": [], "total": 0}
    other = f"/api/v1/sites/{OTHER}/discovery-runs"
    assert ok(reader.get(other), "GET", other) == {"discoveryRuns": [], "total": 0}


def test_validation_errors(core_seed, admin_api):
    for params, field in (
        ({"status": "bogus"}, "status"),
        ({"limit": 0}, "limit"),
        ({"offset": "x"}, "offset"),
    ):
        body = err(admin_api.get(RUNS, params), 400, "validation_error", "GET", RUNS)
        assert set(body["fields"]) == {field}
    for payload, fields in (
        ({"seedIds": "seed"}, {"seedIds"}),
        ({"seedIds": []}, {"seedIds"}),
        ({"seedIds": [core_seed, 5, ""]}, {"seedIds[1]", "seedIds[2]"}),
    ):
        body = err(admin_api.post(RUNS, payload, format="json"), 400, "validation_error", "POST", RUNS)
        assert set(body["fields"]) == fields
    body = err(admin_api.post(RUNS, [core_seed], format="json"), 400, "validation_error", "POST", RUNS)
    assert DiscoveryRun.objects.count() == 0


def test_not_found_and_conflicts(core_seed, admin_api):
    other_seed = create_seed(admin_api, CORE, site=OTHER)
    err(admin_api.post(run_path("seed_nope")), 404, "not_found", "POST", run_path("seed_nope"))
    err(admin_api.post(run_path(other_seed)), 404, "not_found", "POST", run_path(other_seed))
    err(
        admin_api.post(run_path(core_seed, "nowhere")),
        404,
        "not_found",
        "POST",
        run_path(core_seed, "nowhere"),
    )
    body = err(
        admin_api.post(RUNS, {"seedIds": [core_seed, "seed_nope"]}, format="json"),
        404,
        "not_found",
        "POST",
        RUNS,
    )
    assert "seed_nope" in body["detail"]
    missing = "/api/v1/sites/nowhere/discovery-runs"
    err(admin_api.get(missing), 404, "not_found", "GET", missing)
    err(admin_api.post(missing, {}, format="json"), 404, "not_found", "POST", missing)
    other_run = trigger(admin_api, other_seed, site=OTHER)["runId"]
    for path in (f"{RUNS}/run_nope", f"{RUNS}/{other_run}"):
        err(admin_api.get(path), 404, "not_found", "GET", path)

    disabled = create_seed(admin_api, EDGE, enabled=False)
    err(admin_api.post(run_path(disabled)), 409, "seed_disabled", "POST", run_path(disabled))
    err(
        admin_api.post(RUNS, {"seedIds": [core_seed, disabled]}, format="json"),
        409,
        "seed_disabled",
        "POST",
        RUNS,
    )
    DiscoverySeed.objects.filter(pk=core_seed).update(enabled=False)
    err(admin_api.post(RUNS, {"seedIds": None}, format="json"), 409, "no_enabled_seeds", "POST", RUNS)
    DiscoverySeed.objects.filter(pk=core_seed).update(enabled=True)
    Site.objects.filter(pk=SITE).update(discovery_enabled=False)
    err(admin_api.post(run_path(core_seed)), 409, "discovery_disabled", "POST", run_path(core_seed))
    assert DiscoveryRun.objects.filter(site_id=SITE).count() == 0


def test_scopes_and_site_binding(core_seed, admin_api, client_for):
    path = run_path(core_seed)
    for scopes in (("read",), ("instance",)):
        err(client_for(*scopes).post(path), 403, "forbidden", "POST", path)
        err(client_for(*scopes).post(RUNS, {}, format="json"), 403, "forbidden", "POST", RUNS)
    err(client_for("write", site=OTHER).post(path), 403, "forbidden", "POST", path)
    err(client_for("read", site=OTHER).get(RUNS), 403, "forbidden", "GET", RUNS)
    anonymous = client_for("read")
    anonymous.credentials()
    err(anonymous.get(RUNS), 401, "unauthorized", "GET", RUNS)
    edge = create_seed(admin_api, EDGE)
    run_id = trigger(client_for("write", site=SITE), core_seed)["runId"]
    body = ok(client_for("write").post(RUNS, {"seedIds": [edge]}, format="json"), "POST", RUNS, 202)
    assert body["status"] == "pending"
    for scopes in (("read",), ("instance",), ("write",)):
        get_run(client_for(*scopes, site=SITE), run_id)
    run_detail = f"{RUNS}/{run_id}"
    err(client_for("instance", site=OTHER).get(run_detail), 403, "forbidden", "GET", run_detail)
    assert AuditLog.objects.filter(action="discovery_run_started", site_id=SITE).count() == 2
