"""Instance lifecycle: register, heartbeat, deregister. Leadership itself is election.py's."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from django.db import connection, transaction
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed

from core.audit import Actor, audit_record
from core.authentication import live_tokens, token_lookup, token_principal, token_uses_flush
from core.db import prepared_cursor
from core.errors import NotFoundError
from core.events import end_sessions, instance_group
from core.hooks import Hook
from core.ids import new_id
from core.models import Scope
from core.permissions import enrolment_refused
from core.services import instance_tokens_delete, token_create
from instances import election
from instances.models import Instance, ReportedStatus
from instances.selectors import instance_get
from sites.models import Site
from sites.services import site_get_locked

logger = logging.getLogger("promsnmp.instances")


@dataclass(frozen=True)
class HeartbeatResult:
    """What the heartbeat answers: the instance's leadership and its site's term and versions, as one
    snapshot (never a new term with the leadership before it, or the reverse)."""

    site_id: str
    is_leader: bool
    leader_term: int
    config_version: int  # the site's
    inventory_version: int  # the site's
    config_changed: bool


@dataclass(frozen=True)
class Enrollment:
    instance: Instance
    site: Site
    instance_token: str  # plaintext, shown once: the instance's own credential


@dataclass(frozen=True)
class DeregisterResult:
    was_leader: bool
    new_leader_id: str | None


@transaction.atomic
def instance_register(
    *,
    actor: Actor,
    site_id: str,
    hostname: str,
    version: str = "",
    pod_name: str = "",
    capabilities: list[str] | None = None,
    labels: dict[str, str] | None = None,
    scrape_address: str = "",
) -> tuple[Instance, Site]:
    """Register (or re-register) an instance; it may become its site's leader.

    The same (siteId, hostname, podName) reuses the existing instance. Registration counts as the
    first heartbeat.
    """
    site = site_get_locked(site_id)  # serialises registrations of a site
    now = timezone.now()
    instance = Instance.objects.filter(site=site, hostname=hostname, pod_name=pod_name).first()
    created = instance is None
    if created:
        instance = Instance(id=new_id("inst"), site=site, hostname=hostname, pod_name=pod_name)
    instance.version = version
    instance.capabilities = capabilities or []
    instance.labels = labels or {}
    instance.scrape_address = scrape_address
    instance.last_heartbeat = now
    instance.reported_status = ReportedStatus.STARTING if created else instance.reported_status
    # A (re)starting instance takes the config from this response: forget what it reported before.
    instance.config_version = None
    instance.config_version_sent = site.config_version
    instance.save()

    audit_record(
        actor=actor,
        action="instance_registered" if created else "instance_reregistered",
        entity_type="instance",
        entity_id=instance.id,
        site_id=site.id,
        instance_id=instance.id,
        details={"hostname": hostname, "podName": pod_name, "version": version},
    )
    election.leader_ensure(site_id=site.id, candidate_id=instance.id, actor=actor)
    instance.refresh_from_db()
    site.refresh_from_db()
    return instance, site


@transaction.atomic
def instance_enroll(*, actor: Actor, site_id: str, hostname: str, **details: Any) -> Enrollment:
    """Register, and issue the instance a token of its own (Elastic Fleet's enrollment token → agent
    key): good for this one instance only. Its earlier ones are withdrawn, and their sockets closed: a
    re-registering instance is a new process, and a credential should not outlive its holder."""
    instance, site = instance_register(actor=actor, site_id=site_id, hostname=hostname, **details)
    instance_tokens_delete(instance_id=instance.id)
    _, plaintext = token_create(
        actor=actor,
        name=f"instance {instance.id} ({hostname})"[:255],
        scopes=[Scope.INSTANCE],
        site_id=site.id,
        instance_id=instance.id,
    )
    return Enrollment(instance=instance, site=site, instance_token=plaintext)


class _Beat(NamedTuple):
    """The instance and its site as one heartbeat found them."""

    site_id: str
    is_leader: bool
    config_version: int | None  # the last the instance reported
    config_version_sent: int | None  # the last the manager handed it
    leader_term: int
    site_config_version: int
    inventory_version: int
    site_has_leader: bool


# One statement for the common heartbeat, on PostgreSQL and SQLite (3.35+) alike; a field the heartbeat
# leaves out (NULL) keeps its value. The site's fields come from scalar subqueries, since SQLite's RETURNING
# may not name the tables of an UPDATE … FROM. isLeader does too: on PostgreSQL a subquery reads the
# statement's snapshot, while the row's own columns are its latest version (re-read after waiting for a
# lock), so an election committing while the UPDATE waits on the instance's row would otherwise pair its
# new isLeader with the term before it. Whether the site has a leader at all decides the rare path.
HEARTBEAT_SQL = """
UPDATE instances SET
    last_heartbeat = %s,
    reported_status = %s,
    uptime = COALESCE(%s, uptime),
    inventory_version = COALESCE(%s, inventory_version),
    config_version = COALESCE(%s, config_version),
    metrics = COALESCE(%s, metrics)
WHERE id = %s AND site_id = COALESCE(%s, site_id)
RETURNING
    site_id,
    (SELECT i.is_leader FROM instances i WHERE i.id = instances.id),
    config_version,
    config_version_sent,
    (SELECT s.leader_term FROM sites s WHERE s.id = instances.site_id),
    (SELECT s.config_version FROM sites s WHERE s.id = instances.site_id),
    (SELECT s.inventory_version FROM sites s WHERE s.id = instances.site_id),
    EXISTS (SELECT 1 FROM instances l WHERE l.site_id = instances.site_id AND l.is_leader)
"""


def _heartbeat_write(instance_id: str, site_id: str | None, values: dict[str, Any]) -> _Beat | None:
    """HEARTBEAT_SQL, in autocommit: the instance's row, and what the answer needs of it and its site."""
    fields = ("last_heartbeat", "reported_status", "uptime", "inventory_version", "config_version", "metrics")
    params = [
        None
        if values.get(name) is None
        else Instance._meta.get_field(name).get_db_prep_value(values[name], connection)
        for name in fields
    ]
    with prepared_cursor() as cursor:  # PostgreSQL plans it once per connection, not at every heartbeat
        cursor.execute(HEARTBEAT_SQL, [*params, instance_id, site_id])
        row = cursor.fetchone()
    if row is None:
        return None
    site, is_leader, reported, sent, term, config_version, inventory_version, has_leader = row
    return _Beat(
        site, bool(is_leader), reported, sent, term, config_version, inventory_version, bool(has_leader)
    )


def _heartbeat_read(instance_id: str) -> _Beat | None:
    """The same as _heartbeat_write answers, read in one statement (after a leadership change)."""
    row = (
        Instance.objects.filter(pk=instance_id)
        .values_list(
            "site_id",
            "is_leader",
            "config_version",
            "config_version_sent",
            "site__leader_term",
            "site__config_version",
            "site__inventory_version",
        )
        .first()
    )
    return None if row is None else _Beat(*row, site_has_leader=True)


def instance_heartbeat(
    *,
    actor: Actor,
    instance_id: str,
    status: str,
    uptime: int | None = None,
    inventory_version: int | None = None,
    config_version: int | None = None,
    metrics: dict[str, Any] | None = None,
    site_id: str | None = None,
) -> HeartbeatResult:
    """Record a heartbeat; answer leadership, term and versions. `site_id`: only an instance of that site
    (NotFoundError otherwise, as for an unknown instance).

    The common heartbeat is one UPDATE … RETURNING in autocommit: no transaction, no lock but the row's own.
    Only a site with no leader (the election), and a config change not yet handed to an instance that
    reports no configVersion, cost more statements.
    """
    beat = _heartbeat_write(
        instance_id,
        site_id,
        {
            "last_heartbeat": timezone.now(),
            "reported_status": status,
            "uptime": uptime,
            "inventory_version": inventory_version,
            "config_version": config_version,
            "metrics": metrics,
        },
    )
    if beat is None:
        raise NotFoundError(f"No instance {instance_id!r}; register again.")
    if not beat.site_has_leader:
        # A leaderless site gets this live instance as leader; then leadership and term are read again, in
        # one statement (the instance may have been deregistered meanwhile).
        election.leader_ensure(site_id=beat.site_id, candidate_id=instance_id, actor=actor)
        beat = _heartbeat_read(instance_id)
        if beat is None:
            raise NotFoundError(f"No instance {instance_id!r}; register again.")
    if beat.config_version is not None:
        # It says which config it runs (now or in an earlier heartbeat): changed until it reports the current.
        config_changed = beat.config_version < beat.site_config_version
    else:
        # It reports none (the spec's heartbeat body): compare with the last version it was given, and this
        # answer gives it the current one, so it is told once.
        known = beat.config_version_sent
        config_changed = known is None or known < beat.site_config_version
        if config_changed:
            Instance.objects.filter(pk=instance_id).update(config_version_sent=beat.site_config_version)
    return HeartbeatResult(
        site_id=beat.site_id,
        is_leader=beat.is_leader,
        leader_term=beat.leader_term,
        config_version=beat.site_config_version,
        inventory_version=beat.inventory_version,
        config_changed=config_changed,
    )


@transaction.atomic
def instance_deregister(*, actor: Actor, instance_id: str) -> DeregisterResult:
    instance = instance_get(instance_id)
    site_id = instance.site_id
    change = election.leader_step_down(site_id=site_id, instance_id=instance_id, actor=actor)
    Instance.objects.filter(pk=instance_id).delete()
    # Its sockets learn why first (messages go out in order); then its own tokens go.
    end_sessions(
        group=instance_group(instance_id),
        code=4403,
        error="deregistered",
        detail=f"Instance {instance_id} was deregistered; register again to come back.",
    )
    instance_tokens_delete(instance_id=instance_id)
    audit_record(
        actor=actor,
        action="instance_deregistered",
        entity_type="instance",
        entity_id=instance_id,
        site_id=site_id,
        instance_id=instance_id,
        details={"hostname": instance.hostname, "wasLeader": change is not None},
    )
    return DeregisterResult(was_leader=change is not None, new_leader_id=change.leader_id if change else None)


@dataclass(frozen=True)
class SocketGrant:
    instance_id: str
    site_id: str
    token_id: str
    token_expires_at: datetime | None
    site_event_seq: int  # the site's last event number when the socket opened


class SocketRefused(Exception):
    """Why a socket may not open: close code 4401 (bad token) or 4403 (wrong site or instance)."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def socket_authorize(*, token: str, instance_id: str) -> SocketGrant:
    """An instance token of that instance's site (or unbound), or an admin token."""
    if not token:
        raise SocketRefused(4401, "A token is required (?token= or Authorization: Bearer).")
    try:
        api_token = token_lookup(token)
    except AuthenticationFailed as exc:
        raise SocketRefused(4401, str(exc.detail)) from exc
    token_uses_flush()  # a socket server may serve no HTTP request that would write the token's last use
    scopes = set(api_token.scopes)
    if Scope.ADMIN not in scopes and Scope.INSTANCE not in scopes:
        raise SocketRefused(4403, "The event socket needs an instance or admin token.")
    instance = (
        Instance.objects.filter(pk=instance_id).select_related("site").only("id", "site__event_seq").first()
        if instance_id
        else None
    )
    if instance is None:
        raise SocketRefused(4403, f"No instance {instance_id!r}; register first.")
    if api_token.site_id and api_token.site_id != instance.site_id:
        raise SocketRefused(4403, f"This token is bound to site {api_token.site_id!r}.")
    if api_token.instance_id and api_token.instance_id != instance.id:
        raise SocketRefused(4403, "This token belongs to another instance.")
    if refused := enrolment_refused(token_principal(api_token, None), instance.site_id):
        raise SocketRefused(4403, refused)
    return SocketGrant(
        instance_id=instance.id,
        site_id=instance.site_id,
        token_id=api_token.id,
        token_expires_at=api_token.expires_at,
        site_event_seq=instance.site.event_seq,
    )


# Called with the instance id after an instance's event socket opened (and joined its groups), so that
# what was sent while it had none can be sent again. Apps subscribe in ready(), so instances imports
# none of them. A failing subscriber is logged; the socket stays open.
socket_opened: Hook[[str]] = Hook("socket_opened")


def instance_socket_opened(*, instance_id: str) -> datetime:
    """A socket opened: a sign of life, and it ends any failover grace period. Returns when."""
    now = timezone.now()
    if Instance.objects.filter(pk=instance_id).update(socket_connected_at=now, last_heartbeat=now):
        transaction.on_commit(lambda: socket_opened(instance_id))
    return now


def instance_socket_closed(*, instance_id: str, opened_at: datetime | None = None) -> None:
    """A socket closed without a deregister: the failover grace period starts (instances/election.py),
    unless a newer socket of the instance opened meanwhile (a reconnect that beat the old close)."""
    rows = Instance.objects.filter(pk=instance_id)
    if opened_at is not None:
        rows = rows.filter(socket_connected_at__lte=opened_at)
    rows.update(socket_disconnected_at=timezone.now())


class SessionEnded(Exception):
    """The socket's session is over: its token no longer authenticates, or its instance is gone."""

    def __init__(self, code: int, error: str, detail: str):
        super().__init__(detail)
        self.code, self.error, self.detail = code, error, detail


def instance_seen(*, instance_id: str, token_id: str) -> None:
    """A ping on the socket is a sign of life, like a heartbeat, while the token the socket was opened
    with still authenticates; else (or when the instance is gone) SessionEnded, and nothing is moved."""
    if not live_tokens().filter(pk=token_id).exists():
        raise SessionEnded(4401, "token_invalid", "This socket's token is revoked or expired.")
    if not Instance.objects.filter(pk=instance_id).update(last_heartbeat=timezone.now()):
        raise SessionEnded(4403, "deregistered", f"Instance {instance_id} is gone; register again.")
