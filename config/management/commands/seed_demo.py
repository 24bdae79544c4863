"""manage.py seed_demo: the demo fleet (config/demo_fleet.py) in this database, for trying the admin and
the API without agents or snmpd."""

from __future__ import annotations

import argparse

from django.core.management.base import BaseCommand, CommandError

from config.demo_fleet import MAX_SITES, SITES, SNMP_PORT, demo_fleet_create, demo_sites, other_sites
from core.audit import Actor


def site_count(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_SITES:
        raise argparse.ArgumentTypeError(f"a number of sites from 1 to {MAX_SITES}, not {value!r}")
    return count


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Command(BaseCommand):
    help = (
        "Fill this database with the demo fleet: the spec's three example sites (more with --sites N) with "
        "their discovery seeds and devices on loopback addresses, and no instance. Adds only what is "
        "missing, so it can run again. Refuses a database that holds other sites unless --force."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--sites",
            type=site_count,
            default=len(SITES),
            help=f"How many sites (default {len(SITES)}, the spec's examples; after them demo-site-004, …; "
            f"at most {MAX_SITES}).",
        )
        parser.add_argument(
            "--force", action="store_true", help="Add the demo fleet beside sites that are not the demo's."
        )

    def handle(self, *args, sites: int, force: bool, verbosity: int, **options):
        others, sample = other_sites()
        if others and not force:
            more = f", … ({others} in all)" if others > len(sample) else ""
            raise CommandError(
                f"This database holds sites that are not the demo's ({', '.join(sample)}{more}). Demo sites "
                "have no instance: offline, they would join that fleet's health and alerts. Nothing was "
                "written; use --force to add them anyway."
            )
        report = demo_fleet_create(
            actor=Actor.command("seed_demo"), sites=demo_sites(sites), snmp_port=SNMP_PORT, with_devices=True
        )
        if verbosity >= 2:
            for site in report:
                done = "created" if site.created else "there already"
                added = f"{plural(site.seeds_added, 'seed')} and {plural(site.devices_added, 'device')} added"
                self.stdout.write(
                    f"{site.site_id}: {done}; {added} (inventory version {site.inventory_version})"
                )
        created = sum(1 for site in report if site.created)
        seeds = sum(site.seeds_added for site in report)
        devices = sum(site.devices_added for site in report)
        added = (
            f"{plural(seeds, 'seed')} and {plural(devices, 'device')} added"
            if seeds or devices
            else "nothing to add"
        )
        self.stdout.write(
            f"Demo fleet: {plural(created, 'site')} created, {len(report) - created} there already; {added}."
        )
        self.stdout.write(
            f"No instance runs for them: start a reference agent for {SITES[0].id} with an instance token "
            f"(create_token --scope instance --site {SITES[0].id}), or try `make demo` for a living fleet."
        )
