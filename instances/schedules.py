"""The leader health check as a django-celery-beat entry, kept in step with the settings."""

from __future__ import annotations

from django.conf import settings
from django_celery_beat.models import PeriodicTask

from core.schedules import ensure_interval_task
from instances.tasks import leader_health_check

LEADER_CHECK_TASK_NAME = "leader-health-check"


def leader_check_schedule_sync() -> PeriodicTask:
    """Create or repair the entry (idempotent): every LEADER_CHECK_INTERVAL_SECONDS."""
    return ensure_interval_task(
        name=LEADER_CHECK_TASK_NAME,
        task=leader_health_check.name,
        seconds=settings.LEADER_CHECK_INTERVAL_SECONDS,
    )
