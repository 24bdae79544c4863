"""Instance endpoints: register, heartbeat, deregister, get."""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import APIException
from rest_framework.response import Response

from core.api import BODY_ERRORS, ApiView, error_responses, schema
from core.errors import NotFoundError
from core.fields import BoundedJSONObjectField, StrictCharField, StrictIntegerField
from core.permissions import INSTANCES, READERS, WRITERS, require_instance_access
from core.timefmt import iso_z
from instances import selectors, services
from instances.models import Instance, ReportedStatus
from instances.scrape import SCRAPE_ADDRESS_PATTERN, valid_scrape_address
from sites.api import InstanceConfigOut
from sites.selectors import instance_config

# --- input -----------------------------------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "propertyNames": {"maxLength": 255},
        "additionalProperties": {"type": "string", "maxLength": 255},
        "description": "A string → string map (keys and values of at most 255 characters).",
    }
)
class StringMapField(BoundedJSONObjectField):
    default_error_messages = {"not_strings": "Keys and values must be strings of at most 255 characters."}

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if any(not isinstance(v, str) or len(k) > 255 or len(v) > 255 for k, v in data.items()):
            self.fail("not_strings")
        return data


@extend_schema_field(
    {
        "type": "string",
        "maxLength": 262,
        "pattern": SCRAPE_ADDRESS_PATTERN,
        "description": "host:port where Prometheus scrapes this instance (a DNS name, an IPv4 address or "
        "a bracketed IPv6 address, and a port 1-65535), or empty for none.",
        "example": "10.1.2.3:8080",
    }
)
class ScrapeAddressField(StrictCharField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if value and not valid_scrape_address(value):
            raise serializers.ValidationError(
                "Expected host:port (a DNS name, an IPv4 address or [IPv6 address], and a port 1-65535)."
            )
        return value


class RegisterIn(serializers.Serializer):
    siteId = StrictCharField(max_length=64)
    hostname = StrictCharField(max_length=255)
    version = StrictCharField(max_length=32, required=False, allow_blank=True, default="")
    podName = StrictCharField(max_length=255, required=False, allow_blank=True, default="")
    capabilities = serializers.ListField(
        child=StrictCharField(min_length=1, max_length=64), required=False, default=list, max_length=64
    )
    labels = StringMapField(required=False, default=dict, max_bytes=16384)
    scrapeAddress = ScrapeAddressField(max_length=262, required=False, allow_blank=True, default="")


BIGINT_MAX = 2**63 - 1  # PositiveBigIntegerField
INTEGER_MAX = 2**31 - 1  # PositiveIntegerField


class HeartbeatIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=ReportedStatus.choices)
    uptime = StrictIntegerField(
        min_value=0, max_value=BIGINT_MAX, required=False, allow_null=True, help_text="seconds"
    )
    inventoryVersion = StrictIntegerField(min_value=0, max_value=BIGINT_MAX, required=False, allow_null=True)
    configVersion = StrictIntegerField(min_value=0, max_value=INTEGER_MAX, required=False, allow_null=True)
    metrics = BoundedJSONObjectField(required=False, max_bytes=65536)


# --- output ----------------------------------------------------------------------------------------

RegisterOut = schema(
    "RegisterResponse",
    {
        "instanceId": serializers.CharField(),
        "siteId": serializers.CharField(),
        "isLeader": serializers.BooleanField(),
        "inventoryVersion": serializers.IntegerField(),
        "configVersion": serializers.IntegerField(),
        "config": InstanceConfigOut(),
        "websocketUrl": serializers.CharField(help_text="Absolute ws:// or wss:// URL of the event socket."),
        "leaderTerm": serializers.IntegerField(help_text="Fencing token; grows on every leadership change."),
        "instanceToken": serializers.CharField(
            help_text="This instance's own bearer token, shown once: good for this instance only (heartbeat, "
            "deregister, the event socket, its site's inventory and results). Re-registering issues a new "
            "one and withdraws the old."
        ),
    },
)
HeartbeatOut = schema(
    "HeartbeatResponse",
    {
        "status": serializers.ChoiceField(["ok"]),
        "isLeader": serializers.BooleanField(),
        "inventoryVersion": serializers.IntegerField(),
        "configVersion": serializers.IntegerField(),
        "configChanged": serializers.BooleanField(),
        "serverTime": serializers.DateTimeField(),
        "leaderTerm": serializers.IntegerField(),
    },
)
DeregisterOut = schema(
    "DeregisterResponse",
    {
        "status": serializers.ChoiceField(["deregistered"]),
        "wasLeader": serializers.BooleanField(),
        "newLeader": serializers.CharField(allow_null=True),
    },
)
InstanceOut = schema(
    "Instance",
    {
        "id": serializers.CharField(),
        "siteId": serializers.CharField(),
        "hostname": serializers.CharField(),
        "podName": serializers.CharField(),
        "version": serializers.CharField(),
        "isLeader": serializers.BooleanField(),
        "status": serializers.ChoiceField(["healthy", "degraded", "offline"], help_text="Liveness."),
        "reportedStatus": serializers.ChoiceField(ReportedStatus.values, help_text="The instance's own."),
        "lastHeartbeat": serializers.DateTimeField(allow_null=True),
        "registeredAt": serializers.DateTimeField(),
        "leaderSince": serializers.DateTimeField(allow_null=True),
        "uptime": serializers.IntegerField(allow_null=True),
        "inventoryVersion": serializers.IntegerField(allow_null=True),
        "configVersion": serializers.IntegerField(allow_null=True),
        "capabilities": serializers.ListField(child=serializers.CharField()),
        "labels": serializers.DictField(child=serializers.CharField()),
        "scrapeAddress": serializers.CharField(
            allow_null=True, help_text="host:port it registered for Prometheus to scrape; null if none."
        ),
        "metrics": serializers.DictField(),
    },
)


def websocket_url(request) -> str:
    """Absolute URL of the event socket: PUBLIC_WS_URL, else PUBLIC_URL, else this request's host."""
    if settings.PUBLIC_WS_URL:
        return settings.PUBLIC_WS_URL
    if settings.PUBLIC_URL:
        base = settings.PUBLIC_URL.rstrip("/")
        base = "wss://" + base[len("https://") :] if base.startswith("https://") else base
        base = "ws://" + base[len("http://") :] if base.startswith("http://") else base
        return f"{base}/api/v1/ws"
    scheme = "wss" if request.is_secure() else "ws"
    host = request.get_host()
    if not settings.EMBEDDED and settings.WS_PORT:
        host = f"{host.rsplit(':', 1)[0]}:{settings.WS_PORT}" if not host.endswith("]") else host
    return f"{scheme}://{host}/api/v1/ws"


def _instance_for(request, instance_id: str) -> Instance:
    instance = selectors.instance_get(instance_id)
    require_instance_access(request, instance.id, instance.site_id)
    return instance


# --- views -----------------------------------------------------------------------------------------


class RegisterView(ApiView):
    allowed_scopes = {"POST": INSTANCES}
    throttle_scope = "register"  # + RATE_LIMIT_REGISTER_PER_SITE per siteId (core.throttling)

    @extend_schema(
        operation_id="instances_register",
        summary="Register an instance (re-registering the same siteId, hostname and podName reuses it)",
        request=RegisterIn,
        responses={200: RegisterOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["instances"],
    )
    def post(self, request):
        data = self.validated(RegisterIn)
        existing = selectors.instance_by_identity(data["siteId"], data["hostname"], data["podName"])
        # An instance's own token may re-register that instance, never enrol another.
        require_instance_access(request, existing.id if existing else "", data["siteId"], enrolling=True)
        enrollment = services.instance_enroll(
            actor=self.actor(),
            site_id=data["siteId"],
            hostname=data["hostname"],
            version=data["version"],
            pod_name=data["podName"],
            capabilities=data["capabilities"],
            labels=data["labels"],
            scrape_address=data["scrapeAddress"],
        )
        instance, site = enrollment.instance, enrollment.site
        return Response(
            {
                "instanceId": instance.id,
                "siteId": site.id,
                "isLeader": instance.is_leader,
                "inventoryVersion": site.inventory_version,
                "configVersion": site.config_version,
                "config": instance_config(site),
                "websocketUrl": websocket_url(request),
                "leaderTerm": site.leader_term,
                "instanceToken": enrollment.instance_token,
            }
        )


class HeartbeatView(ApiView):
    allowed_scopes = {"POST": INSTANCES}

    @extend_schema(
        operation_id="instances_heartbeat",
        summary="Heartbeat: report status and metrics, learn leadership and versions",
        request=HeartbeatIn,
        responses={200: HeartbeatOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["instances"],
    )
    def post(self, request, instance_id: str):
        principal = self.principal()
        # The common case (the instance's own token, or an admin's) reads nothing before the write: the
        # token's site binding goes into the UPDATE. Anything else (an enrolment token: its site's
        # requireInstanceTokens) is checked first, and refusals come as before: 404 or 403, then 400.
        checked = not (principal.is_admin or principal.instance_id == instance_id)
        if checked:
            _instance_for(request, instance_id)
        try:
            data = self.validated(HeartbeatIn)
        except APIException:  # a body that does not parse or validate
            if not checked:
                _instance_for(request, instance_id)
            raise
        try:
            result = services.instance_heartbeat(
                actor=self.actor(),
                instance_id=instance_id,
                status=data["status"],
                uptime=data.get("uptime"),
                inventory_version=data.get("inventoryVersion"),
                config_version=data.get("configVersion"),
                metrics=data.get("metrics"),
                site_id=principal.site_id,
            )
        except NotFoundError:
            _instance_for(request, instance_id)  # 403 when it is another site's instance
            raise
        return Response(
            {
                "status": "ok",
                "isLeader": result.is_leader,
                "inventoryVersion": result.inventory_version,
                "configVersion": result.config_version,
                "configChanged": result.config_changed,
                "serverTime": iso_z(timezone.now()),
                "leaderTerm": result.leader_term,
            }
        )


class InstanceDetailView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "DELETE": WRITERS | INSTANCES}

    @extend_schema(
        operation_id="instances_retrieve",
        summary="Get an instance",
        responses={200: InstanceOut, **error_responses(401, 403, 404)},
        tags=["instances"],
    )
    def get(self, request, instance_id: str):
        return Response(selectors.instance_representation(_instance_for(request, instance_id)))

    @extend_schema(
        operation_id="instances_deregister",
        summary="Deregister an instance (a leader hands over to the healthiest follower)",
        responses={200: DeregisterOut, **error_responses(401, 403, 404)},
        tags=["instances"],
    )
    def delete(self, request, instance_id: str):
        _instance_for(request, instance_id)
        result = services.instance_deregister(actor=self.actor(), instance_id=instance_id)
        return Response(
            {"status": "deregistered", "wasLeader": result.was_leader, "newLeader": result.new_leader_id}
        )
