"""PromSNMP compatibility: its file format (plain and encrypted), import_inventory / export_inventory, the
round trip with all three sample files, and PUT inventory with "format": "promsnmp"."""

from __future__ import annotations

import base64
import copy
import json
import os
import stat
import uuid
from datetime import datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.errors import InvalidInput
from core.models import AuditLog
from inventory.models import Agent, Device, DiscoverySeed, InventoryChange
from inventory.promsnmp import (
    DEFAULT_KEY,
    PromSnmpFileError,
    decrypt_file,
    encrypt_file,
    from_promsnmp,
    load_document,
    to_promsnmp,
)
from inventory.selectors import iter_devices, site_seeds
from sites.models import Site
from tests.openapi import assert_matches_schema

# The sample PromSNMP files, copied from shared/fixtures/promsnmp so a clone tests on its own.
REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT / "tests" / "fixtures" / "promsnmp"
FIXTURE_KEY = "fixture-key-0016"
PLAIN, WITH_KEY, WITH_DEFAULT_KEY = (
    "inventory.json",
    "inventory.fixture-key-0016.enc",
    "inventory.default-key.enc",
)
# file → the --key to give (None: plain, or PromSNMP's default key, which is tried without --key)
SOURCES = {PLAIN: None, WITH_KEY: FIXTURE_KEY, WITH_DEFAULT_KEY: None}

SITE, OTHER, THIRD = "chicago-pop-01", "chicago-pop-02", "chicago-pop-03"

# What PromSNMP's README lists, per object.
DEVICE_FIELDS = {
    "id",
    "sysName",
    "sysDescr",
    "sysContact",
    "sysLocation",
    "discoveredAt",
    "agents",
    "primaryAgent",
}
AGENT_FIELDS = {"type", "id", "endpoint", "version", "timeout", "retries", "discoveredAt"}
COMMUNITY_FIELDS = AGENT_FIELDS | {"readCommunity", "writeCommunity"}
USER_FIELDS = AGENT_FIELDS | {
    "securityName",
    "securityLevel",
    "authProtocol",
    "authPassphrase",
    "privProtocol",
    "privPassphrase",
    "engineId",
}
SEED_FIELDS = {
    "id",
    "potentialTargets",
    "port",
    "version",
    "agentType",
    "readCommunity",
    "securityName",
    "securityLevel",
    "authProtocol",
    "authPassphrase",
    "privProtocol",
    "privPassphrase",
}
# The mapping, written out independently of inventory.promsnmp.
SNMP4J_VERSIONS = {0: 1, 1: 2, 3: 3}
LEVELS = {1: "noAuthNoPriv", 2: "authNoPriv", 3: "authPriv"}


def fixture(name: str) -> Path:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(
            f"PromSNMP fixture {path} is missing: the repository keeps them in tests/fixtures/promsnmp "
            f"(copied from shared/fixtures/promsnmp; repository root {REPO_ROOT})."
        )
    return path


def original() -> dict:
    return json.loads(fixture(PLAIN).read_text())


def run(command: str, *args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(command, *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def import_file(site: str, path: Path | str, *options: str) -> str:
    return run("import_inventory", site, str(path), *options)[0]


def import_source(site: str, name: str, *options: str) -> str:
    key = SOURCES[name]
    return import_file(site, fixture(name), *(("--key", key) if key else ()), *options)


def write_json(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document, indent=2))
    return path


def version(site: str) -> int:
    return Site.objects.get(pk=site).inventory_version


def state(site: str) -> tuple:
    """Everything an import may change: version, change log, devices, agents, seeds, audit rows."""
    return (
        version(site),
        InventoryChange.objects.filter(site_id=site).count(),
        Device.objects.filter(site_id=site).count(),
        Agent.objects.filter(device__site_id=site).count(),
        DiscoverySeed.objects.filter(site_id=site).count(),
        AuditLog.objects.filter(site_id=site).count(),
    )


def snapshot(site: str) -> dict:
    """A site's inventory with secrets, without what differs between two sites holding the same data."""
    devices = {}
    for device in iter_devices(Site.objects.get(pk=site), include_credentials=True):
        device = {k: v for k, v in device.items() if k not in ("id", "lastSeen")}
        device["agents"] = sorted(
            ({k: v for k, v in agent.items() if k != "id"} for agent in device["agents"]),
            key=lambda a: (a["address"], a["port"]),
        )
        devices[device["sysName"]] = device
    seeds = {
        seed["name"]: {k: v for k, v in seed.items() if k not in ("id", "createdAt", "updatedAt")}
        for seed in site_seeds(site, include_credentials=True)
    }
    return {"devices": devices, "seeds": seeds}


def moment(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text.replace("Z", "+00:00"))


def semantic(document: dict) -> dict:
    """A PromSNMP document compared by meaning: objects by id, timestamps as instants, targets as a set."""

    def agent(data: dict | None) -> dict | None:
        if data is None:
            return None
        return {k: moment(v) if k == "discoveredAt" else v for k, v in data.items()}

    return {
        "devices": {
            device["id"]: {
                **{k: v for k, v in device.items() if k not in ("agents", "primaryAgent", "discoveredAt")},
                "discoveredAt": moment(device["discoveredAt"]),
                "agents": {a["id"]: agent(a) for a in device["agents"]},
                "primaryAgent": agent(device["primaryAgent"]),
            }
            for device in document["devices"]
        },
        "seeds": {
            seed["id"]: {**seed, "potentialTargets": sorted(seed["potentialTargets"])}
            for seed in document["discoverySeeds"]
        },
    }


def iso_second(text: str) -> str:
    return moment(text).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_agent(agent: dict, is_primary: bool) -> dict:
    """The manager's agent (secrets revealed, no id) for one agent of inventory.json."""
    result = {
        "address": agent["endpoint"]["address"],
        "port": agent["endpoint"]["port"],
        "version": SNMP4J_VERSIONS[agent["version"]],
        "timeout": agent["timeout"],
        "retries": agent["retries"],
        "isPrimary": is_primary,
    }
    if agent["type"] == "snmp-community":
        result.update(type="community", readCommunity=agent["readCommunity"])
        if agent["writeCommunity"] is not None:
            result["writeCommunity"] = agent["writeCommunity"]
    else:
        level = LEVELS[agent["securityLevel"]]
        result.update(type="usm", securityName=agent["securityName"], securityLevel=level)
        if level != "noAuthNoPriv":
            result.update(authProtocol=agent["authProtocol"], authPassphrase=agent["authPassphrase"])
        if level == "authPriv":
            result.update(privProtocol=agent["privProtocol"], privPassphrase=agent["privPassphrase"])
        if agent["engineId"] is not None:
            result["engineId"] = agent["engineId"]
    return result


def assert_site_holds_the_fixture(site: str) -> None:
    """Devices, agents and seeds of the site, field by field against inventory.json."""
    source = original()
    devices = {d["sysName"]: d for d in iter_devices(Site.objects.get(pk=site), include_credentials=True)}
    assert set(devices) == {d["sysName"] for d in source["devices"]}
    for wanted in source["devices"]:
        device = devices[wanted["sysName"]]
        for name in ("sysDescr", "sysContact", "sysLocation"):
            assert device[name] == wanted[name], (wanted["sysName"], name)
        assert device["discoveredAt"] == iso_second(wanted["discoveredAt"])
        kept = device["metadata"]["promsnmp"]
        assert kept["id"] == wanted["id"]
        assert {(a["address"], a["port"]): a["id"] for a in kept["agents"]} == {
            (a["endpoint"]["address"], a["endpoint"]["port"]): a["id"] for a in wanted["agents"]
        }
        primary = wanted["primaryAgent"]["id"] if wanted["primaryAgent"] else wanted["agents"][0]["id"]
        expected = sorted(
            (expected_agent(a, a["id"] == primary) for a in wanted["agents"]),
            key=lambda a: (a["address"], a["port"]),
        )
        got = sorted(
            ({k: v for k, v in a.items() if k != "id"} for a in device["agents"]),
            key=lambda a: (a["address"], a["port"]),
        )
        assert got == expected, wanted["sysName"]
    seeds = {s["name"]: s for s in site_seeds(site, include_credentials=True)}
    assert set(seeds) == {f"promsnmp-{s['id']}" for s in source["discoverySeeds"]}
    for wanted in source["discoverySeeds"]:
        seed = seeds[f"promsnmp-{wanted['id']}"]
        assert seed["targets"] == wanted["potentialTargets"]
        assert seed["options"]["port"] == wanted["port"]
        assert seed["enabled"] is True and seed["schedule"] is None
        if wanted["version"] == "v2c":
            assert seed["snmpConfig"] == {
                "version": 2,
                "type": "community",
                "readCommunity": wanted["readCommunity"],
            }
        else:
            assert seed["snmpConfig"] == {
                "version": 3,
                "type": "usm",
                "securityName": wanted["securityName"],
                "securityLevel": LEVELS[wanted["securityLevel"]],
                "authProtocol": wanted["authProtocol"],
                "authPassphrase": wanted["authPassphrase"],
                "privProtocol": wanted["privProtocol"],
                "privPassphrase": wanted["privPassphrase"],
            }


MANUAL_DEVICE = {
    "sysName": "lab-sw-99.chicago",
    "sysDescr": "Juniper EX2300",
    "agents": [{"address": "10.99.0.1", "version": 2, "readCommunity": "lab-c0mmunity"}],
    "metadata": {"rack": "lab"},
}
MANUAL_SEED = {
    "name": "Lab network",
    "targets": ["10.99.0.0/30"],
    "snmpConfig": {"version": 2, "readCommunity": "lab-c0mmunity"},
    "schedule": "0 0 3 * * *",
    "options": {"timeout": 2000, "retries": 2, "maxConcurrent": 10, "port": 161},
}


@pytest.fixture
def sites(make_site):
    for site in (SITE, OTHER, THIRD):
        make_site(site)
    return SITE


@pytest.fixture
def manual(sites, tmp_path):
    """SITE holding one device and one seed of its own (not from PromSNMP), at version 1."""
    path = write_json(tmp_path / "manual.json", {"devices": [MANUAL_DEVICE], "discoverySeeds": [MANUAL_SEED]})
    before = version(SITE)
    import_file(SITE, path)
    assert version(SITE) == before + 1
    return path


# --- the file format -------------------------------------------------------------------------------


def test_fixtures_are_in_the_repository():
    for name in SOURCES:
        assert fixture(name).stat().st_size > 1000


@pytest.mark.parametrize(("name", "key"), [(WITH_KEY, FIXTURE_KEY), (WITH_DEFAULT_KEY, DEFAULT_KEY)])
def test_both_encrypted_files_decrypt_to_the_plain_document(name, key):
    plain = decrypt_file(fixture(name).read_bytes(), key)
    assert json.loads(plain) == original()


def test_an_encrypted_file_without_a_key_is_tried_with_the_default_key_only():
    format_, document = load_document(fixture(WITH_DEFAULT_KEY).read_bytes(), key=None, format=None)
    assert (format_, document) == ("promsnmp", original())
    with pytest.raises(PromSnmpFileError, match=r"default key .*PROM_ENCRYPT_KEY"):
        load_document(fixture(WITH_KEY).read_bytes(), key=None, format=None)
    # A key given is the only one tried: the default key is no fallback for a wrong key.
    with pytest.raises(PromSnmpFileError, match="key is wrong or the file is corrupt"):
        load_document(fixture(WITH_DEFAULT_KEY).read_bytes(), key=FIXTURE_KEY, format=None)


@pytest.mark.parametrize("key", ["k" * 16, "k" * 24, "k" * 32])
def test_encrypt_file_writes_promsnmps_layout(key):
    plain = json.dumps(original()).encode()
    sealed = encrypt_file(plain, key)
    assert b"\n" not in sealed
    raw = base64.b64decode(sealed, validate=True)
    assert len(raw) == 12 + len(plain) + 16  # IV, ciphertext, tag
    assert decrypt_file(sealed, key) == plain
    assert encrypt_file(plain, key) != sealed  # a fresh IV every time


@pytest.mark.parametrize("key", ["", "short", "k" * 15, "k" * 17, "k" * 31, "k" * 33])
def test_encrypt_file_refuses_a_key_promsnmp_would_not_encrypt_with(key):
    with pytest.raises(PromSnmpFileError, match="16, 24 or 32 characters"):
        encrypt_file(b"{}", key)


def test_a_flipped_byte_or_a_truncated_file_is_a_clear_error():
    sealed = bytearray(fixture(WITH_KEY).read_bytes())
    flipped = bytes(sealed[:200]) + (b"B" if sealed[200:201] != b"B" else b"C") + bytes(sealed[201:])
    with pytest.raises(PromSnmpFileError, match="key is wrong or the file is corrupt"):
        decrypt_file(flipped, FIXTURE_KEY)
    with pytest.raises(PromSnmpFileError, match="neither JSON nor valid base64"):
        decrypt_file(bytes(sealed[:200]) + b"*" + bytes(sealed[201:]), FIXTURE_KEY)
    with pytest.raises(PromSnmpFileError, match="too short"):
        decrypt_file(base64.b64encode(b"0123456789"), FIXTURE_KEY)


def test_formats_are_detected_and_a_wrong_format_is_refused():
    plain = fixture(PLAIN).read_bytes()
    assert load_document(plain, key=None, format=None)[0] == "promsnmp"
    manager = json.dumps({"devices": [MANUAL_DEVICE], "discoverySeeds": [MANUAL_SEED]}).encode()
    assert load_document(manager, key=None, format=None) == (
        "manager",
        {"devices": [MANUAL_DEVICE], "discoverySeeds": [MANUAL_SEED]},
    )
    assert load_document(b'{"devices": []}', key=None, format=None)[0] == "manager"
    assert load_document(b'{"devices": []}', key=None, format="promsnmp")[0] == "promsnmp"
    with pytest.raises(PromSnmpFileError, match="in the promsnmp format, not manager"):
        load_document(plain, key=None, format="manager")
    with pytest.raises(PromSnmpFileError, match="not valid JSON"):
        load_document(plain[: len(plain) // 2], key=None, format=None)
    with pytest.raises(PromSnmpFileError, match="not an inventory document"):
        load_document(b'{"hello": 1}', key=None, format=None)


def test_an_agent_type_written_twice_by_jackson_is_accepted():
    text = fixture(PLAIN).read_text()
    doubled = text.replace('"type": "snmp-user",', '"type": "snmp-user", "type": "snmp-user",')
    assert doubled.count('"type"') == text.count('"type"') + 3
    assert load_document(doubled.encode(), key=None, format=None) == ("promsnmp", original())
    # The first "type" is Jackson's type id, the one PromSNMP reads back.
    odd = text.replace('"type": "snmp-user",', '"type": "snmp-user", "type": "something-else",', 1)
    assert load_document(odd.encode(), key=None, format=None)[1]["devices"][1]["agents"][0]["type"] == (
        "snmp-user"
    )


def test_from_promsnmp_refuses_what_it_cannot_map_naming_each_field():
    document = original()
    document["devices"][0]["agents"][0]["version"] = 2  # not an SNMP4J version number
    document["devices"][1]["agents"][0]["securityLevel"] = 0
    document["devices"][2]["agents"][0]["type"] = "snmp-community"  # with version 3
    document["discoverySeeds"][0]["version"] = "v9"
    with pytest.raises(InvalidInput) as caught:
        from_promsnmp(document)
    assert set(caught.value.fields) == {
        "devices[0].agents[0].version",
        "devices[1].agents[0].securityLevel",
        "devices[2].agents[0].type",
        "discoverySeeds[0].version",
    }


# --- import_inventory ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SOURCES))
def test_each_fixture_file_imports_field_by_field(sites, name):
    before = version(SITE)
    out = import_source(SITE, name)
    assert_site_holds_the_fixture(SITE)
    assert "3 added" in out and "seeds: 2 added" in out and f"Inventory version {before + 1}." in out
    assert version(SITE) == before + 1
    change = InventoryChange.objects.get(site_id=SITE)
    assert (change.version, change.source, len(change.added_ids)) == (before + 1, "import", 3)
    audit = AuditLog.objects.get(site_id=SITE, action="inventory_changed")
    assert audit.actor == "command:manage.py import_inventory"


def test_the_default_key_is_said_when_it_was_used(sites):
    _, err = run("import_inventory", SITE, str(fixture(WITH_DEFAULT_KEY)))
    assert "decrypted with PromSNMP's default key" in err


def test_a_reimport_of_the_same_file_changes_nothing(sites):
    import_source(SITE, PLAIN)
    before = state(SITE)
    for name in SOURCES:  # the same document three ways
        out = import_source(SITE, name)
        assert "nothing changed" in out and f"Inventory version stays {version(SITE)}." in out
    assert state(SITE) == before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--key", "wrong-key-000016"), "key is wrong or the file is corrupt"),
        (("--key", "short"), "16, 24 or 32 characters"),
        ((), "default key"),
    ],
)
def test_a_wrong_key_imports_nothing(manual, options, message):
    before = state(SITE)
    with pytest.raises(CommandError, match=message) as caught:
        import_file(SITE, fixture(WITH_KEY), *options)
    assert "Nothing imported" in str(caught.value)
    assert state(SITE) == before
    assert not Device.objects.filter(site_id=SITE, sys_name="edge-rtr-01.chicago").exists()


def test_a_corrupt_file_imports_nothing(manual, tmp_path):
    before = state(SITE)
    sealed = fixture(WITH_KEY).read_bytes()
    middle = len(sealed) // 2
    flipped = sealed[:middle] + bytes([sealed[middle] ^ 0x01]) + sealed[middle + 1 :]
    corrupt = [flipped, sealed[: len(sealed) - 40], fixture(PLAIN).read_bytes()[:-10]]
    for index, data in enumerate(corrupt):
        path = tmp_path / f"corrupt-{index}"
        path.write_bytes(data)
        with pytest.raises(CommandError, match=r"corrupt|not valid JSON|neither JSON"):
            import_file(SITE, path, "--key", FIXTURE_KEY)
    assert state(SITE) == before


def test_a_missing_file_or_an_unknown_site_is_a_clear_error(sites, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        import_file(SITE, tmp_path / "nowhere.json")
    with pytest.raises(CommandError, match="No site 'atlantis'"):
        import_file("atlantis", fixture(PLAIN))
    with pytest.raises(CommandError, match="in the promsnmp format, not manager"):
        import_file(SITE, fixture(PLAIN), "--format", "manager")
    assert Device.objects.count() == 0


def test_invalid_devices_and_seeds_are_all_listed_and_nothing_is_imported(manual, tmp_path):
    document = original()
    document["devices"][0]["agents"][0]["endpoint"]["address"] = "edge-rtr-01.example.net"
    document["devices"][1]["agents"][0]["version"] = 2
    document["devices"][2]["agents"][0]["authPassphrase"] = "short"
    document["discoverySeeds"][0]["potentialTargets"] = ["10.20.0.300"]
    document["discoverySeeds"][1]["port"] = 70000
    before = state(SITE)
    with pytest.raises(CommandError) as caught:
        import_file(SITE, write_json(tmp_path / "bad.json", document))
    message = str(caught.value)
    assert "5 invalid field(s); nothing imported" in message
    for path in (
        "devices[0].agents[0].endpoint.address: 'edge-rtr-01.example.net' is not an IP address.",
        "devices[1].agents[0].version: An SNMP4J version number",
        "devices[2].agents[0].authPassphrase:",
        "discoverySeeds[0].potentialTargets[0]: Invalid target",
        "discoverySeeds[1].port: An integer from 1 to 65535.",
    ):
        assert path in message
    assert state(SITE) == before


def changed_fixture() -> dict:
    """inventory.json with edge-rtr-01 changed, access-sw-15 gone, a new device and a seed changed."""
    document = original()
    document["devices"][0]["sysDescr"] = "Cisco IOS XE Software, Version 17.12.1"
    del document["devices"][2]
    new = copy.deepcopy(document["devices"][0])
    new.update(id=str(uuid.uuid4()), sysName="edge-rtr-02.chicago", primaryAgent=None)
    new["agents"][0].update(id=str(uuid.uuid4()), endpoint={"address": "10.20.0.3", "port": 161})
    document["devices"].append(new)
    document["discoverySeeds"][0]["potentialTargets"].append("10.20.0.3")
    return document


def test_dry_run_prints_the_plan_and_changes_nothing(manual, tmp_path):
    import_source(SITE, PLAIN)
    before, inventory, current = state(SITE), snapshot(SITE), version(SITE)
    path = write_json(tmp_path / "changed.json", changed_fixture())
    out = import_file(SITE, path, "--mode", "replace", "--dry-run")
    assert "Dry run" in out and "nothing changed" in out and f"Inventory version {current}." in out
    assert "Devices: 1 to add, 1 to update, 1 unchanged, 2 to remove." in out
    assert "  + edge-rtr-02.chicago" in out
    assert "  ~ edge-rtr-01.chicago" in out
    assert "  - access-sw-15.chicago" in out and "  - lab-sw-99.chicago" in out
    assert "Seeds: 0 to add, 1 to update, 1 unchanged, 1 to remove." in out
    assert "  ~ promsnmp-1d2e3f40-5a6b-4c7d-8e9f-a0b1c2d3e4f5" in out and "  - Lab network" in out
    assert state(SITE) == before and snapshot(SITE) == inventory
    # …and the same file without --dry-run does what the plan said.
    out = import_file(SITE, path, "--mode", "replace")
    assert "1 added, 1 updated, 1 unchanged, 2 removed; seeds: 0 added, 1 updated, 1 removed" in out
    assert version(SITE) == current + 1


def test_merge_keeps_the_others(manual):
    before = version(SITE)
    import_source(SITE, WITH_KEY, "--mode", "merge")
    names = set(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True))
    assert names == {"lab-sw-99.chicago", "edge-rtr-01.chicago", "core-sw-02.chicago", "access-sw-15.chicago"}
    assert DiscoverySeed.objects.filter(site_id=SITE).count() == 3
    assert version(SITE) == before + 1


def test_replace_removes_the_others(manual):
    before = version(SITE)
    import_source(SITE, WITH_DEFAULT_KEY, "--mode", "replace")
    names = set(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True))
    assert names == {"edge-rtr-01.chicago", "core-sw-02.chicago", "access-sw-15.chicago"}
    assert not DiscoverySeed.objects.filter(site_id=SITE, name="Lab network").exists()
    assert_site_holds_the_fixture(SITE)
    assert InventoryChange.objects.get(site_id=SITE, version=before + 1).change_type == "full_sync"


def test_add_only_does_not_update_existing_devices(manual, tmp_path):
    import_source(SITE, PLAIN)
    path = write_json(tmp_path / "changed.json", changed_fixture())
    out = import_file(SITE, path, "--mode", "addOnly")
    assert "1 added, 0 updated" in out
    edge = Device.objects.get(site_id=SITE, sys_name="edge-rtr-01.chicago")
    assert edge.sys_descr == "Cisco IOS XE Software, Version 17.9.4a"
    assert Device.objects.filter(site_id=SITE, sys_name="access-sw-15.chicago").exists()
    assert Device.objects.filter(site_id=SITE, sys_name="edge-rtr-02.chicago").exists()
    seed = next(s for s in site_seeds(SITE, include_credentials=False) if s["name"].endswith("e4f5"))
    assert seed["targets"] == ["10.20.0.1", "10.20.0.2", "10.20.3.15"]


# --- export_inventory and the round trip ------------------------------------------------------------


def export(site: str, out: Path, *options: str) -> Path:
    run("export_inventory", site, "--out", str(out), *options)
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    return out


@pytest.mark.parametrize("name", list(SOURCES))
def test_round_trip_through_promsnmp_files_is_lossless(sites, tmp_path, name):
    import_source(SITE, name)
    plain = export(SITE, tmp_path / "export.json", "--format", "promsnmp")
    sealed = export(SITE, tmp_path / "export.enc", "--format", "promsnmp", "--key", FIXTURE_KEY)

    # The files are PromSNMP's: every field its README lists, and the same document as inventory.json.
    exported = json.loads(plain.read_text())
    assert json.loads(decrypt_file(sealed.read_bytes(), FIXTURE_KEY)) == exported
    assert not sealed.read_bytes().endswith(b"\n")
    assert semantic(exported) == semantic(original())
    for device in exported["devices"]:
        assert set(device) == DEVICE_FIELDS
        for agent in [*device["agents"], *([device["primaryAgent"]] if device["primaryAgent"] else [])]:
            assert set(agent) == (COMMUNITY_FIELDS if agent["type"] == "snmp-community" else USER_FIELDS)
    assert all(set(seed) == SEED_FIELDS for seed in exported["discoverySeeds"])

    # Imported again, elsewhere: the same inventory, secrets included.
    import_file(OTHER, plain)
    import_file(THIRD, sealed, "--key", FIXTURE_KEY)
    assert snapshot(OTHER) == snapshot(SITE)
    assert snapshot(THIRD) == snapshot(SITE)
    assert_site_holds_the_fixture(THIRD)

    audits = AuditLog.objects.filter(site_id=SITE, action="inventory_exported").order_by("id")
    assert [(a.details["format"], a.details["encrypted"]) for a in audits] == [
        ("promsnmp", False),
        ("promsnmp", True),
    ]
    assert all(a.actor == "command:manage.py export_inventory" for a in audits)
    assert "n0c-r0-chi" not in json.dumps([a.details for a in audits])


def test_round_trip_keeps_what_the_manager_has_no_field_for(sites, tmp_path):
    """Agent timestamps unlike their device's, PromSNMP's agent order, an epoch-seconds Instant, a
    primaryAgent named by endpoint only, lower-case protocols: all come back."""
    document = original()
    core = document["devices"][1]
    core["agents"].reverse()  # 10.20.1.2:1161 first, though the manager sorts by address
    core["agents"][0]["discoveredAt"] = "2025-06-09T08:30:00.250Z"
    core["agents"][1]["discoveredAt"] = 1749458400.5  # Jackson with WRITE_DATES_AS_TIMESTAMPS
    core["agents"][1]["authProtocol"] = "sha"
    access = document["devices"][2]
    access["primaryAgent"] = {**access["agents"][0], "id": str(uuid.uuid4())}  # matched by endpoint
    import_file(SITE, write_json(tmp_path / "odd.json", document))

    exported = json.loads(export(SITE, tmp_path / "out.json", "--format", "promsnmp").read_text())
    by_id = {d["id"]: d for d in exported["devices"]}
    agents = by_id[core["id"]]["agents"]
    assert [a["id"] for a in agents] == [a["id"] for a in core["agents"]]
    assert agents[0]["discoveredAt"] == "2025-06-09T08:30:00.250Z"
    assert agents[1]["discoveredAt"] == 1749458400.5
    assert agents[1]["authProtocol"] == "SHA"
    assert by_id[core["id"]]["primaryAgent"] is None
    assert by_id[access["id"]]["primaryAgent"] == by_id[access["id"]]["agents"][0]
    # The manager has the agents' protocol in its own spelling and the device's own discoveredAt.
    [device] = (
        d
        for d in iter_devices(Site.objects.get(pk=SITE), include_credentials=True)
        if d["sysName"] == core["sysName"]
    )
    assert {a["address"]: a.get("authProtocol") for a in device["agents"]} == {
        "10.20.0.2": "SHA",
        "10.20.1.2": None,
    }
    assert device["agents"][0]["isPrimary"] and device["agents"][0]["address"] == "10.20.1.2"


def test_round_trip_through_the_managers_format_is_lossless(manual, tmp_path):
    import_source(SITE, WITH_KEY)
    path = export(SITE, tmp_path / "manager.json")
    document = json.loads(path.read_text())
    assert document["version"] == version(SITE)
    assert {a["readCommunity"] for d in document["devices"] for a in d["agents"] if "readCommunity" in a} == {
        "n0c-r0-chi",
        "lab-c0mmunity",
    }
    out = import_file(OTHER, path)
    assert "(manager)" in out
    assert snapshot(OTHER) == snapshot(SITE)
    # …and on to PromSNMP from the second site: still inventory.json, plus what was the manager's own.
    exported = json.loads(export(OTHER, tmp_path / "promsnmp.json", "--format", "promsnmp").read_text())
    own_devices = {d["id"] for d in original()["devices"]}
    own_seeds = {s["id"] for s in original()["discoverySeeds"]}
    assert len(exported["devices"]) == 4 and len(exported["discoverySeeds"]) == 3
    exported["devices"] = [d for d in exported["devices"] if d["id"] in own_devices]
    exported["discoverySeeds"] = [s for s in exported["discoverySeeds"] if s["id"] in own_seeds]
    assert semantic(exported) == semantic(original())


def test_export_writes_to_stdout_and_refuses_a_key_for_the_managers_format(sites):
    import_source(SITE, PLAIN)
    out, _ = run("export_inventory", SITE)
    assert {d["sysName"] for d in json.loads(out)["devices"]} == {d["sysName"] for d in original()["devices"]}
    out, _ = run("export_inventory", SITE, "--key", FIXTURE_KEY)  # --key: PromSNMP's format
    assert not out.endswith("\n")
    assert semantic(json.loads(decrypt_file(out.encode(), FIXTURE_KEY))) == semantic(original())
    with pytest.raises(CommandError, match="--format promsnmp"):
        run("export_inventory", SITE, "--format", "manager", "--key", FIXTURE_KEY)
    with pytest.raises(CommandError, match="16, 24 or 32"):
        run("export_inventory", SITE, "--key", "too-short")
    with pytest.raises(CommandError, match="No site"):
        run("export_inventory", "atlantis")


def test_manager_only_data_exports_as_promsnmp_can_load_it(manual, tmp_path):
    # A v1 seed and a disabled one cannot be PromSNMP seeds; networks become single addresses.
    extra = [
        {
            "name": "Old v1 gear",
            "targets": ["10.98.0.1"],
            "snmpConfig": {"version": 1, "readCommunity": "old"},
        },
        {**MANUAL_SEED, "name": "Paused", "enabled": False},
    ]
    path = write_json(tmp_path / "seeds.json", {"devices": [], "discoverySeeds": extra})
    import_file(SITE, path)
    first = tmp_path / "first.json"
    _, err = run("export_inventory", SITE, "--format", "promsnmp", "--out", str(first))
    assert "Seed 'Old v1 gear' left out" in err and "Seed 'Paused' left out" in err
    document = json.loads(first.read_text())
    [device] = document["devices"]
    assert uuid.UUID(device["id"]) and uuid.UUID(device["agents"][0]["id"])
    assert device["agents"][0]["version"] == 1  # SNMP4J's v2c
    assert device["primaryAgent"] == device["agents"][0]
    [seed] = document["discoverySeeds"]
    assert seed["potentialTargets"] == ["10.99.0.0", "10.99.0.1", "10.99.0.2", "10.99.0.3"]
    assert (seed["version"], seed["agentType"], seed["securityLevel"]) == ("v2c", "snmp-community", 0)
    # The ids are stable from one export to the next.
    second = json.loads(export(SITE, tmp_path / "second.json", "--format", "promsnmp").read_text())
    assert second == document
    # And the file imports back: the device as it was (PromSNMP's ids now kept in its metadata).
    import_file(OTHER, first)
    [back] = iter_devices(Site.objects.get(pk=OTHER), include_credentials=True)
    [mine] = iter_devices(Site.objects.get(pk=SITE), include_credentials=True)
    assert back["metadata"]["promsnmp"]["id"] == device["id"]
    assert {k: v for k, v in back.items() if k not in ("id", "lastSeen", "metadata", "agents")} == {
        k: v for k, v in mine.items() if k not in ("id", "lastSeen", "metadata", "agents")
    }


def test_to_promsnmp_gives_the_primary_agent_as_a_full_copy():
    document = to_promsnmp(from_promsnmp(original()))
    by_name = {d["sysName"]: d for d in document["devices"]}
    edge = by_name["edge-rtr-01.chicago"]
    assert edge["primaryAgent"] == edge["agents"][0] and edge["primaryAgent"] is not edge["agents"][0]
    assert by_name["core-sw-02.chicago"]["primaryAgent"] is None  # as PromSNMP had it


# --- PUT inventory with "format": "promsnmp" -------------------------------------------------------


def test_put_inventory_accepts_a_promsnmp_document(sites, admin_api):
    path = f"/api/v1/sites/{SITE}/inventory"
    body = {**original(), "format": "promsnmp", "mode": "merge"}
    before = version(SITE)
    response = admin_api.put(path, body, format="json")
    assert response.status_code == 200, response.content[:800]
    assert_matches_schema(response, "PUT", path)
    answer = response.json()
    assert (answer["added"], answer["seeds"]["added"], answer["version"]) == (3, 2, before + 1)
    assert_site_holds_the_fixture(SITE)
    import_source(OTHER, WITH_DEFAULT_KEY)
    assert snapshot(OTHER) == snapshot(SITE)

    again = admin_api.put(path, body, format="json").json()
    assert (again["changed"], again["version"], again["unchanged"]) == (False, before + 1, 3)

    bad = copy.deepcopy(body)
    bad["devices"][0]["agents"][0]["version"] = 2
    refused = admin_api.put(path, bad, format="json")
    assert refused.status_code == 400
    assert "devices[0].agents[0].version" in refused.json()["fields"]
    assert version(SITE) == before + 1


def test_put_inventory_names_every_bad_field_of_a_promsnmp_document_as_import_inventory_does(
    sites, admin_api
):
    """One import service: what cannot be mapped and what is mapped but invalid come in one answer, in
    PromSNMP's field paths, and nothing is imported."""
    document = original()
    document["devices"][1]["agents"][0]["version"] = 2  # not an SNMP4J version number: cannot be mapped
    document["discoverySeeds"][1]["port"] = 70000  # mapped, then refused
    before = version(SITE)
    refused = admin_api.put(
        f"/api/v1/sites/{SITE}/inventory", {**document, "format": "promsnmp"}, format="json"
    )
    assert refused.status_code == 400
    body = refused.json()
    assert body["detail"] == "The PromSNMP document cannot be mapped."
    assert set(body["fields"]) == {"devices[1].agents[0].version", "discoverySeeds[1].port"}
    assert version(SITE) == before
