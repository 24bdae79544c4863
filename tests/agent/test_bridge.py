"""The agent's bridge mode below the end-to-end level (agent/bridge.py): the InventoryDTO check, strict
JSON, device identity and "found by PromSNMP itself", the state file (atomic, private, a corrupt one
ignored), and Bridge.sync against a PromSNMP stand-in (tests/promsnmp_standin.py) with a manager that
misbehaves in ways the real one cannot be made to on demand: a body cut short, a document that is not
an inventory, no version header, a version older than announced, no manager at all. In every one of them
PromSNMP gets no POST. The end-to-end test (tests/e2e/test_bridge.py) runs the same bridge against the
real manager.
"""

from __future__ import annotations

import asyncio
import copy
import json
import os
import socket
import stat
import threading
from pathlib import Path

import pytest

from agent.bridge import (
    STATE_FILE,
    Applied,
    AppliedState,
    Bridge,
    BridgeError,
    PromSnmpClient,
    device_identity,
    found_devices,
    parse_strict,
    scrape_address_of,
    validate_inventory,
)
from agent.client import ManagerClient
from tests.agent.peer import start_peer
from tests.promsnmp_standin import PromSnmpStandIn, found_device

SITE = "lab"
INVENTORY = f"/api/v1/sites/{SITE}/inventory"
DEVICES = f"/api/v1/sites/{SITE}/inventory/devices"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "promsnmp" / "inventory.json"


def fixture_document() -> dict:
    return json.loads(FIXTURE.read_text())


def run(coroutine):
    return asyncio.run(coroutine)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the InventoryDTO check ----------------------------------------------------------------------------


def test_promsnmps_own_file_and_an_empty_inventory_are_valid():
    assert validate_inventory(fixture_document()) == []
    assert validate_inventory({"devices": [], "discoverySeeds": []}) == []


def _broken(change) -> list[str]:
    document = fixture_document()
    change(document)
    return validate_inventory(document)


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda d: d.pop("discoverySeeds"), "document.discoverySeeds"),
        (lambda d: d.update(devices={"a": 1}), "devices"),
        (lambda d: d.update(version=3), "document.version"),
        (lambda d: d["devices"][0].update(id="not-a-uuid"), "devices[0].id"),
        (lambda d: d["devices"][1].update(id=d["devices"][0]["id"]), "devices[1].id"),
        (lambda d: d["devices"][0].update(agents=[]), "devices[0].agents"),
        (lambda d: d["devices"][0].pop("primaryAgent"), "devices[0].primaryAgent"),
        (lambda d: d["devices"][0]["agents"][0].update(version=2), "devices[0].agents[0].version"),
        (lambda d: d["devices"][0]["agents"][0].update(type="snmp-v9"), "devices[0].agents[0].type"),
        (
            lambda d: d["devices"][0]["agents"][0]["endpoint"].update(port=0),
            "devices[0].agents[0].endpoint.port",
        ),
        (lambda d: d["devices"][0]["agents"][0].update(timeout=True), "devices[0].agents[0].timeout"),
        (
            lambda d: d["devices"][0]["agents"][0].update(readCommunity="****"),
            "devices[0].agents[0].readCommunity",
        ),
        (
            lambda d: d["devices"][0]["agents"][0].update(readCommunity=None),
            "devices[0].agents[0].readCommunity",
        ),
        (
            lambda d: d["devices"][0]["primaryAgent"].update(id=d["devices"][1]["id"]),
            "devices[0].primaryAgent",
        ),
        (lambda d: d["discoverySeeds"][0].update(version="v1"), "discoverySeeds[0].version"),
        (
            lambda d: d["discoverySeeds"][0].update(potentialTargets="10.0.0.1"),
            "discoverySeeds[0].potentialTargets",
        ),
        (lambda d: d["discoverySeeds"].append("seed"), "discoverySeeds[2]"),
    ],
)
def test_each_defect_is_named_by_its_path(change, path):
    errors = _broken(change)
    assert any(error.startswith(f"{path}:") for error in errors), errors


def test_not_an_object_is_refused():
    assert validate_inventory([]) and validate_inventory(None) and validate_inventory("{}")


def test_strict_json_refuses_nan_and_a_key_given_twice():
    with pytest.raises(ValueError):
        parse_strict(b'{"devices": [], "discoverySeeds": [], "x": NaN}')
    with pytest.raises(ValueError):
        parse_strict(b'{"devices": [], "devices": [], "discoverySeeds": []}')
    assert parse_strict(b'{"devices": [], "discoverySeeds": []}') == {"devices": [], "discoverySeeds": []}


# --- identity, and what PromSNMP found by itself ------------------------------------------------------


def test_identity_is_the_managers_sysname_then_the_primary_agents_address():
    device = found_device("  edge-1 ", "10.0.0.1")
    assert device_identity(device) == "name:edge-1"
    device["sysName"] = " "
    assert device_identity(device) == "addr:10.0.0.1"
    device["primaryAgent"] = None
    device["agents"][0]["endpoint"]["address"] = "2001:DB8::0001"
    assert device_identity(device) == "addr:2001:db8::1"  # the manager's normal form
    assert device_identity({"agents": []}) is None
    assert device_identity("device") is None


def test_found_devices_are_those_the_given_document_has_neither_by_id_nor_by_identity():
    given = fixture_document()
    current = copy.deepcopy(given)
    renamed_id = copy.deepcopy(given["devices"][0])
    renamed_id["id"] = "00000000-0000-4000-8000-000000000000"  # same sysName: the same device
    new = found_device("new-switch", "10.9.9.9")
    current["devices"] = [renamed_id, *given["devices"][1:], new]
    assert found_devices(current, given) == [new]
    assert found_devices(given, given) == []
    assert found_devices(current, None) == current["devices"]  # nothing given yet: all of it is its own


def test_scrape_address_of_a_url():
    assert scrape_address_of("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert scrape_address_of("http://promsnmp.local/") == "promsnmp.local:80"
    assert scrape_address_of("https://[::1]/x") == "[::1]:443"


# --- the state file ---------------------------------------------------------------------------------


def test_the_state_file_round_trips_privately_and_leaves_no_temporary_file(tmp_path: Path):
    state = AppliedState(tmp_path)
    assert state.load() is None
    state.save(Applied(version=7, document=fixture_document()))
    assert AppliedState(tmp_path).load() == Applied(version=7, document=fixture_document())
    assert stat.S_IMODE(os.stat(tmp_path / STATE_FILE).st_mode) == 0o600  # it holds secrets in clear
    state.save(Applied(version=8, document={"devices": [], "discoverySeeds": []}))
    assert AppliedState(tmp_path).load().version == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


def test_a_write_that_fails_leaves_the_previous_state_whole(tmp_path: Path, monkeypatch):
    state = AppliedState(tmp_path)
    state.save(Applied(version=7, document=fixture_document()))

    def no_rename(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(OSError):
        state.save(Applied(version=8, document={"devices": [], "discoverySeeds": []}))
    monkeypatch.undo()
    assert AppliedState(tmp_path).load() == Applied(version=7, document=fixture_document())
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]


@pytest.mark.parametrize(
    "content",
    [
        b"{",
        b'{"version": 3}',
        b'{"version": "3", "document": {"devices": [], "discoverySeeds": []}}',
        b'{"version": 3, "document": {"devices": {}}}',
    ],
)
def test_a_corrupt_state_file_counts_as_nothing_applied(tmp_path: Path, content: bytes):
    (tmp_path / STATE_FILE).write_bytes(content)
    assert AppliedState(tmp_path).load() is None


# --- Bridge.sync against a PromSNMP stand-in ------------------------------------------------------------


@pytest.fixture
def promsnmp():
    with PromSnmpStandIn(**_as_promsnmp(fixture_document())) as standin:
        yield standin


def _as_promsnmp(document: dict) -> dict:
    return {"devices": document["devices"], "seeds": document["discoverySeeds"]}


_ADDED_BY_OPERATOR = found_device("added-by-operator", "10.1.1.1")


def manager_document() -> dict:
    """The site's inventory as the manager serves it: PromSNMP's first device is gone, one is new."""
    document = fixture_document()
    document["devices"] = [*document["devices"][1:], copy.deepcopy(_ADDED_BY_OPERATOR)]
    return document


def bridge_for(url: str, promsnmp: PromSnmpStandIn, state_dir=None) -> Bridge:
    return Bridge(
        ManagerClient(url, "psm_instance", timeout=5),
        PromSnmpClient(promsnmp.url, timeout=5),
        site_id=SITE,
        state_dir=state_dir,
    )


def test_a_valid_current_document_is_posted_once_and_kept(promsnmp, tmp_path: Path):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, manager_document()))
    bridge = bridge_for(manager.url, promsnmp, tmp_path)
    assert run(bridge.sync(leader=False, instance_id="inst_1")) is True
    assert [post.document for post in promsnmp.posts] == [manager_document()]
    assert promsnmp.inventory() == manager_document()
    assert (bridge.applied_version, bridge.device_count) == (5, 3)
    assert AppliedState(tmp_path).load() == Applied(version=5, document=manager_document())
    # The same version again: asked with ?version=5, and not posted again.
    assert run(bridge.sync(leader=False, instance_id="inst_1")) is False
    assert "version=5" in manager.requests(INVENTORY)[-1].path
    assert len(promsnmp.posts) == 1


@pytest.mark.parametrize(
    "headers, body, why",
    [
        ({}, manager_document(), "no x-inventory-version"),
        ({"X-Inventory-Version": "v5"}, manager_document(), "no x-inventory-version"),
        ({"X-Inventory-Version": "5"}, {"devices": []}, "document.discoverySeeds"),
        ({"X-Inventory-Version": "5"}, {"devices": [{"id": 1}], "discoverySeeds": []}, "devices[0].id"),
        ({"X-Inventory-Version": "5"}, "not an inventory", "document"),
        ({"X-Inventory-Version": "5"}, None, "document"),
    ],
)
def test_a_document_that_is_not_whole_and_valid_is_never_posted(promsnmp, tmp_path, headers, body, why):
    manager = start_peer()
    manager.answer(INVENTORY, (200, headers, body))
    bridge = bridge_for(manager.url, promsnmp, tmp_path)
    with pytest.raises(BridgeError) as refused:
        run(bridge.sync(leader=False, instance_id="inst_1"))
    assert why.lower() in str(refused.value).lower(), refused.value
    assert promsnmp.posts == []
    assert promsnmp.inventory()["devices"] == fixture_document()["devices"]
    assert bridge.applied_version is None and bridge.behind
    assert not (tmp_path / STATE_FILE).exists()


def test_a_version_older_than_announced_is_not_posted(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, manager_document()))
    bridge = bridge_for(manager.url, promsnmp)
    bridge.announce(6)
    with pytest.raises(BridgeError, match="older than v6"):
        run(bridge.sync(leader=False, instance_id="inst_1"))
    assert promsnmp.posts == []
    bridge.announce(5)
    assert run(bridge.sync(leader=False, instance_id="inst_1")) is True


def truncating_manager(document: dict, version: int) -> tuple[str, list[int]]:
    """A manager that answers GET inventory with its headers and the first half of the (chunked) body,
    then closes the connection: a transfer that broke off."""
    body = json.dumps(document).encode()
    listener = socket.create_server(("127.0.0.1", 0))
    served = [0]

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                half = body[: len(body) // 2]
                client.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                    + f"X-Inventory-Version: {version}\r\n\r\n{len(half):x}\r\n".encode()
                    + half
                    + b"\r\n"
                )
                served[0] += 1

    threading.Thread(target=serve, daemon=True).start()
    return f"http://127.0.0.1:{listener.getsockname()[1]}", served


def test_a_body_cut_short_is_never_posted(promsnmp):
    url, served = truncating_manager(manager_document(), 5)
    bridge = bridge_for(url, promsnmp)
    with pytest.raises(ConnectionError):
        run(bridge.sync(leader=False, instance_id="inst_1"))
    assert served[0] == 1  # the manager did answer, half of it
    assert promsnmp.posts == []


def test_a_restart_with_the_manager_down_posts_nothing_and_reports_the_kept_version(promsnmp, tmp_path):
    AppliedState(tmp_path).save(Applied(version=4, document=fixture_document()))
    bridge = bridge_for(f"http://127.0.0.1:{closed_port()}", promsnmp, tmp_path)
    assert bridge.applied_version == 4 and bridge.device_count == 3
    for leader in (False, True):
        with pytest.raises(OSError):
            run(bridge.sync(leader=leader, instance_id="inst_1"))
    assert promsnmp.posts == []


def test_promsnmp_down_is_a_bridge_error_and_nothing_is_kept(tmp_path):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, manager_document()))
    standin = PromSnmpStandIn().start()
    standin.close()  # nothing listens there any more
    bridge = bridge_for(manager.url, standin, tmp_path)
    with pytest.raises(BridgeError, match="unreachable"):
        run(bridge.sync(leader=False, instance_id="inst_1"))
    assert bridge.applied_version is None and not (tmp_path / STATE_FILE).exists()


# --- what PromSNMP found by itself -------------------------------------------------------------------


def test_the_leader_posts_what_promsnmp_found_before_replacing_and_only_once(promsnmp):
    manager = start_peer()
    document = fixture_document()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, document))
    manager.answer(
        DEVICES,
        (200, {}, {"added": 1, "updated": 0, "unchanged": 0, "failed": 0, "newVersion": 6, "devices": [{}]}),
    )
    bridge = bridge_for(manager.url, promsnmp)
    run(bridge.sync(leader=True, instance_id="inst_1"))  # v5 applied: PromSNMP holds what it was given
    assert manager.requests(DEVICES) == []
    found = found_device("found-by-promsnmp", "10.7.7.7")
    promsnmp.find(found)
    with_found = {**document, "devices": [*document["devices"], found]}
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "6"}, with_found))
    run(bridge.sync(leader=True, instance_id="inst_1"))
    posted = manager.requests(DEVICES)
    assert len(posted) == 1
    assert posted[0].body == {
        "source": "discovery",
        "format": "promsnmp",
        "instanceId": "inst_1",
        "devices": [found],
    }
    assert promsnmp.posts[-1].document == with_found  # fetched again after the post: v6 has it
    # Polls after that: PromSNMP's device is in the applied document, nothing is posted again.
    for _ in range(3):
        run(bridge.sync(leader=True, instance_id="inst_1"))
    assert len(manager.requests(DEVICES)) == 1
    assert len(promsnmp.posts) == 2


def test_the_leaders_poll_asks_the_manager_nothing_unless_promsnmp_found_something(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, fixture_document()))
    manager.answer(
        DEVICES,
        (200, {}, {"added": 1, "updated": 0, "unchanged": 0, "failed": 0, "newVersion": 6, "devices": [{}]}),
    )
    bridge = bridge_for(manager.url, promsnmp)
    assert run(bridge.harvest(instance_id="inst_1")) is False  # nothing applied yet: nothing to compare
    run(bridge.sync(leader=True, instance_id="inst_1"))
    seen = len(manager.seen)
    assert run(bridge.harvest(instance_id="inst_1")) is False
    assert len(manager.seen) == seen  # PromSNMP has nothing new: the manager hears nothing
    promsnmp.find(found_device("found-by-poll", "10.5.5.5"))
    assert run(bridge.harvest(instance_id="inst_1")) is True  # the manager's version moved: sync next
    assert run(bridge.harvest(instance_id="inst_1")) is False  # posted already, waiting for the apply
    assert len(manager.requests(DEVICES)) == 1
    assert len(manager.requests(INVENTORY)) == 1


def test_a_device_the_manager_refused_is_not_posted_again_until_it_changes(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, fixture_document()))
    refused = {
        "added": 0,
        "updated": 0,
        "unchanged": 0,
        "failed": 1,
        "newVersion": 5,
        "devices": [{"id": None, "sysName": "odd", "status": "failed", "error": {"x": ["bad"]}}],
    }
    manager.answer(DEVICES, (200, {}, refused))
    bridge = bridge_for(manager.url, promsnmp)
    run(bridge.sync(leader=True, instance_id="inst_1"))
    odd = found_device("odd", "10.8.8.8")
    promsnmp.find(odd)
    for _ in range(3):
        run(bridge.sync(leader=True, instance_id="inst_1"))
    assert len(manager.requests(DEVICES)) == 1
    odd_again = copy.deepcopy(odd)
    odd_again["sysDescr"] = "changed"
    promsnmp.find(odd_again)
    run(bridge.sync(leader=True, instance_id="inst_1"))
    assert len(manager.requests(DEVICES)) == 2


def test_finds_the_manager_refuses_for_good_do_not_hold_the_sites_inventory_back(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, manager_document()))
    manager.answer(DEVICES, (413, {}, {"error": "payload_too_large", "detail": "", "fields": {}}))
    bridge = bridge_for(manager.url, promsnmp)
    promsnmp.find(found_device("found-before-start", "10.4.4.4"))
    assert run(bridge.sync(leader=True, instance_id="inst_1")) is True
    assert len(manager.requests(DEVICES)) == 1
    assert promsnmp.inventory() == manager_document()


def test_finds_are_posted_in_chunks(promsnmp, monkeypatch):
    import agent.bridge

    monkeypatch.setattr(agent.bridge, "HARVEST_CHUNK", 2)
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, {"devices": [], "discoverySeeds": []}))
    manager.answer(
        DEVICES,
        (
            200,
            {},
            {"added": 2, "updated": 0, "unchanged": 0, "failed": 0, "newVersion": 6, "devices": [{}, {}]},
        ),
    )
    standin = PromSnmpStandIn().start()
    try:
        for n in range(5):
            standin.find(found_device(f"adopted-{n}", f"10.3.3.{n + 1}"))
        bridge = bridge_for(manager.url, standin)
        run(bridge.sync(leader=True, instance_id="inst_1"))  # first start: all five are PromSNMP's own
        assert [len(seen.body["devices"]) for seen in manager.requests(DEVICES)] == [2, 2, 1]
    finally:
        standin.close()


def test_a_follower_never_posts_what_its_promsnmp_found(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, fixture_document()))
    bridge = bridge_for(manager.url, promsnmp)
    promsnmp.find(found_device("follower-found", "10.6.6.6"))
    for _ in range(2):
        run(bridge.sync(leader=False, instance_id="inst_2"))
    assert manager.requests(DEVICES) == []


def test_a_full_refresh_repairs_a_promsnmp_that_lost_its_inventory(promsnmp):
    manager = start_peer()
    manager.answer(INVENTORY, (200, {"X-Inventory-Version": "5"}, manager_document()))
    bridge = bridge_for(manager.url, promsnmp)
    run(bridge.sync(leader=False, instance_id="inst_1"))
    assert run(bridge.sync(leader=False, instance_id="inst_1", full=True)) is False  # it still has it
    promsnmp._replace({"devices": [], "discoverySeeds": []})  # e.g. PromSNMP restarted without its file
    posts = len(promsnmp.posts)
    assert run(bridge.sync(leader=False, instance_id="inst_1")) is False  # the version did not move
    assert run(bridge.sync(leader=False, instance_id="inst_1", full=True)) is True
    assert promsnmp.inventory() == manager_document()
    assert len(promsnmp.posts) == posts + 1


# --- the command line ----------------------------------------------------------------------------------


def test_bridge_options_and_the_default_scrape_address(monkeypatch):
    from agent.__main__ import parse_args

    monkeypatch.setenv("PROMSNMP_TOKEN", "psm_x")
    base = ["--url", "http://127.0.0.1:8000", "--site", SITE]
    args = parse_args([*base, "--promsnmp-url", "http://127.0.0.1:8080"])
    assert (args.promsnmp_url, args.scrape_address, args.promsnmp_poll_interval) == (
        "http://127.0.0.1:8080",
        "127.0.0.1:8080",
        30.0,
    )
    args = parse_args([*base, "--promsnmp-url", "http://127.0.0.1:8080", "--scrape-address", "10.0.0.5:8080"])
    assert args.scrape_address == "10.0.0.5:8080"
    assert parse_args(base).promsnmp_url is None and parse_args(base).scrape_address is None
    for bad in (
        ["--promsnmp-url", "127.0.0.1:8080"],
        ["--scrape-address", "10.0.0.5"],
        ["--promsnmp-url", "http://127.0.0.1:8080", "--promsnmp-poll-interval", "0"],
    ):
        with pytest.raises(SystemExit):
            parse_args([*base, *bad])


# --- the stand-in itself: PromSNMP's endpoints ------------------------------------------------------


def test_the_standin_answers_as_promsnmp_does():
    import urllib.error
    import urllib.request

    document = fixture_document()
    with PromSnmpStandIn(**_as_promsnmp(document)) as standin:
        with urllib.request.urlopen(f"{standin.url}/inventory") as response:
            assert json.loads(response.read()) == document
        with urllib.request.urlopen(f"{standin.url}/targets") as response:
            groups = json.loads(response.read())
        assert sorted(group["targets"][0] for group in groups) == sorted(
            d["sysName"] for d in document["devices"]
        )
        name = document["devices"][0]["sysName"]
        with urllib.request.urlopen(f"{standin.url}/snmp?target={name}") as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            assert f'sysUpTime{{instance="{name}"}}' in response.read().decode()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{standin.url}/snmp?target=nope")
        assert missing.value.code == 404
        # POST replaces everything, and a body that is not an InventoryDTO changes nothing.
        replacement = {"devices": [found_device("only-one", "10.0.0.9")], "discoverySeeds": []}
        request = urllib.request.Request(
            f"{standin.url}/inventory", data=json.dumps(replacement).encode(), method="POST"
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 200
        assert standin.inventory() == replacement
        bad = urllib.request.Request(f"{standin.url}/inventory", data=b'{"devices": []}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad)
        assert refused.value.code == 400
        assert standin.inventory() == replacement
        assert [post.document for post in standin.posts] == [replacement]
