"""Credentials at rest and on the wire: "****" for everyone unless includeCredentials=true from an admin
token or the site's instance token (403 for anyone else asking); no plaintext secret in any database
row; AES-256-GCM ciphertexts naming their key; key rotation with rotate_encryption_key."""

from __future__ import annotations

import base64
import io
import json

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from django.db import connection

from core.crypto import DecryptionError, KeyRing, decrypt_json, key_ring
from core.models import AuditLog
from inventory.models import Agent, DiscoverySeed
from tests.inventory.test_inventory_api import (
    OTHER,
    SITE,
    by_name,
    changes_path,
    community_agent,
    device,
    device_path,
    err,
    get_inventory,
    inventory_path,
    ok,
    put_inventory,
    usm_agent,
    version_of,
)

SECRETS = {
    "v1-read": "v1-read-community",
    "v1-write": "v1-write-community",
    "v2-read": "v2c-read-community",
    "auth": "v3-auth-passphrase",
    "priv": "v3-priv-passphrase",
    "seed-read": "seed-read-community",
    "seed-auth": "seed-auth-passphrase",
    "seed-priv": "seed-priv-passphrase",
}
OLD_KEY = base64.b64encode(bytes(range(32))).decode()
NEW_KEY = base64.b64encode(bytes(range(100, 132))).decode()


def secret_inventory() -> tuple[list[dict], list[dict]]:
    v1 = device(
        "v1-device",
        agents=[
            community_agent(
                "127.0.1.1", SECRETS["v1-read"], version=1, writeCommunity=SECRETS["v1-write"], isPrimary=True
            )
        ],
    )
    v2 = device("v2c-device", agents=[community_agent("127.0.1.2", SECRETS["v2-read"])])
    v3 = device(
        "v3-device",
        agents=[usm_agent("127.0.1.3", authPassphrase=SECRETS["auth"], privPassphrase=SECRETS["priv"])],
    )
    seeds = [
        {
            "name": "v2c seed",
            "targets": ["127.0.0.0/30"],
            "snmpConfig": {"version": 2, "readCommunity": SECRETS["seed-read"]},
        },
        {
            "name": "v3 seed",
            "targets": ["127.0.0.4"],
            "snmpConfig": {
                "version": 3,
                "securityName": "monitor",
                "securityLevel": "authPriv",
                "authProtocol": "SHA512",
                "authPassphrase": SECRETS["seed-auth"],
                "privProtocol": "AES128",
                "privPassphrase": SECRETS["seed-priv"],
            },
        },
    ]
    return [v1, v2, v3], seeds


@pytest.fixture
def stocked(make_site, admin_api) -> str:
    make_site(SITE)
    devices, seeds = secret_inventory()
    put_inventory(admin_api, devices, discoverySeeds=seeds)
    return SITE


def agents_of(inventory: dict) -> dict[str, dict]:
    return {name: d["agents"][0] for name, d in by_name(inventory).items()}


def seeds_of(inventory: dict) -> dict[str, dict]:
    return {s["name"]: s["snmpConfig"] for s in inventory["discoverySeeds"]}


def assert_masked(inventory: dict) -> None:
    agents = agents_of(inventory)
    assert agents["v1-device"]["readCommunity"] == agents["v1-device"]["writeCommunity"] == "****"
    assert agents["v2c-device"]["readCommunity"] == "****"
    assert "writeCommunity" not in agents["v2c-device"]
    assert agents["v3-device"]["authPassphrase"] == agents["v3-device"]["privPassphrase"] == "****"
    # The non-secret settings stay visible.
    assert agents["v3-device"]["securityName"] == "monitor"
    assert agents["v3-device"]["authProtocol"] == "SHA256"
    assert agents["v3-device"]["privProtocol"] == "AES256"
    seeds = seeds_of(inventory)
    assert seeds["v2c seed"]["readCommunity"] == "****"
    assert seeds["v3 seed"]["authPassphrase"] == seeds["v3 seed"]["privPassphrase"] == "****"
    text = json.dumps(inventory)
    for secret in SECRETS.values():
        assert secret not in text


def assert_revealed(inventory: dict) -> None:
    agents = agents_of(inventory)
    assert agents["v1-device"]["readCommunity"] == SECRETS["v1-read"]
    assert agents["v1-device"]["writeCommunity"] == SECRETS["v1-write"]
    assert agents["v2c-device"]["readCommunity"] == SECRETS["v2-read"]
    assert agents["v3-device"]["authPassphrase"] == SECRETS["auth"]
    assert agents["v3-device"]["privPassphrase"] == SECRETS["priv"]
    seeds = seeds_of(inventory)
    assert seeds["v2c seed"]["readCommunity"] == SECRETS["seed-read"]
    assert seeds["v3 seed"]["authPassphrase"] == SECRETS["seed-auth"]
    assert seeds["v3 seed"]["privPassphrase"] == SECRETS["seed-priv"]


# --- on the wire --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["read", "write", "instance", "admin"])
def test_every_caller_sees_masks_without_include_credentials(stocked, client_for, scope):
    api = client_for(scope, site=SITE)
    assert_masked(get_inventory(api))
    assert_masked(get_inventory(api, includeCredentials="false"))
    inventory = get_inventory(api)
    v3 = by_name(inventory)["v3-device"]
    one = ok(api.get(device_path(v3["id"])), "GET", device_path(v3["id"]))
    assert one["agents"][0]["authPassphrase"] == one["agents"][0]["privPassphrase"] == "****"
    body = ok(api.get(changes_path(), {"since": version_of() - 1}), "GET", changes_path())
    assert_masked(body)


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_admin_tokens_may_reveal(stocked, admin_api, value):
    assert_revealed(get_inventory(admin_api, includeCredentials=value))
    v3 = by_name(get_inventory(admin_api))["v3-device"]
    response = admin_api.get(device_path(v3["id"]), {"includeCredentials": value})
    assert ok(response, "GET", device_path(v3["id"]))["agents"][0]["privPassphrase"] == SECRETS["priv"]


def test_instance_tokens_of_the_site_may_reveal(stocked, client_for):
    api = client_for("instance", site=SITE)
    assert_revealed(get_inventory(api, includeCredentials="true"))
    body = ok(
        api.get(changes_path(), {"since": version_of() - 1, "includeCredentials": "true"}),
        "GET",
        changes_path(),
    )
    assert_revealed(body)


@pytest.mark.parametrize("scope", ["read", "write", "read+write"])
def test_read_and_write_tokens_asking_for_credentials_get_403(stocked, client_for, scope):
    api = client_for(*scope.split("+"), site=SITE)
    v1 = by_name(get_inventory(api))["v1-device"]
    for path, params in (
        (inventory_path(), {}),
        (device_path(v1["id"]), {}),
        (changes_path(), {"since": version_of()}),
    ):
        response = api.get(path, {**params, "includeCredentials": "true"})
        body = err(response, 403, "forbidden")
        for secret in SECRETS.values():
            assert secret not in json.dumps(body)


@pytest.mark.parametrize("scope", ["instance", "admin"])
def test_a_token_bound_to_another_site_may_not_reveal(stocked, make_site, client_for, scope):
    make_site(OTHER)
    api = client_for(scope, site=OTHER)
    response = api.get(inventory_path(), {"includeCredentials": "true"})
    body = err(response, 403, "forbidden")
    assert all(secret not in json.dumps(body) for secret in SECRETS.values())
    err(api.get(inventory_path()), 403, "forbidden")


@pytest.mark.parametrize("value", ["maybe", "yes", "2", "truee"])
def test_include_credentials_must_be_a_boolean(stocked, admin_api, value):
    body = err(admin_api.get(inventory_path(), {"includeCredentials": value}), 400, "validation_error")
    assert list(body["fields"]) == ["includeCredentials"]


# --- at rest ------------------------------------------------------------------------------------------


def raw_rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # fixed table names only
        return cursor.fetchall()


def column_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")
    return json.dumps(value, default=str)


def test_no_plaintext_secret_in_any_row(stocked, admin_api):
    # Exercise the other writes too: an update, a POST, a delete, a seed change.
    devices, seeds = secret_inventory()
    devices[1]["sysDescr"] = "updated"
    seeds[0]["enabled"] = False
    put_inventory(admin_api, devices, discoverySeeds=seeds)
    v2 = by_name(get_inventory(admin_api))["v2c-device"]
    assert admin_api.delete(device_path(v2["id"])).status_code == 204
    revealed = get_inventory(admin_api, includeCredentials="true")
    assert agents_of(revealed)["v3-device"]["privPassphrase"] == SECRETS["priv"]

    tables = ("agents", "devices", "audit_log", "inventory_changes", "discovery_seeds", "sites")
    for table in tables:
        rows = raw_rows(table)
        assert rows, table
        for row in rows:
            for value in row:
                text = column_text(value)
                for secret in SECRETS.values():
                    assert secret not in text, (table, secret)
    assert len(raw_rows("agents")) == 2 and len(raw_rows("discovery_seeds")) == 2
    assert raw_rows("audit_log")


def test_ciphertexts_name_their_key(stocked):
    primary = key_ring().primary_id
    prefix = f"enc1:{primary}:"
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM agents UNION ALL SELECT credentials FROM discovery_seeds")
        stored = [row[0] for row in cursor.fetchall()]
    assert len(stored) == 5
    for value in stored:
        assert value.startswith(prefix), value[:20]
        # 12-byte nonce + at least the 16-byte tag
        assert len(base64.b64decode(value[len(prefix) :])) >= 28
    # Two encryptions of the same secrets differ (a fresh nonce each time).
    same = KeyRing.parse(f"k:{OLD_KEY}")
    assert same.encrypt(b"public") != same.encrypt(b"public")


def test_a_tampered_ciphertext_does_not_decrypt(stocked):
    agent = Agent.objects.filter(device__sys_name="v2c-device").get()
    prefix, key_id, payload = agent.credentials.split(":", 2)
    raw = bytearray(base64.b64decode(payload))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        decrypt_json(f"{prefix}:{key_id}:{base64.b64encode(bytes(raw)).decode()}")
    with pytest.raises(DecryptionError):
        decrypt_json("v2c-read-community")
    # The key id is authenticated: the same payload under another id of the ring does not open.
    ring = KeyRing.parse(f"a:{OLD_KEY},b:{OLD_KEY}")
    sealed = ring.encrypt(b"{}")
    with pytest.raises(DecryptionError):
        ring.decrypt(sealed.replace("enc1:a:", "enc1:b:"))


# --- key rotation -------------------------------------------------------------------------------------


def stored_ciphertexts() -> list[str]:
    agents = Agent.objects.values_list("credentials", flat=True)
    seeds = DiscoverySeed.objects.values_list("credentials", flat=True)
    return [*agents, *seeds]


def rotate() -> str:
    out = io.StringIO()
    call_command("rotate_encryption_key", stdout=out)
    return out.getvalue()


def test_key_rotation(make_site, admin_api, settings):
    settings.FIELD_ENCRYPTION_KEYS = f"old:{OLD_KEY}"
    make_site(SITE)
    devices, seeds = secret_inventory()
    put_inventory(admin_api, devices, discoverySeeds=seeds)
    version = version_of()
    before = get_inventory(admin_api, includeCredentials="true")
    assert_revealed(before)
    assert len(stored_ciphertexts()) == 5
    assert all(value.startswith("enc1:old:") for value in stored_ciphertexts())

    settings.FIELD_ENCRYPTION_KEYS = f"new:{NEW_KEY},old:{OLD_KEY}"
    # Still old ciphertexts: they decrypt with the ring's second key.
    assert_revealed(get_inventory(admin_api, includeCredentials="true"))
    output = rotate()
    assert "inventory.Agent.credentials: 3 re-encrypted" in output
    assert "inventory.DiscoverySeed.credentials: 2 re-encrypted" in output
    assert all(value.startswith("enc1:new:") for value in stored_ciphertexts())
    after = get_inventory(admin_api, includeCredentials="true")
    assert after == before  # same plaintexts, same ids, same version
    assert version_of() == version

    second = rotate()
    assert "inventory.Agent.credentials: 0 re-encrypted" in second
    assert "inventory.DiscoverySeed.credentials: 0 re-encrypted" in second

    # Rotation changes no fingerprint: re-importing the same inventory is still "unchanged".
    result = put_inventory(admin_api, devices, discoverySeeds=seeds)
    assert result["changed"] is False and result["version"] == version

    settings.FIELD_ENCRYPTION_KEYS = f"new:{NEW_KEY}"
    assert get_inventory(admin_api, includeCredentials="true") == before

    # The old key alone no longer opens anything, and says so.
    settings.FIELD_ENCRYPTION_KEYS = f"old:{OLD_KEY}"
    for value in stored_ciphertexts():
        with pytest.raises(DecryptionError, match="'new'"):
            decrypt_json(value)
    with pytest.raises(CommandError):
        rotate()


def test_rotation_leaves_an_audit_row(stocked, settings):
    settings.FIELD_ENCRYPTION_KEYS = f"new:{NEW_KEY},{settings.FIELD_ENCRYPTION_KEYS}"
    before = AuditLog.objects.filter(action="encryption_key_rotated").count()
    rotate()
    entry = AuditLog.objects.filter(action="encryption_key_rotated").order_by("-id").first()
    assert AuditLog.objects.filter(action="encryption_key_rotated").count() == before + 1
    assert entry.entity_type == "encryption_key" and entry.entity_id == "new"
    assert entry.actor == "command:manage.py rotate_encryption_key"
    assert entry.details["reencrypted"] == {
        "inventory.Agent.credentials": 3,
        "inventory.DiscoverySeed.credentials": 2,
        "inventory.ImportPayload.data": 0,  # no import job is waiting
    }


def test_rotation_in_small_batches(stocked, settings):
    settings.FIELD_ENCRYPTION_KEYS = f"new:{NEW_KEY},{settings.FIELD_ENCRYPTION_KEYS}"
    call_command("rotate_encryption_key", "--batch-size", "1", stdout=io.StringIO())
    assert all(value.startswith("enc1:new:") for value in stored_ciphertexts())


# --- the key ring -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param("short:" + base64.b64encode(bytes(16)).decode(), id="16-byte key"),
        pytest.param("long:" + base64.b64encode(bytes(33)).decode(), id="33-byte key"),
        pytest.param(f"a:{OLD_KEY},a:{NEW_KEY}", id="duplicate id"),
        pytest.param(f":{OLD_KEY}", id="missing id"),
        pytest.param(OLD_KEY, id="no id at all"),
        pytest.param("a:not base64!!", id="not base64"),
        pytest.param("a-b:" + OLD_KEY, id="id not alphanumeric"),
        pytest.param("", id="empty"),
        pytest.param(" , ", id="only separators"),
    ],
)
def test_key_ring_parsing_errors(spec, settings):
    with pytest.raises(ImproperlyConfigured):
        KeyRing.parse(spec)
    settings.FIELD_ENCRYPTION_KEYS = spec
    with pytest.raises(ImproperlyConfigured):
        key_ring()


def test_key_ring_first_key_encrypts_every_key_decrypts():
    ring = KeyRing.parse(f"new:{NEW_KEY}, old:{OLD_KEY}")
    assert ring.primary_id == "new" and set(ring.keys) == {"new", "old"}
    old_only = KeyRing.parse(f"old:{OLD_KEY}")
    sealed = old_only.encrypt(b"secret")
    assert sealed.startswith("enc1:old:")
    assert ring.decrypt(sealed) == b"secret"
    assert ring.encrypt(b"secret").startswith("enc1:new:")
    with pytest.raises(DecryptionError):
        old_only.decrypt(ring.encrypt(b"secret"))
