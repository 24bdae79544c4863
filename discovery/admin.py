"""Discovery admin: runs (read-only, followed live, cancelled) and "Run discovery now" on sites and seeds.

Runs are written by discovery.runs only (trigger, dispatch, the leader's reports, the sweep); the admin
is a few lines around its services, with the admin user as the actor:
- The runs list filters by site, status and trigger and shows each run's progress. A run's page follows
  the run while it is active: static/discovery/run_progress.js asks `<run>/progress/` (a staff-only JSON
  view: the page's fields as the admin renders them) every POLL_SECONDS and stops once the run has ended.
- Cancel: "Cancel selected runs" and the "Cancel run" button of an active run's page, around run_cancel
  (the service of POST …/discovery-runs/{runId}/cancel).
- Start: "Run discovery now" on sites (an action, and a button on the site's page: every enabled seed of
  the site) and on seeds (the selected seeds, one run per site), around run_start (the service of
  POST …/discovery-runs), triggeredBy manual.

Starting and cancelling both take the change permission on discovery runs (RUN_PERMISSION); viewing runs
takes view (or change). The seeds' admin is inventory's base with "Run discovery now" added, registered
here; SiteDiscoveryRuns is discovery's part of the Site admin (composed in fleet/admin.py): inventory
and sites cannot import discovery.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlencode

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import AdminReadonlyField
from django.contrib.admin.utils import flatten_fieldsets, quote, unquote
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseNotAllowed, HttpResponseRedirect, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from core.admin import AutocompleteFilter, ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError, error_body
from discovery.models import ACTIVE_RUN_STATUSES, DiscoveryRun, RunStatus
from discovery.runs import MANUAL, RunFinished, RunInProgress, run_cancel, run_start
from discovery.selectors import run_live_state, run_percent
from instances.models import Instance
from inventory.admin import DiscoverySeedAdminBase
from inventory.models import DiscoverySeed

POLL_SECONDS = 2  # how often an active run's page asks for its progress
# Sites a "Run discovery now" may start at once: a run (a transaction, a message) per site, in the request.
MAX_SITES_PER_ACTION = 100
RUN_PERMISSION = "discovery.change_discoveryrun"  # start and cancel runs


def may_operate_runs(request) -> bool:
    return request.user.has_perm(RUN_PERMISSION)


def may_view_runs(request) -> bool:
    return request.user.has_perm("discovery.view_discoveryrun") or may_operate_runs(request)


def run_url(run_id: str) -> str:
    return reverse("admin:discovery_discoveryrun_change", args=[quote(run_id)])


def site_runs_url(site_id: str) -> str:
    """The runs list, filtered to the site."""
    return reverse("admin:discovery_discoveryrun_changelist") + "?" + urlencode({"site__id__exact": site_id})


def start_runs(
    modeladmin: admin.ModelAdmin, request, requests: Iterable[tuple[str, list[str] | None]]
) -> DiscoveryRun | None:
    """run_start for each (site, seed ids or None for every enabled seed), with a message each that links
    to the new run (or to the active run a seed is already in). Returns the last run started."""
    actor = admin_actor(request)
    started = None
    for site_id, seed_ids in requests:
        try:
            run = run_start(actor=actor, site_id=site_id, seed_ids=seed_ids, triggered_by=MANUAL)
        except RunInProgress as exc:
            text = format_html(
                'Not started on {}: {} <a href="{}">Open {}</a>',
                site_id,
                exc.detail,
                run_url(exc.run_id),
                exc.run_id,
            )
            modeladmin.message_user(request, text, messages.ERROR)
            continue
        except ApiError as exc:
            modeladmin.message_user(request, f"Not started on {site_id}: {error_text(exc)}", messages.ERROR)
            continue
        started = run
        link = format_html('<a href="{}">{}</a>', run_url(run.pk), run.pk)
        seeds = f"{len(run.seed_ids)} seed(s), {run.targets_estimated} addresses"
        if run.status == RunStatus.PENDING:
            text = format_html(
                "Discovery run {} on {} ({}) is pending: the site has no live leader; "
                "it is sent to the next one.",
                link,
                site_id,
                seeds,
            )
            modeladmin.message_user(request, text, messages.WARNING)
        else:
            leader = Instance.objects.filter(pk=run.dispatched_to).values_list("hostname", flat=True)
            hostname = leader.first()
            text = format_html(
                "Discovery run {} on {} ({}) sent to leader {} ({}).",
                link,
                site_id,
                seeds,
                hostname,
                run.dispatched_to,
            )
            modeladmin.message_user(request, text, messages.SUCCESS)
    return started


def too_many_sites(modeladmin: admin.ModelAdmin, request, count: int, select: str) -> bool:
    if count <= MAX_SITES_PER_ACTION:
        return False
    modeladmin.message_user(
        request,
        f"{select} at most {MAX_SITES_PER_ACTION} sites (a run each); "
        "start more with POST …/discovery-runs or the sites' schedules.",
        messages.ERROR,
    )
    return True


# --- the runs ----------------------------------------------------------------------------------------


# Runs are written by discovery.runs only; the writes here are "Cancel", through run_cancel, which sends
# cancel_discovery and audits.
@admin.register(DiscoveryRun)
class DiscoveryRunAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "id",
        "site",
        "status",
        "progress",
        "devices_found",
        "errors",
        "triggered_by",
        "dispatched_to",
        "created_at",
        "completed_at",
    )
    list_filter = ("status", "triggered_by", ("site", AutocompleteFilter))
    list_select_related = ("site",)
    search_fields = ("id",)
    show_full_result_count = False  # runs accumulate; no COUNT(*) of all of them per page
    actions = ("cancel_runs",)
    fieldsets = (
        (None, {"fields": ("id", "site", "status", "progress", "seed_ids_pretty")}),
        (
            "Results",
            {"fields": ("devices_found", "devices_new", "devices_updated", "devices_posted", "errors")},
        ),
        ("Errors", {"fields": ("error_detail",)}),
        (
            "Dispatch",
            {"fields": ("dispatched_to_host", "dispatch_history_hosts", "dispatch_count", "leader_term")},
        ),
        (
            "Trigger and times",
            {
                "fields": (
                    "triggered_by",
                    "requested_by",
                    "created_at",
                    "dispatched_at",
                    "started_at",
                    "completed_at",
                )
            },
        ),
    )
    readonly_fields = flatten_fieldsets(fieldsets)

    # --- what the pages show

    @admin.display(description="progress")
    def progress(self, run: DiscoveryRun) -> str:
        percent = run_percent(run)
        if percent is None:
            return f"{run.targets_scanned} scanned"
        return format_html(
            '<progress class="run-progress" max="100" value="{}"></progress> {} / {} addresses ({} %)',
            percent,
            run.targets_scanned,
            run.targets_estimated,
            percent,
        )

    @admin.display(description="seeds")
    def seed_ids_pretty(self, run: DiscoveryRun) -> str:
        return ", ".join(run.seed_ids) or "-"

    @staticmethod
    def _instance(run: DiscoveryRun, instance_id: str) -> str:
        """An instance by hostname, its id on hover (one query per run, for every instance it had)."""
        if not hasattr(run, "_hostnames"):
            known = Instance.objects.filter(pk__in=run.dispatch_history)
            run._hostnames = dict(known.values_list("pk", "hostname"))
        hostname = run._hostnames.get(instance_id)
        if hostname is None:
            return format_html('<span title="{}">{} (deregistered)</span>', instance_id, instance_id)
        return format_html('<span title="{}">{}</span>', instance_id, hostname)

    @admin.display(description="dispatched to")
    def dispatched_to_host(self, run: DiscoveryRun) -> str:
        return self._instance(run, run.dispatched_to) if run.dispatched_to else "-"

    @admin.display(description="dispatch history")
    def dispatch_history_hosts(self, run: DiscoveryRun) -> str:
        if not run.dispatch_history:
            return "-"
        return format_html_join(" → ", "{}", ((self._instance(run, i),) for i in run.dispatch_history))

    # --- the run's page: live progress and a Cancel button

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/progress/",
                self.admin_site.admin_view(self.progress_view),
                name=f"{name}_progress",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name=f"{name}_cancel",
            ),
            *super().get_urls(),
        ]

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        if obj is not None:
            active = obj.status in ACTIVE_RUN_STATUSES
            context.update(
                run_active=active,
                poll_seconds=POLL_SECONDS,
                progress_url=reverse("admin:discovery_discoveryrun_progress", args=[quote(obj.pk)]),
                cancel_url=reverse("admin:discovery_discoveryrun_cancel", args=[quote(obj.pk)])
                if active and self.has_cancel_permission(request)
                else None,
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def fields_html(self, run: DiscoveryRun) -> dict[str, str]:
        """Every field of the run's page as the admin renders it there (escaped HTML)."""
        form = forms.modelform_factory(DiscoveryRun, fields=())(instance=run)
        return {
            name: str(AdminReadonlyField(form, name, False, model_admin=self).contents())
            for name in flatten_fieldsets(self.fieldsets)
        }

    def progress_view(self, request, object_id: str):
        """GET <run>/progress/ → {run: the run's state, fields: {name: HTML}}: what the run's page puts
        in place while the run is active. Staff (admin_view) who may view runs."""
        if request.method != "GET":
            response = JsonResponse(error_body("method_not_allowed", "Only GET."), status=405)
            response["Allow"] = "GET"
            return response
        if not self.has_view_permission(request):
            denied = error_body("forbidden", "You may not view discovery runs.")
            return JsonResponse(denied, status=403)
        run_id = unquote(object_id)
        run = DiscoveryRun.objects.select_related("site").filter(pk=run_id).first()
        if run is None:
            return JsonResponse(error_body("not_found", f"No discovery run {run_id!r}."), status=404)
        return JsonResponse({"run": run_live_state(run), "fields": self.fields_html(run)})

    def cancel_view(self, request, object_id: str):
        """POST <run>/cancel/: the "Cancel run" button; back to the run's page with what happened."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_cancel_permission(request):
            raise PermissionDenied
        run_id = unquote(object_id)
        site_id = DiscoveryRun.objects.filter(pk=run_id).values_list("site_id", flat=True).first()
        if site_id is None:
            self.message_user(request, f"No discovery run {run_id!r}.", messages.ERROR)
            return HttpResponseRedirect(reverse("admin:discovery_discoveryrun_changelist"))
        try:
            run_cancel(actor=admin_actor(request), site_id=site_id, run_id=run_id)
        except RunFinished as exc:  # ended meanwhile (the leader's report, the sweep)
            self.message_user(
                request, f"Not cancelled: {run_id} had already ended ({exc.status}).", messages.WARNING
            )
        except ApiError as exc:
            self.message_user(request, f"Not cancelled: {run_id}: {error_text(exc)}", messages.ERROR)
        else:
            self.message_user(request, f"Cancelled {run_id}.", messages.SUCCESS)
        return HttpResponseRedirect(run_url(run_id))

    # --- the list's action

    def has_cancel_permission(self, request) -> bool:
        return may_operate_runs(request)

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


# --- "Run discovery now" on seeds ----------------------------------------------------------------------


@admin.register(DiscoverySeed)
class DiscoverySeedAdmin(DiscoverySeedAdminBase):
    """inventory's seeds admin with "Run discovery now" (discovery may import inventory, not the reverse)."""

    actions = (*DiscoverySeedAdminBase.actions, "run_seeds_now")

    def has_run_discovery_permission(self, request) -> bool:
        return may_operate_runs(request)

    @admin.action(description="Run discovery now (one run per site)", permissions=["run_discovery"])
    def run_seeds_now(self, request, queryset):
        by_site: dict[str, list[str]] = {}
        for seed_id, site_id in queryset.order_by("site_id", "created_at", "pk").values_list("pk", "site_id"):
            by_site.setdefault(site_id, []).append(seed_id)
        if not too_many_sites(self, request, len(by_site), "Select seeds of"):
            start_runs(self, request, by_site.items())


# --- "Run discovery now" on sites: discovery's part of the Site admin (composed in fleet/admin.py) ------


class SiteDiscoveryRuns:
    """Site admin mixin: "Run discovery now" (every enabled seed of the site) as an action and as a button
    on the site's page, and a link from that page to the site's runs."""

    def has_run_discovery_permission(self, request) -> bool:
        return may_operate_runs(request)

    @admin.action(description="Run discovery now (every enabled seed)", permissions=["run_discovery"])
    def run_discovery_now(self, request, queryset):
        site_ids = list(queryset.values_list("pk", flat=True)[: MAX_SITES_PER_ACTION + 1])
        if not too_many_sites(self, request, len(site_ids), "Select"):
            start_runs(self, request, [(site_id, None) for site_id in site_ids])

    def get_urls(self):
        name = f"{self.opts.app_label}_{self.opts.model_name}_run_discovery"
        view = self.admin_site.admin_view(self.run_discovery_view)
        return [path("<path:object_id>/run-discovery/", view, name=name), *super().get_urls()]

    def run_discovery_view(self, request, object_id: str):
        """POST <site>/run-discovery/: the site page's button; on to the new run's page, or back."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_run_discovery_permission(request):
            raise PermissionDenied
        site_id = unquote(object_id)
        run = start_runs(self, request, [(site_id, None)])
        if run is not None:
            return HttpResponseRedirect(run_url(run.pk))
        return HttpResponseRedirect(reverse("admin:sites_site_change", args=[quote(site_id)]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        site_id = unquote(object_id)
        extra_context = {
            **(extra_context or {}),
            "discovery_runs_url": site_runs_url(site_id) if may_view_runs(request) else None,
            "run_discovery_url": reverse("admin:sites_site_run_discovery", args=[quote(site_id)])
            if self.has_run_discovery_permission(request)
            else None,
        }
        return super().change_view(request, object_id, form_url, extra_context)
