"""Inventory admin: devices with their agents inline, discovery seeds, and the change log. Read-only.

Devices and seeds change through the API, imports and discovery (inventory.services, inventory.seeds),
so that every change set is one inventory version, one change-log row, one audit row and one event. The
admin therefore only looks, plus one action each, "Delete selected devices" and "Delete selected seeds",
a few lines around inventory.services.device_delete and inventory.seeds.seed_delete with the admin user
as the actor.

Secrets are never decrypted here: an agent shows which secrets it has ("readCommunity: ****") from
credential_keys, and the ciphertext column is not even loaded. Each site's inventory version is on
the site admin (sites/admin.py). The seeds' admin is a base here, registered by discovery/admin.py,
which adds "Run discovery now".

inventory's part of the Site admin (composed in fleet/admin.py) is SiteImportJobs: "Upload PromSNMP
inventory" on a site's page, a dry run that shows what would change, "Apply", and the job's page with
its progress bar; the work runs in import jobs (inventory.jobs), never in the request. Import jobs are
listed read-only.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Func, IntegerField, OuterRef, Subquery
from django.http import HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from core.admin import AutocompleteFilter, ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from inventory import jobs
from inventory.models import Agent, Device, DiscoverySeed, ImportJob, ImportPayload, InventoryChange
from inventory.parsing import MODES
from inventory.promsnmp import DEFAULT_KEY, FORMATS, PromSnmpFileError, read_document
from inventory.seeds import seed_delete
from inventory.services import device_delete
from snmp.credentials import MASK, VERSION_LABELS, masked
from snmp.targets import estimated_targets

# A change-log row may name 100,000 devices; its page lists this many ids per list.
IDS_SHOWN = 50
TARGETS_SHOWN = 3  # of a seed's targets, in the list
# Each deleted device is a change set of its own (a version, an event); more at once is a job for
# PUT inventory with mode replace, which removes any number of devices in one version.
MAX_DELETE = 500


def pretty_json(value) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


def secrets_masked(credential_keys: list[str]) -> str:
    """Which secrets are set, never their values: "readCommunity: ****, writeCommunity: ****"."""
    return ", ".join(f"{key}: {MASK}" for key in credential_keys) or "-"


class AgentInline(ReadOnlyAdmin, admin.TabularInline):
    """The device's SNMP agents, read-only; secrets shown as "****"."""

    model = Agent
    extra = 0
    can_delete = False
    fields = (
        "address",
        "port",
        "version_label",
        "snmp_type",
        "security_name",
        "security_level",
        "protocols",
        "secrets",
        "is_primary",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).defer("credentials")  # ciphertext: not needed, not loaded

    @admin.display(description="version")
    def version_label(self, agent: Agent) -> str:
        return VERSION_LABELS.get(agent.version, str(agent.version))

    @admin.display(description="type")
    def snmp_type(self, agent: Agent) -> str:
        return agent.config.get("type") or "-"

    @admin.display(description="security name")
    def security_name(self, agent: Agent) -> str:
        return agent.config.get("securityName") or "-"

    @admin.display(description="security level")
    def security_level(self, agent: Agent) -> str:
        return agent.config.get("securityLevel") or "-"

    @admin.display(description="protocols")
    def protocols(self, agent: Agent) -> str:
        parts = [
            f"{kind}: {agent.config[f'{kind}Protocol']}"
            for kind in ("auth", "priv")
            if agent.config.get(f"{kind}Protocol")
        ]
        return ", ".join(parts) or "-"

    @admin.display(description="secrets")
    def secrets(self, agent: Agent) -> str:
        return secrets_masked(agent.credential_keys)


# Devices change through the API and imports, so that versions and events stay right ("Delete selected
# devices", not delete: through the service, one version each).
@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "name",
        "site",
        "primary_address",
        "agent_count",
        "last_seen",
        "changed_version",
    )
    list_filter = (("site", AutocompleteFilter),)
    list_select_related = ("site",)
    search_fields = ("sys_name", "identity", "agents__address")
    search_help_text = "sysName, identity or agent address (a part of one is enough)."
    show_full_result_count = False  # a site may hold 100,000 devices: no COUNT(*) of all of them per page
    inlines = (AgentInline,)
    actions = ("delete_devices",)
    fields = (
        "id",
        "site",
        "identity",
        "sys_name",
        "sys_descr",
        "sys_contact",
        "sys_location",
        "sys_object_id",
        "interfaces",
        "metadata_pretty",
        "discovered_at",
        "last_seen",
        "discovered_by",
        "changed_version",
        "updated_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        # Subqueries, not a join: the agents__address search joins agents and the changelist then
        # makes the rows distinct; a Count over that join would count only the matching agents.
        agents = Agent.objects.filter(device=OuterRef("pk")).order_by()
        return (
            super()
            .get_queryset(request)
            .defer("fingerprint")
            .annotate(
                _primary_address=Subquery(agents.filter(is_primary=True).values("address")[:1]),
                _agent_count=Subquery(
                    agents.values("device").annotate(n=Count("*")).values("n"), output_field=IntegerField()
                ),
            )
        )

    @admin.display(description="sysName", ordering="sys_name")
    def name(self, device: Device) -> str:
        return device.sys_name or f"({device.identity})"

    @admin.display(description="primary agent", ordering="_primary_address")
    def primary_address(self, device: Device) -> str:
        return device._primary_address or "-"

    @admin.display(description="agents", ordering="_agent_count")
    def agent_count(self, device: Device) -> int:
        return device._agent_count or 0

    @admin.display(description="metadata")
    def metadata_pretty(self, device: Device) -> str:
        return pretty_json(device.metadata)

    def has_remove_permission(self, request) -> bool:
        return self.model_permission(request, "delete")

    @admin.action(description="Delete selected devices", permissions=["remove"])
    def delete_devices(self, request, queryset):
        if queryset.count() > MAX_DELETE:
            self.message_user(
                request,
                f"Select at most {MAX_DELETE} devices to delete (each one is an inventory version); "
                "remove more at once with PUT inventory, mode replace.",
                messages.ERROR,
            )
            return
        actor = admin_actor(request)
        deleted: list[str] = []
        for device_id, site_id, name in queryset.values_list("pk", "site_id", "sys_name"):
            try:
                version = device_delete(actor=actor, site_id=site_id, device_id=device_id)
            except NotFoundError:
                continue  # deleted meanwhile
            except ApiError as exc:
                self.message_user(request, f"{name or device_id}: {error_text(exc)}", messages.ERROR)
                continue
            deleted.append(f"{name or device_id} ({site_id} v{version})")
        if deleted:
            self.message_user(
                request, f"Deleted {len(deleted)} device(s): {', '.join(deleted)}.", messages.SUCCESS
            )
        else:
            self.message_user(request, "No device was deleted.", messages.WARNING)


# The seeds API and PUT inventory write seeds, each change an inventory version ("Delete selected seeds",
# not delete: through the service, one version each). Not registered here: discovery registers it with
# its "Run discovery now" action (discovery/admin.py), as fleet composes the Site admin; inventory
# cannot import discovery.
class DiscoverySeedAdminBase(ReadOnlyAdmin, admin.ModelAdmin):
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
    list_filter = (("site", AutocompleteFilter), "enabled")
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


class JsonArrayLength(Func):
    """The length of a JSON array column, in the database (the id lists can be long)."""

    function = "jsonb_array_length"  # PostgreSQL
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):  # the embedded default
        return super().as_sql(compiler, connection, function="json_array_length", **extra_context)


# Written by the inventory services only, in the same transaction as the change.
@admin.register(InventoryChange)
class InventoryChangeAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = (
        "site",
        "version",
        "change_type",
        "added_count",
        "updated_count",
        "removed_count",
        "source",
        "triggered_by",
        "created_at",
    )
    list_filter = (("site", AutocompleteFilter), "change_type", "source")
    list_select_related = ("site",)
    search_fields = ("triggered_by",)
    ordering = ("site", "-version")
    show_full_result_count = False
    fields = (
        "site",
        "version",
        "change_type",
        "source",
        "triggered_by",
        "created_at",
        "added_count",
        "added",
        "updated_count",
        "updated",
        "removed_count",
        "removed",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        queryset = (
            super()
            .get_queryset(request)
            .annotate(
                _added=JsonArrayLength(F("added_ids")),
                _updated=JsonArrayLength(F("updated_ids")),
                _removed=JsonArrayLength(F("removed_ids")),
            )
        )
        if request.resolver_match and request.resolver_match.url_name.endswith("_changelist"):
            queryset = queryset.defer("added_ids", "updated_ids", "removed_ids")
        return queryset

    @admin.display(description="added", ordering="_added")
    def added_count(self, change: InventoryChange) -> int:
        return change._added

    @admin.display(description="updated", ordering="_updated")
    def updated_count(self, change: InventoryChange) -> int:
        return change._updated

    @admin.display(description="removed", ordering="_removed")
    def removed_count(self, change: InventoryChange) -> int:
        return change._removed

    @staticmethod
    def _ids(ids: list[str]) -> str:
        shown = ", ".join(ids[:IDS_SHOWN]) or "-"
        return shown if len(ids) <= IDS_SHOWN else f"{shown} … and {len(ids) - IDS_SHOWN} more"

    @admin.display(description="added device ids")
    def added(self, change: InventoryChange) -> str:
        return self._ids(change.added_ids)

    @admin.display(description="updated device ids")
    def updated(self, change: InventoryChange) -> str:
        return self._ids(change.updated_ids)

    @admin.display(description="removed device ids")
    def removed(self, change: InventoryChange) -> str:
        return self._ids(change.removed_ids)


# --- import jobs: the Site admin's "Upload PromSNMP inventory" (composed in fleet/admin.py) ---------

IMPORT_PERMISSION = "inventory.change_device"  # every mode adds and updates devices (and seeds)
REMOVE_PERMISSION = "inventory.delete_device"  # replace also removes what the file does not have
ERRORS_SHOWN = 100  # of a failed job's invalid fields, on its page
_MODE_HELP = {
    "merge": "add new devices and seeds, update changed ones, keep the others",
    "replace": "as merge, and remove the devices (and seeds, if the file has any) it does not have",
    "addOnly": "only add new devices and seeds; leave existing ones as they are",
}
MODE_CHOICES = [(mode, f"{mode}: {_MODE_HELP[mode]}") for mode in MODES]


def _may_import(request) -> bool:
    return request.user.has_perm(IMPORT_PERMISSION)


def _may_import_mode(request, mode: str) -> bool:
    return _may_import(request) and (mode != "replace" or request.user.has_perm(REMOVE_PERMISSION))


class InventoryUploadForm(forms.Form):
    """Reads the file in the request (size, decryption with the key, JSON, an inventory document): what
    is wrong there is a form error. Whether its devices and seeds are valid is the dry run's to say."""

    file = forms.FileField(
        help_text="A PromSNMP inventory file, plain JSON or encrypted (as PromSNMP writes it), or the "
        "manager's own JSON document (export_inventory)."
    )
    key = forms.CharField(
        required=False,
        strip=False,
        max_length=64,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off"}),
        help_text=f"PROM_ENCRYPT_KEY of an encrypted file; empty: PromSNMP's default key {DEFAULT_KEY}. "
        "Used to read the file now and never stored.",
    )
    mode = forms.ChoiceField(choices=MODE_CHOICES, initial="merge", widget=forms.RadioSelect)
    format = forms.ChoiceField(
        choices=(("", "detect"), *((f, f) for f in FORMATS)),
        required=False,
        help_text="Detected from the file when left at 'detect'.",
    )

    def __init__(self, *args, may_remove: bool, **kwargs):
        super().__init__(*args, **kwargs)
        self.may_remove = may_remove

    def clean(self):
        data = super().clean()
        if data.get("mode") == "replace" and not self.may_remove:
            self.add_error("mode", "Replace removes devices: it needs the permission to delete devices.")
        upload = data.get("file")
        if upload is None:
            return data
        limit = settings.MAX_INVENTORY_BODY_BYTES
        if upload.size > limit:
            self.add_error(
                "file", f"The file is {upload.size} bytes; at most {limit} (MAX_INVENTORY_BODY_BYTES)."
            )
            return data
        try:
            data["loaded"] = read_document(
                upload.read(), key=data.get("key") or None, format=data.get("format") or None
            )
        except PromSnmpFileError as exc:
            self.add_error("key" if data.get("key") and "key" in str(exc) else "file", str(exc))
        return data


class SiteImportJobs:
    """Site admin mixin: "Upload PromSNMP inventory" on the site's page → the form → a dry run (an import
    job) whose page shows what would change → "Apply" (a second job) → its page, with a progress bar fed
    by a staff-only JSON view, then the result. Only for users who may change devices (replace: also
    delete them); the others see no button and get 403."""

    def get_urls(self):
        def wrap(view):
            return self.admin_site.admin_view(view)

        name = f"{self.opts.app_label}_{self.opts.model_name}"
        return [
            path(
                "<path:object_id>/import-inventory/",
                wrap(self.import_upload_view),
                name=f"{name}_import_inventory",
            ),
            path(
                "<path:object_id>/import-jobs/<str:job_id>/",
                wrap(self.import_job_view),
                name=f"{name}_import_job",
            ),
            path(
                "<path:object_id>/import-jobs/<str:job_id>/status/",
                wrap(self.import_job_status_view),
                name=f"{name}_import_job_status",
            ),
            path(
                "<path:object_id>/import-jobs/<str:job_id>/apply/",
                wrap(self.import_job_apply_view),
                name=f"{name}_import_job_apply",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        if _may_import(request):
            extra_context = {
                **(extra_context or {}),
                "import_inventory_url": reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_import_inventory", args=[object_id]
                ),
            }
        return super().change_view(request, object_id, form_url, extra_context)

    # --- helpers ---

    def _import_site(self, request, object_id: str):
        """The site, for a user who may see it and import into it (else 403; 404 for no such site)."""
        if not _may_import(request):
            raise PermissionDenied
        site = get_object_or_404(self.model, pk=object_id)
        if not self.has_view_or_change_permission(request, site):
            raise PermissionDenied
        return site

    def _job_url(self, view: str, site_id: str, job_id: str) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_import_{view}", args=[quote(site_id), job_id]
        )

    def _context(self, request, site, title: str) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "site_obj": site,
            "title": title,
            "site_url_admin": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[quote(site.pk)]
            ),
        }

    # --- views ---

    @method_decorator(sensitive_post_parameters("key"))
    def import_upload_view(self, request, object_id: str):
        site = self._import_site(request, object_id)
        may_remove = request.user.has_perm(REMOVE_PERMISSION)
        if request.method == "POST":
            form = InventoryUploadForm(request.POST, request.FILES, may_remove=may_remove)
            if form.is_valid():
                data, upload = form.cleaned_data, form.cleaned_data["file"]
                loaded = data["loaded"]
                try:
                    job = jobs.import_job_create(
                        actor=admin_actor(request),
                        site_id=site.pk,
                        document=loaded.document,
                        document_format=loaded.format,
                        mode=data["mode"],
                        dry_run=True,
                        source="admin",
                        file_name=upload.name or "",
                        encrypted=loaded.encrypted,
                        size_bytes=upload.size,
                    )
                except ApiError as exc:
                    form.add_error(None, error_text(exc))
                else:
                    if loaded.encrypted and not data.get("key"):
                        self.message_user(
                            request, "The file is encrypted; it was decrypted with PromSNMP's default key."
                        )
                    elif data.get("key") and not loaded.encrypted:
                        self.message_user(request, "The file is not encrypted; the key was not needed.")
                    return HttpResponseRedirect(self._job_url("job", site.pk, job.pk))
        else:
            form = InventoryUploadForm(may_remove=may_remove)
        context = {
            **self._context(request, site, f"Upload PromSNMP inventory into {site.pk}"),
            "form": form,
            "max_bytes": settings.MAX_INVENTORY_BODY_BYTES,
        }
        return TemplateResponse(request, "admin/inventory/import_upload.html", context)

    def import_job_view(self, request, object_id: str, job_id: str):
        site = self._import_site(request, object_id)
        job = get_object_or_404(ImportJob, pk=job_id, site_id=site.pk)
        applied = None
        can_apply = False
        if job.dry_run and job.status == ImportJob.Status.SUCCEEDED:
            applied = job.applies.first()
            can_apply = (
                applied is None
                and _may_import_mode(request, job.mode)
                and ImportPayload.objects.filter(job=job).exists()
            )
        error_fields = list((job.error or {}).get("fields", {}).items())
        context = {
            **self._context(request, site, "Dry run" if job.dry_run else "Import"),
            "job": job,
            "percent": jobs.job_percent(job),
            "status_url": self._job_url("job_status", site.pk, job.pk),
            "apply_url": self._job_url("job_apply", site.pk, job.pk) if can_apply else None,
            "applied": applied,
            "applied_url": self._job_url("job", site.pk, applied.pk) if applied else None,
            "preview_url": self._job_url("job", site.pk, job.preview_id) if job.preview_id else None,
            "upload_url": reverse(
                f"admin:{self.opts.app_label}_{self.opts.model_name}_import_inventory", args=[quote(site.pk)]
            ),
            "devices_url": reverse("admin:inventory_device_changelist")
            + "?"
            + urlencode({"site__id__exact": site.pk}),
            "error_fields": error_fields[:ERRORS_SHOWN],
            "error_fields_more": max(0, len(error_fields) - ERRORS_SHOWN),
            "preview_ttl_hours": int(jobs.PREVIEW_TTL.total_seconds() // 3600),
        }
        return TemplateResponse(request, "admin/inventory/import_job.html", context)

    def import_job_status_view(self, request, object_id: str, job_id: str):
        """What the job page polls: status and progress, a constant few queries (never cached: admin_view)."""
        if not _may_import(request):
            raise PermissionDenied
        job = (
            ImportJob.objects.filter(pk=job_id, site_id=object_id)
            .only("id", "status", "dry_run", "phase", "progress_done", "progress_total")
            .first()
        )
        if job is None:
            return JsonResponse({"error": "not_found", "detail": "No such import job."}, status=404)
        return JsonResponse({"id": job.pk, "status": job.status, **jobs.import_job_progress(job)})

    @method_decorator(require_POST)
    def import_job_apply_view(self, request, object_id: str, job_id: str):
        site = self._import_site(request, object_id)
        preview = get_object_or_404(ImportJob, pk=job_id, site_id=site.pk)
        if not _may_import_mode(request, preview.mode):
            raise PermissionDenied
        try:
            job = jobs.import_job_apply(actor=admin_actor(request), site_id=site.pk, job_id=preview.pk)
        except ApiError as exc:
            self.message_user(request, error_text(exc), messages.ERROR)
            return HttpResponseRedirect(self._job_url("job", site.pk, preview.pk))
        return HttpResponseRedirect(self._job_url("job", site.pk, job.pk))


# The jobs write themselves (inventory.jobs); this only lists them, each linked to its page.
@admin.register(ImportJob)
class ImportJobAdmin(ReadOnlyAdmin, admin.ModelAdmin):
    list_display = ("job", "site", "kind", "status", "mode", "file_name", "requested_by", "created_at")
    list_display_links = None  # each row's link is to the job's page (the "job" column)
    list_filter = ("status", "dry_run", ("site", AutocompleteFilter))
    list_select_related = ("site",)
    search_fields = ("id", "file_name", "requested_by")
    show_full_result_count = False

    def get_queryset(self, request):
        return super().get_queryset(request).defer("actor", "result", "sample", "error")

    def has_view_permission(self, request, obj=None) -> bool:
        return _may_import(request)

    @admin.display(description="job", ordering="id")
    def job(self, job: ImportJob) -> str:
        url = reverse("admin:sites_site_import_job", args=[quote(job.site_id), job.pk])
        return format_html('<a href="{}">{}</a>', url, job.pk)

    @admin.display(description="kind", ordering="dry_run")
    def kind(self, job: ImportJob) -> str:
        return "dry run" if job.dry_run else "import"
