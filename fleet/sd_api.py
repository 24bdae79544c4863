"""Prometheus HTTP service discovery: GET /api/v1/sd/instances and GET /api/v1/sd/devices?site=SITE.

Both answer Prometheus's http_sd format (a JSON array of {targets, labels}) to a read token: Prometheus
polls them with `http_sd_configs` (docs/operations.md, "Prometheus service discovery"). The selection and
the rendezvous hashing are fleet/sd.py's.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from core.api import FILTER_SCHEMA, ApiView, error_responses, json_stream, schema
from core.errors import InvalidInput
from core.permissions import READERS, require_site_access
from fleet import sd
from sites.selectors import site_get

# --- output (documentation of what fleet/sd.py renders) -------------------------------------------

SdInstanceGroupOut = schema(
    "SdInstanceTargetGroup",
    {
        "targets": serializers.ListField(
            child=serializers.CharField(), help_text="The instance's scrapeAddress (host:port), alone."
        ),
        "labels": schema(
            "SdInstanceLabels",
            {
                "site": serializers.CharField(),
                "instance_id": serializers.CharField(),
                "hostname": serializers.CharField(),
                "leader": serializers.ChoiceField(["true", "false"]),
                "status": serializers.ChoiceField(
                    ["healthy", "degraded", "offline"], help_text="Liveness, from heartbeat age."
                ),
            },
        )(),
    },
)
SdDeviceGroupOut = schema(
    "SdDeviceTargetGroup",
    {
        "targets": serializers.ListField(
            child=serializers.CharField(),
            help_text="The scrapeAddress of the healthy instance that serves the device, alone.",
        ),
        "labels": schema(
            "SdDeviceLabels",
            {
                # label=: the name itself, or the schema gets a title made from it ("  metrics path  ").
                "__metrics_path__": serializers.CharField(
                    label="__metrics_path__", help_text=f"Always {sd.DEVICE_METRICS_PATH} (PromSNMP's)."
                ),
                "__param_target": serializers.CharField(
                    label="__param_target",
                    help_text="The device as PromSNMP knows it: its sysName, else its primary agent's "
                    "address.",
                ),
                sd.INSTANCE_LABEL: serializers.CharField(
                    label=sd.INSTANCE_LABEL,
                    help_text="The instance that serves the device (a meta label: gone after relabeling).",
                ),
                "site": serializers.CharField(),
                "device": serializers.CharField(help_text="Same as __param_target."),
                "device_id": serializers.CharField(help_text="The device's id in the manager."),
            },
        )(),
    },
)

SITE_PARAM = "site"


def _site(request, site_id: str) -> str:
    """403 for another site's bound token (before any lookup: no existence leak), 404 for no such site."""
    require_site_access(request, site_id)
    return site_get(site_id).pk


# --- views -----------------------------------------------------------------------------------------


class SdInstancesView(ApiView):
    allowed_scopes = {"GET": READERS}

    @extend_schema(
        operation_id="sd_instances",
        summary="Prometheus HTTP service discovery: the instances that registered a scrapeAddress",
        description="One target group per instance with a scrapeAddress, live or not (its `status` label "
        "says which), by site and hostname. A token bound to a site sees only that site.",
        parameters=[OpenApiParameter(SITE_PARAM, FILTER_SCHEMA, description="Only this site's instances.")],
        responses={200: SdInstanceGroupOut(many=True), **error_responses(400, 401, 403, 404)},
        examples=[
            OpenApiExample(
                "an instance",
                response_only=True,
                value={
                    "targets": ["10.1.2.3:8080"],
                    "labels": {
                        "site": "chicago-pop-01",
                        "instance_id": "inst_4f1c2a9b0d3e5f67",
                        "hostname": "promsnmp-0",
                        "leader": "true",
                        "status": "healthy",
                    },
                },
            )
        ],
        tags=["service discovery"],
    )
    def get(self, request):
        wanted = request.query_params.get(SITE_PARAM)
        # Without ?site=: a bound token sees its own site, any other token every site.
        site_id = _site(request, wanted) if wanted is not None else self.principal().site_id
        return Response(sd.instance_groups(site_id=site_id))


class SdDevicesView(ApiView):
    allowed_scopes = {"GET": READERS}

    @extend_schema(
        operation_id="sd_devices",
        summary="Prometheus HTTP service discovery: a site's devices, each through one healthy instance",
        description="One target group per device of the site, scraped at `/snmp?target=DEVICE` of the "
        "healthy instance (with a scrapeAddress) that rendezvous hashing gives it: each device exactly "
        "once, and only a failed instance's devices move. No healthy instance: an empty array. Streamed.",
        parameters=[
            OpenApiParameter(
                SITE_PARAM, FILTER_SCHEMA, required=True, description="The site whose devices to list."
            )
        ],
        responses={200: SdDeviceGroupOut(many=True), **error_responses(400, 401, 403, 404)},
        examples=[
            OpenApiExample(
                "one device",
                response_only=True,
                value={
                    "targets": ["10.1.2.3:8080"],
                    "labels": {
                        "__metrics_path__": "/snmp",
                        "__param_target": "edge-rtr-01.chicago",
                        sd.INSTANCE_LABEL: "inst_4f1c2a9b0d3e5f67",
                        "site": "chicago-pop-01",
                        "device": "edge-rtr-01.chicago",
                        "device_id": "dev_9a8b7c6d5e4f3a2b",
                    },
                },
            )
        ],
        tags=["service discovery"],
    )
    def get(self, request):
        site_id = request.query_params.get(SITE_PARAM)
        if site_id is None:
            raise InvalidInput({SITE_PARAM: ["Required: the site whose devices to list."]})
        site_id = _site(request, site_id)
        serving = sd.serving_instances(site_id)
        return json_stream(request, sd.json_array(sd.device_groups(site_id, serving)))
