"""Sites API: the input rules of a site (create, replace, change; the admin's form checks with them too),
the site's own parts of its representation, and /api/v1/sites/{id}/config.

The views of /api/v1/sites and /api/v1/sites/{id} render each site with its instances (status, leader,
counts), so they live where instances are known: instances/sites_api.py.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response

from core.api import ApiView, error_responses, schema
from core.cron import CronError, validate_cron
from core.fields import (
    StrictBooleanField,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    with_schema,
)
from core.permissions import INSTANCES, READERS, require_site_access
from sites import selectors
from sites.models import CONFIG_FIELDS, SITE_ID_PATTERN


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


# --- views -----------------------------------------------------------------------------------------


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
