"""Discovery seed and run admin, read-only.

Seeds: the seeds API and PUT inventory write them, as inventory versions; "Delete selected seeds" is a few
lines around discovery.seeds.seed_delete with the admin user as the actor. Secrets are never decrypted
here: the SNMP settings show "****" for each secret set.

Runs: triggered, dispatched and reported through discovery.runs; "Cancel selected runs" is a few lines
around discovery.runs.run_cancel (the same service as POST …/discovery-runs/{runId}/cancel).
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.utils.html import format_html

from core.admin import ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from core.snmpconfig import masked
from discovery.models import ACTIVE_RUN_STATUSES, DiscoveryRun, DiscoverySeed
from discovery.runs import RunFinished, run_cancel
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


# Runs are written by discovery.runs only (trigger, dispatch, the leader's reports, the sweep); the one
# write here is "Cancel selected runs", through run_cancel, which sends cancel_discovery and audits.
@admin.register(DiscoveryRun)
class DiscoveryRunAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "site",
        "status",
        "triggered_by",
        "dispatched_to",
        "created_at",
        "completed_at",
        "targets_scanned",
        "devices_found",
        "errors",
    )
    list_filter = ("status", "triggered_by", "site")
    list_select_related = ("site",)
    search_fields = ("id",)
    show_full_result_count = False  # runs accumulate; no COUNT(*) of all of them per page
    actions = ("cancel_runs",)
    fields = (
        "id",
        "site",
        "status",
        "seed_ids_pretty",
        "triggered_by",
        "requested_by",
        "dispatched_to",
        "dispatch_history",
        "dispatch_count",
        "leader_term",
        "targets_estimated",
        "targets_scanned",
        "devices_found",
        "devices_new",
        "devices_updated",
        "devices_posted",
        "errors",
        "error_detail",
        "created_at",
        "dispatched_at",
        "started_at",
        "completed_at",
    )
    readonly_fields = fields

    @admin.display(description="seeds")
    def seed_ids_pretty(self, run: DiscoveryRun) -> str:
        return ", ".join(run.seed_ids) or "-"

    def has_cancel_permission(self, request) -> bool:
        return self.model_permission(request, "change")

    @admin.action(description="Cancel selected runs", permissions=["cancel"])
    def cancel_runs(self, request, queryset):
        actor = admin_actor(request)
        cancelled: list[str] = []
        ended: list[str] = []
        selected = queryset.values_list("pk", "site_id", "status").order_by("created_at", "pk")
        for run_id, site_id, status in selected:
            if status not in ACTIVE_RUN_STATUSES:
                ended.append(f"{run_id} ({status})")
                continue  # the service would refuse it too; no lock taken for it
            try:
                run_cancel(actor=actor, site_id=site_id, run_id=run_id)
            except RunFinished as exc:  # ended meanwhile (the leader's report, the sweep)
                ended.append(f"{run_id} ({exc.status})")
                continue
            except NotFoundError:
                continue  # deleted meanwhile, with its site
            except ApiError as exc:
                self.message_user(request, f"{run_id}: {error_text(exc)}", messages.ERROR)
                continue
            cancelled.append(run_id)
        if cancelled:
            self.message_user(
                request, f"Cancelled {len(cancelled)} run(s): {', '.join(cancelled)}.", messages.SUCCESS
            )
        if ended:
            self.message_user(
                request, f"Already ended, left as they were: {', '.join(ended)}.", messages.WARNING
            )
        if not cancelled and not ended:
            self.message_user(request, "No run was cancelled.", messages.WARNING)
