"""The production shape on one machine (`manage.py run_prod`, `make run-prod`): gunicorn, daphne, a Celery
worker and beat.

Refuses to start without a PostgreSQL DATABASE_URL and a REDIS_URL (`refusal`). Prepares the database
(migrate, collectstatic, sync_schedules), then starts four processes, each line of their output prefixed
with their name, and supervises them: a process that exits is restarted after a back-off (1 s, 2 s, 4 s …,
at most CRASH_BACKOFF_MAX_SECONDS); one that exits CRASH_LOOP_LIMIT times within
CRASH_LOOP_WINDOW_SECONDS is in a crash loop, and then all are stopped and `run` answers 1.
SIGTERM or SIGINT stops them all (SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS) and `run` answers 0.
Each child leads a process group of its own, so that what a dead child leaves behind (gunicorn's
workers, Celery's pool) is killed with it before it is started again.

HOST, PORT and WS_PORT come from the settings (the environment), so that every child reads the same
values: gunicorn needs WS_PORT to build the register response's websocketUrl.

gunicorn and daphne share one PROMETHEUS_MULTIPROC_DIR (`metrics_directory`, emptied at every launch), so
/metrics on either port shows the requests of every worker and the sockets of daphne, summed; a child that
exits has its live gauges deleted before it starts again (its counters stay). The Celery worker and beat
are not scraped and get no such directory.

gunicorn runs config.gunicorn.ThreadWorker (gthread with a read deadline); the image and the Helm chart
start it the same way (child_commands, gunicorn_arguments).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import gunicorn
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from core.metrics import MULTIPROC_ENV, mark_dead_processes

STOP_TIMEOUT_SECONDS = 15
GUNICORN_GRACEFUL_TIMEOUT_SECONDS = 10  # requests in flight finish, within STOP_TIMEOUT_SECONDS
CRASH_BACKOFF_FIRST_SECONDS = 1  # doubled for each crash of the same process within the window
CRASH_BACKOFF_MAX_SECONDS = 30
CRASH_LOOP_LIMIT = 5  # this many exits of one process within the window: stop everything, exit 1
CRASH_LOOP_WINDOW_SECONDS = 60
OUTPUT_LOCK = threading.Lock()


def run() -> int:
    """Prepare the database, start the four processes and supervise them until SIGTERM or SIGINT (→ 0) or
    a crash loop (→ 1). The caller has checked `refusal()`."""
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    call_command("sync_schedules", verbosity=0)
    call_command("bootstrap")  # first start only: prints the admin password and an admin token once
    close_database_connections()  # the children open their own
    metrics_directory(empty=True)  # after this process's own use of the database: its gauges are not theirs

    stop_requested = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop_requested.set())
    children = [Child(name, command) for name, command in child_commands().items()]
    crash_loop = False
    try:
        for child in children:
            child.start()
        say(
            "run_prod",
            f"REST on http://{settings.HOST}:{settings.PORT} (gunicorn), WebSocket on "
            f"ws://{settings.HOST}:{settings.WS_PORT}/api/v1/ws (daphne), Celery worker (queue "
            f"{settings.CELERY_TASK_DEFAULT_QUEUE}) and beat; pids "
            + ", ".join(f"{child.name} {child.process.pid}" for child in children),
        )
        while not crash_loop and not stop_requested.wait(0.2):
            crash_loop = any([child.supervise(time.monotonic()) for child in children])
    finally:
        stop_all([child.process for child in children if child.process is not None])
    return 1 if crash_loop else 0


@dataclass
class Child:
    """One supervised process: restarted with back-off when it exits, until it crash-loops."""

    name: str
    command: list[str]
    process: subprocess.Popen | None = None
    crashes: deque[float] = field(default_factory=deque)  # monotonic times of exits within the window
    restart_at: float = 0.0

    def start(self) -> None:
        self.process = start(self.name, self.command)

    def supervise(self, now: float) -> bool:
        """Restart when due; True when the process is in a crash loop (the caller stops everything)."""
        if self.process is None:
            if now >= self.restart_at:
                mark_dead_processes(str(metrics_directory()))  # the gauges of the processes it took along
                self.start()
                say("run_prod", f"{self.name} restarted, pid {self.process.pid}")
            return False
        code = self.process.poll()
        if code is None:
            return False
        kill_group(self.process)  # what it left: gunicorn's workers hold the port the next one binds
        self.process = None
        self.crashes.append(now)
        while self.crashes[0] < now - CRASH_LOOP_WINDOW_SECONDS:
            self.crashes.popleft()
        count = len(self.crashes)
        if count >= CRASH_LOOP_LIMIT:
            say(
                "run_prod",
                f"{self.name} exited with code {code}, {count} times in {CRASH_LOOP_WINDOW_SECONDS} s: "
                "crash loop, stopping everything",
            )
            return True
        delay = min(CRASH_BACKOFF_FIRST_SECONDS * 2 ** (count - 1), CRASH_BACKOFF_MAX_SECONDS)
        self.restart_at = now + delay
        say(
            "run_prod",
            f"{self.name} exited with code {code} ({count} of {CRASH_LOOP_LIMIT} allowed in "
            f"{CRASH_LOOP_WINDOW_SECONDS} s): restarting in {delay} s",
        )
        return False


def refusal() -> str | None:
    """Why the production shape cannot start with these settings, or None."""
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return (
            "run_prod needs PostgreSQL: set DATABASE_URL=postgres://user:password@host:5432/dbname "
            "(for the embedded default on SQLite, use `make run`)."
        )
    if not settings.REDIS_URL:
        return (
            "run_prod needs Redis: set REDIS_URL=redis://host:6379/0 (the channel layer and the Celery "
            "broker; for the embedded default without Redis, use `make run`)."
        )
    if settings.WS_PORT in (0, settings.PORT):
        return (
            f"run_prod serves the WebSocket on a port of its own: WS_PORT (now {settings.WS_PORT}) must be "
            f"a port other than PORT ({settings.PORT}); unset, it is PORT + 1."
        )
    return None


def close_database_connections() -> None:
    for connection in connections.all():
        connection.close()
        if hasattr(connection, "close_pool"):  # PostgreSQL with Django's psycopg pool
            connection.close_pool()


def metrics_directory(*, empty: bool = False) -> Path:
    """PROMETHEUS_MULTIPROC_DIR of gunicorn and daphne: the environment's, else VAR_DIR/prometheus. Emptied
    of metric files at launch: counts of an earlier launch are not this one's."""
    directory = Path(os.environ.get(MULTIPROC_ENV) or Path(settings.VAR_DIR) / "prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    if empty:
        for stale in directory.glob("*.db"):
            stale.unlink(missing_ok=True)
    return directory


def gunicorn_arguments() -> list[str]:
    """gunicorn's options after the bind address: the same here, in the image and in the chart."""
    return [
        *("--config", "python:config.gunicorn_conf"),  # multiprocess metrics (config/gunicorn_conf.py)
        *("--worker-class", "config.gunicorn.ThreadWorker", "--threads", str(settings.GUNICORN_THREADS)),
        *("--forwarded-allow-ips", "", "--graceful-timeout", str(GUNICORN_GRACEFUL_TIMEOUT_SECONDS)),
        *("--timeout", str(settings.GUNICORN_TIMEOUT)),
    ]


def child_commands() -> dict[str, list[str]]:
    python, host = sys.executable, settings.HOST
    # gunicorn 25.1+ opens a control socket at one path per user ($HOME/.gunicorn): not for a child.
    no_control_socket = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []
    bind = f"[{host}]:{settings.PORT}" if ":" in host else f"{host}:{settings.PORT}"
    # -q: no banner (printed, not logged), only log lines (config/celery.py)
    celery = [python, "-m", "celery", "-A", "config", "-q"]
    return {
        # Forwarded headers are Django's business (NUM_PROXIES), as under daphne: gunicorn trusts none.
        "gunicorn": [
            *(python, "-m", "gunicorn", "config.wsgi", "--bind", bind),
            *("--workers", str(settings.GUNICORN_WORKERS), *gunicorn_arguments(), *no_control_socket),
        ],
        "daphne": [
            *(python, str(settings.BASE_DIR / "manage.py"), "serve", "--no-beat"),
            *("--host", host, "--port", str(settings.WS_PORT)),
        ],
        # Named after its queue, so that workers of other queues on the same Redis are not namesakes.
        "worker": [
            *celery,
            *("worker", "--hostname", f"{settings.CELERY_TASK_DEFAULT_QUEUE}@%h"),
            *("--without-gossip", "--without-mingle"),
        ],
        "beat": [*celery, "beat", "--scheduler", settings.CELERY_BEAT_SCHEDULER],
    }


def start(name: str, command: list[str]) -> subprocess.Popen:
    child = subprocess.Popen(
        command,
        cwd=settings.BASE_DIR,
        env=child_environment(name),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        process_group=0,  # its own group: kill_group() reaches the processes it started
    )
    threading.Thread(target=copy_output, args=(name, child.stdout), daemon=True).start()
    return child


SCRAPED_CHILDREN = ("gunicorn", "daphne")  # the servers of /metrics, sharing the metrics directory


def child_environment(name: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HOST": settings.HOST,
        "PORT": str(settings.PORT),
        "WS_PORT": str(settings.WS_PORT),
        "PYTHONUNBUFFERED": "1",
    }
    env.pop(MULTIPROC_ENV, None)
    if name in SCRAPED_CHILDREN:
        env[MULTIPROC_ENV] = str(metrics_directory())
    return env


def copy_output(name: str, stream) -> None:
    for line in stream:
        say(name, line)


def say(name: str, line: str) -> None:
    with OUTPUT_LOCK:
        sys.stdout.write(f"{name:<8} | {line.rstrip()}\n")
        sys.stdout.flush()


def kill_group(child: subprocess.Popen) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)


def stop_all(children) -> None:
    """SIGTERM to every child still running; SIGKILL to those still there after STOP_TIMEOUT_SECONDS.

    Then SIGKILL to whatever is left in their process groups.
    """
    children = list(children)
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for child in children:
        try:
            child.wait(timeout=max(0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        kill_group(child)
