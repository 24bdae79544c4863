"""The operators' fleet dashboard in the admin (/admin/fleet/, linked from the admin index).

An adapter: it takes one fleet.selectors snapshot (two queries however many sites there are), renders
the same status, summary and alerts as GET /api/v1/fleet/health plus a row per site and the instances
that drift (behind their site's config or inventory version: the InstanceConfigDrift and
InstanceInventoryDrift alerts' definition, without their 10 minutes), and adds only presentation (links
into the admin, parsed timestamps, leaders by hostname). Staff only (admin_view), and only those who
may view sites. The page reloads itself every REFRESH_SECONDS (a meta refresh, no script);
`?refresh=N` changes that for one bookmark, `?refresh=0` turns it off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import reverse

from discovery.admin import may_view_runs, site_runs_url
from fleet import selectors
from instances.liveness import OFFLINE

REFRESH_SECONDS = 15
MAX_REFRESH_SECONDS = 3600


@dataclass(frozen=True)
class DriftRow:
    """An instance behind its site's config or inventory version (instances.selectors.is_drifting)."""

    site: selectors.SiteState
    instance: selectors.InstanceState
    site_url: str
    instance_url: str


@dataclass(frozen=True)
class SiteRow:
    site: selectors.SiteState
    live_instances: int  # healthy or degraded: heartbeating within the timeout
    change_url: str
    leader_url: str | None
    devices_url: str
    discovery_runs_url: str


def _site_url(site_id: str) -> str:
    return reverse("admin:sites_site_change", args=[quote(site_id)])


def _instance_url(instance_id: str | None) -> str | None:
    if instance_id is None:
        return None
    return reverse("admin:instances_instance_change", args=[quote(instance_id)])


def _site_row(site: selectors.SiteState) -> SiteRow:
    return SiteRow(
        site=site,
        live_instances=sum(1 for i in site.instances if i.status != OFFLINE),
        change_url=_site_url(site.id),
        leader_url=_instance_url(site.leader_id),
        devices_url=reverse("admin:inventory_device_changelist")
        + "?"
        + urlencode({"site__id__exact": site.id}),
        discovery_runs_url=site_runs_url(site.id),
    )


def _alert_row(alert: dict) -> dict:
    return {
        **alert,
        "since": datetime.fromisoformat(alert["since"]) if alert["since"] else None,
        "site_url": _site_url(alert["siteId"]),
        "instance_url": _instance_url(alert["instanceId"]),
    }


def _refresh_seconds(value: str | None) -> int:
    try:
        seconds = int(value) if value else REFRESH_SECONDS
    except ValueError:
        return REFRESH_SECONDS
    return min(max(seconds, 0), MAX_REFRESH_SECONDS)


def _drift_rows(state: selectors.FleetState) -> list[DriftRow]:
    return [
        DriftRow(
            site=site, instance=instance, site_url=_site_url(site.id), instance_url=_instance_url(instance.id)
        )
        for site in state.sites
        for instance in site.drifting
    ]


def fleet_dashboard(request):
    """GET /admin/fleet/ (wrapped in admin.site.admin_view in config/urls.py: staff, never cached)."""
    if not request.user.has_perm("sites.view_site"):
        raise PermissionDenied
    state = selectors.fleet_state()
    health = selectors.fleet_health(state)
    context = {
        **admin.site.each_context(request),
        "title": "Fleet dashboard",
        "status": health["status"],
        "summary": health["summary"],
        "alerts": [_alert_row(alert) for alert in health["alerts"]],
        "sites": [_site_row(site) for site in state.sites],
        "drift": _drift_rows(state),
        "updated_at": state.now,
        "refresh_seconds": _refresh_seconds(request.GET.get("refresh")),
        "may_view_runs": may_view_runs(request),
    }
    return TemplateResponse(request, "admin/fleet/dashboard.html", context)
