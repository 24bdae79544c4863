"""Discovery runs: trigger, dispatch to the site's leader, progress and completion reports, timeouts.

A run goes pending → dispatched → running → completed | failed | timed_out | cancelled.
- Triggered with a live leader, it is dispatched at once: `run_discovery {runId, seedIds, triggeredBy}` to
  the leader's own group (`instance.<id>`). Without one it waits as pending.
- A seed is in one active run at a time: a trigger naming (or, site-wide, choosing) a seed that is in
  a pending, dispatched or running run is refused (409 run_in_progress; a schedule skips).
- A live leader is instances.election's (`live_leader`): within the heartbeat timeout and no socket
  lost past FAILOVER_GRACE_SECONDS. A leader the next health check replaces gets no run.
- Every leadership change (instances/election.py's listeners) and the periodic sweep call
  `runs_dispatch_pending`: pending runs go to the current leader, and runs dispatched to an instance that
  is no longer the leader go again to the new one (same runId), or back to pending when there is none.
- When the leader's event socket opens (instances.services' listeners), `runs_resend_to` sends its
  dispatched, not yet running runs again: the first send may have reached no socket.
- Only the instance a run is dispatched to reports its progress and completion (socket frames); the
  results themselves (POST …/inventory/devices with runId) may come from any instance the run was ever
  dispatched to, since an old leader may still hold the results of its scan.
- Pending runs time out after DISCOVERY_PENDING_TIMEOUT_SECONDS (from their creation), dispatched and
  running ones after DISCOVERY_RUN_TIMEOUT_SECONDS (from their last dispatch).
- An operator may cancel an active run (`run_cancel`): it ends as cancelled at once, so its seeds may run
  again, and the instance it is dispatched to gets `cancel_discovery {runId}` (a pending run has none).
  A cancelled run is finished like the others: its frames are refused, results posted with its runId
  count on it as on any ended run.
- The seeds' lastRun, lastRunStatus and devicesFound follow each run when it ends; the site's
  lastDiscovery follows every run that completed or failed.

Locks: the site row first (as leadership and inventory changes do), then the run rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.audit import Actor, audit_record
from core.errors import ConflictError, InvalidInput, NotFoundError
from core.events import instance_group, publish
from core.ids import new_id
from discovery.models import ACTIVE_RUN_STATUSES, DiscoveryRun, RunStatus
from instances.election import leader_id, leads, live_leader, live_leaders
from instances.frames import FrameRejected
from instances.models import Instance
from inventory.models import DiscoverySeed
from inventory.seeds import seeds_record_run
from sites.models import Site
from sites.services import site_get_locked
from snmp.targets import estimated_targets

logger = logging.getLogger("promsnmp.discovery")

MANUAL = "manual"
SCHEDULED = "scheduled"
TRIGGERS = (MANUAL, SCHEDULED)
MAX_SEEDS_PER_RUN = 1000
# What a finished run leaves on its seeds (the spec's seed shows lastRunStatus "success").
SEED_STATUS = {
    RunStatus.COMPLETED: "success",
    RunStatus.FAILED: "failed",
    RunStatus.TIMED_OUT: "timed_out",
    RunStatus.CANCELLED: "cancelled",
}
FINISHED = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELLED)
# Ended by the leader's report: it ran, so its counts stand and it is the site's last discovery.
REPORTED = (RunStatus.COMPLETED, RunStatus.FAILED)


def pending_timeout_seconds() -> int:
    return settings.DISCOVERY_PENDING_TIMEOUT_SECONDS


def run_timeout_seconds() -> int:
    return settings.DISCOVERY_RUN_TIMEOUT_SECONDS


class RunFinished(ConflictError):
    """409 run_finished: the run has already ended (completed, failed, timed out or cancelled)."""

    def __init__(self, run: DiscoveryRun):
        super().__init__("run_finished", f"Discovery run {run.pk!r} has already ended ({run.status}).")
        self.run_id = run.pk
        self.status = run.status


class RunInProgress(ConflictError):
    """409 run_in_progress: a seed of the trigger is already in an active (pending, dispatched or running)
    run. Like a second click on "run" in Fleet or NetBox: refused, and the answer names the run."""

    def __init__(self, *, seed_id: str, run: DiscoveryRun):
        super().__init__(
            "run_in_progress",
            f"Discovery seed {seed_id!r} is already in run {run.pk!r} ({run.status}); "
            "run it again when that run has ended.",
        )
        self.run_id = run.pk
        self.seed_id = seed_id


def _send_run_discovery(run: DiscoveryRun, site_id: str) -> None:
    publish(
        group=instance_group(run.dispatched_to),
        event_type="run_discovery",
        site_id=site_id,
        payload={"runId": run.pk, "seedIds": list(run.seed_ids), "triggeredBy": run.triggered_by},
    )


def _dispatch(run: DiscoveryRun, leader: Instance, site: Site, now: datetime) -> None:
    """Hand the run to the leader (first time or again); the caller holds the site lock."""
    again = bool(run.dispatched_to)
    run.status = RunStatus.DISPATCHED
    run.dispatched_to = leader.pk
    if leader.pk not in run.dispatch_history:
        run.dispatch_history = [*run.dispatch_history, leader.pk]
    run.leader_term = site.leader_term
    run.dispatched_at = now
    run.dispatch_count += 1
    run.targets_scanned = 0  # the new leader starts the scan over
    run.save(
        update_fields=[
            "status",
            "dispatched_to",
            "dispatch_history",
            "leader_term",
            "dispatched_at",
            "dispatch_count",
            "targets_scanned",
        ]
    )
    _send_run_discovery(run, site.pk)
    logger.info(
        "discovery run %s %sdispatched to %s",
        run.pk,
        "re" if again else "",
        leader.pk,
        extra={"siteId": site.pk, "runId": run.pk},
    )


def _seeds_for(site_id: str, seed_ids: list[str] | None) -> list[DiscoverySeed]:
    if seed_ids is None:
        seeds = list(DiscoverySeed.objects.filter(site_id=site_id, enabled=True).order_by("created_at", "id"))
        if not seeds:
            raise ConflictError("no_enabled_seeds", f"Site {site_id!r} has no enabled discovery seed.")
        return seeds
    wanted = list(dict.fromkeys(seed_ids))  # without repeats, in the order given
    if not wanted:
        raise InvalidInput({"seedIds": ["At least one seed id."]})
    if len(wanted) > MAX_SEEDS_PER_RUN:
        raise InvalidInput({"seedIds": [f"At most {MAX_SEEDS_PER_RUN} seeds per run."]})
    found = {seed.pk: seed for seed in DiscoverySeed.objects.filter(site_id=site_id, pk__in=wanted)}
    missing = [seed_id for seed_id in wanted if seed_id not in found]
    if missing:
        raise NotFoundError(f"No discovery seed {missing[0]!r} in site {site_id!r}.")
    disabled = [seed_id for seed_id in wanted if not found[seed_id].enabled]
    if disabled:
        raise ConflictError("seed_disabled", f"Discovery seed {disabled[0]!r} is disabled; enable it first.")
    return [found[seed_id] for seed_id in wanted]


def _refuse_busy_seeds(site_id: str, seeds: list[DiscoverySeed]) -> None:
    """RunInProgress when one of the seeds is in an active run. The caller holds the site lock, which
    every run_start takes first: two triggers of the same seed cannot both pass."""
    wanted = {seed.pk for seed in seeds}
    active = DiscoveryRun.objects.filter(site_id=site_id, status__in=ACTIVE_RUN_STATUSES)
    # In Python, not with a JSON containment lookup: SQLite (the embedded default) has none.
    for run in active.only("id", "seed_ids", "status").order_by("created_at", "id"):
        busy = [seed_id for seed_id in run.seed_ids if seed_id in wanted]
        if busy:
            raise RunInProgress(seed_id=busy[0], run=run)


def run_start(*, actor: Actor, site_id: str, seed_ids: list[str] | None, triggered_by: str) -> DiscoveryRun:
    """Create a run of the given seeds (None: every enabled seed of the site) and dispatch it to the
    site's live leader, or leave it pending until there is one.

    404 for an unknown site or a seed not in the site; 409 seed_disabled for a disabled seed named
    explicitly, no_enabled_seeds when None finds none, discovery_disabled when the site's
    discoveryEnabled is false, run_in_progress (RunInProgress) when one of the seeds is already in a
    pending, dispatched or running run.
    """
    if triggered_by not in TRIGGERS:
        raise ValueError(f"triggered_by must be one of {TRIGGERS}, not {triggered_by!r}")
    with transaction.atomic():
        site = site_get_locked(site_id)
        if not site.discovery_enabled:
            raise ConflictError("discovery_disabled", f"Discovery is disabled for site {site_id!r}.")
        seeds = _seeds_for(site_id, seed_ids)
        _refuse_busy_seeds(site_id, seeds)
        run = DiscoveryRun.objects.create(
            id=new_id("run"),
            site=site,
            seed_ids=[seed.pk for seed in seeds],
            status=RunStatus.PENDING,
            targets_estimated=sum(estimated_targets(seed.targets) for seed in seeds),
            triggered_by=triggered_by,
            requested_by=str(actor)[:255],
        )
        leader = live_leader(site_id, timezone.now())
        if leader is not None:
            _dispatch(run, leader, site, timezone.now())
        audit_record(
            actor=actor,
            action="discovery_run_started",
            entity_type="discovery_run",
            entity_id=run.pk,
            site_id=site_id,
            instance_id=run.dispatched_to,
            details={
                "seedIds": run.seed_ids,
                "triggeredBy": triggered_by,
                "status": run.status,
                "estimatedTargets": run.targets_estimated,
                "leaderInstance": run.dispatched_to or None,
            },
        )
    return run


def _follow_leadership(site: Site, now: datetime, *, resend_to: str = "") -> list[DiscoveryRun]:
    """Pending runs to the site's live leader; runs dispatched to an instance that is no longer the
    leader to the new one (or back to pending when the site has none); with `resend_to` (the live
    leader), runs dispatched to it that it has not started are sent again. The caller holds the site
    lock. Returns the runs sent."""
    current = leader_id(site.pk)
    leader = live_leader(site.pk, now)
    sent = []
    runs = DiscoveryRun.objects.select_for_update().filter(site_id=site.pk, status__in=ACTIVE_RUN_STATUSES)
    for run in runs.order_by("created_at", "id"):
        if run.status == RunStatus.PENDING:
            if leader is not None:
                _dispatch(run, leader, site, now)
                sent.append(run)
        elif run.dispatched_to != current:
            if leader is not None:
                _dispatch(run, leader, site, now)
                sent.append(run)
            else:
                # Its leader is gone and there is no live one: wait like a new run.
                run.status, run.dispatched_to = RunStatus.PENDING, ""
                run.save(update_fields=["status", "dispatched_to"])
        elif resend_to and run.dispatched_to == resend_to and run.status == RunStatus.DISPATCHED:
            # The same dispatch delivered again: no new dispatch (count, time, history, term stay),
            # so the run timeout still counts from the dispatch and a flapping socket cannot extend it.
            _send_run_discovery(run, site.pk)
            logger.info(
                "discovery run %s sent again to %s (its socket opened)",
                run.pk,
                resend_to,
                extra={"siteId": site.pk, "runId": run.pk},
            )
            sent.append(run)
    return sent


def runs_dispatch_pending(*, site_id: str) -> list[DiscoveryRun]:
    """Pending runs to the site's live leader; runs dispatched to an instance that is no longer the
    leader to the new one (or back to pending when the site has none). Returns the runs (re)dispatched."""
    with transaction.atomic():
        try:
            site = site_get_locked(site_id)
        except NotFoundError:
            return []  # deleted meanwhile
        return _follow_leadership(site, timezone.now())


def runs_resend_to(*, instance_id: str) -> list[DiscoveryRun]:
    """The instance's event socket opened. If it is its site's live leader, every run dispatched to it
    and not started (status dispatched) is sent run_discovery again, same runId, seedIds and
    triggeredBy: the first send may have gone to its group while no socket listened (a socket down
    inside the failover grace period). Waiting runs are handed to it as the sweep would. Returns the
    runs sent. A running run is not sent again: the leader has it."""
    site_id = Instance.objects.filter(pk=instance_id).values_list("site_id", flat=True).first()
    active = DiscoveryRun.objects.filter(site_id=site_id, status__in=ACTIVE_RUN_STATUSES)
    if site_id is None or not leads(instance_id, site_id) or not active.exists():
        # A follower, or nothing to send: no site lock (every socket of the fleet reopens after a restart).
        return []
    with transaction.atomic():
        try:
            site = site_get_locked(site_id)
        except NotFoundError:
            return []
        now = timezone.now()
        leader = live_leader(site_id, now)
        if leader is None or leader.pk != instance_id:
            return []  # deposed meanwhile: the leadership change moves its runs
        return _follow_leadership(site, now, resend_to=instance_id)


def on_leader_change(change) -> None:
    """instances.election listener (after commit): the runs follow the leadership."""
    runs_dispatch_pending(site_id=change.site_id)


def on_socket_opened(instance_id: str) -> None:
    """instances.services listener (after the socket joined its groups): what it missed comes again."""
    runs_resend_to(instance_id=instance_id)


def _finish(run: DiscoveryRun, status: str, now: datetime) -> None:
    """End a run (the caller holds the site and run locks): the run, its seeds and the site follow.
    A timed-out or cancelled run did not report its end: no startedAt is made up, and the seeds'
    devicesFound and the site's lastDiscovery stay as they were."""
    reported = status in REPORTED
    run.status = status
    run.completed_at = now
    if run.started_at is None and reported:
        run.started_at = run.dispatched_at or now
    run.save()
    seeds_record_run(
        site_id=run.site_id,
        seed_ids=run.seed_ids,
        last_run=run.started_at or run.dispatched_at or run.created_at,
        status=SEED_STATUS[status],
        devices_found=run.devices_found if reported else None,
    )
    if reported:
        Site.objects.filter(pk=run.site_id).update(last_discovery_at=now)


def run_cancel(*, actor: Actor, site_id: str, run_id: str) -> DiscoveryRun:
    """An operator ends an active run: cancelled, completedAt now, its seeds free to run again at once.
    The instance it is dispatched to (dispatched or running) gets cancel_discovery {runId} after commit;
    a pending run has none to tell. 404 for an unknown site or a run not in it; 409 run_finished
    (RunFinished) when it has already ended, which changes nothing.

    The site row, then the run row, are locked as run_complete and dispatch lock them: a cancel racing
    the leader's discovery_complete (or a redispatch) leaves exactly one of them applied."""
    with transaction.atomic():
        site_get_locked(site_id)
        run = DiscoveryRun.objects.select_for_update().filter(pk=run_id, site_id=site_id).first()
        if run is None:
            raise NotFoundError(f"No discovery run {run_id!r} in site {site_id!r}.")
        if run.status not in ACTIVE_RUN_STATUSES:
            raise RunFinished(run)
        was = run.status
        holder = run.dispatched_to if was in (RunStatus.DISPATCHED, RunStatus.RUNNING) else ""
        run.error_detail = f"Cancelled while {was}."
        _finish(run, RunStatus.CANCELLED, timezone.now())
        if holder:
            publish(
                group=instance_group(holder),
                event_type="cancel_discovery",
                site_id=site_id,
                payload={"runId": run.pk},
            )
        audit_record(
            actor=actor,
            action="discovery_run_cancelled",
            entity_type="discovery_run",
            entity_id=run.pk,
            site_id=site_id,
            instance_id=holder,
            details={"previousStatus": was, "seedIds": run.seed_ids, "notified": holder or None},
        )
    logger.info(
        "discovery run %s cancelled by %s (was %s)",
        run.pk,
        actor,
        was,
        extra={"siteId": site_id, "runId": run.pk},
    )
    return run


def runs_expire(*, now: datetime | None = None) -> list[str]:
    """Pending runs past DISCOVERY_PENDING_TIMEOUT_SECONDS and dispatched or running runs past
    DISCOVERY_RUN_TIMEOUT_SECONDS become timed_out. Returns their ids."""
    now = now or timezone.now()
    pending_cutoff = now - timedelta(seconds=pending_timeout_seconds())
    run_cutoff = now - timedelta(seconds=run_timeout_seconds())

    def overdue(queryset):
        return queryset.filter(status=RunStatus.PENDING, created_at__lt=pending_cutoff) | queryset.filter(
            status__in=(RunStatus.DISPATCHED, RunStatus.RUNNING), dispatched_at__lt=run_cutoff
        )

    expired = []
    candidates = overdue(DiscoveryRun.objects.all()).values_list("id", "site_id").order_by("site_id", "id")
    for run_id, site_id in list(candidates):
        with transaction.atomic():
            try:
                site_get_locked(site_id)
            except NotFoundError:
                continue
            run = overdue(DiscoveryRun.objects.filter(pk=run_id)).select_for_update().first()
            if run is None:
                continue  # reported or redispatched meanwhile
            was = run.status
            limit = pending_timeout_seconds() if was == RunStatus.PENDING else run_timeout_seconds()
            run.error_detail = (
                f"No leader took the run within {limit} s."
                if was == RunStatus.PENDING
                else f"Instance {run.dispatched_to} did not complete the run within {limit} s."
            )
            _finish(run, RunStatus.TIMED_OUT, now)
            audit_record(
                actor=Actor.system("discovery-sweep"),
                action="discovery_run_timed_out",
                entity_type="discovery_run",
                entity_id=run.pk,
                site_id=site_id,
                instance_id=run.dispatched_to,
                details={"previousStatus": was, "timeoutSeconds": limit},
            )
            expired.append(run.pk)
    return expired


@dataclass(frozen=True)
class SweepResult:
    expired: list[str]
    dispatched: list[str]


def runs_sweep() -> SweepResult:
    """The periodic job: time out overdue runs, then hand waiting runs to leaders (a leader that came
    back without a leadership change, a listener that failed)."""
    expired = runs_expire()
    now = timezone.now()
    site_ids = sorted(
        set(
            DiscoveryRun.objects.filter(status__in=ACTIVE_RUN_STATUSES)
            .filter(site_id__in=live_leaders(now).values("site_id"))
            .values_list("site_id", flat=True)
        )
    )
    dispatched = []
    for site_id in site_ids:
        dispatched.extend(run.pk for run in runs_dispatch_pending(site_id=site_id))
    return SweepResult(expired=expired, dispatched=dispatched)


# --- reports from the instance (socket frames) ------------------------------------------------------


def _reported_run(*, instance_id: str, run_id: str, site_id: str | None) -> DiscoveryRun:
    """The run, locked, if this instance may report on it."""
    run = DiscoveryRun.objects.select_for_update().filter(pk=run_id).first()
    if run is None or (site_id is not None and run.site_id != site_id):
        raise FrameRejected(
            "not_found", f"No discovery run {run_id!r} in this site.", {"runId": ["Unknown."]}
        )
    if run.status in FINISHED:
        raise FrameRejected("run_finished", f"Discovery run {run_id!r} has already ended ({run.status}).")
    if run.dispatched_to != instance_id:
        raise FrameRejected(
            "not_dispatched",
            f"Discovery run {run_id!r} is not dispatched to instance {instance_id!r}"
            + (
                f" (it is dispatched to {run.dispatched_to!r})." if run.dispatched_to else " (it is pending)."
            ),
        )
    return run


def run_progress(
    *, instance_id: str, run_id: str, targets_scanned: int, devices_found: int, site_id: str | None = None
) -> DiscoveryRun:
    """discovery_progress: the run is running; targetsScanned as reported, devicesFound never goes down."""
    with transaction.atomic():
        run = _reported_run(instance_id=instance_id, run_id=run_id, site_id=site_id)
        run.status = RunStatus.RUNNING
        run.started_at = run.started_at or timezone.now()
        run.targets_scanned = targets_scanned
        run.devices_found = max(run.devices_found, devices_found)
        run.save(update_fields=["status", "started_at", "targets_scanned", "devices_found"])
    return run


def run_complete(
    *,
    instance_id: str,
    run_id: str,
    status: str,
    counts: dict[str, int],
    errors: int,
    error_detail: str = "",
    site_id: str | None = None,
) -> DiscoveryRun:
    """discovery_complete: the run ends completed or failed. `counts` may carry targetsScanned,
    devicesFound, devicesNew and devicesUpdated; device counts never go below what posted results
    (runId) already counted."""
    if status not in (RunStatus.COMPLETED, RunStatus.FAILED):
        raise ValueError(f"status must be completed or failed, not {status!r}")
    run_site = DiscoveryRun.objects.filter(pk=run_id).values_list("site_id", flat=True).first()
    if run_site is None or (site_id is not None and run_site != site_id):
        raise FrameRejected(
            "not_found", f"No discovery run {run_id!r} in this site.", {"runId": ["Unknown."]}
        )
    with transaction.atomic():
        site_get_locked(run_site)
        run = _reported_run(instance_id=instance_id, run_id=run_id, site_id=site_id)
        if "targetsScanned" in counts:
            run.targets_scanned = counts["targetsScanned"]
        run.devices_found = max(run.devices_found, counts.get("devicesFound", 0))
        run.devices_new = max(run.devices_new, counts.get("devicesNew", 0))
        run.devices_updated = max(run.devices_updated, counts.get("devicesUpdated", 0))
        run.errors = errors
        run.error_detail = error_detail
        _finish(run, status, timezone.now())
        audit_record(
            actor=Actor(kind="instance", name=instance_id),
            action="discovery_run_completed",
            entity_type="discovery_run",
            entity_id=run.pk,
            site_id=run.site_id,
            instance_id=instance_id,
            details={
                "status": status,
                "targetsScanned": run.targets_scanned,
                "devicesFound": run.devices_found,
                "errors": errors,
            },
        )
    return run


# --- results posted with a runId (inventory.services, inside its transaction) ------------------------


def run_for_results(
    *, site_id: str, run_id: str = "", seed_id: str = "", instance_id: str = ""
) -> DiscoveryRun | None:
    """The run that posted results belong to, locked (the caller holds the site lock): the one named by
    runId (400 when it is not this site's), else the newest dispatched or running run with seedId that
    was dispatched to the posting instance (None when there is none: seedId alone then ties nothing)."""
    if run_id:
        run = DiscoveryRun.objects.select_for_update().filter(pk=run_id, site_id=site_id).first()
        if run is None:
            raise InvalidInput({"runId": [f"No discovery run {run_id!r} in site {site_id!r}."]})
        return run
    if not seed_id:
        return None
    active = DiscoveryRun.objects.select_for_update().filter(
        site_id=site_id, status__in=(RunStatus.DISPATCHED, RunStatus.RUNNING)
    )
    for run in active.order_by("-created_at", "-id"):
        if seed_id in run.seed_ids and (not instance_id or instance_id in run.dispatch_history):
            return run
    return None


def run_may_post(run: DiscoveryRun, instance_id: str) -> bool:
    """An instance the run was ever dispatched to may post its results, leader or not."""
    return bool(instance_id) and instance_id in run.dispatch_history


def run_record_results(run: DiscoveryRun, *, added: int, updated: int, unchanged: int) -> None:
    """Results posted for the run: devicesNew and devicesUpdated add up; devicesFound is at least the
    number of devices posted for it."""
    run.devices_new += added
    run.devices_updated += updated
    run.devices_posted += added + updated + unchanged
    run.devices_found = max(run.devices_found, run.devices_posted)
    run.save(update_fields=["devices_new", "devices_updated", "devices_posted", "devices_found"])


@dataclass(frozen=True)
class RunResults:
    """A run as inventory.services.ResultsRun: what inventory_add_devices asks of it."""

    run: DiscoveryRun

    def may_post(self, instance_id: str) -> bool:
        return run_may_post(self.run, instance_id)

    def record(self, *, added: int, updated: int, unchanged: int) -> None:
        run_record_results(self.run, added=added, updated=updated, unchanged=unchanged)


def results_run(*, site_id: str, run_id: str, seed_id: str, instance_id: str) -> RunResults | None:
    """inventory.services' results-run handler (registered in DiscoveryConfig.ready()): run_for_results."""
    run = run_for_results(site_id=site_id, run_id=run_id, seed_id=seed_id, instance_id=instance_id)
    return None if run is None else RunResults(run)
