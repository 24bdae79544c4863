"""The admin for the inventory (issue 3, section 7): devices with their agents inline and secrets masked,
search by sysName and address, the change log, discovery seeds. Read-only; deleting goes through the
services (a new inventory version, an AuditLog row with the admin user). Driven with
django.test.Client as a logged-in superuser, on PostgreSQL; data written through the services."""

from __future__ import annotations

import pytest
from django.contrib.admin.utils import quote
from django.test import Client

from core.models import AuditLog
from inventory.models import Agent, Device, DiscoverySeed, InventoryChange
from inventory.seeds import parse_seed
from inventory.services import inventory_import, parse_devices
from sites.models import Site
from tests.conftest import TEST_ACTOR

ACTOR = "user:admin"
SITE = "chicago-pop-01"
OTHER = "london-colo-01"
DEVICES = "/admin/inventory/device/"
CHANGES = "/admin/inventory/inventorychange/"
SEEDS = "/admin/inventory/discoveryseed/"

COMMUNITY = "pl41nt3xt-c0mmunity"
WRITE_COMMUNITY = "wr1te-c0mmunity-x"
AUTH_PASS = "auth-pass-phrase-1"
PRIV_PASS = "priv-pass-phrase-2"
SEED_COMMUNITY = "s33d-c0mmunity"
SECRETS = (COMMUNITY, WRITE_COMMUNITY, AUTH_PASS, PRIV_PASS, SEED_COMMUNITY)

CORE_ROUTER = {
    "sysName": "core-router-01",
    "sysDescr": "Cisco IOS XE",
    "agents": [
        {
            "address": "192.0.2.10",
            "version": 2,
            "readCommunity": COMMUNITY,
            "writeCommunity": WRITE_COMMUNITY,
            "isPrimary": True,
        },
        {
            "address": "192.0.2.11",
            "port": 1161,
            "version": 3,
            "securityName": "monitor",
            "securityLevel": "authPriv",
            "authProtocol": "SHA256",
            "authPassphrase": AUTH_PASS,
            "privProtocol": "AES256",
            "privPassphrase": PRIV_PASS,
        },
    ],
}
ACCESS_SWITCH = {
    "sysName": "access-switch-07",
    "agents": [{"address": "198.51.100.7", "version": 2, "readCommunity": COMMUNITY}],
}
NAMELESS = {"sysName": None, "agents": [{"address": "203.0.113.5", "version": 1, "readCommunity": COMMUNITY}]}
SEED = {
    "name": "Core Network",
    "targets": ["10.0.1.0/24", "10.0.2.0/24", "192.168.1.1", "192.168.1.2"],
    "snmpConfig": {"version": 2, "readCommunity": SEED_COMMUNITY},
    "schedule": "0 0 2 * * *",
}


@pytest.fixture
def admin(db, django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("admin", "admin@example.com", "unused-password")
    client = Client()
    client.force_login(user)
    return client


def load(site_id: str, wire: list[dict], seeds: list[dict] | None = None) -> int:
    """Write devices (and seeds) through the import service, as PUT inventory does; → the version."""
    devices, errors = parse_devices(wire)
    assert not errors, errors
    seed_inputs = None
    if seeds is not None:
        seed_inputs = []
        for raw in seeds:
            seed, seed_errors = parse_seed(raw)
            assert not seed_errors, seed_errors
            seed_inputs.append(seed)
    result = inventory_import(actor=TEST_ACTOR, site_id=site_id, devices=devices, seeds=seed_inputs)
    assert result.changed
    return result.version


@pytest.fixture
def inventory(make_site) -> int:
    make_site(SITE)
    make_site(OTHER)
    load(OTHER, [{**ACCESS_SWITCH, "sysName": "london-edge-01"}])
    return load(SITE, [CORE_ROUTER, ACCESS_SWITCH, NAMELESS], seeds=[SEED])


def page(changelist: str, pk, view: str = "change") -> str:
    return f"{changelist}{quote(pk)}/{view}/"


def listed(client: Client, url: str) -> list:
    response = client.get(url)
    assert response.status_code == 200, response.content[:500]
    return list(response.context["cl"].result_list)


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def assert_no_secret(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html


def test_device_changelist_shows_columns_and_filters_by_site(admin, inventory):
    response = admin.get(DEVICES)
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_secret(html)
    rows = {device.sys_name or device.identity: device for device in response.context["cl"].result_list}
    assert set(rows) == {"core-router-01", "access-switch-07", "addr:203.0.113.5", "london-edge-01"}
    router = rows["core-router-01"]
    assert (router._primary_address, router._agent_count, router.changed_version) == (
        "192.0.2.10",
        2,
        inventory,
    )
    assert "192.0.2.10" in html and "(addr:203.0.113.5)" in html
    for column in ("sysName", "Site", "Primary agent", "Agents", "Last seen", "Changed version"):
        assert column in html, column

    assert {d.site_id for d in listed(admin, f"{DEVICES}?site__id__exact={OTHER}")} == {OTHER}
    assert len(listed(admin, f"{DEVICES}?site__id__exact={SITE}")) == 3
    # sortable by the computed columns
    by_agents = listed(admin, f"{DEVICES}?o=-4")  # agents, descending
    assert by_agents[0].sys_name == "core-router-01"


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("core-router", {"core-router-01"}),  # sysName, a part of it
        ("ACCESS-SWITCH-07", {"access-switch-07"}),  # case-insensitive
        ("192.0.2.11", {"core-router-01"}),  # the address of a non-primary agent
        ("192.0.2.1", {"core-router-01"}),  # matches both its agents, listed once
        ("203.0.113.5", {"addr:203.0.113.5"}),  # a device without sysName, by address
        ("198.51.100", {"access-switch-07", "london-edge-01"}),  # part of an address, both sites
        ("not-there", set()),
    ],
)
def test_device_search_by_sysname_and_agent_address(admin, inventory, term, expected):
    found = listed(admin, f"{DEVICES}?q={term}")
    assert {d.sys_name or d.identity for d in found} == expected
    assert len(found) == len(expected)  # two agents of one device never list it twice


def test_device_page_shows_agents_inline_with_secrets_masked(admin, inventory):
    router = Device.objects.get(site_id=SITE, sys_name="core-router-01")
    response = admin.get(page(DEVICES, router.pk))
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_secret(html)
    for ciphertext in Agent.objects.filter(device=router).values_list("credentials", flat=True):
        assert ciphertext.startswith("enc1:") and ciphertext not in html

    assert "Cisco IOS XE" in html
    for text in (
        "192.0.2.10",
        "192.0.2.11",
        "1161",
        "v2c",
        "v3",
        "community",
        "usm",
        "monitor",
        "authPriv",
        "auth: SHA256, priv: AES256",
        "readCommunity: ****, writeCommunity: ****",
        "authPassphrase: ****, privPassphrase: ****",
    ):
        assert text in html, text
    # read-only: nothing to save, no inline forms to add or delete agents
    assert 'name="_save"' not in html
    assert 'name="agents-0-address"' not in html
    assert 'name="agents-0-DELETE"' not in html
    assert 'name="agents-MAX_NUM_FORMS" value="0"' in html  # no agent can be added


def test_devices_cannot_be_added_edited_or_deleted_one_by_one(admin, inventory):
    router = Device.objects.get(site_id=SITE, sys_name="core-router-01")
    assert admin.get(f"{DEVICES}add/").status_code == 403
    assert admin.post(page(DEVICES, router.pk), {"sys_name": "renamed"}).status_code == 403
    assert admin.get(page(DEVICES, router.pk, "delete")).status_code == 403
    assert admin.post(page(DEVICES, router.pk, "delete"), {"post": "yes"}).status_code == 403
    html = admin.get(DEVICES).content.decode()
    assert 'value="delete_devices"' in html and 'value="delete_selected"' not in html
    admin.post(DEVICES, {"action": "delete_selected", "_selected_action": [router.pk], "post": "yes"})
    router.refresh_from_db()
    assert router.sys_name == "core-router-01"
    assert Site.objects.get(pk=SITE).inventory_version == inventory


def test_delete_action_removes_devices_through_the_service(admin, inventory):
    router = Device.objects.get(site_id=SITE, sys_name="core-router-01")
    london = Device.objects.get(site_id=OTHER)
    london_version = Site.objects.get(pk=OTHER).inventory_version
    audit_before = AuditLog.objects.filter(action="inventory_changed").count()

    response = admin.post(
        DEVICES, {"action": "delete_devices", "_selected_action": [router.pk, london.pk]}, follow=True
    )
    assert response.status_code == 200
    [message] = messages_of(response)
    assert (
        message.startswith("Deleted 2 device(s)") and f"core-router-01 ({SITE} v{inventory + 1})" in message
    )

    assert not Device.objects.filter(pk__in=[router.pk, london.pk]).exists()
    assert not Agent.objects.filter(device_id__in=[router.pk, london.pk]).exists()
    site = Site.objects.get(pk=SITE)
    assert (site.inventory_version, site.device_count, site.agent_count) == (inventory + 1, 2, 2)
    assert Site.objects.get(pk=OTHER).inventory_version == london_version + 1
    change = InventoryChange.objects.get(site_id=SITE, version=inventory + 1)
    assert (change.change_type, change.removed_ids, change.triggered_by) == (
        "device_removed",
        [router.pk],
        ACTOR,
    )
    rows = AuditLog.objects.filter(action="inventory_changed").order_by("id")[audit_before:]
    assert {(row.actor, row.site_id, row.details["removed"]) for row in rows} == {
        (ACTOR, SITE, 1),
        (ACTOR, OTHER, 1),
    }
    assert all(row.ip_address == "127.0.0.1" for row in rows)

    # the change log in the admin shows the new version
    changes = listed(admin, f"{CHANGES}?site__id__exact={SITE}")
    newest = changes[0]
    assert (newest.version, newest.change_type, newest._removed) == (
        inventory + 1,
        "device_removed",
        1,
    )


def test_delete_action_refuses_more_devices_than_its_limit(admin, inventory, monkeypatch):
    monkeypatch.setattr("inventory.admin.MAX_DELETE", 2)
    ids = list(Device.objects.filter(site_id=SITE).values_list("pk", flat=True))
    assert len(ids) == 3
    response = admin.post(DEVICES, {"action": "delete_devices", "_selected_action": ids}, follow=True)
    assert response.status_code == 200
    [message] = messages_of(response)
    assert message.startswith("Select at most 2 devices")
    assert Device.objects.filter(pk__in=ids).count() == 3
    assert Site.objects.get(pk=SITE).inventory_version == inventory


def test_change_log_is_listed_read_only(admin, inventory):
    response = admin.get(CHANGES)
    assert response.status_code == 200
    html = response.content.decode()
    changes = {(c.site_id, c.version): c for c in response.context["cl"].result_list}
    latest = changes[(SITE, inventory)]
    assert (latest.change_type, latest._added, latest._updated, latest._removed) == ("bulk_import", 3, 0, 0)
    assert (latest.source, latest.triggered_by) == ("import", "command:tests")
    assert 'value="delete_selected"' not in html

    detail = admin.get(page(CHANGES, latest.pk))
    assert detail.status_code == 200
    text = detail.content.decode()
    for device_id in Device.objects.filter(site_id=SITE).values_list("pk", flat=True):
        assert device_id in text
    assert 'name="_save"' not in text
    assert admin.get(f"{CHANGES}add/").status_code == 403
    assert admin.post(page(CHANGES, latest.pk, "delete"), {"post": "yes"}).status_code == 403


def test_site_admin_shows_each_sites_inventory_version(admin, inventory):
    response = admin.get("/admin/sites/site/")
    assert response.status_code == 200
    versions = {site.pk: site.inventory_version for site in response.context["cl"].result_list}
    assert versions[SITE] == inventory
    assert "Inventory version" in response.content.decode()


def test_seeds_are_listed_with_secrets_masked(admin, inventory):
    seed = DiscoverySeed.objects.get(site_id=SITE)
    assert seed.credentials.startswith("enc1:")
    response = admin.get(SEEDS)
    assert response.status_code == 200
    html = response.content.decode()
    assert_no_secret(html)
    assert seed.credentials not in html
    assert "Core Network" in html
    assert "10.0.1.0/24, 10.0.2.0/24, 192.168.1.1 (+1 more)" in html
    assert 'value="delete_seeds"' in html and 'value="delete_selected"' not in html

    assert [s.name for s in listed(admin, f"{SEEDS}?q=core")] == ["Core Network"]
    assert listed(admin, f"{SEEDS}?q=nothing") == []

    detail = admin.get(page(SEEDS, seed.pk))
    assert detail.status_code == 200
    text = detail.content.decode()
    assert_no_secret(text)
    assert "&quot;readCommunity&quot;: &quot;****&quot;" in text
    assert "192.168.1.2" in text and "514" in text  # all targets; 256 + 256 + 1 + 1 addresses
    assert 'name="_save"' not in text
    assert admin.get(f"{SEEDS}add/").status_code == 403
    assert admin.post(page(SEEDS, seed.pk, "delete"), {"post": "yes"}).status_code == 403


def test_delete_seed_action_goes_through_the_service(admin, inventory):
    seed = DiscoverySeed.objects.get(site_id=SITE)
    response = admin.post(SEEDS, {"action": "delete_seeds", "_selected_action": [seed.pk]}, follow=True)
    assert response.status_code == 200
    assert messages_of(response) == [f"Deleted 1 seed(s): Core Network ({SITE})."]
    assert not DiscoverySeed.objects.filter(pk=seed.pk).exists()
    site = Site.objects.get(pk=SITE)
    assert (site.inventory_version, site.seed_count) == (inventory + 1, 0)
    row = AuditLog.objects.filter(action="inventory_changed", site_id=SITE).latest("id")
    assert row.actor == ACTOR and row.details["seeds"]["removed"] == [seed.pk]
