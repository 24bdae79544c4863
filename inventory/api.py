"""Inventory endpoints: the site's document (GET, PUT; GET also in PromSNMP's form for the agent's bridge
mode), discovery results (POST devices), one device (GET, DELETE), and the change feed (GET
changes?since=N)."""

from __future__ import annotations

import hashlib
from types import SimpleNamespace

from django.conf import settings
from django.http import HttpResponse
from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import exceptions, serializers, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.response import Response

from core.api import (
    BODY_ERRORS,
    VERSION_SCHEMA,
    ApiView,
    ErrorSerializer,
    error_responses,
    json_stream,
    schema,
)
from core.errors import ApiError, InvalidInput, NotFoundError
from core.fields import with_schema
from core.models import Scope
from core.permissions import (
    INSTANCES,
    READERS,
    WRITERS,
    credentials_allowed,
    principal_of,
    require_site_access,
)
from core.timefmt import iso_z
from inventory import idempotency, jobs, selectors, services
from inventory.parsing import MAX_AGENTS, MODES
from inventory.promsnmp import FORMATS, devices_from_promsnmp, promsnmp_path, stream_promsnmp_document
from inventory.seeds_api import SeedIn, SeedOut
from sites.models import Site
from sites.selectors import site_get
from snmp.credentials import (
    AUTH_PROTOCOLS,
    MAX_TEXT,
    MIN_PASSPHRASE,
    PRIV_PROTOCOLS,
    SECURITY_LEVELS,
    TYPES,
    VERSIONS,
    credentials_json_schema,
)

SOURCES = ("discovery", "manual", "import", "api")

# --- documentation of bodies (validation is inventory.parsing / inventory.seeds, in plain Python) ---

AgentDoc = schema(
    "Agent",
    {
        "id": serializers.CharField(read_only=True),
        "address": serializers.IPAddressField(),
        "port": serializers.IntegerField(min_value=1, max_value=65535, default=161),
        "version": serializers.ChoiceField(VERSIONS, help_text="1 = v1, 2 = v2c, 3 = v3"),
        "type": serializers.ChoiceField(TYPES),
        "readCommunity": serializers.CharField(required=False, help_text='v1/v2c; "****" unless revealed'),
        "writeCommunity": serializers.CharField(required=False, allow_null=True),
        "securityName": serializers.CharField(required=False),
        "securityLevel": serializers.ChoiceField(SECURITY_LEVELS, required=False),
        "authProtocol": serializers.ChoiceField(AUTH_PROTOCOLS, required=False),
        "authPassphrase": serializers.CharField(
            required=False, help_text=f'{MIN_PASSPHRASE} to {MAX_TEXT} characters; "****" unless revealed'
        ),
        "privProtocol": serializers.ChoiceField(PRIV_PROTOCOLS, required=False),
        "privPassphrase": serializers.CharField(
            required=False, help_text=f'{MIN_PASSPHRASE} to {MAX_TEXT} characters; "****" unless revealed'
        ),
        "engineId": serializers.CharField(required=False),
        "timeout": serializers.IntegerField(min_value=1, max_value=600_000, required=False, help_text="ms"),
        "retries": serializers.IntegerField(min_value=0, max_value=100, required=False),
        "isPrimary": serializers.BooleanField(default=False),
    },
)
_DEVICE_FIELDS = {
    # As inventory.parsing checks them.
    "sysName": serializers.CharField(allow_null=True, allow_blank=True, max_length=255),
    "sysDescr": serializers.CharField(allow_null=True, allow_blank=True, max_length=4096, required=False),
    "sysContact": serializers.CharField(allow_null=True, allow_blank=True, max_length=255, required=False),
    "sysLocation": serializers.CharField(allow_null=True, allow_blank=True, max_length=255, required=False),
    "sysObjectId": with_schema(
        serializers.CharField, {"type": ["string", "null"], "pattern": r"^(\.?[0-9]+(\.[0-9]+)*)?$"}
    )(allow_null=True, allow_blank=True, max_length=128, required=False, help_text="Dotted OID."),
    "agents": serializers.ListField(child=AgentDoc(), min_length=1, max_length=MAX_AGENTS),
    "interfaces": serializers.IntegerField(
        allow_null=True, min_value=0, max_value=10_000_000, required=False
    ),
    "metadata": serializers.DictField(required=False),
}
# An agent as inventory.parsing.parse_agent takes it: where it answers, and its credentials.
AGENT_INPUT_SCHEMA = {
    "allOf": [
        {
            "type": "object",
            "properties": {
                "address": {"anyOf": [{"format": "ipv4"}, {"format": "ipv6"}], "type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 161},
                "timeout": {"type": "integer", "minimum": 1, "maximum": 600_000, "description": "ms"},
                "retries": {"type": "integer", "minimum": 0, "maximum": 100},
                "isPrimary": {"type": "boolean", "default": False},
            },
            "required": ["address"],
        },
        credentials_json_schema(),
    ]
}
DeviceIn = schema(
    "DeviceInput",
    {
        **_DEVICE_FIELDS,
        "agents": serializers.ListField(
            child=with_schema(serializers.JSONField, AGENT_INPUT_SCHEMA)(),
            min_length=1,
            max_length=MAX_AGENTS,
            help_text="Two agents may not share address and port; at most one isPrimary (else the first).",
        ),
        "discoveredAt": serializers.DateTimeField(required=False),
    },
)
DeviceOut = schema(
    "Device",
    {
        "id": serializers.CharField(),
        **_DEVICE_FIELDS,
        "discoveredAt": serializers.DateTimeField(),
        "lastSeen": serializers.DateTimeField(),
        "discoveredBy": serializers.CharField(allow_null=True),
    },
)
InventoryOut = schema(
    "Inventory",
    {
        "version": serializers.IntegerField(),
        "updatedAt": serializers.DateTimeField(allow_null=True),
        "devices": DeviceOut(many=True),
        "discoverySeeds": SeedOut(many=True),
    },
)
_NULLABLE_TEXT = {"type": ["string", "null"]}
_PROMSNMP_AGENT = {
    "type": "object",
    "description": "snmp-community (version 0 = v1, 1 = v2c) or snmp-user (version 3), as PromSNMP's Agent.",
    "properties": {
        "type": {"type": "string", "enum": ["snmp-community", "snmp-user"]},
        "id": {"type": "string", "format": "uuid"},
        "endpoint": {
            "type": "object",
            "properties": {
                "address": {"type": "string"},
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            },
            "required": ["address", "port"],
        },
        "version": {"type": "integer", "enum": [0, 1, 3]},
        "timeout": {"type": "integer", "description": "ms"},
        "retries": {"type": "integer"},
        "discoveredAt": {"type": ["string", "number", "null"]},
        "readCommunity": _NULLABLE_TEXT,
        "writeCommunity": _NULLABLE_TEXT,
        "securityName": _NULLABLE_TEXT,
        "securityLevel": {"type": "integer", "enum": [1, 2, 3], "description": "1 noAuthNoPriv, 3 authPriv"},
        "authProtocol": _NULLABLE_TEXT,
        "authPassphrase": _NULLABLE_TEXT,
        "privProtocol": _NULLABLE_TEXT,
        "privPassphrase": _NULLABLE_TEXT,
        "engineId": _NULLABLE_TEXT,
    },
    "required": ["type", "id", "endpoint", "version", "timeout", "retries"],
}
PROMSNMP_INVENTORY_SCHEMA = {
    "type": "object",
    "description": "PromSNMP's InventoryDTO (what its POST /inventory takes), secrets in clear. The "
    "version is in the X-Inventory-Version header, not in the body.",
    "properties": {
        "devices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "sysName": _NULLABLE_TEXT,
                    "sysDescr": _NULLABLE_TEXT,
                    "sysContact": _NULLABLE_TEXT,
                    "sysLocation": _NULLABLE_TEXT,
                    "discoveredAt": {"type": ["string", "number", "null"]},
                    "agents": {"type": "array", "items": _PROMSNMP_AGENT},
                    "primaryAgent": {
                        "type": ["object", "null"],
                        "description": "A full copy of one of the agents, or null.",
                    },
                },
                "required": ["id", "sysName", "agents", "primaryAgent"],
            },
        },
        "discoverySeeds": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "potentialTargets": {"type": "array", "items": {"type": "string"}},
                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                    "version": {"type": "string", "enum": ["v2c", "v3"]},
                    "agentType": {"type": "string", "enum": ["snmp-community", "snmp-user"]},
                    "readCommunity": _NULLABLE_TEXT,
                    "securityName": _NULLABLE_TEXT,
                    "securityLevel": {"type": "integer", "enum": [0, 1, 2, 3]},
                    "authProtocol": _NULLABLE_TEXT,
                    "authPassphrase": _NULLABLE_TEXT,
                    "privProtocol": _NULLABLE_TEXT,
                    "privPassphrase": _NULLABLE_TEXT,
                },
                "required": ["id", "potentialTargets", "port", "version", "agentType"],
            },
        },
    },
    "required": ["devices", "discoverySeeds"],
    # Nothing else: PromSNMP replaces its inventory with exactly this (and the two forms stay apart).
    "additionalProperties": False,
}


class PromSnmpInventoryOut(serializers.Serializer):
    """Documents GET inventory?format=promsnmp (its schema is PROMSNMP_INVENTORY_SCHEMA)."""


class _PromSnmpInventorySchema(OpenApiSerializerExtension):
    target_class = PromSnmpInventoryOut

    def get_name(self, auto_schema, direction):
        return "PromSnmpInventory"

    def map_serializer(self, auto_schema, direction):
        return PROMSNMP_INVENTORY_SCHEMA


InventoryPutIn = schema(
    "InventoryImport",
    {
        "devices": DeviceIn(many=True),
        "discoverySeeds": SeedIn(many=True, required=False),
        "mode": serializers.ChoiceField(MODES, default="merge"),
        "format": serializers.ChoiceField(
            FORMATS,
            default="manager",
            help_text="promsnmp: devices/seeds in PromSNMP's file form",
        ),
    },
)
InventoryPutOut = schema(
    "InventoryImportResult",
    {
        "version": serializers.IntegerField(),
        "changed": serializers.BooleanField(),
        "added": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
        "removed": serializers.IntegerField(),
        "seeds": schema(
            "SeedChangeCounts",
            {
                "added": serializers.IntegerField(),
                "updated": serializers.IntegerField(),
                "removed": serializers.IntegerField(),
            },
        )(),
    },
)
ImportJobOut = schema(
    "InventoryImportJob",
    {
        "id": serializers.CharField(),
        "siteId": serializers.CharField(),
        "status": serializers.ChoiceField(["queued", "running", "succeeded", "failed"]),
        "dryRun": serializers.BooleanField(help_text="Always false for jobs made by PUT inventory."),
        "mode": serializers.ChoiceField(MODES),
        "format": serializers.ChoiceField(FORMATS),
        "requestedBy": serializers.CharField(help_text="Who asked: token:<name>, user:<name>."),
        "progress": schema(
            "InventoryImportJobProgress",
            {
                "phase": serializers.ChoiceField(
                    list(jobs.PHASES),
                    help_text="queued, reading (the stored document), checking (devices validated), "
                    "writing (changes written, all in one transaction), done.",
                ),
                "done": serializers.IntegerField(min_value=0, help_text="Devices or changes of this phase."),
                "total": serializers.IntegerField(min_value=0),
                "percent": serializers.IntegerField(
                    min_value=0, max_value=100, help_text="Over all phases; 100 only once succeeded."
                ),
            },
        )(),
        "result": InventoryPutOut(
            allow_null=True, help_text="Once succeeded: what PUT inventory answers (200) for the import."
        ),
        "error": ErrorSerializer(
            allow_null=True,
            help_text="Once failed: what PUT inventory would have answered (a 400 validation_error names "
            "every invalid field); nothing was imported.",
        ),
        "createdAt": serializers.DateTimeField(),
        "startedAt": serializers.DateTimeField(allow_null=True),
        "finishedAt": serializers.DateTimeField(allow_null=True),
    },
)
PREFER = OpenApiParameter(
    "Prefer",
    str,
    OpenApiParameter.HEADER,
    description="`respond-async` (RFC 7240): import in the background. The answer is then 202 with the "
    "job and `Location: …/inventory/import-jobs/{jobId}`, which tells how far the import got and how it "
    "ended. Without it the import runs within the request (200), unless the server is set to make "
    "larger bodies jobs anyway (INVENTORY_IMPORT_ASYNC_BYTES). Other preferences are ignored.",
)
AddDevicesIn = schema(
    "AddDevices",
    {
        # Each item is checked on its own: one that is not a valid DeviceInput is counted in `failed` with
        # its error (a 200), so the schema takes any item.
        "devices": serializers.ListField(
            child=serializers.JSONField(), help_text="DeviceInput objects; an invalid one fails alone."
        ),
        "source": serializers.ChoiceField(list(SOURCES), default="api"),
        "format": serializers.ChoiceField(
            FORMATS,
            default="manager",
            help_text="promsnmp: the devices are in PromSNMP's form (what a bridge's PromSNMP found by "
            "itself); only new devices are added (one the site has is left as it is, unchanged), and "
            "each one that cannot be mapped fails alone, its errors naming PromSNMP's fields.",
        ),
        # null or "" reads as absent.
        "instanceId": serializers.CharField(required=False, allow_null=True, allow_blank=True, max_length=64),
        "seedId": serializers.CharField(
            required=False,
            allow_null=True,
            allow_blank=True,
            max_length=64,
            help_text="Without runId: the results belong to the newest active run of this seed dispatched "
            "to instanceId, if any.",
        ),
        "runId": serializers.CharField(
            required=False,
            allow_null=True,
            allow_blank=True,
            max_length=64,
            help_text="The discovery run these results belong to: its counts follow them, and the "
            "instance the run was dispatched to may post them even if it is no longer the leader.",
        ),
    },
)
AddDevicesOut = schema(
    "AddDevicesResult",
    {
        "added": serializers.IntegerField(),
        "updated": serializers.IntegerField(),
        "unchanged": serializers.IntegerField(),
        "failed": serializers.IntegerField(),
        "newVersion": serializers.IntegerField(),
        "devices": schema(
            "DeviceOutcome",
            {
                "id": serializers.CharField(allow_null=True),
                "sysName": serializers.CharField(allow_null=True),
                "status": serializers.ChoiceField(["added", "updated", "unchanged", "failed"]),
                "error": serializers.DictField(
                    required=False, help_text="Field path → messages (failed only)"
                ),
            },
        )(many=True),
    },
)
ChangesOut = schema(
    "InventoryChanges",
    {
        "fromVersion": serializers.IntegerField(),
        "version": serializers.IntegerField(),
        "devices": DeviceOut(many=True),
        "removedDeviceIds": serializers.ListField(child=serializers.CharField()),
        "discoverySeeds": SeedOut(many=True),
    },
)

INCLUDE_CREDENTIALS = OpenApiParameter(
    "includeCredentials",
    bool,
    description="Reveal SNMP secrets (admin tokens and the site's instance tokens).",
)


class FormatIsAParameter(DefaultContentNegotiation):
    """`?format=` here names the document's form (manager, promsnmp), not DRF's renderer switch; the
    Accept header still chooses the renderer (406 without JSON)."""

    settings = SimpleNamespace(URL_FORMAT_OVERRIDE=None)


def _site(request, site_id: str) -> Site:
    require_site_access(request, site_id)
    return site_get(site_id)


def _int_param(request, name: str, *, required: bool = False) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if required:
            raise InvalidInput({name: ["Required: a non-negative integer."]})
        return None
    if not raw.isdigit() or len(raw) > 18:
        raise InvalidInput({name: ["A non-negative integer."]})
    return int(raw)


def _device_ids(request) -> list[str] | None:
    values = request.query_params.getlist("deviceIds")
    if not values:
        return None
    ids = sorted({part.strip() for value in values for part in value.split(",") if part.strip()})
    if not ids:
        return None  # "?deviceIds=" names nothing: no filter, like an empty version=
    if len(ids) > 10000 or any(len(i) > 64 or "\x00" in i for i in ids):
        raise InvalidInput({"deviceIds": ["At most 10000 device ids of up to 64 characters."]})
    return ids


def _etag_matches(request, etag: str) -> bool:
    """If-None-Match uses the weak comparison (RFC 9110): W/ prefixes do not matter; * matches."""
    tags = [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]
    return "*" in tags or etag in [tag.removeprefix("W/") for tag in tags]


VERSION_HEADER = "X-Inventory-Version"
PROMSNMP_TOKEN_ONLY = (
    "format=promsnmp answers every SNMP secret in clear, for a PromSNMP instance: only an instance's own "
    "token (the instanceToken that register answers) may ask, for its own site. Operators export with "
    "`manage.py export_inventory --format promsnmp`."
)


def _require_own_instance_token(request) -> None:
    """format=promsnmp: an instance's own token (bound to its site, which require_site_access checked).
    Admin, read, write and enrolment tokens get 403: the bridge is the only reader of this form."""
    if not principal_of(request).instance_id:
        raise exceptions.PermissionDenied(PROMSNMP_TOKEN_ONLY)


def _not_modified(etag: str, version: int) -> HttpResponse:
    response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
    del response["Content-Type"]
    response["ETag"] = etag
    response[VERSION_HEADER] = str(version)
    return response


class InventoryView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "PUT": WRITERS}
    repeatable_query = frozenset({"deviceIds"})
    content_negotiation_class = FormatIsAParameter

    @extend_schema(
        operation_id="inventory_retrieve",
        summary="The site's inventory: devices with agents, and discovery seeds (streamed); "
        "?format=promsnmp: as PromSNMP's InventoryDTO, for an instance's own token",
        parameters=[
            OpenApiParameter(
                "version", VERSION_SCHEMA, description="Answer 304 when this version is current or newer."
            ),
            INCLUDE_CREDENTIALS,
            OpenApiParameter(
                "deviceIds",
                {"type": "array", "items": {"type": "string", "maxLength": 64}, "maxItems": 10000},
                description="Comma-separated and/or repeated device ids (not with format=promsnmp).",
            ),
            OpenApiParameter(
                "format",
                str,
                enum=list(FORMATS),
                description="manager (default): the Inventory document. promsnmp: PromSNMP's InventoryDTO "
                "{devices, discoverySeeds}, secrets in clear, the whole site (what PromSNMP's POST "
                "/inventory replaces its inventory with); only for an instance's own token (403 for any "
                "other), and never with deviceIds (400). The version is in the X-Inventory-Version header.",
            ),
            OpenApiParameter(
                VERSION_HEADER,
                VERSION_SCHEMA,
                OpenApiParameter.HEADER,
                response=[200, 304],
                description="The inventory version of the answer (read before the devices are: a change "
                "committed meanwhile may already show in them).",
            ),
        ],
        responses={
            200: PolymorphicProxySerializer(
                component_name="InventoryAnyFormat",
                serializers=[InventoryOut, PromSnmpInventoryOut],
                resource_type_field_name=None,
            ),
            304: OpenApiResponse(description="Not modified (?version or If-None-Match)."),
            **error_responses(400, 401, 403, 404),
        },
        tags=["inventory"],
    )
    def get(self, request, site_id: str):
        document_format = request.query_params.get("format", "manager")
        if document_format not in FORMATS:
            raise InvalidInput({"format": [f"One of {', '.join(FORMATS)}."]})
        if document_format == "promsnmp":
            return self._promsnmp(request, site_id)
        site = _site(request, site_id)
        include_credentials = credentials_allowed(request)
        known = _int_param(request, "version")
        device_ids = _device_ids(request)
        variant = "c" if include_credentials else "m"
        if device_ids is not None:
            variant += hashlib.sha256(",".join(device_ids).encode()).hexdigest()[:16]
        etag = f'"inv-{site.pk}-{site.inventory_version}-{variant}"'
        if (known is not None and known >= site.inventory_version) or _etag_matches(request, etag):
            return _not_modified(etag, site.inventory_version)
        if include_credentials:
            selectors.require_decryptable(site)
        head = {"version": site.inventory_version, "updatedAt": iso_z(site.inventory_updated_at)}
        devices = selectors.iter_devices(site, include_credentials=include_credentials, device_ids=device_ids)
        response = json_stream(
            request,
            selectors.stream_json_document(
                head,
                {
                    "devices": devices,
                    "discoverySeeds": selectors.site_seeds(site.pk, include_credentials=include_credentials),
                },
            ),
        )
        response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        response[VERSION_HEADER] = str(site.inventory_version)
        return response

    def _promsnmp(self, request, site_id: str):
        """The whole site as PromSNMP's InventoryDTO, for the bridge of an instance of the site."""
        require_site_access(request, site_id)
        _require_own_instance_token(request)
        site = site_get(site_id)
        if credentials_allowed(request) is False and "includeCredentials" in request.query_params:
            raise InvalidInput(
                {"includeCredentials": ["format=promsnmp always carries the secrets: leave it out."]}
            )
        if _device_ids(request) is not None:
            # PromSNMP's POST replaces everything: a filtered document posted there would wipe the rest.
            raise InvalidInput({"deviceIds": ["Not with format=promsnmp: it is always the whole site."]})
        known = _int_param(request, "version")
        etag = f'"inv-{site.pk}-{site.inventory_version}-p"'
        if (known is not None and known >= site.inventory_version) or _etag_matches(request, etag):
            return _not_modified(etag, site.inventory_version)
        selectors.require_decryptable(site)
        response = json_stream(request, stream_promsnmp_document(site))
        response["ETag"] = etag
        response["Cache-Control"] = "private, no-cache"
        response[VERSION_HEADER] = str(site.inventory_version)
        return response

    @extend_schema(
        operation_id="inventory_import",
        summary="Bulk import: merge, replace or addOnly, all or nothing, one new version; "
        "with Prefer: respond-async, as a job (202)",
        parameters=[
            PREFER,
            OpenApiParameter(
                "Location",
                str,
                OpenApiParameter.HEADER,
                response=[202],
                description="The job: /api/v1/sites/{siteId}/inventory/import-jobs/{jobId}.",
            ),
            OpenApiParameter(
                "Preference-Applied",
                str,
                OpenApiParameter.HEADER,
                response=[202],
                description="respond-async, when the request asked for it.",
            ),
        ],
        request=InventoryPutIn,
        responses={
            200: InventoryPutOut,
            202: OpenApiResponse(
                ImportJobOut, description="Queued as a job (Prefer: respond-async, or a large body)."
            ),
            **error_responses(*BODY_ERRORS, 404),
        },
        tags=["inventory"],
    )
    def put(self, request, site_id: str):
        _site(request, site_id)
        body = self.json_object()
        asked = _prefers_async(request)
        if asked or _large(request):
            return self._job(request, site_id, body, asked)
        result = services.inventory_import_document(
            actor=self.actor(),
            site_id=site_id,
            document=body,
            document_format=body.get("format", "manager"),
            mode=body.get("mode", "merge"),
            source="import",
        )
        return Response(
            {
                "version": result.version,
                "changed": result.changed,
                "added": len(result.added),
                "updated": len(result.updated),
                "unchanged": result.unchanged,
                "removed": len(result.removed),
                "seeds": {key: len(result.seeds.get(key, [])) for key in ("added", "updated", "removed")},
            }
        )

    def _job(self, request, site_id: str, body: dict, asked: bool) -> Response:
        """The import as a job: 202 with the job and its Location (docs/decisions.md, import jobs)."""
        job = jobs.import_job_create(
            actor=self.actor(),
            site_id=site_id,
            document=body,
            document_format=body.get("format", "manager"),
            mode=body.get("mode", "merge"),
            dry_run=False,
            source="api",
            size_bytes=_content_length(request),
        )
        job = jobs.import_job_get(site_id, job.id)  # the embedded default ran it already (eager Celery)
        headers = {"Location": reverse("inventory-import-job", kwargs={"site_id": site_id, "job_id": job.id})}
        if asked:
            headers["Preference-Applied"] = "respond-async"
        return Response(jobs.import_job_data(job), status=status.HTTP_202_ACCEPTED, headers=headers)


def _prefers_async(request) -> bool:
    """RFC 7240: `Prefer: respond-async`, alone or among other preferences (names are case-insensitive;
    a preference may carry a value or parameters, which do not matter here)."""
    for header in request.headers.get("Prefer", "").split(","):
        name = header.split(";", 1)[0].split("=", 1)[0].strip().lower()
        if name == "respond-async":
            return True
    return False


def _content_length(request) -> int:
    try:
        return int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return 0  # BodySizeLimitMiddleware refused it already


def _large(request) -> bool:
    """A body above INVENTORY_IMPORT_ASYNC_BYTES (0: never) is imported as a job even unasked."""
    threshold = settings.INVENTORY_IMPORT_ASYNC_BYTES
    return threshold > 0 and _content_length(request) > threshold


class ImportJobView(ApiView):
    # As PUT inventory, which makes them: a job's result is part of that write's answer.
    allowed_scopes = {"GET": WRITERS}

    @extend_schema(
        operation_id="inventory_import_job_retrieve",
        summary="An inventory import job (PUT inventory, Prefer: respond-async): status, progress, result",
        responses={200: ImportJobOut, **error_responses(401, 403, 404)},
        tags=["inventory"],
    )
    def get(self, request, site_id: str, job_id: str):
        _site(request, site_id)
        return Response(jobs.import_job_data(jobs.import_job_get(site_id, job_id)))


_KEY_EDGE = "[\\x21-\\x7e\\xa1-\\xac\\xae-\\xff]"
_KEY_CHAR = "[\\x20-\\x7e\\xa1-\\xac\\xae-\\xff]"
IDEMPOTENCY_KEY = OpenApiParameter(
    idempotency.HEADER,
    # What key_from_header() accepts: str.isprintable() over the header's Latin-1, with no space at
    # either end (it strips them).
    {
        "type": "string",
        "maxLength": idempotency.MAX_KEY_LENGTH,
        "pattern": f"^{_KEY_EDGE}(?:{_KEY_CHAR}*{_KEY_EDGE})?$",
    },
    location=OpenApiParameter.HEADER,
    required=False,
    description=(
        "Optional, 1-255 printable characters (a UUID). The first request with a key is processed and its "
        "answer kept for at least 24 h; a repeat with the same key (same site, same instanceId, or same "
        "token when the body names no instance) gets that answer again, with the header "
        "Idempotent-Replayed: true, and changes nothing. The same key with a different body: 422 "
        "idempotency_key_reused. Error answers are not kept: a repeat is processed afresh. Two requests "
        "with the same key at once run one after the other."
    ),
)


class InventoryDevicesView(ApiView):
    allowed_scopes = {"POST": WRITERS | INSTANCES}

    @extend_schema(
        operation_id="inventory_add_devices",
        summary="Add or update devices (discovery results); each bad device fails alone",
        parameters=[IDEMPOTENCY_KEY],
        request=AddDevicesIn,
        responses={
            200: AddDevicesOut,
            **error_responses(*BODY_ERRORS, 404, 409),
            422: OpenApiResponse(
                ErrorSerializer,
                description="idempotency_key_reused: the Idempotency-Key was used with a different body.",
            ),
        },
        tags=["inventory"],
    )
    def post(self, request, site_id: str):
        _site(request, site_id)
        key = idempotency.key_from_header(request.headers.get(idempotency.HEADER))
        body = self.json_object()
        errors = {}
        if not isinstance(body.get("devices"), list):
            errors["devices"] = ["Required: a list of devices."]
        source = body.get("source", "api")
        if source not in SOURCES:
            errors["source"] = [f"One of {', '.join(SOURCES)}."]
        document_format = body.get("format", "manager")
        if document_format not in FORMATS:
            errors["format"] = [f"One of {', '.join(FORMATS)}."]
        instance_id = body.get("instanceId") or ""
        if not isinstance(instance_id, str) or len(instance_id) > 64:
            errors["instanceId"] = ["An instance id."]
        ties = {}
        for name in ("runId", "seedId"):
            value = body.get(name) or ""
            if not isinstance(value, str) or len(value) > 64:
                errors[name] = ["A string of at most 64 characters."]
            ties[name] = value
        if errors:
            raise InvalidInput(errors)
        principal = principal_of(request)
        # Instances post discovery results; only the site's leader may (or the instance a run named by
        # runId was dispatched to).
        is_instance = Scope.INSTANCE in principal.scopes and not principal.is_admin
        if principal.instance_id:
            # An instance's own token speaks for that instance only: the results are its (for the leader
            # check, discoveredBy and the idempotency key), whatever instanceId the body names.
            instance_id = principal.instance_id

        items, mapping_errors = body["devices"], {}
        if document_format == "promsnmp":
            items, mapping_errors = devices_from_promsnmp(items)

        def process() -> idempotency.Answer:
            result = services.inventory_add_devices(
                actor=self.actor(),
                site_id=site_id,
                items=items,
                source=source,
                instance_id=instance_id,
                require_leader=is_instance,
                run_id=ties["runId"],
                seed_id=ties["seedId"],
                add_only=document_format == "promsnmp",
            )
            answer = _add_devices_body(result)
            if document_format == "promsnmp":
                _in_promsnmp_terms(answer, body["devices"], mapping_errors)
            return idempotency.Answer(status=200, body=answer)

        if key is None:
            answer = process()
        else:
            # The results of one instance: its key holds across its re-registrations (a new token each).
            owner = f"instance:{instance_id}" if instance_id else f"token:{_token_id(principal)}"
            answer = idempotency.idempotent_call(
                site_id=site_id,
                owner=owner,
                key=key,
                body_hash=idempotency.request_hash(body),
                process=process,
            )
        headers = {"Idempotent-Replayed": "true"} if answer.replayed else None
        return Response(answer.body, status=answer.status, headers=headers)


def _token_id(principal) -> str:
    return principal.token.id if principal.token is not None else str(principal.actor)


def _add_devices_body(result: services.AddDevicesResult) -> dict:
    return {
        "added": result.count("added"),
        "updated": result.count("updated"),
        "unchanged": result.count("unchanged"),
        "failed": result.count("failed"),
        "newVersion": result.version,
        "devices": [
            {
                "id": o.id,
                "sysName": o.sys_name,
                "status": o.status,
                **({"error": o.error} if o.error else {}),
            }
            for o in result.outcomes
        ],
    }


def _in_promsnmp_terms(answer: dict, sent: list, mapping_errors: dict[int, dict[str, list[str]]]) -> None:
    """Failed devices of a PromSNMP-form POST: errors named by PromSNMP's fields, the mapping's own
    (an unknown SNMP4J version, type or security level) instead of what parsing then said."""
    for index, outcome in enumerate(answer["devices"]):
        if outcome["status"] != "failed":
            continue
        if index in mapping_errors:
            outcome["error"] = mapping_errors[index]
            item = sent[index]
            name = item.get("sysName") if isinstance(item, dict) else None
            outcome["sysName"] = name if isinstance(name, str) else None
        else:
            outcome["error"] = {promsnmp_path(path): messages for path, messages in outcome["error"].items()}


class DeviceDetailView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "DELETE": WRITERS}

    @extend_schema(
        operation_id="inventory_device_retrieve",
        summary="One device",
        parameters=[INCLUDE_CREDENTIALS],
        responses={200: DeviceOut, **error_responses(400, 401, 403, 404)},
        tags=["inventory"],
    )
    def get(self, request, site_id: str, device_id: str):
        site = _site(request, site_id)
        include_credentials = credentials_allowed(request)
        device = next(
            selectors.iter_devices(site, include_credentials=include_credentials, device_ids=[device_id]),
            None,
        )
        if device is None:
            raise NotFoundError(f"No device {device_id!r} in site {site_id!r}.")
        return Response(device)

    @extend_schema(
        operation_id="inventory_device_destroy",
        summary="Remove a device (one new version)",
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["inventory"],
    )
    def delete(self, request, site_id: str, device_id: str):
        _site(request, site_id)
        services.device_delete(actor=self.actor(), site_id=site_id, device_id=device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class InventoryChangesView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES}

    @extend_schema(
        operation_id="inventory_changes",
        summary="Devices added or updated, and ids removed, since a version (410: fetch in full)",
        parameters=[OpenApiParameter("since", VERSION_SCHEMA, required=True), INCLUDE_CREDENTIALS],
        responses={200: ChangesOut, **error_responses(400, 401, 403, 404), 410: error_responses(404)[404]},
        tags=["inventory"],
    )
    def get(self, request, site_id: str):
        site = _site(request, site_id)
        include_credentials = credentials_allowed(request)
        since = _int_param(request, "since", required=True)
        current = site.inventory_version
        removed = selectors.removed_device_ids_since(site, since)
        if removed is None:
            raise ApiError(
                status.HTTP_410_GONE,
                "gone",
                f"Changes since version {since} are not available (current {current}); "
                "fetch the full inventory.",
            )
        if include_credentials:
            selectors.require_decryptable(site)
        head = {"fromVersion": since, "version": current}
        devices = selectors.iter_devices(site, include_credentials=include_credentials, changed_since=since)
        return json_stream(
            request,
            selectors.stream_json_document(
                head,
                {
                    "devices": devices,
                    "removedDeviceIds": removed,
                    "discoverySeeds": selectors.site_seeds(site.pk, include_credentials=include_credentials),
                },
            ),
        )
