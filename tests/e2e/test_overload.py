"""Overload sheds, it does not collapse (issue 8 §2), against real server processes.

1. Admission control (core.admission) in a real `manage.py serve` (daphne, the embedded default's one
   process) on its default MAX_REQUESTS_IN_FLIGHT: heartbeats in waves of CLIENT_THREADS at once for a few
   seconds, three times its admission limit whatever the machine's speed (an average rate is not: the
   server got faster and a rate once beyond capacity was served whole); every request gets an answer (200,
   or 503 + Retry-After at once),
   p99 of all answers < 1 s; health probes answer throughout; afterwards it serves 200 as before. The
   same against gunicorn with the production worker class (config.gunicorn.ThreadWorker), which sheds in
   its main thread.
2. Rate limits on the production shape's cache (Redis, REDIS_URL): two server processes draw on one
   budget per token and one per site's registrations.
3. The ASGI wrapper itself, in-process: the slot is held until the view's thread is done.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import threading
import time
import uuid
from collections import Counter

import pytest
import redis
import requests

from core.admission import AdmissionControl, AdmissionTicketMiddleware
from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR, TEST_REDIS_URL
from tests.core.test_settings import run_check
from tests.e2e.servers import delete_redis_keys, gunicorn, serve

# Beyond capacity by concurrency, not by rate: each wave is CLIENT_THREADS heartbeats sent at the same
# moment, 3x the embedded default's MAX_REQUESTS_IN_FLIGHT (16) and 6x the small gunicorn's (2 x 4).
LOAD_SECONDS = 10
WAVES_PER_SECOND = 5
CLIENT_THREADS = 48
CLIENT_TIMEOUT = 5  # seconds: what a hang looked like before admission control
NO_LIMITS = {"RATE_LIMIT_PER_TOKEN": "100000000/min", "RATE_LIMIT_REGISTER_PER_SITE": "100000000/min"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(1, math.ceil(fraction * len(ordered))) - 1]


def register(base_url: str, token: str, site: str, hostname: str) -> requests.Response:
    return requests.post(
        f"{base_url}/api/v1/instances/register",
        json={"siteId": site, "hostname": hostname, "version": "1.0.0"},
        headers=bearer(token),
        timeout=10,
    )


def heartbeats(base_url: str, token: str, instance_ids: list[str], *, seconds: float) -> list:
    """Open loop in waves: wave w is due at start + w / WAVES_PER_SECOND, when each client thread sends one
    heartbeat (late if its previous answer was late). [(status or error name, seconds, response)]."""
    waves, counter, results = int(WAVES_PER_SECOND * seconds), itertools.count(), []
    start = time.monotonic() + 0.2

    def worker() -> None:
        with requests.Session() as session:
            session.headers.update(bearer(token))
            for wave in range(waves):
                if (delay := start + wave / WAVES_PER_SECOND - time.monotonic()) > 0:
                    time.sleep(delay)
                index = next(counter)
                sent = time.monotonic()
                url = f"{base_url}/api/v1/instances/{instance_ids[index % len(instance_ids)]}/heartbeat"
                try:
                    response = session.post(url, json={"status": "healthy"}, timeout=CLIENT_TIMEOUT)
                    results.append((response.status_code, time.monotonic() - sent, response))
                except requests.RequestException as exc:
                    results.append((type(exc).__name__, time.monotonic() - sent, None))

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(CLIENT_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 4 * CLIENT_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a client thread hangs"
    return results


def overload_and_recover(base_url: str, site: str) -> Counter:
    """Heartbeats in waves for LOAD_SECONDS while probes run; checks every answer and the recovery.
    Returns the statuses."""
    _, token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    ids = []
    for n in range(20):
        response = register(base_url, token, site, f"promsnmp-{n:02d}")
        assert response.status_code == 200, response.text
        ids.append(response.json()["instanceId"])

    probes: list[int | str] = []
    loaded = threading.Event()

    def probe() -> None:  # never shed: an orchestrator must not restart a busy server
        while not loaded.is_set():
            for path in ("/health/live", "/health/ready"):
                try:
                    probes.append(requests.get(f"{base_url}{path}", timeout=CLIENT_TIMEOUT).status_code)
                except requests.RequestException as exc:
                    probes.append(type(exc).__name__)
            loaded.wait(0.5)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    try:
        results = heartbeats(base_url, token, ids, seconds=LOAD_SECONDS)
    finally:
        loaded.set()
        prober.join(timeout=2 * CLIENT_TIMEOUT)

    statuses = Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 503}, f"only 200 and 503, no hang, no other error: {statuses}"
    assert statuses[503] > 0, f"waves of {CLIENT_THREADS} should be beyond this server's capacity: {statuses}"
    assert statuses[200] > 0, statuses
    p99 = percentile([seconds for _, seconds, _ in results], 0.99)
    offered = f"waves of {CLIENT_THREADS}, {WAVES_PER_SECOND}/s, {LOAD_SECONDS} s"
    print(f"\n{offered}: {dict(statuses)}, p99 of all answers {p99:.3f} s")
    assert p99 < 1.0, f"p99 of all {len(results)} answers {p99:.3f} s ({statuses})"
    for status, _, response in results:
        if status == 503:
            assert response.headers["Content-Type"] == "application/json"
            assert response.json()["error"] == "overloaded" and response.json()["fields"] == {}
            assert 1 <= int(response.headers["Retry-After"]) <= 5
    assert probes and set(probes) == {200}, Counter(probes)

    # The load is over: heartbeats are served normally again.
    time.sleep(1)
    for instance_id in ids:
        sent = time.monotonic()
        response = requests.post(
            f"{base_url}/api/v1/instances/{instance_id}/heartbeat",
            json={"status": "healthy"},
            headers=bearer(token),
            timeout=CLIENT_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        assert time.monotonic() - sent < 1.0
    return statuses


@pytest.mark.django_db(transaction=True)
def test_beyond_capacity_the_embedded_server_sheds_fast_and_recovers():
    site_create(actor=TEST_ACTOR, site_id="overload", values={"label": "Overload"})
    with serve(env=NO_LIMITS, args=["--no-beat"]) as (base_url, _process):
        overload_and_recover(base_url, "overload")


@pytest.mark.django_db(transaction=True)
def test_beyond_capacity_gunicorn_sheds_fast_and_recovers(settings):
    """The production shape's REST server: 2 workers of ThreadWorker, made small here (2 threads, 4 requests
    taken per worker) so that a load the test client can offer is well beyond its capacity; with shedding
    off (MAX_REQUESTS_IN_FLIGHT=0) the same load times out clients. That a full worker leaves new
    connections to a sibling with a free thread is shown by tests/e2e/test_slow_clients.py."""
    site_create(actor=TEST_ACTOR, site_id="overload-prod", values={"label": "Overload"})
    settings.GUNICORN_THREADS = 2  # gunicorn_arguments() reads it for --threads
    env = {**NO_LIMITS, "GUNICORN_THREADS": "2", "MAX_REQUESTS_IN_FLIGHT": "4"}
    with gunicorn(env=env, workers=2) as (base_url, process):
        overload_and_recover(base_url, "overload-prod")
    assert "overloaded:" in process.server_log and "answered 503" in process.server_log
    assert "WORKER TIMEOUT" not in process.server_log and "Traceback" not in process.server_log


@pytest.fixture
def redis_prefixes():
    """Key prefixes of this run's own on the tests' Redis database; only their keys are deleted."""
    run = uuid.uuid4().hex[:12]
    prefixes = {
        "THROTTLE_CACHE_PREFIX": f"psm-throttle-test-{run}",
        "CHANNEL_LAYER_PREFIX": f"psm-ws-test-{run}",
        "CELERY_QUEUE": f"psm-celery-test-{run}",
    }
    yield prefixes
    for prefix in prefixes.values():
        delete_redis_keys(TEST_REDIS_URL, f"{prefix}*")


@pytest.mark.django_db(transaction=True)
def test_two_processes_share_the_budgets_on_redis(redis_prefixes):
    site, other = "throttle-a", "throttle-b"
    for site_id in (site, other):
        site_create(actor=TEST_ACTOR, site_id=site_id, values={"label": site_id})
    reader, other_reader, enrol_1, enrol_2 = (
        token_create(actor=TEST_ACTOR, name=name, scopes=scopes)[1]
        for name, scopes in (("r1", ["read"]), ("r2", ["read"]), ("e1", ["instance"]), ("e2", ["instance"]))
    )
    env = {
        "REDIS_URL": TEST_REDIS_URL,
        **redis_prefixes,
        "RATE_LIMIT_PER_TOKEN": "4/day",  # per day: the test never straddles a window's end
        "RATE_LIMIT_REGISTER_PER_SITE": "3/day",
    }
    with (
        serve(env=env, args=["--no-beat"]) as (server_a, _a),
        serve(env=env, args=["--no-beat"]) as (server_b, _b),
    ):
        # One token's budget is spent across both processes: 2 + 2, then 429 on either.
        for base in (server_a, server_b, server_a, server_b):
            assert requests.get(f"{base}/api/v1/sites", headers=bearer(reader), timeout=10).status_code == 200
        for base in (server_a, server_b):
            refused = requests.get(f"{base}/api/v1/sites", headers=bearer(reader), timeout=10)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"] == "throttled"
            assert 1 <= int(refused.headers["Retry-After"]) <= 12 * 86400
        assert (
            requests.get(f"{server_b}/api/v1/sites", headers=bearer(other_reader), timeout=10).status_code
            == 200
        )

        # One site's registrations, whichever token and process: 3, then 429; the other site is not touched.
        for base, token, hostname in (
            (server_a, enrol_1, "a"),
            (server_b, enrol_2, "b"),
            (server_a, enrol_2, "c"),
        ):
            assert register(base, token, site, hostname).status_code == 200
        refused = register(server_b, enrol_1, site, "d")
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert register(server_b, enrol_1, other, "a").status_code == 200

    keys = redis.Redis.from_url(TEST_REDIS_URL).keys(f"{redis_prefixes['THROTTLE_CACHE_PREFIX']}:*")
    assert keys, "the counters are in Redis"


# --- the ASGI wrapper, in-process -------------------------------------------------------------------------


class Blocking:
    """A downstream ASGI app whose requests wait until released, as views do in their threads."""

    def __init__(self):
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope, receive, send):
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app, path: str) -> tuple[int, dict, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    await app({"type": "http", "path": path, "method": "GET", "headers": []}, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, body


def test_admission_sheds_above_the_limit_and_never_the_probes():
    async def scenario():
        inner = Blocking()
        gate = AdmissionControl(inner, limit=3, running=2)
        held = [asyncio.create_task(call(gate, "/api/v1/sites")) for _ in range(3)]
        while gate.in_flight < 3 or inner.entered < 2:
            await asyncio.sleep(0)
        for _ in range(10):
            await asyncio.sleep(0)
        assert inner.entered == 2, "the third admitted request waits for a running slot"
        status, headers, body = await asyncio.wait_for(call(gate, "/api/v1/sites"), 1)
        assert status == 503 and 1 <= int(headers["retry-after"]) <= 5
        assert headers["content-type"] == "application/json"
        assert json.loads(body) == {
            "error": "overloaded",
            "detail": "The server is at capacity (3 requests in flight); "
            "retry after the Retry-After seconds.",
            "fields": {},
        }
        probe = asyncio.create_task(call(gate, "/health/ready"))  # not counted, not refused, not queued
        while inner.entered < 3:
            await asyncio.sleep(0)
        assert gate.in_flight == 3
        inner.release.set()
        assert [(await task)[0] for task in (*held, probe)] == [200, 200, 200, 200]
        assert gate.in_flight == 0 and inner.entered == 4
        assert (await call(gate, "/api/v1/sites"))[0] == 200

    asyncio.run(scenario())


def test_the_slot_is_held_until_the_views_thread_is_done():
    """Django cancels the ASGI call of a client that went away; its view goes on in its thread, and keeps
    its slot until it returns. A view that had not started by then is not run at all."""

    async def scenario():
        gate = AdmissionControl(None, limit=1)
        view_may_finish, view_started = threading.Event(), threading.Event()
        ran = []

        def view(request):
            ran.append(request.path)
            view_started.set()
            view_may_finish.wait(5)
            return "response"

        class Request:
            path = "/api/v1/sites"

        async def django(scope, receive, send):  # the thread goes on when the ASGI call is cancelled
            request = Request()
            request.scope = scope
            await asyncio.shield(asyncio.to_thread(AdmissionTicketMiddleware(view), request))

        gate.app = django
        call_task = asyncio.create_task(call(gate, "/api/v1/sites"))
        await asyncio.to_thread(view_started.wait, 5)
        call_task.cancel()  # the client disconnected
        with pytest.raises(asyncio.CancelledError):
            await call_task
        assert gate.in_flight == 1  # the view still runs
        assert (await call(gate, "/api/v1/sites"))[0] == 503
        view_may_finish.set()
        for _ in range(500):
            if gate.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert gate.in_flight == 0 and ran == ["/api/v1/sites"]

        # A request whose ASGI call is over before its thread starts: the view is never run.
        ticket_scopes = []

        async def capture(scope, receive, send):
            ticket_scopes.append(scope)

        async def nothing(*message):
            return {"type": "http.disconnect"}

        gate.app = capture
        await gate(
            {"type": "http", "path": "/api/v1/sites", "method": "GET", "headers": []}, nothing, nothing
        )
        late = Request()
        late.scope = ticket_scopes[0]
        answer = AdmissionTicketMiddleware(view)(late)
        assert answer.status_code == 499 and ran == ["/api/v1/sites"]
        assert gate.in_flight == 0

    asyncio.run(scenario())


def test_bad_admission_bounds_stop_start_up(tmp_path):
    for name, value in (("MAX_REQUESTS_IN_FLIGHT", "-1"), ("MAX_REQUESTS_RUNNING", "0")):
        result = run_check({"VAR_DIR": str(tmp_path), name: value})
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and name in result.stderr
    assert run_check({"VAR_DIR": str(tmp_path), "MAX_REQUESTS_IN_FLIGHT": "4"}).returncode == 0
