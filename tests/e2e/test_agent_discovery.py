"""Discovery end to end: the reference agent (`python -m agent`, a subprocess without Django settings)
against a real `manage.py serve`, scanning real snmpd processes on loopback addresses.

The agent registers as the site's leader; an operator triggers a seed's run over REST; the agent gets
run_discovery on its socket, scans 127.0.0.1-127.0.0.6 (lab-router answers on .1-.3, lab-switch on .5,
the rest is silent), reports progress, posts the devices with the runId and completes the run. A second
instance's socket sees the inventory_updated. SIGTERM deregisters the agent.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from core.services import token_create
from instances.models import Instance
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.agent_support import agent_env, start_agent_cli, stop_agent, wait_until
from tests.e2e.servers import ROOT, EventSocket, serve, websocket_url
from tests.e2e.test_websocket import bearer, ok
from tests.snmpd import run_snmpd

SITE = "agent-e2e"


def ended_run(base_url: str, headers: dict[str, str], run_id: str) -> dict | None:
    """The run once it has ended (completed, failed or timed out), else None."""
    path = f"{base_url}/api/v1/sites/{SITE}/discovery-runs/{run_id}"
    run = ok(requests.get(path, headers=headers, timeout=10))
    return run if run["status"] in ("completed", "failed", "timed_out") else None


def test_the_agent_and_the_scanner_import_no_django():
    code = (
        "import sys, agent.runner, agent.client, agent.__main__, snmp.scanner; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'channels', 'core', 'sites', 'instances', 'inventory', 'discovery', "
        "'fleet', 'config')); "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=agent_env(), check=True, timeout=60)


@pytest.mark.django_db(transaction=True)
def test_a_seed_run_is_scanned_by_the_agent_and_lands_in_the_inventory(tmp_path: Path):
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Agent e2e"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="agents", scopes=["instance"], site_id=SITE)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    admin = bearer(admin_token)

    with (
        run_snmpd(("127.0.0.1", "127.0.0.2", "127.0.0.3"), sys_name="lab-router") as router,
        run_snmpd(("127.0.0.5",), port=router.port, sys_name="lab-switch", sys_descr="Lab switch") as _switch,
        serve() as (base_url, _server),
    ):
        seed = ok(
            requests.post(
                f"{base_url}/api/v1/sites/{SITE}/discovery-seeds",
                json={
                    "name": "loopback-lab",
                    "targets": ["127.0.0.1-127.0.0.6"],
                    "snmpConfig": router.v3_sha256_aes256,
                    "options": {"timeout": 300, "retries": 0, "maxConcurrent": 8, "port": router.port},
                },
                headers=admin,
                timeout=10,
            ),
            201,
        )
        log_path = tmp_path / "agent.log"
        agent = start_agent_cli(base_url, instance_token, SITE, "agent-1", log_path)
        try:
            leader = wait_until(
                lambda: Instance.objects.filter(site_id=SITE, hostname="agent-1", is_leader=True).first(),
                15,
                "the agent registered as leader",
            )
            # A second instance watches the site's events (it registers after the agent: a follower).
            watcher = ok(
                requests.post(
                    f"{base_url}/api/v1/instances/register",
                    json={"siteId": SITE, "hostname": "watcher"},
                    headers=bearer(instance_token),
                    timeout=10,
                )
            )
            assert watcher["isLeader"] is False
            events = EventSocket(websocket_url(base_url, watcher["instanceId"], instance_token))
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the agent's socket is open")

            started = time.monotonic()
            trigger = ok(
                requests.post(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run",
                    headers=admin,
                    timeout=10,
                ),
                202,
            )
            assert (trigger["status"], trigger["leaderInstance"]) == ("started", leader.id)
            run = wait_until(lambda: ended_run(base_url, admin, trigger["runId"]), 15, "the run ended")
            elapsed = time.monotonic() - started
            assert run["status"] == "completed", (run, log_path.read_text()[-3000:])
            assert run["targetsScanned"] == 6
            assert run["devicesFound"] == 4  # four addresses answered …
            assert (run["devicesNew"], run["devicesUpdated"]) == (2, 0)  # … which are two devices
            assert run["errors"] == 0
            assert run["startedAt"] is not None  # progress made it running
            assert elapsed < 10, elapsed

            inventory = ok(
                requests.get(
                    f"{base_url}/api/v1/sites/{SITE}/inventory?includeCredentials=true",
                    headers=admin,
                    timeout=10,
                )
            )
            devices = {d["sysName"]: d for d in inventory["devices"]}
            assert set(devices) == {"lab-router", "lab-switch"}
            assert [a["address"] for a in devices["lab-router"]["agents"]] == [
                "127.0.0.1",
                "127.0.0.2",
                "127.0.0.3",
            ]
            assert devices["lab-router"]["discoveredBy"] == leader.id
            assert devices["lab-switch"]["sysDescr"] == "Lab switch"
            agent_config = devices["lab-switch"]["agents"][0]
            assert {k: agent_config[k] for k in router.v3_sha256_aes256} == router.v3_sha256_aes256
            assert agent_config["port"] == router.port

            event, _ = events.wait_for("inventory_updated", 5)
            payload = event["payload"]
            assert payload["source"] == "discovery"
            assert payload["triggeredBy"] == leader.id
            assert payload["changeType"] == "device_added"
            assert payload["version"] == inventory["version"]
            assert sorted(payload["deviceIds"]) == sorted(d["id"] for d in inventory["devices"])

            seed_after = ok(
                requests.get(
                    f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}", headers=admin, timeout=10
                )
            )
            assert (seed_after["lastRunStatus"], seed_after["devicesFound"]) == ("success", 4)
            events.connection.close()
        finally:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            try:
                code = agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                agent.kill()
                raise
            print(log_path.read_text()[-4000:], file=sys.stderr)
        assert code == 0
        assert not Instance.objects.filter(pk=leader.id).exists()  # deregistered on SIGTERM


@pytest.mark.django_db(transaction=True)
def test_a_run_pending_before_the_agent_starts_reaches_it_and_a_refused_target_fails_the_run(tmp_path):
    """No leader when the run is triggered: it waits (pending) and goes to the agent once it registers.
    Its seed targets an address outside 127.0.0.0/8, which an agent started with --loopback-only
    refuses before sending anything: the run fails, saying why."""
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Agent e2e"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="agents", scopes=["instance"], site_id=SITE)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    admin = bearer(admin_token)

    with serve() as (base_url, _server):
        seed = ok(
            requests.post(
                f"{base_url}/api/v1/sites/{SITE}/discovery-seeds",
                json={
                    "name": "outside",
                    "targets": ["192.0.2.1"],
                    "snmpConfig": {"version": 2, "readCommunity": "public-ro"},
                    "options": {"timeout": 300, "retries": 0},
                },
                headers=admin,
                timeout=10,
            ),
            201,
        )
        trigger = ok(
            requests.post(
                f"{base_url}/api/v1/sites/{SITE}/discovery-seeds/{seed['id']}/run", headers=admin, timeout=10
            ),
            202,
        )
        assert (trigger["status"], trigger["leaderInstance"]) == ("pending", None)

        log_path = tmp_path / "agent.log"
        agent = start_agent_cli(base_url, instance_token, SITE, "agent-late", log_path)
        try:
            run = wait_until(
                lambda: ended_run(base_url, admin, trigger["runId"]), 15, "the pending run ended"
            )
        finally:
            code = stop_agent(agent, log_path, timeout=10)
    assert run["status"] == "failed", run
    assert run["leaderInstance"] is not None
    assert run["errors"] == 1
    assert "127.0.0.0/8" in str(run["errorDetail"]), run
    assert code == 0
    assert log_path.read_text().count(f"discovery run {trigger['runId']}: seeds") == 1  # run once


def test_reconnect_backoff_is_capped_then_fully_jittered():
    """The runner's backoff is agent.backoff's (tests/agent/test_resilience.py has the rest): every delay
    in [0, min(cap, base·2^n)], jitter applied after the cap."""
    from agent.runner import backoff

    delays = [backoff(attempt, base=0.5, cap=30) for attempt in range(40)]
    assert all(0 <= delay <= min(30, 0.5 * 2**attempt) for attempt, delay in enumerate(delays))
    assert len({round(d, 6) for d in delays[7:]}) > 1  # at the cap, still spread
    assert min(delays[7:]) < 25  # over all of [0, cap], not parked near it
