from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.errors import InvalidInput
from core.models import Scope
from core.services import token_create


class Command(BaseCommand):
    help = "Create an API token. The plaintext token is the last line of stdout, and is shown only once."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True)
        parser.add_argument("--scope", action="append", required=True, choices=Scope.values, dest="scopes")
        parser.add_argument("--site", default=None, help="Bind the token to this site id.")
        parser.add_argument("--expires-days", type=int, default=None)

    def handle(self, *args, name, scopes, site, expires_days, **options):
        try:
            token, plaintext = token_create(
                actor=Actor.command("create_token"),
                name=name,
                scopes=scopes,
                site_id=site,
                expires_days=expires_days,
            )
        except InvalidInput as exc:
            raise CommandError(f"{exc.detail} {exc.fields}") from exc
        self.stderr.write(f"Created token {token.id} ({', '.join(token.scopes)}); store it now:")
        self.stdout.write(plaintext)
