"""Validation of devices and SNMP credentials through PUT inventory (400, all or nothing) and POST
devices (the bad device fails alone), each violation named by its field path; body-size limits."""

from __future__ import annotations

import json

import pytest

from core.models import AuditLog
from inventory.models import Device, DiscoverySeed
from snmp.credentials import AUTH_PROTOCOLS, PRIV_PROTOCOLS
from tests.inventory.test_inventory_api import (
    SITE,
    by_name,
    community_agent,
    device,
    devices_path,
    err,
    get_inventory,
    inventory_path,
    ok,
    post_devices,
    put_inventory,
    seed,
    usm_agent,
    version_of,
)

MB = 1024 * 1024


def without(data: dict, *keys: str) -> dict:
    return {k: v for k, v in data.items() if k not in keys}


def with_agent(agent: dict, **device_fields) -> dict:
    return device("bad-device", agent.get("address", "127.0.9.1"), agents=[agent], **device_fields)


V1 = community_agent("127.0.9.1", version=1)
V2 = community_agent("127.0.9.1")
V3 = usm_agent("127.0.9.1")


def agent_case(name: str, agent, field: str) -> tuple[str, dict, str]:
    """A device whose only agent is `agent`; the error must name agents[0].<field>."""
    bad = with_agent(agent) if isinstance(agent, dict) else device("bad-device", agents=[agent])
    return name, bad, f"agents[0].{field}" if field else "agents[0]"


# (id, bad device, the one field path that must be named, relative to devices[i])
CASES = [
    # v1/v2c
    agent_case("v1 without readCommunity", without(V1, "readCommunity"), "readCommunity"),
    agent_case("v2c without readCommunity", without(V2, "readCommunity"), "readCommunity"),
    agent_case("v2c empty readCommunity", {**V2, "readCommunity": ""}, "readCommunity"),
    agent_case("v2c null readCommunity", {**V2, "readCommunity": None}, "readCommunity"),
    agent_case("v2c numeric readCommunity", {**V2, "readCommunity": 12345}, "readCommunity"),
    agent_case("v2c readCommunity 256 chars", {**V2, "readCommunity": "c" * 256}, "readCommunity"),
    agent_case("readCommunity with NUL", {**V2, "readCommunity": "pub\x00lic"}, "readCommunity"),
    agent_case("writeCommunity not a string", {**V2, "writeCommunity": 5}, "writeCommunity"),
    # v3
    agent_case("v3 without securityName", without(V3, "securityName"), "securityName"),
    agent_case("v3 empty securityName", {**V3, "securityName": ""}, "securityName"),
    agent_case("v3 without securityLevel", without(V3, "securityLevel"), "securityLevel"),
    agent_case("v3 securityLevel wrong case", {**V3, "securityLevel": "authpriv"}, "securityLevel"),
    agent_case("v3 securityLevel unknown", {**V3, "securityLevel": "privOnly"}, "securityLevel"),
    agent_case(
        "authNoPriv without authProtocol",
        {**without(V3, "authProtocol", "privProtocol", "privPassphrase"), "securityLevel": "authNoPriv"},
        "authProtocol",
    ),
    agent_case("authProtocol SHA1", {**V3, "authProtocol": "SHA1"}, "authProtocol"),
    agent_case("authProtocol lowercase", {**V3, "authProtocol": "sha256"}, "authProtocol"),
    agent_case("authPriv without privProtocol", without(V3, "privProtocol"), "privProtocol"),
    agent_case("privProtocol 3DES", {**V3, "privProtocol": "3DES"}, "privProtocol"),
    agent_case("privProtocol AES-256", {**V3, "privProtocol": "AES-256"}, "privProtocol"),
    agent_case("authPriv without authPassphrase", without(V3, "authPassphrase"), "authPassphrase"),
    agent_case("authPassphrase 7 characters", {**V3, "authPassphrase": "1234567"}, "authPassphrase"),
    agent_case("authPassphrase a number", {**V3, "authPassphrase": 123456789}, "authPassphrase"),
    agent_case("authPassphrase 256 chars", {**V3, "authPassphrase": "p" * 256}, "authPassphrase"),
    agent_case("authPriv without privPassphrase", without(V3, "privPassphrase"), "privPassphrase"),
    agent_case("privPassphrase 7 characters", {**V3, "privPassphrase": "abcdefg"}, "privPassphrase"),
    agent_case(
        "authNoPriv passphrase too short",
        {
            **without(V3, "privProtocol", "privPassphrase"),
            "securityLevel": "authNoPriv",
            "authPassphrase": "short",
        },
        "authPassphrase",
    ),
    # version and type
    agent_case('version "2"', {**V2, "version": "2"}, "version"),
    agent_case("version true", {**V2, "version": True}, "version"),
    agent_case("version 2.0", {**V2, "version": 2.0}, "version"),
    agent_case("version 4", {**V2, "version": 4}, "version"),
    agent_case("version 0", {**V2, "version": 0}, "version"),
    agent_case("version null", {**V2, "version": None}, "version"),
    agent_case("version missing", without(V2, "version"), "version"),
    agent_case('version "v2c"', {**V2, "version": "v2c"}, "version"),
    agent_case("type usm for v2c", {**V2, "type": "usm"}, "type"),
    agent_case("type usm for v1", {**V1, "type": "usm"}, "type"),
    agent_case("type community for v3", {**V3, "type": "community"}, "type"),
    agent_case("type unknown", {**V2, "type": "snmp"}, "type"),
    # endpoint
    agent_case("address not an IP", {**V2, "address": "not-an-ip"}, "address"),
    agent_case("address out of range", {**V2, "address": "10.0.0.256"}, "address"),
    agent_case("address a hostname", {**V2, "address": "router.example.com"}, "address"),
    agent_case("address a number", {**V2, "address": 167772161}, "address"),
    agent_case("address missing", without(V2, "address"), "address"),
    agent_case("address a CIDR", {**V2, "address": "10.0.0.0/24"}, "address"),
    agent_case("port 0", {**V2, "port": 0}, "port"),
    agent_case("port 65536", {**V2, "port": 65536}, "port"),
    agent_case("port -1", {**V2, "port": -1}, "port"),
    agent_case('port "161"', {**V2, "port": "161"}, "port"),
    agent_case("port true", {**V2, "port": True}, "port"),
    agent_case("port 161.5", {**V2, "port": 161.5}, "port"),
    agent_case('isPrimary "yes"', {**V2, "isPrimary": "yes"}, "isPrimary"),
    agent_case("timeout 0", {**V2, "timeout": 0}, "timeout"),
    agent_case("retries -1", {**V2, "retries": -1}, "retries"),
    agent_case("agent not an object", "127.0.9.1", ""),
    # agents of a device
    (
        "duplicate agent endpoints",
        device("bad-device", agents=[community_agent("127.0.9.1"), community_agent("127.0.9.1", "other")]),
        "agents",
    ),
    (
        "duplicate endpoints, IPv6 spelled twice",
        device("bad-device", agents=[community_agent("2001:db8::1"), community_agent("2001:0db8:0:0::1")]),
        "agents",
    ),
    (
        "two primaries",
        device(
            "bad-device",
            agents=[
                community_agent("127.0.9.1", isPrimary=True),
                community_agent("127.0.9.2", isPrimary=True),
            ],
        ),
        "agents",
    ),
    ("zero agents", device("bad-device", agents=[]), "agents"),
    ("agents missing", without(device("bad-device"), "agents"), "agents"),
    ("agents not a list", device("bad-device", agents=community_agent("127.0.9.1")), "agents"),
    (
        "65 agents",
        device("bad-device", agents=[community_agent(f"127.0.8.{i}") for i in range(1, 66)]),
        "agents",
    ),
    # device fields
    ("sysObjectId not an OID", device("bad-device", sysObjectId="iso.3.6.1.4.1.9"), "sysObjectId"),
    ("sysObjectId trailing dot", device("bad-device", sysObjectId="1.3.6.1."), "sysObjectId"),
    ("sysObjectId a number", device("bad-device", sysObjectId=1.3), "sysObjectId"),
    ("sysName with NUL", device("bad-device", sysName="bad\x00device"), "sysName"),
    ("sysName 256 chars", device("bad-device", sysName="s" * 256), "sysName"),
    ("sysName a number", device("bad-device", sysName=42), "sysName"),
    ("sysDescr with NUL", device("bad-device", sysDescr="IOS\x00XR"), "sysDescr"),
    ("sysLocation with a lone surrogate", device("bad-device", sysLocation="rack \ud800"), "sysLocation"),
    ("metadata too large", device("bad-device", metadata={"blob": "x" * 20000}), "metadata"),
    ("metadata with NUL", device("bad-device", metadata={"vendor": "cis\x00co"}), "metadata"),
    ("metadata NUL in a key", device("bad-device", metadata={"ven\x00dor": "cisco"}), "metadata"),
    ("metadata a list", device("bad-device", metadata=["cisco"]), "metadata"),
    ("interfaces negative", device("bad-device", interfaces=-1), "interfaces"),
    ('interfaces "48"', device("bad-device", interfaces="48"), "interfaces"),
    ("discoveredAt not a time", device("bad-device", discoveredAt="yesterday"), "discoveredAt"),
    ("discoveredAt without a zone", device("bad-device", discoveredAt="2024-01-10T08:00:00"), "discoveredAt"),
]
CASE_PARAMS = [pytest.param(bad, path, id=name) for name, bad, path in CASES]


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


def assert_nothing_written(version: int, audits: int) -> None:
    assert Device.objects.filter(site_id=SITE).count() == 0
    assert version_of() == version
    assert AuditLog.objects.count() == audits


@pytest.mark.parametrize("bad, path", CASE_PARAMS)
def test_put_names_the_field_and_writes_nothing(site, admin_api, bad, path):
    version, audits = version_of(), AuditLog.objects.count()
    payload = {"devices": [device("good-device", "127.0.0.1"), bad], "mode": "merge"}
    # json.dumps escapes to ASCII, so a lone surrogate travels as "\\ud800".
    response = admin_api.put(inventory_path(), json.dumps(payload), content_type="application/json")
    body = err(response, 400, "validation_error")
    assert set(body["fields"]) == {f"devices[1].{path}"}, body["fields"]
    messages = body["fields"][f"devices[1].{path}"]
    assert messages and all(isinstance(m, str) and m for m in messages)
    assert_nothing_written(version, audits)


@pytest.mark.parametrize("bad, path", CASE_PARAMS)
def test_post_fails_the_bad_device_alone(site, admin_api, bad, path):
    payload = json.dumps({"devices": [device("good-device", "127.0.0.1"), bad]})
    response = admin_api.post(devices_path(), payload, content_type="application/json")
    body = ok(response, "POST", devices_path())
    assert (body["added"], body["failed"]) == (1, 1)
    good, failed = body["devices"]
    assert good["status"] == "added"
    assert failed["status"] == "failed" and failed["id"] is None
    assert set(failed["error"]) == {f"devices[1].{path}"}, failed["error"]
    assert list(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == ["good-device"]


def test_a_device_that_is_not_an_object(site, admin_api):
    body = err(admin_api.put(inventory_path(), {"devices": [device("a"), "b"]}, format="json"), 400)
    assert set(body["fields"]) == {"devices[1]"}
    body = post_devices(admin_api, [device("a"), 7])
    assert body["devices"][1]["error"].keys() == {"devices[1]"}


def test_secrets_are_not_echoed_in_errors(site, admin_api):
    bad = with_agent(
        {**V3, "authPassphrase": "sEcr3t!", "privProtocol": "ROT13", "privPassphrase": "pr1vpass-xyz"}
    )
    response = admin_api.put(inventory_path(), {"devices": [bad]}, format="json")
    body = err(response, 400)
    assert set(body["fields"]) == {"devices[0].agents[0].authPassphrase", "devices[0].agents[0].privProtocol"}
    assert "sEcr3t!" not in response.content.decode() and "pr1vpass-xyz" not in response.content.decode()


# --- what is accepted -----------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", AUTH_PROTOCOLS)
@pytest.mark.parametrize("priv", PRIV_PROTOCOLS)
def test_every_auth_and_priv_protocol_is_accepted(site, admin_api, auth, priv):
    agent = usm_agent("127.0.0.1", authProtocol=auth, privProtocol=priv)
    put_inventory(admin_api, [device("v3", agents=[agent])])
    stored = by_name(get_inventory(admin_api, includeCredentials="true"))["v3"]["agents"][0]
    assert (stored["authProtocol"], stored["privProtocol"]) == (auth, priv)
    assert stored["authPassphrase"] == "authpass123" and stored["privPassphrase"] == "privpass123"


def test_accepted_variants(site, admin_api):
    agents = {
        "v1": community_agent("127.0.0.1", "v1-community", version=1),
        "v2c with write": community_agent("127.0.0.2", "v2-read", writeCommunity="v2-write"),
        "v2c null write": community_agent("127.0.0.3", "v2-read", writeCommunity=None),
        "v2c no type": without(community_agent("127.0.0.4"), "type"),
        "noAuthNoPriv": {"address": "127.0.0.5", "version": 3, "securityName": "ro",
                         "securityLevel": "noAuthNoPriv"},
        "authNoPriv": {"address": "127.0.0.6", "version": 3, "type": "usm", "securityName": "ro",
                       "securityLevel": "authNoPriv", "authProtocol": "MD5", "authPassphrase": "12345678"},
        "passphrases of 8": usm_agent("127.0.0.7", authPassphrase="abcdefgh", privPassphrase="ABCDEFGH",
                                      privProtocol="DES"),
        "port 1": community_agent("127.0.0.8", port=1),
        "port 65535": community_agent("127.0.0.9", port=65535),
        "IPv6": community_agent("2001:db8::10"),
    }  # fmt: skip
    payload = [device(name, agents=[agent]) for name, agent in agents.items()]
    payload.append(
        device(
            "two endpoints", agents=[community_agent("127.0.1.1"), community_agent("127.0.1.1", port=1161)]
        )
    )
    payload.append(device("oid with a leading dot", sysObjectId=".1.3.6.1.4.1.9"))
    payload.append(device("no optional fields", agents=[community_agent("127.0.1.2")]) | {"metadata": None})
    result = put_inventory(admin_api, payload)
    assert result["added"] == len(payload)
    stored = by_name(get_inventory(admin_api, includeCredentials="true"))
    assert stored["v1"]["agents"][0]["readCommunity"] == "v1-community"
    assert stored["v1"]["agents"][0]["type"] == "community" and stored["v1"]["agents"][0]["version"] == 1
    assert stored["v2c with write"]["agents"][0]["writeCommunity"] == "v2-write"
    assert "writeCommunity" not in stored["v2c null write"]["agents"][0]
    assert stored["v2c no type"]["agents"][0]["type"] == "community"
    no_auth = stored["noAuthNoPriv"]["agents"][0]
    assert no_auth["type"] == "usm" and no_auth["securityLevel"] == "noAuthNoPriv"
    assert "authPassphrase" not in no_auth and "privPassphrase" not in no_auth
    assert stored["authNoPriv"]["agents"][0]["authPassphrase"] == "12345678"
    assert "privProtocol" not in stored["authNoPriv"]["agents"][0]
    assert stored["port 65535"]["agents"][0]["port"] == 65535
    assert stored["IPv6"]["agents"][0]["address"] == "2001:db8::10"
    assert [a["port"] for a in stored["two endpoints"]["agents"]] == [161, 1161]
    assert [a["isPrimary"] for a in stored["two endpoints"]["agents"]] == [True, False]
    assert stored["no optional fields"]["metadata"] == {}


# --- seeds carry the same SNMP validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "snmp, path",
    [
        ({"version": 2}, "readCommunity"),
        ({"version": "2", "readCommunity": "public"}, "version"),
        ({"version": 2.0, "readCommunity": "public"}, "version"),
        ({"version": 3, "securityLevel": "authNoPriv", "authProtocol": "SHA", "authPassphrase": "12345678"},
         "securityName"),
        ({"version": 3, "securityName": "m", "securityLevel": "authPriv", "authProtocol": "SHA",
          "authPassphrase": "12345678", "privProtocol": "AES", "privPassphrase": "short"}, "privPassphrase"),
        ({"version": 3, "securityName": "m", "securityLevel": "authNoPriv", "authProtocol": "SHA-1",
          "authPassphrase": "12345678"}, "authProtocol"),
        ({"version": 2, "readCommunity": "****"}, "readCommunity"),
    ],
)  # fmt: skip
def test_seed_snmp_config_is_validated(site, admin_api, snmp, path):
    payload = {"devices": [device("a")], "discoverySeeds": [seed("S") | {"snmpConfig": snmp}]}
    body = err(admin_api.put(inventory_path(), payload, format="json"), 400, "validation_error")
    assert set(body["fields"]) == {f"discoverySeeds[0].snmpConfig.{path}"}, body["fields"]
    assert DiscoverySeed.objects.count() == 0 and Device.objects.count() == 0


# --- the same device twice in one request -------------------------------------------------------------------


def test_same_sys_name_twice_in_a_put_is_400(site, admin_api):
    version = version_of()
    payload = [device("dup", "127.0.0.1"), device("other", "127.0.0.2"), device("dup", "127.0.0.3")]
    body = err(admin_api.put(inventory_path(), {"devices": payload}, format="json"), 400)
    assert set(body["fields"]) == {"devices[2]"}
    assert "devices[0]" in body["fields"]["devices[2]"][0]
    assert Device.objects.count() == 0 and version_of() == version


def test_same_sys_name_twice_in_a_post_fails_the_second(site, admin_api):
    payload = [device("dup", "127.0.0.1"), device("dup", "127.0.0.3", sysDescr="second")]
    body = post_devices(admin_api, payload)
    assert (body["added"], body["failed"]) == (1, 1)
    assert body["devices"][0]["status"] == "added"
    assert body["devices"][1]["status"] == "failed" and set(body["devices"][1]["error"]) == {"devices[1]"}
    stored = by_name(get_inventory(admin_api))["dup"]
    assert stored["agents"][0]["address"] == "127.0.0.1" and stored["sysDescr"] != "second"


def test_same_address_twice_without_sys_name(site, admin_api):
    payload = [device(None, "127.0.0.1"), device(None, "127.0.0.1")]
    body = err(admin_api.put(inventory_path(), {"devices": payload}, format="json"), 400)
    assert set(body["fields"]) == {"devices[1]"}
    body = post_devices(admin_api, payload)
    assert [d["status"] for d in body["devices"]] == ["added", "failed"]


# --- body size -----------------------------------------------------------------------------------------


def big_body(megabytes: int, **fields) -> str:
    body = json.dumps({**fields, "padding": "x" * (megabytes * MB)})
    assert len(body) > megabytes * MB
    return body


def test_a_12_mb_put_inventory_is_read(site, admin_api):
    body = big_body(12, devices=[device("a", "127.0.0.1")], mode="merge")
    response = admin_api.put(inventory_path(), body, content_type="application/json")
    assert response.status_code != 413
    assert ok(response, "PUT", inventory_path())["added"] == 1
    assert Device.objects.filter(sys_name="a").exists()


def test_a_12_mb_post_devices_is_413(site, admin_api):
    body = big_body(12, devices=[device("a", "127.0.0.1")])
    response = admin_api.post(devices_path(), body, content_type="application/json")
    result = err(response, 413, "payload_too_large")
    assert result["fields"] == {}
    assert Device.objects.count() == 0


def test_a_12_mb_put_of_another_resource_is_413(site, admin_api):
    body = big_body(12, label="x")
    err(
        admin_api.put(f"/api/v1/sites/{SITE}", body, content_type="application/json"),
        413,
        "payload_too_large",
    )


def test_the_inventory_limit_is_configurable(site, admin_api, settings):
    settings.MAX_INVENTORY_BODY_BYTES = 1 * MB
    body = big_body(2, devices=[device("a", "127.0.0.1")])
    err(admin_api.put(inventory_path(), body, content_type="application/json"), 413, "payload_too_large")
    assert Device.objects.count() == 0
    small = big_body(0, devices=[device("a", "127.0.0.1")])
    response = admin_api.put(inventory_path(), small, content_type="application/json")
    assert ok(response, "PUT", inventory_path())["added"] == 1
