"""Discovery runs in the admin in a real browser (issue 11, section 3): headless Chromium driven by
Playwright against `manage.py serve` (one daphne for the module, tests/admin/test_dashboard_browser.py's).

An operator starts discovery from a site's page and from selected seeds, watches a run's page follow the
run while its leader reports progress, cancels a run from its page, and reaches a site's runs from the
fleet dashboard; staff without the permission see no action and no button.

Playwright's sync API runs an event loop in the test's thread while a browser is open, and Django
refuses ORM calls there: the leader's reports made while the page is open (discovery.runs' services,
as the socket frames call them) run in another thread (`elsewhere`).
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from core.models import AuditLog
from discovery import runs
from discovery.models import DiscoveryRun, RunStatus
from tests.admin.test_dashboard_browser import TIMEOUT_MS, browser_page, log_in, make_operator, up
from tests.admin.test_dashboard_browser import server as server  # the module's daphne (a fixture)
from tests.conftest import TEST_ACTOR
from tests.discovery.test_runs_admin import CHICAGO, NYC, make_seed

pytestmark = pytest.mark.django_db(transaction=True)

VIEW = ("sites.view_site", "inventory.view_discoveryseed", "discovery.view_discoveryrun")
OPERATE = (*VIEW, "discovery.change_discoveryrun")
RUN_PAGE = re.compile(r"/admin/discovery/discoveryrun/run_[^/]+/change/")  # maybe with the list's filters


def elsewhere(work):
    """Run ORM work in another thread (closing its connection), while the browser is open."""

    def closing():
        try:
            return work()
        finally:
            connection.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(closing).result(timeout=60)


def expect_text(page, selector: str, text: str) -> None:
    """Wait until the element reads `text` (the run's page changes by itself)."""
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=TIMEOUT_MS)


def field(name: str) -> str:
    return f".field-{name} .readonly"


def shown(page, name: str) -> str:
    """What the run's page shows in a field."""
    return page.locator(field(name)).inner_text().strip()


def without_left_polls(problems: list[str]) -> list[str]:
    """A progress request in flight when the page is left is aborted by the browser: not a problem."""
    return [p for p in problems if not (p.startswith("request failed: ") and p.endswith("/progress/"))]


def test_an_operator_starts_follows_and_cancels_discovery_runs(server, make_site, django_user_model):
    for site_id in (CHICAGO, NYC):
        make_site(site_id)
    leader = up(CHICAGO, "chi-a")
    up(NYC, "nyc-a")
    core = make_seed(CHICAGO, "Core", ["127.0.0.0/24"])
    edge = make_seed(CHICAGO, "Edge", ["127.0.1.1-127.0.1.8"])
    nyc = make_seed(NYC, "NYC", ["127.0.3.0/30"])
    make_operator(django_user_model, *OPERATE)

    with browser_page(server) as (page, problems):
        # From the site's page: the button starts a run of every enabled seed, and leads to it.
        log_in(page, f"/admin/sites/site/{CHICAGO}/change/")
        page.click("#run-discovery")
        page.wait_for_url(RUN_PAGE)
        first = shown(page, "id")
        message = page.locator(".messagelist .success").inner_text()
        assert message == (
            f"Discovery run {first} on {CHICAGO} (2 seed(s), 264 addresses) sent to leader chi-a ({leader})."
        )
        assert shown(page, "status") == "Dispatched"
        assert shown(page, "progress") == "0 / 264 addresses (0 %)"
        assert page.locator("#run-live").get_attribute("data-active") == "true"
        assert page.locator("#run-cancel").is_visible()

        # The leader reports: the page follows without being reloaded.
        elsewhere(
            lambda: runs.run_progress(instance_id=leader, run_id=first, targets_scanned=66, devices_found=2)
        )
        expect_text(page, field("progress"), "66 / 264 addresses (25 %)")
        assert shown(page, "status") == "Running"
        assert page.locator(f"{field('progress')} progress").get_attribute("value") == "25"
        assert shown(page, "devices_found") == "2"
        assert shown(page, "dispatched_to_host") == "chi-a"
        counts = {"targetsScanned": 264, "devicesFound": 3, "devicesNew": 2, "devicesUpdated": 1}
        elsewhere(
            lambda: runs.run_complete(
                instance_id=leader,
                run_id=first,
                status="completed",
                counts=counts,
                errors=1,
                error_detail="1 <lost>",
            )
        )
        expect_text(page, "#run-live", "This run has ended (completed).")
        assert shown(page, "status") == "Completed"
        assert shown(page, "progress") == "264 / 264 addresses (100 %)"
        assert [shown(page, name) for name in ("devices_new", "devices_updated", "errors")] == [
            "2",
            "1",
            "1",
        ]
        assert shown(page, "error_detail") == "1 <lost>"  # text, never markup
        assert page.locator("#run-cancel").count() == 0  # ended: nothing to cancel

        # From seeds: one run per site, each message links to its run.
        page.goto("/admin/inventory/discoveryseed/")
        for seed_id in (core, edge, nyc):
            page.check(f'input[name="_selected_action"][value="{seed_id}"]')
        page.select_option('select[name="action"]', "run_seeds_now")
        page.click('button[name="index"]')
        started = page.locator(".messagelist .success")
        started.first.wait_for()
        assert started.count() == 2
        assert "(2 seed(s), 264 addresses) sent to leader" in started.nth(0).inner_text()
        assert started.nth(1).inner_text().startswith("Discovery run run_")
        assert f" on {NYC} (1 seed(s), 4 addresses) sent to leader nyc-a " in started.nth(1).inner_text()

        # Cancel from the run's page.
        started.nth(1).locator("a").click()
        page.wait_for_url(RUN_PAGE)
        cancelled = shown(page, "id")
        assert shown(page, "status") == "Dispatched"
        page.click("#run-cancel")
        page.locator(".messagelist .success").wait_for()
        assert page.locator(".messagelist .success").inner_text() == f"Cancelled {cancelled}."
        assert shown(page, "status") == "Cancelled"
        assert page.locator("#run-cancel").count() == 0
        assert page.locator("#run-live").get_attribute("data-active") == "false"

        # The dashboard's link: the runs list, filtered to the site, with each run's progress.
        page.goto("/admin/fleet/")
        page.click(f'#fleet-sites tr[data-site="{CHICAGO}"] a:text-is("discovery runs")')
        page.wait_for_url(f"**/admin/discovery/discoveryrun/?site__id__exact={CHICAGO}")
        rows = page.locator("#result_list tbody tr")
        assert rows.count() == 2
        assert rows.nth(1).locator(".field-progress").inner_text().strip() == "264 / 264 addresses (100 %)"
        assert rows.nth(0).locator(".field-progress").inner_text().strip() == "0 / 264 addresses (0 %)"
        assert without_left_polls(problems) == []

    assert DiscoveryRun.objects.get(pk=first).status == RunStatus.COMPLETED
    assert DiscoveryRun.objects.get(pk=cancelled).status == RunStatus.CANCELLED
    started = AuditLog.objects.filter(action="discovery_run_started").order_by("id")
    assert [(row.site_id, row.actor) for row in started] == [
        (CHICAGO, "user:operator"),
        (CHICAGO, "user:operator"),
        (NYC, "user:operator"),
    ]
    [row] = AuditLog.objects.filter(action="discovery_run_cancelled")
    assert (row.entity_id, row.actor) == (cancelled, "user:operator")


def test_staff_without_the_permission_see_no_action_and_no_button(server, make_site, django_user_model):
    make_site(CHICAGO)
    up(CHICAGO, "chi-a")
    make_seed(CHICAGO, "Core", ["127.0.0.0/24"])
    run = runs.run_start(actor=TEST_ACTOR, site_id=CHICAGO, seed_ids=None, triggered_by=runs.MANUAL)
    make_operator(django_user_model, *VIEW)

    def actions(page) -> list[str]:
        return page.locator('select[name="action"] option').evaluate_all(
            "options => options.map(o => o.value)"
        )

    with browser_page(server) as (page, problems):
        log_in(page, f"/admin/sites/site/{CHICAGO}/change/")
        assert page.locator("#run-discovery").count() == 0
        page.click("#site-discovery-runs")  # viewing runs is allowed
        page.wait_for_url(f"**/admin/discovery/discoveryrun/?site__id__exact={CHICAGO}")
        assert "cancel_runs" not in actions(page)
        page.click(f'#result_list a:text-is("{run.pk}")')
        page.wait_for_url(RUN_PAGE)
        assert page.locator("#run-cancel").count() == 0
        assert page.locator("#run-live").get_attribute("data-active") == "true"  # followed all the same
        for changelist, action in (
            ("/admin/sites/site/", "run_discovery_now"),
            ("/admin/inventory/discoveryseed/", "run_seeds_now"),
        ):
            page.goto(changelist)
            assert action not in actions(page)
        assert without_left_polls(problems) == []
    assert DiscoveryRun.objects.get(pk=run.pk).status == RunStatus.DISPATCHED
