"""Celery tasks of discovery. The beat entries that name them are kept by discovery.schedules (sites'
and seeds')."""

import logging

from celery import shared_task

from core.audit import Actor
from core.errors import ConflictError, NotFoundError
from discovery import runs
from discovery.schedules import scheduled_run_allowed

log = logging.getLogger(__name__)
SCHEDULER = "scheduler"


def _scheduled_run(site_id: str, seed_ids: list[str] | None) -> str | None:
    try:
        run = runs.run_start(
            actor=Actor.system(SCHEDULER), site_id=site_id, seed_ids=seed_ids, triggered_by="scheduled"
        )
    except runs.RunInProgress as exc:  # the previous run of these seeds is still going: skip this one
        log.info(
            "scheduled discovery of site %s skipped: %s",
            site_id,
            exc,
            extra={"siteId": site_id, "runId": exc.run_id},
        )
        return None
    except (ConflictError, NotFoundError) as exc:  # changed since the entry fired; nothing to run
        log.info("scheduled discovery of site %s skipped: %s", site_id, exc)
        return None
    return run.pk


@shared_task(name="discovery.scheduled_site_run", ignore_result=True)
def scheduled_site_run(site_id: str) -> str | None:
    """The site's discoveryCron fired: a run of every enabled seed (→ the run id, or None: skipped)."""
    if not scheduled_run_allowed(site_id):
        return None
    return _scheduled_run(site_id, None)


@shared_task(name="discovery.scheduled_seed_run", ignore_result=True)
def scheduled_seed_run(site_id: str, seed_id: str) -> str | None:
    """A seed's own schedule fired: a run of that seed (→ the run id, or None: skipped)."""
    if not scheduled_run_allowed(site_id, seed_id):
        return None
    return _scheduled_run(site_id, [seed_id])


@shared_task(name="discovery.runs_sweep", ignore_result=True)
def runs_sweep() -> None:
    """Time out stale runs; hand pending ones to leaders (beat entry: discovery.schedules)."""
    runs.runs_sweep()
