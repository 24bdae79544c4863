from django.contrib import admin
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from core import metrics as core_metrics
from core import views as core_views
from discovery import runs_api as discovery_runs_api
from fleet import api as fleet_api
from fleet import sd_api as fleet_sd_api
from fleet.dashboard import fleet_dashboard
from instances import api as instances_api
from instances import sites_api as instances_sites_api
from inventory import api as inventory_api
from inventory import refresh_api as inventory_refresh_api
from inventory import seeds_api as inventory_seeds_api
from sites import api as sites_api


def v1(route: str, view, name: str):
    """The spec's path without a trailing slash; the same path with one is served too (no redirect)."""
    return [path(f"api/v1/{route}", view, name=name), path(f"api/v1/{route}/", view)]


api_v1 = [
    *v1("sites", instances_sites_api.SiteListView.as_view(), "sites"),
    *v1("sites/<str:site_id>", instances_sites_api.SiteDetailView.as_view(), "site-detail"),
    *v1("sites/<str:site_id>/config", sites_api.SiteConfigView.as_view(), "site-config"),
    *v1("sites/<str:site_id>/inventory", inventory_api.InventoryView.as_view(), "inventory"),
    *v1(
        "sites/<str:site_id>/inventory/changes",
        inventory_api.InventoryChangesView.as_view(),
        "inventory-changes",
    ),
    *v1(
        "sites/<str:site_id>/inventory/import-jobs/<str:job_id>",
        inventory_api.ImportJobView.as_view(),
        "inventory-import-job",
    ),
    *v1(
        "sites/<str:site_id>/inventory/devices",
        inventory_api.InventoryDevicesView.as_view(),
        "inventory-devices",
    ),
    *v1(
        "sites/<str:site_id>/inventory/devices/<str:device_id>",
        inventory_api.DeviceDetailView.as_view(),
        "inventory-device",
    ),
    *v1("sites/<str:site_id>/discovery-seeds", inventory_seeds_api.SeedListView.as_view(), "seeds"),
    *v1(
        "sites/<str:site_id>/discovery-seeds/<str:seed_id>",
        inventory_seeds_api.SeedDetailView.as_view(),
        "seed-detail",
    ),
    *v1(
        "sites/<str:site_id>/discovery-seeds/<str:seed_id>/run",
        discovery_runs_api.SeedRunView.as_view(),
        "seed-run",
    ),
    *v1("sites/<str:site_id>/discovery-runs", discovery_runs_api.RunListView.as_view(), "discovery-runs"),
    *v1(
        "sites/<str:site_id>/discovery-runs/<str:run_id>",
        discovery_runs_api.RunDetailView.as_view(),
        "discovery-run",
    ),
    *v1(
        "sites/<str:site_id>/discovery-runs/<str:run_id>/cancel",
        discovery_runs_api.RunCancelView.as_view(),
        "discovery-run-cancel",
    ),
    *v1(
        "sites/<str:site_id>/refresh-inventory",
        inventory_refresh_api.RefreshInventoryView.as_view(),
        "refresh-inventory",
    ),
    *v1("instances/register", instances_api.RegisterView.as_view(), "instance-register"),
    *v1("instances/<str:instance_id>/heartbeat", instances_api.HeartbeatView.as_view(), "instance-heartbeat"),
    *v1("instances/<str:instance_id>", instances_api.InstanceDetailView.as_view(), "instance-detail"),
    *v1("fleet/health", fleet_api.FleetHealthView.as_view(), "fleet-health"),
    *v1("fleet/metrics", fleet_api.FleetMetricsView.as_view(), "fleet-metrics"),
    *v1("sd/instances", fleet_sd_api.SdInstancesView.as_view(), "sd-instances"),
    *v1("sd/devices", fleet_sd_api.SdDevicesView.as_view(), "sd-devices"),
    *v1("audit-log", core_views.AuditLogView.as_view(), "audit-log"),
    *v1("schema", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), "schema"),
    *v1(
        "docs",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        "docs",
    ),
]

urlpatterns = [
    *api_v1,
    path("health/live", core_views.live, name="health-live"),
    path("health/ready", core_views.ready, name="health-ready"),
    # The operators' fleet dashboard, an admin page (staff only) outside the admin's own URLs.
    path("admin/fleet/", admin.site.admin_view(fleet_dashboard), name="fleet-dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", core_metrics.metrics, name="metrics"),
]

handler400 = "core.errors.json_bad_request"
handler403 = "core.errors.json_permission_denied"
handler404 = "core.errors.json_not_found"
handler500 = "core.errors.json_server_error"
