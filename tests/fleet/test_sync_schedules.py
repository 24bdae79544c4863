"""manage.py sync_schedules reports every fixed beat entry it keeps (the leader health check and the
discovery runs sweep), marked when it created or repaired one, then the discovery schedules; concurrent
starts and site writes meanwhile leave every entry once (core.schedules.lock_schedules)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from core.schedules import lock_schedules
from sites.services import site_create
from tests.conftest import TEST_ACTOR

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


def test_duplicate_interval_rows_made_in_beats_admin_do_not_stop_a_start(settings):
    """IntervalSchedule has no unique constraint: a second "every 15 s" row made in beat's admin once
    made every later start fail (get_or_create: MultipleObjectsReturned). The oldest is used."""
    oldest = PeriodicTask.objects.select_related("interval").get(name=LEADER_CHECK).interval
    IntervalSchedule.objects.create(every=oldest.every, period=oldest.period)
    assert sync() == [
        f"{LEADER_CHECK}: every {oldest.every} s",
        f"{SWEEP}: every {settings.DISCOVERY_SWEEP_INTERVAL_SECONDS} s",
    ]
    assert PeriodicTask.objects.get(name=LEADER_CHECK).interval_id == oldest.pk


@pytest.mark.django_db(transaction=True)  # not inside the test's own transaction
def test_lock_schedules_only_inside_a_transaction():
    with pytest.raises(RuntimeError, match="inside one"):
        lock_schedules(exclusive=False)


def in_thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    """A thread with its own database connection, closed at its end; what it raises lands in `errors`."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_starts_write_each_entry_once(settings):
    """Every server start (and the chart's migrate job) runs sync_schedules: four at once on a fresh
    table create each entry and each interval row once, and none of them fails."""
    settings.LEADER_CHECK_INTERVAL_SECONDS = 23  # intervals no row has yet: every start would create them
    settings.DISCOVERY_SWEEP_INTERVAL_SECONDS = 29
    for n in range(100):
        site_create(actor=TEST_ACTOR, site_id=f"start-{n:03d}", values={"label": f"Start {n}"})
    PeriodicTask.objects.all().delete()  # as before the first start

    barrier, errors = threading.Barrier(4), []
    starts = [in_thread(lambda: (barrier.wait(10), sync(verbosity=0)), errors) for _ in range(4)]
    for thread in starts:
        thread.join(60)
    assert errors == [] and not any(thread.is_alive() for thread in starts)
    assert IntervalSchedule.objects.filter(every__in=(23, 29), period=IntervalSchedule.SECONDS).count() == 2
    names = list(PeriodicTask.objects.values_list("name", flat=True))
    assert len(names) == len(set(names)) == 102
    assert sum(name.startswith("site-discovery:") for name in names) == 100


def advisory_lock_waiters() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory'"
            " AND datname = current_database()"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_repair_waits_for_a_site_written_meanwhile():
    """A site created while sync_schedules runs must keep its entry: were the site committed between the
    repair's read of the sites and its read of the entries, the repair would remove the entry as stale.
    So the repair waits for a site write in progress (and a site write for a repair)."""
    created, commit, errors = threading.Event(), threading.Event(), []

    def create_site_slowly() -> None:
        with transaction.atomic():
            site_create(actor=TEST_ACTOR, site_id="meanwhile", values={"label": "Meanwhile"})
            created.set()
            assert commit.wait(30), "the test never let the site commit"

    writer = in_thread(create_site_slowly, errors)
    assert created.wait(30), errors
    repair = in_thread(lambda: sync(verbosity=0), errors)
    deadline = time.monotonic() + 30
    while advisory_lock_waiters() == 0:  # the repair waits on the writer's shared lock
        assert repair.is_alive() and time.monotonic() < deadline, "sync_schedules did not wait for the site"
        time.sleep(0.05)
    commit.set()
    writer.join(30)
    repair.join(60)
    assert errors == [] and not writer.is_alive() and not repair.is_alive()
    assert PeriodicTask.objects.filter(name="site-discovery:meanwhile", args='["meanwhile"]').exists()
