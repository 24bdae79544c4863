"""Reads of a site's inventory (devices with their agents, discovery seeds, the change log), rendered for
the wire. Streams: 50,000 devices never sit in memory at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, F, Func, Q, TextField
from django.db.models.functions import Cast

from core.crypto import PREFIX, decrypt_json, key_ring
from core.errors import ApiError, NotFoundError
from core.timefmt import iso_z
from inventory.models import Agent, Device, DiscoverySeed, InventoryChange
from sites.models import Site
from snmp.credentials import masked
from snmp.targets import estimated_targets

CHUNK = 2000
_COMPACT = (",", ":")
PIECE = 64 * 1024


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


# The plain columns iter_devices reads, as tuples: building 20,000 model instances was a fifth of a
# 10,000-device GET (issue 12 §4). JSON columns and timestamps follow them (_json_text, _wire_time).
_DEVICE_COLUMNS = (
    "id",
    "sys_name",
    "sys_descr",
    "sys_contact",
    "sys_location",
    "sys_object_id",
    "interfaces",
    "discovered_by",
)
_AGENT_COLUMNS = ("device_id", "id", "address", "port", "is_primary")
_EPOCH = datetime(1970, 1, 1)


class _EpochSecond(Func):
    """A timestamp as whole seconds since 1970 (PostgreSQL): an integer loads in C, while Django's
    timestamptz loader is Python and was a fifth of a 10,000-device GET; iso_z keeps only the second."""

    template = "FLOOR(EXTRACT(EPOCH FROM %(expressions)s))::bigint"
    output_field = BigIntegerField()


def _wire_time(column: str) -> F | Func:
    return _EpochSecond(F(column)) if connection.vendor == "postgresql" else F(column)


def _json_text(column: str) -> Cast:
    """A JSON column as its text: decoded here, once per distinct text where it can be (Django's
    converter decoded every row's)."""
    return Cast(column, output_field=TextField())


def _iso_z_of(value: int | datetime | None) -> str | None:
    """iso_z of a timestamp as _wire_time read it."""
    if isinstance(value, int):
        return (_EPOCH + timedelta(seconds=value)).isoformat() + "Z"
    return iso_z(value)


def iter_devices(
    site: Site,
    *,
    include_credentials: bool,
    device_ids: list[str] | None = None,
    changed_since: int | None = None,
) -> Iterator[dict]:
    """Devices in their wire form, in id order, CHUNK at a time (keyset pagination: no OFFSET, no full
    load).

    A chunk's agents are found by the same filters on their devices plus the chunk's id range (the
    chunk is every matching device in that range), not by an IN list of 2,000 ids."""
    devices = Device.objects.filter(site=site).order_by("id")
    agents = Agent.objects.filter(device__site=site).order_by("device_id", "-is_primary", "address", "port")
    if device_ids is not None:
        devices = devices.filter(id__in=device_ids)
        agents = agents.filter(device_id__in=device_ids)
    if changed_since is not None:
        devices = devices.filter(changed_version__gt=changed_since)
        agents = agents.filter(device__changed_version__gt=changed_since)
    agent_columns = (*_AGENT_COLUMNS, _json_text("config"), _json_text("credential_keys"))
    if include_credentials:
        agent_columns = (*agent_columns, "credentials")
    columns = (
        *_DEVICE_COLUMNS,
        _json_text("metadata"),
        _wire_time("discovered_at"),
        _wire_time("last_seen"),
    )
    # A change set gives its devices one lastSeen, and agents share a few configs: each distinct value
    # is converted once. The decoded configs and key lists stay in here (the wire form copies them).
    timestamps: dict[int | datetime | None, str | None] = {}
    decoded: dict[str, Any] = {}

    def iso(value: int | datetime | None) -> str | None:
        text = timestamps.get(value)
        if text is None:
            if len(timestamps) > 4096:
                timestamps.clear()
            text = timestamps[value] = _iso_z_of(value)
        return text

    def shared(text: str) -> Any:
        value = decoded.get(text)
        if value is None:
            if len(decoded) > 4096:
                decoded.clear()
            value = decoded[text] = json.loads(text)
        return value

    last_id = ""
    while True:
        chunk = list(devices.filter(id__gt=last_id).values_list(*columns)[:CHUNK])
        if not chunk:
            return
        by_device: dict[str, list[dict]] = {row[0]: [] for row in chunk}
        rows = agents.filter(device_id__gte=chunk[0][0], device_id__lte=chunk[-1][0]).values_list(
            *agent_columns
        )
        for device_id, agent_id, address, port, is_primary, config, secret_keys, *encrypted in rows:
            credentials = wire_credentials(
                shared(config), encrypted=encrypted[0] if encrypted else None, secret_keys=shared(secret_keys)
            )
            by_device[device_id].append(
                {"id": agent_id, "address": address, "port": port, **credentials, "isPrimary": is_primary}
            )
        for (
            device_id,
            sys_name,
            sys_descr,
            sys_contact,
            sys_location,
            sys_object_id,
            interfaces,
            discovered_by,
            metadata,
            discovered_at,
            last_seen,
        ) in chunk:  # metadata is handed out: a dict of its own per device ("{}" the common one)
            yield {
                "id": device_id,
                "sysName": sys_name or None,
                "sysDescr": sys_descr or None,
                "sysContact": sys_contact or None,
                "sysLocation": sys_location or None,
                "sysObjectId": sys_object_id or None,
                "agents": by_device[device_id],
                "interfaces": interfaces,
                "discoveredAt": iso(discovered_at),
                "lastSeen": iso(last_seen),
                "discoveredBy": discovered_by or None,
                "metadata": {} if metadata == "{}" else json.loads(metadata),
            }
        if len(chunk) < CHUNK:
            return  # the last chunk: no query for an empty one
        last_id = chunk[-1][0]


def stream_json_document(head: dict, lists: dict[str, Iterator[dict] | list]) -> Iterator[bytes]:
    """{…head, "name": [items…], …} written piece by piece, in pieces of at least PIECE bytes: under
    daphne each piece is a hop between threads and a write, and a small document is one piece."""
    pending: list[str] = []
    size = 0
    for text in _json_parts(head, lists):
        pending.append(text)
        size += len(text)
        if size >= PIECE:
            yield "".join(pending).encode()
            pending, size = [], 0
    yield "".join(pending).encode()


def _json_parts(head: dict, lists: dict[str, Iterator[dict] | list]) -> Iterator[str]:
    """The document's text in order; items are encoded 500 at a time, by one json.dumps of their list
    (one call per item was a sixth of a large GET)."""
    yield json.dumps(head, separators=_COMPACT)[:-1]
    first_key = not head
    for name, items in lists.items():
        yield ("" if first_key else ",") + json.dumps(name) + ":["
        first_key = False
        separator, batch = "", []
        for item in items:
            batch.append(item)
            if len(batch) >= 500:
                yield separator + json.dumps(batch, separators=_COMPACT)[1:-1]
                separator, batch = ",", []
        rest = json.dumps(batch, separators=_COMPACT)[1:-1]
        yield (separator if rest else "") + rest + "]"
    yield "}"


def removed_device_ids_since(site: Site, since: int) -> list[str] | None:
    """The ids of the devices removed after version `since`, oldest change first (changes?since=N); None
    when the change log cannot answer: `since` is ahead of the site, or older than the log reaches
    (versioning.changes_floor). Both in one query: the log holds every version from its oldest to the
    current one (a row per change set, pruned from the oldest), so it reaches `since` when it holds
    since+1."""
    if since > site.inventory_version:
        return None
    rows = list(
        InventoryChange.objects.filter(site=site, version__gt=since)
        .order_by("version")
        .values_list("version", "removed_ids")
    )
    if since < site.inventory_version and (not rows or rows[0][0] != since + 1):
        return None
    return [device_id for _, ids in rows for device_id in ids]


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
