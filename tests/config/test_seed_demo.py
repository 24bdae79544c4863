"""manage.py seed_demo: the demo fleet's sites, seeds and devices written through the services (the
API reads them back, secrets encrypted at rest), idempotent (a second run adds nothing and moves no
inventory version; what was removed comes back, what was changed stays), --sites N, and the refusal of a
database that holds other sites unless --force."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from config.demo_fleet import SITES
from core.models import AuditLog
from inventory.models import Agent, Device, DiscoverySeed
from sites.models import Site

pytestmark = pytest.mark.django_db
SPEC_SITES = ["chicago-pop-01", "london-colo-01", "nyc-dc-01"]


def seed_demo(*args: str) -> list[str]:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue().splitlines()


def counts() -> tuple[int, int, int]:
    return Site.objects.count(), DiscoverySeed.objects.count(), Device.objects.count()


def versions() -> dict[str, int]:
    return dict(Site.objects.values_list("id", "inventory_version"))


def test_it_writes_the_demo_fleet_through_the_services(admin_api):
    lines = seed_demo()
    assert lines[0] == "Demo fleet: 3 sites created, 0 there already; 4 seeds and 6 devices added."
    assert "create_token --scope instance --site chicago-pop-01" in lines[1]
    assert sorted(Site.objects.values_list("id", flat=True)) == SPEC_SITES
    assert counts() == (3, 4, 6)

    london = admin_api.get("/api/v1/sites/london-colo-01").json()
    assert (london["label"], london["config"]["minReplicas"], london["status"]) == (
        "London Colocation",
        2,
        "offline",
    )
    response = admin_api.get("/api/v1/sites/london-colo-01/inventory?includeCredentials=true")
    inventory = json.loads(b"".join(response.streaming_content))
    devices = {device["sysName"]: device for device in inventory["devices"]}
    assert set(devices) == {"core-rtr-01.london", "dist-sw-01.london"}
    v3 = devices["dist-sw-01.london"]["agents"][0]
    assert (v3["address"], v3["port"], v3["type"], v3["securityName"], v3["privPassphrase"]) == (
        "127.0.3.9",
        161,
        "usm",
        "monitor",
        "privpass123",
    )
    assert [seed["name"] for seed in inventory["discoverySeeds"]] == ["Core Network", "Distribution Layer"]
    assert inventory["discoverySeeds"][0]["targets"] == ["127.0.3.0/29"]
    # Secrets are stored encrypted, as any write through the services leaves them.
    assert all(value.startswith("enc1:") for value in Agent.objects.values_list("credentials", flat=True))
    written = AuditLog.objects.filter(site_id__in=SPEC_SITES)
    assert set(written.values_list("actor", flat=True)) == {"command:manage.py seed_demo"}
    assert written.filter(action="site_created").count() == 3

    status = StringIO()
    call_command("fleet_status", "--json", stdout=status)
    assert [(s["id"], s["status"], s["deviceCount"]) for s in json.loads(status.getvalue())["sites"]] == [
        ("chicago-pop-01", "offline", 2),
        ("london-colo-01", "offline", 2),
        ("nyc-dc-01", "offline", 2),
    ]


def test_it_runs_again_adding_only_what_is_missing():
    seed_demo()
    before, audit = versions(), AuditLog.objects.count()
    assert seed_demo()[0] == "Demo fleet: 0 sites created, 3 there already; nothing to add."
    assert (counts(), versions(), AuditLog.objects.count()) == ((3, 4, 6), before, audit)

    # An operator's changes stay; what was removed comes back.
    Site.objects.filter(pk="nyc-dc-01").update(label="NYC (renamed)")
    DiscoverySeed.objects.filter(site_id="chicago-pop-01").delete()
    Device.objects.filter(sys_name="dist-sw-01.london").delete()
    chicago, nyc, london = (versions()[site] for site in ("chicago-pop-01", "nyc-dc-01", "london-colo-01"))
    lines = seed_demo("-v", "2")
    assert lines[:3] == [  # one new version where something was added
        f"chicago-pop-01: there already; 1 seed and 0 devices added (inventory version {chicago + 1})",
        f"nyc-dc-01: there already; 0 seeds and 0 devices added (inventory version {nyc})",
        f"london-colo-01: there already; 0 seeds and 1 device added (inventory version {london + 1})",
    ]
    assert lines[3] == "Demo fleet: 0 sites created, 3 there already; 1 seed and 1 device added."
    assert counts() == (3, 4, 6)
    assert Site.objects.get(pk="nyc-dc-01").label == "NYC (renamed)"


def test_sites_n_adds_generated_sites_after_the_spec_examples():
    assert (
        seed_demo("--sites", "2")[0]
        == "Demo fleet: 2 sites created, 0 there already; 2 seeds and 4 devices added."
    )
    assert sorted(Site.objects.values_list("id", flat=True)) == ["chicago-pop-01", "nyc-dc-01"]
    assert (
        seed_demo("--sites", "5")[0]
        == "Demo fleet: 3 sites created, 2 there already; 4 seeds and 6 devices added."
    )
    generated = Site.objects.get(pk="demo-site-005")
    assert (generated.label, generated.discovery_enabled) == ("Demo site 5", False)
    assert sorted(Device.objects.filter(site=generated).values_list("sys_name", flat=True)) == [
        "sw-01.demo-site-005",
        "sw-02.demo-site-005",
    ]
    assert list(DiscoverySeed.objects.filter(site=generated).values_list("targets", flat=True)) == [
        ["127.16.5.0/29"]
    ]
    assert counts() == (5, 6, 10)
    for bad in ("0", "1001", "many"):
        with pytest.raises(CommandError, match=f"a number of sites from 1 to 1000, not '{bad}'"):
            seed_demo("--sites", bad)
    assert len(SITES) == 3


def test_a_database_with_other_sites_is_refused_unless_forced(make_site):
    for site_id in ("acme-1", "acme-2", "acme-3", "acme-4"):
        make_site(site_id)
    with pytest.raises(CommandError) as raised:
        seed_demo()
    assert str(raised.value) == (
        "This database holds sites that are not the demo's (acme-1, acme-2, acme-3, … (4 in all)). Demo "
        "sites have no instance: offline, they would join that fleet's health and alerts. Nothing was "
        "written; use --force to add them anyway."
    )
    assert counts() == (4, 0, 0)
    assert seed_demo("--force", "--sites", "1")[0] == (
        "Demo fleet: 1 site created, 0 there already; 1 seed and 2 devices added."
    )
    assert counts() == (5, 1, 2)
    Site.objects.filter(pk__startswith="acme-").delete()
    assert seed_demo("--sites", "2")[0] == (  # the demo's own sites never count against it
        "Demo fleet: 1 site created, 1 there already; 1 seed and 2 devices added."
    )
