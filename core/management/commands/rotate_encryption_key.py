from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.crypto import DecryptionError, key_ring
from core.services import encryption_rotate


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored SNMP secret under the first (newest) key of FIELD_ENCRYPTION_KEYS. "
        "Put the new key first, keep the old ones until this has run, then remove them."
    )

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=1000)

    def handle(self, *args, batch_size: int, **options):
        try:
            counts = encryption_rotate(actor=Actor.command("rotate_encryption_key"), batch_size=batch_size)
        except DecryptionError as exc:
            raise CommandError(f"A stored secret does not decrypt with any key in the ring: {exc}") from exc
        for name, count in counts.items():
            self.stdout.write(f"{name}: {count} re-encrypted")
        self.stdout.write(f"All secrets are now under key {key_ring().primary_id!r}.")
