"""manage.py fleet_status: every site's status, leader, instances, devices and last discovery, as a table
or (--json) as a document with the API's names. One fleet.selectors snapshot: two queries however many
sites there are."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from core.timefmt import iso_z, short_age
from fleet.selectors import FleetState, SiteState, fleet_health, fleet_state
from instances.selectors import SITE_HEALTHY

NOT_HEALTHY_EXIT = 2  # --fail-on-degraded; 1 stays an error (an unknown site, no database)
COLUMNS = ("SITE", "STATUS", "LEADER", "INSTANCES", "DEVICES", "LAST DISCOVERY")


def site_document(site: SiteState) -> dict:
    """One site, with the names of GET /api/v1/sites."""
    leader = site.leader
    return {
        "id": site.id,
        "status": site.status,
        "leaderInstanceId": site.leader_id,
        "leaderHostname": leader.hostname if leader else None,
        "instanceCount": len(site.instances),
        "healthyInstances": site.healthy_instances,
        "deviceCount": site.devices,
        "lastDiscovery": iso_z(site.last_discovery_at),
    }


def site_row(site: SiteState, state: FleetState) -> tuple[str, ...]:
    leader = site.leader
    last = site.last_discovery_at
    return (
        site.id,
        site.status,
        f"{leader.hostname} ({leader.id})" if leader else "-",
        f"{site.healthy_instances}/{len(site.instances)}",
        str(site.devices),
        f"{short_age((state.now - last).total_seconds())} ago" if last else "never",
    )


class Command(BaseCommand):
    help = (
        "Every site's status, leader (hostname and id), healthy/total instances, devices and last discovery; "
        "--json for a document with the API's names. Exits 0 whatever the fleet's health unless "
        f"--fail-on-degraded (then {NOT_HEALTHY_EXIT} when a site shown is degraded or offline)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--site", action="append", dest="sites", metavar="SITE_ID", help="Only this site (repeatable)."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="A JSON document instead of the table."
        )
        parser.add_argument(
            "--fail-on-degraded",
            action="store_true",
            help=f"Exit {NOT_HEALTHY_EXIT} when a site shown is not healthy (degraded, offline, no leader).",
        )

    def handle(self, *args, sites, as_json: bool, fail_on_degraded: bool, **options):
        wanted = list(dict.fromkeys(sites)) if sites else None
        state = fleet_state(site_ids=wanted)
        if wanted is not None:
            missing = sorted(set(wanted) - {site.id for site in state.sites})
            if missing:
                raise CommandError(f"No site {', '.join(repr(site_id) for site_id in missing)}.")
        health = fleet_health(state)
        if as_json:
            self._json(state, health)
        else:
            self._table(state, health)
        unwell = [site for site in state.sites if site.status != SITE_HEALTHY]
        if fail_on_degraded and unwell:
            raise CommandError(
                f"{len(unwell)} of {len(state.sites)} sites not healthy: "
                + ", ".join(f"{site.id} ({site.status})" for site in unwell),
                returncode=NOT_HEALTHY_EXIT,
            )

    def _json(self, state: FleetState, health: dict) -> None:
        document = {
            "status": health["status"],
            "timestamp": health["timestamp"],
            "summary": health["summary"],
            "sites": [site_document(site) for site in state.sites],
        }
        self.stdout.write(json.dumps(document, indent=2))

    def _table(self, state: FleetState, health: dict) -> None:
        if state.sites:
            rows = [COLUMNS, *(site_row(site, state) for site in state.sites)]
            widths = [max(len(row[column]) for row in rows) for column in range(len(COLUMNS))]
            for row in rows:
                cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                self.stdout.write("  ".join(cells).rstrip())
            self.stdout.write("")
        summary = health["summary"]
        self.stdout.write(
            f"Fleet {health['status']}: {summary['totalSites']} sites ({summary['healthySites']} healthy, "
            f"{summary['degradedSites']} degraded, {summary['offlineSites']} offline), "
            f"{summary['healthyInstances']}/{summary['totalInstances']} instances healthy, "
            f"{summary['totalDevices']} devices."
        )
