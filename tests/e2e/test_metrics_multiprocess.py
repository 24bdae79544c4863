"""/metrics of the production shape (`manage.py run_prod`: gunicorn with 2 workers, daphne) is true
whichever process answers: prometheus_client multiprocess mode (core/metrics.py, config/gunicorn_conf.py).

One launcher, real clients:
- requests answered by both gunicorn workers (each in turn paused with SIGSTOP, so the other accepts
  them); every scrape, during and after, shows the total, never less than the one before;
- a worker killed with SIGKILL: its counts stay in the totals, its live gauges are deleted (gunicorn's
  child_exit hook), and its replacement counts on from there;
- the WebSocket gauge on gunicorn's /metrics is the sockets daphne holds (the processes share the
  directory); a refused socket does not count;
- `promtool check metrics` finds nothing on /metrics nor on /api/v1/fleet/metrics?format=prometheus,
  except the spec's promsnmp_fleet_*_total gauge names (docs/decisions.md).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import EventSocket, command_line, descendants, running
from tests.e2e.test_run_prod import own_name, parent, redis_url, run_prod  # noqa: F401 (fixtures)
from tests.e2e.test_websocket import bearer, register

pytestmark = pytest.mark.django_db(transaction=True)

REQUESTS = "promsnmp_manager_http_requests_total"
LIVE = {"method": "GET", "endpoint": "/health/live", "status": "200"}
SOCKETS = "promsnmp_manager_websocket_connections_active"
# The spec fixes these names (gauges ending in _total); promtool's only finding allowed.
SPEC_GAUGE_TOTALS = re.compile(
    r'^promsnmp_fleet_[a-z_]+_total non-counter metrics should not have "_total" suffix$'
)


def scrape(base_url: str) -> dict[str, dict[tuple, float]]:
    response = requests.get(f"{base_url}/metrics", timeout=10)
    assert response.status_code == 200
    return {
        family.name: {tuple(sorted(sample.labels.items())): sample.value for sample in family.samples}
        for family in text_string_to_metric_families(response.text)
    }


def live_count(base_url: str) -> float:
    return scrape(base_url)["promsnmp_manager_http_requests"].get(tuple(sorted(LIVE.items())), 0)


def gauge(base_url: str, name: str) -> float:
    return scrape(base_url)[name][()]


def gunicorn_workers(launcher_pid: int) -> list[int]:
    masters = [
        pid
        for pid in descendants(launcher_pid)
        if parent(pid) == launcher_pid and "-m gunicorn" in command_line(pid) and running(pid)
    ]
    assert len(masters) == 1, masters
    return sorted(pid for pid in descendants(masters[0]) if parent(pid) == masters[0] and running(pid))


def live_counts_by_process(directory: Path) -> dict[int, float]:
    """GET /health/live 200 as each process counted it, from its own file in the metrics directory."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)]):
            for sample in metric.samples:
                if sample.name == REQUESTS and sample.labels == LIVE:
                    counts[int(path.stem.split("_")[1])] = sample.value
    return counts


def hit(base_url: str, count: int) -> None:
    """`count` GET /health/live, 4 at a time (fewer than a worker's threads), each on a new connection."""

    def one(_):
        response = requests.get(f"{base_url}/health/live", timeout=10, headers={"Connection": "close"})
        assert response.status_code == 200

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(count)))


def promtool_findings(text: str) -> list[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus` (`make system-packages`).")
    result = subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    findings = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 or findings, result
    return findings


def wait_until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.1)
    return value


@pytest.mark.timeout(180)
def test_one_scrape_shows_every_process(redis_url, own_name, tmp_path):  # noqa: F811 (fixtures)
    site = "metrics-site"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "Metrics"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, read_token = token_create(actor=TEST_ACTOR, name="prometheus", scopes=["read"])
    directory = tmp_path / "prometheus"  # run_prod's: VAR_DIR/prometheus

    with run_prod(redis_url, own_name, tmp_path) as (launcher, rest, ws):
        assert directory.is_dir()
        base = live_count(rest)

        # Requests spread over the workers (each in turn stopped with SIGSTOP, so that the other accepts
        # every connection), scraped meanwhile: never less than the scrape before.
        workers = gunicorn_workers(launcher.pid)
        assert len(workers) == 2
        half = 60
        seen = [live_count(rest)]
        for paused in workers:
            os.kill(paused, signal.SIGSTOP)
            try:
                with ThreadPoolExecutor(1) as background:
                    done = background.submit(hit, rest, half)
                    while not done.done():
                        seen.append(live_count(rest))
                    done.result()
            finally:
                os.kill(paused, signal.SIGCONT)
        assert seen == sorted(seen), seen
        assert [live_count(rest) for _ in range(5)] == [base + 2 * half] * 5
        by_process = live_counts_by_process(directory)
        assert sum(by_process.values()) == base + 2 * half
        assert [by_process.get(pid) for pid in workers] == [half, half], by_process
        total = 2 * half

        # SIGKILL to a worker: its counts stay, its live gauges go, gunicorn starts another.
        victim = workers[0]
        assert (directory / f"gauge_livesum_{victim}.db").exists()
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: not (directory / f"gauge_livesum_{victim}.db").exists(),
            15,
            "the dead worker's gauges deleted",
        )
        replaced = wait_until(
            lambda: len(now := gunicorn_workers(launcher.pid)) == 2 and victim not in now and now,
            30,
            "a new worker",
        )
        assert (directory / f"counter_{victim}.db").exists()
        assert [live_count(rest) for _ in range(3)] == [base + total] * 3
        hit(rest, 40)
        assert live_count(rest) == base + total + 40
        print(f"\nrequests per process: {live_counts_by_process(directory)}; workers now {replaced}")

        # The sockets daphne holds, on gunicorn's /metrics.
        assert gauge(rest, SOCKETS) == 0
        instance = register(rest, instance_token, site, "promsnmp-a")
        socket = EventSocket(
            f"{instance['websocketUrl']}?instanceId={instance['instanceId']}&token={instance_token}"
        )
        refused = EventSocket(
            f"{instance['websocketUrl']}?instanceId={instance['instanceId']}&token=psm_wrong"
        )
        assert refused.closed(10)[0] == 4401
        assert socket.ping()["siteId"] == site
        assert gauge(rest, SOCKETS) == 1 == gauge(ws, SOCKETS)
        socket.close()
        wait_until(lambda: gauge(rest, SOCKETS) == 0, 10, "the closed socket no longer counted")

        # promtool: nothing on /metrics; on the fleet metrics only the spec's gauge names.
        assert promtool_findings(requests.get(f"{rest}/metrics", timeout=10).text) == []
        fleet = requests.get(
            f"{rest}/api/v1/fleet/metrics",
            params={"format": "prometheus"},
            headers=bearer(read_token),
            timeout=10,
        )
        assert fleet.status_code == 200
        findings = promtool_findings(fleet.text)
        assert [line for line in findings if not SPEC_GAUGE_TOTALS.match(line)] == []
        assert len(findings) == 3, findings  # sites, instances and devices: the spec's three
