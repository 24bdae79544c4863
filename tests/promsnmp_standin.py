"""A PromSNMP stand-in for tests: a small HTTP server on 127.0.0.1 with exactly PromSNMP's endpoints,
written from what PromSNMP's controllers do (pbrane/promsnmp-metrics; issue 10) and its inventory format
(tests/fixtures/promsnmp/README.md):

- `GET /inventory`: its inventory as an InventoryDTO, `{"devices": [...], "discoverySeeds": [...]}`.
- `POST /inventory` with an InventoryDTO: **replaces** everything (every device and seed deleted, the
  posted ones saved) in one step, and answers 200. A body that is not an InventoryDTO is refused (400) and
  changes nothing, as a failed transaction would.
- `GET /targets`: its Prometheus HTTP service discovery, one target group per device.
- `GET /snmp?target=DEVICE`: that device's metrics in the Prometheus text format (404 for a device it
  does not have).

It records every POST it received (`posts`), so a test can say "never posted", and `find()` adds a
device the way PromSNMP's own discovery would (without a POST).

    with PromSnmpStandIn() as promsnmp:
        promsnmp.url, promsnmp.inventory(), promsnmp.posts, promsnmp.find(device)
"""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True)
class Post:
    at: float  # time.monotonic()
    document: dict[str, Any]


def _is_inventory(document: Any) -> bool:
    return (
        isinstance(document, dict)
        and isinstance(document.get("devices"), list)
        and isinstance(document.get("discoverySeeds"), list)
        and all(isinstance(item, dict) for item in document["devices"] + document["discoverySeeds"])
    )


def found_device(name: str, address: str, community: str = "found-ro") -> dict[str, Any]:
    """A device as PromSNMP's discovery stores it (v2c, one agent, which is also the primary)."""
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    agent = {
        "type": "snmp-community",
        "id": str(uuid.uuid4()),
        "endpoint": {"address": address, "port": 161},
        "version": 1,
        "timeout": 1500,
        "retries": 1,
        "discoveredAt": now,
        "readCommunity": community,
        "writeCommunity": None,
    }
    return {
        "id": str(uuid.uuid4()),
        "sysName": name,
        "sysDescr": f"{name}, found by PromSNMP",
        "sysContact": None,
        "sysLocation": None,
        "discoveredAt": now,
        "agents": [agent],
        "primaryAgent": dict(agent),
    }


class PromSnmpStandIn:
    def __init__(self, devices: list[dict] | None = None, seeds: list[dict] | None = None):
        self._lock = threading.Lock()
        self._devices: list[dict] = copy.deepcopy(devices or [])
        self._seeds: list[dict] = copy.deepcopy(seeds or [])
        self.posts: list[Post] = []
        self.refused = 0  # POSTs answered 400
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- for tests ------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def inventory(self) -> dict[str, Any]:
        with self._lock:
            return {"devices": copy.deepcopy(self._devices), "discoverySeeds": copy.deepcopy(self._seeds)}

    def names(self) -> set[str]:
        return {device.get("sysName") for device in self.inventory()["devices"]}

    def find(self, device: dict[str, Any]) -> None:
        """What PromSNMP's own discovery does: a device joins its inventory, no POST involved."""
        with self._lock:
            self._devices.append(copy.deepcopy(device))

    def start(self) -> PromSnmpStandIn:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> PromSnmpStandIn:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- PromSNMP's endpoints -------------------------------------------------------------------------

    def _replace(self, document: Any) -> bool:
        if not _is_inventory(document):
            self.refused += 1
            return False
        with self._lock:  # one transaction: delete everything, save the posted ones
            self._devices = copy.deepcopy(document["devices"])
            self._seeds = copy.deepcopy(document["discoverySeeds"])
            self.posts.append(Post(time.monotonic(), copy.deepcopy(document)))
        return True

    def _targets(self) -> list[dict[str, Any]]:
        groups = []
        for device in self.inventory()["devices"]:
            primary = device.get("primaryAgent") or (device.get("agents") or [{}])[0]
            address = (primary.get("endpoint") or {}).get("address", "")
            groups.append(
                {
                    "targets": [device.get("sysName") or address],
                    "labels": {"__metrics_path__": "/snmp", "sysName": device.get("sysName") or ""},
                }
            )
        return groups

    def _metrics(self, target: str) -> str | None:
        for device in self.inventory()["devices"]:
            primary = device.get("primaryAgent") or (device.get("agents") or [{}])[0]
            address = (primary.get("endpoint") or {}).get("address")
            if target in (device.get("sysName"), address):
                return (
                    "# HELP sysUpTime The time since the device was last re-initialized.\n"
                    "# TYPE sysUpTime gauge\n"
                    f'sysUpTime{{instance="{target}"}} 123456\n'
                    "# HELP ifHCInOctets Octets received on the interface.\n"
                    "# TYPE ifHCInOctets counter\n"
                    f'ifHCInOctets{{instance="{target}",ifName="eth0"}} 987654321\n'
                )
        return None

    def _handler(self):
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                parts = urlsplit(self.path)
                if parts.path == "/inventory":
                    self._send(200, json.dumps(standin.inventory()).encode())
                elif parts.path == "/targets":
                    self._send(200, json.dumps(standin._targets()).encode())
                elif parts.path == "/snmp":
                    target = (parse_qs(parts.query).get("target") or [""])[0]
                    text = standin._metrics(target)
                    if text is None:
                        self._send(404, b"unknown target\n", "text/plain")
                    else:
                        self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self):
                if urlsplit(self.path).path != "/inventory":
                    self._send(404, b'{"error": "not found"}')
                    return
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    document = json.loads(raw)
                except ValueError:
                    document = None
                if standin._replace(document):
                    self._send(200, b"")
                else:
                    self._send(400, b'{"error": "not an InventoryDTO"}')

            def log_message(self, *args):  # quiet
                pass

        return Handler
