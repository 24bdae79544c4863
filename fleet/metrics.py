"""Prometheus text for GET /api/v1/fleet/metrics, and the collector behind the manager's own /metrics.

Both read the database when asked (never process-global counters), so every gunicorn worker answers
the same, and a scrape serves them once whichever process answers it (core.metrics).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator

from django.db import DatabaseError
from prometheus_client.core import GaugeMetricFamily

from core.metrics import register_collector
from fleet.selectors import INSTANCE_STATES, SITE_STATES, manager_reading

logger = logging.getLogger("promsnmp.metrics")

# The site's label in every series, here and on /metrics: the spec's fleet metrics name it `site`
# (docs/decisions.md, issue 11).
SITE = "site"
# Text exposition format 0.0.4, which every Prometheus reads (the spec's example is in it).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(name: str, help_text: str, samples: Iterable[tuple[dict[str, str], float | int | bool]]) -> str:
    lines = [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} gauge"]
    for labels, value in samples:
        if labels:
            pairs = ",".join(f'{key}="{escape_label_value(str(val))}"' for key, val in labels.items())
            lines.append(f"{name}{{{pairs}}} {_number(value)}")
        else:
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def fleet_prometheus_text(metrics: dict) -> str:
    """fleet.selectors.fleet_metrics() as Prometheus text: the spec's four families first, with the
    spec's HELP lines, then ours. Families are separated by a blank line, as in the spec."""
    sites = metrics["sites"]
    families = [
        ("promsnmp_fleet_sites_total", "Total number of sites", [({}, metrics["sitesTotal"])]),
        (
            "promsnmp_fleet_instances_total",
            "Total instances by status",
            [({"status": status}, metrics["instancesTotal"][status]) for status in INSTANCE_STATES],
        ),
        ("promsnmp_fleet_devices_total", "Total monitored devices", [({}, metrics["devicesTotal"])]),
        (
            "promsnmp_site_instances",
            "Site instance count",
            [({SITE: s["id"]}, s["instances"]) for s in sites],
        ),
        # Ours, in the same style.
        ("promsnmp_fleet_agents", "Total SNMP agents", [({}, metrics["agentsTotal"])]),
        (
            "promsnmp_site_status",
            "Site status (1 for the current one)",
            [
                ({SITE: s["id"], "status": status}, s["status"] == status)
                for s in sites
                for status in SITE_STATES
            ],
        ),
        (
            "promsnmp_site_healthy_instances",
            "Site healthy instance count",
            [({SITE: s["id"]}, s["healthyInstances"]) for s in sites],
        ),
        (
            "promsnmp_site_has_leader",
            "1 when the site has a leader, else 0",
            [({SITE: s["id"]}, s["hasLeader"]) for s in sites],
        ),
        ("promsnmp_site_devices", "Site device count", [({SITE: s["id"]}, s["devices"]) for s in sites]),
        ("promsnmp_site_agents", "Site SNMP agent count", [({SITE: s["id"]}, s["agents"]) for s in sites]),
        (
            "promsnmp_site_inventory_version",
            "Site inventory version",
            [({SITE: s["id"]}, s["inventoryVersion"]) for s in sites],
        ),
    ]
    return "\n".join(_family(*family) for family in families)


# --- the manager's /metrics (core.metrics) -------------------------------------------------------------


class ManagerCollector:
    """The spec's manager metrics that live in the database, read at scrape time."""

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only: registering must not touch the database (it runs in AppConfig.ready()).
        yield from self._families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        is_leader, heartbeat, discovery, config_lag, inventory_lag, timed_out = self._families()
        try:
            reading = manager_reading()
        except DatabaseError:
            # /metrics keeps serving the process metrics when the database is down; /health/ready says why.
            logger.warning("manager metrics: database unavailable", exc_info=True)
            return
        for site_id, instance_id, leader, last_heartbeat in reading.instances:
            is_leader.add_metric([site_id, instance_id], 1 if leader else 0)
            if last_heartbeat is not None:
                heartbeat.add_metric([site_id, instance_id], last_heartbeat.timestamp())
        for site_id, last_discovery in reading.sites:
            if last_discovery is not None:
                discovery.add_metric([site_id], last_discovery.timestamp())
        for site_id, instance_id, config, inventory in reading.version_lags:
            if config is not None:
                config_lag.add_metric([site_id, instance_id], config)
            if inventory is not None:  # never reported: unknown, no sample (instances.selectors.version_lags)
                inventory_lag.add_metric([site_id, instance_id], inventory)
        for site_id, last in reading.timed_out:
            timed_out.add_metric([site_id], last.timestamp())
        yield from (is_leader, heartbeat, discovery, config_lag, inventory_lag, timed_out)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "promsnmp_manager_instance_is_leader",
                "1 when the instance is its site's leader",
                labels=[SITE, "instance_id"],
            ),
            GaugeMetricFamily(
                "promsnmp_manager_instance_last_heartbeat_timestamp",
                "Unix time of the instance's last heartbeat (registration counts as one)",
                labels=[SITE, "instance_id"],
            ),
            GaugeMetricFamily(
                "promsnmp_manager_site_last_discovery_timestamp",
                "Unix time the site's last discovery run ended (absent when none has)",
                labels=[SITE],
            ),
            # Ours (the alert rules' InstanceConfigDrift, InstanceInventoryDrift, DiscoveryRunTimedOut).
            GaugeMetricFamily(
                "promsnmp_manager_instance_config_version_lag",
                "Site config version minus the instance's (reported, else last sent to it)",
                labels=[SITE, "instance_id"],
            ),
            GaugeMetricFamily(
                "promsnmp_manager_instance_inventory_version_lag",
                "Site inventory version minus the one the instance reported (absent when it never did)",
                labels=[SITE, "instance_id"],
            ),
            # A timestamp, not a count of runs: runs go with their site, and a count that goes down would
            # read as a counter reset to increase(); a timestamp never goes back and changes() sees each one.
            GaugeMetricFamily(
                "promsnmp_manager_site_last_discovery_timeout_timestamp",
                "Unix time the site's latest timed-out discovery run ended (absent when none has)",
                labels=[SITE],
            ),
        )


_registered: ManagerCollector | None = None
_lock = threading.Lock()


def register_manager_collector() -> ManagerCollector:
    """Once per process, however often AppConfig.ready() runs (tests, autoreload)."""
    global _registered
    with _lock:
        if _registered is None:
            collector = ManagerCollector()
            try:
                register_collector(collector)
            except ValueError:  # the names are taken: a copy of this module registered them already
                logger.info("manager metrics collector already registered")
            _registered = collector
        return _registered
