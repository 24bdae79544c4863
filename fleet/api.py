"""Fleet API: /api/v1/fleet/health and /api/v1/fleet/metrics (read-only aggregates over the sites the
token may see)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response

from core.api import ApiView, error_responses, schema
from core.errors import InvalidInput
from core.permissions import READERS
from fleet import selectors
from fleet.metrics import CONTENT_TYPE, fleet_prometheus_text

FORMATS = ("json", "prometheus")
STATUS = ["healthy", "degraded", "offline"]

# --- output (documentation of what the selectors render) ------------------------------------------

FleetHealthOut = schema(
    "FleetHealth",
    {
        "status": serializers.ChoiceField(
            STATUS,
            help_text="healthy: every site is healthy (or there is none); offline: no site has a live "
            "instance; degraded otherwise.",
        ),
        "timestamp": serializers.DateTimeField(),
        "summary": schema(
            "FleetHealthSummary",
            {
                "totalSites": serializers.IntegerField(),
                "healthySites": serializers.IntegerField(),
                "degradedSites": serializers.IntegerField(),
                "offlineSites": serializers.IntegerField(),
                "totalInstances": serializers.IntegerField(),
                "healthyInstances": serializers.IntegerField(help_text="By liveness (heartbeat age)."),
                "totalDevices": serializers.IntegerField(),
                "totalAgents": serializers.IntegerField(),
            },
        )(),
        "sites": schema(
            "FleetHealthSite",
            {
                "id": serializers.CharField(),
                "status": serializers.ChoiceField(STATUS),
                "instances": serializers.IntegerField(help_text="All registered instances, live or not."),
                "devices": serializers.IntegerField(),
            },
        )(many=True),
        "alerts": schema(
            "FleetAlert",
            {
                # A pattern, not an enum: an enum named "type" exists in the schema already (agents).
                "type": serializers.RegexField(
                    "^(" + "|".join(selectors.ALERT_TYPES) + ")$",
                    help_text=", ".join(selectors.ALERT_TYPES) + ".",
                ),
                "severity": serializers.ChoiceField([selectors.CRITICAL, selectors.WARNING]),
                "siteId": serializers.CharField(),
                "instanceId": serializers.CharField(allow_null=True, help_text="For instance alerts."),
                "message": serializers.CharField(),
                "since": serializers.DateTimeField(
                    allow_null=True, help_text="When the condition began, where the manager knows it."
                ),
            },
        )(many=True),
    },
)
FleetMetricsOut = schema(
    "FleetMetrics",
    {
        "timestamp": serializers.DateTimeField(),
        "sitesTotal": serializers.IntegerField(),
        "instancesTotal": schema(
            "FleetInstanceCounts",
            {
                "healthy": serializers.IntegerField(),
                "degraded": serializers.IntegerField(),
                "offline": serializers.IntegerField(),
            },
        )(),
        "devicesTotal": serializers.IntegerField(),
        "agentsTotal": serializers.IntegerField(),
        "sites": schema(
            "FleetSiteMetrics",
            {
                "id": serializers.CharField(),
                "status": serializers.ChoiceField(STATUS),
                "instances": serializers.IntegerField(),
                "healthyInstances": serializers.IntegerField(),
                "devices": serializers.IntegerField(),
                "agents": serializers.IntegerField(),
                "hasLeader": serializers.BooleanField(),
                "inventoryVersion": serializers.IntegerField(),
            },
        )(many=True),
    },
)

PROMETHEUS_EXAMPLE = """\
# HELP promsnmp_fleet_sites_total Total number of sites
# TYPE promsnmp_fleet_sites_total gauge
promsnmp_fleet_sites_total 3

# HELP promsnmp_fleet_instances_total Total instances by status
# TYPE promsnmp_fleet_instances_total gauge
promsnmp_fleet_instances_total{status="healthy"} 7
promsnmp_fleet_instances_total{status="degraded"} 0
promsnmp_fleet_instances_total{status="offline"} 0
...
"""


class IgnoreFormatOverride(DefaultContentNegotiation):
    """`?format=` is this endpoint's own parameter (prometheus or json), not DRF's renderer switch;
    errors are always JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


# --- views -----------------------------------------------------------------------------------------


class FleetHealthView(ApiView):
    allowed_scopes = {"GET": READERS}

    @extend_schema(
        operation_id="fleet_health",
        summary="Fleet health: every site's status, the totals and the alerts (sites the token may see)",
        responses={200: FleetHealthOut, **error_responses(401, 403)},
        tags=["fleet"],
    )
    def get(self, request):
        return Response(selectors.fleet_health(selectors.fleet_state(site_id=self.principal().site_id)))


class FleetMetricsView(ApiView):
    allowed_scopes = {"GET": READERS}
    content_negotiation_class = IgnoreFormatOverride

    @extend_schema(
        operation_id="fleet_metrics",
        summary="Fleet metrics as Prometheus text or JSON (sites the token may see)",
        parameters=[
            OpenApiParameter(
                "format",
                str,
                enum=list(FORMATS),
                description="prometheus: text exposition format 0.0.4; json (the default): the same numbers.",
            )
        ],
        responses={
            (200, "application/json"): FleetMetricsOut,
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR,
                description="Prometheus text exposition format 0.0.4 (?format=prometheus).",
                examples=[OpenApiExample("prometheus", value=PROMETHEUS_EXAMPLE, media_type="text/plain")],
            ),
            **error_responses(400, 401, 403),
        },
        tags=["fleet"],
    )
    def get(self, request):
        wanted = request.query_params.get("format") or "json"
        if wanted not in FORMATS:
            raise InvalidInput({"format": [f"One of {', '.join(FORMATS)}."]})
        metrics = selectors.fleet_metrics(selectors.fleet_state(site_id=self.principal().site_id))
        if wanted == "json":
            return Response(metrics)
        return HttpResponse(fleet_prometheus_text(metrics), content_type=CONTENT_TYPE)
