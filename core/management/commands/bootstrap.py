"""First start: an admin user and an admin API token, printed once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from core.audit import Actor, audit_record
from core.models import ApiToken
from core.services import token_create


class Command(BaseCommand):
    help = "Create the first admin user and admin API token when there are none (prints them once)."

    def handle(self, *args, **options):
        User = get_user_model()
        if not User.objects.filter(is_superuser=True).exists():
            password = secrets.token_urlsafe(18)
            user = User.objects.create_superuser("admin", "", password)
            audit_record(
                actor=Actor.command("bootstrap"),
                action="user_created",
                entity_type="user",
                entity_id=str(user.pk),
                details={"username": user.get_username(), "superuser": True},
            )
            self.stdout.write(f"Admin user created: admin / {password}  (shown once; change it in the admin)")
        if not ApiToken.objects.exists():
            _, plaintext = token_create(
                actor=Actor.command("bootstrap"), name="bootstrap admin", scopes=["admin"]
            )
            self.stdout.write(f"Admin API token created (shown once): {plaintext}")
