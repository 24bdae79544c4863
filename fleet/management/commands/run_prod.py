"""The production shape on one machine (`make run-prod`): gunicorn, daphne, a Celery worker and beat.

Refuses to start without a PostgreSQL DATABASE_URL and a REDIS_URL. Prepares the database (migrate,
collectstatic, sync_schedules), then starts four processes, each line of their output prefixed with
their name, and supervises them: when one exits, the others are stopped and this command exits 1;
SIGTERM or SIGINT stops them all (SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS) and exits 0.

HOST, PORT and WS_PORT come from the settings (the environment), so that every child reads the same
values: gunicorn needs WS_PORT to build the register response's websocketUrl.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

STOP_TIMEOUT_SECONDS = 15
GUNICORN_GRACEFUL_TIMEOUT_SECONDS = 10  # requests in flight finish, within STOP_TIMEOUT_SECONDS
OUTPUT_LOCK = threading.Lock()


class Command(BaseCommand):
    help = (
        "Production shape on one machine: migrate, then gunicorn (REST) on HOST:PORT, daphne (WebSocket) "
        "on HOST:WS_PORT, a Celery worker and Celery beat, supervised. Needs PostgreSQL and REDIS_URL."
    )

    def handle(self, *args, **options):
        refuse_unless_production_services()
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        call_command("sync_schedules", verbosity=0)
        call_command("bootstrap")  # first start only: prints the admin password and an admin token once
        close_database_connections()  # the children open their own

        stop_requested = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop_requested.set())
        children: dict[str, subprocess.Popen] = {}
        failed = None
        try:
            for name, command in child_commands().items():
                children[name] = start(name, command)
            say(
                "run_prod",
                f"REST on http://{settings.HOST}:{settings.PORT} (gunicorn), WebSocket on "
                f"ws://{settings.HOST}:{settings.WS_PORT}/api/v1/ws (daphne), Celery worker (queue "
                f"{settings.CELERY_TASK_DEFAULT_QUEUE}) and beat; pids "
                + ", ".join(f"{name} {child.pid}" for name, child in children.items()),
            )
            while failed is None and not stop_requested.wait(0.2):
                failed = next((name for name, child in children.items() if child.poll() is not None), None)
            if failed is not None:
                code = children[failed].returncode
                say("run_prod", f"{failed} exited with code {code}: stopping the others")
        finally:
            stop_all(children.values())
        if failed is not None:
            sys.exit(1)


def refuse_unless_production_services() -> None:
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        raise CommandError(
            "run_prod needs PostgreSQL: set DATABASE_URL=postgres://user:password@host:5432/dbname "
            "(for the embedded default on SQLite, use `make run`)."
        )
    if not settings.REDIS_URL:
        raise CommandError(
            "run_prod needs Redis: set REDIS_URL=redis://host:6379/0 (the channel layer and the Celery "
            "broker; for the embedded default without Redis, use `make run`)."
        )
    if settings.WS_PORT in (0, settings.PORT):
        raise CommandError(
            f"run_prod serves the WebSocket on a port of its own: WS_PORT (now {settings.WS_PORT}) must be "
            f"a port other than PORT ({settings.PORT}); unset, it is PORT + 1."
        )


def close_database_connections() -> None:
    for connection in connections.all():
        connection.close()
        if hasattr(connection, "close_pool"):  # PostgreSQL with Django's psycopg pool
            connection.close_pool()


def child_commands() -> dict[str, list[str]]:
    import gunicorn

    python, host = sys.executable, settings.HOST
    # gunicorn 25.1+ opens a control socket at one path per user ($HOME/.gunicorn): not for a child.
    no_control_socket = ["--no-control-socket"] if gunicorn.version_info >= (25, 1) else []
    bind = f"[{host}]:{settings.PORT}" if ":" in host else f"{host}:{settings.PORT}"
    celery = [python, "-m", "celery", "-A", "config"]
    return {
        # Forwarded headers are Django's business (NUM_PROXIES), as under daphne: gunicorn trusts none.
        "gunicorn": [
            *(python, "-m", "gunicorn", "config.wsgi", "--bind", bind),
            *("--workers", str(settings.GUNICORN_WORKERS), "--forwarded-allow-ips", ""),
            *("--graceful-timeout", str(GUNICORN_GRACEFUL_TIMEOUT_SECONDS), *no_control_socket),
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
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    threading.Thread(target=copy_output, args=(name, child.stdout), daemon=True).start()
    return child


def child_environment() -> dict[str, str]:
    return {
        **os.environ,
        "HOST": settings.HOST,
        "PORT": str(settings.PORT),
        "WS_PORT": str(settings.WS_PORT),
        "PYTHONUNBUFFERED": "1",
    }


def copy_output(name: str, stream) -> None:
    for line in stream:
        say(name, line)


def say(name: str, line: str) -> None:
    with OUTPUT_LOCK:
        sys.stdout.write(f"{name:<8} | {line.rstrip()}\n")
        sys.stdout.flush()


def stop_all(children) -> None:
    """SIGTERM to every child still running; SIGKILL to those still there after STOP_TIMEOUT_SECONDS."""
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
