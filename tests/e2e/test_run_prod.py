"""`manage.py run_prod` (what `make run-prod` runs): the production shape on one machine, end to end.

One launcher on the test PostgreSQL database and TEST_REDIS_URL, with a channel-layer prefix and a
Celery queue of this test's own (no other worker on that Redis database can take its tasks), proves
with real clients:
- gunicorn answers REST on PORT and daphne the WebSocket on WS_PORT, and the register response's
  websocketUrl names WS_PORT;
- a change through REST (gunicorn) reaches the sockets (daphne) through Redis;
- Celery beat and the worker run the leader health check: a leader that stops heartbeating is replaced
  and the follower's socket gets leader_assigned (beat → Redis → worker → Redis → daphne: no other
  process runs the check);
- SIGTERM to the launcher stops every process it started (checked by pid) and it exits 0;
- a process that dies is started again after a back-off: SIGKILL to daphne, and a WebSocket connects
  again; SIGKILL to gunicorn's master, and REST answers again (its old workers are gone);
- a process that crashes at once on every start (gunicorn with a bad GUNICORN_CMD_ARGS) is a crash loop:
  after CRASH_LOOP_LIMIT starts, with the back-off between them, everything stops and it exits 1.
And without Redis or PostgreSQL it refuses to start, at once, saying what is missing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import requests

from core.models import AuditLog
from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import (
    ROOT,
    EventSocket,
    command_line,
    database_url,
    delete_redis_keys,
    descendants,
    free_port,
    running,
    wait_ready,
)
from tests.e2e.test_websocket import Heartbeats, assert_event, bearer, ok, register

pytestmark = pytest.mark.django_db(transaction=True)

DELIVERY = 5  # seconds: a bound for "it arrives" (delivery takes milliseconds)
TIMINGS = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "LEADER_CHECK_INTERVAL_SECONDS": "1",
}
# leader_assigned after the leader's last heartbeat: the timeout, one check interval, and slack for a
# worker that is still starting (tasks wait in its queue meanwhile).
FAILOVER_BOUND = 3 + 1 + 6
CHILDREN = {"gunicorn": "-m gunicorn config.wsgi", "daphne": "manage.py serve --no-beat"}
CHILDREN |= {"worker": "celery -A config -q worker", "beat": "celery -A config -q beat"}


@pytest.fixture
def redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.fail("TEST_REDIS_URL is not set: `make test` sets it (redis://127.0.0.1:6379/13).")
    return url


@pytest.fixture
def own_name(redis_url):
    """The channel-layer prefix and Celery queue of this run; their Redis keys are removed afterwards."""
    name = f"psm-run-prod-{uuid.uuid4().hex[:12]}"
    yield name
    delete_redis_keys(redis_url, f"*{name}*")


def launcher_environment(**values: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HOST": "127.0.0.1", **TIMINGS, **values}
    for name in ("DATABASE_URL", "REDIS_URL"):
        if not values.get(name):
            env.pop(name, None)
    return env


def start_launcher(redis_url: str, own_name: str, tmp_path: Path, **values: str):
    """Start `manage.py run_prod` on free loopback ports; returns (launcher, REST URL, WebSocket URL)."""
    port = free_port()
    ws_port = next(candidate for candidate in iter(free_port, None) if candidate != port)
    env = launcher_environment(
        DATABASE_URL=database_url(),
        REDIS_URL=redis_url,
        CHANNEL_LAYER_PREFIX=own_name,
        CELERY_QUEUE=own_name,
        PORT=str(port),
        WS_PORT=str(ws_port),
        VAR_DIR=str(tmp_path),
        GUNICORN_WORKERS="2",
        CELERY_WORKER_CONCURRENCY="1",
        **values,
    )
    with open(tmp_path / "run-prod.log", "wb") as log:
        launcher = subprocess.Popen(
            [sys.executable, "manage.py", "run_prod"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return launcher, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ws_port}"


def kill_everything(launcher: subprocess.Popen) -> None:
    """SIGKILL to the launcher and all below it (each child leads a process group of its own)."""
    leftovers = descendants(launcher.pid)
    with suppress(ProcessLookupError):
        os.killpg(launcher.pid, signal.SIGKILL)
    for pid in leftovers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    launcher.wait()


@contextmanager
def run_prod(redis_url: str, own_name: str, tmp_path: Path, **values: str):
    """Start `manage.py run_prod` and wait until it serves; yields (launcher, REST URL, WebSocket-port URL).

    The launcher is a session leader; whatever the test leaves is killed by pid at the end.
    """
    log_path = tmp_path / "run-prod.log"
    started = time.monotonic()
    launcher, rest, ws = start_launcher(redis_url, own_name, tmp_path, **values)
    try:
        wait_ready(rest, launcher, log_path)
        wait_ready(ws, launcher, log_path)
        print(f"\nrun_prod: REST and WebSocket ready after {time.monotonic() - started:.1f} s")
        children = {command_line(pid): pid for pid in descendants(launcher.pid)}
        for name, marker in CHILDREN.items():
            assert any(marker in line for line in children), f"no {name} under the launcher: {children}"
        yield launcher, rest, ws
    except BaseException:
        print(f"--- run_prod log ---\n{log_path.read_text(errors='replace')[-8000:]}", file=sys.stderr)
        raise
    finally:
        kill_everything(launcher)


def assert_all_gone(pids: list[int]) -> None:
    deadline = time.monotonic() + 5
    while any(map(running, pids)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [command_line(pid) for pid in pids if running(pid)] == []


@pytest.mark.timeout(120)
def test_run_prod_serves_rest_and_websocket_and_runs_beat_and_worker(redis_url, own_name, tmp_path):
    site = "run-prod"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "Run prod"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])

    with run_prod(redis_url, own_name, tmp_path) as (launcher, rest, ws):
        # REST is gunicorn on PORT, the WebSocket port is daphne; both see PostgreSQL and Redis.
        ready = requests.get(f"{rest}/health/ready", timeout=10)
        assert ready.headers["Server"].startswith("gunicorn"), ready.headers
        assert ok(ready)["checks"] == {"database": "ok", "redis": "ok"}
        assert requests.get(f"{ws}/health/ready", timeout=10).headers["Server"].startswith("daphne")

        leader = register(rest, instance_token, site, "promsnmp-a")
        follower = register(rest, instance_token, site, "promsnmp-b")
        assert (leader["isLeader"], follower["isLeader"]) == (True, False)
        leader_id, follower_id = leader["instanceId"], follower["instanceId"]
        assert leader["websocketUrl"] == follower["websocketUrl"] == f"ws{ws.removeprefix('http')}/api/v1/ws"

        with Heartbeats(rest, instance_token, [leader_id, follower_id]) as heartbeats:
            sockets = {
                instance_id: EventSocket(
                    f"{answer['websocketUrl']}?instanceId={instance_id}&token={instance_token}"
                )
                for instance_id, answer in ((leader_id, leader), (follower_id, follower))
            }
            for socket in sockets.values():
                assert socket.ping()["siteId"] == site

            # A change through REST (gunicorn) → both sockets (daphne), through Redis.
            patch = requests.patch(
                f"{rest}/api/v1/sites/{site}",
                json={"config": {"cacheMaxEntries": 500}},
                headers=bearer(admin_token),
                timeout=10,
            )
            ok(patch)
            updates = [socket.wait_for("config_updated", DELIVERY)[0] for socket in sockets.values()]
            assert updates[0] == updates[1]
            assert assert_event(updates[0], "config_updated", site) == {
                "configVersion": 2,
                "changes": ["cacheMaxEntries"],
                "config": {"cacheMaxEntries": 500},
            }

            # The leader goes silent: beat sends the health check, the worker replaces the leader.
            last_heartbeat = heartbeats.stop(leader_id)
            assigned, arrived = sockets[follower_id].wait_for("leader_assigned", FAILOVER_BOUND + 5)
            revoked, _ = sockets[leader_id].wait_for("leader_revoked", DELIVERY)
            print(f"run_prod: leader_assigned {arrived - last_heartbeat:.1f} s after the last heartbeat")
            assert arrived - last_heartbeat < FAILOVER_BOUND
            assert heartbeats.failures == []
        assert assert_event(assigned, "leader_assigned", site) == {
            "instanceId": follower_id,
            "previousLeader": leader_id,
            "reason": "previous_leader_unhealthy",
            "leaderTerm": 2,
        }
        assert assert_event(revoked, "leader_revoked", site) == {
            "instanceId": leader_id,
            "newLeader": follower_id,
            "reason": "health_check_failed",
            "leaderTerm": 2,
        }
        # Made by the health check task, which only the worker runs here.
        change = AuditLog.objects.get(site_id=site, action="leader_assigned", details__leaderTerm=2)
        assert change.actor == "system:leader-health-check"
        for socket in sockets.values():
            socket.close()

        # SIGTERM to the launcher alone: it stops all it started (gunicorn's and Celery's own children too).
        pids = descendants(launcher.pid)
        assert len(pids) > len(CHILDREN)  # the children's own processes are checked too
        os.kill(launcher.pid, signal.SIGTERM)
        stopping = time.monotonic()
        assert launcher.wait(timeout=30) == 0
        print(f"run_prod: exited 0 {time.monotonic() - stopping:.1f} s after SIGTERM")
        assert_all_gone(pids)


def parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return 0


def child_pid(launcher: subprocess.Popen, name: str) -> int | None:
    """The pid of the launcher's child `name` (gunicorn's master, not its workers), if it runs."""
    for pid in descendants(launcher.pid):
        if parent(pid) == launcher.pid and CHILDREN[name] in command_line(pid) and running(pid):
            return pid
    return None


def wait_for_restart(launcher: subprocess.Popen, name: str, old_pid: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = child_pid(launcher, name)
        if pid is not None and pid != old_pid:
            return pid
        assert launcher.poll() is None, f"the launcher exited with {launcher.returncode}"
        time.sleep(0.1)
    raise AssertionError(f"{name} not started again within {timeout} s")


@pytest.mark.timeout(120)
def test_run_prod_restarts_daphne_and_gunicorn_when_they_die(redis_url, own_name, tmp_path):
    site = "run-prod-restart"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "Run prod restart"})
    _, token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    log_path = tmp_path / "run-prod.log"

    def connect(rest: str) -> EventSocket:
        answer = register(rest, token, site, "promsnmp-a")
        socket = EventSocket(f"{answer['websocketUrl']}?instanceId={answer['instanceId']}&token={token}")
        assert socket.ping()["siteId"] == site
        return socket

    with run_prod(redis_url, own_name, tmp_path) as (launcher, rest, ws):
        connect(rest).close()

        # daphne dies: started again after 1 s, and an instance's WebSocket connects again.
        daphne = child_pid(launcher, "daphne")
        os.kill(daphne, signal.SIGKILL)
        killed = time.monotonic()
        new_daphne = wait_for_restart(launcher, "daphne", daphne)
        wait_ready(ws, launcher, log_path)
        print(f"\nrun_prod: daphne serves again {time.monotonic() - killed:.1f} s after SIGKILL")
        assert time.monotonic() - killed >= 1  # the back-off
        connect(rest).close()

        # gunicorn's master dies: its workers go with it, a new master serves REST again.
        master = child_pid(launcher, "gunicorn")
        workers = descendants(master)
        assert len(workers) == 2, workers
        os.kill(master, signal.SIGKILL)
        killed = time.monotonic()
        new_master = wait_for_restart(launcher, "gunicorn", master)
        wait_ready(rest, launcher, log_path)
        print(f"run_prod: gunicorn serves again {time.monotonic() - killed:.1f} s after SIGKILL")
        assert_all_gone([master, *workers])  # no orphaned worker
        live = requests.get(f"{rest}/health/live", timeout=10)
        assert live.status_code == 200 and live.headers["Server"].startswith("gunicorn")
        connect(rest).close()  # a real authenticated request through the new master, and the socket

        log = log_path.read_text(errors="replace")
        assert "daphne exited with code -9 (1 of 5 allowed in 60 s): restarting in 1 s" in log
        assert "gunicorn exited with code -9 (1 of 5 allowed in 60 s): restarting in 1 s" in log

        # SIGTERM still stops everything, the restarted processes included, and exits 0.
        pids = descendants(launcher.pid)
        assert {new_daphne, new_master} <= set(pids)
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
        assert_all_gone(pids)


@pytest.mark.timeout(120)
def test_run_prod_stops_everything_and_fails_on_a_crash_loop(redis_url, own_name, tmp_path):
    # gunicorn reads GUNICORN_CMD_ARGS: an unknown option makes it exit 2 at once, on every start.
    launcher, _rest, _ws = start_launcher(redis_url, own_name, tmp_path, GUNICORN_CMD_ARGS="--no-such-option")
    seen: dict[int, str] = {}  # pid: command line, while it ran
    try:
        started = time.monotonic()
        while launcher.poll() is None and time.monotonic() - started < 90:
            for pid in descendants(launcher.pid):
                # The latest command line: one read between fork and exec still shows the launcher's.
                seen[pid] = command_line(pid) or seen.get(pid, "")
            time.sleep(0.05)
        log = (tmp_path / "run-prod.log").read_text(errors="replace")
        assert launcher.returncode == 1, log[-4000:]
    finally:
        kill_everything(launcher)
    elapsed = time.monotonic() - started
    print(f"\nrun_prod: exited 1 on the crash loop after {elapsed:.1f} s")
    # Five starts, with 1 + 2 + 4 + 8 s of back-off between them; the others ran meanwhile.
    assert log.count("gunicorn exited with code 2") == 5
    for count, delay in ((1, 1), (2, 2), (3, 4), (4, 8)):
        assert f"gunicorn exited with code 2 ({count} of 5 allowed in 60 s): restarting in {delay} s" in log
    assert "gunicorn exited with code 2, 5 times in 60 s: crash loop, stopping everything" in log
    assert elapsed >= 1 + 2 + 4 + 8
    names = {name for line in seen.values() for name, marker in CHILDREN.items() if marker in line}
    assert {"daphne", "worker", "beat"} <= names, seen
    assert_all_gone(sorted(seen))


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("REDIS_URL", "run_prod needs Redis: set REDIS_URL="),
        ("DATABASE_URL", "run_prod needs PostgreSQL: set DATABASE_URL="),
    ],
)
def test_run_prod_refuses_to_start_without_redis_or_postgresql(missing, message, redis_url, tmp_path):
    values = {"DATABASE_URL": database_url(), "REDIS_URL": redis_url, "VAR_DIR": str(tmp_path)}
    values[missing] = ""  # without DATABASE_URL: the embedded SQLite database under VAR_DIR
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "manage.py", "run_prod"],
        cwd=ROOT,
        env=launcher_environment(**values, PORT=str(free_port())),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr + result.stdout
    assert time.monotonic() - started < 10
