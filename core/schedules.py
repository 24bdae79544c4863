"""django-celery-beat entries kept by services: cron text + timezone → CrontabSchedule, and
create / update / remove of a named PeriodicTask. Beat reads these rows (DatabaseScheduler), in the
embedded default and in production alike; there is no other scheduler.

Convention for entries that belong to a site (discovery schedules): the name is `<kind>:<id>` and
the first argument is the site id. The site's services can then re-time or remove every entry of
the site (`site_periodic_tasks`) without knowing which app made it.

What a crontab entry should be is a `CronEntry`; `ensure_cron_entry` writes one, `cron_entries_sync`
writes many in a number of queries that does not grow with their count (sync_schedules at 200,000
sites). Both compare and write through the same `_entry_values` / `_in_step` / `_entry_set`, so they
leave the same row. A call that finds the entries as wanted writes nothing.

Writers of entries take `lock_schedules` for the rest of their transaction: the repairs that read the
whole set and write from it (sync_schedules, the fixed interval entries) exclusive, the services that
write one site's entries shared, so that sites never wait on each other and a repair never races one.

Beat reloads when django-celery-beat's change marker (`PeriodicTasks.last_update`) moves. A single
write goes through `PeriodicTask.save()` / `.delete()`, whose signals move it; a bulk write
(bulk_create, bulk_update, the one-query delete) bypasses them, so every bulk writer here moves the
marker itself (`PeriodicTasks.update_changed()`), once, after writing. Never `QuerySet.update()`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone as django_timezone
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask, PeriodicTasks

from core.cron import parse_cron

CRONTAB_FIELDS = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
BATCH = 900  # rows per bulk statement: under SQLite's 999 bound variables for the IN lists

CrontabKey = tuple[tuple[str, ...], str]  # (the five fields, the IANA zone)

SCHEDULES_LOCK_KEY = 0x7073_6D5F_6265_6174  # b"psm_beat": the advisory lock of the beat entries' writers


def lock_schedules(*, exclusive: bool) -> None:
    """Hold the beat entries' writer lock until the current transaction ends (a crashed writer's session
    ends with it). Exclusive for a repair that reads every entry and writes from what it read: two
    concurrent first starts would both create the same names (a unique violation, or duplicate interval
    rows), and a repair would remove as stale the entry of a site created after its read. Shared for the
    services that write one site's entries (their site's lock orders them already).

    PostgreSQL: pg_advisory_xact_lock(_shared). SQLite needs none: its IMMEDIATE transactions
    (settings.DATABASES) already take the one write lock at BEGIN."""
    if not connection.in_atomic_block:
        raise RuntimeError("lock_schedules() holds until the transaction ends: call it inside one")
    if connection.vendor == "postgresql":
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {function}(%s)", [SCHEDULES_LOCK_KEY])


def crontab_fields(crontab: CrontabSchedule) -> dict[str, str]:
    return {name: getattr(crontab, name) for name in CRONTAB_FIELDS}


@functools.lru_cache(maxsize=4096)
def cron_fields(cron_text: str) -> tuple[str, ...]:
    """A validated cron expression (six or five fields, core.cron) → beat's five fields. Cached: the
    repair of every site parses the same few expressions thousands of times."""
    cron = parse_cron(cron_text)
    return (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week)


def crontab_get(fields: dict[str, str], timezone: str) -> CrontabSchedule:
    """The CrontabSchedule with these five fields and this zone; created if there is none.

    CrontabSchedule has no unique constraint (beat's admin may have made duplicates), so this picks the
    oldest match rather than trusting get_or_create's "exactly one" (`crontab_ids` picks the same).
    """
    crontab = CrontabSchedule.objects.filter(timezone=timezone, **fields).order_by("pk").first()
    if crontab is None:
        crontab = CrontabSchedule.objects.create(timezone=timezone, **fields)
    return crontab


def crontab_for(cron_text: str, timezone: str) -> CrontabSchedule:
    """A validated cron expression (six or five fields, core.cron) in an IANA zone → its crontab row."""
    return crontab_get(dict(zip(CRONTAB_FIELDS, cron_fields(cron_text), strict=True)), timezone)


def crontab_ids(keys: Iterable[CrontabKey]) -> dict[CrontabKey, int]:
    """`crontab_get` for many (five fields, zone) at once: the oldest matching row of each, the missing
    ones created in bulk. Two queries whatever the count."""
    keys = set(keys)
    if not keys:
        return {}
    found: dict[CrontabKey, int] = {}
    rows = CrontabSchedule.objects.filter(timezone__in={zone for _, zone in keys}).order_by("pk")
    for pk, *fields, zone in rows.values_list("pk", *CRONTAB_FIELDS, "timezone"):
        found.setdefault((tuple(fields), str(zone)), pk)  # the oldest of duplicates, as crontab_get
    missing = [key for key in keys if key not in found]
    if missing:
        created = CrontabSchedule.objects.bulk_create(
            [
                CrontabSchedule(timezone=zone, **dict(zip(CRONTAB_FIELDS, fields, strict=True)))
                for fields, zone in missing
            ],
            batch_size=BATCH,
        )
        found.update((key, crontab.pk) for key, crontab in zip(missing, created, strict=True))
        PeriodicTasks.update_changed()  # as CrontabSchedule's post_save receiver would
    return {key: found[key] for key in keys}


@dataclass(frozen=True, slots=True)  # slots: the repair of every site holds one per site and seed
class CronEntry:
    """What one crontab entry should be. Apps build it with one function per kind of entry, used by the
    service that writes one entry and by the repair that writes them all."""

    name: str
    task: str
    cron: str  # a validated cron expression (core.cron)
    timezone: str  # IANA
    args: list[Any] = field(default_factory=list)
    enabled: bool = True
    description: str = ""

    @property
    def crontab_key(self) -> CrontabKey:
        return cron_fields(self.cron), self.timezone


def _args_from(text: str | None) -> Any:
    try:
        return json.loads(text or "[]")
    except ValueError:
        return None  # tampered text: differs from anything we want


def _entry_values(*, task: str, crontab_id: int, enabled: bool, description: str) -> dict[str, Any]:
    """Every column of a crontab entry that we own, besides name and args, as it must be."""
    return {
        "task": task,
        "crontab_id": crontab_id,
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


# What the comparison reads of a stored entry (the columns of _entry_values, its args, and who it is).
ENTRY_COLUMNS = ("pk", "name", "args", *_entry_values(task="", crontab_id=0, enabled=True, description=""))


def _in_step(stored: Callable[[str], Any], values: dict[str, Any], args: list) -> bool:
    """Whether a stored entry (read through `stored`: a row's columns by name) already is as wanted."""
    return _args_from(stored("args")) == args and all(stored(key) == value for key, value in values.items())


def _entry_set(entry: PeriodicTask, values: dict[str, Any], args: list) -> None:
    for key, value in values.items():
        setattr(entry, key, value)
    entry.args = json.dumps(args)


def ensure_periodic_task(
    *, name: str, task: str, crontab: CrontabSchedule, args: list, enabled: bool, description: str = ""
) -> PeriodicTask:
    """Create the entry, or bring it back to exactly this (idempotent: unchanged → no write)."""
    values = _entry_values(task=task, crontab_id=crontab.pk, enabled=enabled, description=description)
    entry = PeriodicTask.objects.filter(name=name).first()
    if entry is None:
        entry = PeriodicTask(name=name)
    elif _in_step(functools.partial(getattr, entry), values, args):
        return entry
    _entry_set(entry, values, args)
    entry.save()
    return entry


def ensure_cron_entry(wanted: CronEntry) -> PeriodicTask:
    """Create or repair one entry (idempotent): the single-entry form of `cron_entries_sync`."""
    return ensure_periodic_task(
        name=wanted.name,
        task=wanted.task,
        crontab=crontab_for(wanted.cron, wanted.timezone),
        args=wanted.args,
        enabled=wanted.enabled,
        description=wanted.description,
    )


def _as_saved(entry: PeriodicTask, now) -> None:
    """What PeriodicTask.save() does to a row before writing it, for the bulk writes that skip save()."""
    entry.exchange = entry.exchange or None
    entry.routing_key = entry.routing_key or None
    entry.queue = entry.queue or None
    entry.headers = entry.headers or None
    if not entry.enabled:
        entry.last_run_at = None
    entry.date_changed = now  # auto_now: bulk_update does not set it


@dataclass(frozen=True)
class EntriesSynced:
    created: int
    updated: int
    unwanted: dict[str, int]  # name → pk of every row read that no wanted entry names


def cron_entries_sync(wanted: Iterable[CronEntry], stored: QuerySet[PeriodicTask]) -> EntriesSynced:
    """Bring every wanted entry to exactly what `ensure_cron_entry` would make of it, in a number of
    queries that does not grow with their count: `stored` (which must hold every existing row of these
    names) is read once, the crontabs at once, the rows that differ rewritten and the missing created in
    bulk; unchanged rows are not written. The rows of `stored` no wanted entry names are returned, not
    touched: the caller knows whether they are stale."""
    by_name = {entry.name: entry for entry in wanted}
    crontabs = crontab_ids(entry.crontab_key for entry in by_name.values())

    def values_of(entry: CronEntry) -> dict[str, Any]:
        return _entry_values(
            task=entry.task,
            crontab_id=crontabs[entry.crontab_key],
            enabled=entry.enabled,
            description=entry.description,
        )

    seen: set[str] = set()
    drifted: dict[int, CronEntry] = {}
    unwanted: dict[str, int] = {}
    for row in stored.values(*ENTRY_COLUMNS).iterator(chunk_size=5000):
        entry = by_name.get(row["name"])
        if entry is None:
            unwanted[row["name"]] = row["pk"]
            continue
        seen.add(entry.name)
        if not _in_step(row.__getitem__, values_of(entry), entry.args):
            drifted[row["pk"]] = entry

    now = django_timezone.now()
    rewritten = []
    for pk_batch in _batches(list(drifted)):
        for row in PeriodicTask.objects.filter(pk__in=pk_batch):
            _entry_set(row, values_of(drifted[row.pk]), drifted[row.pk].args)
            _as_saved(row, now)
            rewritten.append(row)
    PeriodicTask.objects.bulk_update(
        rewritten,
        [*ENTRY_COLUMNS[2:], "last_run_at", "date_changed", "exchange", "routing_key", "queue", "headers"],
        batch_size=BATCH,
    )
    created = 0
    for entry_batch in _batches([entry for entry in by_name.values() if entry.name not in seen]):
        rows = []  # built batch by batch: after a restore, that is every entry
        for entry in entry_batch:
            row = PeriodicTask(name=entry.name)
            _entry_set(row, values_of(entry), entry.args)
            _as_saved(row, now)
            rows.append(row)
        created += len(PeriodicTask.objects.bulk_create(rows))
    if rewritten or created:
        PeriodicTasks.update_changed()
    return EntriesSynced(created=created, updated=len(rewritten), unwanted=unwanted)


def _batches(items: list, size: int = BATCH) -> Iterable[list]:
    return (items[start : start + size] for start in range(0, len(items), size))


def periodic_tasks_delete(pks: Collection[int]) -> int:
    """Delete these entries with one DELETE (per BATCH), and move beat's change marker once. The model's
    delete() and QuerySet.delete() move it row by row (a pre_delete receiver: three queries a row).
    Nothing references a PeriodicTask, so going past the collector skips no cascade."""
    deleted = 0
    for pk_batch in _batches(list(pks)):
        deleted += PeriodicTask.objects.filter(pk__in=pk_batch)._raw_delete(PeriodicTask.objects.db)
    if deleted:
        PeriodicTasks.update_changed()
    return deleted


def remove_periodic_task(name: str) -> bool:
    """Remove the entry if it exists (→ whether there was one)."""
    removed = False
    for entry in PeriodicTask.objects.filter(name=name):
        entry.delete()  # one by one: the model's delete() moves beat's change marker
        removed = True
    return removed


def _site_of(entry_args: Any) -> str | None:
    """The site an entry belongs to by the module's convention: its first argument."""
    if isinstance(entry_args, list) and entry_args and isinstance(entry_args[0], str):
        return entry_args[0]
    return None


def site_periodic_tasks(site_id: str) -> list[PeriodicTask]:
    """Every `<kind>:<id>` entry whose first argument is this site (see the module's convention)."""
    prefix = json.dumps([site_id])[:-1]  # '["chicago"' — the JSON text of the args starts so
    entries = PeriodicTask.objects.select_related("crontab").filter(
        name__contains=":", args__startswith=prefix
    )
    return [entry for entry in entries if _site_of(_args_from(entry.args)) == site_id]


def retime_periodic_task(entry: PeriodicTask, timezone: str) -> bool:
    """Move a crontab entry to the same five fields in another zone (→ whether it changed)."""
    if entry.crontab is None or str(entry.crontab.timezone) == timezone:
        return False
    entry.crontab = crontab_get(crontab_fields(entry.crontab), timezone)
    entry.save()
    return True


def sites_periodic_tasks_retime(timezones: dict[str, str], *, excluded_prefixes: tuple[str, ...]) -> int:
    """`retime_periodic_task` for every `<kind>:<id>` entry of these sites ({site id: zone}) whose name
    has none of `excluded_prefixes` (the entries the caller rewrites whole): one query to find them, a
    write for each that moves. → how many moved."""
    entries = PeriodicTask.objects.select_related("crontab").filter(name__contains=":", crontab__isnull=False)
    for prefix in excluded_prefixes:
        entries = entries.exclude(name__startswith=prefix)
    moved = 0
    for entry in list(entries):
        site_id = _site_of(_args_from(entry.args))
        if site_id in timezones:
            moved += retime_periodic_task(entry, timezones[site_id])
    return moved


@transaction.atomic
def ensure_interval_task(*, name: str, task: str, seconds: int) -> PeriodicTask:
    """An entry that runs `task` every `seconds`, created or repaired in place (idempotent)."""
    lock_schedules(exclusive=True)
    # IntervalSchedule has no unique constraint either (beat's admin makes rows): the oldest match, as
    # crontab_get, where get_or_create would fail on duplicates at every start from then on.
    interval = (
        IntervalSchedule.objects.filter(every=seconds, period=IntervalSchedule.SECONDS).order_by("pk").first()
    )
    if interval is None:
        interval = IntervalSchedule.objects.create(every=seconds, period=IntervalSchedule.SECONDS)
    entry, created = PeriodicTask.objects.get_or_create(
        name=name, defaults={"task": task, "interval": interval, "enabled": True}
    )
    drifted = (
        entry.interval_id != interval.id
        or not entry.enabled
        or entry.crontab_id
        or entry.task != task
        or _args_from(entry.args) != []
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
