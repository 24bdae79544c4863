"""Reads of a site's inventory, rendered for the wire. Streams: 50,000 devices never sit in memory at once."""

from __future__ import annotations

import json
from collections.abc import Iterator

from django.db.models import Q

from core.crypto import PREFIX, key_ring
from core.errors import ApiError
from core.snmpconfig import wire_credentials
from core.timefmt import iso_z
from inventory.models import Agent, Device
from sites.models import Site

CHUNK = 2000


def require_decryptable(site: Site) -> None:
    """Before a stream starts: every secret must be under a key of the ring, or the response would
    break off halfway with a 200 already sent."""
    from discovery.models import DiscoverySeed

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
        encrypted=agent.credentials,
        secret_keys=agent.credential_keys,
        include_credentials=include_credentials,
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
