"""Inventory admin: devices with their agents inline, discovery seeds, and the change log. Read-only.

Devices and seeds change through the API, imports and discovery (inventory.services, inventory.seeds),
so that every change set is one inventory version, one change-log row, one audit row and one event. The
admin therefore only looks, plus one action each, "Delete selected devices" and "Delete selected seeds",
a few lines around inventory.services.device_delete and inventory.seeds.seed_delete with the admin user
as the actor.

Secrets are never decrypted here: an agent shows which secrets it has ("readCommunity: ****") from
credential_keys, and the ciphertext column is not even loaded. Each site's inventory version is on
the site admin (sites/admin.py).
"""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import Count, F, Func, IntegerField, OuterRef, Subquery
from django.utils.html import format_html

from core.admin import AutocompleteFilter, ReadOnlyAdmin, admin_actor, error_text
from core.errors import ApiError, NotFoundError
from inventory.models import Agent, Device, DiscoverySeed, InventoryChange
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
