"""The admin's operator pages and actions in a real browser (issue 11 §3): headless Debian Chromium driven
by Playwright against `manage.py serve` on the test database, as tests/admin/test_dashboard_browser.py.

One server and one browser for the module. Playwright's sync API keeps an event loop running in the
thread that drives it, and Django refuses ORM calls from such a thread; so the browser lives in a thread
of its own (BrowserThread) and each test hands it one function that drives a page, while the test's own
thread writes the data before and reads the database after, as any test does. Each test opens its own
browser context (its own cookies) and logs in through the real form. No test saves an admin form
through the server: the history row it writes needs content type ids, which the long-lived server
caches and each test's flush renumbers.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.utils import timezone
from django.utils.text import capfirst

from core.models import ApiToken, AuditLog
from core.services import token_create
from instances.models import Instance
from instances.services import instance_enroll, instance_heartbeat
from inventory.services import inventory_add_devices
from sites.models import Site
from sites.services import site_create
from tests.admin.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, TIMEOUT_MS
from tests.admin.test_dashboard_browser import server as server  # the module's daphne (a fixture)
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import device

pytestmark = pytest.mark.django_db(transaction=True)

PRODUCT = "PromSNMP Cloud Manager"
CHICAGO, NYC, ELECT = "chicago-pop-01", "nyc-dc-01", "elect-site"
OPERATOR = (
    "sites.view_site",
    "sites.change_site",
    "instances.view_instance",
    "core.view_apitoken",
    "core.add_apitoken",
    "core.change_apitoken",
)
VIEWER = ("sites.view_site", "instances.view_instance", "core.view_apitoken")


def superseded(request) -> bool:
    """An autocomplete query the page dropped because the operator typed on: the browser reports it as
    failed (aborted), and it is no problem."""
    return "/admin/autocomplete/" in request.url and request.failure == "net::ERR_ABORTED"


class BrowserThread:
    """One headless Chromium in a thread of its own; run(fn) calls fn(browser) there and returns its
    result, or raises what it raised (a failed assertion fails the test with its own traceback)."""

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._ready: Future = Future()
        self._thread = threading.Thread(target=self._serve, name="browser", daemon=True)
        self._thread.start()
        self._ready.result(timeout=60)

    def _serve(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                self._ready.set_result(None)
                while (job := self._jobs.get()) is not None:
                    fn, future = job
                    try:
                        future.set_result(fn(browser))
                    except BaseException as exc:  # handed to the test's thread
                        future.set_exception(exc)
                browser.close()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            raise

    def run(self, fn: Callable[[Any], Any]) -> Any:
        future: Future = Future()
        self._jobs.put((fn, future))
        return future.result(timeout=120)

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=60)


@pytest.fixture(scope="module")
def browser(server):
    runner = BrowserThread()
    yield runner
    runner.close()


@pytest.fixture
def users(django_user_model):
    """A staff "operator" with what the pages and actions need, and a staff "viewer" who may only look."""
    for name, permissions in (("operator", OPERATOR), ("viewer", VIEWER)):
        user = django_user_model.objects.create_user(name, password=PASSWORD, is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )


def up(site_id: str, hostname: str, **versions) -> tuple[str, str]:
    """Enrolled (with a token of its own) and heartbeating: (instance id, its token)."""
    enrollment = instance_enroll(actor=TEST_ACTOR, site_id=site_id, hostname=hostname)
    instance_heartbeat(actor=TEST_ACTOR, instance_id=enrollment.instance.id, status="healthy", **versions)
    return enrollment.instance.id, enrollment.instance_token


def sites(*site_ids: str) -> None:
    for site_id in site_ids:
        site_create(actor=TEST_ACTOR, site_id=site_id, values={"label": site_id.title()})


@contextmanager
def logged_in(browser, server: str, username: str, path: str):
    """A fresh context logged in as `username` through the login form, on `path`; yields (page,
    problems): console errors, page errors, failed requests and 4xx/5xx answers seen meanwhile."""
    context = browser.new_context(base_url=server)
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        problems: list[str] = []
        page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text} {m.location}"))
        page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
        page.on("requestfailed", lambda r: superseded(r) or problems.append(f"request failed: {r.url}"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
        page.goto(path)
        assert "/admin/login/" in page.url
        assert page.title() == f"Log in | {PRODUCT}"  # the login page says what it is too
        assert page.locator("#site-name").inner_text() == PRODUCT
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"**{path}")
        yield page, problems
    finally:
        context.close()


def instance_path(instance_id: str) -> str:
    return f"/admin/instances/instance/{quote(instance_id)}/change/"


def test_the_admin_says_what_it_is_and_keeps_the_beat_tables_away(browser, server, users):
    def drive(chromium) -> None:
        with logged_in(chromium, server, "operator", "/admin/") as (page, problems):
            assert page.title() == f"Fleet administration | {PRODUCT}"
            assert page.locator("#site-name").inner_text() == PRODUCT
            assert page.locator("h1").inner_text() == "Fleet administration"
            content = page.locator("#content-main").inner_text()
            assert "Sites" in content and "Periodic tasks" not in content and "Crontabs" not in content
            assert page.locator("#user-tools a", has_text="View site").count() == 0
            assert problems == []

    browser.run(drive)


def test_force_election_choosing_the_new_leader(browser, server, users):
    sites(ELECT)
    # elect-a registers first (the leader), elect-b heartbeats last (the healthiest follower).
    leader, chosen, offline, healthiest = (up(ELECT, f"elect-{x}")[0] for x in "acdb")
    Instance.objects.filter(pk=offline).update(last_heartbeat=timezone.now() - timedelta(minutes=10))

    def drive(chromium) -> None:
        with logged_in(chromium, server, "operator", "/admin/sites/site/") as (page, problems):
            row = page.locator("#result_list tr", has=page.locator(f'input[value="{ELECT}"]'))
            assert row.locator("td.field-leader").inner_text() == "elect-a"  # by hostname, id on hover
            assert row.locator("td.field-leader a").get_attribute("title") == leader
            page.check(f'input[name="_selected_action"][value="{ELECT}"]')
            page.select_option('select[name="action"]', "force_election")
            page.click('button[name="index"]')

            page.wait_for_selector("#force-election-form")  # between the action and the election
            assert page.locator(".election-leader").inner_text() == "elect-a (healthy)"
            assert page.is_checked("#leader-healthiest")
            assert page.locator(".election-default").inner_text().endswith("(now: elect-b)")
            offered = page.locator(".election-candidate").evaluate_all(
                "rows => rows.map(r => r.dataset.instance)"
            )
            assert offered == [healthiest, chosen]  # elect-d, offline, is not offered
            assert "1 other instance not fit to lead" in page.locator("#content-main").inner_text()
            page.check(f'input[name="leader"][value="{chosen}"]')
            page.click("#confirm-election")

            message = page.locator(".messagelist .success")
            message.wait_for()
            assert message.inner_text() == capfirst(f"{ELECT}: leader {leader} → {chosen} (leaderTerm 2).")
            cell = page.locator("#result_list tr", has=page.locator(f'input[value="{ELECT}"]'))
            link = cell.locator("td.field-leader a")
            assert (link.inner_text(), link.get_attribute("title")) == ("elect-c", chosen)

            page.goto(f"/admin/sites/site/{ELECT}/change/")  # the site's page names its leader the same way
            link = page.locator(".field-leader .readonly a")
            assert (link.inner_text(), link.get_attribute("title")) == ("elect-c", chosen)
            link.click()
            page.wait_for_url(f"**{instance_path(chosen)}")
            assert problems == []

    browser.run(drive)
    assert Instance.objects.get(site_id=ELECT, is_leader=True).pk == chosen
    assert Site.objects.get(pk=ELECT).leader_term == 2
    row = AuditLog.objects.filter(action="leader_assigned").latest("id")
    assert (row.actor, row.details["reason"]) == ("user:operator", "manual_assignment")


def test_an_instance_token_is_revoked_from_the_instance_page(browser, server, users):
    sites(CHICAGO)
    instance_id, plaintext = up(CHICAGO, "chi-a")
    heartbeat = f"{server}/api/v1/instances/{instance_id}/heartbeat"
    auth = {"Authorization": f"Bearer {plaintext}"}
    assert requests.post(heartbeat, json={"status": "healthy"}, headers=auth, timeout=10).status_code == 200

    def drive(chromium) -> None:
        with logged_in(chromium, server, "operator", instance_path(instance_id)) as (page, problems):
            page.click(".field-tokens a.instance-token")
            page.wait_for_url("**/admin/core/apitoken/*/change/")
            assert page.locator(".field-instance_id .readonly").inner_text() == instance_id
            assert page.locator(".field-revoked_at .readonly").inner_text() == "-"
            page.click("#revoke-token")

            page.wait_for_selector("#revoke-form")
            assert "the instance has to register again" in page.locator("#content-main").inner_text()
            page.click("#confirm-revoke")
            message = page.locator(".messagelist .success")
            message.wait_for()
            assert message.inner_text().startswith(f"Revoked instance {instance_id} (chi-a)")
            assert page.locator(".field-revoked_at .readonly").inner_text() != "-"
            assert page.locator("#revoke-token").count() == 0  # nothing left to revoke
            assert problems == []

    browser.run(drive)
    assert requests.post(heartbeat, json={"status": "healthy"}, headers=auth, timeout=10).status_code == 401
    token = ApiToken.objects.get(instance_id=instance_id)
    assert token.revoked_at is not None
    row = AuditLog.objects.get(action="token_revoked")
    assert (row.actor, row.entity_id) == ("user:operator", token.pk)


def test_drift_on_the_dashboard_and_in_the_instance_list(browser, server, users):
    sites(CHICAGO, NYC)
    inventory_add_devices(actor=TEST_ACTOR, site_id=CHICAGO, items=[device("core-1")], source="manual")
    leader, _ = up(CHICAGO, "chi-a", inventory_version=2)
    drifting, _ = up(CHICAGO, "chi-b", inventory_version=1)  # the site is at 2
    up(NYC, "nyc-a")

    def drive(chromium) -> None:
        with logged_in(chromium, server, "operator", "/admin/fleet/?refresh=0") as (page, problems):
            assert page.locator("#summary-drift .fleet-number").inner_text() == "1"
            row = page.locator(f'#fleet-drift tr[data-instance="{drifting}"]')
            link = row.locator("a.fleet-instance")
            assert (link.inner_text(), link.get_attribute("title")) == ("chi-b", drifting)
            assert row.locator("td").nth(4).inner_text() == "1 behind (site: 2)"
            badge = page.locator(f'#fleet-sites tr[data-site="{CHICAGO}"] .fleet-drift')
            assert badge.inner_text().lower() == "1 behind"
            assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(124, 58, 237)"
            link = page.locator(f'#fleet-sites tr[data-site="{CHICAGO}"] a.fleet-leader')
            assert (link.inner_text(), link.get_attribute("title")) == ("chi-a", leader)

            page.goto("/admin/instances/instance/")
            page.click('#changelist-filter a[href="?drift=yes"]')
            page.wait_for_url("**/admin/instances/instance/?drift=yes")
            rows = page.locator("#result_list tbody tr")
            assert rows.count() == 1
            assert rows.locator("td.field-drift").inner_text() == "inventory 1 behind"
            assert problems == []

    browser.run(drive)


def test_sites_are_found_by_typing_in_filters_and_selects(browser, server, users):
    sites(CHICAGO, NYC)
    up(CHICAGO, "chi-a")
    up(NYC, "nyc-a")
    options = "#filter-site__id__exact-options option"

    def drive(chromium) -> None:
        with logged_in(chromium, server, "operator", "/admin/instances/instance/") as (page, problems):
            field = page.locator("#filter-site__id__exact")
            field.fill("nyc")  # suggestions from the admin's autocomplete view
            page.wait_for_function(
                f"() => [...document.querySelectorAll('{options}')].map(o => o.value).join() === '{NYC}'"
            )
            assert page.locator(options).get_attribute("label") == f"{NYC.title()} ({NYC})"
            field.fill(NYC)
            field.press("Enter")
            page.wait_for_url(f"**/admin/instances/instance/?site__id__exact={NYC}")
            assert page.locator("#result_list td.field-hostname").all_inner_texts() == ["nyc-a"]

            # Picking a suggestion submits the filter, keeping the others (drift=no).
            page.goto("/admin/instances/instance/?drift=no")
            page.locator("#filter-site__id__exact").fill("chic")
            page.wait_for_function(f"() => document.querySelector('{options}')")
            page.locator("#filter-site__id__exact").evaluate(
                f"input => {{ input.value = '{CHICAGO}'; input.dispatchEvent(new Event('input')); }}"
            )  # what Chromium does when an option of the list is picked: an input event, no inputType
            page.wait_for_url(re.compile(rf".*\?drift=no&site__id__exact={CHICAGO}$"))
            assert page.locator("#result_list td.field-hostname").all_inner_texts() == ["chi-a"]
            page.click(".autocomplete-filter-clear")
            page.wait_for_url("**/admin/instances/instance/?drift=no")

            # The token form's site is a select2 fed by the same view. (Not saved: the admin's history row
            # needs content type ids, which the server caches and each test's flush renumbers; saving is
            # test_admin_operations.py's.)
            page.goto("/admin/core/apitoken/add/")
            page.click(".field-site .select2-selection")
            page.fill(".select2-search__field", "nyc")
            page.locator(".select2-results__option", has_text=f"{NYC.title()} ({NYC})").click()
            assert page.locator("#id_site").input_value() == NYC
            values = page.locator("#id_site option").evaluate_all("options => options.map(o => o.value)")
            assert values == ["", NYC]  # "no site" and the one picked, never every site
            assert problems == []

    browser.run(drive)


def test_staff_without_the_permission_see_no_action_or_button(browser, server, users):
    sites(ELECT)
    up(ELECT, "elect-a")
    up(ELECT, "elect-b")
    token, _ = token_create(actor=TEST_ACTOR, name="grafana", scopes=["read"], site_id=ELECT)

    def drive(chromium) -> None:
        with logged_in(chromium, server, "viewer", "/admin/sites/site/") as (page, problems):
            assert page.locator("#result_list td.field-leader").inner_text() == "elect-a"
            assert page.locator('select[name="action"] option[value="force_election"]').count() == 0
            assert page.locator('input[name="_selected_action"]').count() == 0  # no action: no checkboxes
            page.goto(f"/admin/core/apitoken/{quote(token.pk)}/change/")
            assert page.locator(".field-name .readonly").inner_text() == "grafana"
            assert page.locator("#revoke-token").count() == 0
            page.goto("/admin/core/apitoken/")
            assert page.locator('select[name="action"]').count() == 0  # no "Revoke selected tokens"
            assert problems == []

    browser.run(drive)
