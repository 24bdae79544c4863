"""Discovery's beat entries: a site's discovery schedule, and a seed's own schedule, in the site's timezone.

"site-discovery:<siteId>" runs "discovery.scheduled_site_run" with [siteId] on the site's discoveryCron,
enabled only while the site's discoveryEnabled is on. sites calls `site_schedule_changed` and
`site_removed` inside the transaction of a site's write (subscribed in DiscoveryConfig.ready(): sites
does not import discovery); a site's schedule also re-times every other entry of the site (its seeds').

"seed-discovery:<seedId>" runs "discovery.scheduled_seed_run" with [siteId, seedId]. It exists only
while the seed has a schedule and is enabled only while the seed is. The site's discoveryEnabled is
the master switch of scheduled discovery, checked when an entry fires (`scheduled_run_allowed`): the
sites app may not import discovery, so it cannot re-derive seed entries when that switch moves, and
a seed entry that stays as the seed says needs no repair when the site's discovery is switched back
on (docs/decisions.md). The site's timezone is applied to these entries by `site_schedule_sync`, which
re-times every entry of the site (core.schedules' convention: the site id is the first argument).

Kept in line by `on_seeds_written`, subscribed in DiscoveryConfig.ready() to inventory's `seeds_written`,
which inventory calls inside the transaction of every seed write (it does not import discovery), and by
sync_schedules. What each entry must be is said once, by `site_entry` and `seed_entry`: the services
and the repair of every site (`discovery_schedules_sync`, bulk) write the same rows from them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from core.schedules import (
    CronEntry,
    cron_entries_sync,
    ensure_cron_entry,
    ensure_interval_task,
    lock_schedules,
    periodic_tasks_delete,
    remove_periodic_task,
    retime_periodic_task,
    site_periodic_tasks,
    sites_periodic_tasks_retime,
)
from inventory.models import DiscoverySeed
from sites.models import Site

log = logging.getLogger(__name__)

SITE_ENTRY_PREFIX = "site-discovery:"
SITE_TASK = "discovery.scheduled_site_run"


def site_entry_name(site_id: str) -> str:
    return f"{SITE_ENTRY_PREFIX}{site_id}"


def site_entry(site: Site) -> CronEntry:
    """What the site's entry must be: the one rule for its writes and for sync_schedules."""
    return CronEntry(
        name=site_entry_name(site.pk),
        task=SITE_TASK,
        cron=site.discovery_cron,
        timezone=site.timezone,
        args=[site.pk],
        enabled=site.discovery_enabled,
        description=f"Scheduled discovery of every seed of site {site.pk} (discoveryCron, {site.timezone}).",
    )


def site_schedule_sync(site: Site) -> PeriodicTask:
    """Create or repair the site's entry (idempotent), and keep the site's other entries (seed
    schedules) in the site's timezone. Inside the site write's transaction."""
    lock_schedules(exclusive=False)
    entry = ensure_cron_entry(site_entry(site))
    for other in site_periodic_tasks(site.pk):
        if other.pk != entry.pk:
            retime_periodic_task(other, site.timezone)
    return entry


def site_schedules_remove(site_id: str) -> int:
    """Remove the site's entry and every other entry of the site (its seeds': the delete cascades). Inside
    the site delete's transaction."""
    lock_schedules(exclusive=False)
    removed = int(remove_periodic_task(site_entry_name(site_id)))
    for entry in site_periodic_tasks(site_id):
        entry.delete()
        removed += 1
    return removed


SEED_ENTRY_PREFIX = "seed-discovery:"
SEED_TASK = "discovery.scheduled_seed_run"


def seed_entry_name(seed_id: str) -> str:
    return f"{SEED_ENTRY_PREFIX}{seed_id}"


def seed_entry(seed: DiscoverySeed, timezone: str) -> CronEntry:
    """What a scheduled seed's entry must be (its site in `timezone`): the one rule for the seed writes
    and for sync_schedules."""
    return CronEntry(
        name=seed_entry_name(seed.pk),
        task=SEED_TASK,
        cron=seed.schedule,
        timezone=timezone,
        args=[seed.site_id, seed.pk],
        enabled=seed.enabled,
        description=f"Scheduled discovery of seed {seed.name!r} of site {seed.site_id} ({timezone}).",
    )


def seeds_schedule_sync(
    *, seeds: Iterable[DiscoverySeed], timezone: str, removed_ids: Iterable[str] = ()
) -> dict[str, int]:
    """Bring the entries of these seeds (all of one site, in `timezone`) in line, and remove the
    entries of `removed_ids` and of the seeds without a schedule. Idempotent; a few queries however many
    seeds, so that a PUT inventory of thousands of seeds stays cheap. → {"ensured", "removed"}. Inside the
    seed write's transaction."""
    lock_schedules(exclusive=False)
    seeds = list(seeds)
    wanted = [seed_entry(seed, timezone) for seed in seeds if seed.schedule]
    names = [seed_entry_name(seed.pk) for seed in seeds] + [seed_entry_name(pk) for pk in removed_ids]
    synced = cron_entries_sync(wanted, PeriodicTask.objects.filter(name__in=names))
    return {"ensured": len(wanted), "removed": periodic_tasks_delete(synced.unwanted.values())}


def on_seeds_written(*, site: Site, seeds: list[DiscoverySeed], removed_ids: list[str]) -> None:
    """inventory.seeds handler, inside the write's transaction: the entries of the seeds added or
    changed follow them, those of the seeds deleted go."""
    seeds_schedule_sync(seeds=seeds, timezone=site.timezone, removed_ids=removed_ids)


def scheduled_run_allowed(site_id: str, seed_id: str | None = None) -> bool:
    """Whether a beat entry that just fired should start a run: the site still exists with discovery
    enabled and, for a seed's entry, the seed still belongs to it, is enabled and has a schedule."""
    if not Site.objects.filter(pk=site_id, discovery_enabled=True).exists():
        log.info("scheduled discovery of site %s skipped: no such site or its discovery is disabled", site_id)
        return False
    if seed_id is not None and not (
        DiscoverySeed.objects.filter(pk=seed_id, site_id=site_id, enabled=True).exclude(schedule="").exists()
    ):
        log.info("scheduled discovery of seed %s skipped: no such enabled, scheduled seed", seed_id)
        return False
    return True


@transaction.atomic
def discovery_schedules_sync() -> dict[str, int | bool]:
    """Repair every discovery entry (sync_schedules): each site's, each scheduled seed's, and remove
    "site-discovery:*" / "seed-discovery:*" entries whose site or seed is gone or has no schedule;
    other apps' entries of a site follow its timezone, as `site_schedule_sync` has them. Idempotent, and
    the same entries as the site and seed services write (`site_entry`, `seed_entry`), in a number of
    queries that does not grow with the sites: everything is read at once, compared in Python, and
    only what differs is written (bulk). Exclusive of every other writer of entries (lock_schedules):
    a site created between the read of the sites and that of the entries would lose its entry."""
    lock_schedules(exclusive=True)
    before = PeriodicTasks.last_change()
    wanted: list[CronEntry] = []
    timezones: dict[str, str] = {}  # site id → zone, for the other apps' entries
    sites_enabled = 0
    for site in Site.objects.only("pk", "timezone", "discovery_cron", "discovery_enabled").iterator(5000):
        wanted.append(site_entry(site))
        timezones[site.pk] = site.timezone
        sites_enabled += site.discovery_enabled
    # The seed's zone from the join, not from `sites`: a site created since that read has its seeds here.
    scheduled = (
        DiscoverySeed.objects.exclude(schedule="")
        .select_related("site")
        .only("pk", "site_id", "name", "schedule", "enabled", "site__timezone")
        .order_by("pk")
    )
    seeds = 0
    for seed in scheduled.iterator(chunk_size=5000):
        wanted.append(seed_entry(seed, seed.site.timezone))
        seeds += 1
    synced = cron_entries_sync(
        wanted,
        PeriodicTask.objects.filter(
            Q(name__startswith=SITE_ENTRY_PREFIX) | Q(name__startswith=SEED_ENTRY_PREFIX)
        ),
    )
    removed = periodic_tasks_delete(synced.unwanted.values())  # their site or seed is gone, or unscheduled
    sites_periodic_tasks_retime(timezones, excluded_prefixes=(SITE_ENTRY_PREFIX, SEED_ENTRY_PREFIX))
    return {
        "sites": len(timezones),
        "sitesEnabled": sites_enabled,
        "seeds": seeds,
        "removed": removed,
        "changed": PeriodicTasks.last_change() != before,
    }


RUNS_SWEEP_TASK_NAME = "discovery-runs-sweep"


def runs_sweep_schedule_sync():
    """The sweep that times runs out and dispatches pending ones: every DISCOVERY_SWEEP_INTERVAL_SECONDS."""
    return ensure_interval_task(
        name=RUNS_SWEEP_TASK_NAME,
        task="discovery.runs_sweep",
        seconds=settings.DISCOVERY_SWEEP_INTERVAL_SECONDS,
    )
