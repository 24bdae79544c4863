"""The Site admin's "Upload PromSNMP inventory" (inventory/admin.py, SiteImportJobs), driven with Django's
test client as staff users with just the permissions it needs: the form, the dry run's page, "Apply", the
job's status view, and the import jobs list. The jobs run in-process here (Celery's eager mode after
commit); tests/e2e/test_import_jobs.py runs them in a real worker, in headless Chromium."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import DEFAULT_DB_ALIAS, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext

from core.models import AuditLog
from inventory.models import Device, DiscoverySeed, ImportJob, ImportPayload, InventoryChange
from inventory.services import inventory_import_document
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_inventory_api import device, many
from tests.inventory.test_promsnmp import FIXTURE_KEY, FIXTURES, PLAIN, WITH_DEFAULT_KEY, WITH_KEY

SITE = "chicago-pop-01"
SITE_PAGE = f"/admin/sites/site/{SITE}/change/"
UPLOAD = f"/admin/sites/site/{SITE}/import-inventory/"
IMPORTER = ("sites.view_site", "inventory.change_device")


def job_page(job_id: str, tail: str = "") -> str:
    return f"/admin/sites/site/{SITE}/import-jobs/{job_id}/{tail}"


@pytest.fixture
def staff(db, django_user_model):
    """staff("sites.view_site", …) → a logged-in client of a staff user with just these permissions."""

    def make(*permissions: str, name: str = "operator") -> Client:
        user = django_user_model.objects.create_user(name, password="unused-password-1", is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        client = Client()
        client.force_login(user)
        return client

    return make


def fixture_file(name: str = PLAIN) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, (FIXTURES / name).read_bytes(), content_type="application/octet-stream")


def upload(client: Client, capture, file: SimpleUploadedFile, key: str = "", mode: str = "merge"):
    with capture(execute=True):  # the job runs after commit (eager Celery, in-process)
        return client.post(UPLOAD, {"file": file, "key": key, "mode": mode, "format": ""})


def state() -> tuple:
    site = Site.objects.get(pk=SITE)
    return (
        site.inventory_version,
        Device.objects.filter(site_id=SITE).count(),
        DiscoverySeed.objects.filter(site_id=SITE).count(),
        InventoryChange.objects.filter(site_id=SITE).count(),
        AuditLog.objects.filter(action="inventory_changed").count(),
    )


def test_only_users_who_may_import_see_the_button_and_the_pages(staff, make_site):
    make_site(SITE)
    inventory_import_document(actor=TEST_ACTOR, site_id=SITE, document={"devices": [device("r-1")]})
    importer = staff(*IMPORTER)
    assert 'id="import-inventory-link"' in importer.get(SITE_PAGE).content.decode()
    assert importer.get(UPLOAD).status_code == 200

    viewer = staff("sites.view_site", "inventory.view_device", name="viewer")
    assert viewer.get(SITE_PAGE).status_code == 200
    assert "import-inventory-link" not in viewer.get(SITE_PAGE).content.decode()
    now = "2026-01-01T00:00Z"
    job = ImportJob.objects.create(
        id="imp_x",
        site_id=SITE,
        source="admin",
        mode="merge",
        format="manager",
        created_at=now,
        updated_at=now,
    )
    for url in (UPLOAD, job_page(job.pk), job_page(job.pk, "status/")):
        assert viewer.get(url).status_code == 403, url
    assert viewer.post(job_page(job.pk, "apply/")).status_code == 403
    assert viewer.post(UPLOAD, {"file": fixture_file(), "mode": "merge"}).status_code == 403
    # may import, but not see the site
    assert staff("inventory.change_device", name="blind").get(UPLOAD).status_code == 403
    assert ImportJob.objects.count() == 1


def test_upload_shows_a_dry_run_and_apply_imports_it(staff, make_site, django_capture_on_commit_callbacks):
    make_site(SITE)
    client = staff(*IMPORTER)
    before = state()
    response = upload(client, django_capture_on_commit_callbacks, fixture_file())
    assert response.status_code == 302, response.content.decode()[:2000]
    preview = ImportJob.objects.get()
    assert response["Location"] == job_page(preview.pk)
    assert (preview.dry_run, preview.status, preview.format, preview.encrypted) == (
        True, "succeeded", "promsnmp", False
    )  # fmt: skip
    assert preview.file_name == PLAIN and preview.requested_by == "user:operator"
    assert state() == before  # a dry run changes nothing

    page = client.get(job_page(preview.pk)).content.decode()
    assert "What would change" in page
    assert '<td id="preview-added">3</td>' in page and '<td id="preview-removed">0</td>' in page
    for name in ("edge-rtr-01.chicago", "core-sw-02.chicago", "access-sw-15.chicago"):
        assert f"<li>{name}</li>" in page
    assert 'id="import-apply"' in page and 'value="100"' in page

    with django_capture_on_commit_callbacks(execute=True):
        applied = client.post(job_page(preview.pk, "apply/"))
    job = ImportJob.objects.exclude(pk=preview.pk).get()
    assert applied.status_code == 302 and applied["Location"] == job_page(job.pk)
    assert (job.dry_run, job.status, job.preview_id) == (False, "succeeded", preview.pk)
    assert state() == (before[0] + 1, 3, 2, before[3] + 1, before[4] + 1)  # one change set
    assert AuditLog.objects.filter(action="inventory_changed").last().actor == "user:operator"
    page = client.get(job_page(job.pk)).content.decode()
    assert f"Imported: inventory version {before[0] + 1}" in page
    assert f'href="/admin/inventory/device/?site__id__exact={SITE}" id="import-devices-link"' in page
    assert "import_job.js" not in page  # finished: nothing to poll
    again = client.get(job_page(preview.pk)).content.decode()
    assert 'id="import-applied"' in again and 'id="import-apply"' not in again
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(job_page(preview.pk, "apply/"))["Location"] == job_page(job.pk)  # no second job
    assert ImportJob.objects.count() == 2 and state()[0] == before[0] + 1


def test_encrypted_files_with_the_right_key_the_default_key_and_a_wrong_one(
    staff, make_site, django_capture_on_commit_callbacks
):
    make_site(SITE)
    client = staff(*IMPORTER)
    before = state()

    wrong = upload(client, django_capture_on_commit_callbacks, fixture_file(WITH_KEY), key="wrong-key-000016")
    assert wrong.status_code == 200
    form = wrong.context["form"]
    assert "does not decrypt with this key" in " ".join(form.errors["key"])
    assert "errornote" in wrong.content.decode()
    assert not ImportJob.objects.exists() and state() == before

    right = upload(client, django_capture_on_commit_callbacks, fixture_file(WITH_KEY), key=FIXTURE_KEY)
    assert right.status_code == 302
    job = ImportJob.objects.get()
    assert (job.encrypted, job.format, job.status, job.result["added"]) == (True, "promsnmp", "succeeded", 3)
    # stored nowhere (but in the file's name, which here is named after it)
    rows = ImportJob.objects.values(
        *(f.attname for f in ImportJob._meta.concrete_fields if f.name != "file_name")
    )
    stored = ImportPayload.objects.get(job=job).data + json.dumps(list(rows), default=str)
    assert FIXTURE_KEY not in stored and FIXTURE_KEY not in json.dumps(
        list(AuditLog.objects.values("details"))
    )

    default = upload(client, django_capture_on_commit_callbacks, fixture_file(WITH_DEFAULT_KEY))
    assert default.status_code == 302
    followed = client.get(default["Location"])
    assert "decrypted with PromSNMP&#x27;s default key" in followed.content.decode()
    assert state() == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "The submitted file is empty."),
        (b"not json and not base64 !", "neither JSON nor valid base64"),
        (b'{"hello": "world"}', "not an inventory document"),
        (b"[1, 2]", "JSON but not an object"),
    ],
)
def test_files_that_cannot_be_read_are_form_errors(staff, make_site, content, message):
    make_site(SITE)
    response = staff(*IMPORTER).post(
        UPLOAD, {"file": SimpleUploadedFile("bad.json", content), "key": "", "mode": "merge"}
    )
    assert response.status_code == 200
    assert message in " ".join(response.context["form"].errors["file"])
    assert not ImportJob.objects.exists()


def test_replace_needs_the_permission_to_delete_devices(staff, make_site, django_capture_on_commit_callbacks):
    make_site(SITE)
    inventory_import_document(actor=TEST_ACTOR, site_id=SITE, document={"devices": [device("gone-1")]})
    refused = upload(staff(*IMPORTER), django_capture_on_commit_callbacks, fixture_file(), mode="replace")
    assert refused.status_code == 200 and "permission to delete devices" in refused.content.decode()
    assert not ImportJob.objects.exists()

    client = staff(*IMPORTER, "inventory.delete_device", name="remover")
    assert (
        upload(client, django_capture_on_commit_callbacks, fixture_file(), mode="replace").status_code == 302
    )
    preview = ImportJob.objects.get()
    page = client.get(job_page(preview.pk)).content.decode()
    assert '<td id="preview-removed">1</td>' in page and "<li>gone-1</li>" in page
    # someone who may not remove devices cannot apply it
    other = staff(*IMPORTER, name="merger")
    assert 'id="import-apply"' not in other.get(job_page(preview.pk)).content.decode()
    assert other.post(job_page(preview.pk, "apply/")).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        client.post(job_page(preview.pk, "apply/"))
    assert sorted(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == [
        "access-sw-15.chicago", "core-sw-02.chicago", "edge-rtr-01.chicago"
    ]  # fmt: skip


def test_a_file_with_invalid_devices_fails_its_dry_run_with_every_field(
    staff, make_site, django_capture_on_commit_callbacks
):
    make_site(SITE)
    client = staff(*IMPORTER)
    bad = {"devices": [device("ok-1"), device("bad-1", "not-an-address")]}
    file = SimpleUploadedFile("manager.json", json.dumps(bad).encode())
    response = upload(client, django_capture_on_commit_callbacks, file)
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.status == "failed" and not ImportPayload.objects.exists()
    page = client.get(job_page(job.pk)).content.decode()
    assert "The file cannot be imported" in page and "<code>devices[1].agents[0].address</code>" in page
    assert 'id="import-apply"' not in page
    assert Device.objects.count() == 0


def test_the_status_view_and_the_jobs_list_take_the_same_queries_whatever_the_size(
    staff, make_site, django_capture_on_commit_callbacks
):
    make_site(SITE)
    client = staff(*IMPORTER)
    for count in (3, 300):
        file = SimpleUploadedFile(f"{count}.json", json.dumps({"devices": many(count, f"n{count}")}).encode())
        upload(client, django_capture_on_commit_callbacks, file)
    small, large = ImportJob.objects.order_by("created_at")
    assert (small.result["added"], large.result["added"]) == (3, 300)

    counts = []
    for job in (small, large):
        with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as queries:
            response = client.get(job_page(job.pk, "status/"))
        counts.append(len(queries))
        body = response.json()
        assert set(body) == {"id", "status", "phase", "done", "total", "percent"}
        assert (body["id"], body["status"], body["phase"], body["percent"]) == (
            job.pk,
            "succeeded",
            "done",
            100,
        )
        assert "no-store" in response["Cache-Control"]
    assert counts[0] == counts[1]
    assert client.get(job_page("imp_none", "status/")).status_code == 404

    listed = []
    for more in (0, 10):
        for _ in range(more):
            upload(client, django_capture_on_commit_callbacks, fixture_file())
        with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as queries:
            page = client.get("/admin/inventory/importjob/")
        assert page.status_code == 200
        listed.append(len(queries))
    assert listed[0] == listed[1]
    assert page.content.decode().count(f'href="/admin/sites/site/{SITE}/import-jobs/imp_') == 12
    assert "/admin/inventory/importjob/imp_" not in page.content.decode()  # one link per row: the job's page
