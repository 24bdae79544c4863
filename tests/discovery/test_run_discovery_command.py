"""manage.py run_discovery, in-process: it starts runs through the API's service (same refusals, the
command as the actor), seeds by id or name, pending without a leader, and --wait's endings (failed and
cancelled → exit 1 with the reason, --timeout → exit 2 and the run goes on). The real leader completing a
run while the command waits in a process of its own: tests/e2e/test_run_discovery.py."""

from __future__ import annotations

import threading
import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.models import AuditLog, OutboxMessage
from discovery import runs
from discovery.models import DiscoveryRun, RunStatus
from inventory.models import DiscoverySeed
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.discovery.test_runs import CORE, EDGE, SITE, create_seed, get_run

ACTOR = "command:manage.py run_discovery"


def run_discovery(*args: str) -> list[str]:
    out = StringIO()
    call_command("run_discovery", *args, stdout=out)
    return out.getvalue().splitlines()


def refused(*args: str, code: int = 1) -> str:
    with pytest.raises(CommandError) as raised:
        run_discovery(*args)
    assert raised.value.returncode == code
    return str(raised.value)


@pytest.fixture
def seeds(make_site, admin_api) -> dict[str, str]:
    make_site(SITE)
    return {"core": create_seed(admin_api, CORE), "edge": create_seed(admin_api, EDGE)}


@pytest.mark.django_db
def test_without_a_leader_the_run_is_pending_and_started_by_the_command(seeds, admin_api):
    first, pending = run_discovery(SITE)
    run = DiscoveryRun.objects.get()
    assert (
        first
        == f"{run.pk}: started on site {SITE} (seeds {seeds['core']}, {seeds['edge']}; 533 targets estimated)"
    )
    assert pending == (
        f"{run.pk}: pending: the site has no live leader; it goes to the next one, or times out after 3600 s "
        "without one"
    )
    body = get_run(admin_api, run.pk)
    assert (body["status"], body["triggeredBy"], body["leaderInstance"]) == ("pending", "manual", None)
    assert run.requested_by == ACTOR
    audit = AuditLog.objects.get(action="discovery_run_started")
    assert (audit.actor, audit.entity_id, audit.site_id) == (ACTOR, run.pk, SITE)


@pytest.mark.django_db
def test_with_a_leader_it_is_dispatched_and_seeds_are_named_by_id_or_name(seeds, register):
    leader = register(SITE, "promsnmp-chi-1")
    lines = run_discovery(SITE, "Edge", seeds["core"])
    run = DiscoveryRun.objects.get()
    assert run.seed_ids == [seeds["edge"], seeds["core"]]  # in the order given
    assert lines == [
        f"{run.pk}: started on site {SITE} (seeds {seeds['edge']}, {seeds['core']}; 533 targets estimated)",
        f"{run.pk}: dispatched to promsnmp-chi-1 ({leader})",
    ]
    sent = OutboxMessage.objects.get(group=f"instance.{leader}", body__type="run_discovery")
    assert sent.body["payload"] == {"runId": run.pk, "seedIds": run.seed_ids, "triggeredBy": "manual"}


@pytest.mark.django_db
def test_refusals_are_the_services_and_change_nothing(seeds, make_site):
    assert refused("atlantis") == "No site 'atlantis'."
    assert refused(SITE, "Core Network", "nope") == f"No discovery seed 'nope' in site {SITE!r}."
    run_discovery(SITE, "Core Network")
    active = DiscoveryRun.objects.get()
    assert refused(SITE) == (
        f"Discovery seed {seeds['core']!r} is already in run {active.pk!r} (pending); run it again when "
        "that run has ended."
    )
    DiscoverySeed.objects.filter(pk=seeds["edge"]).update(enabled=False)
    assert refused(SITE, "Edge") == f"Discovery seed {seeds['edge']!r} is disabled; enable it first."
    make_site("no-seeds")
    assert refused("no-seeds") == "Site 'no-seeds' has no enabled discovery seed."
    assert (
        refused(SITE, *[f"seed-{i}" for i in range(1001)])
        == "Invalid input.\n  seedIds: At most 1000 seeds per run."
    )
    Site.objects.filter(pk=SITE).update(discovery_enabled=False)
    assert refused(SITE, "Edge") == f"Discovery is disabled for site {SITE!r}."
    assert DiscoveryRun.objects.count() == 1
    assert refused(SITE, "--timeout", "5") == "--timeout goes with --wait."
    assert "a number of seconds above 0, not '0'" in refused(SITE, "--wait", "--timeout", "0")
    assert DiscoveryRun.objects.count() == 1


@pytest.mark.django_db
def test_wait_stops_at_its_timeout_with_exit_2_and_the_run_goes_on(seeds):
    out = StringIO()
    with pytest.raises(CommandError) as raised:
        call_command(
            "run_discovery", SITE, "--wait", "--timeout", "0.3", "--poll-interval", "0.05", stdout=out
        )
    run = DiscoveryRun.objects.get()
    assert raised.value.returncode == 2
    assert str(raised.value) == f"Stopped waiting after 0.3 s; run {run.pk} goes on (pending)."
    assert len(out.getvalue().splitlines()) == 2  # started, pending: nothing changed meanwhile
    assert run.status == RunStatus.PENDING


def end_run_soon(ending: str, leader: str) -> threading.Thread:
    """In another thread, as the leader's socket or an operator would: report progress on the run the
    command started, then fail it (or cancel it)."""

    def act():
        try:
            deadline = time.monotonic() + 10
            while (run := DiscoveryRun.objects.first()) is None and time.monotonic() < deadline:
                time.sleep(0.02)
            runs.run_progress(instance_id=leader, run_id=run.pk, targets_scanned=3, devices_found=1)
            if ending == "failed":
                runs.run_complete(
                    instance_id=leader,
                    run_id=run.pk,
                    status="failed",
                    counts={"targetsScanned": 7, "devicesFound": 2},
                    errors=4,
                    error_detail="SNMP timeout on 4 targets",
                )
            else:
                runs.run_cancel(actor=TEST_ACTOR, site_id=SITE, run_id=run.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=act)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("ending", "reason", "last"),
    [
        (
            "failed",
            "failed: SNMP timeout on 4 targets",
            "failed: 7/533 targets scanned, 2 devices found (0 new, 0 updated), 4 errors",
        ),
        (
            "cancelled",
            "cancelled: Cancelled while running.",
            "cancelled: 3/533 targets scanned, 1 devices found (0 new, 0 updated), 0 errors",
        ),
    ],
)
def test_wait_ends_with_exit_1_and_the_reason_when_the_run_does_not_complete(
    seeds, register, ending, reason, last
):
    leader = register(SITE, "promsnmp-chi-1")
    thread = end_run_soon(ending, leader)
    out = StringIO()
    try:
        with pytest.raises(CommandError) as raised:
            call_command(
                "run_discovery", SITE, "--wait", "--poll-interval", "0.05", "--timeout", "30", stdout=out
            )
    finally:
        thread.join()
    run = DiscoveryRun.objects.get()
    assert raised.value.returncode == 1
    assert str(raised.value) == f"Discovery run {run.pk} {reason}"
    lines = out.getvalue().splitlines()
    assert lines[1] == f"{run.pk}: dispatched to promsnmp-chi-1 ({leader})"
    assert lines[-1] == f"{run.pk}: {last}"


@pytest.mark.django_db
def test_starting_a_run_takes_as_many_queries_for_two_seeds_as_for_ten(make_site, admin_api, register):
    def queries(site: str, seed_count: int) -> int:
        make_site(site)
        register(site, f"{site}-leader")
        names = [f"seed {index}" for index in range(seed_count)]
        for name in names:
            create_seed(admin_api, {**EDGE, "name": name}, site=site)
        with CaptureQueriesContext(connection) as captured:
            run_discovery(site, *names)
        return len(captured)

    assert queries("two-seeds", 2) == queries("ten-seeds", 10)
