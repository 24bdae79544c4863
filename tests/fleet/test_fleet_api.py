"""Fleet API: GET /api/v1/fleet/health (the spec's shape, site and instance counts by liveness, the
typed alerts, site-bound tokens) and GET /api/v1/fleet/metrics (Prometheus text parsed back, the same
numbers as JSON, label escaping, a bad format). Data is made through the services and the API; time
passes by moving heartbeats and discovery timestamps back. Every JSON body is checked against the
published OpenAPI schema."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from core.timefmt import iso_z
from discovery import runs
from fleet.metrics import fleet_prometheus_text
from instances.election import leader_health_check
from instances.models import Instance
from instances.services import instance_heartbeat
from inventory.services import inventory_add_devices
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import community_agent, device
from tests.openapi import assert_matches_schema, openapi

HEALTH = "/api/v1/fleet/health"
METRICS = "/api/v1/fleet/metrics"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# The spec's families, with its HELP texts, in its order.
SPEC_FAMILIES = [
    ("promsnmp_fleet_sites_total", "Total number of sites"),
    ("promsnmp_fleet_instances_total", "Total instances by status"),
    ("promsnmp_fleet_devices_total", "Total monitored devices"),
    ("promsnmp_site_instances", "Site instance count"),
]
OUR_FAMILIES = {
    "promsnmp_fleet_agents",
    "promsnmp_site_status",
    "promsnmp_site_healthy_instances",
    "promsnmp_site_has_leader",
    "promsnmp_site_devices",
    "promsnmp_site_agents",
    "promsnmp_site_inventory_version",
}

CHICAGO, NYC, LONDON, EMPTY, DENVER = (
    "chicago-pop-01",
    "nyc-dc-01",
    "london-colo-01",
    "0-empty_site",
    "denver-01",
)


def ok(response, path: str) -> dict:
    assert response.status_code == 200, (response.status_code, response.content[:800])
    assert response["Content-Type"] == "application/json"
    assert_matches_schema(response, "GET", path)
    return response.json()


def err(response, status: int, code: str, path: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert_matches_schema(response, "GET", path)
    body = response.json()
    assert set(body) == {"error", "detail", "fields"} and body["error"] == code, body
    return body


@pytest.fixture
def up(register):
    """up("site", "host") → instance id: registered, then a heartbeat reporting itself healthy."""

    def make(site_id: str, hostname: str, status: str = "healthy") -> str:
        instance_id = register(site_id, hostname)
        instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status=status)
        return instance_id

    return make


def heartbeat_age(instance_id: str, seconds: float):
    moment = timezone.now() - timedelta(seconds=seconds)
    Instance.objects.filter(pk=instance_id).update(last_heartbeat=moment)
    return moment


def add_devices(site_id: str, *devices: dict) -> None:
    result = inventory_add_devices(actor=TEST_ACTOR, site_id=site_id, items=list(devices), source="manual")
    assert all(outcome.status == "added" for outcome in result.outcomes), result.outcomes


def prometheus(client, **params) -> dict:
    response = client.get(METRICS, {"format": "prometheus", **params})
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"] == PROMETHEUS_CONTENT_TYPE
    documented = openapi()["paths"][METRICS]["get"]["responses"]["200"]["content"]
    assert documented["text/plain"]["schema"] == {"type": "string"}
    return parse(response.content.decode())


def parse(text: str) -> dict:
    """{family name: (help, type, {frozenset(labels): value})}"""
    return {
        family.name: (
            family.documentation,
            family.type,
            {frozenset(sample.labels.items()): sample.value for sample in family.samples},
        )
        for family in text_string_to_metric_families(text)
    }


def values(families: dict, name: str) -> dict:
    """{label values (sorted by label name) or (): value}"""
    return {tuple(v for _, v in sorted(labels)): value for labels, value in families[name][2].items()}


@pytest.fixture
def fleet(make_site, up, admin_api):
    """chicago: 3 healthy instances, 2 devices (3 agents), discovery ran 49 h ago → healthy, one
    discovery_stale alert. nyc: leader healthy, a follower that missed a heartbeat → degraded.
    london: its one instance past the timeout → offline. 0-empty_site: no instance → offline.
    denver: its leader was revoked by the health check while offline, then a follower came back
    before the next election → alive with no leader. Discovery is off except in chicago and nyc."""
    make_site(CHICAGO)
    make_site(NYC)
    for site in (LONDON, EMPTY, DENVER):
        make_site(site, discovery_enabled=False)
    ids = {
        "chicago": [up(CHICAGO, f"chi-{n}") for n in range(3)],
        "nyc": [up(NYC, f"nyc-{n}") for n in range(2)],
        "london": [up(LONDON, "lon-0")],
        "denver": [up(DENVER, f"den-{n}") for n in range(2)],
    }
    add_devices(
        CHICAGO,
        device("core-rtr-01", "127.0.0.1"),
        device(
            "core-rtr-02", "127.0.0.2", agents=[community_agent("127.0.0.2"), community_agent("127.0.0.3")]
        ),
    )
    add_devices(NYC, device("nyc-sw-01", "127.0.0.4"))

    # chicago: one discovery run, completed by the leader, 49 hours ago.
    seed = admin_api.post(
        f"/api/v1/sites/{CHICAGO}/discovery-seeds",
        {
            "name": "core",
            "targets": ["127.0.0.1"],
            "snmpConfig": {"version": 2, "readCommunity": "public123"},
        },
        format="json",
    )
    assert seed.status_code == 201, seed.content
    run = admin_api.post(f"/api/v1/sites/{CHICAGO}/discovery-runs", {}, format="json")
    assert run.status_code == 202, run.content
    runs.run_complete(
        instance_id=ids["chicago"][0], run_id=run.json()["runId"], status="completed", counts={}, errors=0
    )
    ran = timezone.now() - timedelta(hours=49)
    Site.objects.filter(pk=CHICAGO).update(last_discovery_at=ran)

    heartbeats = {
        "nyc": heartbeat_age(ids["nyc"][1], 60),  # missed one interval: degraded
        "london": heartbeat_age(ids["london"][0], 600),  # past the timeout: offline
    }
    for instance_id in ids["denver"]:
        heartbeat_age(instance_id, 600)
    assert leader_health_check()  # denver's and london's leaders are revoked: nobody alive to succeed
    assert not Instance.objects.filter(site_id=DENVER, is_leader=True).exists()
    heartbeats["denver"] = heartbeat_age(ids["denver"][0], 700)
    heartbeat_age(ids["denver"][1], 1)  # back, before any election ran
    return {"ids": ids, "heartbeats": heartbeats, "ran": ran}


# --- fleet/health ------------------------------------------------------------------------------


def test_health_counts_every_site_and_instance_by_liveness(fleet, admin_api):
    body = ok(admin_api.get(HEALTH), HEALTH)
    assert set(body) == {"status", "timestamp", "summary", "sites", "alerts"}
    assert ISO_Z.match(body["timestamp"])
    assert body["status"] == "degraded"
    assert body["summary"] == {
        "totalSites": 5,
        "healthySites": 1,
        "degradedSites": 2,  # nyc, denver
        "offlineSites": 2,  # london, the empty site
        "totalInstances": 8,
        "healthyInstances": 5,  # chicago 3, nyc 1, denver 1
        "totalDevices": 3,
        "totalAgents": 4,
    }
    assert body["sites"] == [
        {"id": EMPTY, "status": "offline", "instances": 0, "devices": 0},
        {"id": CHICAGO, "status": "healthy", "instances": 3, "devices": 2},
        {"id": DENVER, "status": "degraded", "instances": 2, "devices": 0},
        {"id": LONDON, "status": "offline", "instances": 1, "devices": 0},
        {"id": NYC, "status": "degraded", "instances": 2, "devices": 1},
    ]


def test_health_alerts_are_typed_and_mirror_the_alert_rules(fleet, admin_api, settings):
    timeout = timedelta(seconds=settings.HEARTBEAT_TIMEOUT_SECONDS)
    ids, beats = fleet["ids"], fleet["heartbeats"]
    alerts = ok(admin_api.get(HEALTH), HEALTH)["alerts"]
    # Critical first, then by site.
    assert [(a["severity"], a["type"], a["siteId"], a["instanceId"]) for a in alerts] == [
        ("critical", "site_offline", EMPTY, None),
        ("critical", "site_no_leader", DENVER, None),
        ("critical", "site_offline", LONDON, None),  # stands alone: no instance_offline for lon-0
        ("warning", "discovery_stale", CHICAGO, None),
        ("warning", "instance_offline", DENVER, ids["denver"][0]),
        ("warning", "site_degraded", NYC, None),
    ]
    by_key = {(a["type"], a["siteId"]): a for a in alerts}
    assert by_key[("site_offline", EMPTY)]["since"] is None
    assert by_key[("site_offline", EMPTY)]["message"] == f"Site {EMPTY} has no registered instance."
    assert by_key[("site_offline", LONDON)]["since"] == iso_z(beats["london"] + timeout)
    assert "None of the 1 instances" in by_key[("site_offline", LONDON)]["message"]
    assert by_key[("site_no_leader", DENVER)]["since"] is None
    offline = by_key[("instance_offline", DENVER)]
    assert offline["since"] == iso_z(beats["denver"] + timeout)
    assert iso_z(beats["denver"]) in offline["message"]
    stale = by_key[("discovery_stale", CHICAGO)]
    assert stale["since"] == iso_z(fleet["ran"] + timedelta(hours=48))
    assert iso_z(fleet["ran"]) in stale["message"]
    degraded = by_key[("site_degraded", NYC)]
    assert degraded["since"] is None
    assert ids["nyc"][1] in degraded["message"] and ids["nyc"][0] not in degraded["message"]


def test_alerts_follow_the_fleet_as_it_recovers(fleet, admin_api):
    ids = fleet["ids"]
    for instance_id in (ids["nyc"][1], ids["london"][0]):  # back: they heartbeat again
        instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status="healthy")
    assert leader_health_check()  # denver gets a leader (london got one with its heartbeat)
    Site.objects.filter(pk=CHICAGO).update(last_discovery_at=timezone.now() - timedelta(hours=47))
    body = ok(admin_api.get(HEALTH), HEALTH)
    assert [(a["type"], a["siteId"], a["instanceId"]) for a in body["alerts"]] == [
        ("site_offline", EMPTY, None),
        ("site_degraded", DENVER, None),
        ("instance_offline", DENVER, ids["denver"][0]),  # den-0 is still gone
    ]
    assert body["summary"]["healthySites"] == 3  # chicago, nyc, london
    Site.objects.filter(pk=EMPTY).delete()
    Instance.objects.filter(pk=ids["denver"][0]).delete()
    body = ok(admin_api.get(HEALTH), HEALTH)
    assert body["status"] == "healthy" and body["alerts"] == []
    assert body["summary"]["healthySites"] == body["summary"]["totalSites"] == 4


def test_an_instance_reporting_itself_unwell_degrades_its_site(make_site, up, admin_api):
    make_site("site", discovery_enabled=False)
    leader = up("site", "a")
    unwell = up("site", "b", status="unhealthy")
    body = ok(admin_api.get(HEALTH), HEALTH)
    assert body["sites"] == [{"id": "site", "status": "degraded", "instances": 2, "devices": 0}]
    assert body["summary"]["healthyInstances"] == 2  # liveness; what they report is another field
    [alert] = body["alerts"]
    assert alert["type"] == "site_degraded" and alert["severity"] == "warning"
    assert (
        alert["message"] == f"Site site is degraded: reporting themselves not healthy: {unwell} (unhealthy)."
    )
    assert leader not in alert["message"]


def test_discovery_never_run_is_stale_48_hours_after_the_site_was_created(make_site, up, admin_api):
    make_site("fresh")
    make_site("old")
    make_site("old-off", discovery_enabled=False)
    for site in ("fresh", "old", "old-off"):
        up(site, "host")
    created = timezone.now() - timedelta(hours=50)
    Site.objects.filter(pk__in=["old", "old-off"]).update(created_at=created)
    alerts = [a for a in ok(admin_api.get(HEALTH), HEALTH)["alerts"] if a["type"] == "discovery_stale"]
    assert alerts == [
        {
            "type": "discovery_stale",
            "severity": "warning",
            "siteId": "old",
            "instanceId": None,
            "message": "Discovery of site old never ran (more than 48 h ago).",
            "since": iso_z(created + timedelta(hours=48)),
        }
    ]


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([], "healthy"),
        (["healthy"], "healthy"),
        (["healthy", "offline"], "degraded"),
        (["degraded"], "degraded"),
        (["offline", "offline"], "offline"),
    ],
)
def test_overall_status(states, expected, make_site, up, admin_api):
    for n, state in enumerate(states):
        site = make_site(f"site-{n}")
        instance = up(site, "host")
        if state == "degraded":
            heartbeat_age(instance, 60)
        elif state == "offline":
            heartbeat_age(instance, 600)
    body = ok(admin_api.get(HEALTH), HEALTH)
    assert body["status"] == expected
    assert body["summary"]["totalSites"] == len(states)


def test_a_site_bound_token_sees_only_its_site(fleet, client_for):
    for client_scope in ("read", "write", "admin"):
        client = client_for(client_scope, site=NYC)
        body = ok(client.get(HEALTH), HEALTH)
        assert [site["id"] for site in body["sites"]] == [NYC]
        assert body["summary"]["totalSites"] == 1 and body["summary"]["totalInstances"] == 2
        assert body["summary"]["totalDevices"] == 1 and body["summary"]["totalAgents"] == 1
        assert body["status"] == "degraded"
        assert {alert["siteId"] for alert in body["alerts"]} == {NYC}

        metrics = ok(client.get(METRICS), METRICS)
        assert [site["id"] for site in metrics["sites"]] == [NYC]
        assert metrics["sitesTotal"] == 1 and metrics["devicesTotal"] == 1
        families = prometheus(client)
        assert values(families, "promsnmp_site_instances") == {(NYC,): 2}
        assert values(families, "promsnmp_fleet_sites_total") == {(): 1}


@pytest.mark.parametrize("path", [HEALTH, METRICS, f"{METRICS}?format=prometheus"])
def test_callers_without_a_valid_read_token_are_refused(path, client, client_for, db):
    assert client.get(path).status_code == 401
    response = client.get(path, HTTP_AUTHORIZATION="Bearer psm_garbage")
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert response["WWW-Authenticate"].startswith("Bearer")
    response = client_for("instance").get(path)
    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    assert response.json()["error"] == "forbidden"
    assert client_for("read").get(path).status_code == 200


def test_trailing_slash_is_served_too(fleet, admin_api):
    with_slash = ok(admin_api.get(HEALTH + "/"), HEALTH)
    assert with_slash["summary"] == ok(admin_api.get(HEALTH), HEALTH)["summary"]
    response = admin_api.get(METRICS + "/", {"format": "prometheus"})
    assert response.status_code == 200 and response["Content-Type"] == PROMETHEUS_CONTENT_TYPE


def world(make_site, up, sites: int, first: int = 0) -> None:
    """Sites site-<first> … site-<sites - 1>: a healthy, a degraded and an offline instance, one device."""
    for n in range(first, sites):
        site = make_site(f"site-{n:02d}")
        up(site, "a")
        heartbeat_age(up(site, "b"), 60)
        heartbeat_age(up(site, "c"), 600)
        add_devices(site, device(f"dev-{n}", f"127.0.1.{n + 1}"))


@pytest.mark.parametrize("path", [HEALTH, METRICS, f"{METRICS}?format=prometheus"])
def test_query_count_does_not_grow_with_the_fleet(path, make_site, up, client_for):
    client = client_for("read")
    counts = []
    for sites in (1, 20):
        Site.objects.all().delete()
        world(make_site, up, sites)
        client.get(path)  # the token's lastUsedAt moves at most once a minute
        with CaptureQueriesContext(connection) as queries:
            response = client.get(path)
        assert response.status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1], counts
    assert counts[1] <= 4, counts  # token lookup + sites + their instances


# --- fleet/metrics -----------------------------------------------------------------------------------


def test_prometheus_text_has_the_spec_families_and_real_numbers(fleet, admin_api):
    response = admin_api.get(METRICS, {"format": "prometheus"})
    text = response.content.decode()
    for name, help_text in SPEC_FAMILIES:
        assert f"# HELP {name} {help_text}\n# TYPE {name} gauge\n" in text
    assert text.index("promsnmp_fleet_sites_total") < text.index("promsnmp_fleet_instances_total")
    assert "\npromsnmp_fleet_sites_total 5\n" in text  # integers as integers, as the spec writes them
    assert '\npromsnmp_fleet_instances_total{status="healthy"} 5\n' in text

    families = prometheus(admin_api)
    assert set(families) == {name for name, _ in SPEC_FAMILIES} | OUR_FAMILIES
    assert all(kind == "gauge" for _, kind, _ in families.values())
    assert values(families, "promsnmp_fleet_sites_total") == {(): 5}
    assert values(families, "promsnmp_fleet_instances_total") == {
        ("healthy",): 5,
        ("degraded",): 1,
        ("offline",): 2,
    }
    assert values(families, "promsnmp_fleet_devices_total") == {(): 3}
    assert values(families, "promsnmp_fleet_agents") == {(): 4}
    assert values(families, "promsnmp_site_instances") == {
        (EMPTY,): 0,
        (CHICAGO,): 3,
        (DENVER,): 2,
        (LONDON,): 1,
        (NYC,): 2,
    }
    assert values(families, "promsnmp_site_healthy_instances") == {
        (EMPTY,): 0,
        (CHICAGO,): 3,
        (DENVER,): 1,
        (LONDON,): 0,
        (NYC,): 1,
    }
    assert values(families, "promsnmp_site_has_leader") == {
        (EMPTY,): 0,
        (CHICAGO,): 1,
        (DENVER,): 0,
        (LONDON,): 0,  # revoked by the health check
        (NYC,): 1,
    }
    assert values(families, "promsnmp_site_devices") == {
        (EMPTY,): 0,
        (CHICAGO,): 2,
        (DENVER,): 0,
        (LONDON,): 0,
        (NYC,): 1,
    }
    assert values(families, "promsnmp_site_agents") == {
        (EMPTY,): 0,
        (CHICAGO,): 3,
        (DENVER,): 0,
        (LONDON,): 0,
        (NYC,): 1,
    }
    versions = dict(Site.objects.values_list("id", "inventory_version"))
    assert values(families, "promsnmp_site_inventory_version") == {(site,): v for site, v in versions.items()}
    assert versions[CHICAGO] > 1
    status = values(families, "promsnmp_site_status")  # (site, status) → 1 for the current one
    assert {key for key, value in status.items() if value == 1} == {
        (EMPTY, "offline"),
        (CHICAGO, "healthy"),
        (DENVER, "degraded"),
        (LONDON, "offline"),
        (NYC, "degraded"),
    }
    assert len(status) == 15


def test_json_has_the_same_numbers(fleet, admin_api):
    by_default = ok(admin_api.get(METRICS), METRICS)
    as_json = ok(admin_api.get(METRICS, {"format": "json"}), METRICS)
    for body in (by_default, as_json):
        body.pop("timestamp")
    assert by_default == as_json
    families = prometheus(admin_api)
    assert as_json["sitesTotal"] == values(families, "promsnmp_fleet_sites_total")[()]
    assert as_json["instancesTotal"] == {
        k[0]: v for k, v in values(families, "promsnmp_fleet_instances_total").items()
    }
    assert as_json["devicesTotal"] == values(families, "promsnmp_fleet_devices_total")[()] == 3
    assert as_json["agentsTotal"] == values(families, "promsnmp_fleet_agents")[()] == 4
    assert as_json["sites"][1] == {
        "id": CHICAGO,
        "status": "healthy",
        "instances": 3,
        "healthyInstances": 3,
        "devices": 2,
        "agents": 3,
        "hasLeader": True,
        "inventoryVersion": Site.objects.get(pk=CHICAGO).inventory_version,
    }
    for site in as_json["sites"]:
        assert site["instances"] == values(families, "promsnmp_site_instances")[(site["id"],)]
        assert site["devices"] == values(families, "promsnmp_site_devices")[(site["id"],)]
    health = ok(admin_api.get(HEALTH), HEALTH)
    assert health["summary"]["totalDevices"] == as_json["devicesTotal"]
    assert [(s["id"], s["status"]) for s in health["sites"]] == [
        (s["id"], s["status"]) for s in as_json["sites"]
    ]


@pytest.mark.parametrize("value", ["openmetrics", "PROMETHEUS", "text", "api"])
def test_an_unknown_format_is_a_400(value, admin_api, db):
    body = err(admin_api.get(METRICS, {"format": value}), 400, "validation_error", METRICS)
    assert body["fields"] == {"format": ["One of json, prometheus."]}


def test_an_empty_fleet(admin_api, db):
    assert values(prometheus(admin_api), "promsnmp_fleet_instances_total") == {
        ("healthy",): 0,
        ("degraded",): 0,
        ("offline",): 0,
    }
    body = ok(admin_api.get(METRICS), METRICS)
    assert body["sitesTotal"] == 0 and body["sites"] == []


def test_site_ids_with_every_allowed_character_are_labels(make_site, up, admin_api):
    odd = "0_-" + "a" * 61  # starts with a digit, has both separators, 64 characters
    make_site(odd)
    up(odd, "host")
    families = prometheus(admin_api)
    assert values(families, "promsnmp_site_instances") == {(odd,): 1}


def test_label_values_and_help_are_escaped_per_the_exposition_format():
    weird = 'we"ird\\site\nname'
    text = fleet_prometheus_text(
        {
            "sitesTotal": 1,
            "instancesTotal": {"healthy": 1, "degraded": 0, "offline": 0},
            "devicesTotal": 2,
            "agentsTotal": 3,
            "sites": [
                {
                    "id": weird,
                    "status": "healthy",
                    "instances": 1,
                    "healthyInstances": 1,
                    "devices": 2,
                    "agents": 3,
                    "hasLeader": True,
                    "inventoryVersion": 7,
                }
            ],
        }
    )
    assert 'promsnmp_site_instances{site="we\\"ird\\\\site\\nname"} 1\n' in text
    families = parse(text)
    assert values(families, "promsnmp_site_instances") == {(weird,): 1}
    assert values(families, "promsnmp_site_inventory_version") == {(weird,): 7}
    assert values(families, "promsnmp_site_status") == {
        (weird, "healthy"): 1,
        (weird, "degraded"): 0,
        (weird, "offline"): 0,
    }
