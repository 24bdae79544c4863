"""manage.py fleet_status: the table (status, leader by hostname and id, healthy/total instances,
devices, last discovery's age), --json with the API's names and the same facts as GET fleet/health,
--site (repeatable; an unknown one is an error), --fail-on-degraded's exit code, and two queries
however many sites there are."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.timefmt import short_age
from instances.models import Instance
from instances.services import instance_heartbeat
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.fleet.test_fleet_api import HEALTH, add_devices, heartbeat_age, ok
from tests.inventory.test_inventory_api import device

pytestmark = pytest.mark.django_db


def fleet_status(*args: str) -> str:
    out = StringIO()
    call_command("fleet_status", *args, stdout=out)
    return out.getvalue()


@pytest.fixture
def up(register):
    """up("site", "host") → instance id: registered, then a heartbeat reporting itself healthy."""

    def make(site_id: str, hostname: str) -> str:
        instance_id = register(site_id, hostname)
        instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status="healthy")
        return instance_id

    return make


@pytest.fixture
def fleet(make_site, up):
    """chicago: leader + follower, both healthy, 2 devices, discovery 3 h ago → healthy.
    nyc: its only instance past the heartbeat timeout → offline. 0-empty: no instance → offline."""
    make_site("chicago-pop-01")
    leader = up("chicago-pop-01", "promsnmp-chi-1")
    up("chicago-pop-01", "promsnmp-chi-2")
    add_devices("chicago-pop-01", device("core-rtr-01", "127.0.1.1"), device("access-sw-15", "127.0.1.2"))
    Site.objects.filter(pk="chicago-pop-01").update(last_discovery_at=timezone.now() - timedelta(hours=3))
    make_site("nyc-dc-01")
    heartbeat_age(up("nyc-dc-01", "promsnmp-nyc-1"), 3600)
    make_site("0-empty")
    return {"leader": leader}


def test_the_table_names_each_sites_status_leader_instances_devices_and_last_discovery(fleet):
    lines = fleet_status().splitlines()
    header, *rows, blank, summary = lines
    assert header.split() == ["SITE", "STATUS", "LEADER", "INSTANCES", "DEVICES", "LAST", "DISCOVERY"]
    assert [row.split()[0] for row in rows] == ["0-empty", "chicago-pop-01", "nyc-dc-01"]  # by id
    by_site = {row.split()[0]: row.split() for row in rows}
    assert by_site["chicago-pop-01"] == [
        "chicago-pop-01",
        "healthy",
        "promsnmp-chi-1",
        f"({fleet['leader']})",
        "2/2",
        "2",
        "3h",
        "ago",
    ]
    assert by_site["0-empty"] == ["0-empty", "offline", "-", "0/0", "0", "never"]
    # The health check has not run: the offline instance is still the leader, shown with its id.
    nyc_leader = Instance.objects.get(site_id="nyc-dc-01")
    assert by_site["nyc-dc-01"][:4] == ["nyc-dc-01", "offline", "promsnmp-nyc-1", f"({nyc_leader.id})"]
    assert by_site["nyc-dc-01"][4:] == ["0/1", "0", "never"]
    # Columns line up: every cell starts where its header does.
    starts = [header.index(name) for name in ("STATUS", "LEADER", "INSTANCES", "DEVICES", "LAST")]
    for row in rows:
        assert all(row[start - 2 : start] == "  " and row[start] != " " for start in starts), row
    assert blank == ""
    assert summary == (
        "Fleet degraded: 3 sites (1 healthy, 0 degraded, 2 offline), 2/3 instances healthy, 2 devices."
    )


def test_json_has_the_apis_names_and_the_same_facts_as_fleet_health(fleet, admin_api):
    document = json.loads(fleet_status("--json"))
    health = ok(admin_api.get(HEALTH), HEALTH)
    assert set(document) == {"status", "timestamp", "summary", "sites"}
    assert (document["status"], document["summary"]) == (health["status"], health["summary"])
    assert [(s["id"], s["status"], s["instanceCount"], s["deviceCount"]) for s in document["sites"]] == [
        (s["id"], s["status"], s["instances"], s["devices"]) for s in health["sites"]
    ]
    chicago = next(site for site in document["sites"] if site["id"] == "chicago-pop-01")
    listed = admin_api.get("/api/v1/sites/chicago-pop-01").json()
    assert chicago == {
        "id": "chicago-pop-01",
        "status": "healthy",
        "leaderInstanceId": fleet["leader"],
        "leaderHostname": "promsnmp-chi-1",
        "instanceCount": 2,
        "healthyInstances": 2,
        "deviceCount": 2,
        "lastDiscovery": listed["lastDiscovery"],
    }
    # Each key as GET /api/v1/sites/{id} names it.
    for key in ("status", "leaderInstanceId", "instanceCount", "healthyInstances", "deviceCount"):
        assert chicago[key] == listed[key], key
    empty = next(site for site in document["sites"] if site["id"] == "0-empty")
    assert (empty["leaderInstanceId"], empty["leaderHostname"], empty["lastDiscovery"]) == (None, None, None)


def test_site_filters_and_an_unknown_site_is_an_error(fleet):
    rows = fleet_status("--site", "nyc-dc-01", "--site", "0-empty", "--site", "nyc-dc-01").splitlines()
    assert [row.split()[0] for row in rows[1:3]] == ["0-empty", "nyc-dc-01"]
    assert rows[-1].startswith("Fleet offline: 2 sites (0 healthy, 0 degraded, 2 offline)")
    document = json.loads(fleet_status("--json", "--site", "chicago-pop-01"))
    assert [site["id"] for site in document["sites"]] == ["chicago-pop-01"]
    assert (document["status"], document["summary"]["totalSites"]) == ("healthy", 1)
    with pytest.raises(CommandError, match=r"No site 'atlantis', 'nowhere'\.") as raised:
        fleet_status("--site", "chicago-pop-01", "--site", "nowhere", "--site", "atlantis")
    assert raised.value.returncode == 1


def test_it_exits_0_whatever_the_health_and_2_with_fail_on_degraded_when_a_site_is_not_healthy(fleet):
    assert "Fleet degraded" in fleet_status()  # a report: no error
    assert fleet_status("--fail-on-degraded", "--site", "chicago-pop-01").startswith("SITE")
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command("fleet_status", "--fail-on-degraded", "--json", stdout=out)
    assert raised.value.returncode == 2
    assert str(raised.value) == "2 of 3 sites not healthy: 0-empty (offline), nyc-dc-01 (offline)"
    assert json.loads(out.getvalue())["status"] == "degraded"  # the document was printed first


def test_an_empty_fleet_is_one_line():
    assert fleet_status() == (
        "Fleet healthy: 0 sites (0 healthy, 0 degraded, 0 offline), 0/0 instances healthy, 0 devices.\n"
    )
    assert json.loads(fleet_status("--json"))["sites"] == []


def test_short_age_is_the_largest_whole_unit():
    assert [short_age(s) for s in (-5, 0, 59, 60, 3599, 3600, 86399, 86400, 10 * 86400)] == [
        "0s",
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "23h",
        "1d",
        "10d",
    ]


@pytest.mark.parametrize("as_json", [False, True])
def test_two_queries_however_many_sites(make_site, register, as_json):
    def count() -> int:
        with CaptureQueriesContext(connection) as captured:
            fleet_status(*(["--json"] if as_json else []))
        return len(captured)

    make_site("site-0")
    register("site-0", "host-0")
    few = count()
    for index in range(1, 8):
        make_site(f"site-{index}")
        for host in range(3):
            register(f"site-{index}", f"host-{host}")
        add_devices(f"site-{index}", device(f"dev-{index}", f"127.0.9.{index}"))
    assert count() == few == 2
