"""Discovery runs that must not get lost or doubled:

- a run sent while its leader had no socket comes again when the leader's socket opens (same runId);
- a leader that election would replace (heartbeat timeout, or socket lost past FAILOVER_GRACE_SECONDS)
  gets no run: one definition of a live leader, instances.election's;
- a seed is in one active run at a time: a manual trigger gets 409 run_in_progress, a scheduled one is
  skipped, and two triggers racing each other start exactly one run.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.utils import timezone

import core.events
from core.models import AuditLog
from discovery import runs, tasks
from discovery.models import DiscoveryRun, RunStatus
from instances import election
from instances.models import Instance
from tests.conftest import TEST_ACTOR
from tests.discovery.test_runs import (
    CORE,
    EDGE,
    RUNS,
    SITE,
    assert_run_discovery,
    create_seed,
    drain,
    err,
    ok,
    run_path,
    trigger,
)
from tests.instances.test_election_concurrency import assert_no_connection_leaked, copy_client, run_threads

WAIT = 5  # seconds: an upper bound for one frame, never expected to be reached
GRACE = 10


@pytest.fixture(autouse=True)
def grace(settings):
    settings.FAILOVER_GRACE_SECONDS = GRACE


# --- 1. sent again when the leader's socket opens ------------------------------------------------------


@pytest.fixture
def memory_layer(settings, monkeypatch):
    """A fresh in-memory channel layer; the server loop the app notes is forgotten after the test."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr(core.events, "_server_loop", None)
    yield get_channel_layer()


def db(function):
    return database_sync_to_async(function)


async def connect(instance_id: str, token: str) -> WebsocketCommunicator:
    from config.asgi import application

    socket = WebsocketCommunicator(application, f"/api/v1/ws?instanceId={instance_id}&token={token}")
    connected, _ = await socket.connect(timeout=WAIT)
    assert connected
    return socket


async def next_frames(socket: WebsocketCommunicator) -> list[dict]:
    """What the socket gets until the pong to a ping sent now and a short quiet after it (the consumer
    may handle the ping before an event queued while it was still connecting)."""
    await socket.send_json_to({"type": "ping"})
    frames, ponged = [], False
    while not ponged or not await socket.receive_nothing(timeout=0.2):
        frame = await socket.receive_json_from(timeout=WAIT)
        if frame["type"] == "pong":
            ponged = True
        else:
            frames.append(frame)
    return frames


def dispatch_state(run_id: str) -> tuple:
    run = DiscoveryRun.objects.get(pk=run_id)
    return (
        run.status,
        run.dispatched_to,
        run.dispatch_history,
        run.dispatch_count,
        run.dispatched_at,
        run.leader_term,
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_sent_while_the_leaders_socket_was_down_comes_again_when_it_connects(
    make_site, register, make_token, client_for, memory_layer
):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
    token = make_token(["instance"], site=SITE)

    async def body():
        # Its socket dropped: inside the grace period it still leads, so the run is dispatched to its
        # group, where no socket listens.
        socket = await connect(leader, token)
        assert await next_frames(socket) == []
        await socket.disconnect()
        triggered = await db(trigger)(admin, seed_id)
        assert (triggered["status"], triggered["leaderInstance"]) == ("started", leader)
        before = await db(dispatch_state)(triggered["runId"])

        # A follower's socket gets nothing; the leader's reconnect gets the run, once.
        other = await connect(follower, token)
        assert await next_frames(other) == []
        socket = await connect(leader, token)
        first = await next_frames(socket)
        assert await next_frames(socket) == []
        await socket.disconnect()
        assert await db(dispatch_state)(triggered["runId"]) == before  # a delivery, not a new dispatch

        # Dropped again before it started: sent again. Once it reports progress, no more.
        socket = await connect(leader, token)
        second = await next_frames(socket)
        await socket.send_json_to(
            {
                "type": "discovery_progress",
                "payload": {"runId": triggered["runId"], "targetsScanned": 1, "devicesFound": 0},
            }
        )
        assert await next_frames(socket) == []
        await socket.disconnect()
        socket = await connect(leader, token)
        third = await next_frames(socket)
        await socket.disconnect()
        assert await next_frames(other) == []
        await other.disconnect()
        return triggered, before, first, second, third

    triggered, before, first, second, third = async_to_sync(body)()
    [event] = first
    assert_run_discovery(event, run_id=triggered["runId"], seed_ids=[seed_id])
    [again] = second
    assert_run_discovery(again, run_id=triggered["runId"], seed_ids=[seed_id])
    assert again["seq"] > event["seq"]
    assert third == []  # running: the leader has it
    run = DiscoveryRun.objects.get(pk=triggered["runId"])
    assert run.status == RunStatus.RUNNING and run.dispatch_count == 1 and run.dispatched_at == before[4]
    assert AuditLog.objects.filter(entity_id=run.pk).count() == 1  # discovery_run_started only


@pytest.mark.django_db(transaction=True)
def test_a_leader_back_from_the_heartbeat_timeout_gets_the_waiting_run_when_its_socket_opens(
    make_site, register, make_token, client_for, memory_layer, settings
):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader = register(SITE, "host-a")
    token = make_token(["instance"], site=SITE)
    stale = timezone.now() - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_SECONDS + 5)
    Instance.objects.filter(pk=leader).update(last_heartbeat=stale)
    triggered = trigger(admin, seed_id)
    assert triggered["status"] == "pending"

    async def body():
        socket = await connect(leader, token)  # a sign of life: it leads again, no need to wait for the sweep
        frames = await next_frames(socket)
        await socket.disconnect()
        return frames

    [event] = async_to_sync(body)()
    assert_run_discovery(event, run_id=triggered["runId"], seed_ids=[seed_id])
    run = DiscoveryRun.objects.get(pk=triggered["runId"])
    assert (run.status, run.dispatched_to, run.dispatch_count) == (RunStatus.DISPATCHED, leader, 1)


def test_runs_resend_to_sends_only_to_the_live_leader_and_only_dispatched_runs(
    make_site, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    make_site(SITE)
    core, edge = create_seed(admin_api, CORE), create_seed(admin_api, EDGE)
    leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
    dispatched = trigger(admin_api, core)["runId"]
    running = trigger(admin_api, edge)["runId"]
    runs.run_progress(instance_id=leader, run_id=running, targets_scanned=3, devices_found=1)
    to_leader, to_follower = listen(f"instance.{leader}"), listen(f"instance.{follower}")

    with django_capture_on_commit_callbacks(execute=True):
        assert runs.runs_resend_to(instance_id=follower) == []
        assert runs.runs_resend_to(instance_id="inst_gone") == []
        sent = runs.runs_resend_to(instance_id=leader)
    assert [run.pk for run in sent] == [dispatched]
    [event] = drain(layer, to_leader)
    assert_run_discovery(event, run_id=dispatched, seed_ids=[core])
    assert drain(layer, to_follower) == []
    assert DiscoveryRun.objects.get(pk=dispatched).dispatch_count == 1

    # A leader that election would replace gets nothing, even on its socket's word.
    Instance.objects.filter(pk=leader).update(
        last_heartbeat=timezone.now() - timedelta(seconds=GRACE + 5),
        socket_disconnected_at=timezone.now() - timedelta(seconds=GRACE + 1),
    )
    with django_capture_on_commit_callbacks(execute=True):
        assert runs.runs_resend_to(instance_id=leader) == []
    assert drain(layer, to_leader) == []


# --- 2. one definition of a live leader ----------------------------------------------------------------


def lose_socket(instance_id: str, seconds_ago: float) -> None:
    """Its socket closed `seconds_ago`, its last sign of life just before, no reconnect."""
    closed = timezone.now() - timedelta(seconds=seconds_ago)
    Instance.objects.filter(pk=instance_id).update(
        socket_connected_at=closed - timedelta(minutes=5),
        socket_disconnected_at=closed,
        last_heartbeat=closed - timedelta(seconds=1),
    )


def test_a_leader_whose_socket_is_lost_past_the_grace_period_gets_no_run(
    make_site, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    make_site(SITE)
    core = create_seed(admin_api, CORE)
    leader = register(SITE, "host-a")
    lose_socket(leader, GRACE + 5)  # its heartbeat is well within the timeout: only the socket tells
    to_leader = listen(f"instance.{leader}")
    with django_capture_on_commit_callbacks(execute=True):
        body = trigger(admin_api, core)
        assert runs.runs_sweep().dispatched == []
    assert (body["status"], body["leaderInstance"]) == ("pending", None)
    assert drain(layer, to_leader) == []

    # Inside the grace period it is still live: the run goes to it.
    lose_socket(leader, GRACE - 5)
    with django_capture_on_commit_callbacks(execute=True):
        assert runs.runs_sweep().dispatched == [body["runId"]]
    assert_run_discovery(drain(layer, to_leader)[0], run_id=body["runId"], seed_ids=[core])


def test_the_health_check_hands_the_waiting_run_to_the_follower_that_replaces_the_lost_leader(
    make_site, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    make_site(SITE)
    core = create_seed(admin_api, CORE)
    leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
    lose_socket(leader, GRACE + 5)
    run_id = trigger(admin_api, core)["runId"]
    assert DiscoveryRun.objects.get(pk=run_id).status == RunStatus.PENDING
    to_follower = listen(f"instance.{follower}")
    with django_capture_on_commit_callbacks(execute=True):
        [change] = election.leader_health_check()
    assert (change.previous_leader_id, change.leader_id) == (leader, follower)
    events = drain(layer, to_follower)
    assert [event["type"] for event in events] == ["leader_assigned", "run_discovery"]
    assert DiscoveryRun.objects.get(pk=run_id).dispatched_to == follower


# --- 3. one active run per seed --------------------------------------------------------------------------


def test_a_seed_in_an_active_run_is_refused_with_run_in_progress(
    make_site, register, admin_api, django_capture_on_commit_callbacks
):
    make_site(SITE)
    core, edge = create_seed(admin_api, CORE), create_seed(admin_api, EDGE)
    pending = trigger(admin_api, core)["runId"]  # no leader yet

    def refused(response, path: str, run_id: str, seed_id: str, status: str) -> None:
        body = err(response, 409, "run_in_progress", "POST", path)
        assert set(body) == {"error", "detail", "fields"} and body["fields"] == {}
        assert run_id in body["detail"] and seed_id in body["detail"] and status in body["detail"]

    refused(admin_api.post(run_path(core)), run_path(core), pending, core, "pending")
    refused(admin_api.post(RUNS, {"seedIds": [edge, core]}, format="json"), RUNS, pending, core, "pending")
    refused(admin_api.post(RUNS, {}, format="json"), RUNS, pending, core, "pending")  # every enabled seed
    assert DiscoveryRun.objects.count() == 1

    with django_capture_on_commit_callbacks(execute=True):
        leader = register(SITE, "host-a")  # the pending run is dispatched
    refused(admin_api.post(run_path(core)), run_path(core), pending, core, "dispatched")
    edge_run = trigger(admin_api, edge)["runId"]  # another seed runs meanwhile
    runs.run_progress(instance_id=leader, run_id=edge_run, targets_scanned=1, devices_found=0)
    refused(admin_api.post(run_path(edge)), run_path(edge), edge_run, edge, "running")

    # Ended (completed, failed or timed out): the seed runs again.
    runs.run_complete(instance_id=leader, run_id=pending, status="failed", counts={}, errors=1)
    again = trigger(admin_api, core)["runId"]
    later = timezone.now() + timedelta(days=1)
    assert sorted(runs.runs_expire(now=later)) == sorted([again, edge_run])
    body = ok(admin_api.post(RUNS, {}, format="json"), "POST", RUNS, 202)
    assert body["seedIds"] == [core, edge]
    assert AuditLog.objects.filter(action="discovery_run_started").count() == 4  # refusals leave none


def test_a_scheduled_run_of_a_busy_seed_is_skipped_with_a_log_line(make_site, register, admin_api, caplog):
    make_site(SITE)
    core, edge = create_seed(admin_api, CORE), create_seed(admin_api, {**EDGE, "schedule": "0 0 3 * * *"})
    register(SITE, "host-a")
    manual = trigger(admin_api, edge)["runId"]

    with caplog.at_level(logging.INFO, logger="discovery.tasks"):
        assert tasks.scheduled_seed_run(SITE, edge) is None
        assert tasks.scheduled_site_run(SITE) is None  # edge is one of the site's seeds
    skipped = [record for record in caplog.records if record.name == "discovery.tasks"]
    assert [record.levelno for record in skipped] == [logging.INFO, logging.INFO]
    assert all(manual in record.getMessage() and "skipped" in record.getMessage() for record in skipped)
    assert all(record.runId == manual for record in skipped)
    assert list(DiscoveryRun.objects.values_list("id", flat=True)) == [manual]

    # A run of the other seed alone is not in the way.
    run = runs.run_start(actor=TEST_ACTOR, site_id=SITE, seed_ids=[core], triggered_by=runs.SCHEDULED)
    assert run.status == RunStatus.DISPATCHED


@pytest.mark.django_db(transaction=True)
def test_racing_triggers_of_the_same_seed_start_exactly_one_run(make_site, client_for):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    count = 8
    barrier = threading.Barrier(count)

    def fire(index: int):
        api = copy_client(admin)
        barrier.wait(timeout=30)
        if index % 2:
            response = api.post(run_path(seed_id))
        else:
            response = api.post(RUNS, {"seedIds": [seed_id]}, format="json")
        return response.status_code, response.json()

    results = run_threads(count, fire)
    started = [body for status, body in results if status == 202]
    refused = [body for status, body in results if status != 202]
    assert len(started) == 1, results
    assert len(refused) == count - 1
    assert {(body["error"], started[0]["runId"] in body["detail"]) for body in refused} == {
        ("run_in_progress", True)
    }
    assert list(DiscoveryRun.objects.values_list("id", flat=True)) == [started[0]["runId"]]
    assert_no_connection_leaked()


@pytest.mark.django_db(transaction=True)
def test_racing_site_wide_and_single_seed_triggers_never_share_a_seed(make_site, client_for):
    make_site(SITE)
    admin = client_for("admin")
    core, edge = create_seed(admin, CORE), create_seed(admin, EDGE)
    requests = [{"seedIds": None}, {"seedIds": [core]}, {"seedIds": [edge]}, {"seedIds": [edge, core]}] * 3
    barrier = threading.Barrier(len(requests))

    def fire(index: int):
        api = copy_client(admin)
        barrier.wait(timeout=30)
        response = api.post(RUNS, requests[index], format="json")
        return response.status_code, response.json()

    results = run_threads(len(requests), fire)
    assert {status for status, _ in results} <= {202, 409}
    active = list(DiscoveryRun.objects.values_list("id", "seed_ids"))
    assert len(active) == sum(status == 202 for status, _ in results) >= 1
    seeds = [seed_id for _, seed_ids in active for seed_id in seed_ids]
    assert len(seeds) == len(set(seeds)), active  # no seed in two active runs
    assert set(seeds) == {core, edge}  # whatever won, every seed is in some run now
    for status, body in results:
        if status == 409:
            assert body["error"] == "run_in_progress"
            assert any(run_id in body["detail"] for run_id, _ in active)
    assert_no_connection_leaked()


def test_run_in_progress_is_a_conflict_error_with_the_run():
    run = DiscoveryRun(id="run_x", status=RunStatus.RUNNING)
    error = runs.RunInProgress(seed_id="seed_y", run=run)
    assert (error.status_code, error.code, error.run_id, error.seed_id) == (
        409,
        "run_in_progress",
        "run_x",
        "seed_y",
    )
    assert str(error.detail) == (
        "Discovery seed 'seed_y' is already in run 'run_x' (running); run it again when that run has ended."
    )
