"""Sessions end with their credentials (issue 8, section 1), on the in-memory and the Redis channel layer:
a revoked or expired token, a deregistered instance and a deleted site close the sockets they opened,
with an error frame saying why, and a ping on a socket whose token no longer authenticates is not a sign
of life. Cross-process and production-shape checks are in tests/e2e/test_sessions.py."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.utils import timezone

import core.events
from config.asgi import application
from core.models import ApiToken, OutboxMessage
from core.services import token_create, token_revoke
from instances.models import Instance
from instances.services import instance_deregister
from sites.services import site_delete
from tests.conftest import TEST_ACTOR
from tests.instances import test_consumer
from tests.instances.test_consumer import OTHER, SITE, WAIT, opened, path, ping_pong, run

world = test_consumer.world  # the fixture: two sites, three instances, tokens of every kind

pytestmark = pytest.mark.django_db(transaction=True)
CLOSE_WITHIN = 2  # seconds: the bound for a revoked or expired token


@pytest.fixture(params=["memory", "redis"], autouse=True)
def channel_layer(request, settings, monkeypatch):
    """Each test on a fresh in-memory layer and on Redis (the redis_layer fixture)."""
    monkeypatch.setattr(core.events, "_server_loop", None)
    if request.param == "redis":
        return request.getfixturevalue("redis_layer")
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


def instance_token(site: str, instance_id: str = "") -> tuple[str, str]:
    token, plaintext = token_create(
        actor=TEST_ACTOR, name=f"t {uuid.uuid4().hex[:6]}", scopes=["instance"], site_id=site,
        instance_id=instance_id,
    )  # fmt: skip
    return token.id, plaintext


async def ended(socket: WebsocketCommunicator, code: int, error: str, within: float = WAIT) -> float:
    """The socket gets an error frame with `error`, then a close with `code`; returns how long it took."""
    started = time.monotonic()
    frame = await socket.receive_json_from(timeout=within)
    assert frame["type"] == "error", frame
    assert frame["payload"]["error"] == error, frame
    assert frame["payload"]["detail"]
    close = await socket.receive_output(timeout=within)
    assert close["type"] == "websocket.close" and close["code"] == code, close
    took = time.monotonic() - started
    # A real server answers the close with websocket.disconnect; without it the consumer waits for one
    # and wait() only returns at its 1 s timeout.
    await socket.send_input({"type": "websocket.disconnect", "code": code})
    await socket.wait()
    return took


def in_transaction(function, **kwargs):
    """Call a service the way a request does: in a transaction whose commit relays its messages."""
    with transaction.atomic():
        return function(**kwargs)


db = database_sync_to_async


def test_revoking_a_token_closes_its_sockets_and_only_those(world):
    revoked_id, revoked = instance_token(SITE)
    _, kept = instance_token(SITE)

    async def body():
        a = await opened(path(world["a"], revoked))
        b = await opened(path(world["b"], kept))
        await db(in_transaction)(token_revoke, actor=TEST_ACTOR, token_id=revoked_id)
        assert await ended(a, 4401, "token_revoked") < CLOSE_WITHIN
        await ping_pong(b)  # a socket opened with another token stays
        await b.disconnect()

    run(body)
    assert not OutboxMessage.objects.filter(delivered_at__isnull=True).exists()  # all delivered


def test_an_expiring_token_closes_its_socket_when_it_expires(world):
    token_id, plaintext = instance_token(SITE)
    ApiToken.objects.filter(pk=token_id).update(expires_at=timezone.now() + timedelta(seconds=1))

    async def body():
        socket = await opened(path(world["a"], plaintext))
        assert await ended(socket, 4401, "token_expired", within=1 + CLOSE_WITHIN) < 1 + CLOSE_WITHIN

    run(body)


def test_a_ping_with_a_token_that_no_longer_authenticates_is_no_sign_of_life(world):
    """The close message may be lost (a Redis outage before the outbox existed, a revoke by SQL): the
    next ping finds out, ends the session, and does not move lastHeartbeat."""
    token_id, plaintext = instance_token(SITE)

    async def body():
        socket = await opened(path(world["a"], plaintext))
        before = (await db(Instance.objects.get)(pk=world["a"])).last_heartbeat
        await db(ApiToken.objects.filter(pk=token_id).update)(revoked_at=timezone.now())
        await socket.send_json_to({"type": "ping"})
        await ended(socket, 4401, "token_invalid")
        assert (await db(Instance.objects.get)(pk=world["a"])).last_heartbeat == before

    run(body)


def test_deregistering_closes_the_instances_sockets_at_once(world):
    async def body():
        a = await opened(path(world["a"], world["instance"]))
        b = await opened(path(world["b"], world["instance"]))
        await db(in_transaction)(instance_deregister, actor=TEST_ACTOR, instance_id=world["b"])
        assert await ended(b, 4403, "deregistered") < CLOSE_WITHIN
        await ping_pong(a)  # the sibling, same token, stays
        await a.disconnect()

    run(body)


def test_deleting_a_site_closes_every_socket_of_the_site(world):
    async def body():
        a = await opened(path(world["a"], world["instance"]))
        b = await opened(path(world["b"], world["admin"]))
        x = await opened(path(world["x"], world["instance_other"]), site=OTHER)
        await db(in_transaction)(site_delete, actor=TEST_ACTOR, site_id=SITE)
        for socket in (a, b):
            assert await ended(socket, 4403, "site_deleted") < CLOSE_WITHIN
        await ping_pong(x, OTHER)  # another site's socket stays
        await x.disconnect()

    run(body)


def test_an_instance_token_opens_only_its_own_instances_socket(world):
    _, own = instance_token(SITE, world["a"])

    async def body():
        refused = WebsocketCommunicator(application, path(world["b"], own))
        assert (await refused.connect(timeout=WAIT))[0]
        frame = await refused.receive_json_from(timeout=WAIT)
        assert frame["payload"]["error"] == "forbidden" and "another instance" in frame["payload"]["detail"]
        assert (await refused.receive_output(timeout=WAIT))["code"] == 4403
        socket = await opened(path(world["a"], own))
        await socket.disconnect()

    run(body)


# --- resume: ?lastSeq= -------------------------------------------------------------------------------


def publish_events(*targets: tuple[str, str]) -> None:
    """Publish (group, type) events for SITE, each in a transaction of its own, as services do."""
    for group, event_type in targets:
        with transaction.atomic():
            core.events.publish(
                group=group, event_type=event_type, site_id=SITE, payload={"marker": event_type}
            )


def test_a_socket_that_resumes_with_last_seq_gets_what_its_groups_missed(world):
    async def body():
        socket = await opened(path(world["a"], world["instance"]))
        await db(publish_events)((f"site.{SITE}", "seen"))
        seen = await socket.receive_json_from(timeout=WAIT)
        await socket.disconnect()
        # While it is away: two for its site, one for itself, one for its sibling, one for another site.
        await db(publish_events)(
            (f"site.{SITE}", "missed_1"),
            (f"instance.{world['a']}", "missed_2"),
            (f"instance.{world['b']}", "not_mine"),
            (f"site.{SITE}", "missed_3"),
        )
        resumed = WebsocketCommunicator(
            application, path(world["a"], world["instance"]) + f"&lastSeq={seen['seq']}"
        )
        assert (await resumed.connect(timeout=WAIT))[0]
        got = [await resumed.receive_json_from(timeout=WAIT) for _ in range(3)]
        assert await resumed.receive_nothing(timeout=0.3)
        assert [event["type"] for event in got] == ["missed_1", "missed_2", "missed_3"]
        assert [event["seq"] for event in got] == [seen["seq"] + 1, seen["seq"] + 2, seen["seq"] + 4]
        assert set(got[0]) == {"type", "timestamp", "siteId", "payload", "seq"}
        await resumed.disconnect()

    run(body)


@pytest.mark.parametrize("bad", ["-1", "x", "1.5", "9" * 19])
def test_a_bad_last_seq_is_refused(world, bad):
    async def body():
        socket = WebsocketCommunicator(application, path(world["a"], world["instance"]) + f"&lastSeq={bad}")
        assert (await socket.connect(timeout=WAIT))[0]
        await ended(socket, 4400, "bad_request")

    run(body)


def test_replaying_reads_one_query_whatever_the_backlog(world, django_assert_num_queries):
    groups = [f"site.{SITE}", f"instance.{world['a']}"]
    for backlog in (1, 20):
        publish_events(*[(groups[0], f"e{i}") for i in range(backlog)])
        with django_assert_num_queries(1):
            events = core.events.events_since(site_id=SITE, groups=groups, last_seq=0)
        assert len(events) >= backlog


def test_delivered_events_are_pruned_after_the_replay_window(world, settings):
    publish_events((f"site.{SITE}", "old"))
    OutboxMessage.objects.update(
        delivered_at=timezone.now() - timedelta(seconds=settings.EVENT_REPLAY_SECONDS + 1)
    )
    publish_events((f"site.{SITE}", "new"))
    assert core.events.prune_delivered() >= 1
    assert [body["type"] for body in OutboxMessage.objects.values_list("body", flat=True)] == ["new"]
