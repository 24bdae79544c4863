"""Reads of sites with what is derived from their instances: status, counts, leader."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.conf import settings
from django.db.models import Prefetch, QuerySet
from django.utils import timezone

from core.errors import NotFoundError
from core.liveness import HEALTHY, OFFLINE, liveness
from core.timefmt import iso_z
from sites.models import Site

SITE_HEALTHY, SITE_DEGRADED, SITE_OFFLINE = "healthy", "degraded", "offline"
INSTANCE_FIELDS = ("id", "site_id", "hostname", "is_leader", "last_heartbeat", "version", "reported_status")


def site_get(site_id: str) -> Site:
    """The site, or a 404 (NotFoundError) for every API that takes a site id in its path."""
    site = Site.objects.filter(pk=site_id).first()
    if site is None:
        raise NotFoundError(f"No site {site_id!r}.")
    return site


def sites_with_instances(queryset: QuerySet[Site] | None = None) -> QuerySet[Site]:
    queryset = queryset if queryset is not None else Site.objects.all()
    related = Site._meta.get_field("instances").related_model
    return queryset.prefetch_related(
        Prefetch("instances", queryset=related.objects.only(*INSTANCE_FIELDS).order_by("registered_at"))
    )


def site_status(site: Site, instances: Iterable, now: datetime) -> tuple[str, int, str | None]:
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


def instance_config(site: Site) -> dict:
    """The configuration as an instance sees it (register response, GET /sites/{id}/config)."""
    return {
        "discoveryEnabled": site.discovery_enabled,
        "discoveryCron": site.discovery_cron,
        "discoveryTimezone": site.timezone,
        "collectionInterval": site.collection_interval,
        "cacheExpiration": site.cache_expiration,
        "cacheMaxEntries": site.cache_max_entries,
        "heartbeatInterval": settings.HEARTBEAT_INTERVAL_SECONDS * 1000,
    }


def site_requires_instance_tokens(site_id: str) -> bool:
    """Whether the site's config turns enrolment tokens into "register only" (requireInstanceTokens)."""
    return Site.objects.filter(pk=site_id, require_instance_tokens=True).exists()
