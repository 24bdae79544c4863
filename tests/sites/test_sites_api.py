"""Sites API: create, list, detail, PUT, PATCH, DELETE, config, configVersion, validation, status."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.utils import timezone

from core.audit import Actor
from instances.models import Instance
from instances.services import instance_heartbeat
from sites.models import Site
from tests.openapi import assert_matches_schema

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
DEFAULT_CONFIG = {
    "timezone": "UTC",
    "minReplicas": 1,
    "discoveryEnabled": True,
    "discoveryCron": "0 0 2 * * *",
    "collectionInterval": 30000,
    "cacheExpiration": 300000,
    "cacheMaxEntries": 10000,
    "requireInstanceTokens": False,
}
LONDON = {
    "id": "london-colo-01",
    "label": "London Colocation",
    "description": "EMEA regional hub",
    "location": {"address": "London, UK", "latitude": 51.5074, "longitude": -0.1278},
    "config": {
        "timezone": "Europe/London",
        "minReplicas": 2,
        "discoveryEnabled": True,
        "discoveryCron": "0 0 3 * * *",
    },
}
ACTOR = Actor.command("tests")


def ok(response, method: str, path: str, status: int = 200) -> dict | None:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert_matches_schema(response, method, path)
    return response.json() if response.content else None


def get_site(api, site_id: str) -> dict:
    return ok(api.get(f"/api/v1/sites/{site_id}"), "GET", f"/api/v1/sites/{site_id}")


def heartbeat(instance_id: str, status: str = "healthy") -> None:
    instance_heartbeat(actor=ACTOR, instance_id=instance_id, status=status)


def age_heartbeat(instance_id: str, seconds: int) -> None:
    Instance.objects.filter(pk=instance_id).update(last_heartbeat=timezone.now() - timedelta(seconds=seconds))


# --- create, list, detail -------------------------------------------------------------------------


def test_create_answers_201_with_the_detail(admin_api):
    body = ok(admin_api.post("/api/v1/sites", LONDON, format="json"), "POST", "/api/v1/sites", 201)
    assert body["id"] == "london-colo-01"
    assert body["label"] == "London Colocation"
    assert body["description"] == "EMEA regional hub"
    assert body["location"] == LONDON["location"]
    assert body["config"] == {**DEFAULT_CONFIG, **LONDON["config"]}
    assert body["configVersion"] == 1
    assert body["status"] == "offline"
    assert body["instanceCount"] == 0 and body["healthyInstances"] == 0
    assert body["leaderInstanceId"] is None
    assert body["instances"] == []
    stats = dict(body["stats"])
    inventory_version = stats.pop("inventoryVersion")
    assert stats == {"deviceCount": 0, "agentCount": 0, "seedCount": 0, "lastDiscovery": None}
    assert isinstance(inventory_version, int) and inventory_version >= 0
    assert ISO_Z.match(body["createdAt"])
    assert get_site(admin_api, "london-colo-01") == body


def test_create_with_only_id_and_label_gets_defaults(admin_api):
    body = ok(
        admin_api.post("/api/v1/sites", {"id": "minimal", "label": "Minimal"}, format="json"),
        "POST",
        "/api/v1/sites",
        201,
    )
    assert body["description"] == ""
    assert body["location"] == {"address": "", "latitude": None, "longitude": None}
    assert body["config"] == DEFAULT_CONFIG


def test_create_duplicate_id_is_409(admin_api, make_site):
    make_site("taken")
    response = admin_api.post("/api/v1/sites", {"id": "taken", "label": "Again"}, format="json")
    assert response.status_code == 409, response.content
    assert set(response.json()) == {"error", "detail", "fields"}
    assert Site.objects.get(pk="taken").label == "Taken"


def test_list_with_limit_and_offset(admin_api, make_site):
    for site_id in ("site-c", "site-a", "site-b"):
        make_site(site_id)
    body = ok(admin_api.get("/api/v1/sites"), "GET", "/api/v1/sites")
    assert set(body) == {"sites", "total"}
    assert body["total"] == 3
    assert [s["id"] for s in body["sites"]] == ["site-a", "site-b", "site-c"]
    first = ok(admin_api.get("/api/v1/sites", {"limit": 2}), "GET", "/api/v1/sites")
    assert [s["id"] for s in first["sites"]] == ["site-a", "site-b"] and first["total"] == 3
    rest = ok(admin_api.get("/api/v1/sites", {"limit": 2, "offset": 2}), "GET", "/api/v1/sites")
    assert [s["id"] for s in rest["sites"]] == ["site-c"] and rest["total"] == 3
    beyond = ok(admin_api.get("/api/v1/sites", {"offset": 10}), "GET", "/api/v1/sites")
    assert beyond == {"sites": [], "total": 3}


def test_list_item_fields(admin_api, make_site, register):
    make_site("site-a")
    leader = register("site-a", "host-a")
    item = ok(admin_api.get("/api/v1/sites"), "GET", "/api/v1/sites")["sites"][0]
    assert set(item) >= {
        "id", "label", "description", "location", "status", "instanceCount", "healthyInstances",
        "leaderInstanceId", "deviceCount", "lastDiscovery", "createdAt",
    }  # fmt: skip
    assert "instances" not in item and "stats" not in item
    assert item["instanceCount"] == 1 and item["healthyInstances"] == 1
    assert item["leaderInstanceId"] == leader


def test_detail_has_instances_and_stats(admin_api, make_site, register):
    make_site("site-a")
    first = register("site-a", "host-a", "pod-a")
    second = register("site-a", "host-b", "pod-b")
    body = get_site(admin_api, "site-a")
    assert [i["id"] for i in body["instances"]] == [first, second]
    by_id = {i["id"]: i for i in body["instances"]}
    assert by_id[first]["isLeader"] is True and by_id[second]["isLeader"] is False
    assert by_id[first]["hostname"] == "host-a"
    assert all(i["status"] == "healthy" and ISO_Z.match(i["lastHeartbeat"]) for i in body["instances"])
    assert body["leaderInstanceId"] == first
    assert body["instanceCount"] == 2
    assert set(body["stats"]) == {
        "deviceCount",
        "agentCount",
        "seedCount",
        "lastDiscovery",
        "inventoryVersion",
    }


def test_trailing_slash_is_served_not_redirected(admin_api, make_site):
    make_site("site-a")
    assert admin_api.get("/api/v1/sites/").status_code == 200
    assert admin_api.get("/api/v1/sites/site-a/").status_code == 200


def test_site_config_uses_the_instance_names(admin_api, make_site, settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 20
    settings.HEARTBEAT_TIMEOUT_SECONDS = 60
    make_site("site-a", timezone="America/Chicago", cache_max_entries=500)
    body = ok(admin_api.get("/api/v1/sites/site-a/config"), "GET", "/api/v1/sites/site-a/config")
    assert body == {
        "configVersion": 1,
        "config": {
            "discoveryEnabled": True,
            "discoveryCron": "0 0 2 * * *",
            "discoveryTimezone": "America/Chicago",
            "collectionInterval": 30000,
            "cacheExpiration": 300000,
            "cacheMaxEntries": 500,
            "heartbeatInterval": 20000,
        },
    }


# --- PUT, PATCH, DELETE ---------------------------------------------------------------------------


def test_put_is_a_full_representation(admin_api):
    ok(admin_api.post("/api/v1/sites", LONDON, format="json"), "POST", "/api/v1/sites", 201)
    path = "/api/v1/sites/london-colo-01"
    body = ok(admin_api.put(path, {"label": "Only a label"}, format="json"), "PUT", path)
    assert body["label"] == "Only a label"
    assert body["description"] == ""
    assert body["location"] == {"address": "", "latitude": None, "longitude": None}
    assert body["config"] == DEFAULT_CONFIG
    assert body["configVersion"] == 2
    assert get_site(admin_api, "london-colo-01") == body


def test_put_with_the_same_id_is_accepted(admin_api, make_site):
    make_site("site-a")
    path = "/api/v1/sites/site-a"
    body = ok(admin_api.put(path, {"id": "site-a", "label": "Renamed"}, format="json"), "PUT", path)
    assert body["id"] == "site-a" and body["label"] == "Renamed"


def test_patch_changes_only_what_it_names(admin_api):
    ok(admin_api.post("/api/v1/sites", LONDON, format="json"), "POST", "/api/v1/sites", 201)
    path = "/api/v1/sites/london-colo-01"
    body = ok(admin_api.patch(path, {"description": "Patched"}, format="json"), "PATCH", path)
    assert body["description"] == "Patched"
    assert body["label"] == LONDON["label"]
    assert body["location"] == LONDON["location"]
    assert body["config"] == {**DEFAULT_CONFIG, **LONDON["config"]}
    assert body["configVersion"] == 1
    body = ok(admin_api.patch(path, {"config": {"minReplicas": 3}}, format="json"), "PATCH", path)
    assert body["config"]["minReplicas"] == 3
    assert body["config"]["timezone"] == "Europe/London"
    assert body["configVersion"] == 2
    body = ok(admin_api.patch(path, {"location": {"latitude": 10.5}}, format="json"), "PATCH", path)
    assert body["location"]["latitude"] == 10.5
    assert body["location"]["address"] == "London, UK"


def test_delete_is_204_then_404(admin_api, make_site, register):
    make_site("site-a")
    instance = register("site-a", "host-a")
    path = "/api/v1/sites/site-a"
    response = admin_api.delete(path)
    ok(response, "DELETE", path, 204)
    assert response.content == b""
    assert admin_api.get(path).status_code == 404
    assert admin_api.delete(path).status_code == 404
    assert not Instance.objects.filter(pk=instance).exists()


# --- configVersion --------------------------------------------------------------------------------


def test_config_version_moves_only_on_a_real_config_change(admin_api, make_site):
    make_site("site-a")
    path = "/api/v1/sites/site-a"
    version = lambda: get_site(admin_api, "site-a")["configVersion"]  # noqa: E731
    assert version() == 1

    body = ok(
        admin_api.patch(path, {"config": {"discoveryCron": "0 0 4 * * *"}}, format="json"), "PATCH", path
    )
    assert body["configVersion"] == 2

    # The same value again: no change.
    ok(admin_api.patch(path, {"config": {"discoveryCron": "0 0 4 * * *"}}, format="json"), "PATCH", path)
    assert version() == 2

    # A PUT that changes nothing.
    full = {
        "label": "Site-A",
        "description": "",
        "location": {"address": "", "latitude": None, "longitude": None},
        "config": {**DEFAULT_CONFIG, "discoveryCron": "0 0 4 * * *"},
    }
    before = get_site(admin_api, "site-a")
    body = ok(admin_api.put(path, full, format="json"), "PUT", path)
    assert body["configVersion"] == 2
    assert body["updatedAt"] == before["updatedAt"]

    # A PUT that changes only label, description and location.
    profile = {
        **full,
        "label": "New label",
        "description": "New description",
        "location": {"address": "Somewhere", "latitude": 1.5, "longitude": 2.5},
    }
    body = ok(admin_api.put(path, profile, format="json"), "PUT", path)
    assert body["label"] == "New label" and body["location"]["latitude"] == 1.5
    assert body["configVersion"] == 2

    # A PUT that changes one config value.
    body = ok(
        admin_api.put(path, {**profile, "config": {**full["config"], "minReplicas": 2}}, format="json"),
        "PUT",
        path,
    )
    assert body["configVersion"] == 3

    # A PUT that leaves config out resets it to the defaults: a real change.
    body = ok(admin_api.put(path, {"label": "New label"}, format="json"), "PUT", path)
    assert body["config"] == DEFAULT_CONFIG
    assert body["configVersion"] == 4


def test_put_of_defaults_without_config_does_not_move_the_version(admin_api, make_site):
    make_site("site-a")
    path = "/api/v1/sites/site-a"
    body = ok(admin_api.put(path, {"label": "Other", "description": "d"}, format="json"), "PUT", path)
    assert body["configVersion"] == 1


# --- validation -----------------------------------------------------------------------------------

INVALID = [
    ("id", {"id": "Upper-Case"}),
    ("id", {"id": "has space"}),
    ("id", {"id": "-leading-dash"}),
    ("id", {"id": "dots.not.allowed"}),
    ("id", {"id": "a" * 65}),
    ("id", {"id": ""}),
    ("location.latitude", {"location": {"latitude": 90.0001}}),
    ("location.latitude", {"location": {"latitude": -91}}),
    ("location.longitude", {"location": {"longitude": 180.5}}),
    ("location.longitude", {"location": {"longitude": -181}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "30 0 2 * * *"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "not a cron"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "0 2 * *"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "0 0 2 * * * *"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "0 61 * * *"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": "0 0 25 * * *"}}),
    ("config.discoveryCron", {"config": {"discoveryCron": ""}}),
    ("config.timezone", {"config": {"timezone": "Mars/Olympus"}}),
    ("config.timezone", {"config": {"timezone": "america/chicago"}}),
    ("config.timezone", {"config": {"timezone": "+02:00"}}),
]


@pytest.mark.parametrize(("field", "change"), INVALID, ids=[f"{f}={c}"[:80] for f, c in INVALID])
def test_validation_is_400_per_field(admin_api, field, change):
    body = {"id": "valid-site", "label": "Valid", **change}
    response = admin_api.post("/api/v1/sites", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()
    assert set(error) == {"error", "detail", "fields"}
    assert error["error"] == "validation_error"
    assert list(error["fields"]) == [field], error
    assert not Site.objects.exists()


VALID = [
    {"id": "a"},
    {"id": "a" * 64},
    {"id": "pop_01-chicago"},
    {"id": "0-starts-with-digit"},
    {"location": {"latitude": 90, "longitude": -180}},
    {"location": {"latitude": -90.0, "longitude": 180.0}},
    {"config": {"discoveryCron": "0 0 2 * * *"}},
    {"config": {"discoveryCron": "0 */15 * * * MON-FRI"}},
    {"config": {"discoveryCron": "30 2 * * *"}},
    {"config": {"timezone": "America/Chicago"}},
    {"config": {"timezone": "UTC"}},
]


@pytest.mark.parametrize("change", VALID, ids=[str(c)[:60] for c in VALID])
def test_valid_values_are_accepted(admin_api, change):
    body = {"id": "valid-site", "label": "Valid", **change}
    created = ok(admin_api.post("/api/v1/sites", body, format="json"), "POST", "/api/v1/sites", 201)
    assert created["id"] == body["id"]
    for key, value in change.get("config", {}).items():
        assert created["config"][key] == value


def test_patch_validation_is_400_and_changes_nothing(admin_api, make_site):
    make_site("site-a")
    path = "/api/v1/sites/site-a"
    before = get_site(admin_api, "site-a")
    for change in (
        {"config": {"discoveryCron": "15 0 2 * * *"}},
        {"config": {"timezone": "Nowhere/Else"}},
        {"location": {"latitude": 100}},
    ):
        response = admin_api.patch(path, change, format="json")
        assert response.status_code == 400, response.content
    assert get_site(admin_api, "site-a") == before


# --- site status ----------------------------------------------------------------------------------


@pytest.fixture
def timings(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 10
    settings.HEARTBEAT_TIMEOUT_SECONDS = 30
    return settings


def test_site_without_instances_is_offline(admin_api, make_site, timings):
    make_site("site-a")
    body = get_site(admin_api, "site-a")
    assert body["status"] == "offline"
    assert body["healthyInstances"] == 0 and body["leaderInstanceId"] is None


def test_one_healthy_leader_with_min_replicas_1_is_healthy(admin_api, make_site, register, timings):
    make_site("site-a", min_replicas=1)
    leader = register("site-a", "host-a")
    heartbeat(leader)
    body = get_site(admin_api, "site-a")
    assert body["status"] == "healthy"
    assert body["healthyInstances"] == 1 and body["leaderInstanceId"] == leader
    listed = ok(admin_api.get("/api/v1/sites"), "GET", "/api/v1/sites")["sites"][0]
    assert listed["status"] == "healthy"


def test_min_replicas_2_with_one_healthy_is_degraded(admin_api, make_site, register, timings):
    make_site("site-a", min_replicas=2)
    heartbeat(register("site-a", "host-a"))
    assert get_site(admin_api, "site-a")["status"] == "degraded"
    heartbeat(register("site-a", "host-b"))
    assert get_site(admin_api, "site-a")["status"] == "healthy"


def test_instance_reporting_unhealthy_makes_the_site_degraded(admin_api, make_site, register, timings):
    make_site("site-a")
    leader = register("site-a", "host-a")
    heartbeat(leader, "unhealthy")
    body = get_site(admin_api, "site-a")
    assert body["status"] == "degraded"
    assert body["instances"][0]["status"] == "healthy"  # liveness and the report are two fields
    assert body["instances"][0]["reportedStatus"] == "unhealthy"


def test_instance_liveness_by_heartbeat_age(admin_api, make_site, register, timings):
    make_site("site-a")
    leader = register("site-a", "host-a")
    heartbeat(leader)
    assert get_site(admin_api, "site-a")["instances"][0]["status"] == "healthy"

    age_heartbeat(leader, 25)  # missed more than one interval, within the timeout
    body = get_site(admin_api, "site-a")
    assert body["instances"][0]["status"] == "degraded"
    assert body["status"] == "degraded"

    age_heartbeat(leader, 31)  # past HEARTBEAT_TIMEOUT_SECONDS
    body = get_site(admin_api, "site-a")
    assert body["instances"][0]["status"] == "offline"
    assert body["healthyInstances"] == 0
    assert body["status"] == "offline"
    instance = admin_api.get(f"/api/v1/instances/{leader}").json()
    assert instance["status"] == "offline"


def test_offline_leader_with_a_healthy_follower_is_degraded(admin_api, make_site, register, timings):
    make_site("site-a")
    leader = register("site-a", "host-a")
    follower = register("site-a", "host-b")
    heartbeat(leader)
    heartbeat(follower)
    age_heartbeat(leader, 120)
    body = get_site(admin_api, "site-a")
    assert body["status"] == "degraded"
    assert body["healthyInstances"] == 1
    by_id = {i["id"]: i["status"] for i in body["instances"]}
    assert by_id == {leader: "offline", follower: "healthy"}
