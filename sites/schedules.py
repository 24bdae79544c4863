"""A site's discovery schedule (discoveryCron in the site's timezone) as a django-celery-beat entry.

The entry is "site-discovery:<siteId>", running "discovery.scheduled_site_run" with [siteId], enabled
only while the site's discoveryEnabled is on. The task is named by a string: this module imports
nothing from discovery. Called by sites.services inside their transaction, and by sync_schedules.
"""

from __future__ import annotations

from django_celery_beat.models import PeriodicTask

from core.schedules import (
    crontab_for,
    ensure_periodic_task,
    remove_periodic_task,
    retime_periodic_task,
    site_periodic_tasks,
)
from sites.models import Site

SITE_ENTRY_PREFIX = "site-discovery:"
SITE_TASK = "discovery.scheduled_site_run"


def site_entry_name(site_id: str) -> str:
    return f"{SITE_ENTRY_PREFIX}{site_id}"


def site_schedule_sync(site: Site) -> PeriodicTask:
    """Create or repair the site's entry (idempotent), and keep the site's other entries (seed
    schedules) in the site's timezone."""
    entry = ensure_periodic_task(
        name=site_entry_name(site.pk),
        task=SITE_TASK,
        crontab=crontab_for(site.discovery_cron, site.timezone),
        args=[site.pk],
        enabled=site.discovery_enabled,
        description=f"Scheduled discovery of every seed of site {site.pk} (discoveryCron, {site.timezone}).",
    )
    for other in site_periodic_tasks(site.pk):
        if other.pk != entry.pk:
            retime_periodic_task(other, site.timezone)
    return entry


def site_schedules_remove(site_id: str) -> int:
    """Remove the site's entry and every other entry of the site (its seeds': the delete cascades)."""
    removed = int(remove_periodic_task(site_entry_name(site_id)))
    for entry in site_periodic_tasks(site_id):
        entry.delete()
        removed += 1
    return removed
