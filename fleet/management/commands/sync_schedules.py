from django.core.management.base import BaseCommand

from instances.schedules import leader_check_schedule_sync


class Command(BaseCommand):
    help = "Create or repair the django-celery-beat entries (leader health check). Idempotent."

    def handle(self, *args, **options):
        task = leader_check_schedule_sync()
        if options["verbosity"] >= 1:
            self.stdout.write(f"{task.name}: every {task.interval.every} s")
