"""Backup and restore of everything the manager owns: one consistent archive, the same whichever database
(SQLite or PostgreSQL) wrote it, so it is also the way from the embedded default to production.

The archive is a gzip'd tar:

    manifest.json                      format, formatVersion, createdAt, keyIds, tables (rows, fields, sha256)
    tables/<app_label>.<model>.jsonl   one row per line, JSON with sorted keys, in primary-key order

Values are written as the model reads them, not as the database stores them: timestamps as UTC ISO 8601
with microseconds, JSON fields as JSON, everything else as JSON scalars. Credentials stay the ciphertexts
of the key ring (core.crypto); the manifest names the key ids they need, and a restore refuses an archive
whose keys are not in FIELD_ENCRYPTION_KEYS. Tokens stay hashes and users their password hashes.

Which tables go in, and why the others do not: TABLES below and docs/decisions.md ("Backup and restore").
The django-celery-beat rows are not archived: they are derived from the sites, seeds and settings, and a
restore rebuilds them (discovery.schedules), as sync_schedules does.

Destinations: a directory (a path or file:///path) or S3-compatible object storage
(s3://bucket/prefix) through django-storages, with AWS_S3_ENDPOINT_URL and the usual AWS_* credentials.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.core.management.color import no_style
from django.db import DEFAULT_DB_ALIAS, connections, transaction
from django.db.models import Model
from django.utils import timezone

from core.audit import Actor, audit_record
from core.crypto import ENCRYPTED_FIELDS, key_ring
from core.schedules import crontab_for, ensure_periodic_task, lock_schedules, remove_periodic_task
from discovery.schedules import discovery_schedules_sync

log = logging.getLogger(__name__)

FORMAT = "promsnmp-fleet-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARCHIVE_PREFIX = "fleet-backup-"
ARCHIVE_SUFFIX = ".tar.gz"
# fleet-backup-20250102T030000.123456Z.tar.gz: names sort as their times do (retention relies on it).
ARCHIVE_NAME = re.compile(
    rf"^{re.escape(ARCHIVE_PREFIX)}\d{{8}}T\d{{6}}\.\d{{6}}Z{re.escape(ARCHIVE_SUFFIX)}$"
)

# What the archive holds, parents before children (the order of a restore). Left out on purpose: the
# event outbox (socket messages, transient), sessions (log in again), the admin's own LogEntry (it points
# at content-type ids; our audit log is the record), content types and permissions (made by migrate), and
# django-celery-beat's rows (derived; rebuilt after a restore).
TABLES = (
    "auth.group",
    "auth.user",
    "sites.site",
    "core.apitoken",
    "instances.instance",
    "inventory.device",
    "inventory.agent",
    "inventory.inventorychange",
    "inventory.discoveryseed",
    "inventory.idempotencykey",
    "inventory.importjob",
    "inventory.importpayload",
    "discovery.discoveryrun",
    "core.auditlog",
)
# Many-to-many links are written by natural key (a permission's id differs between databases).
NATURAL_KEYS = {
    "auth.group": ("name",),
    "auth.permission": ("codename", "content_type__app_label", "content_type__model"),
}
# Cleared too by a restore with replace=True: they point at rows a restore replaces.
CLEARED_WITH_REPLACE = ("django_admin_log", "django_session", "event_outbox")
_BATCH = 1000

BACKUP_TASK_NAME = "fleet-backup"
BACKUP_TASK = "fleet.backup"


class BackupError(Exception):
    """An archive that cannot be written or restored here; the message says why and what to do."""


@dataclass
class BackupResult:
    url: str
    name: str
    size: int
    rows: dict[str, int]
    key_ids: list[str]
    deleted: list[str] = field(default_factory=list)


@dataclass
class RestoreResult:
    source: str
    created_at: str
    rows: dict[str, int]
    key_ids: list[str]


# --- destinations -----------------------------------------------------------------------------------


def _storage(url: str) -> Storage:
    """A directory (a path or file:///path) or s3://bucket/prefix → the storage of its archives."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        from storages.backends.s3 import S3Storage

        if not parts.netloc:
            raise BackupError(f"{url!r}: an S3 destination is s3://bucket/prefix.")
        return S3Storage(
            bucket_name=parts.netloc,
            location=parts.path.strip("/"),
            endpoint_url=settings.AWS_S3_ENDPOINT_URL or None,
            region_name=settings.AWS_S3_REGION_NAME or None,
            default_acl=None,
            file_overwrite=False,
        )
    if parts.scheme in ("", "file"):
        path = parts.path if parts.scheme == "file" else url
        if not path:
            raise BackupError("The destination is empty: give a directory or s3://bucket/prefix.")
        # The archive holds password hashes, token hashes and ciphertexts: for the owner only.
        return FileSystemStorage(
            location=os.path.abspath(path), file_permissions_mode=0o600, directory_permissions_mode=0o700
        )
    raise BackupError(f"{url!r}: a destination is a directory, file:///path or s3://bucket/prefix.")


def _split_archive_url(url: str) -> tuple[str, str]:
    """An archive's URL or path → (its directory's URL, its name)."""
    head, _, name = url.rstrip("/").rpartition("/")
    if not name:
        raise BackupError(f"{url!r} names no archive.")
    if url.startswith("s3://") and head in ("s3:/", "s3:"):
        raise BackupError(f"{url!r}: an S3 archive is s3://bucket/[prefix/]name.")
    return head or ".", name


def _shown(url: str) -> str:
    """A URL for logs and the audit log: never credentials someone put in it."""
    parts = urlsplit(url)
    if parts.password or parts.username:
        return parts._replace(netloc=parts.hostname or "").geturl()
    return url


# --- values ------------------------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    """A value as the model read it → JSON, the same text from either database."""
    if isinstance(value, datetime):
        if timezone.is_naive(value):
            value = timezone.make_aware(value, UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return value


def _line(row: dict[str, Any]) -> bytes:
    return json.dumps(row, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _model(label: str) -> type[Model]:
    return apps.get_model(label)


def _columns(model: type[Model]) -> list:
    return [f for f in model._meta.concrete_fields]


# --- a consistent read ---------------------------------------------------------------------------------


@contextmanager
def consistent_snapshot(using: str = DEFAULT_DB_ALIAS) -> Iterator[None]:
    """Every read inside sees the database at one moment: one REPEATABLE READ, READ ONLY transaction on
    PostgreSQL; one deferred (read) transaction on SQLite, which in WAL mode keeps its snapshot without
    blocking writers (the connection's own IMMEDIATE mode would take the write lock for the whole backup).
    Inside a caller's transaction (a shell, a test) the reads happen in that one."""
    connection = connections[using]
    if connection.in_atomic_block:
        yield
        return
    if connection.vendor == "postgresql":
        with transaction.atomic(using=using):
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        with connection.cursor() as cursor:
            cursor.execute("BEGIN DEFERRED")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ROLLBACK")  # nothing was written
        return
    with transaction.atomic(using=using):
        yield


# --- backup ------------------------------------------------------------------------------------------


def _m2m_links(model: type[Model]) -> dict[str, dict[Any, list[list[Any]]]]:
    """{m2m field: {row pk: [natural key of each linked row, sorted]}} for the model's many-to-many fields."""
    links: dict[str, dict[Any, list[list[Any]]]] = {}
    for m2m in model._meta.local_many_to_many:
        natural = NATURAL_KEYS[m2m.related_model._meta.label_lower]
        through = m2m.remote_field.through
        source, target = m2m.m2m_field_name(), m2m.m2m_reverse_field_name()
        by_row: dict[Any, list[list[Any]]] = {}
        rows = through._base_manager.values_list(f"{source}_id", *(f"{target}__{key}" for key in natural))
        for pk, *key in rows.order_by(f"{source}_id", *(f"{target}__{key}" for key in natural)):
            by_row.setdefault(pk, []).append(key)
        links[m2m.name] = by_row
    return links


def _dump_table(label: str, out: IO[bytes], key_ids: set[str]) -> tuple[int, list[str]]:
    """Write one table as JSON lines → (rows, the field names written)."""
    model = _model(label)
    columns = _columns(model)
    names = [column.attname for column in columns]
    encrypted = [name for model_label, name in ENCRYPTED_FIELDS if model_label.lower() == label]
    links = _m2m_links(model)
    count = 0
    rows = model._base_manager.order_by("pk").values_list(*names)
    for values in rows.iterator(chunk_size=_BATCH):
        row = {name: _encode(value) for name, value in zip(names, values, strict=True)}
        for name in encrypted:
            key_id = key_ring().key_id_of(row[name] or "")
            if key_id:
                key_ids.add(key_id)
        for m2m_name, by_row in links.items():
            row[m2m_name] = by_row.get(values[names.index(model._meta.pk.attname)], [])
        out.write(_line(row))
        count += 1
    return count, names + sorted(links)


def _archive_name(now: datetime) -> str:
    return f"{ARCHIVE_PREFIX}{now.astimezone(UTC):%Y%m%dT%H%M%S.%f}Z{ARCHIVE_SUFFIX}"


def _write_archive(workdir: Path, created_at: datetime) -> tuple[Path, dict[str, Any]]:
    """Read every table in one snapshot into files under workdir, then pack them → (archive, manifest)."""
    key_ids: set[str] = set()
    tables = []
    with consistent_snapshot():
        for label in TABLES:
            path = workdir / f"{label}.jsonl"
            with path.open("wb") as out:
                rows, fields = _dump_table(label, out, key_ids)
            tables.append(
                {
                    "name": label,
                    "file": f"tables/{label}.jsonl",
                    "rows": rows,
                    "fields": fields,
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            )
    manifest = {
        "format": FORMAT,
        "formatVersion": FORMAT_VERSION,
        "createdAt": _encode(created_at),
        "keyIds": sorted(key_ids),
        "tables": tables,
    }
    archive = workdir / _archive_name(created_at)
    with (
        archive.open("wb") as raw,
        gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w") as tar,
    ):
        # The manifest first: a reader checks the version before it reads a table.
        _add(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode(), created_at)
        for table in tables:
            _add(tar, table["file"], (workdir / f"{table['name']}.jsonl").read_bytes(), created_at)
    return archive, manifest


def _add(tar: tarfile.TarFile, name: str, data: bytes, created_at: datetime) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o600, int(created_at.timestamp())
    tar.addfile(info, io.BytesIO(data))


def fleet_backup(*, actor: Actor, destination: str, keep: int = 0) -> BackupResult:
    """Write one archive of the whole fleet to `destination`, then (keep > 0) delete all but the `keep`
    newest archives there. Audited once the archive is stored."""
    if keep < 0:
        raise BackupError("The number of archives to keep is 0 (all) or more.")
    storage = _storage(destination)
    created_at = timezone.now()
    with tempfile.TemporaryDirectory(prefix="promsnmp-backup-") as tmp:
        archive, manifest = _write_archive(Path(tmp), created_at)
        size = archive.stat().st_size
        with archive.open("rb") as data:
            name = storage.save(archive.name, File(data, name=archive.name))
    deleted = archives_prune(storage, keep) if keep else []
    rows = {table["name"]: table["rows"] for table in manifest["tables"]}
    url = f"{destination.rstrip('/')}/{name}"
    audit_record(
        actor=actor,
        action="fleet_backed_up",
        entity_type="fleet_backup",
        entity_id=name[:64],
        details={
            "url": _shown(url),
            "size": size,
            "rows": rows,
            "keyIds": manifest["keyIds"],
            "deleted": deleted,
        },
    )
    log.info("fleet backup %s written (%d bytes), %d old archives deleted", _shown(url), size, len(deleted))
    return BackupResult(url=url, name=name, size=size, rows=rows, key_ids=manifest["keyIds"], deleted=deleted)


def archives_list(storage: Storage) -> list[str]:
    """The archives at a destination, oldest first (other files there are not ours: left alone)."""
    try:
        _, files = storage.listdir("")
    except FileNotFoundError:
        return []
    return sorted(name for name in files if ARCHIVE_NAME.match(name))


@dataclass(frozen=True)
class ArchiveListed:
    name: str
    url: str
    size: int


def archives_at(destination: str) -> list[ArchiveListed]:
    """The archives at a destination (a directory, file:///path or s3://bucket/prefix), oldest first:
    their names carry the time they were taken, so the order is that of their names."""
    storage = _storage(destination)
    try:
        return [
            ArchiveListed(name=name, url=f"{destination.rstrip('/')}/{name}", size=storage.size(name))
            for name in archives_list(storage)
        ]
    except Exception as exc:  # storage errors differ by backend (OSError, botocore's ClientError)
        raise BackupError(f"Cannot list the archives at {_shown(destination)!r}: {exc}") from exc


def archive_latest(destination: str) -> str:
    """The URL of the newest archive at a destination: what a disaster recovery restores."""
    listed = archives_at(destination)
    if not listed:
        raise BackupError(f"No fleet backup at {_shown(destination)!r}.")
    return listed[-1].url


def archives_prune(storage: Storage, keep: int) -> list[str]:
    """Delete all but the `keep` newest archives → the names deleted."""
    old = archives_list(storage)[:-keep] if keep > 0 else []
    for name in old:
        storage.delete(name)
    return old


# --- restore -----------------------------------------------------------------------------------------


@contextmanager
def _fetched(source: str) -> Iterator[Path]:
    """The archive at `source` (a path, file:// or s3:// URL) as a local file."""
    parts = urlsplit(source)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme == "file" else source)
        if not path.is_file():
            raise BackupError(f"No archive at {source!r}.")
        yield path
        return
    directory, name = _split_archive_url(source)
    storage = _storage(directory)
    with tempfile.TemporaryDirectory(prefix="promsnmp-restore-") as tmp:
        local = Path(tmp) / "archive.tar.gz"
        try:
            with storage.open(name, "rb") as remote, local.open("wb") as out:
                shutil.copyfileobj(remote, out, 1024 * 1024)
        except Exception as exc:  # storage errors differ by backend (OSError, botocore's ClientError)
            raise BackupError(f"No archive at {_shown(source)!r}: {exc}") from exc
        yield local


@contextmanager
def _opened(source: str) -> Iterator[tarfile.TarFile]:
    with _fetched(source) as path:
        try:
            tar = tarfile.open(path, mode="r:gz")  # noqa: SIM115 (closed below; opening is what may fail)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{_shown(source)!r} is not a fleet backup (not a .tar.gz): {exc}") from exc
        with tar:
            yield tar


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    member = tar.next()
    if member is None or member.name != MANIFEST:
        raise BackupError(f"Not a fleet backup: the archive does not start with {MANIFEST}.")
    try:
        manifest = json.loads(tar.extractfile(member).read())
    except ValueError as exc:
        raise BackupError(f"Not a fleet backup: {MANIFEST} is not JSON.") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"Not a fleet backup: {MANIFEST} is not of the format {FORMAT!r}.")
    return manifest


def archive_check(manifest: dict[str, Any]) -> None:
    """Refuse, before anything is written, an archive this manager cannot restore faithfully."""
    version = manifest.get("formatVersion")
    if version != FORMAT_VERSION:
        raise BackupError(
            f"The archive is of format version {version!r}; this manager reads version {FORMAT_VERSION}. "
            "Restore it with the release that wrote it (or a later one that reads it)."
        )
    ring = key_ring()
    missing = sorted(set(manifest.get("keyIds", [])) - set(ring.keys))
    if missing:
        raise BackupError(
            f"The archive's credentials are encrypted with key ids {missing}, which FIELD_ENCRYPTION_KEYS "
            f"does not hold (it has {sorted(ring.keys)}). Add those keys (id:base64key) to the ring and "
            "run the restore again; keep them until rotate_encryption_key has run."
        )
    tables = {table.get("name"): table for table in manifest.get("tables", [])}
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise BackupError(f"The archive holds tables this manager does not know: {unknown}.")
    for label, table in tables.items():
        model = _model(label)
        known = {column.attname for column in _columns(model)} | {
            m.name for m in model._meta.local_many_to_many
        }
        extra = sorted(set(table.get("fields", [])) - known)
        if extra:
            raise BackupError(
                f"The archive's {label} has fields this manager's schema lacks: {extra}. Restore it with the "
                "release that wrote it, or run this release's migrations first."
            )


def _occupied() -> dict[str, int]:
    """Archived kinds that already have rows here → how many."""
    counts = {label: _model(label)._base_manager.count() for label in TABLES}
    return {label: count for label, count in counts.items() if count}


def _clear(using: str) -> None:
    """Empty every table a restore writes, and those that point at their rows. DELETE, not TRUNCATE: a
    TRUNCATE fails in a transaction that has written rows with deferred foreign keys, and the foreign keys
    (deferred on both databases) are checked at commit, when the tables are whole again."""
    connection = connections[using]
    tables = list(CLEARED_WITH_REPLACE)
    for label in reversed(TABLES):
        model = _model(label)
        tables += [m2m.remote_field.through._meta.db_table for m2m in model._meta.local_many_to_many]
        tables.append(model._meta.db_table)
    existing = set(connection.introspection.table_names())
    with connection.cursor() as cursor:
        for table in tables:
            if table in existing:
                cursor.execute(f"DELETE FROM {connection.ops.quote_name(table)}")  # noqa: S608 (our names)


def _rows(tar: tarfile.TarFile, table: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The table's rows; the file's checksum is verified as it is read (a bad one rolls the restore back)."""
    try:
        member = tar.getmember(table["file"])
    except KeyError as exc:
        raise BackupError(f"The archive lacks {table['file']}, which its manifest lists.") from exc
    digest = hashlib.sha256()
    for line in tar.extractfile(member):
        digest.update(line)
        yield json.loads(line)
    if digest.hexdigest() != table["sha256"]:
        raise BackupError(f"{table['file']} does not match its checksum: the archive is damaged.")


def _insert(model: type[Model], objects: list[Model], using: str) -> None:
    if not objects:
        return
    fields = _columns(model)
    batch = max(1, connections[using].ops.bulk_batch_size(fields, objects))
    for start in range(0, len(objects), batch):
        # raw=True, as loaddata saves: auto_now / auto_now_add keep the archived times instead of "now".
        # (bulk_create has no raw mode; QuerySet._insert is what Model.save_base calls.)
        model._base_manager.using(using)._insert(objects[start : start + batch], fields=fields, raw=True)


def _load_table(tar: tarfile.TarFile, table: dict[str, Any], using: str) -> int:
    model = _model(table["name"])
    columns = {column.attname: column for column in _columns(model)}
    m2m_fields = {m2m.name: m2m for m2m in model._meta.local_many_to_many}
    links: dict[str, list[tuple[Any, list[Any]]]] = {name: [] for name in m2m_fields}
    pending: list[Model] = []
    count = 0
    for row in _rows(tar, table):
        values = {name: columns[name].to_python(value) for name, value in row.items() if name in columns}
        pending.append(model(**values))
        for name in m2m_fields:
            links[name].extend((values[model._meta.pk.attname], key) for key in row.get(name, []))
        count += 1
        if len(pending) >= _BATCH:
            _insert(model, pending, using)
            pending = []
    _insert(model, pending, using)
    for name, pairs in links.items():
        _link(m2m_fields[name], pairs, using)
    if count != table["rows"]:
        raise BackupError(f"{table['file']} holds {count} rows, its manifest says {table['rows']}.")
    return count


def _link(m2m, pairs: list[tuple[Any, list[Any]]], using: str) -> None:
    """Many-to-many rows from natural keys (a permission is found by codename, app and model)."""
    if not pairs:
        return
    target_model = m2m.related_model
    natural = NATURAL_KEYS[target_model._meta.label_lower]
    ids = {tuple(key): pk for pk, *key in target_model._base_manager.using(using).values_list("pk", *natural)}
    through = m2m.remote_field.through
    source, target = m2m.m2m_field_name(), m2m.m2m_reverse_field_name()
    missing = sorted({tuple(key) for _, key in pairs if tuple(key) not in ids})
    if missing:
        raise BackupError(
            f"{m2m.model._meta.label_lower}.{m2m.name} names rows this database lacks: {missing[:5]}"
        )
    through._base_manager.using(using).bulk_create(
        [through(**{f"{source}_id": pk, f"{target}_id": ids[tuple(key)]}) for pk, key in pairs]
    )


def _reset_sequences(using: str) -> None:
    """After rows were inserted with their ids: the next id PostgreSQL hands out follows the largest."""
    connection = connections[using]
    models = [_model(label) for label in TABLES]
    models += [m2m.remote_field.through for model in models for m2m in model._meta.local_many_to_many]
    statements = connection.ops.sequence_reset_sql(no_style(), models)
    if statements:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)


def fleet_restore(*, actor: Actor, source: str, replace: bool = False) -> RestoreResult:
    """Load an archive into this database, keeping ids, versions, token and password hashes, ciphertexts.

    Refuses (BackupError, nothing written) an archive of another format version, one whose key ids are not
    in the ring, and a database that already holds any of the archived kinds, unless `replace` (then those
    tables are emptied first, in the same transaction). All or nothing: one transaction. Afterwards the
    discovery schedules are rebuilt from the restored sites and seeds, and the restore is audited."""
    using = DEFAULT_DB_ALIAS
    with _opened(source) as tar:
        manifest = _read_manifest(tar)
        archive_check(manifest)
        tables = {table["name"]: table for table in manifest["tables"]}
        with transaction.atomic(using=using):
            occupied = _occupied()
            if occupied and not replace:
                found = ", ".join(f"{count} {label}" for label, count in occupied.items())
                raise BackupError(
                    f"The database is not empty ({found}): restore into a freshly migrated database, or "
                    "pass --replace-existing to delete what is there and load the archive instead."
                )
            if replace:
                _clear(using)
            rows = {label: _load_table(tar, tables[label], using) for label in TABLES if label in tables}
            _reset_sequences(using)
            discovery_schedules_sync()
            audit_record(
                actor=actor,
                action="fleet_restored",
                entity_type="fleet_backup",
                entity_id=_split_archive_url(source)[1][:64],
                details={
                    "source": _shown(source),
                    "createdAt": manifest.get("createdAt"),
                    "rows": rows,
                    "keyIds": manifest.get("keyIds", []),
                    "replaced": sorted(occupied),
                },
            )
    log.info("fleet restored from %s (written %s)", _shown(source), manifest.get("createdAt"))
    return RestoreResult(
        source=source, created_at=manifest.get("createdAt", ""), rows=rows, key_ids=manifest.get("keyIds", [])
    )


# --- the schedule --------------------------------------------------------------------------------------


@transaction.atomic
def backup_schedule_sync() -> bool:
    """The beat entry of scheduled backups: BACKUP_CRON (UTC) → "fleet-backup"; none when it is empty.
    → whether an entry exists now."""
    lock_schedules(exclusive=True)
    if not settings.BACKUP_CRON:
        remove_periodic_task(BACKUP_TASK_NAME)
        return False
    ensure_periodic_task(
        name=BACKUP_TASK_NAME,
        task=BACKUP_TASK,
        crontab=crontab_for(settings.BACKUP_CRON, "UTC"),
        args=[],
        enabled=True,
        description="Backup of the fleet to BACKUP_URL, keeping BACKUP_RETENTION archives (fleet.backup).",
    )
    return True
