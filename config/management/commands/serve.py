"""`manage.py serve`: the server process, daphne on HOST:PORT (config/serve.py)."""

from django.conf import settings
from django.core.management.base import BaseCommand

from config import serve


class Command(BaseCommand):
    help = "Serve HTTP and WebSocket with daphne on HOST:PORT; in the embedded default, run beat inside."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--no-beat", action="store_true", help="Do not run periodic jobs in this process."
        )

    def handle(self, *args, host: str, port: int, no_beat: bool, **options):
        def announce():
            self.stdout.write(f"Serving on http://{host}:{port} (embedded: {settings.EMBEDDED})", ending="\n")
            self.stdout.flush()

        serve.run(host=host, port=port, beat=not no_beat, on_ready=announce)
