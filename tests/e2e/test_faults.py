"""Nothing is lost across faults (issue 8, sections 3 and 6), with real processes:
- a Redis of the test's own (`redis-server` on a spare port) is stopped and started again under the
  production shape (gunicorn for REST, daphne for the socket): the API keeps answering, a socket opened
  meanwhile is refused with 4503, changes made meanwhile wait in the outbox and reach the open socket
  (which rode out the outage) when Redis is back, heartbeats recover without a restart, and no 5xx;
- the test database's PostgreSQL backends are terminated under the same shape: pooled connections are
  checked on checkout, so requests keep answering 200 and the leader's socket stays open;
- SQLite named by DATABASE_URL gets the same WAL / IMMEDIATE / busy-timeout options as the default:
  50 concurrent registrations against a real server, no "database is locked".
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import requests
from django.db import connection

from core.models import OutboxMessage
from core.services import token_create
from instances.models import Instance
from sites.services import site_create
from tests.conftest import TEST_ACTOR, TEST_REDIS_URL
from tests.e2e.servers import (
    EventSocket,
    delete_redis_keys,
    free_port,
    gunicorn,
    manage,
    serve,
    stop,
    websocket_url,
)
from tests.e2e.test_websocket import bearer, register

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERY = 5  # seconds: a bound for "it arrives" once the fault is over
RECOVERY = 20  # seconds: a bound for the relay's backoff after an outage (it waits at most 5 s a round)


@contextmanager
def redis_server(port: int):
    """A redis-server of the test's own on 127.0.0.1:port, keeping nothing on disk."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: the fault tests need a Redis of their own to kill.")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    import redis

    while True:
        try:
            redis.Redis(port=port, socket_timeout=1).ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                stop(process)
                pytest.fail(f"redis-server did not start on port {port}")
            time.sleep(0.1)
    try:
        yield process
    finally:
        stop(process)


def heartbeat(rest: str, instance_id: str, token: str) -> int:
    response = requests.post(
        f"{rest}/api/v1/instances/{instance_id}/heartbeat",
        json={"status": "healthy"},
        headers=bearer(token),
        timeout=10,
    )
    return response.status_code


def test_a_redis_outage_delays_events_and_loses_none():
    site = "faults-redis"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": site})
    _, site_token = token_create(actor=TEST_ACTOR, name="enrolment", scopes=["instance"], site_id=site)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    port = free_port()
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "CHANNEL_LAYER_PREFIX": f"faults-{uuid.uuid4().hex[:8]}",
    }

    with (
        redis_server(port) as first_redis,
        gunicorn(env=env) as (rest, _g),
        serve(env=env, args=["--no-beat"]) as (ws, _d),
    ):
        answer = register(rest, site_token, site, "promsnmp-1")
        leader, token = answer["instanceId"], answer["instanceToken"]
        socket = EventSocket(websocket_url(ws, leader, token))
        socket.ping()

        stop(first_redis, timeout=0)  # SIGTERM: gone at once; nothing on disk
        first_redis.wait()
        # A socket opened meanwhile is refused cleanly (4503: try again later), not an HTTP 500.
        refused = EventSocket(websocket_url(ws, leader, token))
        code, frame = refused.closed(DELIVERY)
        assert (code, frame["payload"]["error"]) == (4503, "unavailable"), (code, frame)
        statuses = [heartbeat(rest, leader, token)]
        patched = requests.patch(
            f"{rest}/api/v1/sites/{site}",
            json={"config": {"cacheMaxEntries": 777}},
            headers=bearer(admin_token),
            timeout=10,
        )
        refreshed = requests.post(
            f"{rest}/api/v1/sites/{site}/refresh-inventory", json={}, headers=bearer(admin_token), timeout=10
        )
        statuses += [patched.status_code, refreshed.status_code, heartbeat(rest, leader, token)]
        assert statuses == [200, 200, 202, 200], statuses
        queued = OutboxMessage.objects.filter(site_id=site, delivered_at__isnull=True)
        assert queued.count() == 2  # committed, waiting for Redis

        with redis_server(port):
            # The socket rode out the outage: it rejoins its groups and gets both events.
            updated, _ = socket.wait_for("config_updated", RECOVERY)
            refreshed, _ = socket.wait_for("refresh_inventory", RECOVERY)
            assert updated["payload"]["config"] == {"cacheMaxEntries": 777}
            assert refreshed["payload"] == {"reason": "admin_request", "fullSync": True}
            assert not OutboxMessage.objects.filter(site_id=site, delivered_at__isnull=True).exists()
            assert [heartbeat(rest, leader, token) for _ in range(5)] == [200] * 5
            socket.ping()
            socket.close()


def terminate_backends(database: str, application: str) -> int:
    """pg_terminate_backend for the servers' connections to the database (their application_name, from
    PGAPPNAME); this process's pool is left alone."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name = %s",
            [database, application],
        )
        return cursor.fetchone()[0]


def test_terminated_database_connections_are_replaced_without_errors():
    site = "faults-pg"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": site})
    _, site_token = token_create(actor=TEST_ACTOR, name="enrolment", scopes=["instance"], site_id=site)
    application = f"faults-{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": TEST_REDIS_URL, "CHANNEL_LAYER_PREFIX": application, "PGAPPNAME": application}
    database = connection.settings_dict["NAME"]

    with gunicorn(env=env) as (rest, _g), serve(env=env, args=["--no-beat"]) as (ws, _d):
        answer = register(rest, site_token, site, "promsnmp-1")
        leader, token = answer["instanceId"], answer["instanceToken"]
        socket = EventSocket(websocket_url(ws, leader, token))
        socket.ping()
        statuses = []
        for _ in range(3):
            assert terminate_backends(database, application) > 0
            statuses += [heartbeat(rest, leader, token) for _ in range(6)]
            socket.ping()  # the socket's own database work recovers too, and the socket stays open
        assert statuses == [200] * len(statuses), statuses
        assert Instance.objects.get(pk=leader).is_leader
        socket.close()
    delete_redis_keys(TEST_REDIS_URL, f"{env['CHANNEL_LAYER_PREFIX']}*")


def test_sqlite_named_by_database_url_takes_concurrent_registrations(tmp_path):
    sqlite = {"DATABASE_URL": f"sqlite:///{tmp_path / 'manager.sqlite3'}", "VAR_DIR": str(tmp_path)}
    manage("migrate", "--noinput", env=sqlite)
    admin_token = manage("create_token", "--name", "ops", "--scope", "admin", env=sqlite).stdout.strip()
    with serve(env=sqlite) as (base_url, _process):
        created = requests.post(
            f"{base_url}/api/v1/sites",
            json={"id": "lite", "label": "SQLite"},
            headers=bearer(admin_token),
            timeout=10,
        )
        assert created.status_code == 201, created.text

        def enrol(index: int) -> int:
            """Register as an instance does: a 503 (admission control) is retried after its Retry-After."""
            for _ in range(20):
                response = requests.post(
                    f"{base_url}/api/v1/instances/register",
                    json={"siteId": "lite", "hostname": f"promsnmp-{index}"},
                    headers=bearer(admin_token),
                    timeout=30,
                )
                if response.status_code != 503:
                    return response.status_code
                time.sleep(float(response.headers["Retry-After"]))
            return 503

        with ThreadPoolExecutor(max_workers=25) as pool:
            statuses = list(pool.map(enrol, range(50)))
        assert statuses == [200] * 50, sorted(set(statuses))
        site = requests.get(f"{base_url}/api/v1/sites/lite", headers=bearer(admin_token), timeout=10).json()
        assert len(site["instances"]) == 50
        assert sum(instance["isLeader"] for instance in site["instances"]) == 1
