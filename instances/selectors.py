"""Reads of instances, and of sites with what derives from their instances: status, counts, leader.

A site's status needs its instances' liveness, so it is computed here (instances knows sites, never the
reverse); the sites API views that render it are instances/sites_api.py, fleet reads it for its
aggregates and the Site admin for its columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db.models import BigIntegerField, ExpressionWrapper, F, Prefetch, Q, QuerySet
from django.db.models.functions import Coalesce
from django.utils import timezone

from core.errors import NotFoundError
from core.timefmt import iso_z
from instances.liveness import HEALTHY, OFFLINE, alive_cutoff, liveness
from instances.models import Instance
from sites.models import Site

SITE_HEALTHY, SITE_DEGRADED, SITE_OFFLINE = "healthy", "degraded", "offline"
# What a site's status and representation read of each instance (sites_with_instances).
SITE_INSTANCE_FIELDS = (
    "id",
    "site_id",
    "hostname",
    "is_leader",
    "last_heartbeat",
    "version",
    "reported_status",
    "pod_name",
    "config_version",
    "config_version_sent",
    "inventory_version",
)


def instance_get(instance_id: str) -> Instance:
    """The instance with its site, or a 404 (NotFoundError)."""
    instance = Instance.objects.select_related("site").filter(pk=instance_id).first()
    if instance is None:
        raise NotFoundError(f"No instance {instance_id!r}.")
    return instance


def instance_representation(instance: Instance, now: datetime | None = None) -> dict:
    """GET /api/v1/instances/{id}: liveness (status) and the instance's own report are two fields."""
    return {
        "id": instance.id,
        "siteId": instance.site_id,
        "hostname": instance.hostname,
        "podName": instance.pod_name,
        "version": instance.version,
        "isLeader": instance.is_leader,
        "status": liveness(instance.last_heartbeat, now or timezone.now()),
        "reportedStatus": instance.reported_status,
        "lastHeartbeat": iso_z(instance.last_heartbeat),
        "registeredAt": iso_z(instance.registered_at),
        "leaderSince": iso_z(instance.leader_since),
        "uptime": instance.uptime,
        "inventoryVersion": instance.inventory_version,
        "configVersion": instance.config_version,
        "capabilities": instance.capabilities,
        "labels": instance.labels,
        "scrapeAddress": instance.scrape_address or None,
        "metrics": instance.metrics,
    }


def instance_by_identity(site_id: str, hostname: str, pod_name: str) -> Instance | None:
    """The instance that (siteId, hostname, podName) names, if it is registered."""
    return Instance.objects.filter(site_id=site_id, hostname=hostname, pod_name=pod_name).first()


# --- drift: an instance behind its site's config or inventory version -------------------------------
# One definition for the /metrics gauges (and so the InstanceConfigDrift / InstanceInventoryDrift
# alerts), the fleet dashboard and the instance admin: version_lags() in Python, with_version_lags() the
# same in SQL (a test holds them together). An offline instance is never drifting: it is the liveness
# alerts' (as the rules leave out instances that stopped heartbeating), and a dead one is always behind.


def version_lags(
    site_config: int, site_inventory: int, config: int | None, config_sent: int | None, inventory: int | None
) -> tuple[int | None, int | None]:
    """How many versions an instance is behind its site: (config, inventory); None is unknown.

    Config: the version the instance reports, else the one the manager last gave it (what
    configChanged is decided on, docs/protocol.md), so an instance that sends no configVersion is
    behind only until its next heartbeat answer. Inventory: only what it reports; an instance that
    never sent an inventoryVersion is unknown, not behind (an alert on it would fire for ever for an
    agent that leaves the field out, and InstanceUnhealthy already covers one that never heartbeats).
    """
    config_known = config if config is not None else config_sent
    return (
        None if config_known is None else site_config - config_known,
        None if inventory is None else site_inventory - inventory,
    )


def instance_version_lags(instance: Instance, site: Site) -> tuple[int | None, int | None]:
    """version_lags() of one instance of `site`."""
    return version_lags(
        site.config_version,
        site.inventory_version,
        instance.config_version,
        instance.config_version_sent,
        instance.inventory_version,
    )


def is_drifting(config_lag: int | None, inventory_lag: int | None, status: str) -> bool:
    """Behind its site in config or inventory, and not offline (liveness `status`)."""
    return status != OFFLINE and ((config_lag or 0) > 0 or (inventory_lag or 0) > 0)


def with_version_lags(queryset: QuerySet[Instance]) -> QuerySet[Instance]:
    """The instances annotated with config_lag and inventory_lag: version_lags() in SQL (NULL: unknown)."""
    lag = BigIntegerField()
    return queryset.annotate(
        config_lag=ExpressionWrapper(
            F("site__config_version") - Coalesce("config_version", "config_version_sent"), output_field=lag
        ),
        inventory_lag=ExpressionWrapper(
            F("site__inventory_version") - F("inventory_version"), output_field=lag
        ),
    )


def drifting_q(now: datetime | None = None) -> Q:
    """is_drifting() as a filter on a queryset from with_version_lags()."""
    return (Q(config_lag__gt=0) | Q(inventory_lag__gt=0)) & Q(last_heartbeat__gte=alive_cutoff(now))


# --- sites with their instances ---------------------------------------------------------------------


def sites_with_instances(queryset: QuerySet[Site] | None = None) -> QuerySet[Site]:
    """The sites with their instances prefetched (oldest first): one more query however many sites."""
    queryset = queryset if queryset is not None else Site.objects.all()
    instances = Instance.objects.only(*SITE_INSTANCE_FIELDS).order_by("registered_at")
    return queryset.prefetch_related(Prefetch("instances", queryset=instances))


def site_with_instances(site_id: str) -> Site:
    """One site with its instances (sites_with_instances), or a 404 (NotFoundError)."""
    site = sites_with_instances().filter(pk=site_id).first()
    if site is None:
        raise NotFoundError(f"No site {site_id!r}.")
    return site


def site_status(site: Site, instances: Iterable[Instance], now: datetime) -> tuple[str, int, str | None]:
    """(status, healthy instance count, leader id).

    healthy: a leader and at least minReplicas healthy instances, none unhealthy;
    degraded: some instance is alive but the above does not hold; offline: none is alive.
    """
    instances = list(instances)
    states = [liveness(i.last_heartbeat, now) for i in instances]
    healthy = sum(1 for state in states if state == HEALTHY)
    leader = next((i.id for i in instances if i.is_leader), None)
    if all(state == OFFLINE for state in states):
        return SITE_OFFLINE, healthy, leader
    all_well = all(
        state == HEALTHY and i.reported_status in ("healthy", "unknown")
        for i, state in zip(instances, states, strict=True)
    )
    if leader and healthy >= site.min_replicas and all_well:
        return SITE_HEALTHY, healthy, leader
    return SITE_DEGRADED, healthy, leader


def site_summary(site: Site, now: datetime | None = None) -> dict:
    """The list representation (GET /sites); the site must come from sites_with_instances()."""
    now = now or timezone.now()
    instances = list(site.instances.all())
    status, healthy, leader = site_status(site, instances, now)
    return {
        "id": site.id,
        "label": site.label,
        "description": site.description,
        "location": {"address": site.address, "latitude": site.latitude, "longitude": site.longitude},
        "status": status,
        "instanceCount": len(instances),
        "healthyInstances": healthy,
        "leaderInstanceId": leader,
        "deviceCount": site.device_count,
        "lastDiscovery": iso_z(site.last_discovery_at),
        "createdAt": iso_z(site.created_at),
    }


def site_detail(site: Site, now: datetime | None = None) -> dict:
    """GET /sites/{id}: the summary with the config, the instances and the stats."""
    now = now or timezone.now()
    body = site_summary(site, now)
    body["config"] = site.config_dict()
    body["configVersion"] = site.config_version
    body["leaderTerm"] = site.leader_term
    body["updatedAt"] = iso_z(site.updated_at)
    body["instances"] = [
        {
            "id": i.id,
            "hostname": i.hostname,
            "isLeader": i.is_leader,
            "status": liveness(i.last_heartbeat, now),
            "reportedStatus": i.reported_status,
            "lastHeartbeat": iso_z(i.last_heartbeat),
            "version": i.version,
        }
        for i in site.instances.all()
    ]
    body["stats"] = {
        "deviceCount": site.device_count,
        "agentCount": site.agent_count,
        "seedCount": site.seed_count,
        "lastDiscovery": iso_z(site.last_discovery_at),
        "inventoryVersion": site.inventory_version,
    }
    return body


def site_list(*, bound_site_id: str | None, limit: int, offset: int) -> dict:
    """GET /sites: a page of site summaries by id, and how many there are in all. A token bound to a
    site sees only that one."""
    queryset = Site.objects.all()
    if bound_site_id:
        queryset = queryset.filter(pk=bound_site_id)
    total = queryset.count()
    page = sites_with_instances(queryset.order_by("id")[offset : offset + limit])
    return {"sites": [site_summary(site) for site in page], "total": total}
