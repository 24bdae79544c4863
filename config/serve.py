"""The server process (`manage.py serve`): daphne serving HTTP and WebSocket on HOST:PORT.

In the embedded default (`make run`) it is the only process: beat runs in a thread of it, and the tasks it
fires run eagerly in that thread. In the production shape (config/run_prod.py, the Helm chart) it runs
with `--no-beat` and serves the WebSocket, beside gunicorn, a Celery worker and beat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from celery.beat import EmbeddedService
from django.conf import settings
from django.core.management import call_command
from django.utils.module_loading import import_string

from config.celery import app as celery_app
from core.events import set_server_loop, start_relay


def run(*, host: str, port: int, beat: bool, on_ready: Callable[[], None]) -> None:
    """Serve until the process is stopped; `on_ready` is called once daphne listens. `beat` runs the
    periodic jobs here, in the embedded default only (in production beat is a process of its own)."""
    # daphne.server installs Twisted's asyncio reactor on import: import it when serving, and first.
    from daphne.endpoints import build_endpoint_description_strings
    from daphne.server import Server

    application = import_string(settings.ASGI_APPLICATION)
    call_command("sync_schedules", verbosity=0)
    embedded_beat = start_embedded_beat() if settings.EMBEDDED and beat else None

    def ready():
        loop = asyncio.get_event_loop()
        set_server_loop(loop)
        start_relay(loop)  # delivers what other processes queued for this server's sockets
        on_ready()

    try:
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=ready,
            verbosity=0,
        ).run()
    finally:
        if embedded_beat is not None:
            embedded_beat.stop()
        close_http_lanes()


def close_http_lanes() -> None:
    """The request threads' database connections, closed when daphne has stopped (core/asgi.py)."""
    from config.asgi import django_asgi_app

    django_asgi_app.close()


def start_embedded_beat() -> EmbeddedService:
    """Beat in a daemon thread of this process, reading the django-celery-beat entries."""
    celery_app.loader.import_default_modules()  # registers the tasks, so eager mode runs them here
    beat = EmbeddedService(celery_app, thread=True, scheduler_cls=settings.CELERY_BEAT_SCHEDULER)
    beat.daemon = True
    beat.start()
    return beat
