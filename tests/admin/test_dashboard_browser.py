"""The fleet dashboard in a real browser: headless Debian Chromium driven by Playwright against
`manage.py serve` (daphne, whitenoise serving the collected static files) on the test database. A staff
user made in the test logs in through the real login form. The admin's actions in a browser:
test_admin_operations_browser.py.

Playwright's sync API keeps an event loop running in this thread while a browser is open, and Django
refuses ORM calls from such a thread: each test writes its data first, then drives the browser, and
reads the database again only after the browser is closed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission
from django.utils import timezone

from instances.models import Instance
from instances.services import instance_heartbeat, instance_register
from inventory.services import inventory_add_devices
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import ROOT, serve
from tests.inventory.test_inventory_api import device

pytestmark = pytest.mark.django_db(transaction=True)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "a-long-operator-password-1"
CHICAGO, NYC, EMPTY = "chicago-pop-01", "nyc-dc-01", "0-empty_site"
OFFLINE_RED = "rgb(185, 28, 28)"  # .fleet-status-offline in static/fleet/dashboard.css
TIMEOUT_MS = 10_000


def require_browser() -> None:
    """Fail (never skip): the admin UI is part of what the suite checks."""
    problems = []
    if not CHROMIUM.exists():
        problems.append(f"{CHROMIUM} is missing: run `make system-packages` (Debian package chromium).")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        problems.append("The playwright package is missing: run `make install` (the test extra).")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker):
    """One daphne for the module (no beat: nothing moves leaders behind the tests' back), with the
    static files collected into its own VAR_DIR, as `make run` does."""
    require_browser()
    with tempfile.TemporaryDirectory(prefix="dashboard-browser-") as var_dir:
        env = {"VAR_DIR": var_dir}
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
        )
        with serve(env=env, args=["--no-beat"]) as (base_url, _process):
            yield base_url


@contextmanager
def browser_page(base_url: str):
    """A fresh headless Chromium page; yields (page, problems): console errors, page errors and failed
    requests seen while it was open."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(base_url=base_url)
            page.set_default_timeout(TIMEOUT_MS)
            problems: list[str] = []
            page.on(
                "console", lambda m: m.type == "error" and problems.append(f"console: {m.text} {m.location}")
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"{r.status} {r.url}"))
            yield page, problems
        finally:
            browser.close()


def log_in(page, path: str) -> None:
    """Open `path`, get sent to the admin's login form, fill it in and land on `path`."""
    page.goto(path)
    assert "/admin/login/" in page.url
    page.fill("#id_username", "operator")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url(f"**{path}")


def make_operator(django_user_model, *permissions: str) -> None:
    """A staff user (not a superuser) with just the permissions the page and action need."""
    user = django_user_model.objects.create_user("operator", password=PASSWORD, is_staff=True)
    for permission in permissions:
        app_label, codename = permission.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )


def up(site_id: str, hostname: str) -> str:
    instance, _ = instance_register(actor=TEST_ACTOR, site_id=site_id, hostname=hostname)
    instance_heartbeat(actor=TEST_ACTOR, instance_id=instance.id, status="healthy")
    return instance.id


def test_an_operator_reads_the_fleet_on_the_dashboard(server, django_user_model):
    for site_id in (CHICAGO, NYC, EMPTY):
        site_create(actor=TEST_ACTOR, site_id=site_id, values={"label": site_id.title()})
    up(CHICAGO, "chi-a")
    up(CHICAGO, "chi-b")
    up(NYC, "nyc-a")
    late = up(NYC, "nyc-b")
    Instance.objects.filter(pk=late).update(last_heartbeat=timezone.now() - timedelta(minutes=10))
    inventory_add_devices(
        actor=TEST_ACTOR,
        site_id=CHICAGO,
        items=[device("core-1", "127.0.0.1"), device("core-2", "127.0.0.2")],
        source="manual",
    )
    make_operator(django_user_model, "sites.view_site", "instances.view_instance")

    with browser_page(server) as (page, problems):
        log_in(page, "/admin/")
        page.click("#fleet-dashboard-link")  # the way in from the admin index
        page.wait_for_url("**/admin/fleet/")
        assert page.locator("#fleet-status").inner_text().lower() == "degraded"
        assert page.locator("#summary-sites-healthy").inner_text() == "1 healthy"
        assert page.locator("#summary-sites-degraded").inner_text() == "1 degraded"
        assert page.locator("#summary-sites-offline").inner_text() == "1 offline"
        assert " ".join(page.locator("#summary-instances").inner_text().split()) == "3 / 4 INSTANCES HEALTHY"
        assert page.locator("#summary-devices .fleet-number").inner_text() == "2"
        assert page.locator("#fleet-updated-at").inner_text().endswith(" UTC")

        offline_badge = page.locator(f'#fleet-sites tr[data-site="{EMPTY}"] .fleet-badge')
        assert offline_badge.inner_text().lower() == "offline"
        assert offline_badge.evaluate("e => getComputedStyle(e).backgroundColor") == OFFLINE_RED
        degraded_row = page.locator(f'#fleet-sites tr[data-site="{NYC}"]')
        assert degraded_row.locator(".fleet-badge").inner_text().lower() == "degraded"

        alert = page.locator('#fleet-alerts tr[data-type="instance_offline"]')
        assert alert.count() == 1
        assert alert.locator("td").nth(3).inner_text() == late
        assert f"Instance {late} of site {NYC} missed its heartbeats" in alert.inner_text()
        assert page.locator('#fleet-alerts tr[data-type="site_offline"] td').nth(2).inner_text() == EMPTY

        page.click(f'#fleet-sites tr[data-site="{EMPTY}"] a.fleet-site-link')
        page.wait_for_url(f"**/admin/sites/site/{quote(EMPTY)}/change/")
        assert page.locator(".field-id .readonly").inner_text() == EMPTY
        assert problems == []
