"""The demo fleet: the spec's three example sites, their discovery seeds and the devices that answer in
them on loopback addresses (v2c and v3), with generated sites after them when more are asked for; and
`demo_fleet_create`, which puts them into the database through the services, with the API's own rules.

Two users: `make demo` (config/demo.py) plays the devices with snmpd and lets discovery find them, so it
creates sites and seeds only; `manage.py seed_demo` has no snmpd and no agents, so it writes the devices
too, as if discovered, for an admin to try. Both can run again: what is there is kept, what is missing
is added (inventory_import's addOnly: no duplicates, no new inventory version when nothing is added).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.audit import Actor
from core.errors import InvalidInput
from inventory.seeds import parse_seed
from inventory.services import inventory_import, parse_devices
from sites.api import SiteIn, model_values
from sites.models import Site
from sites.services import site_create

# The spec's example credentials (its "Add Devices" and "Create Discovery Seed" bodies).
V2C = {"version": 2, "readCommunity": "public123"}
V3 = {
    "version": 3,
    "securityName": "monitor",
    "securityLevel": "authPriv",
    "authProtocol": "SHA256",
    "authPassphrase": "authpass123",
    "privProtocol": "AES256",
    "privPassphrase": "privpass123",
}
# Short SNMP waits: every device is on loopback. Scans stay within the seed (a /29: 8 addresses).
SEED_OPTIONS = {"timeout": 1500, "retries": 1, "maxConcurrent": 50}
CONTACT = "noc@example.com"


@dataclass(frozen=True)
class Device:
    """One snmpd: a device of a seed, answering v2c (V2C) or v3 (V3) only."""

    sys_name: str
    address: str
    sys_descr: str
    sys_location: str
    snmp: dict[str, Any]


@dataclass(frozen=True)
class Seed:
    name: str
    targets: tuple[str, ...]
    snmp: dict[str, Any]
    devices: tuple[Device, ...]

    def body(self, port: int) -> dict[str, Any]:
        """As POST /api/v1/sites/{siteId}/discovery-seeds takes it (no schedule: the site's cron runs it)."""
        return {
            "name": self.name,
            "targets": list(self.targets),
            "snmpConfig": self.snmp,
            "enabled": True,
            "options": {**SEED_OPTIONS, "port": port},
        }


@dataclass(frozen=True)
class DemoSite:
    body: dict[str, Any]  # as POST /api/v1/sites takes it: the spec's examples
    agents: tuple[str, ...]  # the hostnames of its reference agents
    seeds: tuple[Seed, ...]

    @property
    def id(self) -> str:
        return self.body["id"]

    @property
    def devices(self) -> tuple[Device, ...]:
        return tuple(device for seed in self.seeds for device in seed.devices)


SITES = (
    DemoSite(
        body={
            "id": "chicago-pop-01",
            "label": "Chicago POP",
            "description": "Primary aggregation point",
            "location": {
                "address": "350 E Cermak Rd, Chicago, IL",
                "latitude": 41.853742,
                "longitude": -87.618805,
            },
            "config": {
                "timezone": "America/Chicago",
                "minReplicas": 1,
                "discoveryEnabled": True,
                "discoveryCron": "0 0 2 * * *",
            },
        },
        agents=("promsnmp-chicago-1",),
        seeds=(
            Seed(
                "Core Network",
                ("127.0.1.0/29",),
                V2C,
                (
                    Device(
                        "core-rtr-01.chicago",
                        "127.0.1.1",
                        "Cisco IOS XR Software, Version 7.3.2",
                        "Chicago POP, Rack A1",
                        V2C,
                    ),
                    Device(
                        "access-sw-15.chicago",
                        "127.0.1.2",
                        "Cisco Catalyst 9300",
                        "Chicago POP, Rack B3",
                        V2C,
                    ),
                ),
            ),
        ),
    ),
    DemoSite(
        body={
            "id": "nyc-dc-01",
            "label": "NYC Data Center",
            "description": "East coast data center",
            "location": {"address": "New York, NY", "latitude": 40.7128, "longitude": -74.006},
            "config": {
                "timezone": "America/New_York",
                "minReplicas": 1,
                "discoveryEnabled": True,
                "discoveryCron": "0 0 2 * * *",
            },
        },
        agents=("promsnmp-nyc-1",),
        seeds=(
            Seed(
                "Distribution Layer",
                ("127.0.2.0/29",),
                V3,
                (
                    Device("dist-sw-01.nyc", "127.0.2.1", "Juniper Networks QFX5120", "NYC DC, Row 4", V3),
                    Device("dist-sw-02.nyc", "127.0.2.2", "Juniper Networks QFX5120", "NYC DC, Row 5", V3),
                ),
            ),
        ),
    ),
    DemoSite(
        body={
            "id": "london-colo-01",
            "label": "London Colocation",
            "description": "EMEA regional hub",
            "location": {"address": "London, UK", "latitude": 51.5074, "longitude": -0.1278},
            "config": {
                "timezone": "Europe/London",
                "minReplicas": 2,
                "discoveryEnabled": True,
                "discoveryCron": "0 0 3 * * *",
            },
        },
        agents=("promsnmp-london-1", "promsnmp-london-2"),
        seeds=(
            Seed(
                "Core Network",
                ("127.0.3.0/29",),
                V2C,
                (
                    Device(
                        "core-rtr-01.london",
                        "127.0.3.1",
                        "Cisco IOS XR Software, Version 7.3.2",
                        "London Colocation, Cage 12",
                        V2C,
                    ),
                ),
            ),
            Seed(
                "Distribution Layer",
                ("127.0.3.8/29",),
                V3,
                (
                    Device(
                        "dist-sw-01.london",
                        "127.0.3.9",
                        "Arista Networks EOS version 4.31",
                        "London Colocation, Cage 12",
                        V3,
                    ),
                ),
            ),
        ),
    ),
)

SNMP_PORT = 161  # seed_demo's seeds and devices: no snmpd of its own, the standard port
MAX_SITES = 1000
GENERATED_PREFIX = "demo-site-"  # demo-site-004, …: the sites after the spec's three


def generated_site(number: int) -> DemoSite:
    """The demo's site `number` (4 and up): a /29 of its own at 127.(16 + number // 256).(number % 256).0
    with two v2c switches. Its discovery is off: no agent runs for it, and a thousand sites without a
    leader would each start a run at 02:00 that waits for one and times out."""
    network = f"127.{16 + number // 256}.{number % 256}"
    site_id = f"{GENERATED_PREFIX}{number:03d}"
    label = f"Demo site {number}"
    return DemoSite(
        body={
            "id": site_id,
            "label": label,
            "description": "Generated by manage.py seed_demo",
            "config": {"discoveryEnabled": False},
        },
        agents=(),
        seeds=(
            Seed(
                "Loopback",
                (f"{network}.0/29",),
                V2C,
                tuple(
                    Device(f"sw-0{host}.{site_id}", f"{network}.{host}", "Demo switch", label, V2C)
                    for host in (1, 2)
                ),
            ),
        ),
    )


def demo_sites(count: int) -> tuple[DemoSite, ...]:
    """The first `count` demo sites: the spec's three, then generated ones."""
    if not 1 <= count <= MAX_SITES:
        raise ValueError(f"between 1 and {MAX_SITES} demo sites, not {count}")
    return SITES[:count] + tuple(generated_site(number) for number in range(len(SITES) + 1, count + 1))


def is_demo_site(site_id: str) -> bool:
    return site_id in {site.id for site in SITES} or site_id.startswith(GENERATED_PREFIX)


def other_sites(sample: int = 3) -> tuple[int, list[str]]:
    """(how many sites are not the demo's, the ids of the first `sample` of them): two queries."""
    others = Site.objects.exclude(pk__in=[site.id for site in SITES]).exclude(pk__startswith=GENERATED_PREFIX)
    return others.count(), list(others.order_by("id").values_list("id", flat=True)[:sample])


def device_body(device: Device, port: int) -> dict[str, Any]:
    """As POST …/inventory/devices takes it: one agent, the device's own address."""
    return {
        "sysName": device.sys_name,
        "sysDescr": device.sys_descr,
        "sysLocation": device.sys_location,
        "sysContact": CONTACT,
        "agents": [{"address": device.address, "port": port, **device.snmp}],
    }


@dataclass(frozen=True)
class SiteSeeded:
    site_id: str
    created: bool
    seeds_added: int
    devices_added: int
    inventory_version: int


def demo_fleet_create(
    *, actor: Actor, sites: tuple[DemoSite, ...], snmp_port: int, with_devices: bool
) -> list[SiteSeeded]:
    """Each demo site that is missing, then what it lacks of its seeds (and devices, with_devices): what
    is there already is left as it is. One transaction per site, read with the API's rules."""
    existing = set(Site.objects.filter(pk__in=[site.id for site in sites]).values_list("id", flat=True))
    report = []
    for site in sites:
        created = site.id not in existing
        if created:
            serializer = SiteIn(data=site.body)
            if not serializer.is_valid():
                raise InvalidInput(serializer.errors)
            site_create(actor=actor, site_id=site.id, values=model_values(serializer.validated_data))
        seeds = []
        for seed in site.seeds:
            parsed, errors = parse_seed(seed.body(snmp_port))
            if parsed is None:
                raise InvalidInput(errors)
            seeds.append(parsed)
        devices = []
        if with_devices:
            inputs, errors = parse_devices([device_body(device, snmp_port) for device in site.devices])
            if errors:
                raise InvalidInput(errors)
            devices = [device for device in inputs if device is not None]
        result = inventory_import(
            actor=actor, site_id=site.id, devices=devices, seeds=seeds, mode="addOnly", source="import"
        )
        report.append(
            SiteSeeded(
                site_id=site.id,
                created=created,
                seeds_added=len(result.seeds.get("added", [])),
                devices_added=len(result.added),
                inventory_version=result.version,
            )
        )
    return report
