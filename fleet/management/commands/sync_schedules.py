from django.core.management.base import BaseCommand

from discovery.schedules import discovery_schedules_sync, runs_sweep_schedule_sync
from instances.schedules import leader_check_schedule_sync


class Command(BaseCommand):
    help = (
        "Create or repair the django-celery-beat entries: the leader health check, every site's "
        "discovery schedule and every seed's own schedule; removes discovery entries whose site or seed "
        "is gone. Idempotent."
    )

    def handle(self, *args, **options):
        task = leader_check_schedule_sync()
        runs_sweep_schedule_sync()
        summary = discovery_schedules_sync()
        if options["verbosity"] < 1:
            return
        self.stdout.write(f"{task.name}: every {task.interval.every} s")
        if summary["sites"] or summary["removed"]:  # a fresh install prints only the line above
            self.stdout.write(
                f"discovery schedules: {summary['sites']} site entries ({summary['sitesEnabled']} enabled), "
                f"{summary['seeds']} seed entries, {summary['removed']} stale entries removed, "
                + ("repaired" if summary["changed"] else "nothing to repair")
            )
