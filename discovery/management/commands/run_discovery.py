"""manage.py run_discovery SITE [SEED …] [--wait]: a discovery run started as POST …/discovery-runs starts
one (discovery/runs.py's run_start, by `command:manage.py run_discovery`); with --wait, its progress as the
leader reports it, until the run ends."""

from __future__ import annotations

import argparse
import time

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.errors import ApiError, NotFoundError
from discovery.models import DiscoveryRun, RunStatus
from discovery.runs import FINISHED, MANUAL, pending_timeout_seconds, run_start, run_timeout_seconds
from discovery.selectors import run_get
from instances.selectors import instance_get
from inventory.selectors import seed_ids_by_reference

FAILED_EXIT = 1  # the run failed, timed out or was cancelled (and every error before it started)
STILL_ACTIVE_EXIT = 2  # --timeout passed: the run goes on
INTERRUPTED_EXIT = 130  # Ctrl-C while waiting: the run goes on


def positive_seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"a number of seconds above 0, not {value!r}")
    return seconds


def longest_run_seconds() -> int:
    """How long a run can last before the manager ends it: waiting for a leader, running, then the
    sweep that times it out."""
    return pending_timeout_seconds() + run_timeout_seconds() + settings.DISCOVERY_SWEEP_INTERVAL_SECONDS


def error_message(exc: ApiError) -> str:
    lines = [str(exc.detail)]
    lines += [f"  {path}: {' '.join(messages)}" for path, messages in sorted(exc.fields.items())]
    return "\n".join(lines)


class Command(BaseCommand):
    help = (
        "Start a discovery run of a site's seeds (given by id or name; none: every enabled seed), as "
        "POST /api/v1/sites/{siteId}/discovery-runs does, and print its id. With --wait, print its "
        "progress until it ends: exit 0 when it completed, 1 when it failed, timed out or was "
        "cancelled, 2 when --timeout passed first (the run goes on)."
    )

    def add_arguments(self, parser):
        parser.add_argument("site_id")
        parser.add_argument(
            "seeds",
            nargs="*",
            metavar="SEED",
            help="Seed ids or names; none: every enabled seed of the site.",
        )
        parser.add_argument("--wait", action="store_true", help="Print the run's progress until it ends.")
        parser.add_argument(
            "--timeout",
            type=positive_seconds,
            default=None,
            help="With --wait: stop waiting after this many seconds (default: as long as the manager lets a "
            "run wait and run, DISCOVERY_PENDING_TIMEOUT_SECONDS + DISCOVERY_RUN_TIMEOUT_SECONDS + "
            "DISCOVERY_SWEEP_INTERVAL_SECONDS).",
        )
        parser.add_argument(
            "--poll-interval",
            type=positive_seconds,
            default=1.0,
            help="With --wait: seconds between two looks at the run (default 1).",
        )

    def handle(self, *args, site_id, seeds, wait, timeout, poll_interval, **options):
        if timeout is not None and not wait:
            raise CommandError("--timeout goes with --wait.")
        self._hostnames: dict[str, str] = {}
        try:
            run = run_start(
                actor=Actor.command("run_discovery"),
                site_id=site_id,
                seed_ids=seed_ids_by_reference(site_id, seeds) if seeds else None,
                triggered_by=MANUAL,
            )
        except ApiError as exc:
            raise CommandError(error_message(exc)) from exc
        seeds_text = ", ".join(run.seed_ids)
        self._say(
            run,
            f"started on site {run.site_id} (seeds {seeds_text}; {run.targets_estimated} targets estimated)",
        )
        if run.status == RunStatus.PENDING:
            self._say(
                run,
                "pending: the site has no live leader; it goes to the next one, or times out after "
                f"{pending_timeout_seconds()} s without one",
            )
        else:
            self._say(run, self._progress(run))
        if wait:
            self._follow(run, timeout or longest_run_seconds(), poll_interval)

    def _follow(self, run: DiscoveryRun, timeout: float, poll_interval: float) -> None:
        deadline = time.monotonic() + timeout
        shown = self._progress(run)
        try:
            while run.status not in FINISHED:
                if time.monotonic() >= deadline:
                    raise CommandError(
                        f"Stopped waiting after {timeout:g} s; run {run.pk} goes on ({run.status}).",
                        returncode=STILL_ACTIVE_EXIT,
                    )
                time.sleep(min(poll_interval, max(deadline - time.monotonic(), 0)))
                run = run_get(run.site_id, run.pk)
                line = self._progress(run)
                if line != shown:
                    self._say(run, line)
                    shown = line
        except KeyboardInterrupt:
            raise CommandError(
                f"Stopped waiting; run {run.pk} goes on ({run.status}).", returncode=INTERRUPTED_EXIT
            ) from None
        if run.status != RunStatus.COMPLETED:
            detail = f": {run.error_detail}" if run.error_detail else ""
            raise CommandError(f"Discovery run {run.pk} {run.status}{detail}", returncode=FAILED_EXIT)

    def _progress(self, run: DiscoveryRun) -> str:
        scanned = f"{run.targets_scanned}/{run.targets_estimated} targets scanned"
        counts = f"{scanned}, {run.devices_found} devices found"
        if run.status == RunStatus.PENDING:
            return "pending: waiting for a live leader"
        if run.status == RunStatus.DISPATCHED:
            return f"dispatched to {self._instance(run.dispatched_to)}"
        if run.status == RunStatus.RUNNING:
            return f"running on {self._instance(run.dispatched_to)}: {counts}"
        return (
            f"{run.status}: {counts} ({run.devices_new} new, {run.devices_updated} updated), "
            f"{run.errors} errors"
        )

    def _instance(self, instance_id: str) -> str:
        """hostname (id), looked up once per instance."""
        if instance_id not in self._hostnames:
            try:
                self._hostnames[instance_id] = instance_get(instance_id).hostname
            except NotFoundError:
                self._hostnames[instance_id] = "(deregistered)"
        return f"{self._hostnames[instance_id]} ({instance_id})"

    def _say(self, run: DiscoveryRun, line: str) -> None:
        self.stdout.write(f"{run.pk}: {line}")
        self.stdout.flush()
