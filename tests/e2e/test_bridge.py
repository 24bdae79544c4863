"""The agent's bridge mode end to end (issue 10): a real `manage.py serve`, agents started as
`python -m agent --promsnmp-url …` (processes without Django), each beside a PromSNMP stand-in
(tests/promsnmp_standin.py, PromSNMP's endpoints with its replace-everything POST).

- An inventory change in the manager reaches both stand-ins within 2 s; heartbeats report the version
  each PromSNMP holds (GET /api/v1/instances/{id}).
- A device the leader's PromSNMP found by itself reaches the manager and the other PromSNMP, with one
  POST each and no echo; what a follower's PromSNMP found is not posted.
- The manager down for 20 s: neither stand-in gets a POST, and an agent restarted meanwhile does not
  touch its own (its state directory says what it holds); nor do they once the manager is back.
- A fetch cut short halfway (a proxy between agent and manager): nothing is posted, until a whole
  document gets through.
"""

from __future__ import annotations

import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from core.services import token_create
from instances.models import Instance
from inventory.models import Device, InventoryChange
from sites.models import Site
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.agent_support import CuttingProxy, serve_on, start_bridge, stop_agent, wait_until
from tests.e2e.servers import free_port
from tests.e2e.test_websocket import bearer, ok
from tests.promsnmp_standin import PromSnmpStandIn, found_device

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "bridge-site"
OUTAGE_SECONDS = 20
REACH_SECONDS = 2  # the bound for an inventory change to reach every PromSNMP
# Leadership must not move while the manager is away: this test is about PromSNMP's inventory.
SERVER_ENV = {"FAILOVER_GRACE_SECONDS": "60"}


def device(name: str, address: str) -> dict:
    return {
        "sysName": name,
        "agents": [{"address": address, "port": 161, "version": 2, "readCommunity": "lab-ro"}],
    }


def add_devices(base_url: str, admin: dict, *devices: dict) -> int:
    """Through the manager's API (so its own process announces the change); the new version."""
    answer = ok(
        requests.post(
            f"{base_url}/api/v1/sites/{SITE}/inventory/devices",
            json={"devices": list(devices), "source": "manual"},
            headers=admin,
            timeout=10,
        )
    )
    return answer["newVersion"]


def reported_version(base_url: str, admin: dict, instance_id: str) -> int | None:
    return ok(requests.get(f"{base_url}/api/v1/instances/{instance_id}", headers=admin, timeout=10))[
        "inventoryVersion"
    ]


def instance(hostname: str) -> Instance | None:
    return Instance.objects.filter(site_id=SITE, hostname=hostname).first()


def names(promsnmp: PromSnmpStandIn) -> set[str]:
    return promsnmp.names()


@pytest.fixture
def tokens(db):
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Bridge"})
    _, enrolment = token_create(actor=TEST_ACTOR, name="bridges", scopes=["instance"], site_id=SITE)
    _, admin = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    return enrolment, bearer(admin)


def test_two_bridges_follow_the_site_share_what_promsnmp_found_and_never_wipe(tokens, tmp_path: Path):
    enrolment, admin = tokens
    port = free_port()
    logs = {name: tmp_path / f"agent-{name}.log" for name in ("a", "b")}
    states = {name: tmp_path / f"state-{name}" for name in ("a", "b")}
    with ExitStack() as stack:
        promsnmp = {name: stack.enter_context(PromSnmpStandIn()) for name in ("a", "b")}
        first = ExitStack()
        base_url, _ = first.enter_context(serve_on(port, SERVER_ENV))
        agents = {}

        def start(name: str):
            agents[name] = start_bridge(
                base_url, enrolment, SITE, f"bridge-{name}", logs[name], promsnmp[name].url, states[name]
            )

        start("a")
        try:
            leader = wait_until(lambda: instance("bridge-a"), 20, "bridge-a registered")
            assert leader.is_leader
            start("b")
            follower = wait_until(lambda: instance("bridge-b"), 20, "bridge-b registered")
            assert not follower.is_leader
            # The scrape address defaults to the host:port of --promsnmp-url.
            assert (leader.scrape_address, follower.scrape_address) == (
                promsnmp["a"].address,
                promsnmp["b"].address,
            )

            # Start: each PromSNMP gets the site's inventory (v1, empty) once; heartbeats report it.
            version = Site.objects.get(pk=SITE).inventory_version
            for name in ("a", "b"):
                wait_until(lambda name=name: len(promsnmp[name].posts) == 1, 20, f"stand-in {name} got v1")
            for hostname, instance_id in (("a", leader.id), ("b", follower.id)):
                wait_until(
                    lambda instance_id=instance_id: reported_version(base_url, admin, instance_id) == version,
                    10,
                    f"bridge-{hostname} reports v{version}",
                )
            for name in ("a", "b"):
                wait_until(
                    lambda name=name: "event socket open" in logs[name].read_text(), 10, "sockets open"
                )

            # 1. A change in the manager reaches both PromSNMPs within 2 s.
            started = time.monotonic()
            version = add_devices(
                base_url, admin, device("core-1", "127.0.3.1"), device("edge-1", "127.0.3.2")
            )
            for name in ("a", "b"):
                wait_until(
                    lambda name=name: {"core-1", "edge-1"} <= names(promsnmp[name]), 10, f"{name} updated"
                )
            elapsed = time.monotonic() - started
            assert elapsed <= REACH_SECONDS, f"the change took {elapsed:.2f} s to reach both PromSNMPs"
            assert [len(promsnmp[name].posts) for name in ("a", "b")] == [2, 2]
            # The secrets went to PromSNMP in clear.
            posted = {d["sysName"]: d for d in promsnmp["b"].inventory()["devices"]}
            assert posted["core-1"]["agents"][0]["readCommunity"] == "lab-ro"
            for instance_id in (leader.id, follower.id):
                wait_until(
                    lambda instance_id=instance_id: reported_version(base_url, admin, instance_id) == version,
                    10,
                    "heartbeats report the new version",
                )

            # 2. The leader's PromSNMP finds a device by itself: the manager and the other PromSNMP get it.
            changes_before = InventoryChange.objects.filter(site_id=SITE).count()
            found = found_device("found-by-a", "127.0.4.1")
            promsnmp["a"].find(found)
            wait_until(
                lambda: Device.objects.filter(site_id=SITE, sys_name="found-by-a").exists(), 10, "stored"
            )
            wait_until(lambda: "found-by-a" in names(promsnmp["b"]), 10, "the other PromSNMP has it")
            stored = Device.objects.get(site_id=SITE, sys_name="found-by-a")
            assert stored.discovered_by == leader.id
            assert stored.metadata["promsnmp"]["id"] == found["id"]  # PromSNMP's id kept
            # A follower's find stays its own.
            promsnmp["b"].find(found_device("found-by-b", "127.0.4.2"))
            time.sleep(4)  # eight polls of the leader, four heartbeats each
            assert not Device.objects.filter(site_id=SITE, sys_name="found-by-b").exists()
            # No echo: one change set, one more POST to each PromSNMP, and the device once in each.
            assert InventoryChange.objects.filter(site_id=SITE).count() == changes_before + 1
            assert [len(promsnmp[name].posts) for name in ("a", "b")] == [3, 3]
            assert [d["sysName"] for d in promsnmp["a"].inventory()["devices"]].count("found-by-a") == 1
            assert {
                d["id"] for d in promsnmp["b"].inventory()["devices"] if d["sysName"] == "found-by-a"
            } == {found["id"]}
            version = Site.objects.get(pk=SITE).inventory_version
            for instance_id in (leader.id, follower.id):
                wait_until(
                    lambda instance_id=instance_id: reported_version(base_url, admin, instance_id) == version,
                    10,
                    "heartbeats report the version with the found device",
                )

            # 3. The manager goes away for 20 s; bridge-b is restarted meanwhile.
            held = {name: promsnmp[name].inventory() for name in ("a", "b")}
            posts = {name: len(promsnmp[name].posts) for name in ("a", "b")}
            first.close()
            down_at = time.monotonic()
            time.sleep(3)
            stop_agent(agents["b"], logs["b"])
            restarted_log = tmp_path / "agent-b-restarted.log"
            logs["b"] = restarted_log
            start("b")
            wait_until(
                lambda: "PromSNMP holds inventory" in restarted_log.read_text(), 10, "b read its state"
            )
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
            assert "registration attempt" in restarted_log.read_text()  # it tried the manager meanwhile
            for name in ("a", "b"):
                assert len(promsnmp[name].posts) == posts[name], f"stand-in {name} was posted to"
                assert promsnmp[name].inventory() == held[name]

            # The manager is back: the bridges find their PromSNMPs current (304) and post nothing.
            back_at = time.time()
            base_url, _ = stack.enter_context(serve_on(port, SERVER_ENV))
            for hostname in ("bridge-a", "bridge-b"):
                wait_until(
                    lambda hostname=hostname: instance(hostname).last_heartbeat.timestamp() > back_at + 1,
                    30,
                    f"{hostname} heartbeats again",
                )
            wait_until(lambda: "event socket open" in restarted_log.read_text(), 20, "b's socket is open")
            time.sleep(2)
            for name in ("a", "b"):
                assert len(promsnmp[name].posts) == posts[name], f"stand-in {name} was posted to"
            for hostname in ("bridge-a", "bridge-b"):
                assert reported_version(base_url, admin, instance(hostname).id) == version
            assert instance("bridge-a").is_leader

            # And the next change gets through to both (b's own find is replaced: the site's is what counts).
            add_devices(base_url, admin, device("after-outage", "127.0.3.3"))
            for name in ("a", "b"):
                wait_until(lambda name=name: "after-outage" in names(promsnmp[name]), 10, f"{name} updated")
                assert len(promsnmp[name].posts) == posts[name] + 1
            assert "found-by-b" not in names(promsnmp["b"])
        finally:
            for name, process in agents.items():
                stop_agent(process, logs[name])
            first.close()


def test_a_fetch_cut_short_halfway_posts_nothing(tokens, tmp_path: Path):
    enrolment, admin = tokens
    port = free_port()
    log_path = tmp_path / "agent.log"
    with ExitStack() as stack:
        promsnmp = stack.enter_context(PromSnmpStandIn())
        base_url, _ = stack.enter_context(serve_on(port, SERVER_ENV))
        proxy = CuttingProxy(port, f"GET /api/v1/sites/{SITE}/inventory?format=promsnmp")
        stack.callback(proxy.close)
        agent = start_bridge(
            proxy.url, enrolment, SITE, "bridge-c", log_path, promsnmp.url, tmp_path / "state"
        )
        try:
            bridge = wait_until(lambda: instance("bridge-c"), 20, "bridge-c registered")
            wait_until(lambda: len(promsnmp.posts) == 1, 20, "the first document (v1)")
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the socket is open")

            proxy.cutting = True
            version = add_devices(
                base_url, admin, device("core-1", "127.0.5.1"), device("edge-1", "127.0.5.2")
            )
            # The event and then every heartbeat make the bridge fetch again; each answer is cut short.
            wait_until(lambda: proxy.cut >= 3, 15, "three fetches cut short")
            assert len(promsnmp.posts) == 1
            assert promsnmp.inventory() == {"devices": [], "discoverySeeds": []}
            assert reported_version(base_url, admin, bridge.id) == version - 1
            assert "IncompleteRead" in log_path.read_text()

            proxy.cutting = False
            wait_until(lambda: len(promsnmp.posts) == 2, 10, "the whole document, once it gets through")
            assert names(promsnmp) == {"core-1", "edge-1"}
            wait_until(lambda: reported_version(base_url, admin, bridge.id) == version, 10, "v2 reported")
        finally:
            stop_agent(agent, log_path)
