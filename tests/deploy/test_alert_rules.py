"""The alert rules (deploy/prometheus/alerts.yaml) pass `promtool check rules` and their unit tests
(`promtool test rules deploy/prometheus/alerts_test.yaml`: every rule fires for one input, not for
another). promtool comes with the Debian package `prometheus` (`make system-packages`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yaml"
SPEC_RULES = (
    "ManagerAPIHighLatency",
    "ManagerAPIErrors",
    "SiteNoLeader",
    "InstanceUnhealthy",
    "DiscoveryStale",
)
OUR_RULES = ("InstanceConfigDrift", "InstanceInventoryDrift", "DiscoveryRunTimedOut")
# The spec's expression, which can never fire (docs/decisions.md), with our label for the site (`site`).
SPEC_SITE_NO_LEADER = "count by (site) (promsnmp_manager_instance_is_leader == 1) == 0"


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is missing: install the Debian package `prometheus` (`make system-packages`).")
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def rules(path: Path = RULES) -> dict[str, dict]:
    return {
        rule["alert"]: rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    }


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(RULES), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(SPEC_RULES + OUR_RULES)} rules found" in result.stdout


def test_every_rule_fires_and_stays_silent_in_the_unit_tests():
    result = promtool("test", "rules", str(RULE_TESTS), cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases: dict[str, list[list]] = {}
    for test in tested:
        for case in test["alert_rule_test"]:
            cases.setdefault(case["alertname"], []).append(case["exp_alerts"])
    assert set(cases) == set(rules()) == set(SPEC_RULES + OUR_RULES)
    for name, expected in cases.items():
        assert any(alerts for alerts in expected), f"{name} never fires in the unit tests"
        assert any(not alerts for alerts in expected), f"{name} is never silent in the unit tests"


def test_the_spec_rules_keep_their_names_durations_and_severities():
    found = rules()
    expected = {
        "ManagerAPIHighLatency": ("5m", "warning"),
        "ManagerAPIErrors": ("5m", "critical"),
        "SiteNoLeader": ("5m", "critical"),
        "InstanceUnhealthy": ("2m", "warning"),
        "DiscoveryStale": ("1h", "warning"),
    }
    assert {name: (found[name]["for"], found[name]["labels"]["severity"]) for name in SPEC_RULES} == expected


def test_the_spec_site_no_leader_expression_fails_the_unit_tests(tmp_path):
    """Why it is corrected: with the spec's expression the leaderless site never alerts."""
    text = RULES.read_text()
    ours = rules()["SiteNoLeader"]["expr"].strip()
    assert ours in text and ours != SPEC_SITE_NO_LEADER
    (tmp_path / "alerts.yaml").write_text(text.replace(ours, SPEC_SITE_NO_LEADER))
    (tmp_path / "alerts_test.yaml").write_text(RULE_TESTS.read_text())
    result = promtool("test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "SiteNoLeader" in result.stdout + result.stderr
