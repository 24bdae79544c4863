"""The leader health check as a django-celery-beat entry, kept in step with the settings."""

from __future__ import annotations

from django.conf import settings
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

LEADER_CHECK_TASK_NAME = "leader-health-check"


@transaction.atomic
def leader_check_schedule_sync() -> PeriodicTask:
    """Create or update the entry (idempotent): every LEADER_CHECK_INTERVAL_SECONDS."""
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=settings.LEADER_CHECK_INTERVAL_SECONDS, period=IntervalSchedule.SECONDS
    )
    task, created = PeriodicTask.objects.get_or_create(
        name=LEADER_CHECK_TASK_NAME,
        defaults={"task": "instances.leader_health_check", "interval": interval, "enabled": True},
    )
    drifted = (
        task.interval_id != interval.id
        or not task.enabled
        or task.crontab_id
        or task.task != "instances.leader_health_check"
    )
    if not created and drifted:
        task.interval = interval
        task.crontab = None
        task.enabled = True
        task.task = "instances.leader_health_check"
        task.save()
    return task
