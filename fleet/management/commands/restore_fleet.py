"""manage.py restore_fleet: load an archive of backup_fleet into this (freshly migrated) database."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from fleet.backup import BackupError, archive_latest, fleet_restore


class Command(BaseCommand):
    help = (
        "Restore an archive written by backup_fleet (a path, file:///path or s3://bucket/prefix/name) into "
        "this database, run `migrate` first; with --latest, the newest archive at a destination "
        "(a directory, file:///path or s3://bucket/prefix; default BACKUP_URL). Keeps ids, inventory "
        "versions, token and password hashes, so instances go on with their tokens. Refuses a database "
        "that already holds sites, tokens, users or any other archived data unless --replace-existing; "
        "refuses an archive of another format version or one whose encryption key ids are not in "
        "FIELD_ENCRYPTION_KEYS. All or nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "archive",
            nargs="?",
            metavar="ARCHIVE",
            help="The archive's path or URL; with --latest, the destination to take the newest from.",
        )
        parser.add_argument(
            "--latest",
            action="store_true",
            help="Restore the newest archive at ARCHIVE (a destination; default BACKUP_URL).",
        )
        parser.add_argument(
            "--replace-existing",
            action="store_true",
            help="Delete what the database holds of the archived kinds, then load the archive.",
        )

    def handle(self, *args, archive: str | None, latest: bool, replace_existing: bool, **options):
        try:
            if latest:
                destination = archive or settings.BACKUP_URL
                if not destination:
                    raise CommandError("--latest needs a destination: pass one or set BACKUP_URL.")
                archive = archive_latest(destination)
                self.stderr.write(f"The newest archive at {destination} is {archive}.")
            elif not archive:
                raise CommandError("Name the archive to restore, or pass --latest [DESTINATION].")
            result = fleet_restore(
                actor=Actor.command("restore_fleet"), source=archive, replace=replace_existing
            )
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        for label, count in result.rows.items():
            self.stdout.write(f"{label}: {count}")
        self.stdout.write(f"Restored the fleet as of {result.created_at} from {archive}.")
