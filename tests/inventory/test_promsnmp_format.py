"""The inventory in PromSNMP's form for the agent's bridge mode: GET inventory?format=promsnmp (an
instance's own token only, secrets in clear, the version in X-Inventory-Version, 304 when current, never
a filtered document) and POST inventory/devices with "format": "promsnmp" (what a bridge's PromSNMP
found by itself; a document the manager exported comes back unchanged, so a bridge cannot start an echo
loop)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from instances.services import instance_enroll
from inventory.models import Device
from inventory.promsnmp import export_document
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import (
    Materialized,
    community_agent,
    device,
    err,
    ok,
    post_devices,
    put_inventory,
    seed,
    usm_agent,
)

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
PATH = f"/api/v1/sites/{SITE}/inventory"
DEVICES = f"/api/v1/sites/{SITE}/inventory/devices"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "promsnmp" / "inventory.json"


def version_of(site: str = SITE) -> int:
    return Site.objects.get(pk=site).inventory_version


def own_client(site: str = SITE, hostname: str = "promsnmp-a") -> tuple[APIClient, str]:
    """An APIClient with an instance's own token (register's instanceToken), and the instance's id."""
    enrollment = instance_enroll(actor=TEST_ACTOR, site_id=site, hostname=hostname)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {enrollment.instance_token}")
    return api, enrollment.instance.id


def fetch(api: APIClient, **params) -> Materialized:
    return Materialized(api.get(PATH, {"format": "promsnmp", **params}))


@pytest.fixture
def stocked(make_site, admin_api) -> str:
    make_site(SITE)
    put_inventory(
        admin_api,
        [device("edge-1", "127.0.0.1"), device("core-1", "127.0.0.2", agents=[usm_agent("127.0.0.2")])],
        discoverySeeds=[seed("lab", community="seed-secret-1")],
    )
    return SITE


def test_an_instance_gets_the_whole_site_in_promsnmps_form_with_secrets_and_its_version(stocked):
    api, _ = own_client()
    response = fetch(api)
    assert response.status_code == 200, response.content[:500]
    ok(response, "GET", PATH)  # the published schema (PromSnmpInventory) describes it
    body = response.json()
    assert set(body) == {"devices", "discoverySeeds"}  # exactly PromSNMP's InventoryDTO, nothing else
    site = Site.objects.get(pk=SITE)
    assert body == export_document(site, format="promsnmp")  # what export_inventory --format promsnmp writes
    assert response.headers["X-Inventory-Version"] == str(site.inventory_version)
    assert response.headers["ETag"] == f'"inv-{SITE}-{site.inventory_version}-p"'
    agents = {d["sysName"]: d["agents"][0] for d in body["devices"]}
    assert agents["edge-1"]["readCommunity"] == "public123"  # in clear: PromSNMP needs them
    assert agents["core-1"]["authPassphrase"] == "authpass123"
    assert agents["core-1"]["privPassphrase"] == "privpass123"
    assert body["discoverySeeds"][0]["readCommunity"] == "seed-secret-1"
    assert "****" not in response.content.decode()


def test_the_managers_form_carries_the_version_header_too(stocked, admin_api):
    response = Materialized(admin_api.get(PATH))
    assert response.headers["X-Inventory-Version"] == str(version_of())
    assert response.json()["version"] == version_of()
    same = Materialized(admin_api.get(PATH, {"format": "manager"}))
    assert same.json() == response.json()


@pytest.mark.parametrize("scopes", [["admin"], ["read"], ["write"], ["instance"]])
@pytest.mark.parametrize("bound", [None, SITE])
def test_every_other_token_gets_403_and_no_secret(stocked, make_token, scopes, bound):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(scopes, site=bound)}")
    body = err(api.get(PATH, {"format": "promsnmp"}), 403, "forbidden")
    assert "instanceToken" in body["detail"], body  # says what to use instead
    assert "export_inventory" in body["detail"]


def test_an_instance_of_another_site_gets_403(stocked, make_site):
    make_site(OTHER)
    api, _ = own_client(OTHER)
    body = err(api.get(PATH, {"format": "promsnmp"}), 403, "forbidden")
    assert OTHER in body["detail"]


def test_unknown_site_is_404_for_an_unbound_instance_scope(stocked):
    api, _ = own_client()
    # Its token is bound to its site: another site id is refused before it is looked up.
    err(api.get("/api/v1/sites/nowhere/inventory", {"format": "promsnmp"}), 403)


def test_a_current_version_answers_304_with_the_version(stocked):
    api, _ = own_client()
    current = version_of()
    response = api.get(PATH, {"format": "promsnmp", "version": current})
    assert response.status_code == 304
    assert response.content == b""
    assert response.headers["X-Inventory-Version"] == str(current)
    assert api.get(PATH, {"format": "promsnmp", "version": current + 5}).status_code == 304
    assert fetch(api, version=current - 1).status_code == 200
    etag = fetch(api).headers["ETag"]
    assert api.get(PATH, {"format": "promsnmp"}, HTTP_IF_NONE_MATCH=etag).status_code == 304
    # The manager's form has its own ETag: one does not answer for the other.
    assert Materialized(api.get(PATH, HTTP_IF_NONE_MATCH=etag)).status_code == 200


def test_bad_parameters_are_400_and_a_filtered_document_is_never_served(stocked):
    api, _ = own_client()
    device_id = Device.objects.first().id
    body = err(api.get(PATH, {"format": "promsnmp", "deviceIds": device_id}), 400, "validation_error")
    assert "deviceIds" in body["fields"]
    body = err(api.get(PATH, {"format": "promsnmp", "includeCredentials": "false"}), 400)
    assert "includeCredentials" in body["fields"]
    assert fetch(api, includeCredentials="true").status_code == 200
    body = err(api.get(PATH, {"format": "yaml"}), 400, "validation_error")
    assert "format" in body["fields"]
    # The Accept header still decides the media type (?format= is ours, not DRF's renderer switch).
    assert api.get(PATH, {"format": "promsnmp"}, HTTP_ACCEPT="text/html").status_code == 406


def test_reading_it_takes_the_same_queries_for_3_or_60_devices(make_site, admin_api):
    make_site(SITE)
    api, _ = own_client()
    counts = []
    for total in (3, 60):
        put_inventory(
            admin_api,
            [device(f"d-{i}", f"127.0.{i // 200}.{i % 200 + 1}") for i in range(total)],
            discoverySeeds=[seed("lab")],
            mode="replace",
        )
        fetch(api)  # the token's first use of the minute writes its last-use time
        with CaptureQueriesContext(connection) as queries:
            response = fetch(api)
        assert len(response.json()["devices"]) == total
        counts.append(len(queries))
    assert counts[0] == counts[1], counts


# --- POST inventory/devices with "format": "promsnmp" ---------------------------------------------


def promsnmp_devices() -> list[dict]:
    return json.loads(FIXTURE.read_text())["devices"]


def test_what_promsnmp_found_is_stored_keeping_its_ids(make_site):
    make_site(SITE)
    api, leader = own_client()
    found = promsnmp_devices()
    before = version_of()
    answer = post_devices(api, found, source="discovery", instanceId=leader, format="promsnmp")
    assert answer["added"] == len(found) and answer["failed"] == 0, answer
    assert version_of() == before + 1
    served = fetch(api).json()["devices"]
    assert {d["id"] for d in served} == {d["id"] for d in found}  # PromSNMP's own UUIDs come back
    assert {d["sysName"] for d in served} == {d["sysName"] for d in found}


def test_the_exported_document_posted_back_changes_nothing(stocked):
    """The echo a bridge could start: what the manager serves, posted back as found, is unchanged."""
    api, leader = own_client()
    document = fetch(api).json()
    before = version_of()
    answer = post_devices(api, document["devices"], source="discovery", instanceId=leader, format="promsnmp")
    assert answer["unchanged"] == len(document["devices"]) == 2, answer
    assert answer["added"] == answer["updated"] == answer["failed"] == 0
    assert version_of() == before
    assert fetch(api).json() == document
    # Only new devices are taken from PromSNMP's form: what it cannot carry stays as the manager has it.
    kept = Device.objects.get(site_id=SITE, sys_name="edge-1")
    assert kept.sys_object_id == "1.3.6.1.4.1.9.1.2066"
    assert (kept.interfaces, kept.metadata) == (48, {"vendor": "cisco"})


def test_a_device_promsnmp_cannot_describe_fails_alone_naming_promsnmps_fields(make_site):
    make_site(SITE)
    api, leader = own_client()
    good, unmappable, bad_address = copy.deepcopy(promsnmp_devices()[:3])
    unmappable["agents"][0]["version"] = 2  # not an SNMP4J version number
    unmappable["primaryAgent"] = None
    bad_address["agents"][0]["endpoint"]["address"] = "10.0.0.300"
    bad_address["primaryAgent"] = None
    answer = post_devices(
        api, [good, unmappable, bad_address], source="discovery", instanceId=leader, format="promsnmp"
    )
    assert [d["status"] for d in answer["devices"]] == ["added", "failed", "failed"], answer
    assert answer["devices"][1]["sysName"] == unmappable["sysName"]
    assert set(answer["devices"][1]["error"]) == {"devices[1].agents[0].version"}
    assert "devices[2].agents[0].endpoint.address" in answer["devices"][2]["error"], answer
    assert Device.objects.filter(site_id=SITE).count() == 1


def test_a_follower_may_not_post_what_its_promsnmp_found(make_site):
    make_site(SITE)
    own_client(hostname="leader")
    follower, follower_id = own_client(hostname="follower")
    response = follower.post(
        DEVICES,
        {
            "devices": promsnmp_devices(),
            "source": "discovery",
            "instanceId": follower_id,
            "format": "promsnmp",
        },
        format="json",
    )
    err(response, 409, "not_leader")
    assert not Device.objects.filter(site_id=SITE).exists()


def test_an_unknown_format_is_400(make_site, admin_api):
    make_site(SITE)
    body = err(
        admin_api.post(DEVICES, {"devices": [device("x")], "format": "csv"}, format="json"),
        400,
        "validation_error",
    )
    assert "format" in body["fields"]
    assert not Device.objects.exists()


def test_the_managers_form_is_still_the_default(make_site, admin_api):
    make_site(SITE)
    answer = post_devices(admin_api, [device("plain", agents=[community_agent("127.0.0.9")])])
    assert answer["added"] == 1
