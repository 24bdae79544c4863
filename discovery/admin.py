"""Discovery seed admin: read-only (the seeds API and PUT inventory write them, as inventory versions),
plus "Delete selected seeds", a few lines around discovery.seeds.seed_delete with the admin user as
the actor. Secrets are never decrypted here: the SNMP settings show "****" for each secret set.
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from core.snmpconfig import masked
from discovery.models import DiscoverySeed
from discovery.seeds import seed_delete
from discovery.selectors import estimated_targets

TARGETS_SHOWN = 3


# The seeds API and PUT inventory write seeds, each change an inventory version ("Delete selected seeds",
# not delete: through the service, one version each).
@admin.register(DiscoverySeed)
class DiscoverySeedAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "name",
        "site",
        "targets_short",
        "enabled",
        "schedule",
        "last_run",
        "last_run_status",
        "devices_found",
    )
    list_filter = ("site", "enabled")
    list_select_related = ("site",)
    search_fields = ("name",)
    actions = ("delete_seeds",)
    fields = (
        "id",
        "site",
        "name",
        "targets_all",
        "estimated",
        "snmp_settings",
        "schedule",
        "enabled",
        "options_pretty",
        "last_run",
        "last_run_status",
        "devices_found",
        "created_at",
        "updated_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("credentials")  # ciphertext: never shown, not loaded

    @admin.display(description="targets")
    def targets_short(self, seed: DiscoverySeed) -> str:
        shown = ", ".join(seed.targets[:TARGETS_SHOWN])
        more = len(seed.targets) - TARGETS_SHOWN
        return f"{shown} (+{more} more)" if more > 0 else shown or "-"

    @admin.display(description="targets")
    def targets_all(self, seed: DiscoverySeed) -> str:
        return ", ".join(seed.targets) or "-"

    @admin.display(description="addresses covered")
    def estimated(self, seed: DiscoverySeed) -> int:
        return estimated_targets(seed.targets)

    @admin.display(description="SNMP settings")
    def snmp_settings(self, seed: DiscoverySeed) -> str:
        return format_html(
            "<pre>{}</pre>", json.dumps(masked(seed.snmp_config, seed.credential_keys), indent=2)
        )

    @admin.display(description="options")
    def options_pretty(self, seed: DiscoverySeed) -> str:
        return format_html("<pre>{}</pre>", json.dumps(seed.options, indent=2, sort_keys=True))

    def has_remove_permission(self, request) -> bool:
        return self.model_permission(request, "delete")

    @admin.action(description="Delete selected seeds", permissions=["remove"])
    def delete_seeds(self, request, queryset):
        actor = admin_actor(request)
        deleted: list[str] = []
        for seed_id, site_id, name in queryset.values_list("pk", "site_id", "name"):
            try:
                seed_delete(actor=actor, site_id=site_id, seed_id=seed_id)
            except NotFoundError:
                continue  # deleted meanwhile
            except ApiError as exc:
                self.message_user(request, f"{name}: {error_text(exc)}", messages.ERROR)
                continue
            deleted.append(f"{name} ({site_id})")
        if deleted:
            self.message_user(
                request, f"Deleted {len(deleted)} seed(s): {', '.join(deleted)}.", messages.SUCCESS
            )
        else:
            self.message_user(request, "No seed was deleted.", messages.WARNING)
