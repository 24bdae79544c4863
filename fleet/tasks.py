from celery import shared_task
from django.conf import settings

from core.audit import Actor
from fleet.backup import BACKUP_TASK, fleet_backup


@shared_task(name=BACKUP_TASK, ignore_result=True)
def scheduled_backup() -> str:
    """The BACKUP_CRON beat entry (fleet.backup.backup_schedule_sync): one archive to BACKUP_URL."""
    result = fleet_backup(
        actor=Actor.system("scheduled backup"),
        destination=settings.BACKUP_URL,
        keep=settings.BACKUP_RETENTION,
    )
    return result.url
