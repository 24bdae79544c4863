"""Cancelling a discovery run (issue 8, section 4): POST …/discovery-runs/{runId}/cancel and the run admin's
"Cancel selected runs", both through discovery.runs.run_cancel.

- the run ends as `cancelled` (completedAt set) and its seeds run again at once;
- the instance it is dispatched to gets `cancel_discovery {runId}` after commit (in-memory and Redis
  channel layers; through the real consumer); a pending run tells nobody and is never dispatched;
- the leader's later frames for it are refused `run_finished`, results posted with its runId count as
  for any ended run;
- an ended run → 409 run_finished and nothing changes; unknown → 404; scopes and site binding as for
  every write; an audit row per cancel;
- a cancel racing the leader's discovery_complete leaves exactly one of them applied.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import core.events
from core.models import AuditLog
from discovery import runs
from discovery.models import DiscoveryRun, RunStatus
from instances.frames import FrameRejected
from instances.models import Instance
from inventory.models import DiscoverySeed
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.discovery.test_runs import (
    CORE,
    EDGE,
    ISO_Z,
    OTHER,
    RUN_FIELDS,
    RUNS,
    SITE,
    assert_run_discovery,
    create_seed,
    drain,
    err,
    get_run,
    get_seed,
    of_type,
    ok,
    post_results,
    trigger,
)
from tests.instances.test_election_concurrency import assert_no_connection_leaked, copy_client, run_threads
from tests.inventory.test_inventory_api import device

WAIT = 5  # seconds: an upper bound for one frame, never expected to be reached
RUNS_ADMIN = "/admin/discovery/discoveryrun/"


def cancel_path(run_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/discovery-runs/{run_id}/cancel"


def cancel(api, run_id: str, site: str = SITE) -> dict:
    body = ok(api.post(cancel_path(run_id, site)), "POST", cancel_path(run_id, site))
    assert set(body) == RUN_FIELDS
    return body


def assert_cancel_discovery(event: dict, run_id: str) -> None:
    # requestId: the X-Request-ID of the request that caused it (core.events)
    assert set(event) - {"requestId"} == {"type", "timestamp", "siteId", "payload", "seq"}
    assert isinstance(event.get("requestId", ""), str)
    assert event["type"] == "cancel_discovery"
    assert ISO_Z.match(event["timestamp"]) and event["siteId"] == SITE
    assert isinstance(event["seq"], int) and event["seq"] >= 1
    assert event["payload"] == {"runId": run_id}


def row(run_id: str) -> dict:
    """Everything stored of a run, to show that a refusal changed nothing."""
    return DiscoveryRun.objects.filter(pk=run_id).values().get()


@pytest.fixture
def site(make_site) -> str:
    make_site(OTHER)
    return make_site(SITE)


@pytest.fixture
def core_seed(site, admin_api) -> str:
    return create_seed(admin_api, CORE)


# --- the endpoint, in-memory channel layer ------------------------------------------------------------


def test_cancelling_a_dispatched_run_tells_its_leader_and_frees_the_seed(
    core_seed, register, client_for, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):  # their events go out before we listen
        leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
        run_id = trigger(admin_api, core_seed)["runId"]
    before = get_run(admin_api, run_id)
    to_leader, to_follower, to_site = (
        listen(f"instance.{leader}"),
        listen(f"instance.{follower}"),
        listen(f"site.{SITE}"),
    )
    writer = client_for("write", site=SITE)

    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        body = cancel(writer, run_id)
        assert drain(layer, to_leader) == []  # not before the commit
    assert callbacks
    assert body == get_run(admin_api, run_id)  # the same representation as GET
    assert body["status"] == "cancelled" and ISO_Z.match(body["completedAt"])
    assert body["startedAt"] is None  # it never reported progress
    assert body["errorDetail"] == "Cancelled while dispatched."
    assert body["leaderInstance"] == leader and body["dispatchedAt"] == before["dispatchedAt"]
    [event] = drain(layer, to_leader)
    assert_cancel_discovery(event, run_id)
    assert event["seq"] == Site.objects.get(pk=SITE).event_seq
    assert drain(layer, to_follower) == [] and drain(layer, to_site) == []

    audit = AuditLog.objects.get(action="discovery_run_cancelled", entity_id=run_id)
    assert audit.actor == "token:test write" and audit.token_id
    assert (audit.entity_type, audit.site_id, audit.instance_id) == ("discovery_run", SITE, leader)
    assert audit.details == {"previousStatus": "dispatched", "seedIds": [core_seed], "notified": leader}
    # The seed shows the run's end; nothing ran, so its devicesFound and the site's lastDiscovery stay.
    seed = get_seed(admin_api, core_seed)
    assert seed["lastRunStatus"] == "cancelled" and seed["lastRun"] == before["dispatchedAt"]
    assert seed["devicesFound"] is None
    assert Site.objects.get(pk=SITE).last_discovery_at is None
    listed = ok(admin_api.get(RUNS, {"status": "cancelled"}), "GET", RUNS)
    assert [run["runId"] for run in listed["discoveryRuns"]] == [run_id]

    # The seed runs again at once, to the same leader; the cancelled run is not sent again.
    with django_capture_on_commit_callbacks(execute=True):
        again = trigger(writer, core_seed)
    assert (again["status"], again["leaderInstance"]) == ("started", leader)
    [event] = drain(layer, to_leader)
    assert_run_discovery(event, run_id=again["runId"], seed_ids=[core_seed])
    with django_capture_on_commit_callbacks(execute=True):
        assert [run.pk for run in runs.runs_resend_to(instance_id=leader)] == [again["runId"]]
        assert runs.runs_sweep().expired == []
    assert [e["payload"]["runId"] for e in drain(layer, to_leader)] == [again["runId"]]
    assert get_run(admin_api, run_id)["status"] == "cancelled"


def test_a_pending_run_is_cancelled_without_an_event_and_never_dispatched(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks, settings
):
    edge = create_seed(admin_api, EDGE)
    run_id = trigger(admin_api, core_seed)["runId"]  # no leader: pending
    other = trigger(admin_api, edge)["runId"]
    to_site = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True):
        body = cancel(admin_api, run_id)
    assert drain(layer, to_site) == []
    assert (body["status"], body["leaderInstance"], body["dispatchedAt"]) == ("cancelled", None, None)
    assert body["errorDetail"] == "Cancelled while pending."
    audit = AuditLog.objects.get(action="discovery_run_cancelled", entity_id=run_id)
    assert audit.instance_id == "" and audit.details["notified"] is None
    assert audit.details["previousStatus"] == "pending"

    # A leader appears: it gets the other pending run, not the cancelled one.
    with django_capture_on_commit_callbacks(execute=True):
        leader = register(SITE, "host-a")
        channel = listen(f"instance.{leader}")
    [event] = of_type(drain(layer, channel), "run_discovery")
    assert_run_discovery(event, run_id=other, seed_ids=[edge])
    assert row(run_id)["status"] == RunStatus.CANCELLED and row(run_id)["dispatched_to"] == ""
    # Not timed out later either.
    later = timezone.now() + timedelta(seconds=settings.DISCOVERY_PENDING_TIMEOUT_SECONDS * 10)
    assert run_id not in runs.runs_expire(now=later)
    assert get_run(admin_api, run_id)["status"] == "cancelled"


def test_an_ended_run_is_409_run_finished_and_nothing_changes(
    core_seed, register, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    edge, third = create_seed(admin_api, EDGE), create_seed(admin_api, EDGE, name="Third")
    with django_capture_on_commit_callbacks(execute=True):  # their events go out before we listen
        leader = register(SITE, "host-a")
        completed = trigger(admin_api, core_seed)["runId"]
        runs.run_complete(instance_id=leader, run_id=completed, status="completed", counts={}, errors=0)
        failed = trigger(admin_api, edge)["runId"]
        runs.run_complete(instance_id=leader, run_id=failed, status="failed", counts={}, errors=1)
        timed_out = trigger(admin_api, third)["runId"]
        assert runs.runs_expire(now=timezone.now() + timedelta(days=1)) == [timed_out]
        cancelled = trigger(admin_api, core_seed)["runId"]
        cancel(admin_api, cancelled)
    to_leader = listen(f"instance.{leader}")
    audit_rows = AuditLog.objects.count()
    seeds = list(DiscoverySeed.objects.order_by("pk").values())

    ended = {completed: "completed", failed: "failed", timed_out: "timed_out", cancelled: "cancelled"}
    for run_id, status in ended.items():
        stored = row(run_id)
        with django_capture_on_commit_callbacks(execute=True):
            body = err(admin_api.post(cancel_path(run_id)), 409, "run_finished", "POST", cancel_path(run_id))
        assert body["fields"] == {} and run_id in body["detail"] and status in body["detail"]
        assert row(run_id) == stored
    assert drain(layer, to_leader) == []
    assert AuditLog.objects.count() == audit_rows
    assert list(DiscoverySeed.objects.order_by("pk").values()) == seeds


def test_unknown_runs_and_sites_are_404(core_seed, admin_api):
    other_seed = create_seed(admin_api, CORE, site=OTHER)
    other_run = trigger(admin_api, other_seed, site=OTHER)["runId"]
    mine = trigger(admin_api, core_seed)["runId"]
    for path in (cancel_path("run_nope"), cancel_path(other_run), cancel_path(mine, "nowhere")):
        err(admin_api.post(path), 404, "not_found", "POST", path)
    assert row(other_run)["status"] == row(mine)["status"] == RunStatus.PENDING
    assert not AuditLog.objects.filter(action="discovery_run_cancelled").exists()


def test_scopes_and_site_binding(core_seed, client_for, admin_api):
    run_id = trigger(admin_api, core_seed)["runId"]
    path = cancel_path(run_id)
    for scopes, site in (
        (("read",), None),
        (("instance",), SITE),
        (("instance",), None),
        (("write",), OTHER),
    ):
        err(client_for(*scopes, site=site).post(path), 403, "forbidden", "POST", path)
    err(client_for("admin", site=OTHER).post(path), 403, "forbidden", "POST", path)
    anonymous = client_for("write")
    anonymous.credentials()
    err(anonymous.post(path), 401, "unauthorized", "POST", path)
    assert row(run_id)["status"] == RunStatus.PENDING
    assert cancel(client_for("admin", site=SITE), run_id)["status"] == "cancelled"
    second = trigger(admin_api, core_seed)["runId"]
    assert cancel(client_for("write"), second)["status"] == "cancelled"
    actors = AuditLog.objects.filter(action="discovery_run_cancelled").order_by("id").values_list("actor")
    assert [actor for (actor,) in actors] == ["token:test admin", "token:test write"]


# --- after the cancel: the leader's frames and results ---------------------------------------------------


@pytest.fixture
def memory_layer(settings, monkeypatch):
    """A fresh in-memory channel layer; the server loop the app notes is forgotten after the test."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr(core.events, "_server_loop", None)
    yield get_channel_layer()


async def frames_until_pong(socket: WebsocketCommunicator) -> list[dict]:
    """What the socket gets until the pong to a ping sent now and a short quiet after it."""
    await socket.send_json_to({"type": "ping"})
    frames, ponged = [], False
    while not ponged or not await socket.receive_nothing(timeout=0.2):
        frame = await socket.receive_json_from(timeout=WAIT)
        if frame["type"] == "pong":
            ponged = True
        else:
            frames.append(frame)
    return frames


@pytest.mark.django_db(transaction=True)
def test_the_leaders_socket_gets_cancel_discovery_and_its_later_frames_are_refused(
    make_site, register, make_token, client_for, memory_layer
):
    from config.asgi import application

    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader = register(SITE, "host-a")
    token = make_token(["instance"], site=SITE)
    run_id = trigger(admin, seed_id)["runId"]

    async def session():
        socket = WebsocketCommunicator(application, f"/api/v1/ws?instanceId={leader}&token={token}")
        assert (await socket.connect(timeout=WAIT))[0]
        opened = await frames_until_pong(socket)  # the dispatched run, sent again as the socket opens
        await socket.send_json_to(
            {
                "type": "discovery_progress",
                "payload": {"runId": run_id, "targetsScanned": 7, "devicesFound": 2},
            }
        )
        accepted = await frames_until_pong(socket)
        cancelled = await database_sync_to_async(cancel)(admin, run_id)
        told = await frames_until_pong(socket)
        after = []
        for frame in (
            {
                "type": "discovery_progress",
                "payload": {"runId": run_id, "targetsScanned": 9, "devicesFound": 3},
            },
            {"type": "discovery_complete", "payload": {"runId": run_id, "status": "completed"}},
        ):
            await socket.send_json_to(frame)
            after.extend(await frames_until_pong(socket))
        await socket.disconnect()
        # A socket that opens again gets nothing for it (a running or dispatched run would come again).
        socket = WebsocketCommunicator(application, f"/api/v1/ws?instanceId={leader}&token={token}")
        assert (await socket.connect(timeout=WAIT))[0]
        reopened = await frames_until_pong(socket)
        await socket.disconnect()
        return opened, accepted, cancelled, told, after, reopened

    opened, accepted, cancelled, told, after, reopened = async_to_sync(session)()
    [event] = opened
    assert_run_discovery(event, run_id=run_id, seed_ids=[seed_id])
    assert accepted == []
    assert cancelled["status"] == "cancelled" and cancelled["errorDetail"] == "Cancelled while running."
    [event] = told
    assert_cancel_discovery(event, run_id)
    assert [(f["type"], f["payload"]["error"]) for f in after] == [("error", "run_finished")] * 2
    assert all("cancelled" in f["payload"]["detail"] for f in after)
    assert reopened == []
    run = get_run(admin, run_id)
    assert (run["status"], run["targetsScanned"], run["devicesFound"], run["errors"]) == (
        "cancelled",
        7,
        2,
        0,
    )
    assert ISO_Z.match(run["startedAt"])  # it did report progress
    assert [row.action for row in AuditLog.objects.filter(entity_id=run_id).order_by("id")] == [
        "discovery_run_started",
        "discovery_run_cancelled",
    ]
    assert AuditLog.objects.get(action="discovery_run_cancelled").details["previousStatus"] == "running"


def test_results_posted_with_a_cancelled_runs_id_count_as_for_any_ended_run(
    core_seed, register, admin_api, client_for
):
    edge = create_seed(admin_api, EDGE)
    instance_api = client_for("instance", site=SITE)
    leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
    path = f"/api/v1/sites/{SITE}/inventory/devices"
    completed = trigger(admin_api, edge)["runId"]
    runs.run_complete(instance_id=leader, run_id=completed, status="completed", counts={}, errors=0)
    cancelled = trigger(admin_api, core_seed)["runId"]
    cancel(admin_api, cancelled)

    # The instance the run went to hands in its scan: counted on the run, as for a completed run.
    outcomes = {}
    for run_id, name in ((completed, "a"), (cancelled, "b")):
        body = ok(
            post_results(instance_api, [device(name, "127.0.0.1")], runId=run_id, instanceId=leader),
            "POST",
            path,
        )
        run = get_run(admin_api, run_id)
        outcomes[run_id] = (body["added"], run["devicesNew"], run["devicesFound"])
        # Another instance it never went to (not the leader either) may not.
        err(
            post_results(instance_api, [device("x", "127.0.0.9")], runId=run_id, instanceId=follower),
            409,
            "not_leader",
            "POST",
            path,
        )
    assert outcomes == {completed: (1, 1, 1), cancelled: (1, 1, 1)}
    assert get_run(admin_api, cancelled)["status"] == "cancelled"
    # A seedId alone ties results to no ended run.
    ok(
        post_results(instance_api, [device("c", "127.0.0.3")], seedId=core_seed, instanceId=leader),
        "POST",
        path,
    )
    assert get_run(admin_api, cancelled)["devicesNew"] == 1


# --- the Redis channel layer (the redis_layer fixture: tests/conftest.py) ------------------------------


class Listener:
    """The test's own channels on a channel layer, all on one event loop of its own (channels-redis binds
    its receive buffers to the loop that first receives); the server code publishes from its own."""

    def __init__(self, layer):
        self.layer = layer
        self.loop = asyncio.new_event_loop()

    def subscribe(self, group: str) -> str:
        channel = self.loop.run_until_complete(self.layer.new_channel())
        self.loop.run_until_complete(self.layer.group_add(group, channel))
        return channel

    def receive(self, channel: str, timeout: float) -> dict | None:
        """The next event on the channel, or None when none comes within `timeout` seconds."""
        try:
            message = self.loop.run_until_complete(asyncio.wait_for(self.layer.receive(channel), timeout))
        except TimeoutError:
            return None
        assert message["type"] == "event.message"
        return message["event"]

    def close(self) -> None:
        self.loop.run_until_complete(self.layer.close_pools())
        self.loop.close()


@pytest.fixture
def redis_listener(redis_layer):
    listener = Listener(redis_layer)
    yield listener
    listener.close()


@pytest.mark.django_db(transaction=True)
def test_cancel_discovery_goes_through_the_redis_layer_to_the_leader_only(
    make_site, register, client_for, redis_listener
):
    make_site(SITE)
    admin = client_for("admin")
    core, edge = create_seed(admin, CORE), create_seed(admin, EDGE)
    dispatched = trigger(admin, edge)["runId"]  # pending until the leader registers (after commit)
    leader, follower = register(SITE, "host-a"), register(SITE, "host-b")
    running = trigger(admin, core)["runId"]
    runs.run_progress(instance_id=leader, run_id=running, targets_scanned=1, devices_found=0)
    to_leader, to_follower, to_site = (
        redis_listener.subscribe(f"instance.{leader}"),
        redis_listener.subscribe(f"instance.{follower}"),
        redis_listener.subscribe(f"site.{SITE}"),
    )

    assert get_run(admin, dispatched)["status"] == "dispatched"
    cancel(admin, running)
    cancel(admin, dispatched)
    first, second = redis_listener.receive(to_leader, WAIT), redis_listener.receive(to_leader, WAIT)
    assert_cancel_discovery(first, running)
    assert_cancel_discovery(second, dispatched)
    assert second["seq"] == first["seq"] + 1
    assert redis_listener.receive(to_leader, 0.5) is None
    assert redis_listener.receive(to_follower, 0.5) is None and redis_listener.receive(to_site, 0.5) is None
    # The seeds run again at once; the new run goes out on the same layer.
    again = trigger(admin, core)
    assert_run_discovery(redis_listener.receive(to_leader, WAIT), run_id=again["runId"], seed_ids=[core])


# --- the race with the leader's report ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_cancel_racing_discovery_complete_leaves_exactly_one_end(make_site, register, client_for):
    make_site(SITE)
    admin = client_for("admin")
    seed_id = create_seed(admin, CORE)
    leader = register(SITE, "host-a")
    for round_ in range(6):
        run_id = trigger(admin, seed_id)["runId"]
        if round_ % 2:
            runs.run_progress(instance_id=leader, run_id=run_id, targets_scanned=5, devices_found=1)
        barrier = threading.Barrier(2)

        def race(index: int, run_id=run_id, barrier=barrier):
            if index == 0:
                api = copy_client(admin)
                barrier.wait(timeout=30)
                response = api.post(cancel_path(run_id))
                return ("cancel", response.status_code, response.json().get("error"))
            barrier.wait(timeout=30)
            try:
                runs.run_complete(
                    instance_id=leader,
                    run_id=run_id,
                    status="completed",
                    counts={"devicesFound": 3},
                    errors=0,
                )
            except FrameRejected as exc:
                return ("complete", 409, exc.code)
            return ("complete", 200, None)

        results = run_threads(2, race)
        winners = [name for name, status, _ in results if status == 200]
        losers = [(name, code) for name, status, code in results if status != 200]
        assert len(winners) == 1 and len(losers) == 1, results
        assert losers[0][1] == "run_finished", results
        run = DiscoveryRun.objects.get(pk=run_id)
        expected = RunStatus.CANCELLED if winners[0] == "cancel" else RunStatus.COMPLETED
        assert run.status == expected and run.completed_at is not None
        ends = AuditLog.objects.filter(
            entity_id=run_id, action__in=("discovery_run_cancelled", "discovery_run_completed")
        )
        assert [row.action for row in ends] == [
            "discovery_run_cancelled" if winners[0] == "cancel" else "discovery_run_completed"
        ]
        seed = DiscoverySeed.objects.get(pk=seed_id)
        assert seed.last_run_status == ("cancelled" if winners[0] == "cancel" else "success")
    assert not DiscoveryRun.objects.filter(status__in=runs.ACTIVE_RUN_STATUSES).exists()
    assert_no_connection_leaked()


# --- the admin ----------------------------------------------------------------------------------------------


@pytest.fixture
def staff_admin(db, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_admin_lists_runs_read_only_and_cancel_selected_goes_through_the_service(
    core_seed, register, admin_api, staff_admin, layer, listen, django_capture_on_commit_callbacks
):
    from django.contrib.admin.utils import quote

    edge, third = create_seed(admin_api, EDGE), create_seed(admin_api, EDGE, name="Third")
    with django_capture_on_commit_callbacks(execute=True):  # their events go out before we listen
        leader = register(SITE, "host-a")
        dispatched = trigger(admin_api, core_seed)["runId"]
    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now() - timedelta(days=1))
    waiting = trigger(admin_api, edge)["runId"]  # its leader is not live: pending
    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        done = trigger(admin_api, third)["runId"]
        runs.run_complete(instance_id=leader, run_id=done, status="completed", counts={}, errors=0)
    assert (row(dispatched)["status"], row(waiting)["status"]) == (RunStatus.DISPATCHED, RunStatus.PENDING)

    listing = staff_admin.get(RUNS_ADMIN)
    assert listing.status_code == 200
    html = listing.content.decode()
    assert all(run_id in html for run_id in (dispatched, waiting, done))
    assert 'value="cancel_runs"' in html and 'value="delete_selected"' not in html
    detail = staff_admin.get(f"{RUNS_ADMIN}{quote(done)}/change/")
    assert detail.status_code == 200 and core_seed not in detail.content.decode()
    assert third in detail.content.decode() and 'name="_save"' not in detail.content.decode()
    assert staff_admin.get(f"{RUNS_ADMIN}add/").status_code == 403
    assert staff_admin.post(f"{RUNS_ADMIN}{quote(done)}/delete/", {"post": "yes"}).status_code == 403

    to_leader = listen(f"instance.{leader}")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_admin.post(
            RUNS_ADMIN,
            {"action": "cancel_runs", "_selected_action": [dispatched, waiting, done]},
            follow=True,
        )
    assert response.status_code == 200
    assert messages_of(response) == [
        f"Cancelled 2 run(s): {dispatched}, {waiting}.",
        f"Already ended, left as they were: {done} (completed).",
    ]
    [event] = drain(layer, to_leader)
    assert_cancel_discovery(event, dispatched)
    assert (row(dispatched)["status"], row(waiting)["status"], row(done)["status"]) == (
        RunStatus.CANCELLED,
        RunStatus.CANCELLED,
        RunStatus.COMPLETED,
    )
    rows = AuditLog.objects.filter(action="discovery_run_cancelled").order_by("id")
    assert [(r.entity_id, r.actor, r.instance_id) for r in rows] == [
        (dispatched, "user:admin", leader),
        (waiting, "user:admin", ""),
    ]
    # Cancelled again: nothing to do.
    response = staff_admin.post(
        RUNS_ADMIN, {"action": "cancel_runs", "_selected_action": [dispatched]}, follow=True
    )
    assert messages_of(response) == [f"Already ended, left as they were: {dispatched} (cancelled)."]
    assert AuditLog.objects.filter(action="discovery_run_cancelled").count() == 2


def test_cancel_selected_runs_is_offered_by_the_users_own_change_permission(db, django_user_model, rf):
    from django.contrib import admin as django_admin
    from django.contrib.auth.models import Permission

    model_admin = django_admin.site._registry[DiscoveryRun]
    user = django_user_model.objects.create_user("staff", password="unused", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_discoveryrun"))
    request = rf.get("/admin/")

    def offered() -> bool:
        request.user = django_user_model.objects.get(pk=user.pk)  # fresh: permissions are cached
        return "cancel_runs" in model_admin.get_actions(request)

    assert not offered()
    assert not model_admin.has_add_permission(request)
    assert not model_admin.has_change_permission(request)
    assert not model_admin.has_delete_permission(request)
    user.user_permissions.add(Permission.objects.get(codename="change_discoveryrun"))
    assert offered()
    assert not model_admin.has_change_permission(request) and not model_admin.has_delete_permission(request)


def test_the_run_admins_query_count_does_not_grow_with_the_runs(
    site, admin_api, staff_admin, django_assert_max_num_queries
):
    def add_runs(count: int) -> None:
        for _ in range(count):
            seed_id = create_seed(admin_api, EDGE, name=f"Seed {uuid.uuid4().hex[:8]}")
            run_id = trigger(admin_api, seed_id)["runId"]
            runs.run_cancel(actor=TEST_ACTOR, site_id=SITE, run_id=run_id)

    add_runs(1)
    staff_admin.get(RUNS_ADMIN)  # warm up
    with CaptureQueriesContext(connection) as captured:
        assert staff_admin.get(RUNS_ADMIN).status_code == 200
    one_run = len(captured.captured_queries)
    add_runs(20)
    with django_assert_max_num_queries(one_run):
        response = staff_admin.get(RUNS_ADMIN)
    assert response.content.decode().count('name="_selected_action"') == 21
