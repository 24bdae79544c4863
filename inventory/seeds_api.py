"""Discovery seeds API: /api/v1/sites/{siteId}/discovery-seeds and …/discovery-seeds/{seedId}; and the
seed's wire form as the OpenAPI schema documents it, once, for these endpoints and PUT/GET inventory."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import BODY_ERRORS, LIMIT_PARAM, OFFSET_PARAM, ApiView, error_responses, page_params, schema
from core.errors import InvalidInput, NotFoundError
from core.fields import with_schema
from core.permissions import INSTANCES, READERS, WRITERS, credentials_allowed, require_site_access
from inventory import seeds, selectors
from sites.selectors import site_get
from snmp.credentials import (
    AUTH_PROTOCOLS,
    PRIV_PROTOCOLS,
    SECRET_KEYS,
    SECURITY_LEVELS,
    TYPES,
    VERSIONS,
    credentials_json_schema,
)

INCLUDE_CREDENTIALS_PARAM = OpenApiParameter(
    "includeCredentials",
    OpenApiTypes.BOOL,
    description=(
        'true to get the SNMP secrets in clear instead of "****": only for admin tokens and instance '
        "tokens (of this site); any other caller asking gets 403. Accepts true/false/1/0."
    ),
)

# --- the seed's wire form ----------------------------------------------------------------------------
# One schema in its two directions, as one serializer would give with COMPONENT_SPLIT_REQUEST: as sent
# (DiscoverySeedRequest: POST and PUT of a seed, PUT inventory's discoverySeeds; validated by
# inventory.seeds.parse_seed, in plain Python) and as shown (DiscoverySeed: the seed endpoints, GET
# inventory and its changes; inventory.selectors.seed_representation). Two classes with the same
# component name, because the directions differ in more than read-only fields: secrets are masked on the
# way out, and options left out on the way in are shown with their defaults.

_VERSION_HELP = "1 (v1), 2 (v2c) or 3 (v3)."

# SNMP credentials (of agents and seeds) as snmp.credentials checks them, one variant per version and
# securityLevel.
SnmpCredentialsField = with_schema(serializers.JSONField, credentials_json_schema())


def _options_fields(required: bool) -> dict:
    return {
        name: serializers.IntegerField(
            min_value=low,
            max_value=high,
            required=required,
            help_text=f"{'ms per request; ' if name == 'timeout' else ''}default {default}.",
        )
        for name, (low, high, default) in seeds.OPTIONS.items()
    }


SeedIn = schema(
    "DiscoverySeed",
    {
        # Not blank: at least one character that is not white space.
        "name": with_schema(serializers.CharField, {"type": "string", "pattern": r"\S"})(
            max_length=seeds.MAX_NAME, help_text="Unique within the site."
        ),
        "targets": serializers.ListField(
            child=serializers.CharField(),
            min_length=1,
            help_text=(
                'IP addresses ("192.168.1.1"), CIDR networks ("10.0.1.0/24", no host bits set) and '
                'inclusive ranges ("10.0.0.1-10.0.0.20" or "10.0.0.1-20"); at most MAX_SEED_ADDRESSES '
                "(65,536) addresses in all."
            ),
        ),
        "snmpConfig": SnmpCredentialsField(),
        "schedule": serializers.CharField(
            required=False,
            allow_null=True,
            allow_blank=True,
            help_text='Cron: six fields, seconds first ("0 0 2 * * *"), or five; "" or null for none.',
        ),
        "enabled": serializers.BooleanField(required=False, default=True),
        "options": schema("SeedOptions", _options_fields(required=False))(
            required=False, help_text="Left-out options take their defaults."
        ),
    },
)
SeedSnmpConfigOut = schema(
    "SeedSnmpConfig",
    {
        "version": serializers.ChoiceField(VERSIONS, help_text=_VERSION_HELP),
        "type": serializers.ChoiceField(TYPES),
        **{
            name: serializers.CharField(required=False, help_text='"****" unless includeCredentials=true.')
            for name in SECRET_KEYS
        },
        "securityName": serializers.CharField(required=False),
        "securityLevel": serializers.ChoiceField(SECURITY_LEVELS, required=False),
        "authProtocol": serializers.ChoiceField(AUTH_PROTOCOLS, required=False),
        "privProtocol": serializers.ChoiceField(PRIV_PROTOCOLS, required=False),
        "engineId": serializers.CharField(required=False),
    },
)
SeedOut = schema(
    "DiscoverySeed",
    {
        "id": serializers.CharField(),
        "name": serializers.CharField(),
        "targets": serializers.ListField(child=serializers.CharField(), help_text="Normalised."),
        "snmpConfig": SeedSnmpConfigOut(),
        "schedule": serializers.CharField(allow_null=True),
        "enabled": serializers.BooleanField(),
        "options": schema("SeedOptions", _options_fields(required=True))(),
        "lastRun": serializers.DateTimeField(allow_null=True),
        "lastRunStatus": serializers.CharField(
            allow_null=True,
            help_text="How the seed's last run ended: success, failed, timed_out or cancelled; null before.",
        ),
        "devicesFound": serializers.IntegerField(allow_null=True),
        "estimatedTargets": serializers.IntegerField(help_text="Addresses covered (a /24 counts 256)."),
        "createdAt": serializers.DateTimeField(),
        "updatedAt": serializers.DateTimeField(),
    },
)
SeedListOut = schema(
    "DiscoverySeedList", {"discoverySeeds": SeedOut(many=True), "total": serializers.IntegerField()}
)


def _parsed_body(request) -> seeds.SeedInput:
    seed, errors = seeds.parse_seed(request.data)
    if errors:
        raise InvalidInput(errors)
    return seed


# --- views -----------------------------------------------------------------------------------------


class SeedListView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "POST": WRITERS}

    @extend_schema(
        operation_id="discovery_seeds_list",
        summary="List a site's discovery seeds",
        parameters=[INCLUDE_CREDENTIALS_PARAM, LIMIT_PARAM, OFFSET_PARAM],
        responses={200: SeedListOut, **error_responses(400, 401, 403, 404)},
        tags=["discovery"],
    )
    def get(self, request, site_id: str):
        require_site_access(request, site_id)
        include = credentials_allowed(request)
        limit, offset = page_params(request.query_params)
        site_get(site_id)
        total = selectors.site_seed_count(site_id)
        items = selectors.site_seeds(site_id, include_credentials=include, limit=limit, offset=offset)
        return Response({"discoverySeeds": items, "total": total})

    @extend_schema(
        operation_id="discovery_seeds_create",
        summary="Create a discovery seed",
        parameters=[INCLUDE_CREDENTIALS_PARAM],
        request=SeedIn,
        responses={201: SeedOut, **error_responses(*BODY_ERRORS, 404, 409)},
        tags=["discovery"],
    )
    def post(self, request, site_id: str):
        require_site_access(request, site_id)
        include = credentials_allowed(request)
        site_get(site_id)
        seed = seeds.seed_create(actor=self.actor(), site_id=site_id, seed=_parsed_body(request))
        return Response(
            selectors.seed_representation(seed, include_credentials=include), status=status.HTTP_201_CREATED
        )


class SeedDetailView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "PUT": WRITERS, "DELETE": WRITERS}

    @extend_schema(
        operation_id="discovery_seeds_retrieve",
        summary="Get a discovery seed",
        parameters=[INCLUDE_CREDENTIALS_PARAM],
        responses={200: SeedOut, **error_responses(400, 401, 403, 404)},
        tags=["discovery"],
    )
    def get(self, request, site_id: str, seed_id: str):
        require_site_access(request, site_id)
        include = credentials_allowed(request)
        try:
            seed = selectors.seed_get(site_id, seed_id)
        except NotFoundError:
            site_get(site_id)  # an unknown site is said first
            raise
        return Response(selectors.seed_representation(seed, include_credentials=include))

    @extend_schema(
        operation_id="discovery_seeds_update",
        summary="Replace a discovery seed (omitted optional fields go back to their defaults)",
        parameters=[INCLUDE_CREDENTIALS_PARAM],
        request=SeedIn,
        responses={200: SeedOut, **error_responses(*BODY_ERRORS, 404, 409)},
        tags=["discovery"],
    )
    def put(self, request, site_id: str, seed_id: str):
        require_site_access(request, site_id)
        include = credentials_allowed(request)
        site_get(site_id)
        selectors.seed_get(site_id, seed_id)  # 404 before the body is judged
        data = request.data
        if isinstance(data, dict) and "id" in data and data["id"] != seed_id:
            raise InvalidInput({"id": ["A seed's id cannot change; it must equal the path's id."]})
        seed = seeds.seed_update(
            actor=self.actor(), site_id=site_id, seed_id=seed_id, seed=_parsed_body(request)
        )
        return Response(selectors.seed_representation(seed, include_credentials=include))

    @extend_schema(
        operation_id="discovery_seeds_destroy",
        summary="Delete a discovery seed",
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["discovery"],
    )
    def delete(self, request, site_id: str, seed_id: str):
        require_site_access(request, site_id)
        seeds.seed_delete(actor=self.actor(), site_id=site_id, seed_id=seed_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
