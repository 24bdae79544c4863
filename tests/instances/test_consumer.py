"""The event socket (instances/consumers.py) with Channels' WebsocketCommunicator against the real ASGI
application and the in-memory channel layer: authentication and close codes, group membership, ping,
malformed frames, disconnect, and `seq` (issue 4 §1, DESIGN.md "Wire contract")."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.utils import timezone

import core.events
from config.asgi import application
from core.models import ApiToken, AuditLog
from core.services import token_create, token_revoke
from instances import election, frames
from instances.frames import FrameRejected
from instances.models import Instance
from inventory.services import inventory_add_devices
from sites.models import Site
from sites.services import site_create, site_update
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TEST_FRAME = "test_frame"  # a frame type registered by the `handled` fixture
WAIT = 5  # seconds: an upper bound for one frame, never expected to be reached


@pytest.fixture(autouse=True)
def memory_layer(settings, monkeypatch):
    """A fresh in-memory channel layer for each test; the server loop the app notes is forgotten after."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    monkeypatch.setattr(core.events, "_server_loop", None)
    yield get_channel_layer()


@pytest.fixture
def world():
    """Two sites; SITE has a leader `a` and a follower `b`, OTHER has `x`; tokens of every kind."""
    from instances.services import instance_register

    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Chicago"})
    site_create(actor=TEST_ACTOR, site_id=OTHER, values={"label": "London"})

    def register(site: str, hostname: str) -> str:
        return instance_register(actor=TEST_ACTOR, site_id=site, hostname=hostname)[0].id

    def token(scopes: list[str], site: str | None = None) -> str:
        return token_create(actor=TEST_ACTOR, name=f"{'+'.join(scopes)} {site}", scopes=scopes, site_id=site)[
            1
        ]

    ids = {"a": register(SITE, "host-a"), "b": register(SITE, "host-b"), "x": register(OTHER, "host-x")}
    assert Instance.objects.get(pk=ids["a"]).is_leader
    return {
        **ids,
        "instance": token(["instance"], SITE),
        "instance_unbound": token(["instance"]),
        "instance_other": token(["instance"], OTHER),
        "admin": token(["admin"]),
        "admin_other": token(["admin"], OTHER),
        "read": token(["read"]),
        "write": token(["write"]),
        "read_write": token(["read", "write"], SITE),
    }


def run(coroutine_function):
    """Run an async test body on an event loop of its own (the suite has no asyncio plugin)."""
    async_to_sync(coroutine_function)()


def path(instance_id: str | None = None, token: str | None = None) -> str:
    query = []
    if instance_id is not None:
        query.append(f"instanceId={instance_id}")
    if token is not None:
        query.append(f"token={token}")
    return "/api/v1/ws" + ("?" + "&".join(query) if query else "")


async def ping_pong(socket: WebsocketCommunicator, site: str = SITE) -> dict:
    await socket.send_json_to({"type": "ping", "timestamp": "2024-01-15T10:30:00Z", "payload": {}})
    pong = await socket.receive_json_from(timeout=WAIT)
    assert set(pong) == {"type", "timestamp", "siteId", "payload"}, pong
    assert pong["type"] == "pong"
    assert ISO_Z.match(pong["timestamp"])
    assert pong["siteId"] == site
    assert set(pong["payload"]) == {"serverTime"}
    assert ISO_Z.match(pong["payload"]["serverTime"])
    return pong


async def opened(url: str, headers: list[tuple[bytes, bytes]] | None = None, site: str = SITE):
    """A socket that is open and stays open: accepted, and it answers a ping."""
    socket = WebsocketCommunicator(application, url, headers=headers or [])
    connected, _ = await socket.connect(timeout=WAIT)
    assert connected
    await ping_pong(socket, site)
    return socket


async def refused(url: str, code: int, headers: list[tuple[bytes, bytes]] | None = None) -> dict:
    """Accepted, then one error frame, then a close with `code` and a reason."""
    socket = WebsocketCommunicator(application, url, headers=headers or [])
    connected, _ = await socket.connect(timeout=WAIT)
    assert connected, "a refused socket is accepted first, then closed with a code"
    frame = await socket.receive_json_from(timeout=WAIT)
    close = await socket.receive_output(timeout=WAIT)
    assert close["type"] == "websocket.close"
    assert close["code"] == code, close
    assert close.get("reason"), close
    assert await socket.receive_nothing(timeout=0.1)
    await socket.disconnect()
    assert frame["type"] == "error"
    assert ISO_Z.match(frame["timestamp"])
    assert frame["siteId"] is None
    assert set(frame["payload"]) == {"error", "detail", "fields"}
    assert frame["payload"]["error"] == ("unauthorized" if code == 4401 else "forbidden")
    assert frame["payload"]["detail"] == close["reason"]
    assert frame["payload"]["fields"] == {}
    return frame


def bearer(token: str, scheme: str = "Bearer") -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"{scheme} {token}".encode())]


def db(function):
    return database_sync_to_async(function)


# --- connecting -----------------------------------------------------------------------------------


def test_connect_with_query_token_marks_the_socket_open(world):
    before = timezone.now()

    async def body():
        socket = await opened(path(world["a"], world["instance"]))
        instance = await db(Instance.objects.get)(pk=world["a"])
        assert instance.socket_connected_at is not None and instance.socket_connected_at >= before
        assert instance.last_heartbeat >= before  # opening the socket is a sign of life
        assert instance.socket_disconnected_at is None
        await socket.disconnect()

    run(body)


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_connect_with_authorization_header(world, scheme):
    async def body():
        socket = await opened(path(world["b"]), headers=bearer(world["instance"], scheme))
        await socket.disconnect()

    run(body)


@pytest.mark.parametrize("token", ["admin", "instance_unbound"])
def test_admin_and_unbound_instance_tokens_may_open_any_instance(world, token):
    async def body():
        for instance, site in (("a", SITE), ("x", OTHER)):
            socket = await opened(path(world[instance], world[token]), site=site)
            await socket.disconnect()

    run(body)


def test_refused_with_4401_for_a_missing_bad_revoked_or_expired_token(world):
    revoked = token_create(actor=TEST_ACTOR, name="revoked", scopes=["instance"], site_id=SITE)
    token_revoke(actor=TEST_ACTOR, token_id=revoked[0].pk)
    expired = token_create(actor=TEST_ACTOR, name="expired", scopes=["instance"], site_id=SITE)
    ApiToken.objects.filter(pk=expired[0].pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    instance = world["a"]

    async def body():
        await refused(path(instance), 4401)
        await refused(path(instance, ""), 4401)
        await refused(path(instance, "psm_" + "0" * 43), 4401)
        await refused(path(instance, revoked[1]), 4401)
        await refused(path(instance, expired[1]), 4401)
        await refused(path(instance), 4401, headers=bearer("psm_not-a-token"))
        await refused(path(instance), 4401, headers=bearer(world["instance"], "Basic"))
        await refused(path(instance, revoked[1]), 4401, headers=bearer(revoked[1]))

    run(body)
    # A refused socket changes nothing about the instance.
    row = Instance.objects.get(pk=instance)
    assert (row.socket_connected_at, row.socket_disconnected_at) == (None, None)


def test_refused_with_4403_for_the_wrong_scope_site_or_instance(world):
    async def body():
        for scope in ("read", "write", "read_write"):
            await refused(path(world["a"], world[scope]), 4403)
        # Tokens bound to another site, either way round.
        await refused(path(world["a"], world["instance_other"]), 4403)
        await refused(path(world["x"], world["instance"]), 4403)
        await refused(path(world["a"], world["admin_other"]), 4403)
        await refused(path(world["a"]), 4403, headers=bearer(world["instance_other"]))
        # No such instance, or none named.
        await refused(path("inst_doesnotexist", world["instance"]), 4403)
        await refused(path("inst_doesnotexist", world["admin"]), 4403)
        await refused(path(None, world["instance"]), 4403)
        await refused(path("", world["admin"]), 4403)

    run(body)
    for key in ("a", "x"):
        row = Instance.objects.get(pk=world[key])
        assert (row.socket_connected_at, row.socket_disconnected_at) == (None, None)


def test_a_deregistered_instance_cannot_open_its_socket(world, client_for):
    api = client_for("instance", site=SITE)
    assert api.delete(f"/api/v1/instances/{world['b']}").status_code == 200

    async def body():
        await refused(path(world["b"], world["instance"]), 4403)

    run(body)


# --- groups and events ----------------------------------------------------------------------------


def test_the_socket_joins_its_site_and_instance_groups_and_only_those(world, memory_layer):
    def publish(group: str, site: str, event_type: str) -> None:
        with transaction.atomic():  # relayed from the outbox after commit, as from any service
            core.events.publish(
                group=group, event_type=event_type, site_id=site, payload={"marker": event_type}
            )

    async def send(group: str, site: str, event_type: str) -> None:
        await db(publish)(group, site, event_type)

    async def body():
        socket = await opened(path(world["a"], world["instance"]))
        await send(f"site.{SITE}", SITE, "to_site")
        await send(f"instance.{world['a']}", SITE, "to_instance")
        for group, site in ((f"instance.{world['b']}", SITE), (f"site.{OTHER}", OTHER)):
            await send(group, site, "not_for_a")
        first = await socket.receive_json_from(timeout=WAIT)
        second = await socket.receive_json_from(timeout=WAIT)
        assert await socket.receive_nothing(timeout=0.3)
        assert [first["type"], second["type"]] == ["to_site", "to_instance"]
        for event in (first, second):
            assert set(event) == {"type", "timestamp", "siteId", "payload", "seq"}
            assert event["siteId"] == SITE and event["payload"] == {"marker": event["type"]}
        assert second["seq"] == first["seq"] + 1
        assert memory_layer.groups.get(f"site.{SITE}") and memory_layer.groups.get(f"instance.{world['a']}")
        await socket.disconnect()
        # It left both groups.
        assert not memory_layer.groups.get(f"site.{SITE}")
        assert not memory_layer.groups.get(f"instance.{world['a']}")

    run(body)


def test_events_from_real_services_reach_the_socket_with_a_seq_growing_by_one(world):
    """config_updated and inventory_updated to the site, leader events to one instance each: the union
    of what the two sockets of the site see is numbered without a gap, in order."""
    start = Site.objects.get(pk=SITE).event_seq
    device = {
        "sysName": "core-rtr-01",
        "agents": [{"address": "127.0.0.1", "port": 161, "version": 2, "readCommunity": "public123"}],
    }

    async def body():
        socket_a = await opened(path(world["a"], world["instance"]))
        socket_b = await opened(path(world["b"]), headers=bearer(world["admin"]))
        await db(site_update)(
            actor=TEST_ACTOR, site_id=SITE, values={"collection_interval": 60000}, partial=True
        )
        result = await db(inventory_add_devices)(
            actor=TEST_ACTOR, site_id=SITE, items=[device], source="discovery", instance_id=world["a"]
        )
        await db(election.leader_assign)(site_id=SITE, actor=TEST_ACTOR, instance_id=world["b"])
        await db(site_update)(
            actor=TEST_ACTOR, site_id=SITE, values={"discovery_cron": "0 0 3 * * *"}, partial=True
        )
        seen = {}
        for name, socket in (("a", socket_a), ("b", socket_b)):
            seen[name] = [await socket.receive_json_from(timeout=WAIT) for _ in range(4)]
            assert await socket.receive_nothing(timeout=0.3)
            await socket.disconnect()
        return seen, result

    seen, result = async_to_sync(body)()
    assert [event["type"] for event in seen["a"]] == [
        "config_updated",
        "inventory_updated",
        "leader_revoked",
        "config_updated",
    ]
    assert [event["type"] for event in seen["b"]] == [
        "config_updated",
        "inventory_updated",
        "leader_assigned",
        "config_updated",
    ]
    for events in seen.values():
        for event in events:
            assert set(event) == {"type", "timestamp", "siteId", "payload", "seq"}
            assert event["siteId"] == SITE and ISO_Z.match(event["timestamp"])
        seqs = [event["seq"] for event in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Site events carry the same number on every socket; the union has no gap.
    for index in (0, 1, 3):
        assert seen["a"][index] == seen["b"][index]
    union = sorted({event["seq"] for events in seen.values() for event in events})
    assert union == list(range(start + 1, start + 6))
    assert Site.objects.get(pk=SITE).event_seq == start + 5
    # The leader_assigned (to b) was published before the leader_revoked (to a).
    assert seen["b"][2]["seq"] + 1 == seen["a"][2]["seq"]

    config = seen["a"][0]["payload"]
    assert config == {
        "configVersion": 2,
        "changes": ["collectionInterval"],
        "config": {"collectionInterval": 60000},
    }
    assert seen["a"][3]["payload"] == {
        "configVersion": 3,
        "changes": ["discoveryCron"],
        "config": {"discoveryCron": "0 0 3 * * *"},
    }
    assert seen["a"][1]["payload"] == {
        "version": result.version,
        "changeType": "device_added",
        "deviceIds": [result.outcomes[0].id],
        "source": "discovery",
        "triggeredBy": world["a"],
    }
    term = Site.objects.get(pk=SITE).leader_term
    assert seen["b"][2]["payload"] == {
        "instanceId": world["b"],
        "previousLeader": world["a"],
        "reason": "manual_assignment",
        "leaderTerm": term,
    }
    assert seen["a"][2]["payload"] == {
        "instanceId": world["a"],
        "newLeader": world["b"],
        "reason": "manual_assignment",
        "leaderTerm": term,
    }


# --- frames from the instance ---------------------------------------------------------------------


def test_ping_answers_pong_and_counts_as_a_sign_of_life(world):
    long_ago = timezone.now() - timedelta(hours=1)

    async def body():
        socket = await opened(path(world["b"], world["instance"]))
        await db(Instance.objects.filter(pk=world["b"]).update)(last_heartbeat=long_ago)
        before = timezone.now().replace(microsecond=0)
        pong = await ping_pong(socket)
        seen = (await db(Instance.objects.get)(pk=world["b"])).last_heartbeat
        # A ping without a payload (or with any payload) is a ping too.
        await socket.send_json_to({"type": "ping"})
        assert (await socket.receive_json_from(timeout=WAIT))["type"] == "pong"
        await socket.disconnect()
        return before, pong, seen

    before, pong, seen = async_to_sync(body)()
    assert seen >= before - timedelta(seconds=1)
    assert seen > long_ago + timedelta(minutes=59)
    server_time = timezone.datetime.fromisoformat(pong["payload"]["serverTime"].replace("Z", "+00:00"))
    assert abs((server_time - timezone.now()).total_seconds()) < 5


@pytest.fixture
def handled():
    """A frame type with a handler (the discovery app registers its own the same way)."""
    calls = []

    def handler(instance_id: str, site_id: str, payload: dict) -> None:
        calls.append((instance_id, site_id, payload))
        if payload.get("reject"):
            raise FrameRejected("invalid", "Rejected.", {"runId": ["Unknown run."]})
        if payload.get("crash"):
            raise RuntimeError("boom")

    frames.frame_handlers.register(TEST_FRAME, handler)
    yield calls
    frames.frame_handlers.unregister(TEST_FRAME)


MALFORMED = [
    ("not JSON", "parse_error", {"text_data": "{not json"}),
    # From a chaos run: json.loads recursed and the socket closed with 1011 (issue 8, section 6).
    ("30000 [", "parse_error", {"text_data": "[" * 30000}),
    ("30000 [ and 30000 ]", "parse_error", {"text_data": "[" * 30000 + "]" * 30000}),
    (
        "65 levels in a payload",
        "parse_error",
        {"text_data": '{"type": "ping", "payload": ' + "[" * 65 + "]" * 65 + "}"},
    ),
    (
        "NaN in a payload",
        "parse_error",
        {"text_data": f'{{"type": "{TEST_FRAME}", "payload": {{"x": NaN}}}}'},
    ),
    ("a list", "bad_frame", {"text_data": "[1, 2, 3]"}),
    ("a string", "bad_frame", {"text_data": '"ping"'}),
    ("no type", "bad_frame", {"text_data": '{"payload": {}}'}),
    ("a type that is not a string", "bad_frame", {"text_data": '{"type": 5, "payload": {}}'}),
    ("an unknown type", "unknown_type", {"text_data": '{"type": "no_such_frame", "payload": {}}'}),
    (
        "a payload that is a string",
        "bad_frame",
        {"text_data": json.dumps({"type": TEST_FRAME, "payload": "x"})},
    ),
    (
        "a payload that is a list",
        "bad_frame",
        {"text_data": json.dumps({"type": TEST_FRAME, "payload": [1]})},
    ),
    ("no payload", "bad_frame", {"text_data": json.dumps({"type": TEST_FRAME})}),
    (
        "a 100 KB frame",
        "bad_frame",
        {"text_data": json.dumps({"type": "ping", "payload": {"x": "y" * 100_000}})},
    ),
    ("a binary frame", "bad_frame", {"bytes_data": b'{"type": "ping"}'}),
    (
        "a frame its handler rejects",
        "invalid",
        {"text_data": json.dumps({"type": TEST_FRAME, "payload": {"reject": 1}})},
    ),
    (
        "a frame its handler crashes on",
        "server_error",
        {"text_data": json.dumps({"type": TEST_FRAME, "payload": {"crash": 1}})},
    ),
]


def test_malformed_frames_get_an_error_frame_and_the_socket_stays_open(world, handled):
    async def body():
        socket = await opened(path(world["a"], world["instance"]))
        answers = []
        for _, _, frame in MALFORMED:
            await socket.send_to(**frame)
            answers.append(await socket.receive_json_from(timeout=WAIT))
            await ping_pong(socket)  # still open, still answering
        # A well-formed frame goes to its handler and needs no answer.
        await socket.send_json_to({"type": TEST_FRAME, "payload": {"runId": "run_1"}})
        assert await socket.receive_nothing(timeout=0.3)
        await ping_pong(socket)
        await socket.disconnect()
        return answers

    answers = async_to_sync(body)()
    for (what, code, _), answer in zip(MALFORMED, answers, strict=True):
        assert set(answer) == {"type", "timestamp", "siteId", "payload"}, what
        assert answer["type"] == "error", what
        assert answer["siteId"] == SITE and ISO_Z.match(answer["timestamp"]), what
        assert set(answer["payload"]) == {"error", "detail", "fields"}, what
        assert answer["payload"]["error"] == code, (what, answer)
        assert answer["payload"]["detail"], what
    rejected = next(a for (w, _, _), a in zip(MALFORMED, answers, strict=True) if w.endswith("rejects"))
    assert rejected["payload"]["fields"] == {"runId": ["Unknown run."]}
    assert handled[-1] == (world["a"], SITE, {"runId": "run_1"})
    assert len(handled) == 3  # reject, crash, the good one; never a malformed one


# --- disconnecting ---------------------------------------------------------------------------------


def test_disconnect_records_when_the_socket_closed(world):
    async def body():
        socket = await opened(path(world["a"], world["instance"]))
        opened_row = await db(Instance.objects.get)(pk=world["a"])
        await socket.disconnect(code=1006)
        return opened_row

    opened_row = async_to_sync(body)()
    closed_row = Instance.objects.get(pk=world["a"])
    assert opened_row.socket_disconnected_at is None
    assert closed_row.socket_disconnected_at is not None
    assert closed_row.socket_disconnected_at >= opened_row.socket_connected_at
    assert closed_row.socket_connected_at == opened_row.socket_connected_at
    assert closed_row.is_leader  # a closed socket alone deposes nobody (grace period: election.py)
    assert Instance.objects.get(pk=world["b"]).socket_disconnected_at is None


def test_a_closed_leader_socket_is_looked_at_when_its_grace_ends(world, settings):
    """The consumer starts a check of the closing instance's leadership for the moment the failover grace
    ends (no periodic health check runs here). A reconnect within the grace keeps the leadership: that
    close's check still comes and finds the leader back. A close with no return is acted on then."""
    settings.FAILOVER_GRACE_SECONDS = 1

    async def body():
        loop = asyncio.get_running_loop()
        follower = await opened(path(world["b"], world["instance"]))
        leader = await opened(path(world["a"], world["instance"]))
        await leader.disconnect(code=1006)
        leader = await opened(path(world["a"], world["instance"]))  # back within the grace
        assert await follower.receive_nothing(timeout=election.lost_socket_check_delay() + 0.5)
        assert await leader.receive_nothing(timeout=0.1)
        assert await db(election.leader_id)(SITE) == world["a"]

        await leader.disconnect(code=1006)
        closed = loop.time()
        assigned = await follower.receive_json_from(timeout=WAIT)
        waited = loop.time() - closed
        await follower.disconnect()
        return assigned, waited

    assigned, waited = async_to_sync(body)()
    assert assigned["type"] == "leader_assigned"
    assert assigned["payload"] == {
        "instanceId": world["b"],
        "previousLeader": world["a"],
        "reason": "previous_leader_unhealthy",
        "leaderTerm": 2,
    }
    assert waited >= 1  # not before the grace ended
    change = AuditLog.objects.get(site_id=SITE, action="leader_assigned", details__leaderTerm=2)
    assert change.actor == "system:failover-check"
