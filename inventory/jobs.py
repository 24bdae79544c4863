"""Import jobs: a whole inventory document imported by a Celery worker instead of inside a request.

An upload from the admin is checked first (a dry run: what would change), then applied by a second job;
PUT inventory with `Prefer: respond-async` is one job that applies at once. Either way the import is
inventory.services.inventory_import_document, the very service PUT inventory calls: all or nothing, one
change set = one version, one change-log row, one audit row, one event. The job adds what a long import
needs: it runs outside the request (gunicorn's worker timeout, a proxy's read timeout), reports progress
chunk by chunk, and keeps its result for whoever polls.

The document waits for the worker in ImportPayload: compressed, then encrypted under the key ring (it
holds SNMP secrets). A PromSNMP file's own key is used in the request that uploads it and never stored.
The payload is deleted once a job has imported it (or failed), and a dry run's is kept PREVIEW_TTL for
"Apply". Jobs older than RETENTION are deleted, and jobs that stopped moving for LOST_AFTER (the worker
died) are failed; both when the next job is created, so no periodic task is needed.
"""

from __future__ import annotations

import json
import logging
import zlib
from datetime import timedelta
from itertools import islice
from typing import Any

from celery import current_app
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from core.audit import Actor
from core.crypto import DecryptionError, key_ring
from core.errors import ApiError, ConflictError, InvalidInput, NotFoundError, error_body
from core.ids import new_id
from core.timefmt import iso_z
from inventory.models import ImportJob, ImportPayload
from inventory.parsing import MODES, identity_label
from inventory.promsnmp import FORMATS
from inventory.services import CHECKING, WRITING, ImportResult, inventory_import_document
from sites.selectors import site_get

log = logging.getLogger(__name__)

TASK = "inventory.import_job_run"  # inventory/tasks.py
QUEUED, READING, DONE = "queued", "reading", "done"
PHASES = (QUEUED, READING, CHECKING, WRITING, DONE)
# How much of the bar each phase fills: writing is most of an import's time, checking all of a dry run's
# (measured: 5,000 devices check in 0.2 s and write in 0.9 s).
_WEIGHTS = {
    False: {READING: 5, CHECKING: 20, WRITING: 75},
    True: {READING: 10, CHECKING: 90},
}
SAMPLE = 20  # names a dry run lists per kind (added, updated, removed)
MAX_ERROR_FIELDS = 1000  # a failed job keeps this many invalid fields (a bad 100,000-device file has more)
PREVIEW_TTL = timedelta(hours=24)
LOST_AFTER = timedelta(hours=1)  # progress moves every few seconds while a job runs
RETENTION = timedelta(days=7)


# --- the stored document ----------------------------------------------------------------------------


def payload_pack(document: dict[str, Any]) -> str:
    """The document as stored for the worker: JSON, zlib-compressed, encrypted under the key ring."""
    raw = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return key_ring().encrypt(zlib.compress(raw, 6))


def payload_unpack(data: str) -> dict[str, Any]:
    return json.loads(zlib.decompress(key_ring().decrypt(data)))


def _actor_fields(actor: Actor) -> dict[str, Any]:
    return {
        "kind": actor.kind,
        "name": actor.name,
        "tokenId": actor.token_id,
        "userId": actor.user_id,
        "ipAddress": actor.ip_address,
    }


def _actor(fields: dict[str, Any]) -> Actor:
    return Actor(
        kind=fields.get("kind", "system"),
        name=fields.get("name", "import job"),
        token_id=fields.get("tokenId", ""),
        user_id=fields.get("userId", ""),
        ip_address=fields.get("ipAddress"),
    )


# --- writes -------------------------------------------------------------------------------------------


def _check(mode: str, document_format: str) -> None:
    errors = {}
    if mode not in MODES:
        errors["mode"] = [f"One of {', '.join(MODES)}."]
    if document_format not in FORMATS:
        errors["format"] = [f"One of {', '.join(FORMATS)}."]
    if errors:
        raise InvalidInput(errors)


def _enqueue(job_id: str) -> None:
    # The task by name: inventory.tasks imports this module. After commit, so the worker finds the row;
    # eager in the embedded default (the job then runs before the request answers).
    transaction.on_commit(lambda: current_app.tasks[TASK].delay(job_id))


def _prune(now) -> None:
    """Housekeeping on insert: old jobs go, unapplied previews drop their document, lost jobs fail."""
    ImportJob.objects.filter(created_at__lt=now - RETENTION).delete()
    ImportPayload.objects.filter(
        job__dry_run=True, job__status=ImportJob.Status.SUCCEEDED, job__finished_at__lt=now - PREVIEW_TTL
    ).delete()
    lost = ImportJob.objects.filter(
        status__in=(ImportJob.Status.QUEUED, ImportJob.Status.RUNNING), updated_at__lt=now - LOST_AFTER
    )
    ImportPayload.objects.filter(job__in=lost).delete()
    lost.update(
        status=ImportJob.Status.FAILED,
        phase=DONE,
        error=error_body(
            "job_lost",
            f"No progress for {int(LOST_AFTER.total_seconds() // 60)} minutes: no worker took the job, "
            "or the one running it stopped. Nothing was imported; start again.",
        ),
        finished_at=now,
        updated_at=now,
    )


def import_job_create(
    *,
    actor: Actor,
    site_id: str,
    document: dict[str, Any],
    document_format: str,
    mode: str,
    dry_run: bool,
    source: str,
    file_name: str = "",
    encrypted: bool = False,
    size_bytes: int = 0,
) -> ImportJob:
    """Queue the import of a whole inventory document (as PUT inventory takes it, in either format) into
    the site. InvalidInput for a bad mode or format, NotFoundError for an unknown site; the document
    itself is checked by the job (its errors end up in the job's `error`)."""
    _check(mode, document_format)
    data = payload_pack(document)  # before the transaction: compressing 64 MB takes a moment
    now = timezone.now()
    with transaction.atomic():
        site_get(site_id)
        _prune(now)
        job = ImportJob.objects.create(
            id=new_id("imp"),
            site_id=site_id,
            actor=_actor_fields(actor),
            requested_by=str(actor)[:255],
            source=source,
            dry_run=dry_run,
            mode=mode,
            format=document_format,
            file_name=file_name[:255],
            encrypted=encrypted,
            size_bytes=size_bytes,
            created_at=now,
            updated_at=now,
        )
        ImportPayload.objects.create(job=job, data=data)
        _enqueue(job.id)
    return job


def import_job_apply(*, actor: Actor, site_id: str, job_id: str) -> ImportJob:
    """ "Apply" on a dry run that succeeded: a new job imports the document the dry run checked (it takes
    over the stored document). Applying the same dry run again answers the job already made."""
    now = timezone.now()
    with transaction.atomic():
        preview = ImportJob.objects.select_for_update().filter(pk=job_id, site_id=site_id).first()
        if preview is None:
            raise NotFoundError(f"No import job {job_id!r} in site {site_id!r}.")
        if not (preview.dry_run and preview.status == ImportJob.Status.SUCCEEDED):
            raise ConflictError("not_applicable", "Only a dry run that succeeded can be applied.")
        earlier = ImportJob.objects.filter(preview=preview).first()
        if earlier is not None:
            return earlier
        job = ImportJob.objects.create(
            id=new_id("imp"),
            site_id=site_id,
            actor=_actor_fields(actor),
            requested_by=str(actor)[:255],
            source=preview.source,
            dry_run=False,
            mode=preview.mode,
            format=preview.format,
            file_name=preview.file_name,
            encrypted=preview.encrypted,
            size_bytes=preview.size_bytes,
            preview=preview,
            created_at=now,
            updated_at=now,
        )
        if not ImportPayload.objects.filter(job=preview).update(job=job):
            raise ConflictError(
                "preview_expired",
                f"The file of this dry run is no longer kept (dry runs are kept "
                f"{int(PREVIEW_TTL.total_seconds() // 3600)} h): upload it again.",
            )
        _enqueue(job.id)
    return job


class _ProgressWriter:
    """Writes a job's progress where the status page sees it while the import's transaction is still
    open: on a database connection of its own. Only on PostgreSQL: SQLite (the embedded default) has one
    writer at a time, which the import holds; there the job runs inside the request that queued it
    (eager Celery), so nobody polls meanwhile anyway."""

    SQL = (  # ImportJob's table and columns
        "UPDATE import_jobs SET phase = %s, progress_done = %s, progress_total = %s, updated_at = %s "
        "WHERE id = %s AND status = %s"
    )

    def __init__(self, job_id: str):
        self.job_id = job_id
        self.side = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        now = timezone.now()
        if not connection.in_atomic_block:
            ImportJob.objects.filter(pk=self.job_id, status=ImportJob.Status.RUNNING).update(
                phase=phase, progress_done=done, progress_total=total, updated_at=now
            )
        elif connection.vendor == "postgresql":
            if self.side is None:
                self.side = connections.create_connection(DEFAULT_DB_ALIAS)  # autocommit
            with self.side.cursor() as cursor:
                cursor.execute(self.SQL, [phase, done, total, now, self.job_id, ImportJob.Status.RUNNING])

    def close(self) -> None:
        if self.side is not None:
            self.side.close()


def _counts(result: ImportResult) -> dict[str, Any]:
    """As PUT inventory answers (InventoryImportResult); for a dry run, what the import would do."""
    if result.dry_run:
        plan, seeds = result.plan, result.seed_plan
        seed_counts = {
            "added": len(seeds.add) if seeds else 0,
            "updated": len(seeds.update) if seeds else 0,
            "removed": len(seeds.remove) if seeds else 0,
        }
        return {
            "version": result.version,
            "changed": result.changed or any(seed_counts.values()),
            "added": len(plan.add),
            "updated": len(plan.update),
            "unchanged": len(plan.unchanged),
            "removed": len(plan.remove),
            "seeds": seed_counts,
        }
    return {
        "version": result.version,
        "changed": result.changed,
        "added": len(result.added),
        "updated": len(result.updated),
        "unchanged": result.unchanged,
        "removed": len(result.removed),
        "seeds": {key: len(result.seeds.get(key, [])) for key in ("added", "updated", "removed")},
    }


def _sample(result: ImportResult) -> dict[str, list[str]] | None:
    """A dry run's first SAMPLE names of each kind, in the file's order (seeds by name)."""
    if not result.dry_run:
        return None
    plan, seeds = result.plan, result.seed_plan
    return {
        "added": [identity_label(d.identity) for d in plan.add[:SAMPLE]],
        "updated": [identity_label(d.identity) for _, d in plan.update[:SAMPLE]],
        "removed": [identity_label(i) for i in islice(plan.remove.values(), SAMPLE)],
        "seedsAdded": [s.name for s in seeds.add[:SAMPLE]] if seeds else [],
        "seedsUpdated": [s.name for _, s in seeds.update[:SAMPLE]] if seeds else [],
        "seedsRemoved": [s.name for s in seeds.remove[:SAMPLE]] if seeds else [],
    }


def _error(exc: ApiError) -> dict[str, Any]:
    fields = exc.fields
    detail = str(exc.detail)
    if len(fields) > MAX_ERROR_FIELDS:
        detail += f" ({len(fields)} fields are invalid; the first {MAX_ERROR_FIELDS} are listed.)"
        fields = dict(islice(fields.items(), MAX_ERROR_FIELDS))
    return error_body(exc.code, detail, fields)


def _fail(job_id: str, error: dict[str, Any]) -> None:
    now = timezone.now()
    with transaction.atomic():
        ImportPayload.objects.filter(job_id=job_id).delete()
        ImportJob.objects.filter(pk=job_id).update(
            status=ImportJob.Status.FAILED, phase=DONE, error=error, finished_at=now, updated_at=now
        )


def import_job_run(*, job_id: str) -> None:
    """The worker's part (inventory.tasks.import_job_run): import the job's document, reporting progress,
    and record how it ended. A job that is not queued (taken already, failed as lost, deleted) is left."""
    now = timezone.now()
    taken = ImportJob.objects.filter(pk=job_id, status=ImportJob.Status.QUEUED).update(
        status=ImportJob.Status.RUNNING, phase=READING, started_at=now, updated_at=now
    )
    if not taken:
        return
    job = ImportJob.objects.get(pk=job_id)
    progress = _ProgressWriter(job_id)
    try:
        payload = ImportPayload.objects.filter(job_id=job_id).values_list("data", flat=True).first()
        if payload is None:
            raise ConflictError("payload_missing", "The job's document is no longer kept: upload it again.")
        try:
            document = payload_unpack(payload)
        except DecryptionError as exc:
            raise ConflictError(
                "payload_undecryptable",
                f"The job's document does not decrypt ({exc}): its key left FIELD_ENCRYPTION_KEYS. "
                "Upload it again.",
            ) from exc
        del payload
        progress(READING, 1, 1)
        with transaction.atomic():
            result = inventory_import_document(
                actor=_actor(job.actor),
                site_id=job.site_id,
                document=document,
                document_format=job.format,
                mode=job.mode,
                source="import",
                dry_run=job.dry_run,
                progress=progress,
            )
            counts = _counts(result)
            # In the import's transaction: the job says "succeeded" exactly when the change committed.
            finished = timezone.now()
            ImportJob.objects.filter(pk=job_id).update(
                status=ImportJob.Status.SUCCEEDED,
                phase=DONE,
                result=counts,
                sample=_sample(result),
                base_version=counts["version"] - (1 if counts["changed"] and not job.dry_run else 0),
                finished_at=finished,
                updated_at=finished,
            )
            if not job.dry_run:
                ImportPayload.objects.filter(job_id=job_id).delete()
    except ApiError as exc:
        _fail(job_id, _error(exc))
    except Exception:
        log.exception("import job %s failed", job_id, extra={"siteId": job.site_id, "jobId": job_id})
        _fail(
            job_id,
            error_body("internal_error", "The import failed unexpectedly; the worker's log says why."),
        )
    finally:
        progress.close()


# --- reads --------------------------------------------------------------------------------------------


def import_job_get(site_id: str, job_id: str) -> ImportJob:
    """The site's job (one query), or NotFoundError."""
    job = ImportJob.objects.filter(pk=job_id, site_id=site_id).first()
    if job is None:
        raise NotFoundError(f"No import job {job_id!r} in site {site_id!r}.")
    return job


def job_percent(job: ImportJob) -> int:
    """How far the job is, 0-100, over all its phases (100 only once it succeeded)."""
    if job.status == ImportJob.Status.SUCCEEDED:
        return 100
    before = 0
    for phase, weight in _WEIGHTS[job.dry_run].items():
        if phase == job.phase:
            fraction = job.progress_done / job.progress_total if job.progress_total else 0
            return min(99, int(before + weight * fraction))
        before += weight
    return 0 if job.phase == QUEUED else 99


def import_job_progress(job: ImportJob) -> dict[str, Any]:
    return {
        "phase": job.phase,
        "done": job.progress_done,
        "total": job.progress_total,
        "percent": job_percent(job),
    }


def import_job_data(job: ImportJob) -> dict[str, Any]:
    """The job as GET …/inventory/import-jobs/{jobId} answers it."""
    return {
        "id": job.id,
        "siteId": job.site_id,
        "status": job.status,
        "dryRun": job.dry_run,
        "mode": job.mode,
        "format": job.format,
        "requestedBy": job.requested_by,
        "progress": import_job_progress(job),
        "result": job.result,
        "error": job.error,
        "createdAt": iso_z(job.created_at),
        "startedAt": iso_z(job.started_at),
        "finishedAt": iso_z(job.finished_at),
    }
