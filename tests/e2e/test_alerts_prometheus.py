"""The alert rules in a real Prometheus (issue 11 §2): InstanceUnhealthy fires for an instance that
stopped heartbeating, and not for one that heartbeats.

A real `manage.py serve` on the test database, two instances registered over HTTP and heartbeating every
second. A real Prometheus (the Debian package) on a free loopback port scrapes the manager's /metrics
every second and evaluates a copy of deploy/prometheus/alerts.yaml every second. /metrics needs no
token (docs/operations.md#health-probes: its per-site series are the manager's own, unauthenticated;
block it at the proxy), so the scrape has none.

The copy is derived from the real file, not edited by hand: every `for:` becomes FOR, and the
heartbeat-age threshold (120 s in InstanceUnhealthy and in the drift rules' exclusion) becomes
HEARTBEAT_AGE, so the test takes seconds; the expressions are otherwise the file's.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import requests
import yaml

from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.prometheus_support import Heartbeats, bearer, prometheus, wait_for
from tests.e2e.servers import serve

pytestmark = pytest.mark.django_db(transaction=True)

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
SITE = "alerts-01"
FOR = "2s"
HEARTBEAT_AGE = 8  # s: eight missed one-second heartbeats, for a loaded 2-core machine
HEARTBEAT_AGE_IN_RULES = re.compile(r"time\(\) - promsnmp_manager_instance_last_heartbeat_timestamp > 120\b")
# Heartbeat age + FOR + a scrape and an evaluation (1 s each), with generous slack for a loaded machine.
BOUND = HEARTBEAT_AGE + 2 + 2 + 45

PROMETHEUS_YML = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.yaml
scrape_configs:
  - job_name: promsnmp-manager
    static_configs:
      - targets: ["{address}"]
"""


def shortened_rules() -> str:
    """deploy/prometheus/alerts.yaml with short durations (see the module docstring)."""
    document = yaml.safe_load(RULES.read_text())
    unhealthy = None
    for group in document["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
            rule["expr"] = HEARTBEAT_AGE_IN_RULES.sub(
                f"time() - promsnmp_manager_instance_last_heartbeat_timestamp > {HEARTBEAT_AGE}", rule["expr"]
            )
            if rule.get("alert") == "InstanceUnhealthy":
                unhealthy = rule
    # Fails loudly if the rule changes shape instead of testing an unshortened copy.
    assert unhealthy is not None and f"> {HEARTBEAT_AGE}" in unhealthy["expr"], unhealthy
    return yaml.safe_dump(document, sort_keys=False)


def alerts(prometheus_url: str) -> list[dict]:
    response = requests.get(f"{prometheus_url}/api/v1/alerts", timeout=5)
    assert response.status_code == 200, response.text[:500]
    return response.json()["data"]["alerts"]


def unhealthy(prometheus_url: str) -> dict[str, str]:
    """instance id → state (pending, firing) of the InstanceUnhealthy alerts."""
    return {
        alert["labels"]["instance_id"]: alert["state"]
        for alert in alerts(prometheus_url)
        if alert["labels"]["alertname"] == "InstanceUnhealthy"
    }


def test_instance_unhealthy_fires_in_prometheus_when_heartbeats_stop():
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Alerts"})
    _, enrol = token_create(actor=TEST_ACTOR, name="alerts enrol", scopes=["instance"], site_id=SITE)
    heartbeats: dict[str, Heartbeats] = {}
    try:
        with serve(env={"HEARTBEAT_INTERVAL_SECONDS": "1"}) as (base_url, _):
            instances = {}
            for name in ("steady", "victim"):
                answer = requests.post(
                    f"{base_url}/api/v1/instances/register",
                    json={"siteId": SITE, "hostname": f"promsnmp-{name}"},
                    headers=bearer(enrol),
                    timeout=10,
                )
                assert answer.status_code == 200, answer.text
                instances[name] = answer.json()["instanceId"]
                heartbeats[name] = Heartbeats(base_url, instances[name], answer.json()["instanceToken"])
            config = PROMETHEUS_YML.format(address=base_url.removeprefix("http://"))
            with prometheus(config, files={"alerts.yaml": shortened_rules()}) as prometheus_url:
                groups = requests.get(f"{prometheus_url}/api/v1/rules", timeout=5).json()["data"]["groups"]
                loaded = {rule["name"] for group in groups for rule in group["rules"]}
                assert "InstanceUnhealthy" in loaded and len(loaded) == 8, loaded

                def scraped():
                    response = requests.get(
                        f"{prometheus_url}/api/v1/query",
                        params={"query": "promsnmp_manager_instance_last_heartbeat_timestamp"},
                        timeout=5,
                    )
                    seen = {r["metric"]["instance_id"] for r in response.json()["data"]["result"]}
                    return seen == set(instances.values()), seen

                wait_for(scraped, 60, "both instances' heartbeat timestamps in Prometheus")
                # Both heartbeat: for longer than the heartbeat age plus FOR, neither is even pending.
                quiet_until = time.monotonic() + HEARTBEAT_AGE + 4
                while time.monotonic() < quiet_until:
                    assert unhealthy(prometheus_url) == {}, alerts(prometheus_url)
                    time.sleep(0.5)

                heartbeats["victim"].stop()
                firing = wait_for(
                    lambda: (
                        (states := unhealthy(prometheus_url)).get(instances["victim"]) == "firing",
                        states,
                    ),
                    BOUND,
                    "InstanceUnhealthy firing for the instance that stopped heartbeating",
                )
                assert set(firing) == {instances["victim"]}, firing  # the steady one never
                (alert,) = [
                    a
                    for a in alerts(prometheus_url)
                    if a["labels"]["alertname"] == "InstanceUnhealthy"
                    and a["labels"]["instance_id"] == instances["victim"]
                ]
                assert alert["labels"]["site"] == SITE and alert["labels"]["severity"] == "warning"
                assert alert["annotations"]["summary"] == f"Instance {instances['victim']} missed heartbeats"
                assert not heartbeats["steady"].failures, heartbeats["steady"].failures
    finally:
        for beat in heartbeats.values():
            beat.stop()
