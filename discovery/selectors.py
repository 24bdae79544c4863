"""Reads of discovery runs, rendered for the wire."""

from __future__ import annotations

from core.errors import NotFoundError
from core.timefmt import iso_z
from discovery.models import ACTIVE_RUN_STATUSES, DiscoveryRun


def run_representation(run: DiscoveryRun) -> dict:
    return {
        "runId": run.pk,
        "seedId": run.seed_ids[0] if run.seed_ids else None,
        "seedIds": list(run.seed_ids),
        "status": run.status,
        "startedAt": iso_z(run.started_at),
        "completedAt": iso_z(run.completed_at),
        "targetsScanned": run.targets_scanned,
        "devicesFound": run.devices_found,
        "devicesNew": run.devices_new,
        "devicesUpdated": run.devices_updated,
        "errors": run.errors,
        "errorDetail": run.error_detail or None,
        "triggeredBy": run.triggered_by,
        "leaderInstance": run.dispatched_to or None,
        "estimatedTargets": run.targets_estimated,
        "createdAt": iso_z(run.created_at),
        "dispatchedAt": iso_z(run.dispatched_at),
    }


def run_percent(run: DiscoveryRun) -> int | None:
    """Targets scanned of those estimated, in whole percent, at most 100 (a leader may scan more than the
    estimate); None when the seeds cover no address to count."""
    if not run.targets_estimated:
        return None
    return min(100, run.targets_scanned * 100 // run.targets_estimated)


def run_live_state(run: DiscoveryRun) -> dict:
    """A run as its admin page follows it: the API's representation, whether it is still active (pending,
    dispatched or running), its progress and every instance it was dispatched to."""
    return {
        **run_representation(run),
        "active": run.status in ACTIVE_RUN_STATUSES,
        "percent": run_percent(run),
        "dispatchHistory": list(run.dispatch_history),
        "dispatchCount": run.dispatch_count,
    }


def site_runs(
    site_id: str, *, statuses: list[str] | None = None, limit: int, offset: int = 0
) -> tuple[int, list[dict]]:
    """(how many runs the site has in these statuses (all when None), a page of them newest first)."""
    queryset = DiscoveryRun.objects.filter(site_id=site_id)
    if statuses:
        queryset = queryset.filter(status__in=statuses)
    total = queryset.count()
    page = queryset.order_by("-created_at", "-id")[offset : offset + limit]
    return total, [run_representation(run) for run in page]


def run_get(site_id: str, run_id: str) -> DiscoveryRun:
    """The run of the site, or NotFoundError."""
    run = DiscoveryRun.objects.filter(site_id=site_id, pk=run_id).first()
    if run is None:
        raise NotFoundError(f"No discovery run {run_id!r} in site {site_id!r}.")
    return run
