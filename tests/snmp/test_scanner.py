"""The SNMP scanner (snmp/scanner.py) against a real net-snmp snmpd on loopback addresses
(tests/snmp/conftest.py: "lab-router" on 127.0.0.1-3, "lab-switch" on 127.0.0.5, the rest silent).
Timeouts are 0.3 s with no retries: a scan of silent addresses lasts about 0.3 s, however many.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

from snmp.scanner import check_targets, credentials, scan, wire_device, wire_devices

TIMEOUT = 0.3


def run_scan(targets, configs, port, **options):
    options = {"timeout": TIMEOUT, "retries": 0, "concurrency": 16, **options}
    return asyncio.run(scan(targets, configs, port=port, **options))


def test_v2c_finds_the_device_and_reads_the_system_group(router):
    result = run_scan(["127.0.0.1"], [router.v2c], router.port)

    assert (result.targets_scanned, result.devices_found, result.unreachable) == (1, 1, 0)
    found = result.devices[0]
    assert (found.address, found.port) == ("127.0.0.1", router.port)
    assert found.sys_name == "lab-router"
    assert found.sys_descr == router.sys_descr
    assert found.sys_location == router.sys_location
    assert found.sys_contact == router.sys_contact
    assert found.sys_object_id.startswith("1.3.6.1.4.1.8072.")  # net-snmp's enterprise
    assert isinstance(found.interfaces, int) and found.interfaces >= 1  # at least lo
    assert found.snmp_config == {"version": 2, "type": "community", "readCommunity": "lab-ro-2c"}


@pytest.mark.parametrize("config_name", ["v3_sha_aes", "v3_sha256_aes256"])
def test_v3_auth_priv_finds_the_device(router, config_name):
    config = getattr(router, config_name)

    result = run_scan(["127.0.0.2"], [config], router.port)

    assert result.devices_found == 1, result.error_messages
    found = result.devices[0]
    assert found.sys_name == "lab-router"
    assert found.snmp_config == config  # the credentials that worked, passphrases included


def test_wrong_community_is_not_found_and_counts_as_unreachable(router):
    # snmpd drops a request with an unknown community without a word: it looks like a silent address.
    result = run_scan(["127.0.0.1-127.0.0.3"], [{**router.v2c, "readCommunity": "wrong"}], router.port)

    assert (result.targets_scanned, result.devices_found, result.unreachable) == (3, 0, 3)
    assert result.error_count == 0


def test_wrong_v3_passphrase_counts_as_an_auth_error(router):
    config = {**router.v3_sha_aes, "authPassphrase": "not-the-passphrase"}

    result = run_scan(["127.0.0.1"], [config], router.port)

    assert result.devices_found == 0
    assert dict(result.errors) == {"auth": 1}
    assert result.error_messages[0].startswith("127.0.0.1: ")


def test_the_first_config_that_answers_wins(router):
    wrong = {**router.v2c, "readCommunity": "wrong"}

    result = run_scan(["127.0.0.3"], [wrong, router.v3_sha_aes, router.v2c], router.port)

    assert result.devices_found == 1
    assert result.devices[0].snmp_config == router.v3_sha_aes


def test_a_range_mixing_responders_and_silent_addresses(router, switch):
    result = run_scan(["127.0.0.1-127.0.0.8"], [router.v2c], router.port, concurrency=8)

    assert result.targets_scanned == 8
    assert [(d.address, d.sys_name) for d in result.devices] == [
        ("127.0.0.1", "lab-router"),
        ("127.0.0.2", "lab-router"),
        ("127.0.0.3", "lab-router"),
        ("127.0.0.5", "lab-switch"),
    ]
    assert result.unreachable == 4
    assert result.counts() == {"targetsScanned": 8, "devicesFound": 4}
    assert result.seconds < 2, result.seconds  # one timeout in parallel, not four in a row


def test_cidr_and_single_targets_are_expanded_in_order(router):
    result = run_scan(["127.0.0.2", "127.0.0.0/30"], [router.v2c], router.port)

    assert result.targets_scanned == 5  # 127.0.0.2 + .0 .1 .2 .3: overlaps count as given
    assert sorted(d.address for d in result.devices) == ["127.0.0.1", "127.0.0.2", "127.0.0.2", "127.0.0.3"]


def test_concurrency_bounds_the_full_gets(router, switch):
    # A wrong community first: each of the four responders waits out its timeout before the right one
    # answers, so the full GETs overlap as far as the bound lets them.
    configs = [{**router.v2c, "readCommunity": "wrong"}, router.v2c]
    targets = ["127.0.0.1-127.0.0.8"]

    started = time.monotonic()
    narrow = run_scan(targets, configs, router.port, concurrency=2)
    narrow_seconds = time.monotonic() - started
    wide = run_scan(targets, configs, router.port, concurrency=8)

    assert narrow.peak_concurrency == 2
    assert narrow_seconds >= 2 * TIMEOUT  # two rounds of two
    assert wide.peak_concurrency == 4  # only the four that answered the sweep get a full GET
    assert narrow.devices == wide.devices and len(wide.devices) == 4
    assert (narrow.responded, narrow.unreachable) == (4, 4)


def test_more_workers_than_targets_is_fine(router):
    result = run_scan(["127.0.0.1"], [router.v2c], router.port, concurrency=500)

    assert (result.targets_scanned, result.devices_found, result.peak_concurrency) == (1, 1, 1)


def test_progress_reports_the_running_counts_up_to_the_totals(router, switch):
    calls: list[tuple[int, int]] = []

    result = run_scan(
        ["127.0.0.1-127.0.0.6"], [router.v2c], router.port, on_progress=lambda s, f: calls.append((s, f))
    )

    # Each responder when its full GET is done, the silent ones together when their timeout ends.
    assert calls == sorted(calls) and len(set(calls)) == len(calls), calls
    assert {found for _, found in calls} >= {1, 2, 3, 4}  # each device as it is found
    assert calls[-1] == (6, 4) == (result.targets_scanned, result.devices_found)


def test_progress_may_be_a_coroutine_function(router):
    calls: list[tuple[int, int]] = []

    async def report(scanned: int, found: int) -> None:
        await asyncio.sleep(0)
        calls.append((scanned, found))

    run_scan(["127.0.0.1-127.0.0.2"], [router.v2c], router.port, on_progress=report)

    assert calls == [(1, 1), (2, 2)]


def test_a_scan_leaves_no_socket_open(router):
    def sockets() -> int:
        return sum(1 for fd in os.listdir("/proc/self/fd") if "socket" in _link(f"/proc/self/fd/{fd}"))

    before = sockets()
    run_scan(["127.0.0.1-127.0.0.4"], [router.v2c, router.v3_sha_aes], router.port)

    assert sockets() == before


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


# --- refusals, before anything is sent ---------------------------------------------------------------


@pytest.mark.parametrize(
    "target", ["10.0.0.1", "192.168.1.0/24", "127.255.255.250-128.0.0.5", "::1", "0.0.0.0/0"]
)
def test_targets_outside_loopback_are_refused(router, target):
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        run_scan([target], [router.v2c], router.port)


def test_non_loopback_targets_are_accepted_only_when_allowed():
    # Only parsed here: nothing is scanned outside 127.0.0.0/8.
    (target,) = check_targets(["192.0.2.0/30"], allow_non_loopback=True)
    assert target.count == 4
    with pytest.raises(ValueError):
        check_targets(["192.0.2.0/30"])


@pytest.mark.parametrize(
    "config",
    [
        {"version": 2, "readCommunity": "****"},
        {"version": 2},
        {"version": 4, "readCommunity": "x"},
        {
            "version": 3,
            "securityName": "u",
            "securityLevel": "authPriv",
            "authProtocol": "SHA",
            "authPassphrase": "12345678",
            "privProtocol": "AES512",
            "privPassphrase": "12345678",
        },
        {
            "version": 3,
            "securityName": "u",
            "securityLevel": "authNoPriv",
            "authProtocol": "SHA",
            "authPassphrase": "short",
        },
    ],
)
def test_unusable_configs_are_refused(config):
    with pytest.raises(ValueError):
        asyncio.run(scan(["127.0.0.1"], [config], port=161))


def test_bad_targets_are_refused():
    with pytest.raises(ValueError):
        asyncio.run(scan(["127.0.0.300"], [{"version": 2, "readCommunity": "x"}]))


def test_credentials_keep_only_what_the_level_uses():
    wire = credentials(
        {
            "version": 3,
            "securityName": "u",
            "securityLevel": "authNoPriv",
            "authProtocol": "MD5",
            "authPassphrase": "12345678",
            "privProtocol": "DES",
            "privPassphrase": "12345678",
            "timeout": 5,
        }
    ).wire
    assert wire == {
        "version": 3,
        "type": "usm",
        "securityName": "u",
        "securityLevel": "authNoPriv",
        "authProtocol": "MD5",
        "authPassphrase": "12345678",
    }


# --- the found devices as the inventory takes them ---------------------------------------------------


def test_wire_devices_group_addresses_by_sys_name(router, switch):
    result = run_scan(["127.0.0.1-127.0.0.5"], [router.v2c], router.port)

    devices = wire_devices(result.devices)

    assert [(d["sysName"], [a["address"] for a in d["agents"]]) for d in devices] == [
        ("lab-router", ["127.0.0.1", "127.0.0.2", "127.0.0.3"]),
        ("lab-switch", ["127.0.0.5"]),
    ]
    assert [a["isPrimary"] for a in devices[0]["agents"]] == [True, False, False]


@pytest.mark.django_db
def test_wire_devices_are_accepted_by_the_inventory_api(router, switch, admin_api, make_site):
    site = make_site("snmp-lab")
    result = run_scan(["127.0.0.1-127.0.0.6"], [router.v3_sha256_aes256, router.v2c], router.port)
    devices = wire_devices(result.devices)

    response = admin_api.post(
        f"/api/v1/sites/{site}/inventory/devices", {"source": "discovery", "devices": devices}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["added"], body["failed"]) == (2, 0), body
    streamed = admin_api.get(f"/api/v1/sites/{site}/inventory?includeCredentials=true")
    listing = json.loads(b"".join(streamed.streaming_content))
    stored = {d["sysName"]: d for d in listing["devices"]}
    router_device = stored["lab-router"]
    assert router_device["sysDescr"] == router.sys_descr
    assert router_device["sysLocation"] == router.sys_location
    assert router_device["sysContact"] == router.sys_contact
    assert router_device["interfaces"] == result.devices[0].interfaces
    assert router_device["sysObjectId"] == result.devices[0].sys_object_id
    primary = router_device["agents"][0]
    assert primary["isPrimary"] and primary["address"] == "127.0.0.1" and primary["port"] == router.port
    assert {k: primary[k] for k in router.v3_sha256_aes256} == router.v3_sha256_aes256
    assert len(router_device["agents"]) == 3
    assert stored["lab-switch"]["sysDescr"] == "Lab switch 24-port"

    again = admin_api.post(
        f"/api/v1/sites/{site}/inventory/devices", {"source": "discovery", "devices": devices}, format="json"
    ).json()
    assert again["unchanged"] == 2  # a second scan of the same network changes nothing


def test_wire_device_cuts_texts_to_the_inventory_limits(router):
    result = run_scan(["127.0.0.1"], [router.v2c], router.port)
    found = result.devices[0]
    long = type(found)(**{**found.__dict__, "sys_descr": "d" * 5000, "sys_name": "", "sys_contact": None})

    device = wire_device(long)

    assert len(device["sysDescr"]) == 4096
    assert device["sysName"] is None and device["sysContact"] is None
    assert device["agents"] == [
        {"address": "127.0.0.1", "port": router.port, **router.v2c, "isPrimary": True}
    ]
