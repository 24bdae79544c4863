"""Sites API: /api/v1/sites, /api/v1/sites/{id}, /api/v1/sites/{id}/config."""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from core.api import BODY_ERRORS, LIMIT_PARAM, OFFSET_PARAM, ApiView, error_responses, page_params, schema
from core.cron import CronError, validate_cron
from core.errors import InvalidInput, NotFoundError
from core.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    with_schema,
)
from core.permissions import INSTANCES, READERS, WRITERS, require_site_access
from sites import selectors, services
from sites.models import CONFIG_FIELDS, SITE_ID_PATTERN, Site


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


# --- input -------------------------------------------------------------------------------------


class LocationIn(serializers.Serializer):
    address = StrictCharField(max_length=512, allow_blank=True, required=False)
    latitude = StrictFloatField(min_value=-90, max_value=90, allow_null=True, required=False)
    longitude = StrictFloatField(min_value=-180, max_value=180, allow_null=True, required=False)


class SiteConfigIn(serializers.Serializer):
    timezone = StrictCharField(
        max_length=64, required=False, help_text="IANA time zone, e.g. America/Chicago."
    )
    minReplicas = StrictIntegerField(min_value=1, max_value=1000, required=False)
    discoveryEnabled = StrictBooleanField(required=False)
    discoveryCron = StrictCharField(
        max_length=128, required=False, help_text='Six fields, seconds first ("0 0 2 * * *"), or five.'
    )
    collectionInterval = StrictIntegerField(
        min_value=1000, max_value=86_400_000, required=False, help_text="ms"
    )
    cacheExpiration = StrictIntegerField(
        min_value=1000, max_value=604_800_000, required=False, help_text="ms"
    )
    cacheMaxEntries = StrictIntegerField(min_value=1, max_value=10_000_000, required=False)
    requireInstanceTokens = StrictBooleanField(
        required=False,
        help_text="On: tokens that are not an instance's own (the instanceToken register answers) may only "
        "register; heartbeat, deregister, the event socket and site data need the instance's own.",
    )

    def validate_timezone(self, value: str) -> str:
        if value not in _timezones():
            raise serializers.ValidationError(f"{value!r} is not an IANA time zone.")
        return value

    def validate_discoveryCron(self, value: str) -> str:
        try:
            return validate_cron(value)
        except CronError as exc:
            raise serializers.ValidationError(f"Invalid cron expression: {exc}.") from exc


class SiteIn(serializers.Serializer):
    id = with_schema(StrictCharField, {"type": "string", "pattern": SITE_ID_PATTERN})(
        max_length=64, help_text="Slug: lowercase letters, digits, '-' and '_'."
    )
    label = StrictCharField(max_length=255)
    description = StrictCharField(max_length=4096, allow_blank=True, required=False)
    location = LocationIn(required=False)
    config = SiteConfigIn(required=False)

    def validate_id(self, value: str) -> str:
        if not re.match(SITE_ID_PATTERN, value):
            raise serializers.ValidationError(
                "A slug of up to 64 characters: lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit."
            )
        return value


class SiteUpdateIn(SiteIn):
    id = StrictCharField(max_length=64, required=False, help_text="If given, must equal the path's id.")


class SitePatchIn(SiteUpdateIn):
    label = StrictCharField(max_length=255, required=False)


def model_values(data: dict) -> dict:
    """Validated wire data → model fields."""
    values = {}
    for name in ("label", "description"):
        if name in data:
            values[name] = data[name]
    values.update(data.get("location", {}))
    for wire, value in data.get("config", {}).items():
        values[CONFIG_FIELDS[wire]] = value
    return values


# --- output (documentation of what the selectors render) ------------------------------------------

LocationOut = schema(
    "Location",
    {
        "address": serializers.CharField(),
        "latitude": serializers.FloatField(allow_null=True),
        "longitude": serializers.FloatField(allow_null=True),
    },
)
SiteConfigOut = schema(
    "SiteConfig",
    {
        "timezone": serializers.CharField(),
        "minReplicas": serializers.IntegerField(),
        "discoveryEnabled": serializers.BooleanField(),
        "discoveryCron": serializers.CharField(),
        "collectionInterval": serializers.IntegerField(help_text="ms"),
        "cacheExpiration": serializers.IntegerField(help_text="ms"),
        "cacheMaxEntries": serializers.IntegerField(),
        "requireInstanceTokens": serializers.BooleanField(),
    },
)
_SUMMARY_FIELDS = {
    "id": serializers.CharField(),
    "label": serializers.CharField(),
    "description": serializers.CharField(),
    "location": LocationOut(),
    "status": serializers.ChoiceField(["healthy", "degraded", "offline"]),
    "instanceCount": serializers.IntegerField(),
    "healthyInstances": serializers.IntegerField(),
    "leaderInstanceId": serializers.CharField(allow_null=True),
    "deviceCount": serializers.IntegerField(),
    "lastDiscovery": serializers.DateTimeField(allow_null=True),
    "createdAt": serializers.DateTimeField(),
}
SiteSummaryOut = schema("SiteSummary", _SUMMARY_FIELDS)
SiteListOut = schema("SiteList", {"sites": SiteSummaryOut(many=True), "total": serializers.IntegerField()})
SiteDetailOut = schema(
    "SiteDetail",
    {
        **_SUMMARY_FIELDS,
        "config": SiteConfigOut(),
        "configVersion": serializers.IntegerField(),
        "leaderTerm": serializers.IntegerField(),
        "updatedAt": serializers.DateTimeField(),
        "instances": schema(
            "SiteInstance",
            {
                "id": serializers.CharField(),
                "hostname": serializers.CharField(),
                "isLeader": serializers.BooleanField(),
                "status": serializers.ChoiceField(["healthy", "degraded", "offline"]),
                "reportedStatus": serializers.CharField(),
                "lastHeartbeat": serializers.DateTimeField(allow_null=True),
                "version": serializers.CharField(),
            },
        )(many=True),
        "stats": schema(
            "SiteStats",
            {
                "deviceCount": serializers.IntegerField(),
                "agentCount": serializers.IntegerField(),
                "seedCount": serializers.IntegerField(),
                "lastDiscovery": serializers.DateTimeField(allow_null=True),
                "inventoryVersion": serializers.IntegerField(),
            },
        )(),
    },
)
InstanceConfigOut = schema(
    "InstanceConfig",
    {
        "discoveryEnabled": serializers.BooleanField(),
        "discoveryCron": serializers.CharField(),
        "discoveryTimezone": serializers.CharField(),
        "collectionInterval": serializers.IntegerField(help_text="ms"),
        "cacheExpiration": serializers.IntegerField(help_text="ms"),
        "cacheMaxEntries": serializers.IntegerField(),
        "heartbeatInterval": serializers.IntegerField(help_text="ms"),
    },
)
SiteConfigResponse = schema(
    "SiteConfigResponse", {"configVersion": serializers.IntegerField(), "config": InstanceConfigOut()}
)


def _detail(site_id: str) -> dict:
    site = selectors.sites_with_instances().filter(pk=site_id).first()
    if site is None:
        raise NotFoundError(f"No site {site_id!r}.")
    return selectors.site_detail(site)


# --- views -----------------------------------------------------------------------------------------


class SiteListView(ApiView):
    allowed_scopes = {"GET": READERS, "POST": WRITERS}

    @extend_schema(
        operation_id="sites_list",
        summary="List sites",
        parameters=[LIMIT_PARAM, OFFSET_PARAM],
        responses={200: SiteListOut, **error_responses(400, 401, 403)},
        tags=["sites"],
    )
    def get(self, request):
        limit, offset = page_params(request.query_params)
        queryset = Site.objects.all()
        bound = self.principal().site_id
        if bound:
            queryset = queryset.filter(pk=bound)
        total = queryset.count()
        page = selectors.sites_with_instances(queryset.order_by("id")[offset : offset + limit])
        return Response({"sites": [selectors.site_summary(site) for site in page], "total": total})

    @extend_schema(
        operation_id="sites_create",
        summary="Create a site",
        request=SiteIn,
        responses={201: SiteDetailOut, **error_responses(*BODY_ERRORS, 409)},
        tags=["sites"],
    )
    def post(self, request):
        if self.principal().site_id:
            raise exceptions.PermissionDenied("A token bound to a site cannot create sites.")
        data = self.validated(SiteIn)
        site = services.site_create(actor=self.actor(), site_id=data["id"], values=model_values(data))
        return Response(_detail(site.id), status=status.HTTP_201_CREATED)


class SiteDetailView(ApiView):
    allowed_scopes = {"GET": READERS, "PUT": WRITERS, "PATCH": WRITERS, "DELETE": WRITERS}

    @extend_schema(
        operation_id="sites_retrieve",
        summary="Get a site with its instances and stats",
        responses={200: SiteDetailOut, **error_responses(401, 403, 404)},
        tags=["sites"],
    )
    def get(self, request, site_id: str):
        require_site_access(request, site_id)
        return Response(_detail(site_id))

    def _update(self, request, site_id: str, partial: bool):
        require_site_access(request, site_id)
        selectors.site_get(site_id)
        data = self.validated(SitePatchIn if partial else SiteUpdateIn)
        if "id" in data and data["id"] != site_id:
            raise InvalidInput({"id": ["A site's id cannot change; it must equal the path's id."]})
        services.site_update(actor=self.actor(), site_id=site_id, values=model_values(data), partial=partial)
        return Response(_detail(site_id))

    @extend_schema(
        operation_id="sites_update",
        summary="Replace a site (omitted optional fields go back to their defaults)",
        request=SiteUpdateIn,
        responses={200: SiteDetailOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["sites"],
    )
    def put(self, request, site_id: str):
        return self._update(request, site_id, partial=False)

    @extend_schema(
        operation_id="sites_partial_update",
        summary="Change some fields of a site",
        request=SitePatchIn,
        responses={200: SiteDetailOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["sites"],
    )
    def patch(self, request, site_id: str):
        return self._update(request, site_id, partial=True)

    @extend_schema(
        operation_id="sites_destroy",
        summary="Delete a site with its instances and inventory",
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["sites"],
    )
    def delete(self, request, site_id: str):
        require_site_access(request, site_id)
        services.site_delete(actor=self.actor(), site_id=site_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SiteConfigView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES}

    @extend_schema(
        operation_id="sites_config",
        summary="The site's configuration as instances use it",
        responses={200: SiteConfigResponse, **error_responses(401, 403, 404)},
        tags=["sites"],
    )
    def get(self, request, site_id: str):
        require_site_access(request, site_id)
        site = selectors.site_get(site_id)
        return Response({"configVersion": site.config_version, "config": selectors.instance_config(site)})
