"""Reads of a site's inventory (devices with their agents, discovery seeds, the change log), rendered for
the wire. Streams: 50,000 devices never sit in memory at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from django.db.models import Q

from core.crypto import PREFIX, decrypt_json, key_ring
from core.errors import ApiError, NotFoundError
from core.timefmt import iso_z
from inventory.models import Agent, Device, DiscoverySeed, InventoryChange
from sites.models import Site
from snmp.credentials import masked
from snmp.targets import estimated_targets

CHUNK = 2000


def wire_credentials(
    plain: dict[str, Any], *, encrypted: str | None, secret_keys: list[str]
) -> dict[str, Any]:
    """The wire form of stored credentials (an agent's, a seed's snmpConfig): given the ciphertext, the
    secrets decrypted (a caller who may see them: includeCredentials); given None, masked.

    Callers read the ciphertext only when they pass it (`row.credentials if include_credentials else
    None`): reads without credentials defer that column, and touching a deferred field costs one query
    per row (issue 12: one per agent in GET inventory)."""
    if encrypted is not None:
        return {**plain, **decrypt_json(encrypted)}
    return masked(plain, secret_keys)


def require_decryptable(site: Site) -> None:
    """Before a stream starts: every secret must be under a key of the ring, or the response would
    break off halfway with a 200 already sent."""
    known = Q()
    for key_id in key_ring().keys:
        known |= Q(credentials__startswith=f"{PREFIX}:{key_id}:")
    if (
        Agent.objects.filter(device__site=site).exclude(known).exists()
        or DiscoverySeed.objects.filter(site=site).exclude(known).exists()
    ):
        raise ApiError(
            503,
            "credentials_unavailable",
            "Some SNMP secrets are under a key that is not in FIELD_ENCRYPTION_KEYS; ask without "
            "includeCredentials, or restore the key.",
        )


def agent_representation(agent: Agent, *, include_credentials: bool) -> dict:
    credentials = wire_credentials(
        agent.config,
        encrypted=agent.credentials if include_credentials else None,
        secret_keys=agent.credential_keys,
    )
    return {
        "id": agent.id,
        "address": agent.address,
        "port": agent.port,
        **credentials,
        "isPrimary": agent.is_primary,
    }


def device_representation(device: Device, agents: list[Agent], *, include_credentials: bool) -> dict:
    return {
        "id": device.id,
        "sysName": device.sys_name or None,
        "sysDescr": device.sys_descr or None,
        "sysContact": device.sys_contact or None,
        "sysLocation": device.sys_location or None,
        "sysObjectId": device.sys_object_id or None,
        "agents": [agent_representation(a, include_credentials=include_credentials) for a in agents],
        "interfaces": device.interfaces,
        "discoveredAt": iso_z(device.discovered_at),
        "lastSeen": iso_z(device.last_seen),
        "discoveredBy": device.discovered_by or None,
        "metadata": device.metadata,
    }


def iter_devices(
    site: Site,
    *,
    include_credentials: bool,
    device_ids: list[str] | None = None,
    changed_since: int | None = None,
) -> Iterator[dict]:
    """Devices in id order, CHUNK at a time (keyset pagination: no OFFSET, no full load)."""
    queryset = Device.objects.filter(site=site).order_by("id")
    if device_ids is not None:
        queryset = queryset.filter(id__in=device_ids)
    if changed_since is not None:
        queryset = queryset.filter(changed_version__gt=changed_since)
    agent_fields = ["id", "device_id", "address", "port", "config", "credential_keys", "is_primary"]
    if include_credentials:
        agent_fields.append("credentials")
    last_id = ""
    while True:
        chunk = list(queryset.filter(id__gt=last_id)[:CHUNK])
        if not chunk:
            return
        by_device: dict[str, list[Agent]] = {device.id: [] for device in chunk}
        agents = Agent.objects.filter(device_id__in=list(by_device)).only(*agent_fields)
        for agent in agents.order_by("device_id", "-is_primary", "address", "port"):
            by_device[agent.device_id].append(agent)
        for device in chunk:
            yield device_representation(device, by_device[device.id], include_credentials=include_credentials)
        last_id = chunk[-1].id


def stream_json_document(head: dict, lists: dict[str, Iterator[dict] | list]) -> Iterator[bytes]:
    """{…head, "name": [items…], …} written piece by piece."""
    opening = json.dumps(head, separators=(",", ":"))[:-1]
    yield opening.encode()
    first_key = not head
    for name, items in lists.items():
        yield (("" if first_key else ",") + json.dumps(name) + ":[").encode()
        first_key = False
        separator = ""
        buffer: list[str] = []
        for item in items:
            buffer.append(separator + json.dumps(item, separators=(",", ":")))
            separator = ","
            if len(buffer) >= 500:
                yield "".join(buffer).encode()
                buffer = []
        buffer.append("]")
        yield "".join(buffer).encode()
    yield b"}"


def removed_device_ids_since(site: Site, since: int) -> list[str]:
    """The ids of the devices removed after version `since`, oldest change first (changes?since=N)."""
    removed: list[str] = []
    for ids in (
        InventoryChange.objects.filter(site=site, version__gt=since)
        .order_by("version")
        .values_list("removed_ids", flat=True)
    ):
        removed.extend(ids)
    return removed


# --- discovery seeds (the seed endpoints and GET inventory alike) -----------------------------------


def seed_representation(seed: DiscoverySeed, *, include_credentials: bool) -> dict:
    snmp_config = wire_credentials(
        seed.snmp_config,
        encrypted=seed.credentials if include_credentials else None,
        secret_keys=seed.credential_keys,
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


def site_seed_count(site_id: str) -> int:
    return DiscoverySeed.objects.filter(site_id=site_id).count()


def seed_get(site_id: str, seed_id: str) -> DiscoverySeed:
    """The seed of the site, or NotFoundError."""
    seed = DiscoverySeed.objects.filter(site_id=site_id, pk=seed_id).first()
    if seed is None:
        raise NotFoundError(f"No discovery seed {seed_id!r} in site {site_id!r}.")
    return seed


def seed_ids_by_reference(site_id: str, references: list[str]) -> list[str]:
    """Seed ids for references to the site's seeds by id or by name (unique in a site), in the order
    given; a reference that is neither comes back as it is, for the service it goes to to refuse."""
    found = DiscoverySeed.objects.filter(site_id=site_id).filter(
        Q(pk__in=references) | Q(name__in=references)
    )
    ids, names = set(), {}
    for seed_id, name in found.values_list("id", "name"):
        ids.add(seed_id)
        names[name] = seed_id
    return [reference if reference in ids else names.get(reference, reference) for reference in references]
