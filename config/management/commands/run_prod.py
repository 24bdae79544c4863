"""`manage.py run_prod` (`make run-prod`): the production shape on one machine (config/run_prod.py)."""

import sys

from django.core.management.base import BaseCommand, CommandError

from config import run_prod


class Command(BaseCommand):
    help = (
        "Production shape on one machine: migrate, then gunicorn (REST) on HOST:PORT, daphne (WebSocket) "
        "on HOST:WS_PORT, a Celery worker and Celery beat, supervised. Needs PostgreSQL and REDIS_URL."
    )

    def handle(self, *args, **options):
        if refusal := run_prod.refusal():
            raise CommandError(refusal)
        if run_prod.run() != 0:
            sys.exit(1)  # a crash loop: every process is stopped
