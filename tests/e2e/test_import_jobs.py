"""Import jobs end to end: a real Celery worker (a process of its own, `--pool solo`) takes them from the
Redis broker, while `manage.py serve` in the production shape (REDIS_URL: nothing runs eagerly) answers
the API and the admin. One server and one worker for the module, with key prefixes and a queue of its
own on the tests' Redis database.

1. The API: PUT inventory with `Prefer: respond-async` → 202 and Location; the job, polled there,
   moves forward and ends with the synchronous PUT's answer, as one change set.
2. The admin in headless Chromium (as tests/admin/test_dashboard_browser.py: the browser runs after the
   data is written, the database is read again after it closed): a wrong key is a form error; the
   encrypted fixture file with its key gives a dry run's preview, "Apply" a progress bar that reaches
   100 % and a link to the site's devices.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

from core.models import AuditLog
from core.services import token_create
from inventory.jobs import PHASES
from inventory.models import Device, DiscoverySeed, ImportJob, InventoryChange
from sites.models import Site
from sites.services import site_create
from tests.admin.test_dashboard_browser import browser_page, log_in, make_operator, require_browser
from tests.conftest import TEST_ACTOR, TEST_REDIS_URL
from tests.e2e.servers import ROOT, celery_worker, delete_redis_keys, serve
from tests.inventory.test_inventory_api import many
from tests.inventory.test_promsnmp import FIXTURE_KEY, FIXTURES, WITH_KEY

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "import-jobs-e2e"
JOB_SECONDS = 120  # a generous bound for a job on a busy 2-core machine; never a timing assertion


@pytest.fixture(scope="module")
def stack(django_db_setup, django_db_blocker):
    """(base URL, worker process): daphne and a Celery worker sharing a Redis broker and queue."""
    require_browser()
    run = uuid.uuid4().hex[:12]
    prefixes = {
        "CELERY_QUEUE": f"psm-import-test-{run}",
        "CHANNEL_LAYER_PREFIX": f"psm-import-ws-{run}",
        "THROTTLE_CACHE_PREFIX": f"psm-import-throttle-{run}",
    }
    try:
        with tempfile.TemporaryDirectory(prefix="import-jobs-") as var_dir:
            env = {"REDIS_URL": TEST_REDIS_URL, "VAR_DIR": var_dir, **prefixes}
            subprocess.run(
                [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
                cwd=ROOT,
                env={**os.environ, **env},
                check=True,
            )
            with celery_worker(env) as worker, serve(env=env, args=["--no-beat"]) as (base_url, _server):
                yield base_url, worker
    finally:
        for prefix in prefixes.values():
            delete_redis_keys(TEST_REDIS_URL, f"{prefix}*")


def wait_for_job(url: str, headers: dict, worker) -> list[dict]:
    """Poll the job until it has ended; every answer seen."""
    seen: list[dict] = []
    deadline = time.monotonic() + JOB_SECONDS
    while time.monotonic() < deadline:
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 200, response.text
        seen.append(response.json())
        if seen[-1]["status"] in ("succeeded", "failed"):
            return seen
        time.sleep(0.05)
    raise AssertionError(
        f"job not done in {JOB_SECONDS} s: {seen[-1]}\n{worker.log_path.read_text()[-4000:]}"
    )


def test_a_large_put_is_a_job_that_a_worker_runs_with_progress(stack):
    base_url, worker = stack
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Import jobs"})
    _, token = token_create(actor=TEST_ACTOR, name="bulk importer", scopes=["write"])
    headers = {"Authorization": f"Bearer {token}"}
    version = Site.objects.get(pk=SITE).inventory_version

    response = requests.put(
        f"{base_url}/api/v1/sites/{SITE}/inventory",
        json={"devices": many(3000), "mode": "merge"},
        headers={**headers, "Prefer": "respond-async"},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    assert response.headers["Preference-Applied"] == "respond-async"
    location = response.headers["Location"]
    assert location == f"/api/v1/sites/{SITE}/inventory/import-jobs/{response.json()['id']}"

    seen = wait_for_job(f"{base_url}{location}", headers, worker)
    final = seen[-1]
    assert final["status"] == "succeeded", final
    assert final["result"] == {
        "version": version + 1,
        "changed": True,
        "added": 3000,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "seeds": {"added": 0, "updated": 0, "removed": 0},
    }
    # The bar only moves forward, through the phases in order, and ends full.
    percents = [job["progress"]["percent"] for job in seen]
    assert percents == sorted(percents) and percents[-1] == 100
    phases = [PHASES.index(job["progress"]["phase"]) for job in seen]
    assert phases == sorted(phases)
    print(f"progress seen while polling: {sorted(set(percents))}")  # how far the polls caught it

    # One change set, in the token's name (made by the worker: the server runs no task itself).
    assert Device.objects.filter(site_id=SITE).count() == 3000
    assert list(InventoryChange.objects.filter(site_id=SITE).values_list("version", "change_type")) == [
        (version + 1, "bulk_import")
    ]
    audit = AuditLog.objects.get(action="inventory_changed", site_id=SITE)
    assert audit.actor == "token:bulk importer" and audit.details["added"] == 3000


def test_an_operator_uploads_an_encrypted_file_previews_and_applies_it(stack, django_user_model):
    base_url, _worker = stack
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Import jobs"})
    make_operator(django_user_model, "sites.view_site", "inventory.change_device")
    version = Site.objects.get(pk=SITE).inventory_version
    file = str(FIXTURES / WITH_KEY)
    wait_ms = JOB_SECONDS * 1000

    with browser_page(base_url) as (page, problems):
        log_in(page, f"/admin/sites/site/{SITE}/change/")
        page.click("#import-inventory-link")
        page.wait_for_url(f"**/admin/sites/site/{SITE}/import-inventory/")

        page.set_input_files("#id_file", file)
        page.fill("#id_key", "not-the-key-0016")
        page.click("#import-check")
        page.locator(".errornote").wait_for()
        assert "does not decrypt with this key" in page.locator(".field-key .errorlist").inner_text()

        page.set_input_files("#id_file", file)  # a refused form does not keep the file
        page.fill("#id_key", FIXTURE_KEY)
        page.click("#import-check")
        page.wait_for_url(f"**/admin/sites/site/{SITE}/import-jobs/imp_*/")
        page.locator("#import-preview").wait_for(timeout=wait_ms)  # the worker's dry run, then a reload
        assert page.locator("#preview-added").inner_text() == "3"
        assert page.locator("#sample-added li").all_inner_texts() == [
            "edge-rtr-01.chicago",
            "core-sw-02.chicago",
            "access-sw-15.chicago",
        ]
        assert page.locator("#import-progress").get_attribute("value") == "100"

        page.click("#import-apply")
        page.wait_for_url(f"**/admin/sites/site/{SITE}/import-jobs/imp_*/")
        page.locator("#import-devices-link").wait_for(timeout=wait_ms)  # the bar polled to the end
        assert page.locator("#import-status").inner_text() == "succeeded"
        assert page.locator("#import-progress").get_attribute("value") == "100"
        assert page.locator("#import-percent").inner_text() == "100%"
        assert f"Imported: inventory version {version + 1}" in page.locator("h2").first.inner_text()

        page.click("#import-devices-link")
        page.wait_for_url(f"**/admin/inventory/device/?site__id__exact={SITE}")
        assert page.locator("#result_list tbody tr").count() == 3
        assert problems == []

    preview, job = ImportJob.objects.order_by("created_at")
    assert (preview.dry_run, preview.encrypted, job.preview_id, job.status) == (
        True,
        True,
        preview.pk,
        "succeeded",
    )
    assert Device.objects.filter(site_id=SITE).count() == 3
    assert DiscoverySeed.objects.filter(site_id=SITE).count() == 2
    assert InventoryChange.objects.filter(site_id=SITE).count() == 1
    assert AuditLog.objects.get(action="inventory_changed", site_id=SITE).actor == "user:operator"
