"""Discovery run admin, read-only (the seeds' admin is inventory's).

Runs: triggered, dispatched and reported through discovery.runs; "Cancel selected runs" is a few lines
around discovery.runs.run_cancel (the same service as POST …/discovery-runs/{runId}/cancel).
"""

from __future__ import annotations

from django.contrib import admin, messages

from core.admin import AutocompleteFilter, ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from discovery.models import ACTIVE_RUN_STATUSES, DiscoveryRun
from discovery.runs import RunFinished, run_cancel


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
    list_filter = ("status", "triggered_by", ("site", AutocompleteFilter))
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
