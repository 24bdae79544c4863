"""The reference agent's resilience end to end: the agent CLI (a subprocess without Django settings)
against real `manage.py serve` processes and real snmpd.

- The manager goes down for 20 s while the leader scans; the leader queues its results on disk and
  posts them (Idempotency-Key) when a new manager process is up on the same port and database: they
  are stored exactly once (devices, one change set, one audit row) and the run completes.
- A manager that is not there when the agent starts: the agent keeps trying, then registers.
- An event the agent did not get (a gap in the site's seq) makes it resync.
- cancel_discovery stops the leader's scan: nothing is posted, no discovery_complete is sent.
"""

from __future__ import annotations

import re
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import requests

from core.models import AuditLog
from core.services import token_create
from instances.models import Instance
from inventory.models import Device, IdempotencyKey, InventoryChange
from sites.models import Site
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.agent_support import LossyProxy, serve_on, start_agent_cli, stop_agent, wait_until
from tests.e2e.servers import free_port
from tests.e2e.test_websocket import bearer, ok
from tests.snmpd import run_snmpd

SITE = "agent-resilience"
OUTAGE_SECONDS = 20
# A short backoff for the test (the default is 1 s doubling up to 300 s), and a grace period longer
# than the outage: this test is about the results, not about who leads after it.
FAST_RETRY = ("--backoff-base", "0.2", "--backoff-cap", "2")
SERVER_ENV = {"FAILOVER_GRACE_SECONDS": "60"}


def run_of(base_url: str, headers: dict, run_id: str) -> dict:
    return ok(
        requests.get(f"{base_url}/api/v1/sites/{SITE}/discovery-runs/{run_id}", headers=headers, timeout=10)
    )


def create_seed(base_url: str, headers: dict, snmpd, name: str, last: int, timeout_ms: int) -> dict:
    """A seed of 127.0.0.1-127.0.0.<last>: snmpd answers on a few, the rest is silent: the scan lasts
    about the timeout (the sweep waits that long for the silent ones)."""
    return ok(
        requests.post(
            f"{base_url}/api/v1/sites/{SITE}/discovery-seeds",
            json={
                "name": name,
                "targets": [f"127.0.0.1-127.0.0.{last}"],
                "snmpConfig": snmpd.v2c,
                "options": {"timeout": timeout_ms, "retries": 0, "maxConcurrent": 2, "port": snmpd.port},
            },
            headers=headers,
            timeout=10,
        ),
        201,
    )


@pytest.fixture
def tokens(db):
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Agent resilience"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="agents", scopes=["instance"], site_id=SITE)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    return instance_token, bearer(admin_token)


@pytest.mark.django_db(transaction=True)
def test_results_held_through_a_manager_outage_are_stored_exactly_once(tokens, tmp_path: Path):
    instance_token, admin = tokens
    port = free_port()
    log_path = tmp_path / "agent.log"
    with ExitStack() as stack:
        router = stack.enter_context(
            run_snmpd(("127.0.0.1", "127.0.0.2", "127.0.0.3"), sys_name="lab-router")
        )
        stack.enter_context(run_snmpd(("127.0.0.5",), port=router.port, sys_name="lab-switch"))
        first = ExitStack()
        base_url, first_server = first.enter_context(serve_on(port, SERVER_ENV))
        # 40 addresses, 4 answer; the other 36 wait out an 8 s timeout: about 8 s of scanning.
        seed = create_seed(base_url, admin, router, "slow-lab", 40, 8000)
        agent = start_agent_cli(
            base_url,
            instance_token,
            SITE,
            "agent-1",
            log_path,
            "--state-dir",
            str(tmp_path / "state"),
            *FAST_RETRY,
        )
        try:
            leader = wait_until(
                lambda: Instance.objects.filter(site_id=SITE, hostname="agent-1", is_leader=True).first(),
                20,
                "the agent registered as leader",
            )
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the agent's socket is open")
            version_before = Site.objects.get(pk=SITE).inventory_version
            changes_before = InventoryChange.objects.filter(site_id=SITE).count()
            audits_before = AuditLog.objects.filter(site_id=SITE, action="inventory_changed").count()

            trigger = ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run",
                    headers=admin,
                    timeout=10,
                ),
                202,
            )
            run_id = trigger["runId"]
            wait_until(lambda: run_of(base_url, admin, run_id)["status"] == "running", 10, "the scan started")

            first.close()  # the manager goes away mid-scan
            down_at = time.monotonic()
            assert first_server.poll() is not None
            # The scan ends while the manager is down: the leader holds the results, queued on disk.
            wait_until(
                lambda: (
                    "posting results" in log_path.read_text()
                    and "manager unreachable" in log_path.read_text()
                ),
                60,
                "the agent tried to post its results and queued them",
            )
            assert Device.objects.filter(site_id=SITE).count() == 0
            assert (tmp_path / "state" / "spool.sqlite3").exists()
            time.sleep(max(0.0, down_at + OUTAGE_SECONDS - time.monotonic()))

            base_url, _second_server = stack.enter_context(serve_on(port, SERVER_ENV))
            run = wait_until(
                lambda: (
                    (r := run_of(base_url, admin, run_id))["status"] in ("completed", "failed", "timed_out")
                    and r
                ),
                60,
                "the run ended after the manager came back",
            )
            assert run["status"] == "completed", (run, log_path.read_text()[-3000:])
            assert (run["devicesNew"], run["devicesUpdated"]) == (2, 0)

            # Stored exactly once: two devices, one change set (one version, one change row), one audit row.
            devices = Device.objects.filter(site_id=SITE)
            assert sorted(devices.values_list("sys_name", flat=True)) == ["lab-router", "lab-switch"]
            assert Site.objects.get(pk=SITE).inventory_version == version_before + 1
            assert InventoryChange.objects.filter(site_id=SITE).count() == changes_before + 1
            assert (
                AuditLog.objects.filter(site_id=SITE, action="inventory_changed").count() == audits_before + 1
            )
            assert {d.discovered_by for d in devices} == {leader.id}
            (key,) = IdempotencyKey.objects.filter(site_id=SITE)  # posted under its queue key
            assert key.owner == f"instance:{leader.id}" and key.status == 200
            text = log_path.read_text()
            assert "Traceback" not in text
            assert "resync (" in text and "reconnect" in text  # and it refreshed after reconnecting
        finally:
            first.close()
            code = stop_agent(agent, log_path)
    assert code == 0


@pytest.mark.django_db(transaction=True)
def test_an_agent_started_before_its_manager_registers_once_the_manager_is_up(tokens, tmp_path: Path):
    instance_token, _ = tokens
    port = free_port()
    log_path = tmp_path / "agent.log"
    agent = start_agent_cli(f"http://127.0.0.1:{port}", instance_token, SITE, "early", log_path, *FAST_RETRY)
    try:
        wait_until(lambda: log_path.read_text().count("registration attempt") >= 3, 20, "three attempts")
        assert agent.poll() is None
        with serve_on(port, SERVER_ENV):
            wait_until(
                lambda: Instance.objects.filter(site_id=SITE, hostname="early").exists(), 20, "registered"
            )
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the agent's socket is open")
            code = stop_agent(agent, log_path)
    finally:
        if agent.poll() is None:
            stop_agent(agent, log_path)
    text = log_path.read_text()
    assert code == 0
    assert "Traceback" not in text and "URLError" not in text
    assert "manager unreachable" in text


@pytest.mark.django_db(transaction=True)
def test_a_lost_answer_to_posted_results_is_replayed_not_applied_twice(tokens, tmp_path: Path):
    """The network loses the manager's answer to the results: the agent sends the batch again with the
    same Idempotency-Key and gets the first answer back (2 added), and nothing is applied twice."""
    instance_token, admin = tokens
    log_path = tmp_path / "agent.log"
    with ExitStack() as stack:
        router = stack.enter_context(
            run_snmpd(("127.0.0.1", "127.0.0.2", "127.0.0.3"), sys_name="lab-router")
        )
        stack.enter_context(run_snmpd(("127.0.0.5",), port=router.port, sys_name="lab-switch"))
        port = free_port()
        base_url, server = stack.enter_context(serve_on(port, SERVER_ENV))
        proxy = LossyProxy(port, f"POST /api/v1/sites/{SITE}/inventory/devices")
        stack.callback(proxy.close)
        seed = create_seed(base_url, admin, router, "lab", 6, 300)
        agent = start_agent_cli(proxy.url, instance_token, SITE, "agent-1", log_path, *FAST_RETRY)
        try:
            wait_until(lambda: "event socket open" in log_path.read_text(), 20, "the agent's socket is open")
            version_before = Site.objects.get(pk=SITE).inventory_version
            audits_before = AuditLog.objects.filter(site_id=SITE, action="inventory_changed").count()
            run_id = ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run",
                    headers=admin,
                    timeout=10,
                ),
                202,
            )["runId"]
            run = wait_until(
                lambda: (r := run_of(base_url, admin, run_id))["status"] in ("completed", "failed") and r,
                30,
                "the run ended",
            )
            assert run["status"] == "completed", run
            assert proxy.dropped == 1
            text = log_path.read_text()
            # Sent twice (the first answer was lost) …
            assert text.count("posting results ") == 1 and "manager unreachable" in text
            # … and the second answer is the first one, replayed: 2 added (not 0 added, 2 unchanged).
            stored = [line for line in text.splitlines() if "stored: " in line]
            assert len(stored) == 1 and "stored: 2 added, 0 updated, 0 unchanged" in stored[0], stored
            assert f"discovery run {run_id} completed: 6 scanned, 4 found, 2 new" in text
            assert Device.objects.filter(site_id=SITE).count() == 2
            assert Site.objects.get(pk=SITE).inventory_version == version_before + 1
            assert (
                AuditLog.objects.filter(site_id=SITE, action="inventory_changed").count() == audits_before + 1
            )
        finally:
            code = stop_agent(agent, log_path)
    posts = [
        line
        for line in server.server_log.splitlines()
        if f"POST /api/v1/sites/{SITE}/inventory/devices 200" in line
    ]
    assert len(posts) == 2, posts  # the manager answered both, and applied one
    assert code == 0


def test_sigterm_stops_an_agent_still_waiting_for_its_manager_at_once(tmp_path: Path):
    log_path = tmp_path / "agent.log"
    agent = start_agent_cli(
        f"http://127.0.0.1:{free_port()}",
        "psm_unused",
        SITE,
        "early",
        log_path,
        *("--backoff-base", "20", "--backoff-cap", "30"),  # a first wait of up to 20 s
    )
    try:
        wait_until(lambda: "registration attempt 1" in log_path.read_text(), 20, "the first attempt")
        agent.send_signal(signal.SIGTERM)
        began = time.monotonic()
        code = agent.wait(timeout=30)
        stopped_in = time.monotonic() - began
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    text = log_path.read_text()
    assert code == 0
    assert stopped_in < 2, stopped_in  # not after the backoff's wait
    assert "registration attempt 2" not in text
    assert "Traceback" not in text


@pytest.mark.django_db(transaction=True)
def test_a_gap_in_the_event_seq_makes_the_agent_resync(tokens, tmp_path: Path):
    instance_token, admin = tokens
    log_path = tmp_path / "agent.log"
    with ExitStack() as stack:
        router = stack.enter_context(run_snmpd(("127.0.0.1",), sys_name="lab-router"))
        base_url, _server = stack.enter_context(serve_on(free_port(), SERVER_ENV))
        seed = create_seed(base_url, admin, router, "lab", 1, 300)
        # Another instance leads: run_discovery goes to it alone, yet takes a number of the site's seq.
        leader = ok(
            requests.post(
                f"{base_url}/api/v1/instances/register",
                json={"siteId": SITE, "hostname": "the-leader"},
                headers=bearer(instance_token),
                timeout=10,
            )
        )
        assert leader["isLeader"] is True
        agent = start_agent_cli(base_url, instance_token, SITE, "follower", log_path, *FAST_RETRY)
        try:
            wait_until(lambda: "event socket open" in log_path.read_text(), 20, "the agent's socket is open")
            wait_until(lambda: "resync (" in log_path.read_text(), 10, "the first resync (after connecting)")

            def put(name: str) -> int:
                return ok(
                    requests.put(
                        f"{base_url}/api/v1/sites/{SITE}/inventory",
                        json={
                            "devices": [
                                {
                                    "sysName": name,
                                    "agents": [
                                        {"address": "127.0.9.1", "version": 2, "readCommunity": "x-ro-1"}
                                    ],
                                }
                            ]
                        },
                        headers=admin,
                        timeout=10,
                    )
                )["version"]

            put("seen-1")  # an event the agent gets: its baseline seq
            wait_until(lambda: "inventory v" in log_path.read_text(), 10, "the agent followed the change")
            assert "seq jumped" not in log_path.read_text()
            ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run",
                    headers=admin,
                    timeout=10,
                ),
                202,
            )  # run_discovery to the leader's group only: the agent never sees that number
            version = put("seen-2")
            # Reasons that arrive while a resync runs are coalesced into one line: seq_gap may not be first.
            gap_resync = re.compile(r"resync \([^)\n]*\bseq_gap\b")
            wait_until(lambda: gap_resync.search(log_path.read_text()), 10, "a resync for the gap")
            text = log_path.read_text()
            assert "event seq jumped from" in text
            wait_until(
                lambda: f"inventory v{version} " in log_path.read_text(),
                10,
                "the agent holds the newest version",
            )
        finally:
            code = stop_agent(agent, log_path)
    assert code == 0


@pytest.mark.django_db(transaction=True)
def test_cancel_discovery_stops_the_scan_and_nothing_is_posted_or_reported(tokens, tmp_path: Path):
    instance_token, admin = tokens
    log_path = tmp_path / "agent.log"
    with ExitStack() as stack:
        router = stack.enter_context(run_snmpd(("127.0.0.1", "127.0.0.2"), sys_name="lab-router"))
        base_url, _server = stack.enter_context(serve_on(free_port(), SERVER_ENV))
        seed = create_seed(base_url, admin, router, "slow-lab", 40, 8000)
        agent = start_agent_cli(base_url, instance_token, SITE, "agent-1", log_path, *FAST_RETRY)
        try:
            wait_until(
                lambda: Instance.objects.filter(site_id=SITE, hostname="agent-1", is_leader=True).exists(),
                20,
                "the agent leads",
            )
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the agent's socket is open")
            run_id = ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run",
                    headers=admin,
                    timeout=10,
                ),
                202,
            )["runId"]
            wait_until(lambda: run_of(base_url, admin, run_id)["status"] == "running", 10, "the scan started")
            cancelled = ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-runs/{run_id}/cancel",
                    headers=admin,
                    timeout=10,
                )
            )
            assert cancelled["status"] == "cancelled"
            wait_until(
                lambda: f"discovery run {run_id} cancelled by the manager" in log_path.read_text(),
                10,
                "the agent stopped the run",
            )
            # Longer than the rest of the scan would have taken: nothing comes of it.
            time.sleep(20)
            text = log_path.read_text()
            assert "manager refused a frame" not in text  # no discovery_complete (it would be refused)
            assert f"discovery run {run_id} completed" not in text
            assert "posting results" not in text and "stored:" not in text
            assert Device.objects.filter(site_id=SITE).count() == 0
            assert run_of(base_url, admin, run_id)["status"] == "cancelled"
        finally:
            code = stop_agent(agent, log_path)
    assert code == 0
