from collections.abc import Callable

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django_celery_beat.models import PeriodicTask

from core.cron import CronError
from discovery.schedules import RUNS_SWEEP_TASK_NAME, discovery_schedules_sync, runs_sweep_schedule_sync
from fleet.backup import BACKUP_TASK_NAME, backup_schedule_sync
from instances.schedules import LEADER_CHECK_TASK_NAME, leader_check_schedule_sync


def _stamp(name: str) -> tuple | None:
    # PeriodicTask.date_changed moves on every save: before/after tells whether the sync wrote the entry.
    return PeriodicTask.objects.filter(name=name).values_list("pk", "date_changed").first()


def _ensure(name: str, sync: Callable[[], PeriodicTask]) -> tuple[PeriodicTask, str]:
    """Run an interval entry's sync → (the entry, "" | " (created)" | " (repaired)")."""
    before = _stamp(name)
    entry = sync()
    if before is None:
        return entry, " (created)"
    return entry, "" if _stamp(name) == before else " (repaired)"


class Command(BaseCommand):
    help = (
        "Create or repair the django-celery-beat entries: the leader health check, the discovery runs "
        "sweep, every site's discovery schedule and every seed's own schedule; removes discovery entries "
        "whose site or seed is gone; and the scheduled backup (BACKUP_CRON; none when it is empty). "
        "Idempotent. Prints one line per fixed entry (marked created or "
        "repaired when it was written) and a summary of the discovery schedules."
    )

    def handle(self, *args, **options):
        fixed = [
            _ensure(LEADER_CHECK_TASK_NAME, leader_check_schedule_sync),
            _ensure(RUNS_SWEEP_TASK_NAME, runs_sweep_schedule_sync),
        ]
        summary = discovery_schedules_sync()
        try:
            backup_scheduled = backup_schedule_sync()
        except CronError as exc:
            raise CommandError(f"BACKUP_CRON {settings.BACKUP_CRON!r}: {exc}") from exc
        if options["verbosity"] < 1:
            return
        for task, change in fixed:
            self.stdout.write(f"{task.name}: every {task.interval.every} s{change}")
        if backup_scheduled:
            self.stdout.write(f"{BACKUP_TASK_NAME}: {settings.BACKUP_CRON} (UTC) to {settings.BACKUP_URL}")
        if summary["sites"] or summary["removed"]:  # a fresh install prints only the lines above
            self.stdout.write(
                f"discovery schedules: {summary['sites']} site entries ({summary['sitesEnabled']} enabled), "
                f"{summary['seeds']} seed entries, {summary['removed']} stale entries removed, "
                + ("repaired" if summary["changed"] else "nothing to repair")
            )
