"""Reads of discovery seeds, rendered for the wire (seed endpoints and GET inventory alike)."""

from __future__ import annotations

from core.snmpconfig import wire_credentials
from core.timefmt import iso_z
from discovery.models import DiscoverySeed
from discovery.targets import parse_target


def estimated_targets(targets: list[str]) -> int:
    """Addresses the seed covers (a /24 is 256; ranges inclusive). Stored targets were validated."""
    total = 0
    for text in targets:
        try:
            total += parse_target(text).count
        except ValueError:
            continue  # not reachable through the API; a hand-edited row must not break the list
    return total


def seed_representation(seed: DiscoverySeed, *, include_credentials: bool) -> dict:
    snmp_config = wire_credentials(
        seed.snmp_config,
        encrypted=seed.credentials,
        secret_keys=seed.credential_keys,
        include_credentials=include_credentials,
    )
    return {
        "id": seed.id,
        "name": seed.name,
        "targets": seed.targets,
        "snmpConfig": snmp_config,
        "schedule": seed.schedule or None,
        "enabled": seed.enabled,
        "options": seed.options,
        "lastRun": iso_z(seed.last_run),
        "lastRunStatus": seed.last_run_status or None,
        "devicesFound": seed.devices_found,
        "estimatedTargets": estimated_targets(seed.targets),
        "createdAt": iso_z(seed.created_at),
        "updatedAt": iso_z(seed.updated_at),
    }


def site_seeds(
    site_id: str, *, include_credentials: bool, limit: int | None = None, offset: int = 0
) -> list[dict]:
    """The site's seeds, oldest first; a page of them when `limit` is given."""
    queryset = DiscoverySeed.objects.filter(site_id=site_id).order_by("created_at", "id")
    if not include_credentials:
        queryset = queryset.defer("credentials")
    queryset = queryset[offset : offset + limit] if limit is not None else queryset[offset:]
    return [seed_representation(seed, include_credentials=include_credentials) for seed in queryset]
