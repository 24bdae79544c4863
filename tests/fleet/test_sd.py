"""Prometheus HTTP service discovery: GET /api/v1/sd/instances and GET /api/v1/sd/devices?site=.

The http_sd shape and labels (checked against the published OpenAPI schema too), who may call them
(read scopes; a site-bound token sees its site only; instance tokens are refused), bad input, the
rendezvous properties (each device exactly once, only a failed instance's devices move, the same answer
every time and in any order), the device target PromSNMP knows (the sysName of the PromSNMP export), and
query counts that do not grow with devices or instances. Instances are registered through the service and
age by moving their last heartbeat back; devices are added through the inventory service."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from fleet.sd import Rendezvous, ServingInstance, device_target, json_array
from instances.liveness import HEALTHY, liveness
from instances.models import Instance
from instances.services import instance_heartbeat, instance_register
from inventory.promsnmp import export_document
from inventory.services import inventory_add_devices
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import Materialized, device, many
from tests.openapi import assert_matches_schema

INSTANCES = "/api/v1/sd/instances"
DEVICES = "/api/v1/sd/devices"
CHI, NYC, EMPTY = "chicago-pop-01", "nyc-dc-01", "empty-01"
DEVICE_LABELS = {
    "__metrics_path__",
    "__param_target",
    "__meta_promsnmp_instance_id",
    "site",
    "device",
    "device_id",
}


def sd_body(response, path: str) -> list:
    body = Materialized(response)
    assert body.status_code == 200, (body.status_code, body.content[:800])
    assert body.headers["Content-Type"] == "application/json"  # what Prometheus's http_sd accepts
    assert_matches_schema(body, "GET", path)
    return body.json()


def sd_error(response, status: int, code: str, path: str) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:800])
    assert response["Content-Type"] == "application/json"
    assert_matches_schema(response, "GET", path)
    body = response.json()
    assert set(body) == {"error", "detail", "fields"} and body["error"] == code, body
    return body


def up(site_id: str, hostname: str, scrape_address: str = "") -> str:
    """Registered (a heartbeat now) with a scrapeAddress; reporting itself healthy."""
    instance, _ = instance_register(
        actor=TEST_ACTOR, site_id=site_id, hostname=hostname, scrape_address=scrape_address
    )
    instance_heartbeat(actor=TEST_ACTOR, instance_id=instance.id, status="healthy")
    return instance.id


def age(instance_id: str, seconds: float) -> None:
    Instance.objects.filter(pk=instance_id).update(last_heartbeat=timezone.now() - timedelta(seconds=seconds))


def add(site_id: str, devices: list[dict]) -> list[str]:
    result = inventory_add_devices(actor=TEST_ACTOR, site_id=site_id, items=devices, source="manual")
    assert all(outcome.status == "added" for outcome in result.outcomes), result.outcomes
    return [outcome.id for outcome in result.outcomes]


def owners(groups: list[dict]) -> dict[str, str]:
    """device id → the scrape address that serves it; fails if a device is listed twice."""
    ids = [group["labels"]["device_id"] for group in groups]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    return {group["labels"]["device_id"]: group["targets"][0] for group in groups}


@pytest.fixture
def world(make_site):
    """chicago: a leader and a follower that are healthy, one that missed a heartbeat (degraded), one
    past the timeout (offline), one healthy without a scrapeAddress; 3 devices, one without a sysName.
    nyc: one healthy instance, one device. empty: nothing."""
    for site in (CHI, NYC, EMPTY):
        make_site(site)
    ids = {
        "leader": up(CHI, "chi-a", "10.0.0.1:8080"),
        "follower": up(CHI, "chi-b", "chi-b.example.net:8080"),
        "degraded": up(CHI, "chi-c", "[2001:db8::3]:8080"),
        "offline": up(CHI, "chi-d", "10.0.0.4:8080"),
        "unscraped": up(CHI, "chi-e"),
        "nyc": up(NYC, "nyc-a", "10.1.0.1:8080"),
    }
    age(ids["degraded"], 60)
    age(ids["offline"], 600)
    devices = add(
        CHI,
        [
            device("edge-rtr-01.chicago", "127.0.0.1"),
            device("core-sw-02.chicago", "127.0.0.2"),
            device(None, "127.0.0.3"),
        ],
    )
    add(NYC, [device("nyc-rtr-01", "127.0.1.1")])
    return {**ids, "devices": devices}


# --- /sd/instances ------------------------------------------------------------------------------------


def test_instances_one_group_per_instance_with_a_scrape_address(world, admin_api):
    groups = sd_body(admin_api.get(INSTANCES), INSTANCES)
    assert groups == [
        {
            "targets": ["10.0.0.1:8080"],
            "labels": {
                "site": CHI,
                "instance_id": world["leader"],
                "hostname": "chi-a",
                "leader": "true",
                "status": "healthy",
            },
        },
        {
            "targets": ["chi-b.example.net:8080"],
            "labels": {
                "site": CHI,
                "instance_id": world["follower"],
                "hostname": "chi-b",
                "leader": "false",
                "status": "healthy",
            },
        },
        {
            "targets": ["[2001:db8::3]:8080"],
            "labels": {
                "site": CHI,
                "instance_id": world["degraded"],
                "hostname": "chi-c",
                "leader": "false",
                "status": "degraded",
            },
        },
        {
            "targets": ["10.0.0.4:8080"],
            "labels": {
                "site": CHI,
                "instance_id": world["offline"],
                "hostname": "chi-d",
                "leader": "false",
                "status": "offline",
            },
        },
        {
            "targets": ["10.1.0.1:8080"],
            "labels": {
                "site": NYC,
                "instance_id": world["nyc"],
                "hostname": "nyc-a",
                "leader": "true",
                "status": "healthy",
            },
        },
    ]


def test_instances_of_one_site(world, admin_api):
    groups = sd_body(admin_api.get(INSTANCES, {"site": NYC}), INSTANCES)
    assert [g["labels"]["instance_id"] for g in groups] == [world["nyc"]]
    assert sd_body(admin_api.get(INSTANCES, {"site": EMPTY}), INSTANCES) == []
    # A trailing slash is served too, with the same answer.
    assert sd_body(admin_api.get(INSTANCES + "/", {"site": NYC}), INSTANCES) == groups


def test_leader_label_follows_leadership(world, admin_api):
    Instance.objects.filter(pk=world["nyc"]).update(is_leader=False)
    (group,) = sd_body(admin_api.get(INSTANCES, {"site": NYC}), INSTANCES)
    assert group["labels"]["leader"] == "false"


# --- /sd/devices --------------------------------------------------------------------------------------


def test_devices_one_group_per_device_through_a_healthy_instance(world, admin_api):
    groups = sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES)
    assert len(groups) == 3
    serving = {"10.0.0.1:8080": world["leader"], "chi-b.example.net:8080": world["follower"]}
    for group in groups:
        assert set(group) == {"targets", "labels"}
        assert len(group["targets"]) == 1 and group["targets"][0] in serving, group
        labels = group["labels"]
        assert set(labels) == DEVICE_LABELS
        assert labels["__metrics_path__"] == "/snmp"
        assert labels["site"] == CHI
        assert labels["device"] == labels["__param_target"]
        assert labels["__meta_promsnmp_instance_id"] == serving[group["targets"][0]]
    assert sorted(owners(groups)) == sorted(world["devices"])
    by_id = {g["labels"]["device_id"]: g["labels"]["__param_target"] for g in groups}
    assert [by_id[i] for i in world["devices"]] == ["edge-rtr-01.chicago", "core-sw-02.chicago", "127.0.0.3"]


def test_device_target_is_the_name_promsnmp_has(world, admin_api):
    """PromSNMP answers GET /snmp?target=X for the device whose sysName is X: the target of a named device
    is the sysName the PromSNMP export of the site gives it; a device without one is named by address."""
    site = Site.objects.get(pk=CHI)
    exported = export_document(site, format="promsnmp")["devices"]
    names = {d["sysName"] for d in exported if d["sysName"]}
    groups = sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES)
    targets = {g["labels"]["__param_target"] for g in groups}
    assert names == {"edge-rtr-01.chicago", "core-sw-02.chicago"} and names < targets
    nameless = [d for d in exported if not d["sysName"]]
    assert [d["primaryAgent"]["endpoint"]["address"] for d in nameless] == ["127.0.0.3"]
    assert targets - names == {"127.0.0.3"}
    assert device_target("", "addr:127.0.0.3") == "127.0.0.3"
    assert device_target("r1", "name:r1") == "r1"


def test_no_healthy_instance_no_device_groups(world, admin_api):
    for key in ("leader", "follower", "nyc"):
        age(world[key], 60)  # degraded: gives its devices up
    assert sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES) == []
    assert sd_body(admin_api.get(DEVICES, {"site": NYC}), DEVICES) == []
    assert sd_body(admin_api.get(DEVICES, {"site": EMPTY}), DEVICES) == []  # no instance, no device
    # chicago's healthy instance without a scrapeAddress serves nothing either.
    assert liveness(Instance.objects.get(pk=world["unscraped"]).last_heartbeat) == HEALTHY


def test_a_site_without_devices_is_empty(world, admin_api):
    up(EMPTY, "empty-a", "10.2.0.1:8080")
    assert sd_body(admin_api.get(DEVICES, {"site": EMPTY}), DEVICES) == []


def test_devices_answer_is_streamed(world, admin_api):
    response = admin_api.get(DEVICES, {"site": CHI})
    assert response.streaming
    assert len(json.loads(b"".join(response.streaming_content))) == 3


# --- rendezvous ---------------------------------------------------------------------------------------


@pytest.fixture
def spread(make_site):
    """chicago with 300 devices and three healthy instances."""
    make_site(CHI)
    ids = [up(CHI, f"chi-{n}", f"10.0.0.{n + 1}:8080") for n in range(3)]
    add(CHI, many(300, prefix="rtr"))
    return ids


def test_each_device_exactly_once_and_spread_over_the_instances(spread, admin_api):
    groups = sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES)
    served = owners(groups)
    assert len(served) == 300
    load = Counter(served.values())
    assert set(load) == {"10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"}
    # 100 each on average; a fair hash stays far from these bounds (binomial sd ≈ 8).
    assert all(60 <= count <= 140 for count in load.values()), load


def test_only_the_failed_instances_devices_move_and_come_back(spread, admin_api):
    before = owners(sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES))
    age(spread[2], 60)  # missed a heartbeat: no longer serves
    after = owners(sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES))
    assert set(after) == set(before)
    moved = {d for d in before if before[d] != after[d]}
    assert moved == {d for d, address in before.items() if address == "10.0.0.3:8080"}
    assert moved and "10.0.0.3:8080" not in after.values()
    assert {after[d] for d in moved} == {"10.0.0.1:8080", "10.0.0.2:8080"}  # spread, not dumped on one
    # Back: exactly the first assignment again.
    instance_heartbeat(actor=TEST_ACTOR, instance_id=spread[2], status="healthy")
    assert owners(sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES)) == before


def test_a_new_instance_takes_devices_only_for_itself(spread, admin_api):
    before = owners(sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES))
    up(CHI, "chi-new", "10.0.0.9:8080")
    after = owners(sd_body(admin_api.get(DEVICES, {"site": CHI}), DEVICES))
    moved = {d for d in before if before[d] != after[d]}
    assert moved and all(after[d] == "10.0.0.9:8080" for d in moved)
    assert 40 <= len(moved) <= 110, len(moved)  # about a quarter of 300


def test_same_answer_every_time(spread, admin_api):
    first = Materialized(admin_api.get(DEVICES, {"site": CHI})).content
    assert Materialized(admin_api.get(DEVICES, {"site": CHI})).content == first


def test_rendezvous_is_deterministic_and_minimal():
    members = [ServingInstance(f"inst_{n:016x}", f"10.0.0.{n}:8080") for n in range(5)]
    keys = [f"dev_{n:016x}" for n in range(2000)]
    ring = Rendezvous(members)
    assignment = {key: ring.owner(key).id for key in keys}
    # Member order does not matter; a fresh ring (another process) agrees.
    assert {key: Rendezvous(reversed(members)).owner(key).id for key in keys} == assignment
    for removed in members:
        rest = Rendezvous([m for m in members if m is not removed])
        for key in keys:
            if assignment[key] != removed.id:
                assert rest.owner(key).id == assignment[key]
            else:
                assert rest.owner(key).id != removed.id

    # The documented formula (docs/operations.md), computed here on its own: the owner of a key is the
    # member with the highest blake2b-64 of (member id, NUL, key), the same on every machine.
    def reference(key: str) -> str:
        scores = {
            m.id: hashlib.blake2b(m.id.encode() + b"\x00" + key.encode(), digest_size=8).digest()
            for m in members
        }
        return max(scores, key=scores.__getitem__)

    assert all(assignment[key] == reference(key) for key in keys)
    assert [assignment[key] for key in keys[:4]] == [
        "inst_0000000000000003",
        "inst_0000000000000004",
        "inst_0000000000000003",
        "inst_0000000000000003",
    ]
    assert not Rendezvous([])
    with pytest.raises(LookupError):
        Rendezvous([]).owner("dev_x")


def test_json_array_streams_in_batches():
    chunks = list(json_array(({"n": n} for n in range(1201)), batch=500))
    assert len(chunks) == 4  # "[", 500 items, 500 items, 201 items and "]"
    assert json.loads(b"".join(chunks)) == [{"n": n} for n in range(1201)]
    assert json.loads(b"".join(json_array([]))) == []


# --- who may call, and bad input ----------------------------------------------------------------------


@pytest.mark.parametrize("path", [INSTANCES, f"{DEVICES}?site={CHI}"])
def test_read_scopes_may_instance_tokens_may_not(world, path, client, client_for):
    response = client.get(path)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    for scope in ("read", "write", "admin"):
        assert Materialized(client_for(scope).get(path)).status_code == 200, scope
    for token in (client_for("instance"), client_for("instance", site=CHI)):
        response = token.get(path)
        assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_a_site_bound_token_sees_only_its_site(world, client_for):
    bound = client_for("read", site=NYC)
    groups = sd_body(bound.get(INSTANCES), INSTANCES)
    assert [g["labels"]["site"] for g in groups] == [NYC]
    assert sd_body(bound.get(INSTANCES, {"site": NYC}), INSTANCES) == groups
    assert len(sd_body(bound.get(DEVICES, {"site": NYC}), DEVICES)) == 1
    sd_error(bound.get(INSTANCES, {"site": CHI}), 403, "forbidden", INSTANCES)
    sd_error(bound.get(DEVICES, {"site": CHI}), 403, "forbidden", DEVICES)
    # No hint whether another site exists.
    sd_error(bound.get(DEVICES, {"site": "no-such-site"}), 403, "forbidden", DEVICES)


def test_bad_input(world, admin_api):
    body = sd_error(admin_api.get(DEVICES), 400, "validation_error", DEVICES)
    assert list(body["fields"]) == ["site"]
    sd_error(admin_api.get(DEVICES, {"site": ""}), 400, "validation_error", DEVICES)
    sd_error(admin_api.get(f"{DEVICES}?site={CHI}&site={NYC}"), 400, "validation_error", DEVICES)
    sd_error(admin_api.get(DEVICES, {"site": "no-such-site"}), 404, "not_found", DEVICES)
    sd_error(admin_api.get(INSTANCES, {"site": ""}), 400, "validation_error", INSTANCES)
    sd_error(admin_api.get(f"{INSTANCES}?site={CHI}&site={NYC}"), 400, "validation_error", INSTANCES)
    sd_error(admin_api.get(INSTANCES, {"site": "no-such-site"}), 404, "not_found", INSTANCES)
    sd_error(admin_api.get(INSTANCES, {"site": "Ünïcode ✓"}), 404, "not_found", INSTANCES)
    for path in (INSTANCES, f"{DEVICES}?site={CHI}"):
        response = admin_api.post(path, {}, format="json")
        assert response.status_code == 405 and response.json()["error"] == "method_not_allowed"


# --- query counts -------------------------------------------------------------------------------------


def counted(client, path: str, params: dict) -> tuple[int, int]:
    """(queries, items) of one GET, its streamed body read inside the count."""
    client.get(path, params)  # the token's lastUsedAt moves at most once a minute
    with CaptureQueriesContext(connection) as queries:
        body = Materialized(client.get(path, params))
        assert body.status_code == 200, body.content[:500]
        items = len(body.json())
    return len(queries), items


def grow(site: str, instances: int, devices: int) -> None:
    for n in range(Instance.objects.filter(site_id=site).count(), instances):
        up(site, f"host-{n:03d}", f"10.9.{n // 200}.{n % 200 + 1}:8080")
    have = Site.objects.get(pk=site).device_count
    if devices > have:
        add(site, many(devices, prefix="q")[have:])


def test_query_counts_do_not_grow_with_instances_or_devices(make_site, client_for):
    make_site(CHI)
    client = client_for("read")
    counts = []
    for instances, devices in ((1, 2), (12, 2600)):  # past one cursor chunk (2000 rows)
        grow(CHI, instances, devices)
        sd_queries, sd_items = counted(client, INSTANCES, {})
        dev_queries, dev_items = counted(client, DEVICES, {"site": CHI})
        assert (sd_items, dev_items) == (instances, devices)
        counts.append((sd_queries, dev_queries))
    assert counts[0] == counts[1], counts
    # token lookup + instances; token lookup + site + its instances + the device cursor
    assert counts[1][0] <= 2 and counts[1][1] <= 4, counts
