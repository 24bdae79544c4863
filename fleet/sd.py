"""Prometheus HTTP service discovery (`http_sd_configs`) from the manager: what Prometheus should scrape.

- `instance_groups`: one target group per instance that registered a scrapeAddress (its PromSNMP), live
  or not, labelled with its site, id, hostname, leadership and liveness.
- `device_groups`: one target group per device of a site, scraped through exactly one of the site's
  serving instances (liveness healthy and a scrapeAddress), chosen by rendezvous hashing
  (`Rendezvous`): the same instances give the same answer in every process, and when one instance
  stops serving only its devices move, each to the instance that ranks second for it.

Every instance of a site holds the whole site inventory (the bridge keeps PromSNMP's inventory equal to
the site's), so any serving instance can answer `GET /snmp?target=DEVICE` for any device of the site.
Reads are one query each; devices are read with a cursor, CHUNK rows at a time, and rendered as a stream.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from django.utils import timezone

from instances.liveness import HEALTHY, liveness
from instances.models import Instance
from inventory.models import Device

DEVICE_METRICS_PATH = "/snmp"  # PromSNMP's per-device endpoint: GET /snmp?target=DEVICE
INSTANCE_LABEL = "__meta_promsnmp_instance_id"  # which instance serves a device (dropped after relabeling)
CHUNK = 2000  # device rows per fetch from the cursor
_ADDRESS_IDENTITY = "addr:"  # a device without a sysName is known by its primary agent's address


@dataclass(frozen=True)
class ServingInstance:
    id: str
    scrape_address: str


def instance_groups(*, site_id: str | None = None, now: datetime | None = None) -> list[dict]:
    """GET /api/v1/sd/instances: every instance with a scrapeAddress (of one site, or all), by site and
    hostname. One query."""
    now = now or timezone.now()
    rows = Instance.objects.exclude(scrape_address="")
    if site_id is not None:
        rows = rows.filter(site_id=site_id)
    rows = rows.order_by("site_id", "hostname", "pod_name", "id").values_list(
        "id", "site_id", "hostname", "is_leader", "last_heartbeat", "scrape_address"
    )
    return [
        {
            "targets": [scrape_address],
            "labels": {
                "site": site,
                "instance_id": instance_id,
                "hostname": hostname,
                "leader": "true" if is_leader else "false",
                "status": liveness(last_heartbeat, now),
            },
        }
        for instance_id, site, hostname, is_leader, last_heartbeat, scrape_address in rows
    ]


def serving_instances(site_id: str, now: datetime | None = None) -> list[ServingInstance]:
    """The instances of a site that devices are spread over: liveness healthy and a scrapeAddress. A
    degraded instance (one missed heartbeat) already gives its devices up. One query."""
    now = now or timezone.now()
    rows = (
        Instance.objects.filter(site_id=site_id)
        .exclude(scrape_address="")
        .values_list("id", "last_heartbeat", "scrape_address")
    )
    return [
        ServingInstance(id=instance_id, scrape_address=address)
        for instance_id, last_heartbeat, address in rows
        if liveness(last_heartbeat, now) == HEALTHY
    ]


class Rendezvous:
    """Highest-random-weight hashing: a key belongs to the member whose hash of (member id, key) is
    highest. Each key has exactly one owner; removing a member moves only the keys it owned, and adding
    one takes about 1/n of the keys from the others. blake2b, not hash(): the answer must be the same in
    every process and after every restart. Ties (8-byte hashes: practically never) go to the smaller id."""

    def __init__(self, members: Iterable[ServingInstance]):
        # Each member's hash state with its id already fed in, copied per key: one update per score.
        self._members = [
            (hashlib.blake2b(member.id.encode() + b"\x00", digest_size=8), member)
            for member in sorted(members, key=lambda m: m.id)
        ]

    def __bool__(self) -> bool:
        return bool(self._members)

    def owner(self, key: str) -> ServingInstance:
        if not self._members:
            raise LookupError("No member to own the key.")
        data = key.encode()
        best, best_score = None, b""
        for seeded, member in self._members:
            state = seeded.copy()
            state.update(data)
            score = state.digest()
            if best is None or score > best_score:
                best, best_score = member, score
        return best


def device_target(sys_name: str, identity: str) -> str:
    """What PromSNMP knows a device by for GET /snmp?target=: its sysName (PromSNMP looks the target up
    by sysName), else the address the manager identifies it by (its primary agent's)."""
    return sys_name or identity.removeprefix(_ADDRESS_IDENTITY)


def device_groups(site_id: str, serving: list[ServingInstance]) -> Iterator[dict]:
    """GET /api/v1/sd/devices: one target group per device of the site (by identity), each with the
    scrape address of the instance that serves it; nothing when no instance serves. One query, read
    with a cursor CHUNK rows at a time, and the devices hashed by their id (stable for a device's life)."""
    ring = Rendezvous(serving)
    if not ring:
        return
    rows = (
        Device.objects.filter(site_id=site_id)
        .order_by("identity")
        .values_list("id", "sys_name", "identity")
        .iterator(chunk_size=CHUNK)
    )
    for device_id, sys_name, identity in rows:
        owner = ring.owner(device_id)
        target = device_target(sys_name, identity)
        yield {
            "targets": [owner.scrape_address],
            "labels": {
                "__metrics_path__": DEVICE_METRICS_PATH,
                "__param_target": target,
                INSTANCE_LABEL: owner.id,
                "site": site_id,
                "device": target,
                "device_id": device_id,
            },
        }


def json_array(items: Iterable[dict], batch: int = 500) -> Iterator[bytes]:
    """[item, item, …] written a batch of items at a time (a streaming response's chunks)."""
    yield b"["
    separator, buffer = "", []
    for item in items:
        buffer.append(separator + json.dumps(item, separators=(",", ":")))
        separator = ","
        if len(buffer) >= batch:
            yield "".join(buffer).encode()
            buffer = []
    buffer.append("]")
    yield "".join(buffer).encode()
