"""Discovery schedules as django-celery-beat entries (issue 4 §3): cron → CrontabSchedule with the
site's timezone, entries kept exact by the site and seed services, repaired by sync_schedules, and the
scheduled tasks that start runs."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from zoneinfo import ZoneInfo

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks
from django_celery_beat.schedulers import DatabaseScheduler

from config.celery import app
from core.cron import CronError
from core.errors import ConflictError
from core.schedules import crontab_for
from discovery import runs, tasks
from discovery.models import DiscoveryRun
from discovery.schedules import discovery_schedules_sync
from inventory.models import DiscoverySeed
from inventory.seeds import parse_seed, parse_seeds, seed_create, seed_delete, seed_update, seeds_sync
from inventory.versioning import FULL_SYNC, change_begin, change_commit
from sites.models import Site
from sites.services import site_create, site_delete, site_update
from tests.conftest import TEST_ACTOR

pytestmark = pytest.mark.django_db

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
SITE_TASK = "discovery.scheduled_site_run"
SEED_TASK = "discovery.scheduled_seed_run"
FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def seed_body(name: str, schedule: str | None = None, enabled: bool = True) -> dict:
    body = {
        "name": name,
        "targets": ["127.0.0.1"],
        "snmpConfig": {"version": 2, "readCommunity": "public"},
        "enabled": enabled,
    }
    if schedule is not None:
        body["schedule"] = schedule
    return body


def seed_input(name: str, schedule: str | None = None, enabled: bool = True):
    parsed, errors = parse_seed(seed_body(name, schedule, enabled))
    assert errors == {}
    return parsed


def cron_tuple(five: str) -> tuple[str, ...]:
    return tuple(five.split())


# --- the expected beat table, from the sites and seeds ---------------------------------------------

# The cron texts the tests use, in the form beat stores them (written out, not computed by core.cron).
STORED = {
    "0 0 2 * * *": "0 2 * * *",
    "0 0 3 * * *": "0 3 * * *",
    "0 0 4 * * *": "0 4 * * *",
    "30 3 * * 1-5": "30 3 * * 1-5",
    "0 15 6 * * MON-FRI": "15 6 * * 1-5",
    "0 0 1 1 JAN 7": "0 1 1 1 0",
    "0 */10 * * * *": "*/10 * * * *",
    "45 23 * * 0": "45 23 * * 0",
}


# Entries that run on an interval, not per site or seed: the leader check and the runs sweep.
INTERVAL_ENTRIES = ("leader-health-check", "discovery-runs-sweep")


def expected() -> dict[str, tuple]:
    """{entry name: (task, five crontab fields, timezone, enabled, args)} as the DB says it must be."""
    wanted = {}
    for site in Site.objects.all():
        wanted[f"site-discovery:{site.pk}"] = (
            SITE_TASK,
            cron_tuple(STORED[site.discovery_cron]),
            site.timezone,
            site.discovery_enabled,
            [site.pk],
        )
    for seed in DiscoverySeed.objects.select_related("site").exclude(schedule=""):
        wanted[f"seed-discovery:{seed.pk}"] = (
            SEED_TASK,
            cron_tuple(STORED[seed.schedule]),
            seed.site.timezone,
            seed.enabled,
            [seed.site_id, seed.pk],
        )
    return wanted


def actual() -> dict[str, tuple]:
    found = {}
    for entry in PeriodicTask.objects.select_related("crontab").exclude(name__in=INTERVAL_ENTRIES):
        assert entry.interval_id is None and entry.solar_id is None and entry.clocked_id is None, entry.name
        assert entry.one_off is False and entry.kwargs == "{}", entry.name
        crontab = entry.crontab
        found[entry.name] = (
            entry.task,
            tuple(getattr(crontab, name) for name in FIELDS),
            str(crontab.timezone),
            entry.enabled,
            json.loads(entry.args),
        )
    return found


def assert_in_sync() -> dict[str, tuple]:
    wanted = expected()
    assert actual() == wanted
    return wanted


def beat_state() -> tuple:
    """Everything a write to the beat tables would change."""
    entries = sorted(
        PeriodicTask.objects.values_list(
            "pk", "name", "task", "crontab_id", "interval_id", "args", "kwargs", "enabled", "description"
        )
    )
    crontabs = sorted(CrontabSchedule.objects.values_list("pk", *FIELDS, "timezone"))
    crontabs = [(*row[:-1], str(row[-1])) for row in crontabs]
    return entries, crontabs, PeriodicTasks.last_change()


# --- cron text → CrontabSchedule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fields"),
    [
        ("0 0 2 * * *", ("0", "2", "*", "*", "*")),  # the spec's six-field form
        ("30 3 * * 1-5", ("30", "3", "*", "*", "1-5")),  # the classic five
        ("0 0 2 * * 7", ("0", "2", "*", "*", "0")),  # Spring's Sunday 7 is beat's 0
        ("0 0 2 * * 5-7", ("0", "2", "*", "*", "5-6,0")),
        ("0 15 6 * * MON-FRI", ("15", "6", "*", "*", "1-5")),
        ("0 0 9 1 JAN,JUL SUN", ("0", "9", "1", "1,7", "0")),
        ("0 0 12 ? * wed", ("0", "12", "*", "*", "3")),
        ("0 */15 * * * *", ("*/15", "*", "*", "*", "*")),
        ("00 5 4 1-7 * *", ("5", "4", "1-7", "*", "*")),
    ],
)
def test_crontab_fields_from_six_and_five_field_forms(text, fields):
    crontab = crontab_for(text, "UTC")
    assert tuple(getattr(crontab, name) for name in FIELDS) == fields
    assert str(crontab.timezone) == "UTC"
    CrontabSchedule.objects.get(pk=crontab.pk)  # stored
    _ = crontab.schedule  # celery parses the fields (ValueError if it cannot)


def test_spring_sunday_7_and_names_are_what_celery_reads():
    sunday = crontab_for("0 0 2 * * 7", "UTC").schedule
    assert sunday.day_of_week == {0}
    weekdays = crontab_for("0 15 6 * JAN-MAR MON-FRI", "UTC").schedule
    assert weekdays.day_of_week == {1, 2, 3, 4, 5}
    assert weekdays.month_of_year == {1, 2, 3}
    weekend = crontab_for("0 0 2 * * SAT-7", "UTC").schedule
    assert weekend.day_of_week == {6, 0}


def test_each_timezone_is_its_own_crontab_row():
    chicago = crontab_for("0 0 2 * * *", "America/Chicago")
    london = crontab_for("0 0 2 * * *", "Europe/London")
    assert chicago.pk != london.pk
    assert str(CrontabSchedule.objects.get(pk=chicago.pk).timezone) == "America/Chicago"
    assert str(CrontabSchedule.objects.get(pk=london.pk).timezone) == "Europe/London"
    assert chicago.schedule.tz == ZoneInfo("America/Chicago")
    assert london.schedule.tz == ZoneInfo("Europe/London")
    # the same schedule again reuses the row (five and six fields alike)
    count = CrontabSchedule.objects.count()
    assert crontab_for("0 2 * * *", "America/Chicago").pk == chicago.pk
    assert crontab_for("0 0 2 * * ?", "Europe/London").pk == london.pk
    assert CrontabSchedule.objects.count() == count


def test_a_duplicate_crontab_made_by_hand_is_tolerated():
    first = crontab_for("0 0 5 * * *", "UTC")
    CrontabSchedule.objects.create(minute="0", hour="5", timezone="UTC")
    assert crontab_for("0 5 * * *", "UTC").pk == first.pk


@pytest.mark.parametrize(
    "text",
    ["30 0 2 * * *", "0 0 2 L * *", "0 0 2 * * 5#3", "0 2 * *", "0 0 2 * * * *", "0 61 * * *", "", "nope"],
)
def test_bad_expressions_write_nothing(text):
    before = beat_state()
    with pytest.raises(CronError):
        crontab_for(text, "UTC")
    assert beat_state() == before


# --- 400 through the APIs: nothing reaches the beat tables ------------------------------------------

BAD_CRONS = ["30 0 2 * * *", "15 0 2 * * *", "0 0 2 L * *", "0 0 2 * * 1W", "0 0 2 * * 5#3", "not a cron"]


@pytest.mark.parametrize("cron", BAD_CRONS)
def test_bad_site_cron_is_400_and_writes_no_entry(admin_api, make_site, cron):
    make_site(SITE)
    before = beat_state()

    body = {"id": "new-site", "label": "New", "config": {"discoveryCron": cron}}
    response = admin_api.post("/api/v1/sites", body, format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["config.discoveryCron"]

    response = admin_api.patch(f"/api/v1/sites/{SITE}", {"config": {"discoveryCron": cron}}, format="json")
    assert response.status_code == 400, response.content
    response = admin_api.put(
        f"/api/v1/sites/{SITE}", {"label": "x", "config": {"discoveryCron": cron}}, format="json"
    )
    assert response.status_code == 400, response.content

    assert beat_state() == before
    assert not Site.objects.filter(pk="new-site").exists()


def test_bad_site_timezone_is_400_and_writes_no_entry(admin_api, make_site):
    make_site(SITE)
    before = beat_state()
    response = admin_api.patch(
        f"/api/v1/sites/{SITE}", {"config": {"timezone": "Mars/Olympus"}}, format="json"
    )
    assert response.status_code == 400, response.content
    assert beat_state() == before


@pytest.mark.parametrize("cron", BAD_CRONS)
def test_bad_seed_schedule_is_400_and_writes_no_entry(admin_api, make_site, cron):
    make_site(SITE)
    path = f"/api/v1/sites/{SITE}/discovery-seeds"
    existing = admin_api.post(path, seed_body("ok", "0 0 3 * * *"), format="json")
    assert existing.status_code == 201, existing.content
    before = beat_state()

    response = admin_api.post(path, seed_body("bad", cron), format="json")
    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["schedule"]

    response = admin_api.put(f"{path}/{existing.json()['id']}", seed_body("ok", cron), format="json")
    assert response.status_code == 400, response.content

    response = admin_api.put(
        f"/api/v1/sites/{SITE}/inventory",
        {"devices": [], "mode": "replace", "discoverySeeds": [seed_body("other", cron)]},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert list(response.json()["fields"]) == ["discoverySeeds[0].schedule"]

    assert beat_state() == before
    assert list(DiscoverySeed.objects.values_list("name", flat=True)) == ["ok"]


# --- every change through the services keeps the entries exact -------------------------------------


def test_site_services_keep_the_site_entry(make_site):
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Chicago", "timezone": "America/Chicago"})
    wanted = assert_in_sync()
    assert wanted == {
        f"site-discovery:{SITE}": (SITE_TASK, ("0", "2", "*", "*", "*"), "America/Chicago", True, [SITE])
    }
    site_create(
        actor=TEST_ACTOR,
        site_id=OTHER,
        values={"label": "London", "timezone": "Europe/London", "discovery_cron": "30 3 * * 1-5"},
    )
    assert_in_sync()

    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_cron": "0 0 4 * * *"}, partial=True)
    assert_in_sync()
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"timezone": "Europe/London"}, partial=True)
    entries = assert_in_sync()
    assert entries[f"site-discovery:{SITE}"][2] == "Europe/London"
    # same schedule, same zone: the two sites share one crontab row
    site_update(actor=TEST_ACTOR, site_id=OTHER, values={"discovery_cron": "0 0 4 * * *"}, partial=True)
    assert_in_sync()
    assert (
        PeriodicTask.objects.get(name=f"site-discovery:{SITE}").crontab_id
        == PeriodicTask.objects.get(name=f"site-discovery:{OTHER}").crontab_id
    )

    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_enabled": False}, partial=True)
    assert assert_in_sync()[f"site-discovery:{SITE}"][3] is False
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_enabled": True}, partial=True)
    assert assert_in_sync()[f"site-discovery:{SITE}"][3] is True

    # PUT (full representation): the omitted config goes back to its defaults, the entry follows
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"label": "Chicago"}, partial=False)
    assert assert_in_sync()[f"site-discovery:{SITE}"][1:3] == (("0", "2", "*", "*", "*"), "UTC")

    site_delete(actor=TEST_ACTOR, site_id=SITE)
    assert set(assert_in_sync()) == {f"site-discovery:{OTHER}"}
    site_delete(actor=TEST_ACTOR, site_id=OTHER)
    assert actual() == {}
    assert PeriodicTask.objects.filter(name="leader-health-check").exists()  # not a site's entry


def test_a_site_update_that_does_not_touch_the_schedule_writes_no_entry(make_site):
    make_site(SITE, timezone="America/Chicago")
    before = beat_state()
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"label": "Renamed", "min_replicas": 3}, partial=True)
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_cron": "0 0 2 * * *"}, partial=True)
    assert beat_state() == before
    assert Site.objects.get(pk=SITE).label == "Renamed"


def test_entries_roll_back_with_the_service_transaction(make_site):
    make_site(SITE)
    before = beat_state()
    with pytest.raises(RuntimeError), transaction.atomic():
        site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_cron": "0 0 4 * * *"}, partial=True)
        seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 3 * * *"))
        assert len(actual()) == 2
        raise RuntimeError("roll back")
    assert beat_state() == before
    # a refused seed write (409) leaves the entries as they were
    seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 3 * * *"))
    before = beat_state()
    with pytest.raises(ConflictError):
        seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 4 * * *"))
    assert beat_state() == before
    assert_in_sync()


def test_seed_services_keep_the_seed_entries(make_site):
    make_site(SITE, timezone="America/Chicago")
    make_site(OTHER, timezone="Europe/London")

    daily = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("daily", "0 0 3 * * *"))
    entries = assert_in_sync()
    assert entries[f"seed-discovery:{daily.pk}"] == (
        SEED_TASK,
        ("0", "3", "*", "*", "*"),
        "America/Chicago",
        True,
        [SITE, daily.pk],
    )
    plain = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("no schedule"))
    assert f"seed-discovery:{plain.pk}" not in assert_in_sync()
    london = seed_create(actor=TEST_ACTOR, site_id=OTHER, seed=seed_input("weekdays", "0 15 6 * * MON-FRI"))
    assert assert_in_sync()[f"seed-discovery:{london.pk}"][1:3] == (
        ("15", "6", "*", "*", "1-5"),
        "Europe/London",
    )

    # a new schedule, then disabled, then cleared, then given again
    seed_update(actor=TEST_ACTOR, site_id=SITE, seed_id=daily.pk, seed=seed_input("daily", "30 3 * * 1-5"))
    assert assert_in_sync()[f"seed-discovery:{daily.pk}"][1] == ("30", "3", "*", "*", "1-5")
    seed_update(
        actor=TEST_ACTOR,
        site_id=SITE,
        seed_id=daily.pk,
        seed=seed_input("daily", "30 3 * * 1-5", enabled=False),
    )
    assert assert_in_sync()[f"seed-discovery:{daily.pk}"][3] is False
    seed_update(actor=TEST_ACTOR, site_id=SITE, seed_id=daily.pk, seed=seed_input("daily", None))
    assert f"seed-discovery:{daily.pk}" not in assert_in_sync()
    seed_update(
        actor=TEST_ACTOR, site_id=SITE, seed_id=plain.pk, seed=seed_input("no schedule", "0 0 1 1 JAN 7")
    )
    assert assert_in_sync()[f"seed-discovery:{plain.pk}"][1] == ("0", "1", "1", "1", "0")

    # the site's timezone moves its seeds' entries too; its discovery switch does not (decisions.md)
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"timezone": "Asia/Tokyo"}, partial=True)
    assert assert_in_sync()[f"seed-discovery:{plain.pk}"][2] == "Asia/Tokyo"
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_enabled": False}, partial=True)
    entries = assert_in_sync()
    assert entries[f"site-discovery:{SITE}"][3] is False
    assert entries[f"seed-discovery:{plain.pk}"][3] is True

    seed_delete(actor=TEST_ACTOR, site_id=SITE, seed_id=plain.pk)
    assert f"seed-discovery:{plain.pk}" not in assert_in_sync()

    # deleting a site removes its seeds' entries (the seeds go with it), not another site's
    seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("again", "0 0 2 * * *"))
    site_delete(actor=TEST_ACTOR, site_id=SITE)
    assert set(assert_in_sync()) == {f"site-discovery:{OTHER}", f"seed-discovery:{london.pk}"}


def put_seeds(seeds: list[dict], mode: str, site: str = SITE) -> dict:
    parsed, errors = parse_seeds(seeds)
    assert errors == {}
    with transaction.atomic():
        change = change_begin(site)
        result = seeds_sync(change=change, seeds=parsed, mode=mode)
        change_commit(
            change,
            actor=TEST_ACTOR,
            change_type=FULL_SYNC,
            added=[],
            updated=[],
            removed=[],
            source="import",
            triggered_by="tests",
            details={"seeds": result},
        )
    return result


def test_seeds_sync_keeps_the_entries_of_the_seeds_it_touches(make_site):
    make_site(SITE, timezone="America/Chicago")
    put_seeds([seed_body("a", "0 0 2 * * *"), seed_body("b"), seed_body("c", "0 */10 * * * *")], "merge")
    assert len(assert_in_sync()) == 3  # the site's, a's and c's
    ids = dict(DiscoverySeed.objects.values_list("name", "pk"))

    put_seeds([seed_body("a", "0 0 2 * * *", enabled=False), seed_body("b", "45 23 * * 0")], "merge")
    entries = assert_in_sync()
    assert entries[f"seed-discovery:{ids['a']}"][3] is False
    assert entries[f"seed-discovery:{ids['b']}"][1] == ("45", "23", "*", "*", "0")

    put_seeds([seed_body("b", "0 0 4 * * *"), seed_body("d", "0 0 3 * * *")], "addOnly")  # b not updated
    assert assert_in_sync()[f"seed-discovery:{ids['b']}"][1] == ("45", "23", "*", "*", "0")

    # replace: a and c are removed, b loses its schedule
    result = put_seeds([seed_body("b"), seed_body("d", "0 0 3 * * *")], "replace")
    assert sorted(result["removed"]) == sorted([ids["a"], ids["c"]])
    assert result["updated"] == [ids["b"]]
    entries = assert_in_sync()
    assert set(entries) == {
        f"site-discovery:{SITE}",
        f"seed-discovery:{DiscoverySeed.objects.get(name='d').pk}",
    }


def test_put_inventory_replace_through_the_api(admin_api, make_site):
    make_site(SITE, timezone="America/Chicago")
    path = f"/api/v1/sites/{SITE}/inventory"
    body = {
        "devices": [],
        "mode": "replace",
        "discoverySeeds": [seed_body("a", "0 0 2 * * *"), seed_body("b", "0 0 3 * * *")],
    }
    assert admin_api.put(path, body, format="json").status_code == 200
    assert len(assert_in_sync()) == 3
    body["discoverySeeds"] = [seed_body("b", "0 0 3 * * *")]
    response = admin_api.put(path, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["seeds"] == {"added": 0, "updated": 0, "removed": 1}
    assert set(assert_in_sync()) == {
        f"site-discovery:{SITE}",
        f"seed-discovery:{DiscoverySeed.objects.get().pk}",
    }


def test_seed_api_and_site_api_keep_the_entries(admin_api):
    body = {
        "id": SITE,
        "label": "Chicago",
        "config": {"timezone": "America/Chicago", "discoveryCron": "30 3 * * 1-5"},
    }
    assert admin_api.post("/api/v1/sites", body, format="json").status_code == 201
    path = f"/api/v1/sites/{SITE}/discovery-seeds"
    created = admin_api.post(path, seed_body("s", "0 0 2 * * *"), format="json").json()
    assert len(assert_in_sync()) == 2
    assert (
        admin_api.put(f"{path}/{created['id']}", seed_body("s", enabled=False), format="json").status_code
        == 200
    )
    assert len(assert_in_sync()) == 1
    assert (
        admin_api.patch(
            f"/api/v1/sites/{SITE}", {"config": {"discoveryEnabled": False}}, format="json"
        ).status_code
        == 200
    )
    assert assert_in_sync()[f"site-discovery:{SITE}"][3] is False
    assert admin_api.delete(f"/api/v1/sites/{SITE}").status_code == 204
    assert actual() == {}


# --- beat reads the entries -------------------------------------------------------------------------


def test_beat_schedules_the_enabled_entries_in_their_timezone(make_site):
    # Hours are "*": django-celery-beat 2.9 loads numeric-hour crontabs only within ±2 h of now.
    make_site(SITE, timezone="America/Chicago", discovery_cron="0 */10 * * * *")
    make_site(OTHER, timezone="Europe/London", discovery_enabled=False, discovery_cron="0 */10 * * * *")
    seed = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 15 * * * MON-FRI"))
    off = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("off", "0 15 * * * *", enabled=False))

    schedule = DatabaseScheduler(app=app, lazy=True).all_as_schedule()

    assert f"site-discovery:{OTHER}" not in schedule
    assert f"seed-discovery:{off.pk}" not in schedule
    site_entry = schedule[f"site-discovery:{SITE}"]
    assert (site_entry.task, site_entry.args) == (SITE_TASK, [SITE])
    assert site_entry.schedule.tz == ZoneInfo("America/Chicago")
    assert site_entry.schedule.minute == set(range(0, 60, 10))
    seed_entry = schedule[f"seed-discovery:{seed.pk}"]
    assert (seed_entry.task, seed_entry.args) == (SEED_TASK, [SITE, seed.pk])
    assert seed_entry.schedule.tz == ZoneInfo("America/Chicago")
    assert (seed_entry.schedule.minute, seed_entry.schedule.day_of_week) == ({15}, {1, 2, 3, 4, 5})


def test_the_entries_name_registered_tasks():
    app.loader.import_default_modules()
    assert app.tasks[SITE_TASK].run.__module__ == "discovery.tasks"
    assert app.tasks[SEED_TASK].run.__module__ == "discovery.tasks"


# --- sync_schedules ---------------------------------------------------------------------------------


def sync() -> str:
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    return out.getvalue()


@pytest.fixture
def populated(make_site):
    make_site(SITE, timezone="America/Chicago")
    make_site(OTHER, timezone="Europe/London", discovery_cron="30 3 * * 1-5", discovery_enabled=False)
    seeds = {
        "a": seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("a", "0 0 3 * * *")),
        "b": seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("b", "0 15 6 * * MON-FRI", False)),
        "c": seed_create(actor=TEST_ACTOR, site_id=OTHER, seed=seed_input("c")),
    }
    assert len(assert_in_sync()) == 4
    return seeds


def test_sync_schedules_on_an_in_step_table_changes_nothing(populated, settings):
    before = beat_state()  # the services made the entries; the migration the leader check
    assert sync() == (
        f"leader-health-check: every {settings.LEADER_CHECK_INTERVAL_SECONDS} s\n"
        f"discovery-runs-sweep: every {settings.DISCOVERY_SWEEP_INTERVAL_SECONDS} s\n"
        "discovery schedules: 2 site entries (1 enabled), 2 seed entries, 0 stale entries removed, "
        "nothing to repair\n"
    )
    assert beat_state() == before


def test_sync_schedules_repairs_and_is_idempotent(populated):
    a, b = populated["a"], populated["b"]
    # a deleted entry
    PeriodicTask.objects.get(name=f"site-discovery:{SITE}").delete()
    # a tampered crontab, switch, args and task
    tampered = PeriodicTask.objects.get(name=f"seed-discovery:{a.pk}")
    tampered.crontab = CrontabSchedule.objects.create(minute="*/5", timezone="Asia/Tokyo")
    tampered.enabled = False
    tampered.args = json.dumps([OTHER, "seed_x"])
    tampered.task = "discovery.something_else"
    tampered.save()
    other = PeriodicTask.objects.get(name=f"seed-discovery:{b.pk}")
    other.crontab = None
    other.interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    other.kwargs = '{"x": 1}'
    other.save()
    site_entry = PeriodicTask.objects.get(name=f"site-discovery:{OTHER}")
    site_entry.args = "not json"
    site_entry.enabled = True
    site_entry.save()
    # stale orphans: a gone site, a gone seed, and an entry for a seed without a schedule
    crontab = crontab_for("0 0 2 * * *", "UTC")
    for name, args in [
        ("site-discovery:gone-site", ["gone-site"]),
        ("seed-discovery:seed_gone", [SITE, "seed_gone"]),
        (f"seed-discovery:{populated['c'].pk}", [OTHER, populated["c"].pk]),
    ]:
        PeriodicTask.objects.create(name=name, task=SEED_TASK, crontab=crontab, args=json.dumps(args))
    names = set(PeriodicTask.objects.exclude(name__in=INTERVAL_ENTRIES).values_list("name", flat=True))
    assert names - set(expected()) == {
        "site-discovery:gone-site",
        "seed-discovery:seed_gone",
        f"seed-discovery:{populated['c'].pk}",
    }
    assert names >= set(expected()) - {f"site-discovery:{SITE}"}

    first = sync()
    assert "3 stale entries removed, repaired" in first
    assert_in_sync()
    after_first = beat_state()

    second = sync()
    assert "0 stale entries removed, nothing to repair" in second
    assert beat_state() == after_first  # rows and PeriodicTasks.last_update unchanged
    assert_in_sync()


def test_sync_schedules_at_verbosity_0_prints_nothing(populated):
    out = StringIO()
    call_command("sync_schedules", verbosity=0, stdout=out)
    assert out.getvalue() == ""


# --- sync_schedules at many sites: a few queries, the same entries as the services ------------------


def entry_rows() -> dict[str, tuple]:
    """Every column of the discovery entries that a write sets, by name (not pk: a missing entry comes
    back as a new row)."""
    return {
        row[0]: row[1:]
        for row in PeriodicTask.objects.exclude(name__in=INTERVAL_ENTRIES).values_list(
            "name",
            "task",
            "crontab_id",
            "interval_id",
            "solar_id",
            "clocked_id",
            "args",
            "kwargs",
            "enabled",
            "one_off",
            "description",
            "expires",
            "expire_seconds",
            "start_time",
            "last_run_at",
            "queue",
            "exchange",
            "routing_key",
            "headers",
        )
    }


def add_sites(first: int, count: int) -> None:
    """Sites through the service, as an operator makes them, each with a scheduled and an unscheduled
    seed; every third site's discovery off, every other one in another zone."""
    for n in range(first, first + count):
        site_id = f"pop-{n:03d}"
        site_create(
            actor=TEST_ACTOR,
            site_id=site_id,
            values={
                "label": site_id,
                "timezone": ("America/Chicago", "Europe/London")[n % 2],
                "discovery_enabled": n % 3 != 0,
                "discovery_cron": ("0 0 2 * * *", "30 3 * * 1-5")[n % 2],
            },
        )
        seed_create(actor=TEST_ACTOR, site_id=site_id, seed=seed_input(f"s{n}", "0 0 3 * * *", n % 4 != 0))
        seed_create(actor=TEST_ACTOR, site_id=site_id, seed=seed_input(f"u{n}"))


def repair_queries() -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        discovery_schedules_sync()
    return [query["sql"] for query in captured.captured_queries]


def test_a_repair_that_finds_nothing_to_do_costs_the_same_queries_at_n_and_2n_sites():
    add_sites(0, 4)
    discovery_schedules_sync()
    at_n = repair_queries()
    add_sites(4, 4)
    before = beat_state()
    at_2n = repair_queries()
    assert len(at_2n) == len(at_n), at_2n
    assert len(at_n) <= 10, at_n  # a handful of reads, not a few per site
    writes = [sql for sql in at_2n if sql.split()[0] in ("INSERT", "UPDATE", "DELETE")]
    assert writes == []
    assert beat_state() == before
    assert len(assert_in_sync()) == 8 + 8  # each site's entry and its scheduled seed's


def test_writing_every_entry_again_costs_the_same_queries_at_n_and_2n_sites():
    """After a restore of the fleet without the beat tables, say: the missing entries made in bulk."""
    discovery_entries = PeriodicTask.objects.exclude(name__in=INTERVAL_ENTRIES)
    add_sites(0, 4)
    wanted = entry_rows()
    discovery_entries.delete()
    at_n = repair_queries()
    assert entry_rows() == wanted
    add_sites(4, 4)
    wanted = entry_rows()
    discovery_entries.delete()
    at_2n = repair_queries()
    assert entry_rows() == wanted
    assert len(at_2n) == len(at_n), at_2n


def drift_crontab(entry: PeriodicTask) -> None:
    entry.crontab = CrontabSchedule.objects.create(minute="*/5", timezone=str(entry.crontab.timezone))
    entry.save()


def drift_timezone(entry: PeriodicTask) -> None:
    fields = {name: getattr(entry.crontab, name) for name in FIELDS}
    entry.crontab = CrontabSchedule.objects.create(timezone="Asia/Tokyo", **fields)
    entry.save()


def drift_disabled(entry: PeriodicTask) -> None:
    entry.enabled = not entry.enabled
    entry.save()


def drift_args_and_task(entry: PeriodicTask) -> None:
    entry.args = '["elsewhere", "seed_x"]'
    entry.task = "discovery.something_else"
    entry.description = "tampered"
    entry.save()


def drift_interval(entry: PeriodicTask) -> None:
    entry.crontab = None
    entry.interval = IntervalSchedule.objects.create(every=5, period=IntervalSchedule.MINUTES)
    entry.kwargs = '{"x": 1}'
    entry.save()


def drift_missing(entry: PeriodicTask) -> None:
    entry.delete()


@pytest.mark.parametrize(
    "drift",
    [drift_crontab, drift_timezone, drift_disabled, drift_args_and_task, drift_interval, drift_missing],
)
@pytest.mark.parametrize("kind", ["site", "seed"])
def test_the_repair_brings_back_what_the_services_wrote(populated, drift, kind):
    """The services write entries one by one (site_entry / seed_entry → ensure_cron_entry, or the seeds'
    bulk); the repair of every site must leave the very same rows, and tell beat."""
    wanted = entry_rows()
    name = f"site-discovery:{SITE}" if kind == "site" else f"seed-discovery:{populated['a'].pk}"
    drift(PeriodicTask.objects.select_related("crontab").get(name=name))
    assert entry_rows() != wanted
    seen_by_beat = PeriodicTasks.last_change()  # what a running beat has read last

    summary = discovery_schedules_sync()

    assert entry_rows() == wanted
    assert summary["changed"] is True
    # DatabaseScheduler.schedule_changed() reloads when the marker is past what it read: bulk writes skip
    # the signals that move it, the repair moves it itself.
    assert PeriodicTasks.last_change() > seen_by_beat
    after = beat_state()
    assert discovery_schedules_sync()["changed"] is False
    assert beat_state() == after


def test_the_repair_removes_stale_entries_in_one_statement(populated):
    wanted = entry_rows()
    crontab = crontab_for("0 0 2 * * *", "UTC")
    stale = {
        "site-discovery:gone-site": ["gone-site"],
        "seed-discovery:seed_gone": [SITE, "seed_gone"],
        f"seed-discovery:{populated['c'].pk}": [OTHER, populated["c"].pk],  # a seed without a schedule
    }
    for name, args in stale.items():
        PeriodicTask.objects.create(name=name, task=SEED_TASK, crontab=crontab, args=json.dumps(args))
    seen_by_beat = PeriodicTasks.last_change()

    with CaptureQueriesContext(connection) as captured:
        summary = discovery_schedules_sync()

    assert summary["removed"] == 3
    assert entry_rows() == wanted
    deletes = [query["sql"] for query in captured.captured_queries if query["sql"].startswith("DELETE")]
    assert len(deletes) == 1, deletes
    assert PeriodicTasks.last_change() > seen_by_beat


def test_the_repair_picks_the_oldest_of_duplicate_crontabs_as_the_services_do(make_site):
    older = CrontabSchedule.objects.create(minute="0", hour="2", timezone="America/Chicago")
    make_site(SITE, timezone="America/Chicago")
    entry = PeriodicTask.objects.get(name=f"site-discovery:{SITE}")
    assert entry.crontab_id == older.pk
    newer = CrontabSchedule.objects.create(minute="0", hour="2", timezone="America/Chicago")
    entry.crontab = newer
    entry.save()
    discovery_schedules_sync()
    entry.refresh_from_db()
    assert entry.crontab_id == older.pk


def test_another_apps_entry_of_a_site_follows_the_sites_timezone_in_the_repair(make_site):
    """The convention of core.schedules: `<kind>:<id>` with the site first; site_schedule_sync re-times
    them, and so does the repair of every site."""
    make_site(SITE, timezone="America/Chicago")
    other = PeriodicTask.objects.create(
        name="report:weekly",
        task="reports.weekly",
        crontab=crontab_for("0 0 6 * * MON", "UTC"),
        args=json.dumps([SITE, "weekly"]),
    )
    unrelated = PeriodicTask.objects.create(
        name="report:global", task="reports.global", crontab=other.crontab, args='["not-a-site"]'
    )
    discovery_schedules_sync()
    other.refresh_from_db()
    unrelated.refresh_from_db()
    assert (str(other.crontab.timezone), other.crontab.minute, other.crontab.hour) == (
        "America/Chicago",
        "0",
        "6",
    )
    assert other.crontab.day_of_week == "1"
    assert str(unrelated.crontab.timezone) == "UTC"
    after = beat_state()
    discovery_schedules_sync()
    assert beat_state() == after


# --- the scheduled tasks ----------------------------------------------------------------------------


def test_scheduled_runs_are_skipped_while_discovery_is_off(make_site):
    make_site(SITE, discovery_enabled=False)
    seed = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 3 * * *"))
    off = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("off", "0 0 3 * * *", enabled=False))

    assert tasks.scheduled_site_run(SITE) is None
    assert tasks.scheduled_seed_run(SITE, seed.pk) is None
    site_update(actor=TEST_ACTOR, site_id=SITE, values={"discovery_enabled": True}, partial=True)
    assert tasks.scheduled_seed_run(SITE, off.pk) is None  # a disabled seed
    assert tasks.scheduled_seed_run(OTHER, seed.pk) is None  # not that site's seed
    assert tasks.scheduled_site_run("gone-site") is None
    assert not DiscoveryRun.objects.exists()


def test_the_scheduled_tasks_start_runs_triggered_by_the_schedule(make_site, settings):
    make_site(SITE)
    seed = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 3 * * *"))
    other = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("t"))

    run = DiscoveryRun.objects.get(pk=tasks.scheduled_site_run(SITE))
    assert (run.site_id, run.triggered_by, run.requested_by) == (SITE, "scheduled", "system:scheduler")
    assert sorted(run.seed_ids) == sorted([seed.pk, other.pk])
    # The seed runs again once that run has ended (here: timed out, no leader took it).
    later = timezone.now() + timedelta(seconds=settings.DISCOVERY_PENDING_TIMEOUT_SECONDS + 1)
    assert runs.runs_expire(now=later) == [run.pk]

    run = DiscoveryRun.objects.get(pk=tasks.scheduled_seed_run(SITE, seed.pk))
    assert (run.site_id, run.triggered_by, run.seed_ids) == (SITE, "scheduled", [seed.pk])
    assert DiscoveryRun.objects.count() == 2


def test_a_scheduled_run_through_the_beat_entry_sends_run_discovery(make_site, register):
    """What beat does: look the entry's task up by name and apply it with the entry's args."""
    make_site(SITE)
    leader = register(SITE, "host-a")
    seed = seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("s", "0 0 3 * * *"))
    app.loader.import_default_modules()
    entry = PeriodicTask.objects.get(name=f"seed-discovery:{seed.pk}")

    result = app.tasks[entry.task].apply(args=json.loads(entry.args))

    assert result.successful(), result.traceback
    run = DiscoveryRun.objects.get(pk=result.get())
    assert (run.triggered_by, run.seed_ids, run.dispatched_to) == ("scheduled", [seed.pk], leader)


def test_a_scheduled_run_with_nothing_to_run_is_skipped_not_failed(make_site):
    make_site(SITE)
    seed_create(actor=TEST_ACTOR, site_id=SITE, seed=seed_input("off", enabled=False))
    assert tasks.scheduled_site_run(SITE) is None  # run_start: no_enabled_seeds
    assert not DiscoveryRun.objects.exists()


def test_sync_schedules_keeps_the_runs_sweep_entry(settings):
    settings.DISCOVERY_SWEEP_INTERVAL_SECONDS = 17
    call_command("sync_schedules", verbosity=0)
    sweep = PeriodicTask.objects.select_related("interval").get(name="discovery-runs-sweep")
    assert (sweep.task, sweep.interval.every, sweep.interval.period, sweep.enabled) == (
        "discovery.runs_sweep",
        17,
        "seconds",
        True,
    )
    sweep.enabled = False
    sweep.task = "something.else"
    sweep.save()
    call_command("sync_schedules", verbosity=0)
    sweep.refresh_from_db()
    assert (sweep.task, sweep.enabled) == ("discovery.runs_sweep", True)
