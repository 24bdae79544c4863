"""Fleet-wide reads: one snapshot of the sites a caller may see, with their instances, and what the
fleet endpoints derive from it (health, alerts, metrics). Two queries however many sites there are;
every number comes from the same snapshot and the same `now`."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Max
from django.utils import timezone

from core.timefmt import iso_z
from discovery.models import DiscoveryRun, RunStatus
from instances.liveness import DEGRADED, HEALTHY, OFFLINE, liveness
from instances.models import Instance
from instances.selectors import (
    SITE_DEGRADED,
    SITE_HEALTHY,
    SITE_OFFLINE,
    instance_version_lags,
    is_drifting,
    site_status,
    sites_with_instances,
    version_lags,
)
from sites.models import Site

INSTANCE_STATES = (HEALTHY, DEGRADED, OFFLINE)
SITE_STATES = (SITE_HEALTHY, SITE_DEGRADED, SITE_OFFLINE)
# The spec's DiscoveryStale rule: time() - promsnmp_manager_site_last_discovery_timestamp > 172800.
DISCOVERY_STALE_AFTER = timedelta(hours=48)
CRITICAL, WARNING = "critical", "warning"
ALERT_TYPES = ("site_offline", "site_no_leader", "site_degraded", "instance_offline", "discovery_stale")


@dataclass(frozen=True)
class InstanceState:
    id: str
    hostname: str
    is_leader: bool
    status: str  # liveness: healthy, degraded, offline
    reported_status: str
    last_heartbeat: datetime | None
    # Versions behind the site (instances.selectors.version_lags; None: unknown) and whether that is drift.
    config_lag: int | None
    inventory_lag: int | None
    drifting: bool


@dataclass(frozen=True)
class SiteState:
    id: str
    status: str  # healthy, degraded, offline (instances.selectors.site_status)
    min_replicas: int
    instances: tuple[InstanceState, ...]
    healthy_instances: int
    leader_id: str | None
    config_version: int
    devices: int
    agents: int
    inventory_version: int
    discovery_enabled: bool
    last_discovery_at: datetime | None
    created_at: datetime

    @property
    def leader(self) -> InstanceState | None:
        return next((i for i in self.instances if i.id == self.leader_id), None)

    @property
    def drifting(self) -> tuple[InstanceState, ...]:
        return tuple(i for i in self.instances if i.drifting)


@dataclass(frozen=True)
class FleetState:
    now: datetime
    sites: tuple[SiteState, ...]


def _instance_state(instance: Instance, site: Site, now: datetime) -> InstanceState:
    status = liveness(instance.last_heartbeat, now)
    config_lag, inventory_lag = instance_version_lags(instance, site)
    return InstanceState(
        id=instance.id,
        hostname=instance.hostname,
        is_leader=instance.is_leader,
        status=status,
        reported_status=instance.reported_status,
        last_heartbeat=instance.last_heartbeat,
        config_lag=config_lag,
        inventory_lag=inventory_lag,
        drifting=is_drifting(config_lag, inventory_lag, status),
    )


def fleet_state(
    *, site_id: str | None = None, site_ids: Collection[str] | None = None, now: datetime | None = None
) -> FleetState:
    """Every site (only `site_id` for a token bound to it; only `site_ids` when given), ordered by id:
    two queries."""
    now = now or timezone.now()
    queryset = Site.objects.order_by("id")
    if site_id is not None:
        queryset = queryset.filter(pk=site_id)
    if site_ids is not None:
        queryset = queryset.filter(pk__in=list(site_ids))
    sites = []
    for site in sites_with_instances(queryset):
        instances = list(site.instances.all())
        status, healthy, leader = site_status(site, instances, now)
        sites.append(
            SiteState(
                id=site.id,
                status=status,
                min_replicas=site.min_replicas,
                instances=tuple(_instance_state(i, site, now) for i in instances),
                healthy_instances=healthy,
                leader_id=leader,
                config_version=site.config_version,
                devices=site.device_count,
                agents=site.agent_count,
                inventory_version=site.inventory_version,
                discovery_enabled=site.discovery_enabled,
                last_discovery_at=site.last_discovery_at,
                created_at=site.created_at,
            )
        )
    return FleetState(now=now, sites=tuple(sites))


def fleet_status(state: FleetState) -> str:
    """healthy when every site is (an empty fleet too: nothing is wrong); offline when there are sites
    and none has a live instance; degraded otherwise."""
    statuses = {site.status for site in state.sites}
    if statuses <= {SITE_HEALTHY}:
        return SITE_HEALTHY
    if statuses == {SITE_OFFLINE}:
        return SITE_OFFLINE
    return SITE_DEGRADED


def _alert(kind: str, severity: str, site: SiteState, message: str, *, instance_id=None, since=None) -> dict:
    return {
        "type": kind,
        "severity": severity,
        "siteId": site.id,
        "instanceId": instance_id,
        "message": message,
        "since": iso_z(since),
    }


def _degraded_reasons(site: SiteState) -> str:
    reasons = []
    if site.healthy_instances < site.min_replicas:
        reasons.append(f"{site.healthy_instances} healthy of minReplicas {site.min_replicas}")
    late = [i.id for i in site.instances if i.status != HEALTHY]
    if late:
        reasons.append(f"not heartbeating on time: {', '.join(late)}")
    unwell = [
        f"{i.id} ({i.reported_status})"
        for i in site.instances
        if i.reported_status not in ("healthy", "unknown")
    ]
    if unwell:
        reasons.append(f"reporting themselves not healthy: {', '.join(unwell)}")
    return "; ".join(reasons) or "not every instance is healthy"


def site_alerts(site: SiteState, now: datetime) -> list[dict]:
    """The alerts of one site, mirroring the spec's alert rules. An offline site has one alert and
    nothing else (it implies the rest, as an Alertmanager inhibition would); a site with live
    instances has at most one site-level alert (no leader, else degraded), one per offline instance,
    and discovery_stale when its discovery is enabled and 48 h old."""
    timeout = timedelta(seconds=settings.HEARTBEAT_TIMEOUT_SECONDS)
    if site.status == SITE_OFFLINE:
        beats = [i.last_heartbeat for i in site.instances if i.last_heartbeat is not None]
        if not site.instances:
            message = f"Site {site.id} has no registered instance."
        else:
            message = f"None of the {len(site.instances)} instances of site {site.id} is alive."
        return [
            _alert("site_offline", CRITICAL, site, message, since=max(beats) + timeout if beats else None)
        ]

    alerts = []
    if site.leader_id is None:
        alerts.append(_alert("site_no_leader", CRITICAL, site, f"Site {site.id} has no leader."))
    elif site.status == SITE_DEGRADED:
        alerts.append(
            _alert("site_degraded", WARNING, site, f"Site {site.id} is degraded: {_degraded_reasons(site)}.")
        )
    for instance in site.instances:
        if instance.status != OFFLINE:
            continue
        role = "leader" if instance.is_leader else "instance"
        alerts.append(
            _alert(
                "instance_offline",
                WARNING,
                site,
                f"{role.capitalize()} {instance.id} of site {site.id} missed its heartbeats "
                f"(last {iso_z(instance.last_heartbeat) or 'never'}).",
                instance_id=instance.id,
                since=instance.last_heartbeat + timeout if instance.last_heartbeat else None,
            )
        )
    if site.discovery_enabled:
        last = site.last_discovery_at or site.created_at
        if now - last > DISCOVERY_STALE_AFTER:
            ran = f"last ran {iso_z(site.last_discovery_at)}" if site.last_discovery_at else "never ran"
            alerts.append(
                _alert(
                    "discovery_stale",
                    WARNING,
                    site,
                    f"Discovery of site {site.id} {ran} (more than 48 h ago).",
                    since=last + DISCOVERY_STALE_AFTER,
                )
            )
    return alerts


def fleet_alerts(state: FleetState) -> list[dict]:
    """Critical first, then by site, type and instance."""
    alerts = [alert for site in state.sites for alert in site_alerts(site, state.now)]
    severity = {CRITICAL: 0, WARNING: 1}
    return sorted(
        alerts,
        key=lambda a: (
            severity[a["severity"]],
            a["siteId"],
            ALERT_TYPES.index(a["type"]),
            a["instanceId"] or "",
        ),
    )


def fleet_health(state: FleetState) -> dict:
    """GET /api/v1/fleet/health, in the spec's shape."""
    by_status = {status: sum(1 for site in state.sites if site.status == status) for status in SITE_STATES}
    return {
        "status": fleet_status(state),
        "timestamp": iso_z(state.now),
        "summary": {
            "totalSites": len(state.sites),
            "healthySites": by_status[SITE_HEALTHY],
            "degradedSites": by_status[SITE_DEGRADED],
            "offlineSites": by_status[SITE_OFFLINE],
            "totalInstances": sum(len(site.instances) for site in state.sites),
            "healthyInstances": sum(site.healthy_instances for site in state.sites),
            "totalDevices": sum(site.devices for site in state.sites),
            "totalAgents": sum(site.agents for site in state.sites),
        },
        "sites": [
            {"id": site.id, "status": site.status, "instances": len(site.instances), "devices": site.devices}
            for site in state.sites
        ],
        "alerts": fleet_alerts(state),
    }


def fleet_metrics(state: FleetState) -> dict:
    """GET /api/v1/fleet/metrics?format=json; the Prometheus text (fleet/metrics.py) renders this."""
    instances = [i for site in state.sites for i in site.instances]
    return {
        "timestamp": iso_z(state.now),
        "sitesTotal": len(state.sites),
        "instancesTotal": {
            status: sum(1 for i in instances if i.status == status) for status in INSTANCE_STATES
        },
        "devicesTotal": sum(site.devices for site in state.sites),
        "agentsTotal": sum(site.agents for site in state.sites),
        "sites": [
            {
                "id": site.id,
                "status": site.status,
                "instances": len(site.instances),
                "healthyInstances": site.healthy_instances,
                "devices": site.devices,
                "agents": site.agents,
                "hasLeader": site.leader_id is not None,
                "inventoryVersion": site.inventory_version,
            }
            for site in state.sites
        ],
    }


@dataclass(frozen=True)
class ManagerReading:
    instances: list[tuple]  # (site id, instance id, is leader, last heartbeat)
    sites: list[tuple]  # (site id, last discovery)
    # (site id, instance id, config version lag, inventory version lag or None): see version_lags().
    version_lags: list[tuple]
    timed_out: list[tuple]  # (site id, when its latest timed-out discovery run ended)


def manager_reading() -> ManagerReading:
    """What the manager's /metrics collector exposes, read at scrape time: three queries. (Open sockets
    are counted by the servers that hold them: instances.consumers.)"""
    rows = Instance.objects.order_by("site_id", "id").values_list(
        "site_id",
        "id",
        "is_leader",
        "last_heartbeat",
        "site__config_version",
        "site__inventory_version",
        "config_version",
        "config_version_sent",
        "inventory_version",
    )
    instances, lags = [], []
    for site_id, instance_id, is_leader, last_heartbeat, *versions in rows:
        instances.append((site_id, instance_id, is_leader, last_heartbeat))
        lags.append((site_id, instance_id, *version_lags(*versions)))
    sites = list(Site.objects.order_by("id").values_list("id", "last_discovery_at"))
    timed_out = list(
        DiscoveryRun.objects.filter(status=RunStatus.TIMED_OUT, completed_at__isnull=False)
        .values_list("site_id")
        .annotate(last=Max("completed_at"))
        .order_by("site_id")
    )
    return ManagerReading(instances=instances, sites=sites, version_lags=lags, timed_out=timed_out)
