"""The agent's resilience rules, below the end-to-end level: the backoff (bounds, full jitter after the
cap, reset), Retry-After (seconds and HTTP-date) on registration and on queued results, the first
registration retried while the manager is down (and stopped promptly), the disk queue across a restart
with its Idempotency-Keys, and the instanceToken used for every call but register.

The manager here is tests/agent/peer.py, a real HTTP server on 127.0.0.1 that answers as scripted: the
end-to-end tests (tests/e2e/test_agent_*.py) run the same agent against the real manager.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import socket
import time
from pathlib import Path

import pytest

from agent.backoff import Backoff, backoff
from agent.client import ManagerClient, parse_retry_after
from agent.runner import Agent
from agent.spool import Spool
from tests.agent.peer import start_peer

SITE = "lab"
REGISTER = "/api/v1/instances/register"
RESULTS = f"/api/v1/sites/{SITE}/inventory/devices"
REGISTERED = {
    "instanceId": "inst_1",
    "siteId": SITE,
    "isLeader": True,
    "inventoryVersion": 1,
    "configVersion": 1,
    "config": {"heartbeatInterval": 30000},
    "websocketUrl": "ws://127.0.0.1:9/api/v1/ws",
    "leaderTerm": 1,
}
STORED = {"added": 1, "updated": 0, "unchanged": 0, "failed": 0, "newVersion": 2, "devices": []}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def agent_for(url: str, token: str = "psm_bootstrap", **options) -> Agent:
    options = {"backoff_base": 0.01, "backoff_cap": 0.05, **options}
    return Agent(ManagerClient(url, token, timeout=5), site_id=SITE, hostname="lab-1", **options)


# --- the backoff --------------------------------------------------------------------------------------


def test_the_ceiling_doubles_from_one_second_up_to_the_cap():
    retry = Backoff()  # the spec's defaults: 1 s, doubling, 300 s at most
    ceilings = []
    for _ in range(12):
        ceilings.append(retry.ceiling())
        retry.delay()
    assert ceilings == [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]


def test_every_delay_is_between_zero_and_the_capped_ceiling():
    retry = Backoff(base=1, cap=300, rng=random.Random(7))
    for attempt in range(40):
        ceiling = min(300, 2**attempt)
        assert 0 <= retry.delay() <= ceiling
    assert 0 <= backoff(10_000, base=1, cap=300) <= 300  # no overflow however long the outage


def test_jitter_is_applied_after_the_cap_so_capped_retries_are_spread_over_all_of_it():
    rng = random.Random(11)
    at_cap = [backoff(attempt, base=1, cap=300, rng=rng) for attempt in [20] * 2000]
    # Full jitter over [0, cap]: not parked at the cap (capping after jitter would pile up there) …
    assert max(at_cap) <= 300
    assert sum(1 for d in at_cap if d >= 299) < 0.02 * len(at_cap)
    # … and spread over the whole range: some short, some long, a mean near cap/2.
    assert min(at_cap) < 30 and max(at_cap) > 270
    assert 130 < sum(at_cap) / len(at_cap) < 170


def test_reset_after_a_success_starts_again_from_the_base():
    retry = Backoff(base=1, cap=300)
    for _ in range(10):
        retry.delay()
    assert retry.ceiling() == 300
    retry.reset()
    assert retry.ceiling() == 1
    assert 0 <= retry.delay() <= 1


def test_retry_after_is_a_floor_spread_over_at_most_a_fifth_more():
    retry = Backoff(base=1, cap=300, rng=random.Random(3))
    waits = [retry.delay(retry_after=10) for _ in range(50)]
    retry.reset()
    assert all(10 <= wait <= 300 for wait in waits)  # the floor, or a longer backoff
    assert 10 <= Backoff(base=1, cap=2).delay(retry_after=10) <= 12  # even above the cap
    assert Backoff(base=1, cap=2).delay(retry_after=10**9) <= 3600 * 1.2  # a silly value is bounded


def test_bad_backoff_settings_are_refused():
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)
    with pytest.raises(ValueError):
        Backoff(base=5, cap=1)


# --- Retry-After --------------------------------------------------------------------------------------


def test_retry_after_in_seconds_and_as_an_http_date():
    now = time.time()
    assert parse_retry_after("120") == 120
    assert parse_retry_after(" 0 ") == 0
    in_a_minute = email.utils.formatdate(now + 60, usegmt=True)
    assert 58 <= parse_retry_after(in_a_minute, now=now) <= 60
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0
    for bad in (None, "", "soon", "-5", "1.5e3"):
        assert parse_retry_after(bad) is None


def test_registration_waits_as_long_as_503_and_429_answers_say():
    peer = start_peer()
    try:
        when = int(time.time()) + 4  # an HTTP-date has whole seconds
        date = email.utils.formatdate(when, usegmt=True)
        peer.answer(
            REGISTER,
            (503, {"Retry-After": "1"}, {"error": "overloaded", "detail": "busy", "fields": {}}),
            (429, {"Retry-After": date}, {"error": "throttled", "detail": "slow down", "fields": {}}),
            (200, {}, REGISTERED),
        )
        agent = agent_for(peer.url)

        async def main():
            return await agent._register_until_done(asyncio.Event())

        assert asyncio.run(main()) is True
        first, second, third = peer.requests(REGISTER)
        assert second.at - first.at >= 1.0  # Retry-After: 1, though the backoff alone says ≤ 0.05 s
        assert when - second.wall > 1.5  # (the date was still ahead when it was sent)
        assert third.wall >= when - 0.05  # not before the date it named
        assert agent.instance_id == "inst_1"
    finally:
        peer.server.shutdown()


def test_queued_results_wait_for_retry_after_and_keep_their_idempotency_key():
    peer = start_peer()
    try:
        peer.answer(REGISTER, (200, {}, REGISTERED))
        peer.answer(
            RESULTS,
            (503, {"Retry-After": "1"}, {"error": "overloaded", "detail": "busy", "fields": {}}),
            (200, {}, STORED),
        )
        agent = agent_for(peer.url)

        async def main():
            await agent.register()
            stop = asyncio.Event()
            sender = asyncio.create_task(agent._sender(stop))
            keys = agent.queue_results([{"sysName": "a"}], run_id="run_1")
            keys += agent.queue_results([{"sysName": "b"}])
            outcomes = [await asyncio.wait_for(agent._outcomes[key], 10) for key in list(keys)]
            stop.set()
            agent._spooled.set()
            await asyncio.wait_for(sender, 5)
            return keys, outcomes

        keys, outcomes = asyncio.run(main())
        posts = peer.requests(RESULTS)
        assert [seen.headers["Idempotency-Key"] for seen in posts] == [keys[0], keys[0], keys[1]]
        assert posts[1].at - posts[0].at >= 1.0
        assert [seen.body["devices"][0]["sysName"] for seen in posts] == ["a", "a", "b"]  # in order
        assert posts[0].body == {"source": "discovery", "instanceId": "inst_1", "runId": "run_1",
                                 "devices": [{"sysName": "a"}]}  # fmt: skip
        assert outcomes == [STORED, STORED]
        assert len(agent.spool) == 0
    finally:
        peer.server.shutdown()


def test_a_batch_refused_for_good_is_dropped_and_logged_but_a_401_is_not(caplog):
    peer = start_peer()
    try:
        peer.answer(REGISTER, (200, {}, REGISTERED))
        refused = {"error": "not_leader", "detail": "not the leader", "fields": {}}
        peer.answer(
            RESULTS,
            (401, {}, {"error": "unauthorized", "detail": "who?", "fields": {}}),
            (409, {}, refused),
            (200, {}, STORED),
        )
        agent = agent_for(peer.url)

        async def main():
            await agent.register()
            stop = asyncio.Event()
            sender = asyncio.create_task(agent._sender(stop))
            first, second = agent.queue_results([{"sysName": "a"}]), agent.queue_results([{"sysName": "b"}])
            outcomes = [await asyncio.wait_for(agent._outcomes[k], 10) for k in (*first, *second)]
            stop.set()
            agent._spooled.set()
            await asyncio.wait_for(sender, 5)
            return outcomes

        with caplog.at_level(logging.ERROR, logger="promsnmp.agent"):
            dropped, stored = asyncio.run(main())
        assert [s.body["devices"][0]["sysName"] for s in peer.requests(RESULTS)] == ["a", "a", "b"]
        assert dropped.status == 409 and stored == STORED
        assert "refused for good (409 not_leader" in caplog.text
        assert len(agent.spool) == 0
    finally:
        peer.server.shutdown()


# --- the first registration ---------------------------------------------------------------------------


def test_a_manager_down_at_start_is_retried_and_a_stop_ends_the_wait_at_once(caplog):
    agent = agent_for(f"http://127.0.0.1:{closed_port()}", backoff_base=0.05, backoff_cap=0.2)

    async def main():
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(1.0)
        assert not task.done()
        stop.set()  # what SIGTERM does
        began = time.monotonic()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - began

    with caplog.at_level(logging.WARNING, logger="promsnmp.agent"):
        stopped_in = asyncio.run(main())
    attempts = [r.getMessage() for r in caplog.records if "registration attempt" in r.getMessage()]
    assert len(attempts) >= 3, attempts
    assert "manager unreachable" in attempts[0] and "Connection refused" in attempts[0]
    assert not any(r.exc_info for r in caplog.records)  # a line per attempt, no traceback
    assert stopped_in < 1.0
    assert agent.fatal is None


def test_a_refused_token_at_registration_ends_the_agent():
    peer = start_peer()
    try:
        peer.answer(REGISTER, (401, {}, {"error": "unauthorized", "detail": "bad token", "fields": {}}))
        agent = agent_for(peer.url)
        asyncio.run(asyncio.wait_for(agent.run(asyncio.Event()), 10))
        assert agent.fatal == "registration refused: 401 unauthorized"
        assert len(peer.requests(REGISTER)) == 1
    finally:
        peer.server.shutdown()


# --- instanceToken ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("issued", ["psm_own_token", None])
def test_the_instance_token_replaces_the_bootstrap_token_except_to_register(issued):
    peer = start_peer()
    try:
        peer.answer(REGISTER, (200, {}, {**REGISTERED, **({"instanceToken": issued} if issued else {})}))
        heartbeat_answer = {
            "status": "ok",
            "isLeader": True,
            "inventoryVersion": 1,
            "configVersion": 1,
            "configChanged": False,
            "serverTime": "2026-01-01T00:00:00Z",
            "leaderTerm": 1,
        }
        peer.answer("/api/v1/instances/inst_1/heartbeat", (200, {}, heartbeat_answer))
        peer.answer("/api/v1/instances/inst_1", (200, {}, {"status": "deregistered"}))
        peer.answer(RESULTS, (200, {}, STORED))
        agent = agent_for(peer.url)

        async def main():
            await agent.register()
            await agent.heartbeat()
            await agent.client.post_results(SITE, {"devices": []}, "key-1")
            await agent.client.deregister("inst_1")
            await agent.register()  # registering again goes with the bootstrap token

        asyncio.run(main())
        expected = f"Bearer {issued or 'psm_bootstrap'}"
        used = [(seen.method, seen.path, seen.headers["Authorization"]) for seen in peer.seen]
        assert used == [
            ("POST", REGISTER, "Bearer psm_bootstrap"),
            ("POST", "/api/v1/instances/inst_1/heartbeat", expected),
            ("POST", RESULTS, expected),
            ("DELETE", "/api/v1/instances/inst_1", expected),
            ("POST", REGISTER, "Bearer psm_bootstrap"),
        ]
    finally:
        peer.server.shutdown()


# --- the disk queue -----------------------------------------------------------------------------------


def test_the_queue_survives_a_restart_in_order_with_its_keys(tmp_path: Path):
    spool = Spool(tmp_path)
    keys = [
        spool.put(site_id=SITE, body={"devices": [{"sysName": f"d{n}"}]}, run_id=f"run_{n % 2}")
        for n in range(4)
    ]
    assert len(set(keys)) == 4
    spool.close()

    again = Spool(tmp_path)  # a new process
    assert again.keys() == keys
    batch = again.first()
    assert (batch.key, batch.site_id, batch.run_id, batch.type) == (
        keys[0],
        SITE,
        "run_0",
        "discovery_results",
    )
    assert batch.body == {"devices": [{"sysName": "d0"}]}
    assert again.remove(keys[0]) and not again.remove(keys[0])
    assert again.drop_run("run_1") == [keys[1], keys[3]]
    assert again.keys() == [keys[2]]
    again.close()
    assert Spool(tmp_path).keys() == [keys[2]]


def test_results_queued_by_one_agent_process_are_posted_by_the_next_with_the_same_key(tmp_path: Path):
    down = agent_for(f"http://127.0.0.1:{closed_port()}", state_dir=tmp_path)

    async def queue_while_down():
        down.instance_id = "inst_1"
        stop = asyncio.Event()
        sender = asyncio.create_task(down._sender(stop))
        keys = down.queue_results([{"sysName": "kept"}], run_id="run_9")
        await asyncio.sleep(0.5)  # a few refused connections
        stop.set()
        down._spooled.set()
        await asyncio.wait_for(sender, 5)
        return keys

    keys = asyncio.run(queue_while_down())
    down.spool.close()
    assert len(keys) == 1

    peer = start_peer()
    try:
        peer.answer(RESULTS, (200, {}, STORED))
        back = agent_for(peer.url, state_dir=tmp_path)

        async def deliver():
            stop = asyncio.Event()
            sender = asyncio.create_task(back._sender(stop))
            deadline = time.monotonic() + 10
            while len(back.spool) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            stop.set()
            back._spooled.set()
            await asyncio.wait_for(sender, 5)

        asyncio.run(deliver())
        (post,) = peer.requests(RESULTS)
        assert post.headers["Idempotency-Key"] == keys[0]
        assert post.body["runId"] == "run_9" and post.body["instanceId"] == "inst_1"
        assert len(back.spool) == 0
    finally:
        peer.server.shutdown()
