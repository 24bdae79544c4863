from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.errors import NotFoundError
from core.services import token_revoke


class Command(BaseCommand):
    help = "Revoke an API token by its id (tok_…)."

    def add_arguments(self, parser):
        parser.add_argument("token_id")

    def handle(self, *args, token_id, **options):
        try:
            token = token_revoke(actor=Actor.command("revoke_token"), token_id=token_id)
        except NotFoundError as exc:
            raise CommandError(str(exc.detail)) from exc
        self.stdout.write(f"Revoked {token.id} ({token.name}).")
