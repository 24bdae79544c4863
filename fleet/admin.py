"""The Site admin, registered once. fleet sits on top of every app, so it composes what each contributes:
sites the form, the fields and the writes (SiteAdminBase); instances the status, instance count and
leader columns, the instances inline and "Force election"; inventory "Upload PromSNMP inventory" (its
pages, SiteImportJobs); and fleet "Refresh inventory", an action that needs inventory as well as
instances."""

from django.contrib import admin, messages

from core.admin import admin_actor, error_text
from core.errors import ApiError
from discovery.admin import SiteDiscoveryRuns
from instances.admin import (
    SITE_INSTANCE_FILTERS,
    SITE_STATE_FIELDS,
    SITE_STATUS_COLUMNS,
    InstanceInline,
    SiteInstancesColumns,
    force_election,
)
from inventory.admin import SiteImportJobs
from inventory.refresh import inventory_refresh_request
from sites.admin import SITE_LIST_FILTERS, STATE_FIELDS, SiteAdminBase, site_fieldsets
from sites.models import Site


@admin.action(description="Refresh inventory on all instances", permissions=["change"])
def refresh_inventory(modeladmin: admin.ModelAdmin, request, queryset) -> None:
    actor = admin_actor(request)
    for site_id in queryset.values_list("pk", flat=True):
        try:
            inventory_refresh_request(actor=actor, site_id=site_id)
        except ApiError as exc:
            modeladmin.message_user(request, f"{site_id}: {error_text(exc)}", messages.ERROR)
            continue
        modeladmin.message_user(
            request, f"{site_id}: refresh_inventory sent to every instance.", messages.SUCCESS
        )


# discovery contributes "Run discovery now": an action, and a button on the site's page (SiteDiscoveryRuns).
@admin.register(Site)
class SiteAdmin(SiteDiscoveryRuns, SiteImportJobs, SiteInstancesColumns, SiteAdminBase):
    list_display = ("id", "label", *SITE_STATUS_COLUMNS, "config_version", "leader_term", "inventory_version")
    list_filter = (*SITE_LIST_FILTERS, *SITE_INSTANCE_FILTERS)
    fieldsets = site_fieldsets((*SITE_STATE_FIELDS, *STATE_FIELDS))
    readonly_fields = ("config_version", *SITE_STATE_FIELDS, *STATE_FIELDS)
    inlines = (InstanceInline,)
    actions = (force_election, refresh_inventory, "run_discovery_now")
