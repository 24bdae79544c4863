"""manage.py backup_fleet: one archive of the whole fleet (fleet/backup.py) to a directory or S3."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from fleet.backup import BackupError, fleet_backup


class Command(BaseCommand):
    help = (
        "Write one consistent archive of everything the manager owns (sites, inventories with their change "
        "log, seeds, instances, tokens as hashes, users, import jobs, discovery runs, the audit log; "
        "credentials stay encrypted) to --to or BACKUP_URL: a directory, file:///path or s3://bucket/prefix "
        "(AWS_S3_ENDPOINT_URL and AWS_* credentials). Then deletes all but the BACKUP_RETENTION newest "
        "archives there (--keep). Prints the archive's URL as the last line."
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

    def handle(self, *args, destination: str | None, keep: int | None, **options):
        destination = destination or settings.BACKUP_URL
        if not destination:
            raise CommandError("No destination: pass --to URL or set BACKUP_URL.")
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
