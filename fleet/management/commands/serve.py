"""The embedded default: one daphne process serving HTTP and WebSocket, with beat in a thread."""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

logger = logging.getLogger("promsnmp.serve")


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket with daphne on HOST:PORT; in the embedded default, run beat inside."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--no-beat", action="store_true", help="Do not run periodic jobs in this process."
        )

    def handle(self, *args, host: str, port: int, no_beat: bool, **options):
        # daphne.server installs Twisted's asyncio reactor on import: import it first.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server

        from config.asgi import application
        from core.events import set_server_loop, start_relay

        call_command("sync_schedules", verbosity=0)
        beat = None
        if settings.EMBEDDED and not no_beat:
            from celery.beat import EmbeddedService

            from config.celery import app

            app.loader.import_default_modules()  # registers the tasks, so eager mode runs them here
            beat = EmbeddedService(app, thread=True, scheduler_cls=settings.CELERY_BEAT_SCHEDULER)
            beat.daemon = True
            beat.start()

        def ready():
            loop = asyncio.get_event_loop()
            set_server_loop(loop)
            start_relay(loop)  # delivers what other processes queued for this server's sockets
            self.stdout.write(f"Serving on http://{host}:{port} (embedded: {settings.EMBEDDED})", ending="\n")
            self.stdout.flush()

        try:
            Server(
                application=application,
                endpoints=build_endpoint_description_strings(host=host, port=port),
                ready_callable=ready,
                verbosity=0,
            ).run()
        finally:
            if beat is not None:
                beat.stop()
