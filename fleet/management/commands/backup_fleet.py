"""manage.py backup_fleet: one archive of the whole fleet (fleet/backup.py) to a directory or S3."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from fleet.backup import BackupError, archives_at, fleet_backup


class Command(BaseCommand):
    help = (
        "Write one consistent archive of everything the manager owns (sites, inventories with their change "
        "log, seeds, instances, tokens as hashes, users, import jobs, discovery runs, the audit log; "
        "credentials stay encrypted) to --to or BACKUP_URL: a directory, file:///path or s3://bucket/prefix "
        "(AWS_S3_ENDPOINT_URL and AWS_* credentials). Then deletes all but the BACKUP_RETENTION newest "
        "archives there (--keep). Prints the archive's URL as the last line. With --list, writes nothing and "
        "prints the archives at the destination instead, oldest first."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--to",
            dest="destination",
            default=None,
            metavar="URL",
            help="A directory, file:///path or s3://bucket/prefix (default: BACKUP_URL).",
        )
        parser.add_argument(
            "--keep",
            type=int,
            default=None,
            metavar="N",
            help="Keep the N newest archives at the destination, delete older ones; 0 keeps all "
            "(default: BACKUP_RETENTION).",
        )
        parser.add_argument(
            "--list",
            dest="list_only",
            action="store_true",
            help="Write nothing: print the archives at the destination (URL and size), oldest first.",
        )

    def handle(self, *args, destination: str | None, keep: int | None, list_only: bool, **options):
        destination = destination or settings.BACKUP_URL
        if not destination:
            raise CommandError("No destination: pass --to URL or set BACKUP_URL.")
        if list_only:
            return self.list_archives(destination)
        try:
            result = fleet_backup(
                actor=Actor.command("backup_fleet"),
                destination=destination,
                keep=settings.BACKUP_RETENTION if keep is None else keep,
            )
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        total = sum(result.rows.values())
        self.stderr.write(
            f"Wrote {result.name}: {total} rows, {result.size} bytes; credentials need key ids "
            f"{result.key_ids or 'none'}."
        )
        for name in result.deleted:
            self.stderr.write(f"Deleted the older archive {name}.")
        self.stdout.write(result.url)

    def list_archives(self, destination: str) -> None:
        try:
            listed = archives_at(destination)
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        for archive in listed:
            self.stdout.write(f"{archive.url}\t{archive.size}")
        self.stderr.write(f"{len(listed)} archives at {destination}.")
