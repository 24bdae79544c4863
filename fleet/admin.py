"""Fleet-wide operator actions on sites. fleet sits on top of the other apps, so this is where a site
action that needs inventory as well as instances lives (each app adds its own part to the Site admin:
sites the form, instances the inline and forced election, fleet the cross-app actions)."""

from django.contrib import admin, messages

from core.admin import admin_actor, error_text
from core.errors import ApiError
from instances.admin import SiteWithInstancesAdmin
from inventory.refresh import inventory_refresh_request
from sites.models import Site


class FleetSiteAdmin(SiteWithInstancesAdmin):
    actions = (*SiteWithInstancesAdmin.actions, "refresh_inventory")

    @admin.action(description="Refresh inventory on all instances", permissions=["change"])
    def refresh_inventory(self, request, queryset):
        actor = admin_actor(request)
        for site_id in queryset.values_list("pk", flat=True):
            try:
                inventory_refresh_request(actor=actor, site_id=site_id)
            except ApiError as exc:
                self.message_user(request, f"{site_id}: {error_text(exc)}", messages.ERROR)
                continue
            self.message_user(
                request, f"{site_id}: refresh_inventory sent to every instance.", messages.SUCCESS
            )


admin.site.unregister(Site)
admin.site.register(Site, FleetSiteAdmin)
