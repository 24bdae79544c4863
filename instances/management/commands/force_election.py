from django.core.management.base import BaseCommand, CommandError

from core.audit import Actor
from core.errors import ApiError
from instances.election import leader_assign


class Command(BaseCommand):
    help = (
        "Make an instance the site's leader (manual_assignment): the one given, or the healthiest follower."
    )

    def add_arguments(self, parser):
        parser.add_argument("site_id")
        parser.add_argument("--instance", default=None, help="Instance id (inst_…) to make leader.")

    def handle(self, *args, site_id, instance, **options):
        try:
            change = leader_assign(
                site_id=site_id, instance_id=instance, actor=Actor.command("force_election")
            )
        except ApiError as exc:
            raise CommandError(str(exc.detail)) from exc
        self.stdout.write(
            f"Site {change.site_id}: leader {change.previous_leader_id} → {change.leader_id} "
            f"(term {change.term})."
        )
