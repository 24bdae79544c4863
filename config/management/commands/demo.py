"""`manage.py demo` (`make demo`): a living fleet on loopback in one command (config/demo.py)."""

import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config import demo


class Command(BaseCommand):
    help = (
        "A demo fleet on this machine: snmpd devices on loopback, the manager (embedded default, its own "
        "state directory, emptied at every start) on HOST:PORT, three sites with seeds, their agents and a "
        "first discovery run. Ctrl-C stops it all."
    )

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.HOST)
        parser.add_argument("--port", type=int, default=settings.PORT)
        parser.add_argument(
            "--state-dir",
            default=str(demo.DEFAULT_STATE_DIR),
            help="The demo's own directory (database, secrets, logs); emptied at every start.",
        )

    def handle(self, *args, host: str, port: int, state_dir: str, **options):
        try:
            code = demo.main(state_dir=Path(state_dir), host=host, port=port)
        except demo.DemoError as exc:
            raise CommandError(str(exc)) from exc
        if code:
            sys.exit(code)
