"""manage.py sync_schedules reports every fixed beat entry it keeps (the leader health check and the
discovery runs sweep), marked when it created or repaired one, then the discovery schedules."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db

LEADER_CHECK = "leader-health-check"
SWEEP = "discovery-runs-sweep"


def sync(**options) -> list[str]:
    out = StringIO()
    call_command("sync_schedules", stdout=out, **options)
    return out.getvalue().splitlines()


def test_every_fixed_entry_is_listed_and_an_in_step_table_is_left_alone(settings):
    before = list(PeriodicTask.objects.order_by("name").values_list("name", "date_changed"))
    assert sync() == [  # the migrations made both, from the same settings
        f"{LEADER_CHECK}: every {settings.LEADER_CHECK_INTERVAL_SECONDS} s",
        f"{SWEEP}: every {settings.DISCOVERY_SWEEP_INTERVAL_SECONDS} s",
    ]
    assert list(PeriodicTask.objects.order_by("name").values_list("name", "date_changed")) == before


def test_created_and_repaired_entries_are_marked_once(settings):
    settings.LEADER_CHECK_INTERVAL_SECONDS = 15
    settings.DISCOVERY_SWEEP_INTERVAL_SECONDS = 60
    PeriodicTask.objects.get(name=SWEEP).delete()
    check = PeriodicTask.objects.get(name=LEADER_CHECK)
    check.enabled = False
    check.save()
    assert sync() == [f"{LEADER_CHECK}: every 15 s (repaired)", f"{SWEEP}: every 60 s (created)"]
    assert sync() == [f"{LEADER_CHECK}: every 15 s", f"{SWEEP}: every 60 s"]

    # A changed setting is a repair too; the line shows the new interval.
    settings.DISCOVERY_SWEEP_INTERVAL_SECONDS = 17
    sweep = PeriodicTask.objects.select_related("interval").get(name=SWEEP)
    assert (sweep.interval.every, sweep.interval.period) == (60, IntervalSchedule.SECONDS)
    assert sync() == [f"{LEADER_CHECK}: every 15 s", f"{SWEEP}: every 17 s (repaired)"]
    sweep.refresh_from_db()
    assert (sweep.interval.every, sweep.task, sweep.enabled) == (17, "discovery.runs_sweep", True)


def test_the_discovery_summary_follows_the_fixed_entries(make_site, settings):
    make_site("chicago-pop-01")
    lines = sync()
    assert [line.split(":")[0] for line in lines] == [LEADER_CHECK, SWEEP, "discovery schedules"]
    assert lines[2] == (
        "discovery schedules: 1 site entries (1 enabled), 0 seed entries, 0 stale entries removed, "
        "nothing to repair"
    )


def test_verbosity_0_prints_nothing_but_still_repairs():
    PeriodicTask.objects.get(name=SWEEP).delete()
    assert sync(verbosity=0) == []
    assert PeriodicTask.objects.filter(name=SWEEP, enabled=True).exists()
