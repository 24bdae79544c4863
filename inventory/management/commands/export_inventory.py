"""manage.py export_inventory SITE_ID: the site's inventory, secrets included, as the manager's JSON or as
a file a PromSNMP instance loads (encrypted with --key, as PromSNMP does)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor, audit_record
from core.crypto import DecryptionError
from core.errors import NotFoundError
from inventory.promsnmp import (
    FORMATS,
    PromSnmpFileError,
    dump_document,
    encrypt_file,
    export_document,
)
from sites.selectors import site_get


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by its owner only (0600): written beside it, then renamed."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class Command(BaseCommand):
    help = (
        "Export a site's inventory (devices and discovery seeds) with its SNMP secrets: the manager's JSON, "
        "or a PromSNMP inventory file (--format promsnmp; encrypted with --key, PromSNMP's "
        "PROM_ENCRYPT_KEY). Files are written with mode 0600."
    )

    def add_arguments(self, parser):
        parser.add_argument("site_id")
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default=None,
            help="manager (default) or promsnmp; --key implies promsnmp.",
        )
        parser.add_argument("--key", default=None, help="Encrypt as PromSNMP does (16, 24 or 32 characters).")
        parser.add_argument("--out", default=None, help="The file to write (default: standard output).")

    def handle(self, *args, site_id, format, key, out, **options):
        try:
            site = site_get(site_id)
        except NotFoundError as exc:
            raise CommandError(f"No site {site_id!r}.") from exc
        if format is None:
            format = "promsnmp" if key else "manager"
        if key is not None and format != "promsnmp":
            raise CommandError("--key encrypts PromSNMP files only: use it with --format promsnmp.")
        if key is not None:
            try:
                encrypt_file(b"", key)  # the key's length, before any work
            except PromSnmpFileError as exc:
                raise CommandError(str(exc)) from exc
            if len(key.encode()) != 16:
                self.stderr.write(
                    "Warning: PromSNMP's InventoryFileLoader decrypts only with a 16-character "
                    "PROM_ENCRYPT_KEY; with a longer one it reads the file as plain JSON."
                )
        target = Path(out) if out else None
        if target is not None and not target.parent.is_dir():
            raise CommandError(f"{out}: the directory {str(target.parent)!r} does not exist.")

        warnings: list[str] = []
        try:
            document = export_document(site, format=format, warnings=warnings)
        except DecryptionError as exc:
            raise CommandError(
                f"A stored secret does not decrypt ({exc}); is every key of FIELD_ENCRYPTION_KEYS there?"
            ) from exc
        data = dump_document(document)
        if key is not None:
            data = encrypt_file(data, key)
        for warning in warnings:
            self.stderr.write(f"Warning: {warning}")

        if target is None:
            # No newline after an encrypted file: PromSNMP's base64 decoder refuses one.
            self.stdout.write(data.decode("utf-8"), ending="" if key is not None else "\n")
        else:
            try:
                write_private(target, data)
            except OSError as exc:
                raise CommandError(f"{out}: cannot write it ({exc.strerror or exc}).") from exc

        audit_record(
            actor=Actor.command("export_inventory"),
            action="inventory_exported",
            entity_type="inventory",
            entity_id=site.pk,
            site_id=site.pk,
            details={
                "format": format,
                "encrypted": key is not None,
                "version": site.inventory_version,
                "devices": len(document["devices"]),
                "discoverySeeds": len(document["discoverySeeds"]),
                "out": str(target) if target is not None else "stdout",
                "leftOut": warnings,
            },
        )
        if target is not None:
            self.stdout.write(
                f"Exported site {site.pk} (inventory version {site.inventory_version}, {format}"
                f"{', encrypted' if key is not None else ''}): {len(document['devices'])} devices, "
                f"{len(document['discoverySeeds'])} seeds → {target} (mode 0600; it holds SNMP secrets)."
            )
