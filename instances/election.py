"""Leader election: the only module that changes leadership.

Rules (docs/decisions.md):
- every change runs in one transaction that first locks the site row, and increments the site's
  leaderTerm (a fencing token carried by register, heartbeat and leader events);
- the database refuses a second leader (partial unique constraint `one_leader_per_site`);
- the healthiest follower is the one with the most recent heartbeat, ties to the earliest registered;
  an instance past HEARTBEAT_TIMEOUT_SECONDS is never chosen;
- a site without a leader gets one as soon as a live instance registers or heartbeats, and at the
  latest at the next health check;
- a leader whose event socket closed without a deregister keeps leadership for
  FAILOVER_GRACE_SECONDS; if it has neither reconnected nor heartbeated by then, it is replaced
  (previous_leader_unhealthy) when the grace ends: the server that held the socket runs
  leader_check_lost_sockets then (the periodic health check is the backstop). A reconnect inside the
  grace period changes nothing, and the check that then comes finds the leader back and does nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from core.audit import Actor, audit_record
from core.errors import ConflictError, NotFoundError
from core.events import instance_group, publish
from core.hooks import Hook
from instances.liveness import alive_cutoff
from instances.models import Instance
from sites.models import Site
from sites.services import site_get_locked

logger = logging.getLogger("promsnmp.election")

NO_PREVIOUS_LEADER = "no_previous_leader"
PREVIOUS_LEADER_UNHEALTHY = "previous_leader_unhealthy"
PREVIOUS_LEADER_DEREGISTERED = "previous_leader_deregistered"
MANUAL_ASSIGNMENT = "manual_assignment"
# leader_revoked reasons
HEALTH_CHECK_FAILED = "health_check_failed"


@dataclass(frozen=True)
class LeaderChange:
    site_id: str
    leader_id: str | None
    previous_leader_id: str | None
    reason: str
    term: int


# A lost socket's check runs this long after its grace ends, so that it is past the grace on the clock that
# recorded the close, too (the timer runs on a monotonic clock, the grace is judged on the wall clock).
LOST_SOCKET_CHECK_MARGIN_SECONDS = 0.25
LOST_SOCKET_BATCH = 500  # instance ids per query (SQLite's bound on query parameters)

# Called after the commit of every leadership change (apps subscribe in ready(), so election imports
# none of them). A failing subscriber is logged; it never undoes the change.
leader_changed: Hook[[LeaderChange]] = Hook("leader_changed")


def _current_leader(site_id: str) -> Instance | None:
    return Instance.objects.filter(site_id=site_id, is_leader=True).first()  # callers hold the site lock


def _healthiest_follower(site_id: str, now: datetime, exclude: Iterable[str] = ()) -> Instance | None:
    return live_followers([site_id], now).exclude(pk__in=list(exclude)).first()


def _socket_lost(now: datetime) -> Q:
    """Its socket closed more than FAILOVER_GRACE_SECONDS ago, and it neither reconnected nor heartbeated."""
    return (
        Q(socket_disconnected_at__isnull=False)
        & Q(socket_disconnected_at__lt=now - timedelta(seconds=settings.FAILOVER_GRACE_SECONDS))
        & (Q(socket_connected_at__isnull=True) | Q(socket_connected_at__lte=F("socket_disconnected_at")))
        & Q(last_heartbeat__lte=F("socket_disconnected_at"))
    )


def _gone(now: datetime) -> Q:
    """Not fit to lead: past the heartbeat timeout, or its socket lost past the grace period."""
    return Q(last_heartbeat__isnull=True) | Q(last_heartbeat__lt=alive_cutoff(now)) | _socket_lost(now)


def _is_alive(instance: Instance, now: datetime) -> bool:
    return not Instance.objects.filter(pk=instance.pk).filter(_gone(now)).exists()


# --- read-only: the one definition of a live leader, for other apps (discovery) ----------------------


def live_leaders(now: datetime | None = None) -> QuerySet[Instance]:
    """Leaders the health check would keep: within the heartbeat timeout and not past the failover
    grace period of a lost socket. Read-only; a leader not in it is about to be replaced."""
    return Instance.objects.filter(is_leader=True).exclude(_gone(now or timezone.now()))


def live_followers(site_ids: Iterable[str], now: datetime | None = None) -> QuerySet[Instance]:
    """The sites' followers fit to lead, the healthiest first (most recent heartbeat, ties to the earliest
    registered): what an election picks from. Read-only; the admin offers them to choose from."""
    return (
        Instance.objects.filter(site_id__in=list(site_ids), is_leader=False)
        .exclude(_gone(now or timezone.now()))
        .order_by("-last_heartbeat", "registered_at", "id")
    )


def live_leader(site_id: str, now: datetime | None = None) -> Instance | None:
    """The site's leader if it is live (see live_leaders), else None; no lock is taken."""
    return live_leaders(now).filter(site_id=site_id).first()


def leader_id(site_id: str) -> str | None:
    """The id of the site's leader as recorded, live or not (None when it has none); no lock is taken."""
    return Instance.objects.filter(site_id=site_id, is_leader=True).values_list("id", flat=True).first()


def leads(instance_id: str, site_id: str | None = None) -> bool:
    """Whether the instance is its site's recorded leader (of `site_id`, when given); no lock is taken."""
    leading = Instance.objects.filter(pk=instance_id, is_leader=True)
    return leading.filter(site_id=site_id).exists() if site_id is not None else leading.exists()


def _change_leader(
    *,
    site: Site,
    new: Instance | None,
    previous: Instance | None,
    reason: str,
    actor: Actor,
    notify_previous: str | None = None,
) -> LeaderChange:
    """Move leadership; the caller holds the site lock inside a transaction."""
    now = timezone.now()
    if previous is not None:
        Instance.objects.filter(pk=previous.pk).update(is_leader=False, leader_since=None)
    if new is not None:
        Instance.objects.filter(pk=new.pk).update(is_leader=True, leader_since=now)
    site.leader_term += 1
    Site.objects.filter(pk=site.pk).update(leader_term=site.leader_term)

    change = LeaderChange(
        site_id=site.pk,
        leader_id=new.pk if new else None,
        previous_leader_id=previous.pk if previous else None,
        reason=reason,
        term=site.leader_term,
    )
    audit_record(
        actor=actor,
        action="leader_assigned" if new else "leader_revoked",
        entity_type="instance",
        entity_id=change.leader_id or change.previous_leader_id or "",
        site_id=site.pk,
        instance_id=change.leader_id or change.previous_leader_id or "",
        details={
            "leader": change.leader_id,
            "previousLeader": change.previous_leader_id,
            "reason": reason,
            "leaderTerm": change.term,
        },
    )
    if new is not None:
        publish(
            group=instance_group(new.pk),
            event_type="leader_assigned",
            site_id=site.pk,
            payload={
                "instanceId": new.pk,
                "previousLeader": change.previous_leader_id,
                "reason": reason,
                "leaderTerm": change.term,
            },
        )
    if previous is not None and notify_previous:
        publish(
            group=instance_group(previous.pk),
            event_type="leader_revoked",
            site_id=site.pk,
            payload={
                "instanceId": previous.pk,
                "newLeader": change.leader_id,
                "reason": notify_previous,
                "leaderTerm": change.term,
            },
        )
    transaction.on_commit(lambda: leader_changed(change))
    logger.info(
        "leader of %s: %s → %s (%s, term %s)",
        site.pk,
        change.previous_leader_id,
        change.leader_id,
        reason,
        change.term,
        extra={"siteId": site.pk, "leaderTerm": change.term, "reason": reason},
    )
    return change


def leader_ensure(*, site_id: str, candidate_id: str, actor: Actor) -> LeaderChange | None:
    """Make the candidate leader if its site has none (on register and heartbeat)."""
    if Instance.objects.filter(site_id=site_id, is_leader=True).exists():
        return None  # the common case costs one indexed read and no lock
    with transaction.atomic():
        site = site_get_locked(site_id)
        if _current_leader(site_id) is not None:
            return None
        candidate = Instance.objects.filter(pk=candidate_id, site_id=site_id).first()
        if candidate is None or not _is_alive(candidate, timezone.now()):
            return None
        return _change_leader(site=site, new=candidate, previous=None, reason=NO_PREVIOUS_LEADER, actor=actor)


def leader_step_down(*, site_id: str, instance_id: str, actor: Actor) -> LeaderChange | None:
    """Before an instance deregisters: hand its leadership to the healthiest follower (or nobody)."""
    with transaction.atomic():
        site = site_get_locked(site_id)
        leaving = Instance.objects.filter(pk=instance_id, site_id=site_id, is_leader=True).first()
        if leaving is None:
            return None
        successor = _healthiest_follower(site_id, timezone.now(), exclude=[instance_id])
        return _change_leader(
            site=site, new=successor, previous=leaving, reason=PREVIOUS_LEADER_DEREGISTERED, actor=actor
        )


def _evaluate_site(site_id: str, actor: Actor) -> LeaderChange | None:
    with transaction.atomic():
        site = site_get_locked(site_id)
        now = timezone.now()
        leader = _current_leader(site_id)
        if leader is not None and _is_alive(leader, now):
            return None
        successor = _healthiest_follower(site_id, now)
        if leader is None:
            if successor is None:
                return None
            return _change_leader(
                site=site, new=successor, previous=None, reason=NO_PREVIOUS_LEADER, actor=actor
            )
        # The leader is past the heartbeat timeout: replace it, or leave the site without one.
        return _change_leader(
            site=site,
            new=successor,
            previous=leader,
            reason=PREVIOUS_LEADER_UNHEALTHY,
            actor=actor,
            notify_previous=HEALTH_CHECK_FAILED,
        )


def lost_socket_check_delay() -> float:
    """Seconds from the recorded close of a socket to its leader_check_lost_sockets."""
    return settings.FAILOVER_GRACE_SECONDS + LOST_SOCKET_CHECK_MARGIN_SECONDS


def _evaluate_sites(site_ids: Iterable[str], actor: Actor) -> list[LeaderChange]:
    changes = []
    for site_id in sorted(site_ids):
        try:
            change = _evaluate_site(site_id, actor)
        except NotFoundError:
            continue  # deleted meanwhile
        if change is not None:
            changes.append(change)
    return changes


def leader_check_lost_sockets(
    *, instance_ids: Iterable[str], actor: Actor | None = None
) -> list[LeaderChange]:
    """The health check of the sites led by any of these instances, run when the failover grace of
    their closed sockets ends (the consumer's timers), so that failover does not wait for the next
    periodic check.

    Stale checks are expected and change nothing: the leader reconnected or heartbeated within the
    grace, a later close started a new grace (its own check comes later), it no longer leads (replaced,
    deposed, deregistered) or is gone. Instances that lead nothing cost one query per
    LOST_SOCKET_BATCH of them and no lock (a proxy that drops every socket at once)."""
    ids = list(dict.fromkeys(instance_ids))
    site_ids: set[str] = set()
    for start in range(0, len(ids), LOST_SOCKET_BATCH):
        leading = Instance.objects.filter(pk__in=ids[start : start + LOST_SOCKET_BATCH], is_leader=True)
        site_ids.update(leading.values_list("site_id", flat=True))
    return _evaluate_sites(site_ids, actor or Actor.system("failover-check"))


def leader_health_check(*, actor: Actor | None = None) -> list[LeaderChange]:
    """Replace leaders past the heartbeat timeout; give leaderless sites with a live instance a leader."""
    actor = actor or Actor.system("leader-health-check")
    now = timezone.now()
    stale_leaders = Instance.objects.filter(is_leader=True).filter(_gone(now))
    leaderless = Site.objects.exclude(instances__is_leader=True).filter(
        instances__last_heartbeat__gte=alive_cutoff(now)
    )
    site_ids = set(stale_leaders.values_list("site_id", flat=True)) | set(
        leaderless.values_list("id", flat=True)
    )
    return _evaluate_sites(site_ids, actor)


def leader_assign(*, site_id: str, actor: Actor, instance_id: str | None = None) -> LeaderChange:
    """An operator's forced election: the named instance, or else the healthiest follower."""
    with transaction.atomic():
        site = site_get_locked(site_id)
        now = timezone.now()
        leader = _current_leader(site_id)
        if instance_id:
            new = Instance.objects.filter(pk=instance_id, site_id=site_id).first()
            if new is None:
                raise NotFoundError(f"No instance {instance_id!r} in site {site_id!r}.")
            if not _is_alive(new, now):
                raise ConflictError("instance_offline", f"Instance {instance_id!r} is offline.")
            if new.is_leader:
                raise ConflictError("already_leader", f"Instance {instance_id!r} is already the leader.")
        else:
            new = _healthiest_follower(site_id, now)
            if new is None:
                raise ConflictError("no_candidate", f"Site {site_id!r} has no live follower to elect.")
        return _change_leader(
            site=site,
            new=new,
            previous=leader,
            reason=MANUAL_ASSIGNMENT,
            actor=actor,
            notify_previous=MANUAL_ASSIGNMENT,
        )
