"""django-celery-beat entries kept by services: cron text + timezone → CrontabSchedule, and
create / update / remove of a named PeriodicTask. Beat reads these rows (DatabaseScheduler), in the
embedded default and in production alike; there is no other scheduler.

Convention for entries that belong to a site (discovery schedules): the name is `<kind>:<id>` and
the first argument is the site id. The site's services can then re-time or remove every entry of
the site (`site_periodic_tasks`) without knowing which app made it.

Every write goes through `PeriodicTask.save()` / `.delete()`, never `QuerySet.update()`, so that
django-celery-beat's change marker (`PeriodicTasks.last_update`) moves and a running beat reloads.
A call that finds the entry as wanted writes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

from core.cron import parse_cron

CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")


def crontab_fields(crontab: CrontabSchedule) -> dict[str, str]:
    return {name: getattr(crontab, name) for name in CRONTAB_FIELDS}


def crontab_get(fields: dict[str, str], timezone: str) -> CrontabSchedule:
    """The CrontabSchedule with these five fields and this zone; created if there is none.

    CrontabSchedule has no unique constraint (beat's admin may have made duplicates), so this picks the
    oldest match rather than trusting get_or_create's "exactly one".
    """
    crontab = CrontabSchedule.objects.filter(timezone=timezone, **fields).order_by("pk").first()
    if crontab is None:
        crontab = CrontabSchedule.objects.create(timezone=timezone, **fields)
    return crontab


def crontab_for(cron_text: str, timezone: str) -> CrontabSchedule:
    """A validated cron expression (six or five fields, core.cron) in an IANA zone → its crontab row."""
    cron = parse_cron(cron_text)
    return crontab_get(
        {
            "minute": cron.minute,
            "hour": cron.hour,
            "day_of_month": cron.day_of_month,
            "month_of_year": cron.month_of_year,
            "day_of_week": cron.day_of_week,
        },
        timezone,
    )


def _args_of(task: PeriodicTask) -> Any:
    try:
        return json.loads(task.args or "[]")
    except ValueError:
        return None  # tampered text: differs from anything we want


def ensure_periodic_task(
    *, name: str, task: str, crontab: CrontabSchedule, args: list, enabled: bool, description: str = ""
) -> PeriodicTask:
    """Create the entry, or bring it back to exactly this (idempotent: unchanged → no write)."""
    wanted = {
        "task": task,
        "crontab_id": crontab.pk,
        "interval_id": None,
        "solar_id": None,
        "clocked_id": None,
        "one_off": False,
        "enabled": enabled,
        "description": description,
        "kwargs": "{}",
        "expires": None,
        "expire_seconds": None,
        "start_time": None,
    }
    entry = PeriodicTask.objects.filter(name=name).first()
    if entry is None:
        entry = PeriodicTask(name=name)
    elif _args_of(entry) == args and all(getattr(entry, key) == value for key, value in wanted.items()):
        return entry
    for key, value in wanted.items():
        setattr(entry, key, value)
    entry.args = json.dumps(args)
    entry.save()
    return entry


def remove_periodic_task(name: str) -> bool:
    """Remove the entry if it exists (→ whether there was one)."""
    removed = False
    for entry in PeriodicTask.objects.filter(name=name):
        entry.delete()  # one by one: the model's delete() moves beat's change marker
        removed = True
    return removed


def remove_periodic_tasks(names: list[str]) -> int:
    entries = list(PeriodicTask.objects.filter(name__in=names)) if names else []
    for entry in entries:
        entry.delete()
    return len(entries)


def site_periodic_tasks(site_id: str) -> list[PeriodicTask]:
    """Every `<kind>:<id>` entry whose first argument is this site (see the module's convention)."""
    prefix = json.dumps([site_id])[:-1]  # '["chicago"' — the JSON text of the args starts so
    entries = PeriodicTask.objects.select_related("crontab").filter(
        name__contains=":", args__startswith=prefix
    )
    found = []
    for entry in entries:
        args = _args_of(entry)
        if isinstance(args, list) and args and args[0] == site_id:
            found.append(entry)
    return found


def retime_periodic_task(entry: PeriodicTask, timezone: str) -> bool:
    """Move a crontab entry to the same five fields in another zone (→ whether it changed)."""
    if entry.crontab is None or str(entry.crontab.timezone) == timezone:
        return False
    entry.crontab = crontab_get(crontab_fields(entry.crontab), timezone)
    entry.save()
    return True


@transaction.atomic
def ensure_interval_task(*, name: str, task: str, seconds: int) -> PeriodicTask:
    """An entry that runs `task` every `seconds`, created or repaired in place (idempotent)."""
    interval, _ = IntervalSchedule.objects.get_or_create(every=seconds, period=IntervalSchedule.SECONDS)
    entry, created = PeriodicTask.objects.get_or_create(
        name=name, defaults={"task": task, "interval": interval, "enabled": True}
    )
    drifted = (
        entry.interval_id != interval.id
        or not entry.enabled
        or entry.crontab_id
        or entry.task != task
        or _args_of(entry) != []
    )
    if not created and drifted:
        entry.interval, entry.crontab, entry.enabled, entry.task, entry.args = (
            interval,
            None,
            True,
            task,
            "[]",
        )
        entry.save()
    return entry
