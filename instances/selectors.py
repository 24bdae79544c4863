from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from core.liveness import liveness
from core.timefmt import iso_z
from instances.models import Instance


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
        "metrics": instance.metrics,
    }


def instance_by_identity(site_id: str, hostname: str, pod_name: str) -> Instance | None:
    """The instance that (siteId, hostname, podName) names, if it is registered."""
    return Instance.objects.filter(site_id=site_id, hostname=hostname, pod_name=pod_name).first()
