"""Inventory API: GET (conditional, ETag, deviceIds), PUT merge | replace | addOnly (all or nothing,
one version per change set), POST devices (upsert, partial failure, lastSeen, 409 not_leader),
GET/DELETE one device, the site's counters, and the scope matrix. Every 2xx body is checked against
the published OpenAPI schema.

The helpers at the top are shared with the other inventory test modules.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from core.models import AuditLog
from instances.models import Instance
from inventory.models import Agent, Device, InventoryChange
from sites.models import Site
from tests.openapi import assert_matches_schema

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def inventory_path(site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/inventory"


def devices_path(site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/inventory/devices"


def device_path(device_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/inventory/devices/{device_id}"


def changes_path(site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/inventory/changes"


# --- payloads ---------------------------------------------------------------------------------------


def community_agent(address: str, community: str = "public123", version: int = 2, **extra) -> dict:
    return {
        "address": address,
        "port": 161,
        "version": version,
        "type": "community",
        "readCommunity": community,
        **extra,
    }


def usm_agent(address: str, **extra) -> dict:
    return {
        "address": address,
        "port": 161,
        "version": 3,
        "type": "usm",
        "securityName": "monitor",
        "securityLevel": "authPriv",
        "authProtocol": "SHA256",
        "authPassphrase": "authpass123",
        "privProtocol": "AES256",
        "privPassphrase": "privpass123",
        **extra,
    }


def device(name: str | None, address: str = "127.0.0.1", **extra) -> dict:
    return {
        "sysName": name,
        "sysDescr": f"Cisco IOS XR for {name or address}",
        "sysContact": "noc@example.com",
        "sysLocation": "Chicago POP, Rack A1",
        "sysObjectId": "1.3.6.1.4.1.9.1.2066",
        "agents": [community_agent(address)],
        "interfaces": 48,
        "metadata": {"vendor": "cisco"},
        **extra,
    }


def many(count: int, prefix: str = "dev") -> list[dict]:
    return [device(f"{prefix}-{i:03d}", f"127.0.{i // 200}.{i % 200 + 1}") for i in range(count)]


def seed(name: str, community: str = "seedcomm1", **extra) -> dict:
    return {
        "name": name,
        "targets": ["127.0.0.0/30"],
        "snmpConfig": {"version": 2, "readCommunity": community},
        "schedule": "0 0 2 * * *",
        "enabled": True,
        **extra,
    }


# --- responses --------------------------------------------------------------------------------------


class Materialized:
    """A response with its (possibly streamed) body read once: .status_code, .content, .json()."""

    def __init__(self, response):
        self.status_code = response.status_code
        self.headers = response.headers
        self.content = (
            b"".join(response.streaming_content)
            if getattr(response, "streaming", False)
            else response.content
        )

    def json(self):
        return json.loads(self.content)


def ok(response, method: str, path: str, status: int = 200) -> dict | None:
    body = Materialized(response)
    assert body.status_code == status, (body.status_code, body.content[:800])
    assert_matches_schema(body, method, path)
    return body.json() if body.content else None


def err(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    body = response.json()
    assert set(body) == {"error", "detail", "fields"}, body
    if code is not None:
        assert body["error"] == code, body
    return body


def get_inventory(api, site: str = SITE, **params) -> dict:
    return ok(api.get(inventory_path(site), params), "GET", inventory_path(site))


def put_inventory(api, devices: list, site: str = SITE, mode: str | None = "merge", **extra) -> dict:
    body = {"devices": devices, **extra}
    if mode is not None:
        body["mode"] = mode
    return ok(api.put(inventory_path(site), body, format="json"), "PUT", inventory_path(site))


def post_devices(api, devices: list, site: str = SITE, **extra) -> dict:
    return ok(
        api.post(devices_path(site), {"devices": devices, **extra}, format="json"), "POST", devices_path(site)
    )


def by_name(inventory: dict) -> dict[str, dict]:
    return {d["sysName"]: d for d in inventory["devices"]}


def version_of(site: str = SITE) -> int:
    return Site.objects.get(pk=site).inventory_version


def stats(api, site: str = SITE) -> dict:
    return ok(api.get(f"/api/v1/sites/{site}"), "GET", f"/api/v1/sites/{site}")["stats"]


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


# --- GET ----------------------------------------------------------------------------------------------


def test_empty_inventory(site, admin_api):
    body = get_inventory(admin_api)
    assert body == {"version": version_of(), "updatedAt": None, "devices": [], "discoverySeeds": []}


def test_get_has_the_spec_device_fields(site, admin_api):
    put_inventory(admin_api, [device("core-rtr-01.chicago", "127.0.1.1")], discoverySeeds=[seed("Core")])
    body = get_inventory(admin_api)
    assert body["version"] == version_of()
    assert ISO_Z.match(body["updatedAt"])
    [dev] = body["devices"]
    assert set(dev) == {
        "id",
        "sysName",
        "sysDescr",
        "sysContact",
        "sysLocation",
        "sysObjectId",
        "agents",
        "interfaces",
        "discoveredAt",
        "lastSeen",
        "discoveredBy",
        "metadata",
    }
    assert dev["id"].startswith("dev_")
    assert dev["sysName"] == "core-rtr-01.chicago"
    assert dev["sysDescr"] == "Cisco IOS XR for core-rtr-01.chicago"
    assert dev["sysObjectId"] == "1.3.6.1.4.1.9.1.2066"
    assert dev["interfaces"] == 48
    assert dev["metadata"] == {"vendor": "cisco"}
    assert ISO_Z.match(dev["discoveredAt"]) and ISO_Z.match(dev["lastSeen"])
    [agent] = dev["agents"]
    assert agent["id"].startswith("agt_")
    assert {k: agent[k] for k in ("address", "port", "version", "type", "readCommunity", "isPrimary")} == {
        "address": "127.0.1.1",
        "port": 161,
        "version": 2,
        "type": "community",
        "readCommunity": "****",
        "isPrimary": True,
    }
    [s] = body["discoverySeeds"]
    assert s["name"] == "Core" and s["snmpConfig"] == {
        "version": 2,
        "type": "community",
        "readCommunity": "****",
    }


def test_get_unknown_site_is_404(db, admin_api):
    err(admin_api.get(inventory_path("nowhere")), 404, "not_found")


def test_version_parameter_answers_304_when_current_or_newer(site, admin_api):
    put_inventory(admin_api, many(2))
    current = version_of()
    for known in (current, current + 1, current + 1000):
        response = admin_api.get(inventory_path(), {"version": known})
        assert response.status_code == 304, known
        assert response.content == b""
        assert_matches_schema(response, "GET", inventory_path())
    body = get_inventory(admin_api, version=current - 1)
    assert body["version"] == current and len(body["devices"]) == 2
    body = get_inventory(admin_api, version=0)
    assert len(body["devices"]) == 2


def test_version_parameter_must_be_an_integer(site, admin_api):
    for bad in ("abc", "-1", "1.5"):
        body = err(admin_api.get(inventory_path(), {"version": bad}), 400, "validation_error")
        assert "version" in body["fields"], bad


def test_etag_and_if_none_match(site, admin_api):
    put_inventory(admin_api, many(3))
    first = admin_api.get(inventory_path())
    etag = first["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    ok(first, "GET", inventory_path())

    again = admin_api.get(inventory_path(), HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304 and again.content == b""
    assert again["ETag"] == etag
    # One of several tags matches.
    listed = admin_api.get(inventory_path(), HTTP_IF_NONE_MATCH=f'"something-else", {etag}')
    assert listed.status_code == 304
    # A stale tag gets the document.
    ok(admin_api.get(inventory_path(), HTTP_IF_NONE_MATCH='"inv-stale"'), "GET", inventory_path())

    # After a change the old tag no longer matches.
    put_inventory(admin_api, many(4))
    changed = admin_api.get(inventory_path(), HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert len(ok(changed, "GET", inventory_path())["devices"]) == 4


def test_etag_differs_with_credentials_and_with_a_device_filter(site, admin_api):
    put_inventory(admin_api, many(3))
    ids = sorted(d["id"] for d in get_inventory(admin_api)["devices"])
    masked = admin_api.get(inventory_path())["ETag"]
    revealed = admin_api.get(inventory_path(), {"includeCredentials": "true"})["ETag"]
    filtered = admin_api.get(inventory_path(), {"deviceIds": ids[0]})["ETag"]
    other_filter = admin_api.get(inventory_path(), {"deviceIds": ids[1]})["ETag"]
    assert len({masked, revealed, filtered, other_filter}) == 4

    # The masked document's tag does not answer 304 for the revealed one, nor for a filtered one.
    response = admin_api.get(inventory_path(), {"includeCredentials": "true"}, HTTP_IF_NONE_MATCH=masked)
    assert response.status_code == 200
    assert ok(response, "GET", inventory_path())["devices"][0]["agents"][0]["readCommunity"] == "public123"
    response = admin_api.get(inventory_path(), {"deviceIds": ids[0]}, HTTP_IF_NONE_MATCH=masked)
    assert response.status_code == 200
    # …but each variant's own tag does.
    response = admin_api.get(inventory_path(), {"includeCredentials": "true"}, HTTP_IF_NONE_MATCH=revealed)
    assert response.status_code == 304
    response = admin_api.get(inventory_path(), {"deviceIds": ids[0]}, HTTP_IF_NONE_MATCH=filtered)
    assert response.status_code == 304


def test_device_ids_comma_separated_and_repeated(site, admin_api):
    put_inventory(admin_api, many(5))
    ids = sorted(d["id"] for d in get_inventory(admin_api)["devices"])

    comma = get_inventory(admin_api, deviceIds=f"{ids[0]},{ids[2]}")
    assert sorted(d["id"] for d in comma["devices"]) == [ids[0], ids[2]]

    path = f"{inventory_path()}?deviceIds={ids[1]}&deviceIds={ids[3]}"
    repeated = ok(admin_api.get(path), "GET", inventory_path())
    assert sorted(d["id"] for d in repeated["devices"]) == [ids[1], ids[3]]

    path = f"{inventory_path()}?deviceIds={ids[4]},{ids[0]}&deviceIds={ids[2]}&deviceIds=dev_unknown"
    mixed = ok(admin_api.get(path), "GET", inventory_path())
    assert sorted(d["id"] for d in mixed["devices"]) == [ids[0], ids[2], ids[4]]

    # The same set, however spelled, is the same variant.
    one = admin_api.get(f"{inventory_path()}?deviceIds={ids[0]},{ids[2]}")["ETag"]
    two = admin_api.get(f"{inventory_path()}?deviceIds={ids[2]}&deviceIds={ids[0]}")["ETag"]
    assert one == two


def test_get_one_device(site, admin_api):
    put_inventory(admin_api, [device("core-rtr-01", "127.0.1.1"), device("core-rtr-02", "127.0.1.2")])
    listed = by_name(get_inventory(admin_api))
    wanted = listed["core-rtr-02"]
    body = ok(admin_api.get(device_path(wanted["id"])), "GET", device_path(wanted["id"]))
    assert body == wanted
    err(admin_api.get(device_path("dev_unknown")), 404, "not_found")


def test_a_device_of_another_site_is_404(make_site, admin_api):
    make_site(SITE)
    make_site(OTHER)
    put_inventory(admin_api, [device("london-sw-01", "127.0.2.1")], site=OTHER)
    other_id = get_inventory(admin_api, site=OTHER)["devices"][0]["id"]
    err(admin_api.get(device_path(other_id)), 404, "not_found")
    err(admin_api.delete(device_path(other_id)), 404, "not_found")
    assert Device.objects.filter(pk=other_id).exists()


# --- PUT modes ----------------------------------------------------------------------------------------


def test_put_merge_adds_new_updates_existing_keeps_others(site, admin_api):
    first = put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    assert first["changed"] is True and (first["added"], first["updated"], first["removed"]) == (2, 0, 0)
    before = by_name(get_inventory(admin_api))

    result = put_inventory(
        admin_api,
        [device("b", "127.0.0.2", sysDescr="new software"), device("c", "127.0.0.3")],
        mode="merge",
    )
    assert result == {
        "version": first["version"] + 1,
        "changed": True,
        "added": 1,
        "updated": 1,
        "unchanged": 0,
        "removed": 0,
        "seeds": {"added": 0, "updated": 0, "removed": 0},
    }
    after = by_name(get_inventory(admin_api))
    assert set(after) == {"a", "b", "c"}
    assert after["a"] == before["a"]  # kept, untouched
    assert after["b"]["id"] == before["b"]["id"] and after["b"]["sysDescr"] == "new software"
    assert after["b"]["agents"][0]["id"] == before["b"]["agents"][0]["id"]
    assert after["c"]["id"] not in {before["a"]["id"], before["b"]["id"]}


def test_mode_defaults_to_merge(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1")], mode=None)
    result = put_inventory(admin_api, [device("b", "127.0.0.2")], mode=None)
    assert (result["added"], result["removed"]) == (1, 0)
    assert set(by_name(get_inventory(admin_api))) == {"a", "b"}


def test_put_replace_replaces_all_devices_and_seeds(site, admin_api):
    put_inventory(
        admin_api,
        [device("a", "127.0.0.1"), device("b", "127.0.0.2")],
        discoverySeeds=[seed("S1"), seed("S2")],
    )
    before = by_name(get_inventory(admin_api))
    seeds_before = {s["name"]: s for s in get_inventory(admin_api)["discoverySeeds"]}

    result = put_inventory(
        admin_api,
        [device("b", "127.0.0.2", sysLocation="moved"), device("c", "127.0.0.3")],
        mode="replace",
        discoverySeeds=[seed("S2"), seed("S3")],
    )
    assert (result["added"], result["updated"], result["unchanged"], result["removed"]) == (1, 1, 0, 1)
    assert result["seeds"] == {"added": 1, "updated": 0, "removed": 1}
    after = get_inventory(admin_api)
    devices = by_name(after)
    assert set(devices) == {"b", "c"}
    assert devices["b"]["id"] == before["b"]["id"] and devices["b"]["sysLocation"] == "moved"
    assert not Device.objects.filter(pk=before["a"]["id"]).exists()
    assert not Agent.objects.filter(device_id=before["a"]["id"]).exists()
    seeds_after = {s["name"]: s for s in after["discoverySeeds"]}
    assert set(seeds_after) == {"S2", "S3"}
    assert seeds_after["S2"]["id"] == seeds_before["S2"]["id"]

    change = InventoryChange.objects.get(site_id=SITE, version=result["version"])
    assert change.change_type == "full_sync"
    assert change.added_ids == [devices["c"]["id"]]
    assert change.updated_ids == [before["b"]["id"]]
    assert change.removed_ids == [before["a"]["id"]]


def test_put_replace_with_nothing_given_empties_the_devices(site, admin_api):
    put_inventory(admin_api, many(3))
    result = put_inventory(admin_api, [], mode="replace")
    assert (result["added"], result["updated"], result["removed"]) == (0, 0, 3)
    assert get_inventory(admin_api)["devices"] == []


def test_put_add_only_adds_new_and_never_updates(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1")], discoverySeeds=[seed("S1", community="first111")])
    before = by_name(get_inventory(admin_api))
    result = put_inventory(
        admin_api,
        [device("a", "127.0.0.1", sysDescr="changed"), device("b", "127.0.0.2")],
        mode="addOnly",
        discoverySeeds=[seed("S1", community="second22"), seed("S2")],
    )
    assert (result["added"], result["updated"], result["unchanged"], result["removed"]) == (1, 0, 1, 0)
    assert result["seeds"] == {"added": 1, "updated": 0, "removed": 0}
    after = get_inventory(admin_api, includeCredentials="true")
    devices = by_name(after)
    assert set(devices) == {"a", "b"}
    assert devices["a"]["sysDescr"] == before["a"]["sysDescr"]
    seeds = {s["name"]: s for s in after["discoverySeeds"]}
    assert seeds["S1"]["snmpConfig"]["readCommunity"] == "first111"
    assert set(seeds) == {"S1", "S2"}


def test_put_add_only_with_nothing_new_moves_no_version(site, admin_api):
    put_inventory(admin_api, many(2))
    version = version_of()
    changed = [device(d["sysName"], d["agents"][0]["address"], sysDescr="different") for d in many(2)]
    result = put_inventory(admin_api, changed, mode="addOnly")
    assert result["changed"] is False and result["version"] == version == version_of()
    assert result["unchanged"] == 2


def test_put_unknown_mode_is_400(site, admin_api):
    body = err(
        admin_api.put(inventory_path(), {"devices": [], "mode": "upsert"}, format="json"),
        400,
        "validation_error",
    )
    assert "mode" in body["fields"]


def test_put_all_or_nothing(site, admin_api):
    put_inventory(admin_api, [device("dev-000", "127.0.0.1")])
    version = version_of()
    snapshot = sorted(Device.objects.values_list("id", "fingerprint", "sys_descr"))
    changes, audits = InventoryChange.objects.count(), AuditLog.objects.count()

    payload = many(10)
    payload[0]["sysDescr"] = "would be an update"
    payload[3]["agents"][0]["address"] = "not-an-address"
    response = admin_api.put(inventory_path(), {"devices": payload, "mode": "merge"}, format="json")
    body = err(response, 400, "validation_error")
    assert list(body["fields"]) == ["devices[3].agents[0].address"]
    assert body["fields"]["devices[3].agents[0].address"]

    assert version_of() == version
    assert sorted(Device.objects.values_list("id", "fingerprint", "sys_descr")) == snapshot
    assert InventoryChange.objects.count() == changes
    assert AuditLog.objects.count() == audits


def test_put_reports_every_bad_field(site, admin_api):
    payload = many(4)
    payload[1]["agents"][0]["port"] = 0
    payload[2]["sysObjectId"] = "not.an.oid"
    payload[3]["agents"][0]["readCommunity"] = ""
    body = err(admin_api.put(inventory_path(), {"devices": payload}, format="json"), 400)
    assert set(body["fields"]) == {
        "devices[1].agents[0].port",
        "devices[2].sysObjectId",
        "devices[3].agents[0].readCommunity",
    }
    assert Device.objects.count() == 0


def test_put_with_a_bad_seed_writes_nothing(site, admin_api):
    version = version_of()
    bad = seed("S1")
    bad["targets"] = ["not-a-target"]
    body = err(
        admin_api.put(inventory_path(), {"devices": many(2), "discoverySeeds": [bad]}, format="json"), 400
    )
    assert "discoverySeeds[0].targets[0]" in body["fields"]
    assert Device.objects.count() == 0 and version_of() == version


def test_put_devices_not_a_list_is_400(site, admin_api):
    for devices in ({"sysName": "a"}, "a", None, 5):
        body = err(admin_api.put(inventory_path(), {"devices": devices}, format="json"), 400)
        assert "devices" in body["fields"], devices
    body = err(admin_api.put(inventory_path(), [device("a")], format="json"), 400)
    assert body["fields"]


def test_each_change_set_is_one_version_and_one_change_row(site, admin_api):
    start = version_of()
    rows = InventoryChange.objects.filter(site_id=SITE).count()

    result = put_inventory(admin_api, many(10))
    assert result["version"] == version_of() == start + 1
    assert InventoryChange.objects.filter(site_id=SITE).count() == rows + 1
    change = InventoryChange.objects.get(site_id=SITE, version=start + 1)
    assert len(change.added_ids) == 10 and change.change_type == "bulk_import"

    payload = many(10)
    payload[4]["sysDescr"] = "upgraded"
    payload[7]["interfaces"] = 96
    payload.append(device("extra", "127.0.9.9"))
    result = put_inventory(admin_api, payload)
    assert (result["added"], result["updated"], result["unchanged"]) == (1, 2, 8)
    assert result["version"] == version_of() == start + 2
    assert InventoryChange.objects.filter(site_id=SITE).count() == rows + 2


def test_an_unchanged_re_put_moves_no_version(site, admin_api):
    payload = many(10)
    put_inventory(admin_api, payload, discoverySeeds=[seed("S1")])
    version = version_of()
    rows, audits = InventoryChange.objects.count(), AuditLog.objects.count()
    etag = admin_api.get(inventory_path())["ETag"]

    result = put_inventory(admin_api, payload, discoverySeeds=[seed("S1")])
    assert result == {
        "version": version,
        "changed": False,
        "added": 0,
        "updated": 0,
        "unchanged": 10,
        "removed": 0,
        "seeds": {"added": 0, "updated": 0, "removed": 0},
    }
    assert version_of() == version
    assert InventoryChange.objects.count() == rows
    assert AuditLog.objects.count() == audits
    assert admin_api.get(inventory_path(), HTTP_IF_NONE_MATCH=etag).status_code == 304

    # A changed secret alone is a change (the fingerprint covers the secrets).
    payload[0]["agents"][0]["readCommunity"] = "rotated-community"
    result = put_inventory(admin_api, payload)
    assert (result["changed"], result["updated"]) == (True, 1)
    assert version_of() == version + 1


# --- POST devices ---------------------------------------------------------------------------------


def test_post_adds_then_updates_by_sys_name(site, admin_api):
    version = version_of()
    body = post_devices(admin_api, [device("access-sw-15.chicago", "127.0.3.15")], source="discovery")
    assert body["added"] == 1 and body["updated"] == body["unchanged"] == body["failed"] == 0
    assert body["newVersion"] == version + 1 == version_of()
    [outcome] = body["devices"]
    assert set(outcome) == {"id", "sysName", "status"}
    assert outcome["sysName"] == "access-sw-15.chicago" and outcome["status"] == "added"
    device_id = outcome["id"]

    # Same sysName, another address and description: the same device, updated.
    body = post_devices(
        admin_api,
        [device("access-sw-15.chicago", "127.0.3.16", sysDescr="Catalyst 9300")],
        source="discovery",
    )
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (0, 1, 0, 0)
    assert body["newVersion"] == version + 2
    assert body["devices"] == [{"id": device_id, "sysName": "access-sw-15.chicago", "status": "updated"}]
    stored = ok(admin_api.get(device_path(device_id)), "GET", device_path(device_id))
    assert stored["sysDescr"] == "Catalyst 9300"
    assert [a["address"] for a in stored["agents"]] == ["127.0.3.16"]
    assert Device.objects.filter(site_id=SITE).count() == 1


def test_post_without_sys_name_upserts_by_agent_address(site, admin_api):
    body = post_devices(admin_api, [device(None, "127.0.4.1")])
    [outcome] = body["devices"]
    assert outcome["status"] == "added" and outcome["sysName"] is None
    device_id = outcome["id"]

    body = post_devices(admin_api, [device(None, "127.0.4.1", sysDescr="seen again, more detail")])
    assert body["devices"] == [{"id": device_id, "sysName": None, "status": "updated"}]
    body = post_devices(admin_api, [device(None, "127.0.4.2")])
    assert body["devices"][0]["status"] == "added" and body["devices"][0]["id"] != device_id
    assert Device.objects.filter(site_id=SITE).count() == 2
    stored = ok(admin_api.get(device_path(device_id)), "GET", device_path(device_id))
    assert stored["sysName"] is None and stored["sysDescr"] == "seen again, more detail"


def test_post_mixed_added_updated_unchanged(site, admin_api):
    post_devices(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    version = version_of()
    body = post_devices(
        admin_api,
        [device("a", "127.0.0.1"), device("b", "127.0.0.2", interfaces=52), device("c", "127.0.0.3")],
    )
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (1, 1, 1, 0)
    assert [o["status"] for o in body["devices"]] == ["unchanged", "updated", "added"]
    assert [o["sysName"] for o in body["devices"]] == ["a", "b", "c"]
    assert body["newVersion"] == version + 1 == version_of()


def test_post_partial_failure_stores_the_rest(site, admin_api):
    version = version_of()
    bad = device("broken", "127.0.5.2")
    bad["agents"][0]["address"] = "999.1.1.1"
    body = post_devices(admin_api, [device("ok-1", "127.0.5.1"), bad, device("ok-2", "127.0.5.3")])
    assert (body["added"], body["updated"], body["unchanged"], body["failed"]) == (2, 0, 0, 1)
    assert body["newVersion"] == version + 1
    first, failed, last = body["devices"]
    assert first["status"] == last["status"] == "added"
    assert failed["status"] == "failed" and failed["id"] is None and failed["sysName"] == "broken"
    assert set(failed["error"]) == {"devices[1].agents[0].address"}
    assert "error" not in first and "error" not in last
    assert set(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == {"ok-1", "ok-2"}


def test_post_where_every_device_fails_moves_no_version(site, admin_api):
    version = version_of()
    body = post_devices(admin_api, [{"sysName": "x", "agents": []}, "not an object"])
    assert (body["added"], body["failed"], body["newVersion"]) == (0, 2, version)
    assert set(body["devices"][0]["error"]) == {"devices[0].agents"}
    assert set(body["devices"][1]["error"]) == {"devices[1]"}
    assert body["devices"][1]["sysName"] is None
    assert version_of() == version and Device.objects.count() == 0


def test_post_unchanged_refreshes_last_seen_without_a_version(site, admin_api):
    post_devices(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    version = version_of()
    rows = InventoryChange.objects.count()
    long_ago = timezone.now() - timedelta(days=3)
    Device.objects.filter(site_id=SITE).update(last_seen=long_ago)
    old_last_seen = {d["sysName"]: d["lastSeen"] for d in get_inventory(admin_api)["devices"]}

    body = post_devices(admin_api, [device("a", "127.0.0.1")])
    assert (body["added"], body["updated"], body["unchanged"]) == (0, 0, 1)
    assert body["newVersion"] == version == version_of()
    assert InventoryChange.objects.count() == rows

    new_last_seen = {d["sysName"]: d["lastSeen"] for d in get_inventory(admin_api)["devices"]}
    assert new_last_seen["a"] > old_last_seen["a"]
    assert Device.objects.get(sys_name="a").last_seen > long_ago + timedelta(days=2)
    assert new_last_seen["b"] == old_last_seen["b"]  # not posted: not seen


def test_post_devices_not_a_list_is_400(site, admin_api):
    for devices in ({"sysName": "a"}, "a", None, 3):
        body = err(
            admin_api.post(devices_path(), {"devices": devices}, format="json"), 400, "validation_error"
        )
        assert "devices" in body["fields"], devices
    body = err(admin_api.post(devices_path(), {"source": "discovery"}, format="json"), 400)
    assert "devices" in body["fields"]
    body = err(admin_api.post(devices_path(), [device("a")], format="json"), 400)
    assert body["fields"]
    body = err(
        admin_api.post(devices_path(), {"devices": [], "source": "carrier-pigeon"}, format="json"), 400
    )
    assert "source" in body["fields"]
    assert Device.objects.count() == 0


def test_post_from_a_non_leader_instance_is_409(site, register, client_for):
    leader = register(SITE, "host-a", "pod-a")
    follower = register(SITE, "host-b", "pod-b")
    assert Instance.objects.get(pk=leader).is_leader and not Instance.objects.get(pk=follower).is_leader
    instance_api = client_for("instance", site=SITE)
    version = version_of()

    for instance_id in (follower, "", "inst_unknown"):
        response = instance_api.post(
            devices_path(),
            {"devices": [device("a", "127.0.0.1")], "source": "discovery", "instanceId": instance_id},
            format="json",
        )
        err(response, 409, "not_leader")
    assert Device.objects.count() == 0 and version_of() == version

    body = post_devices(
        instance_api, [device("a", "127.0.0.1")], source="discovery", instanceId=leader, seedId="seed_001"
    )
    assert body["added"] == 1 and body["newVersion"] == version + 1
    stored = Device.objects.get(pk=body["devices"][0]["id"])
    assert stored.discovered_by == leader


def test_post_from_an_instance_of_another_sites_leader_is_409(make_site, register, client_for):
    make_site(SITE)
    make_site(OTHER)
    register(SITE, "host-a")
    other_leader = register(OTHER, "host-z")
    response = client_for("instance").post(
        devices_path(),
        {"devices": [device("a", "127.0.0.1")], "source": "discovery", "instanceId": other_leader},
        format="json",
    )
    err(response, 409, "not_leader")
    assert Device.objects.count() == 0


# --- DELETE -------------------------------------------------------------------------------------------


def test_delete_device(site, admin_api):
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    version = version_of()
    target = by_name(get_inventory(admin_api))["a"]

    response = admin_api.delete(device_path(target["id"]))
    assert response.status_code == 204 and response.content == b""
    assert_matches_schema(response, "DELETE", device_path(target["id"]))
    assert version_of() == version + 1
    change = InventoryChange.objects.get(site_id=SITE, version=version + 1)
    assert (change.change_type, change.removed_ids) == ("device_removed", [target["id"]])
    assert set(by_name(get_inventory(admin_api))) == {"b"}
    assert not Agent.objects.filter(device_id=target["id"]).exists()
    err(admin_api.get(device_path(target["id"])), 404, "not_found")

    err(admin_api.delete(device_path(target["id"])), 404, "not_found")
    err(admin_api.delete(device_path("dev_unknown")), 404, "not_found")
    assert version_of() == version + 1


# --- the site's counters ------------------------------------------------------------------------------


def test_site_stats_follow_the_inventory(site, admin_api):
    initial = stats(admin_api)
    assert (initial["deviceCount"], initial["agentCount"], initial["seedCount"]) == (0, 0, 0)
    assert initial["inventoryVersion"] == version_of()

    two_agents = device("a", "127.0.0.1")
    two_agents["agents"].append(usm_agent("127.0.0.11"))
    result = put_inventory(
        admin_api,
        [two_agents, device("b", "127.0.0.2"), device("c", "127.0.0.3")],
        discoverySeeds=[seed("S1")],
    )
    after_put = stats(admin_api)
    assert (after_put["deviceCount"], after_put["agentCount"], after_put["seedCount"]) == (3, 4, 1)
    assert after_put["inventoryVersion"] == result["version"]

    posted = post_devices(admin_api, [device("d", "127.0.0.4")])
    after_post = stats(admin_api)
    assert (after_post["deviceCount"], after_post["agentCount"]) == (4, 5)
    assert after_post["inventoryVersion"] == posted["newVersion"]

    a_id = by_name(get_inventory(admin_api))["a"]["id"]
    assert admin_api.delete(device_path(a_id)).status_code == 204
    after_delete = stats(admin_api)
    assert (after_delete["deviceCount"], after_delete["agentCount"], after_delete["seedCount"]) == (3, 3, 1)
    assert after_delete["inventoryVersion"] == posted["newVersion"] + 1

    result = put_inventory(admin_api, [device("z", "127.0.0.26")], mode="replace", discoverySeeds=[])
    after_replace = stats(admin_api)
    assert (after_replace["deviceCount"], after_replace["agentCount"], after_replace["seedCount"]) == (
        1,
        1,
        0,
    )
    assert after_replace["inventoryVersion"] == result["version"] == version_of()


# --- scopes -------------------------------------------------------------------------------------------


@pytest.fixture
def stocked(site, admin_api, register):
    """A site with two devices and a leader; returns the leader's id."""
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    return register(SITE, "host-a")


def _attempt(api, method: str, leader: str) -> int:
    if method == "GET":
        return api.get(inventory_path()).status_code
    if method == "GET_DEVICE":
        return api.get(device_path(Device.objects.get(sys_name="a").id)).status_code
    if method == "CHANGES":
        return api.get(changes_path(), {"since": version_of()}).status_code
    if method == "PUT":
        return api.put(inventory_path(), {"devices": [device("p", "127.0.7.1")]}, format="json").status_code
    if method == "POST":
        body = {"devices": [device("q", "127.0.7.2")], "source": "discovery", "instanceId": leader}
        return api.post(devices_path(), body, format="json").status_code
    if method == "DELETE":
        return api.delete(device_path(Device.objects.get(sys_name="b").id)).status_code
    raise AssertionError(method)


@pytest.mark.parametrize(
    "scope, expected",
    [
        ("read", {"GET": 200, "GET_DEVICE": 200, "CHANGES": 200, "PUT": 403, "POST": 403, "DELETE": 403}),
        ("write", {"GET": 200, "GET_DEVICE": 200, "CHANGES": 200, "PUT": 200, "POST": 200, "DELETE": 204}),
        ("instance", {"GET": 200, "GET_DEVICE": 200, "CHANGES": 200, "PUT": 403, "POST": 200, "DELETE": 403}),
        ("admin", {"GET": 200, "GET_DEVICE": 200, "CHANGES": 200, "PUT": 200, "POST": 200, "DELETE": 204}),
    ],
)
def test_scope_matrix(stocked, client_for, scope, expected):
    for bound in (None, SITE):
        # Each round starts from the same inventory.
        Device.objects.filter(sys_name__in=["p", "q"]).delete()
        if not Device.objects.filter(sys_name="b").exists():
            Device.objects.create(
                id="dev_restored",
                site_id=SITE,
                identity="name:b",
                sys_name="b",
                discovered_at=timezone.now(),
                last_seen=timezone.now(),
                fingerprint="x",
                changed_version=version_of(),
            )
        api = client_for(scope, site=bound)
        got = {method: _attempt(api, method, stocked) for method in expected}
        assert got == expected, (scope, bound)
    denied = [m for m, status in expected.items() if status == 403]
    if "PUT" in denied:
        assert not Device.objects.filter(sys_name="p").exists()
    if "DELETE" in denied:
        assert Device.objects.filter(sys_name="b").exists()


@pytest.mark.parametrize("scope", ["read", "write", "instance", "admin"])
def test_a_token_bound_to_another_site_gets_403(make_site, admin_api, register, client_for, scope):
    make_site(SITE)
    make_site(OTHER)
    put_inventory(admin_api, [device("a", "127.0.0.1"), device("b", "127.0.0.2")])
    leader = register(SITE, "host-a")
    version = version_of()
    api = client_for(scope, site=OTHER)
    for method in ("GET", "GET_DEVICE", "CHANGES", "PUT", "POST", "DELETE"):
        response_status = _attempt(api, method, leader)
        assert response_status == 403, (scope, method, response_status)
    assert version_of() == version
    assert set(Device.objects.values_list("sys_name", flat=True)) == {"a", "b"}


def test_no_token_is_401(site, client):
    assert client.get(inventory_path()).status_code == 401
    assert client.put(inventory_path(), {"devices": []}, content_type="application/json").status_code == 401
