"""The leader health check as a django-celery-beat entry: created by a migration, kept by sync_schedules."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from config.celery import app
from instances import tasks
from instances.models import Instance

ENTRY = "leader-health-check"
TASK = "instances.leader_health_check"

pytestmark = pytest.mark.django_db


def entry() -> PeriodicTask:
    return PeriodicTask.objects.select_related("interval").get(name=ENTRY)


def assert_entry(every: int) -> None:
    task = entry()
    assert (task.task, task.enabled, task.crontab_id, task.interval.every, task.interval.period) == (
        TASK,
        True,
        None,
        every,
        IntervalSchedule.SECONDS,
    )


def sync() -> str:
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    return out.getvalue()


def test_migrations_created_the_entry(settings):
    assert PeriodicTask.objects.filter(name=ENTRY).count() == 1
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)


def test_the_migration_itself_creates_the_entry_from_the_setting(settings):
    executor = MigrationExecutor(connection)
    executor.migrate([("instances", "0001_initial")])  # unapply 0002: its reverse removes the entry
    assert not PeriodicTask.objects.filter(name=ENTRY).exists()

    settings.LEADER_CHECK_INTERVAL_SECONDS = 7
    executor = MigrationExecutor(connection)
    executor.migrate([("instances", "0002_leader_check_schedule")])

    assert_entry(7)


def test_sync_schedules_is_idempotent(settings):
    first = sync()
    before = entry()
    intervals = IntervalSchedule.objects.count()
    second = sync()
    after = entry()

    assert first == second
    assert first.splitlines()[0] == f"{ENTRY}: every {settings.LEADER_CHECK_INTERVAL_SECONDS} s"
    assert PeriodicTask.objects.filter(name=ENTRY).count() == 1
    assert (after.pk, after.interval_id) == (before.pk, before.interval_id)
    assert IntervalSchedule.objects.count() == intervals
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)


def test_sync_schedules_recreates_a_deleted_entry(settings):
    PeriodicTask.objects.filter(name=ENTRY).delete()
    sync()
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)


def test_sync_schedules_follows_a_changed_interval_setting(settings):
    settings.LEADER_CHECK_INTERVAL_SECONDS = 3
    assert sync().splitlines()[0] == f"{ENTRY}: every 3 s (repaired)"
    assert_entry(3)
    settings.LEADER_CHECK_INTERVAL_SECONDS = 20
    sync()
    assert_entry(20)
    assert PeriodicTask.objects.filter(name=ENTRY).count() == 1


def test_sync_schedules_repairs_an_entry_changed_by_hand(settings):
    task = entry()
    task.interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    task.enabled = False
    task.save()
    sync()
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)

    task = entry()
    task.interval = None
    task.crontab = CrontabSchedule.objects.create(minute="*/5")
    task.save()
    sync()
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)


def test_sync_schedules_repairs_an_entry_pointing_at_another_task(settings):
    PeriodicTask.objects.filter(name=ENTRY).update(task="instances.something_else")
    sync()
    assert_entry(settings.LEADER_CHECK_INTERVAL_SECONDS)


def test_the_task_runs_the_health_check(settings, make_site, register):
    settings.HEARTBEAT_INTERVAL_SECONDS = 10
    settings.HEARTBEAT_TIMEOUT_SECONDS = 30
    site = make_site("scheduled-site")
    leader, follower = register(site, "a"), register(site, "b")
    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now() - timedelta(seconds=31))

    assert tasks.leader_health_check() == 1

    assert list(Instance.objects.filter(site_id=site, is_leader=True).values_list("id", flat=True)) == [
        follower
    ]
    assert tasks.leader_health_check() == 0  # nothing left to do


def test_the_entry_names_the_registered_task(settings, make_site, register):
    """Beat finds the task by the entry's name: the Celery app has it, and running it by name works."""
    settings.HEARTBEAT_INTERVAL_SECONDS = 10
    settings.HEARTBEAT_TIMEOUT_SECONDS = 30
    app.loader.import_default_modules()
    assert entry().task in app.tasks
    assert app.tasks[entry().task].run.__module__ == "instances.tasks"
    site = make_site("by-name-site")
    leader, follower = register(site, "a"), register(site, "b")
    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now() - timedelta(seconds=31))

    result = app.tasks[entry().task].apply()

    assert result.successful(), result.traceback
    assert result.get() == 1
    assert Instance.objects.get(pk=follower).is_leader is True
