"""Discovery seeds API: CRUD, validation, masking per scope, encryption at rest, inventory versions."""

from __future__ import annotations

import copy
import re

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from core.crypto import decrypt_json
from core.models import AuditLog
from inventory.models import DiscoverySeed, InventoryChange
from inventory.seeds import parse_seed, parse_seeds, parse_targets, seeds_sync
from inventory.versioning import FULL_SYNC, change_begin, change_commit
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.openapi import assert_matches_schema

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
LIST = f"/api/v1/sites/{SITE}/discovery-seeds"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

AUTH_PASS = "authpass123"
PRIV_PASS = "privpass123"
COMMUNITY = "s3cr3t-c0mmunity"
WRITE_COMMUNITY = "wr1te-c0mmunity"
# The spec's example, with its two single addresses: 256 + 256 + 1 + 1 targets.
DISTRIBUTION = {
    "name": "Distribution Layer",
    "targets": ["10.0.10.0/24", "10.0.11.0/24", "192.168.1.1", "192.168.1.2"],
    "snmpConfig": {
        "version": 3,
        "securityName": "monitor",
        "securityLevel": "authPriv",
        "authProtocol": "SHA256",
        "authPassphrase": AUTH_PASS,
        "privProtocol": "AES256",
        "privPassphrase": PRIV_PASS,
    },
    "schedule": "0 0 2 * * *",
    "enabled": True,
    "options": {"timeout": 5000, "retries": 2, "maxConcurrent": 50},
}
CORE = {
    "name": "Core Network",
    "targets": ["10.0.1.0/24", "10.0.2.0/24"],
    "snmpConfig": {"version": 2, "readCommunity": COMMUNITY, "writeCommunity": WRITE_COMMUNITY},
}
DEFAULT_OPTIONS = {"timeout": 5000, "retries": 1, "maxConcurrent": 50, "port": 161}


def detail(seed_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/discovery-seeds/{seed_id}"


def ok(response, method: str, path: str, status: int = 200) -> dict | None:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert_matches_schema(response, method, path)
    return response.json() if response.content else None


def refused(response, status: int, method: str, path: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert_matches_schema(response, method, path)
    return response.json()


def create(api, body: dict, site: str = SITE) -> dict:
    path = f"/api/v1/sites/{site}/discovery-seeds"
    return ok(api.post(path, body, format="json"), "POST", path, 201)


def version(site: str = SITE) -> int:
    return Site.objects.get(pk=site).inventory_version


def counts(site: str = SITE) -> tuple[int, int, int]:
    """(inventory version, change-log rows, inventory_changed audit rows)."""
    return (
        version(site),
        InventoryChange.objects.filter(site_id=site).count(),
        AuditLog.objects.filter(site_id=site, action="inventory_changed").count(),
    )


@pytest.fixture
def site(make_site):
    make_site(SITE)
    make_site(OTHER)
    return SITE


# --- CRUD ------------------------------------------------------------------------------------------


def test_create_answers_201_with_the_seed_secrets_masked(site, admin_api):
    body = create(admin_api, DISTRIBUTION)
    assert re.match(r"^seed_[0-9a-f]{16}$", body["id"])
    assert body["name"] == "Distribution Layer"
    assert body["targets"] == DISTRIBUTION["targets"]
    assert body["snmpConfig"] == {
        "version": 3,
        "type": "usm",
        "securityName": "monitor",
        "securityLevel": "authPriv",
        "authProtocol": "SHA256",
        "authPassphrase": "****",
        "privProtocol": "AES256",
        "privPassphrase": "****",
    }
    assert body["schedule"] == "0 0 2 * * *"
    assert body["enabled"] is True
    assert body["options"] == {"timeout": 5000, "retries": 2, "maxConcurrent": 50, "port": 161}
    assert body["estimatedTargets"] == 514
    assert body["lastRun"] is None and body["lastRunStatus"] is None and body["devicesFound"] is None
    assert ISO_Z.match(body["createdAt"]) and ISO_Z.match(body["updatedAt"])
    fetched = ok(admin_api.get(detail(body["id"])), "GET", detail(body["id"]))
    assert fetched == body


def test_defaults_and_normalised_targets(site, admin_api):
    body = create(
        admin_api,
        {
            "name": "Edge",
            "targets": [" 10.0.0.1-20 ", "2001:DB8::/120", "10.9.9.9"],
            "snmpConfig": {"version": 1, "readCommunity": COMMUNITY},
        },
    )
    assert body["targets"] == ["10.0.0.1-10.0.0.20", "2001:db8::/120", "10.9.9.9"]
    assert body["estimatedTargets"] == 20 + 256 + 1
    assert body["schedule"] is None
    assert body["enabled"] is True
    assert body["options"] == DEFAULT_OPTIONS
    assert body["snmpConfig"] == {"version": 1, "type": "community", "readCommunity": "****"}


def test_list_answers_the_site_seeds_and_total_with_paging(site, admin_api):
    first = create(admin_api, DISTRIBUTION)
    second = create(admin_api, CORE)
    create(admin_api, {**CORE, "name": "Elsewhere"}, site=OTHER)
    body = ok(admin_api.get(LIST), "GET", LIST)
    assert body["total"] == 2
    assert [seed["id"] for seed in body["discoverySeeds"]] == [first["id"], second["id"]]
    assert body["discoverySeeds"][0] == first
    page = ok(admin_api.get(f"{LIST}?limit=1&offset=1"), "GET", LIST)
    assert page["total"] == 2
    assert [seed["id"] for seed in page["discoverySeeds"]] == [second["id"]]
    assert admin_api.get(f"{LIST}?limit=0").status_code == 400
    empty = ok(admin_api.get(f"/api/v1/sites/{OTHER}/discovery-seeds?offset=5"), "GET", LIST)
    assert empty == {"discoverySeeds": [], "total": 1}


def test_put_replaces_the_whole_seed(site, admin_api):
    seed = create(admin_api, DISTRIBUTION)
    replacement = {
        "name": "Distribution Layer v2",
        "targets": ["10.0.20.0/25"],
        "snmpConfig": {"version": 2, "readCommunity": COMMUNITY},
        "enabled": False,
    }
    body = ok(admin_api.put(detail(seed["id"]), replacement, format="json"), "PUT", detail(seed["id"]))
    assert body["id"] == seed["id"]
    assert body["name"] == "Distribution Layer v2"
    assert body["targets"] == ["10.0.20.0/25"]
    assert body["estimatedTargets"] == 128
    assert body["snmpConfig"] == {"version": 2, "type": "community", "readCommunity": "****"}
    assert body["schedule"] is None  # left out: back to none
    assert body["options"] == DEFAULT_OPTIONS  # left out: back to the defaults
    assert body["enabled"] is False
    assert body["createdAt"] == seed["createdAt"]
    row = DiscoverySeed.objects.get(pk=seed["id"])
    assert decrypt_json(row.credentials) == {"readCommunity": COMMUNITY}
    assert row.credential_keys == ["readCommunity"]
    assert ok(admin_api.get(detail(seed["id"])), "GET", detail(seed["id"])) == body


def test_put_with_another_id_in_the_body_is_refused(site, admin_api):
    seed = create(admin_api, CORE)
    response = admin_api.put(detail(seed["id"]), {**CORE, "id": "seed_other"}, format="json")
    assert refused(response, 400, "PUT", detail(seed["id"]))["fields"] == {
        "id": ["A seed's id cannot change; it must equal the path's id."]
    }
    same = admin_api.put(detail(seed["id"]), {**CORE, "id": seed["id"]}, format="json")
    assert same.status_code == 200


def test_delete_answers_204_then_the_seed_is_gone(site, admin_api):
    seed = create(admin_api, CORE)
    response = admin_api.delete(detail(seed["id"]))
    assert response.status_code == 204 and not response.content
    assert_matches_schema(response, "DELETE", detail(seed["id"]))
    assert refused(admin_api.get(detail(seed["id"])), 404, "GET", detail(seed["id"]))["error"] == "not_found"
    assert refused(admin_api.delete(detail(seed["id"])), 404, "DELETE", detail(seed["id"]))["error"] == (
        "not_found"
    )
    assert not DiscoverySeed.objects.filter(pk=seed["id"]).exists()


def test_unknown_site_or_seed_is_404(site, admin_api):
    seed = create(admin_api, CORE)
    missing = "/api/v1/sites/nowhere/discovery-seeds"
    assert refused(admin_api.get(missing), 404, "GET", missing)["detail"] == "No site 'nowhere'."
    assert refused(admin_api.post(missing, CORE, format="json"), 404, "POST", missing)["error"] == "not_found"
    calls = {
        "GET": lambda path: admin_api.get(path),
        "PUT": lambda path: admin_api.put(path, CORE, format="json"),
        "DELETE": lambda path: admin_api.delete(path),
    }
    # unknown seed; a seed of another site (not found through this one); an unknown site
    for path in (detail("seed_nope"), detail(seed["id"], site=OTHER), detail(seed["id"], site="nowhere")):
        for method, call in calls.items():
            assert refused(call(path), 404, method, path)["error"] == "not_found", (method, path)
    assert DiscoverySeed.objects.filter(pk=seed["id"]).exists()


def test_a_duplicate_name_in_a_site_is_409(site, admin_api):
    first = create(admin_api, CORE)
    response = admin_api.post(LIST, {**DISTRIBUTION, "name": CORE["name"]}, format="json")
    body = refused(response, 409, "POST", LIST)
    assert body["error"] == "already_exists"
    assert "Core Network" in body["detail"]
    # the same name in another site is fine
    create(admin_api, CORE, site=OTHER)
    # renaming onto an existing name is a conflict too
    second = create(admin_api, DISTRIBUTION)
    response = admin_api.put(detail(second["id"]), {**DISTRIBUTION, "name": CORE["name"]}, format="json")
    assert refused(response, 409, "PUT", detail(second["id"]))["error"] == "already_exists"
    assert DiscoverySeed.objects.get(pk=second["id"]).name == "Distribution Layer"
    assert DiscoverySeed.objects.filter(site_id=SITE).count() == 2
    assert DiscoverySeed.objects.get(pk=first["id"]).name == "Core Network"


# --- validation ------------------------------------------------------------------------------------


def v3(**changes) -> dict:
    config = copy.deepcopy(DISTRIBUTION["snmpConfig"])
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


@pytest.mark.parametrize(
    ("snmp_config", "field"),
    [
        ({"version": 2}, "snmpConfig.readCommunity"),
        ({"version": 1}, "snmpConfig.readCommunity"),
        ({"version": 2, "readCommunity": ""}, "snmpConfig.readCommunity"),
        ({"version": 2, "readCommunity": 12345}, "snmpConfig.readCommunity"),
        ({"version": 2, "readCommunity": "****"}, "snmpConfig.readCommunity"),
        ({"version": 2, "readCommunity": "ok", "writeCommunity": 7}, "snmpConfig.writeCommunity"),
        ({"version": "2", "readCommunity": "public"}, "snmpConfig.version"),
        ({"version": True, "readCommunity": "public"}, "snmpConfig.version"),
        ({"version": 4, "readCommunity": "public"}, "snmpConfig.version"),
        ({"readCommunity": "public"}, "snmpConfig.version"),
        ({"version": 2, "type": "usm", "readCommunity": "public"}, "snmpConfig.type"),
        (v3(securityName=None), "snmpConfig.securityName"),
        (v3(securityLevel=None), "snmpConfig.securityLevel"),
        (v3(securityLevel="authAndPriv"), "snmpConfig.securityLevel"),
        (v3(authProtocol="SHA1"), "snmpConfig.authProtocol"),
        (v3(authProtocol=None), "snmpConfig.authProtocol"),
        (v3(privProtocol="3DES"), "snmpConfig.privProtocol"),
        (v3(privProtocol=None), "snmpConfig.privProtocol"),
        (v3(authPassphrase="short"), "snmpConfig.authPassphrase"),
        (v3(authPassphrase=None), "snmpConfig.authPassphrase"),
        (v3(privPassphrase="1234567"), "snmpConfig.privPassphrase"),
        (v3(privPassphrase="****"), "snmpConfig.privPassphrase"),
        (v3(securityLevel="authNoPriv", authPassphrase="1234567"), "snmpConfig.authPassphrase"),
        (v3(securityName="mon\x00itor"), "snmpConfig.securityName"),
        ("v2c public", "snmpConfig"),
        (None, "snmpConfig"),
    ],
)
def test_each_snmp_violation_is_a_400_naming_the_field(site, admin_api, snmp_config, field):
    body = {**CORE}
    if snmp_config is None:
        body.pop("snmpConfig")
    else:
        body["snmpConfig"] = snmp_config
    response = refused(admin_api.post(LIST, body, format="json"), 400, "POST", LIST)
    assert response["error"] == "validation_error"
    assert list(response["fields"]) == [field], response["fields"]
    assert response["fields"][field][0]
    assert not DiscoverySeed.objects.exists()


def test_valid_v3_levels_are_accepted_and_unused_secrets_are_not_kept(site, admin_api):
    no_auth = create(
        admin_api,
        {**CORE, "snmpConfig": {"version": 3, "securityName": "ro", "securityLevel": "noAuthNoPriv"}},
    )
    assert no_auth["snmpConfig"] == {
        "version": 3,
        "type": "usm",
        "securityName": "ro",
        "securityLevel": "noAuthNoPriv",
    }
    auth_only = create(
        admin_api,
        {
            **CORE,
            "name": "auth only",
            "snmpConfig": v3(securityLevel="authNoPriv", authProtocol="MD5", privProtocol=None),
        },
    )
    assert auth_only["snmpConfig"]["authPassphrase"] == "****"
    assert "privPassphrase" not in auth_only["snmpConfig"]
    assert "privProtocol" not in auth_only["snmpConfig"]
    row = DiscoverySeed.objects.get(pk=auth_only["id"])
    assert decrypt_json(row.credentials) == {"authPassphrase": AUTH_PASS}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": 5}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"targets": None}, "targets"),
        ({"targets": []}, "targets"),
        ({"targets": "10.0.0.0/24"}, "targets"),
        ({"targets": ["10.0.0.0/24", "garbage"]}, "targets[1]"),
        ({"targets": ["10.0.0.1/24"]}, "targets[0]"),
        ({"targets": ["10.0.0.9-10.0.0.1"]}, "targets[0]"),
        ({"targets": ["10.0.0.1-2001:db8::1"]}, "targets[0]"),
        ({"targets": [17]}, "targets[0]"),
        ({"targets": ["10.0.0.0/15"]}, "targets"),
        ({"schedule": "30 0 2 * * *"}, "schedule"),
        ({"schedule": "0 0 2 L * *"}, "schedule"),
        ({"schedule": "every night"}, "schedule"),
        ({"schedule": "0 0 25 * * *"}, "schedule"),
        ({"schedule": 2}, "schedule"),
        ({"enabled": "yes"}, "enabled"),
        ({"enabled": 1}, "enabled"),
        ({"options": []}, "options"),
        ({"options": {"timeout": "5000"}}, "options.timeout"),
        ({"options": {"timeout": 99}}, "options.timeout"),
        ({"options": {"timeout": 60001}}, "options.timeout"),
        ({"options": {"retries": 11}}, "options.retries"),
        ({"options": {"retries": True}}, "options.retries"),
        ({"options": {"maxConcurrent": 0}}, "options.maxConcurrent"),
        ({"options": {"maxConcurrent": 1025}}, "options.maxConcurrent"),
        ({"options": {"port": 0}}, "options.port"),
        ({"options": {"port": 65536}}, "options.port"),
        ({"options": {"port": 161.0}}, "options.port"),
    ],
)
def test_each_seed_violation_is_a_400_naming_the_field(site, admin_api, changes, field):
    body = {**DISTRIBUTION}
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    response = refused(admin_api.post(LIST, body, format="json"), 400, "POST", LIST)
    assert list(response["fields"]) == [field], response["fields"]
    assert not DiscoverySeed.objects.exists()


def test_a_bad_schedule_says_why(site, admin_api):
    response = refused(
        admin_api.post(LIST, {**CORE, "schedule": "30 0 2 * * *"}, format="json"), 400, "POST", LIST
    )
    assert response["fields"]["schedule"] == [
        "Invalid cron expression: seconds must be 0: schedules run on whole minutes."
    ]
    five = create(admin_api, {**CORE, "schedule": "15 3 * * MON-FRI"})
    assert five["schedule"] == "15 3 * * MON-FRI"
    blank = create(admin_api, {**CORE, "name": "no schedule", "schedule": ""})
    assert blank["schedule"] is None


def test_too_many_addresses_names_the_limit(site, admin_api, settings):
    settings.MAX_SEED_ADDRESSES = 300
    response = admin_api.post(LIST, {**CORE, "targets": ["10.0.1.0/24", "10.0.2.0/26"]}, format="json")
    body = refused(response, 400, "POST", LIST)
    assert body["fields"] == {
        "targets": ["The targets cover 320 addresses; at most 300 per seed (MAX_SEED_ADDRESSES)."]
    }
    settings.MAX_SEED_ADDRESSES = 65536
    assert create(admin_api, {**CORE, "targets": ["10.0.0.0/16"]})["estimatedTargets"] == 65536


def test_several_violations_are_all_reported(site, admin_api):
    body = {"name": "", "targets": ["nope"], "snmpConfig": {"version": 2}, "options": {"port": "161"}}
    response = refused(admin_api.post(LIST, body, format="json"), 400, "POST", LIST)
    assert sorted(response["fields"]) == ["name", "options.port", "snmpConfig.readCommunity", "targets[0]"]


def test_a_body_that_is_not_an_object_is_400(site, admin_api):
    response = refused(admin_api.post(LIST, [CORE], format="json"), 400, "POST", LIST)
    assert response["fields"] == {"non_field_errors": ["Expected an object."]}
    response = admin_api.post(LIST, "{not json", content_type="application/json")
    assert response.status_code == 400


def test_put_validates_like_create(site, admin_api):
    seed = create(admin_api, CORE)
    response = admin_api.put(detail(seed["id"]), {**CORE, "snmpConfig": {"version": 2}}, format="json")
    assert list(refused(response, 400, "PUT", detail(seed["id"]))["fields"]) == ["snmpConfig.readCommunity"]
    row = DiscoverySeed.objects.get(pk=seed["id"])
    assert decrypt_json(row.credentials)["readCommunity"] == COMMUNITY


def test_parse_seed_prefixes_error_paths():
    _, errors = parse_seed({**CORE, "snmpConfig": {"version": 2}, "targets": ["x"]}, "discoverySeeds[2]")
    assert sorted(errors) == ["discoverySeeds[2].snmpConfig.readCommunity", "discoverySeeds[2].targets[0]"]
    _, errors = parse_seed("nope", "discoverySeeds[0]")
    assert errors == {"discoverySeeds[0]": ["Expected an object."]}
    seeds, errors = parse_seeds([CORE, DISTRIBUTION, {**CORE, "targets": ["10.0.0.1"]}])
    assert seeds == []
    assert list(errors) == ["discoverySeeds[2].name"]
    seeds, errors = parse_seeds([CORE, DISTRIBUTION])
    assert errors == {} and [seed.name for seed in seeds] == ["Core Network", "Distribution Layer"]
    assert parse_seeds({"not": "a list"}) == ([], {"discoverySeeds": ["Expected a list of discovery seeds."]})


# --- credentials: masking per scope, encryption at rest ------------------------------------------


def secrets_of(seed: dict) -> dict:
    config = seed["snmpConfig"]
    return {key: config[key] for key in ("authPassphrase", "privPassphrase") if key in config}


def test_without_include_credentials_every_scope_sees_the_mask(site, admin_api, client_for):
    seed = create(admin_api, DISTRIBUTION)
    for scopes in (["admin"], ["read"], ["write"], ["instance"], ["read", "write"]):
        api = client_for(*scopes, site=SITE)
        one = ok(api.get(detail(seed["id"])), "GET", detail(seed["id"]))
        assert secrets_of(one) == {"authPassphrase": "****", "privPassphrase": "****"}, scopes
        listed = ok(api.get(LIST), "GET", LIST)["discoverySeeds"][0]
        assert secrets_of(listed) == {"authPassphrase": "****", "privPassphrase": "****"}, scopes
        explicit = ok(api.get(f"{detail(seed['id'])}?includeCredentials=false"), "GET", detail(seed["id"]))
        assert secrets_of(explicit) == {"authPassphrase": "****", "privPassphrase": "****"}, scopes


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1"])
def test_admin_and_instance_tokens_may_ask_for_credentials(site, admin_api, client_for, value):
    seed = create(admin_api, DISTRIBUTION)
    core = create(admin_api, CORE)
    revealed = {"authPassphrase": AUTH_PASS, "privPassphrase": PRIV_PASS}
    for api in (
        admin_api,
        client_for("instance", site=SITE),
        client_for("instance"),
        client_for("admin", site=SITE),
    ):
        path = f"{detail(seed['id'])}?includeCredentials={value}"
        assert secrets_of(ok(api.get(path), "GET", path)) == revealed
        listed = ok(api.get(f"{LIST}?includeCredentials={value}"), "GET", LIST)["discoverySeeds"]
        assert secrets_of(listed[0]) == revealed
        assert listed[1]["snmpConfig"] == {
            "version": 2,
            "type": "community",
            "readCommunity": COMMUNITY,
            "writeCommunity": WRITE_COMMUNITY,
        }
    path = f"{detail(core['id'])}?includeCredentials={value}"
    updated = ok(admin_api.put(path, {**CORE, "enabled": False}, format="json"), "PUT", path)
    assert updated["snmpConfig"]["readCommunity"] == COMMUNITY
    created = ok(
        admin_api.post(f"{LIST}?includeCredentials={value}", {**CORE, "name": "more"}, format="json"),
        "POST",
        LIST,
        201,
    )
    assert created["snmpConfig"]["writeCommunity"] == WRITE_COMMUNITY


def test_read_and_write_tokens_asking_for_credentials_get_403(site, admin_api, client_for):
    seed = create(admin_api, DISTRIBUTION)
    for scopes in (["read"], ["write"], ["read", "write"]):
        api = client_for(*scopes)
        for path in (detail(seed["id"]), LIST):
            response = api.get(f"{path}?includeCredentials=true")
            body = refused(response, 403, "GET", path)
            assert body["error"] == "forbidden"
            assert AUTH_PASS not in response.content.decode()
    writer = client_for("write")
    response = writer.post(f"{LIST}?includeCredentials=true", {**CORE}, format="json")
    refused(response, 403, "POST", LIST)
    response = writer.put(f"{detail(seed['id'])}?includeCredentials=1", {**CORE}, format="json")
    refused(response, 403, "PUT", detail(seed["id"]))
    assert DiscoverySeed.objects.count() == 1
    assert DiscoverySeed.objects.get().name == "Distribution Layer"


def test_include_credentials_must_be_a_boolean(site, admin_api):
    seed = create(admin_api, DISTRIBUTION)
    for value in ("yes", "2", "", "truee"):
        response = admin_api.get(f"{detail(seed['id'])}?includeCredentials={value}")
        body = refused(response, 400, "GET", detail(seed["id"]))
        assert list(body["fields"]) == ["includeCredentials"]


def test_the_database_holds_no_plaintext_secret(site, admin_api):
    create(admin_api, DISTRIBUTION)
    create(admin_api, CORE)
    v1 = create(
        admin_api, {**CORE, "name": "v1", "snmpConfig": {"version": 1, "readCommunity": "v1-only-community"}}
    )
    secrets = [AUTH_PASS, PRIV_PASS, COMMUNITY, WRITE_COMMUNITY, "v1-only-community"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM discovery_seeds")
        columns = [column.name for column in cursor.description]
        rows = cursor.fetchall()
    assert len(rows) == 3
    assert "credentials" in columns
    for row in rows:
        for column, value in zip(columns, row, strict=True):
            text = str(value)
            for secret in secrets:
                assert secret not in text, f"{secret!r} in plaintext in discovery_seeds.{column}"
        credentials = row[columns.index("credentials")]
        assert credentials.startswith("enc1:")
    # … and yet they are there, under the key ring
    assert decrypt_json(DiscoverySeed.objects.get(pk=v1["id"]).credentials) == {
        "readCommunity": "v1-only-community"
    }
    # nor in the audit trail
    for entry in AuditLog.objects.all():
        for secret in secrets:
            assert secret not in str(entry.details)


# --- scopes and site binding -----------------------------------------------------------------------


def test_scope_matrix(site, admin_api, client_for):
    seed = create(admin_api, CORE)
    reader = client_for("read")
    instance = client_for("instance", site=SITE)
    writer = client_for("write")
    assert reader.get(LIST).status_code == 200
    assert instance.get(LIST).status_code == 200
    assert instance.get(detail(seed["id"])).status_code == 200
    for api in (reader, instance):
        refused(api.post(LIST, {**CORE, "name": "x"}, format="json"), 403, "POST", LIST)
        refused(api.put(detail(seed["id"]), CORE, format="json"), 403, "PUT", detail(seed["id"]))
        refused(api.delete(detail(seed["id"])), 403, "DELETE", detail(seed["id"]))
    assert DiscoverySeed.objects.get(pk=seed["id"]).name == CORE["name"]
    created = create(writer, {**CORE, "name": "by writer"})
    path = detail(created["id"])
    assert ok(writer.put(path, {**CORE, "name": "by writer 2"}, format="json"), "PUT", path)["name"] == (
        "by writer 2"
    )
    assert writer.delete(path).status_code == 204
    anonymous = APIClient()
    assert refused(anonymous.get(LIST), 401, "GET", LIST)["error"] == "unauthorized"


def test_a_token_bound_to_another_site_gets_403(site, admin_api, client_for):
    seed = create(admin_api, CORE)
    for scopes in (["read"], ["write"], ["instance"], ["admin"]):
        api = client_for(*scopes, site=OTHER)
        assert refused(api.get(LIST), 403, "GET", LIST)["error"] == "forbidden"
        assert refused(api.get(detail(seed["id"])), 403, "GET", detail(seed["id"]))["error"] == "forbidden"
        assert api.get(f"{LIST}?includeCredentials=true").status_code == 403
    writer = client_for("write", site=OTHER)
    refused(writer.post(LIST, {**CORE, "name": "x"}, format="json"), 403, "POST", LIST)
    refused(
        writer.put(detail(seed["id"]), {**CORE, "name": "y"}, format="json"), 403, "PUT", detail(seed["id"])
    )
    refused(writer.delete(detail(seed["id"])), 403, "DELETE", detail(seed["id"]))
    assert list(DiscoverySeed.objects.filter(site_id=SITE).values_list("name", flat=True)) == [CORE["name"]]
    # bound to its own site, it works
    own = client_for("write", site=SITE)
    assert own.post(LIST, {**CORE, "name": "x"}, format="json").status_code == 201


# --- inventory versions ----------------------------------------------------------------------------


def test_every_seed_change_is_exactly_one_inventory_version(site, admin_api):
    start_version, start_changes, start_audit = counts()
    other_before = counts(OTHER)

    seed = create(admin_api, DISTRIBUTION)
    assert counts() == (start_version + 1, start_changes + 1, start_audit + 1)
    change = InventoryChange.objects.get(site_id=SITE, version=start_version + 1)
    assert change.change_type == FULL_SYNC
    assert (change.added_ids, change.updated_ids, change.removed_ids) == ([], [], [])
    assert change.source == "api"
    audit = AuditLog.objects.filter(site_id=SITE, action="inventory_changed").latest("id")
    assert audit.details["version"] == start_version + 1
    assert audit.details["seeds"] == {
        "added": [seed["id"]],
        "updated": [],
        "removed": [],
        "name": DISTRIBUTION["name"],
    }
    site_body = admin_api.get(f"/api/v1/sites/{SITE}").json()
    assert site_body["stats"]["seedCount"] == 1
    assert site_body["stats"]["inventoryVersion"] == start_version + 1

    # a PUT that changes nothing: same body, same answer, nothing written
    updated_at = DiscoverySeed.objects.get(pk=seed["id"]).updated_at
    again = ok(admin_api.put(detail(seed["id"]), DISTRIBUTION, format="json"), "PUT", detail(seed["id"]))
    assert again == seed
    assert counts() == (start_version + 1, start_changes + 1, start_audit + 1)
    assert DiscoverySeed.objects.get(pk=seed["id"]).updated_at == updated_at
    # … also when the body says it differently (defaults spelled out, targets un-normalised)
    spelled_out = {
        **DISTRIBUTION,
        "targets": [" 10.0.10.0/24", "10.0.11.0/024", "192.168.1.1", "192.168.1.2 "],
        "options": {**DISTRIBUTION["options"], "port": 161},
        "id": seed["id"],
        "lastRun": None,
    }
    ok(admin_api.put(detail(seed["id"]), spelled_out, format="json"), "PUT", detail(seed["id"]))
    assert counts() == (start_version + 1, start_changes + 1, start_audit + 1)

    # a changed secret alone is a change
    changed = {**DISTRIBUTION, "snmpConfig": v3(privPassphrase="another-priv-pass")}
    ok(admin_api.put(detail(seed["id"]), changed, format="json"), "PUT", detail(seed["id"]))
    assert counts() == (start_version + 2, start_changes + 2, start_audit + 2)
    audit = AuditLog.objects.filter(site_id=SITE, action="inventory_changed").latest("id")
    assert audit.details["seeds"]["updated"] == [seed["id"]]
    assert decrypt_json(DiscoverySeed.objects.get(pk=seed["id"]).credentials)["privPassphrase"] == (
        "another-priv-pass"
    )

    assert admin_api.delete(detail(seed["id"])).status_code == 204
    assert counts() == (start_version + 3, start_changes + 3, start_audit + 3)
    audit = AuditLog.objects.filter(site_id=SITE, action="inventory_changed").latest("id")
    assert audit.details["seeds"]["removed"] == [seed["id"]]
    assert admin_api.get(f"/api/v1/sites/{SITE}").json()["stats"]["seedCount"] == 0

    # refused writes move nothing either
    admin_api.post(LIST, {**CORE, "targets": []}, format="json")
    create(admin_api, CORE)
    admin_api.post(LIST, CORE, format="json")  # 409
    assert counts() == (start_version + 4, start_changes + 4, start_audit + 4)
    assert counts(OTHER) == other_before


# --- seeds_sync (PUT inventory's part) ------------------------------------------------------------


def sync(seeds: list[dict], mode: str) -> tuple[dict, int]:
    parsed, errors = parse_seeds(seeds)
    assert errors == {}
    with transaction.atomic():
        change = change_begin(SITE)
        result = seeds_sync(change=change, seeds=parsed, mode=mode)
        if any(result.values()):
            change_commit(
                change,
                actor=TEST_ACTOR,
                change_type=FULL_SYNC,
                added=[],
                updated=[],
                removed=[],
                source="import",
                triggered_by="tests",
                details={"seeds": result},
            )
    return result, version()


def by_name() -> dict[str, DiscoverySeed]:
    return {seed.name: seed for seed in DiscoverySeed.objects.filter(site_id=SITE)}


def test_sync_merge_adds_updates_and_keeps(site, admin_api):
    kept = create(admin_api, {**CORE, "name": "kept"})
    base = version()
    result, after = sync([CORE, DISTRIBUTION], "merge")
    rows = by_name()
    assert sorted(result["added"]) == sorted([rows["Core Network"].id, rows["Distribution Layer"].id])
    assert result["updated"] == [] and result["removed"] == []
    assert after == base + 1
    assert set(rows) == {"kept", "Core Network", "Distribution Layer"}
    assert rows["Distribution Layer"].options == {**DEFAULT_OPTIONS, "retries": 2}
    assert decrypt_json(rows["Core Network"].credentials) == {
        "readCommunity": COMMUNITY,
        "writeCommunity": WRITE_COMMUNITY,
    }
    assert rows["Core Network"].credential_keys == ["readCommunity", "writeCommunity"]

    # unchanged: nothing written, nothing to commit
    result, again = sync([CORE, DISTRIBUTION], "merge")
    assert result == {"added": [], "updated": [], "removed": []}
    assert again == after
    assert by_name()["Core Network"].updated_at == rows["Core Network"].updated_at

    result, _ = sync([{**CORE, "enabled": False}, DISTRIBUTION], "merge")
    assert result == {"added": [], "updated": [rows["Core Network"].id], "removed": []}
    assert by_name()["Core Network"].enabled is False
    assert by_name()["kept"].id == kept["id"]


def test_sync_add_only_never_updates(site, admin_api):
    existing = create(admin_api, CORE)
    result, _ = sync([{**CORE, "enabled": False}, DISTRIBUTION], "addOnly")
    rows = by_name()
    assert result == {"added": [rows["Distribution Layer"].id], "updated": [], "removed": []}
    assert rows["Core Network"].id == existing["id"]
    assert rows["Core Network"].enabled is True


def test_sync_replace_deletes_what_is_not_given(site, admin_api):
    gone = create(admin_api, {**CORE, "name": "gone"})
    stays = create(admin_api, CORE)
    base = version()
    result, after = sync([{**CORE, "targets": ["10.0.3.0/24"]}, DISTRIBUTION], "replace")
    rows = by_name()
    assert result == {
        "added": [rows["Distribution Layer"].id],
        "updated": [stays["id"]],
        "removed": [gone["id"]],
    }
    assert after == base + 1
    assert set(rows) == {"Core Network", "Distribution Layer"}
    assert rows["Core Network"].targets == ["10.0.3.0/24"]
    result, _ = sync([], "replace")
    assert sorted(result["removed"]) == sorted(seed.id for seed in rows.values())
    assert not DiscoverySeed.objects.filter(site_id=SITE).exists()
    assert Site.objects.get(pk=SITE).seed_count == 0


# --- targets of a seed (inventory.seeds.parse_targets) ---------------------------------------------


def test_a_seed_may_cover_at_most_max_seed_addresses(settings):
    settings.MAX_SEED_ADDRESSES = 65536
    errors: dict[str, list[str]] = {}
    assert len(parse_targets(["10.0.0.0/16"], "targets", errors)) == 1
    assert errors == {}

    parse_targets(["10.0.0.0/16", "10.1.0.0"], "targets", errors)
    assert list(errors) == ["targets"]
    assert "65537 addresses; at most 65536" in errors["targets"][0]

    errors = {}
    parse_targets(["10.0.0.0/8"], "targets", errors)
    assert "16777216 addresses" in errors["targets"][0]

    settings.MAX_SEED_ADDRESSES = 10
    errors = {}
    parse_targets(["10.0.0.1-10.0.0.10"], "targets", errors)
    assert errors == {}
    parse_targets(["10.0.0.1-10.0.0.11"], "targets", errors)
    assert "at most 10 per seed" in errors["targets"][0]


def test_each_bad_target_is_named_by_its_index():
    errors: dict[str, list[str]] = {}
    parse_targets(["10.0.0.1", "nope", "10.0.0.9-10.0.0.1"], "discoverySeeds[0].targets", errors)
    assert sorted(errors) == ["discoverySeeds[0].targets[1]", "discoverySeeds[0].targets[2]"]
    assert "'nope'" in errors["discoverySeeds[0].targets[1]"][0]
