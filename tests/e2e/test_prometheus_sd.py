"""The manager's service discovery read by a real Prometheus (issue 10 §2), end to end.

A real `manage.py serve` on the test database, two instances registered over HTTP with scrape addresses
that point at two small PromSNMP stand-ins (loopback HTTP servers answering /metrics and /snmp?target= in
the Prometheus text format, so targets go up), heartbeating every second, and a site with devices. A real
Prometheus (the Debian package) on a free loopback port polls both SD endpoints with `http_sd_configs`,
a 1 s refresh and a site-bound read token. Checks, on Prometheus's own /api/v1/targets:
- both instances, with their labels; every device once, through /snmp?target=<sysName> of the instance the
  manager assigned, with its labels; the stand-ins really received those scrapes;
- the instance serving more devices stops heartbeating → its devices move to the other instance, and the
  other's stay, within BOUND: the liveness time (1.5 heartbeat intervals) + one SD refresh + Prometheus's
  own update throttles (its discovery and scrape managers apply changes at most every 5 s each), with
  slack for a loaded 2-core machine.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.prometheus_support import Heartbeats, bearer, prometheus, wait_for
from tests.e2e.servers import free_port, serve

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "prom-sd-01"
HEARTBEAT_INTERVAL = 4  # s: healthy until 1.5 * 4 = 6 s after the last heartbeat
REFRESH = 1  # s: http_sd refresh_interval
PROMETHEUS_THROTTLES = 10  # s: discovery manager and scrape manager each apply updates every 5 s
BOUND = 1.5 * HEARTBEAT_INTERVAL + REFRESH + PROMETHEUS_THROTTLES + 15
DEVICES = [f"sd-rtr-{n:02d}.example.net" for n in range(15)]
NAMELESS = "127.0.0.200"  # a device without a sysName: known by its primary agent's address


# --- PromSNMP stand-ins: /metrics (its own) and /snmp?target= (a device's), valid text exposition ------


class StandIn:
    def __init__(self, name: str):
        self.name = name
        self.scrapes: list[tuple[str, str | None]] = []  # (path, target)
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                url = urlsplit(self.path)
                target = parse_qs(url.query).get("target", [None])[0]
                if url.path == "/metrics":
                    body = f'# TYPE standin_up gauge\nstandin_up{{standin="{stand_in.name}"}} 1\n'
                elif url.path == "/snmp" and target:
                    body = (
                        "# TYPE standin_device_up gauge\n"
                        f'standin_device_up{{standin="{stand_in.name}",target_seen="{target}"}} 1\n'
                    )
                else:
                    self.send_error(404)
                    return
                with stand_in.lock:
                    stand_in.scrapes.append((url.path, target))
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def targets_scraped(self) -> set[str]:
        with self.lock:
            return {target for path, target in self.scrapes if path == "/snmp"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# --- Prometheus ----------------------------------------------------------------------------------------

# `type: Bearer` is spelled out: in http_sd_configs Prometheus does not default it (the header would carry
# the bare token; prometheus/docs#2377), contrary to its documentation.
PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: promsnmp-instances
    http_sd_configs:
      - url: "{base_url}/api/v1/sd/instances?site={site}"
        refresh_interval: {refresh}s
        authorization:
          type: Bearer
          credentials: "{token}"
  - job_name: promsnmp-devices
    http_sd_configs:
      - url: "{base_url}/api/v1/sd/devices?site={site}"
        refresh_interval: {refresh}s
        authorization:
          type: Bearer
          credentials: "{token}"
    relabel_configs:
      - source_labels: [__param_target]
        target_label: instance
"""


def active_targets(prometheus_url: str) -> dict[str, list[dict]]:
    """Prometheus's active targets by scrape pool (job)."""
    response = requests.get(f"{prometheus_url}/api/v1/targets", params={"state": "active"}, timeout=5)
    assert response.status_code == 200, response.text[:500]
    pools: dict[str, list[dict]] = {}
    for target in response.json()["data"]["activeTargets"]:
        pools.setdefault(target["scrapePool"], []).append(target)
    return pools


def device_view(pools: dict[str, list[dict]]) -> dict[str, tuple[str, dict]]:
    """device name → (the address it is scraped at, the target); fails if a device is listed twice."""
    targets = pools.get("promsnmp-devices", [])
    names = [t["discoveredLabels"]["__param_target"] for t in targets]
    assert len(names) == len(set(names)), [n for n, count in Counter(names).items() if count > 1]
    return {
        t["discoveredLabels"]["__param_target"]: (t["discoveredLabels"]["__address__"], t) for t in targets
    }


def test_prometheus_discovers_instances_and_devices_and_follows_a_failure():
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Prometheus SD"})
    _, admin = token_create(actor=TEST_ACTOR, name="sd admin", scopes=["admin"])
    _, enrol = token_create(actor=TEST_ACTOR, name="sd enrol", scopes=["instance"], site_id=SITE)
    _, reader = token_create(actor=TEST_ACTOR, name="prometheus", scopes=["read"], site_id=SITE)
    stand_ins = {name: StandIn(name) for name in ("a", "b")}
    heartbeats: dict[str, Heartbeats] = {}
    timings = {"HEARTBEAT_INTERVAL_SECONDS": str(HEARTBEAT_INTERVAL), "HEARTBEAT_TIMEOUT_SECONDS": "120"}
    try:
        with serve(env=timings) as (base_url, _):
            instances = {}  # stand-in name → instance id
            for name, stand_in in stand_ins.items():
                answer = requests.post(
                    f"{base_url}/api/v1/instances/register",
                    json={"siteId": SITE, "hostname": f"promsnmp-{name}", "scrapeAddress": stand_in.address},
                    headers=bearer(enrol),
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                instances[name] = answer.json()["instanceId"]
                heartbeats[name] = Heartbeats(base_url, instances[name], answer.json()["instanceToken"])
            by_address = {stand_ins[name].address: name for name in stand_ins}
            added = requests.post(
                f"{base_url}/api/v1/sites/{SITE}/inventory/devices",
                json={
                    "devices": [
                        {
                            "sysName": name,
                            "agents": [
                                {
                                    "type": "community",
                                    "address": f"127.0.0.{n + 10}",
                                    "version": 2,
                                    "readCommunity": "public",
                                }
                            ],
                        }
                        for n, name in enumerate(DEVICES)
                    ]
                    + [
                        {
                            "agents": [
                                {
                                    "type": "community",
                                    "address": NAMELESS,
                                    "version": 2,
                                    "readCommunity": "public",
                                }
                            ]
                        }
                    ]
                },
                headers=bearer(admin),
                timeout=30,
            )
            assert added.status_code == 200, added.text
            device_ids = {d["sysName"] or NAMELESS: d["id"] for d in added.json()["devices"]}
            names = set(DEVICES) | {NAMELESS}
            assert set(device_ids) == names

            config = PROMETHEUS_YML.format(base_url=base_url, site=SITE, token=reader, refresh=REFRESH)
            with prometheus(config) as prometheus_url:
                # Everything discovered and scraped (up) at least once.
                def all_up():
                    pools = active_targets(prometheus_url)
                    every = pools.get("promsnmp-instances", []) + pools.get("promsnmp-devices", [])
                    counts = (
                        len(pools.get("promsnmp-instances", [])),
                        len(pools.get("promsnmp-devices", [])),
                    )
                    health = Counter(t["health"] for t in every)
                    return counts == (2, len(names)) and set(health) == {"up"}, (counts, health, pools)

                _, _, pools = wait_for(all_up, 60, "both instances and every device up in Prometheus")

                # The instances, with their labels.
                seen = {t["labels"]["instance_id"]: t for t in pools["promsnmp-instances"]}
                assert set(seen) == set(instances.values())
                for name, instance_id in instances.items():
                    target = seen[instance_id]
                    assert target["discoveredLabels"]["__address__"] == stand_ins[name].address
                    assert target["scrapeUrl"] == f"http://{stand_ins[name].address}/metrics"
                    labels = target["labels"]
                    assert labels["site"] == SITE and labels["hostname"] == f"promsnmp-{name}"
                    assert labels["leader"] == (
                        "true" if name == "a" else "false"
                    )  # the first registered leads
                    assert labels["status"] == "healthy" and labels["job"] == "promsnmp-instances"

                # Every device once, through the instance the manager assigned, with its labels.
                assigned = requests.get(
                    f"{base_url}/api/v1/sd/devices", params={"site": SITE}, headers=bearer(reader), timeout=10
                ).json()
                manager_view = {g["labels"]["__param_target"]: g["targets"][0] for g in assigned}
                view = device_view(pools)
                assert set(view) == names
                assert {name: address for name, (address, _) in view.items()} == manager_view
                for name, (address, target) in view.items():
                    labels = target["labels"]
                    assert target["scrapeUrl"] == f"http://{address}/snmp?target={name}"
                    assert labels["instance"] == name  # relabeled from __param_target
                    assert labels["site"] == SITE and labels["device"] == name
                    assert labels["device_id"] == device_ids[name] and labels["job"] == "promsnmp-devices"
                    owner = by_address[address]
                    assert target["discoveredLabels"]["__meta_promsnmp_instance_id"] == instances[owner]
                    assert "__meta_promsnmp_instance_id" not in labels  # a meta label is dropped

                # The stand-ins received exactly their devices' scrapes.
                for name, stand_in in stand_ins.items():
                    mine = {d for d, (address, _) in view.items() if by_address[address] == name}
                    assert stand_in.targets_scraped() == mine, name

                # The instance with more devices stops heartbeating: its devices move, the others' stay.
                load = Counter(by_address[address] for address, _ in view.values())
                victim = max(sorted(load), key=load.__getitem__)
                survivor = "b" if victim == "a" else "a"
                moving = {d for d, (address, _) in view.items() if by_address[address] == victim}
                staying = names - moving
                assert moving, load
                heartbeats[victim].stop()
                stopped_at = time.monotonic()

                def moved():
                    pools = active_targets(prometheus_url)
                    now = {name: by_address[address] for name, (address, _) in device_view(pools).items()}
                    # Meanwhile the survivor's own devices never leave it (only the victim's move).
                    assert all(now.get(d) == survivor for d in staying), now
                    return now == dict.fromkeys(names, survivor), (now, pools)

                _, pools = wait_for(moved, BOUND, f"devices of {victim} moved to {survivor}")
                took = time.monotonic() - stopped_at
                print(
                    f"{len(moving)} devices moved {took:.1f} s after the last heartbeat (bound {BOUND:.0f} s)"
                )
                assert took < BOUND

                victim_target = next(
                    t for t in pools["promsnmp-instances"] if t["labels"]["instance_id"] == instances[victim]
                )
                assert victim_target["labels"]["status"] in ("degraded", "offline")
                for name, (address, target) in device_view(pools).items():
                    assert target["labels"]["device_id"] == device_ids[name]
                    assert target["discoveredLabels"]["__meta_promsnmp_instance_id"] == instances[survivor]

                # And Prometheus scrapes the moved devices through the survivor.
                wait_for(
                    lambda: (
                        stand_ins[survivor].targets_scraped() >= names,
                        stand_ins[survivor].targets_scraped(),
                    ),
                    30,
                    f"{survivor} scraped for every device",
                )
            assert all(not h.failures for h in heartbeats.values()), {
                n: h.failures for n, h in heartbeats.items()
            }
    finally:
        for beats in heartbeats.values():
            beats.stop()
        for stand_in in stand_ins.values():
            stand_in.close()
