"""manage.py import_inventory SITE_ID FILE: the manager's JSON or a PromSNMP file, plain or encrypted."""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.errors import ApiError, InvalidInput, NotFoundError
from inventory.parsing import MODES, identity_label
from inventory.promsnmp import DEFAULT_KEY, FORMATS, PromSnmpFileError, read_document
from inventory.services import ImportResult, inventory_import_document
from sites.selectors import site_get

MAX_LISTED = 100  # error lines and dry-run lines shown; the rest is counted


class Command(BaseCommand):
    help = (
        "Import a site's inventory (devices and discovery seeds) from the manager's JSON or a PromSNMP "
        "inventory file, plain or encrypted; the format is detected when not given. All or nothing, one "
        "new inventory version at most."
    )

    def add_arguments(self, parser):
        parser.add_argument("site_id")
        parser.add_argument("file", help="The file to read.")
        parser.add_argument("--format", choices=FORMATS, default=None, help="Detected when left out.")
        parser.add_argument("--mode", choices=MODES, default="merge")
        parser.add_argument(
            "--key",
            default=None,
            help=f"PROM_ENCRYPT_KEY of an encrypted PromSNMP file (default: PromSNMP's {DEFAULT_KEY}).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Print what would change, change nothing.")

    def handle(self, *args, site_id, file, format, mode, key, dry_run, **options):
        try:
            site_get(site_id)
        except NotFoundError as exc:
            raise CommandError(f"No site {site_id!r}.") from exc
        data = self._read(file)
        try:
            loaded = read_document(data, key=key, format=format)
        except PromSnmpFileError as exc:
            raise CommandError(f"{file}: {exc} Nothing imported.") from exc
        if loaded.encrypted and not key:
            self.stderr.write(f"{file} is encrypted; decrypted with PromSNMP's default key.")
        elif key and not loaded.encrypted:
            self.stderr.write(f"{file} is not encrypted; --key was not needed.")

        try:
            result = inventory_import_document(
                actor=Actor.command("import_inventory"),
                site_id=site_id,
                document=loaded.document,
                document_format=loaded.format,
                mode=mode,
                source="import",
                dry_run=dry_run,
            )
        except InvalidInput as exc:  # every invalid field of the file, in its own field paths
            lines = [f"  {p}: {' '.join(m)}" for p, m in sorted(exc.fields.items())]
            if len(lines) > MAX_LISTED:
                lines = [*lines[:MAX_LISTED], f"  … and {len(lines) - MAX_LISTED} more."]
            raise CommandError(
                f"{file}: {len(exc.fields)} invalid field(s); nothing imported:\n" + "\n".join(lines)
            ) from exc
        except ApiError as exc:
            fields = "".join(f"\n  {p}: {' '.join(m)}" for p, m in getattr(exc, "fields", {}).items())
            raise CommandError(f"{file}: {exc.detail}{fields}\nNothing imported.") from exc

        described = f"{file} ({loaded.format}{', encrypted' if loaded.encrypted else ''})"
        if dry_run:
            self._print_plan(site_id, described, mode, result)
            return
        seed_counts = ", ".join(
            f"{len(result.seeds.get(k, []))} {k}" for k in ("added", "updated", "removed")
        )
        counts = (
            f"devices: {len(result.added)} added, {len(result.updated)} updated, "
            f"{result.unchanged} unchanged, {len(result.removed)} removed; seeds: {seed_counts}"
        )
        if result.changed:
            self.stdout.write(
                f"Imported {described} into site {site_id} ({mode}): {counts}. "
                f"Inventory version {result.version}."
            )
        else:
            self.stdout.write(
                f"Imported {described} into site {site_id} ({mode}): nothing changed ({counts}). "
                f"Inventory version stays {result.version}."
            )

    def _read(self, file: str) -> bytes:
        """The file's bytes, at most MAX_INVENTORY_BODY_BYTES (the PUT inventory limit): /dev/zero or a
        huge file is refused, never read whole into memory."""
        limit = settings.MAX_INVENTORY_BODY_BYTES
        too_large = CommandError(
            f"{file}: larger than MAX_INVENTORY_BODY_BYTES ({limit} bytes); nothing imported. "
            "Raise that setting (an environment variable) to import a larger file."
        )
        try:
            with Path(file).open("rb") as handle:
                if os.fstat(handle.fileno()).st_size > limit:  # a regular file: refused unread
                    raise too_large
                data = handle.read(limit + 1)  # devices and pipes report no size
        except FileNotFoundError as exc:
            raise CommandError(f"{file}: no such file.") from exc
        except OSError as exc:
            raise CommandError(f"{file}: cannot read it ({exc.strerror or exc}).") from exc
        if len(data) > limit:
            raise too_large
        return data

    def _print_plan(self, site_id: str, described: str, mode: str, result: ImportResult) -> None:
        write = self.stdout.write
        write(
            f"Dry run of {described} into site {site_id} ({mode}); nothing changed. "
            f"Inventory version {result.version}."
        )
        write(
            f"Devices: {len(result.added)} to add, {len(result.updated)} to update, "
            f"{result.unchanged} unchanged, {len(result.removed)} to remove."
        )
        lines = [
            *(f"  + {identity_label(i)}" for i in sorted(result.added)),
            *(f"  ~ {identity_label(i)}" for i in sorted(result.updated)),
            *(f"  - {identity_label(i)}" for i in sorted(result.removed)),
        ]
        self._lines(lines)
        plan = result.seed_plan
        if plan is None:
            write("Seeds: none in the file; left as they are.")
            return
        add = sorted(seed.name for seed in plan.add)
        update = sorted(seed.name for _, seed in plan.update)
        remove = sorted(seed.name for seed in plan.remove)
        write(
            f"Seeds: {len(add)} to add, {len(update)} to update, {plan.unchanged} unchanged, "
            f"{len(remove)} to remove."
        )
        self._lines(
            [
                *(f"  + {n}" for n in add),
                *(f"  ~ {n}" for n in update),
                *(f"  - {n}" for n in remove),
            ]
        )

    def _lines(self, lines: list[str]) -> None:
        for line in lines[:MAX_LISTED]:
            self.stdout.write(line)
        if len(lines) > MAX_LISTED:
            self.stdout.write(f"  … and {len(lines) - MAX_LISTED} more.")
