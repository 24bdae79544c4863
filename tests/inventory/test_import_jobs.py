"""Import jobs (inventory/jobs.py): a document imported by the job's task with progress, as one change set;
dry runs that change nothing; the stored document; housekeeping; and PUT inventory with
`Prefer: respond-async` → 202 and GET …/inventory/import-jobs/{jobId}.

The task runs here in-process (jobs.import_job_run, or Celery's eager mode after commit);
tests/e2e/test_import_jobs.py runs it in a real worker with a Redis broker."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core.audit import Actor
from core.crypto import key_ring
from core.errors import ApiError
from core.models import AuditLog, OutboxMessage
from core.services import encryption_rotate
from inventory import jobs, services
from inventory.models import Device, DiscoverySeed, ImportJob, ImportPayload, InventoryChange
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.inventory.test_credentials import NEW_KEY
from tests.inventory.test_inventory_api import SITE, device, inventory_path, many, seed
from tests.openapi import assert_matches_schema

USER = Actor(kind="user", name="operator", user_id="7", ip_address="127.0.0.5")
COMMUNITY = "job-secret-community"


def job_path(job_id: str, site: str = SITE) -> str:
    return f"/api/v1/sites/{site}/inventory/import-jobs/{job_id}"


def document(count: int, prefix: str = "dev", **extra) -> dict:
    devices = many(count, prefix)
    for item in devices:
        item["agents"][0]["readCommunity"] = COMMUNITY
    return {"devices": devices, **extra}


def queue(
    site: str = SITE, doc: dict | None = None, *, dry_run: bool = False, mode: str = "merge"
) -> ImportJob:
    return jobs.import_job_create(
        actor=USER,
        site_id=site,
        document=doc if doc is not None else document(3),
        document_format="manager",
        mode=mode,
        dry_run=dry_run,
        source="admin",
        file_name="inventory.json",
    )


def run(job: ImportJob) -> ImportJob:
    jobs.import_job_run(job_id=job.pk)
    return ImportJob.objects.get(pk=job.pk)


def state(site: str = SITE) -> tuple:
    """Everything a change set writes: version, devices, seeds, change log, audit rows, events."""
    return (
        Site.objects.get(pk=site).inventory_version,
        Device.objects.filter(site_id=site).count(),
        DiscoverySeed.objects.filter(site_id=site).count(),
        InventoryChange.objects.filter(site_id=site).count(),
        AuditLog.objects.filter(action="inventory_changed", site_id=site).count(),
        OutboxMessage.objects.filter(site_id=site, body__type="inventory_updated").count(),
    )


# --- the service reports progress, chunk by chunk, in one change set ------------------------------------


def test_the_import_service_reports_progress_chunk_by_chunk_in_one_version(make_site, monkeypatch):
    make_site()
    monkeypatch.setattr(services, "PROGRESS_EVERY", 2)
    monkeypatch.setattr(services, "_BATCH", 3)
    services.inventory_import_document(actor=TEST_ACTOR, site_id=SITE, document=document(4))
    heard: list[tuple[str, int, int]] = []
    doc = document(7)  # 4 updated (new community), 3 added; replace removes none
    doc["devices"][0]["agents"][0]["readCommunity"] = "changed-1"
    before = state()
    result = services.inventory_import_document(
        actor=TEST_ACTOR,
        site_id=SITE,
        document=doc,
        mode="replace",
        progress=lambda *step: heard.append(step),
    )
    assert heard == [
        ("checking", 2, 7),
        ("checking", 4, 7),
        ("checking", 6, 7),
        ("checking", 7, 7),
        ("writing", 3, 4),  # 3 added, in one chunk
        ("writing", 4, 4),  # 1 updated
    ]
    assert (len(result.added), len(result.updated), result.unchanged) == (3, 1, 3)
    after = state()
    assert after[0] == before[0] + 1 and after[3:] == tuple(n + 1 for n in before[3:])  # one of each


# --- jobs ---------------------------------------------------------------------------------------------


def test_a_dry_run_job_changes_nothing_and_says_what_would_change(make_site):
    make_site()
    services.inventory_import_document(
        actor=TEST_ACTOR, site_id=SITE, document={"devices": [device("old-1", "127.0.9.1")]}
    )
    before = state()
    version = before[0]
    doc = document(25, discoverySeeds=[seed("s-1")])
    job = run(queue(doc=doc, dry_run=True, mode="replace"))
    assert state() == before
    assert job.status == "succeeded" and job.phase == "done" and jobs.job_percent(job) == 100
    assert job.result == {
        "version": version,
        "changed": True,
        "added": 25,
        "updated": 0,
        "unchanged": 0,
        "removed": 1,
        "seeds": {"added": 1, "updated": 0, "removed": 0},
    }
    assert job.base_version == version
    assert job.sample["added"] == [f"dev-{i:03d}" for i in range(jobs.SAMPLE)]  # the first N, in file order
    assert job.sample["removed"] == ["old-1"] and job.sample["seedsAdded"] == ["s-1"]
    assert ImportPayload.objects.filter(job=job).exists()  # kept for "Apply"
    assert (job.requested_by, job.actor["ipAddress"]) == ("user:operator", "127.0.0.5")


def test_apply_imports_the_checked_document_as_one_change_set_by_the_user(make_site):
    make_site()
    preview = run(queue(doc=document(30), dry_run=True))
    before = state()
    job = jobs.import_job_apply(actor=USER, site_id=SITE, job_id=preview.pk)
    assert (job.preview_id, job.dry_run, job.status) == (preview.pk, False, "queued")
    assert not ImportPayload.objects.filter(job=preview).exists()  # taken over by the new job
    assert jobs.import_job_apply(actor=USER, site_id=SITE, job_id=preview.pk) == job  # twice: same job
    job = run(job)
    assert job.status == "succeeded" and jobs.job_percent(job) == 100
    assert job.result["added"] == 30 and job.result["version"] == before[0] + 1
    assert job.base_version == before[0]
    assert state() == (before[0] + 1, 30, 0, before[3] + 1, before[4] + 1, before[5] + 1)
    audit = AuditLog.objects.get(action="inventory_changed", site_id=SITE)
    assert (audit.actor, audit.user_id, audit.ip_address) == ("user:operator", "7", "127.0.0.5")
    assert audit.details["changeType"] == "bulk_import" and audit.details["added"] == 30
    assert not ImportPayload.objects.filter(job=job).exists()  # imported: not kept


def test_a_replace_job_removes_what_the_document_does_not_have(make_site):
    make_site()
    services.inventory_import_document(
        actor=TEST_ACTOR,
        site_id=SITE,
        document={"devices": [device("stays"), device("goes", "127.0.0.9")], "discoverySeeds": [seed("x")]},
    )
    job = run(queue(doc={"devices": [device("stays")], "discoverySeeds": []}, mode="replace"))
    assert job.status == "succeeded"
    assert job.result["removed"] == 1 and job.result["unchanged"] == 1
    assert job.result["seeds"] == {"added": 0, "updated": 0, "removed": 1}
    assert list(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == ["stays"]
    assert InventoryChange.objects.filter(site_id=SITE).last().change_type == "full_sync"


def test_an_invalid_document_fails_the_job_with_every_field_and_changes_nothing(make_site):
    make_site()
    before = state()
    doc = document(3)
    doc["devices"][1]["agents"][0]["address"] = "not-an-ip"
    doc["devices"][2]["agents"][0]["port"] = 70000
    job = run(queue(doc=doc))
    assert state() == before
    assert job.status == "failed" and job.phase == "done" and job.finished_at is not None
    assert job.error["error"] == "validation_error"
    assert set(job.error["fields"]) == {"devices[1].agents[0].address", "devices[2].agents[0].port"}
    assert not ImportPayload.objects.filter(job=job).exists()
    assert jobs.job_percent(job) < 100


def test_a_job_is_run_once(make_site):
    make_site()
    job = run(queue())
    finished = job.finished_at
    run(job)  # a redelivered task finds it taken and leaves it
    assert ImportJob.objects.get(pk=job.pk).finished_at == finished
    assert InventoryChange.objects.filter(site_id=SITE).count() == 1


def test_the_stored_document_is_encrypted_and_the_files_key_is_nowhere(make_site):
    make_site()
    job = queue(dry_run=True)
    stored = ImportPayload.objects.get(job=job).data
    assert stored.startswith(f"enc1:{key_ring().primary_id}:")
    assert COMMUNITY not in stored
    row = ImportJob.objects.filter(pk=job.pk).values().get()
    assert COMMUNITY not in repr(row)
    assert jobs.payload_unpack(stored)["devices"][0]["agents"][0]["readCommunity"] == COMMUNITY


def test_key_rotation_reencrypts_waiting_documents(make_site, settings):
    make_site()
    job = queue(dry_run=True)
    settings.FIELD_ENCRYPTION_KEYS = f"new:{NEW_KEY},{settings.FIELD_ENCRYPTION_KEYS}"
    counts = encryption_rotate(actor=TEST_ACTOR)
    assert counts["inventory.ImportPayload.data"] == 1
    assert ImportPayload.objects.get(job=job).data.startswith("enc1:new:")
    assert run(job).status == "succeeded"


def test_housekeeping_on_the_next_job(make_site):
    """Lost jobs fail, old jobs go, unapplied previews drop their document; applying one then says so."""
    make_site()
    old, lost, preview = queue(), queue(), run(queue(dry_run=True))
    long_ago = timezone.now() - jobs.RETENTION - timedelta(minutes=1)
    ImportJob.objects.filter(pk=old.pk).update(created_at=long_ago, updated_at=long_ago)
    stalled = timezone.now() - jobs.LOST_AFTER - timedelta(minutes=1)
    ImportJob.objects.filter(pk=lost.pk).update(status="running", updated_at=stalled)
    expired = timezone.now() - jobs.PREVIEW_TTL - timedelta(minutes=1)
    ImportJob.objects.filter(pk=preview.pk).update(finished_at=expired)
    queue()
    assert not ImportJob.objects.filter(pk=old.pk).exists()
    lost = ImportJob.objects.get(pk=lost.pk)
    assert (lost.status, lost.error["error"]) == ("failed", "job_lost")
    assert not ImportPayload.objects.filter(job__in=[lost.pk, preview.pk]).exists()
    with pytest.raises(ApiError) as refused:
        jobs.import_job_apply(actor=USER, site_id=SITE, job_id=preview.pk)
    assert (refused.value.status_code, refused.value.code) == (409, "preview_expired")
    assert not ImportJob.objects.filter(preview=preview).exists()  # rolled back


def test_only_a_dry_run_that_succeeded_can_be_applied(make_site):
    make_site()
    make_site("other-site")
    imported = run(queue())
    for job_id in (imported.pk, queue(dry_run=True).pk):  # not a dry run; not finished
        with pytest.raises(ApiError) as refused:
            jobs.import_job_apply(actor=USER, site_id=SITE, job_id=job_id)
        assert (refused.value.status_code, refused.value.code) == (409, "not_applicable")
    with pytest.raises(ApiError) as missing:
        jobs.import_job_apply(actor=USER, site_id="other-site", job_id=imported.pk)
    assert missing.value.status_code == 404


@pytest.mark.django_db(transaction=True)
def test_progress_is_seen_while_the_imports_transaction_is_open(make_site):
    """The writer uses a connection of its own: another connection reads the progress before the import
    commits (what the status page polls meanwhile)."""
    make_site()
    job = queue()
    ImportJob.objects.filter(pk=job.pk).update(status="running")
    writer = jobs._ProgressWriter(job.pk)
    reader = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with transaction.atomic():
            Site.objects.select_for_update().get(pk=SITE)  # as the import holds it
            writer("writing", 2000, 6000)
            with reader.cursor() as cursor:
                cursor.execute(
                    "SELECT phase, progress_done, progress_total FROM import_jobs WHERE id = %s", [job.pk]
                )
                assert cursor.fetchone() == ("writing", 2000, 6000)
    finally:
        writer.close()
        reader.close()
    assert jobs.job_percent(ImportJob.objects.get(pk=job.pk)) == 5 + 20 + 25


# --- the API: PUT with Prefer: respond-async, GET the job ---------------------------------------------


def put_async(client, body: dict, prefer: str = "respond-async", site: str = SITE):
    return client.put(inventory_path(site), body, format="json", HTTP_PREFER=prefer)


def test_put_with_respond_async_answers_202_and_the_job_tells_the_result(
    admin_api, make_site, django_capture_on_commit_callbacks
):
    make_site()
    body = {**document(12), "mode": "merge"}
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = put_async(admin_api, body, prefer="wait=10, Respond-Async")
    assert response.status_code == 202, response.content
    assert_matches_schema(response, "PUT", inventory_path())
    job = response.json()
    assert response["Location"] == job_path(job["id"])
    assert response["Preference-Applied"] == "respond-async"
    assert job["status"] == "queued" and job["progress"]["phase"] == "queued"
    assert job["result"] is None and job["error"] is None and not job["dryRun"]
    assert job["requestedBy"] == "token:test admin"
    version = Site.objects.get(pk=SITE).inventory_version
    assert not Device.objects.exists()  # not yet

    for callback in queued:
        callback()  # what the commit hands to Celery: the task (eager here)
    done = admin_api.get(response["Location"])
    assert done.status_code == 200
    assert_matches_schema(done, "GET", response["Location"])
    job = done.json()
    assert job["status"] == "succeeded" and job["progress"]["percent"] == 100
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", job["finishedAt"])
    # what the synchronous PUT would have answered
    assert job["result"] == {
        "version": version + 1,
        "changed": True,
        "added": 12,
        "updated": 0,
        "unchanged": 0,
        "removed": 0,
        "seeds": {"added": 0, "updated": 0, "removed": 0},
    }
    again = admin_api.put(inventory_path(), body, format="json")  # without Prefer: as always
    assert again.status_code == 200 and again.json() == {
        **job["result"],
        "changed": False,
        "added": 0,
        "unchanged": 12,
    }


def test_an_invalid_document_queued_by_put_fails_its_job_with_the_400_body(
    admin_api, make_site, django_capture_on_commit_callbacks
):
    make_site()
    body = document(2)
    body["devices"][1]["sysName"] = 5
    with django_capture_on_commit_callbacks(execute=True):
        response = put_async(admin_api, body)
    assert response.status_code == 202
    job = admin_api.get(response["Location"]).json()
    synchronous = admin_api.put(inventory_path(), body, format="json")
    assert synchronous.status_code == 400
    assert job["status"] == "failed" and job["error"] == synchronous.json() and job["result"] is None
    assert not Device.objects.exists()


def test_what_put_refuses_at_once_makes_no_job(admin_api, make_site):
    make_site()
    for body in ({**document(1), "mode": "sideways"}, {**document(1), "format": "csv"}):
        response = put_async(admin_api, body)
        assert response.status_code == 400 and response.json()["error"] == "validation_error"
    assert put_async(admin_api, document(1), site="no-such-site").status_code == 404
    assert put_async(admin_api, [1, 2]).status_code == 400
    assert not ImportJob.objects.exists()


def test_large_bodies_become_jobs_unasked_above_the_threshold(
    admin_api, make_site, settings, django_capture_on_commit_callbacks
):
    make_site()
    settings.INVENTORY_IMPORT_ASYNC_BYTES = 2000
    small = admin_api.put(inventory_path(), document(1), format="json")
    assert small.status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        large = admin_api.put(inventory_path(), document(20, prefix="big"), format="json")
    assert large.status_code == 202 and "Preference-Applied" not in large
    assert admin_api.get(large["Location"]).json()["status"] == "succeeded"


def test_job_scopes_and_site_binding(client_for, make_site):
    make_site()
    make_site("other-site")
    job = run(queue())
    for scopes, site, expected in (
        (("write",), None, 200),
        (("admin",), SITE, 200),
        (("read",), None, 403),
        (("instance",), SITE, 403),
        (("write",), "other-site", 403),
    ):
        response = client_for(*scopes, site=site).get(job_path(job.pk))
        assert response.status_code == expected, (scopes, site, response.content)
        assert_matches_schema(response, "GET", job_path(job.pk))
    writer = client_for("write")
    assert writer.get(job_path("imp_0000000000000000")).status_code == 404
    assert writer.get(job_path(job.pk, site="other-site")).status_code == 404  # another site's job
    assert writer.get(job_path(job.pk, site="no-such-site")).status_code == 404
    assert (
        client_for("read")
        .put(inventory_path(), document(1), format="json", HTTP_PREFER="respond-async")
        .status_code
        == 403
    )
    assert ImportJob.objects.count() == 1


def test_reading_a_job_takes_the_same_queries_whatever_its_size(admin_api, make_site):
    make_site()
    small = run(queue(doc=document(2)))
    large_doc = document(300)
    for item in large_doc["devices"][:200]:
        item["agents"][0]["port"] = 0  # 200 invalid fields kept on the job
    large = run(queue(doc=large_doc))
    assert len(large.error["fields"]) == 200
    admin_api.get(job_path(small.pk))  # the token's first use of the minute records lastUsedAt
    counts = []
    for job in (small, large):
        with CaptureQueriesContext(connections[DEFAULT_DB_ALIAS]) as queries:
            assert admin_api.get(job_path(job.pk)).status_code == 200
        counts.append(len(queries))
    assert counts[0] == counts[1]
