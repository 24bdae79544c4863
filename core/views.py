"""Health probes and the audit-log API."""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions, serializers
from rest_framework.response import Response

from core.api import (
    FILTER_SCHEMA,
    LIMIT_PARAM,
    OFFSET_PARAM,
    ApiView,
    error_responses,
    page_params,
    schema,
    timestamp_param,
)
from core.models import AuditLog
from core.permissions import ADMINS
from core.timefmt import iso_z


def live(request):
    """The process is up and serving."""
    return JsonResponse({"status": "ok"})


def ready(request):
    """The database (and Redis, when configured) answer: safe to send traffic here."""
    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
    if settings.REDIS_URL:
        import redis

        try:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            client.ping()
            client.close()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc.__class__.__name__}"
    ok = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", "checks": checks}, status=200 if ok else 503
    )


AuditEntryOut = schema(
    "AuditEntry",
    {
        "id": serializers.IntegerField(),
        "createdAt": serializers.DateTimeField(),
        "action": serializers.CharField(),
        "entityType": serializers.CharField(),
        "entityId": serializers.CharField(),
        "siteId": serializers.CharField(allow_null=True),
        "instanceId": serializers.CharField(allow_null=True),
        "actor": serializers.CharField(),
        "userId": serializers.CharField(allow_null=True),
        "tokenId": serializers.CharField(allow_null=True),
        "ipAddress": serializers.CharField(allow_null=True),
        "requestId": serializers.CharField(allow_null=True),
        "details": serializers.DictField(),
    },
)
AuditListOut = schema(
    "AuditLogList",
    {
        "entries": AuditEntryOut(many=True),
        "total": serializers.IntegerField(),
        "limit": serializers.IntegerField(),
        "offset": serializers.IntegerField(),
    },
)


def _entry(row: AuditLog) -> dict:
    return {
        "id": row.id,
        "createdAt": iso_z(row.created_at),
        "action": row.action,
        "entityType": row.entity_type,
        "entityId": row.entity_id,
        "siteId": row.site_id or None,
        "instanceId": row.instance_id or None,
        "actor": row.actor,
        "userId": row.user_id or None,
        "tokenId": row.token_id or None,
        "ipAddress": row.ip_address,
        "requestId": row.request_id or None,
        "details": row.details,
    }


class AuditLogView(ApiView):
    allowed_scopes = {"GET": ADMINS}

    @extend_schema(
        operation_id="audit_log_list",
        summary="Audit log, newest first (admin tokens)",
        parameters=[
            OpenApiParameter("siteId", FILTER_SCHEMA),
            OpenApiParameter("entityType", FILTER_SCHEMA, description="site, instance, api_token, …"),
            OpenApiParameter("since", datetime, description="ISO-8601; entries at or after it."),
            LIMIT_PARAM,
            OFFSET_PARAM,
        ],
        responses={200: AuditListOut, **error_responses(400, 401, 403)},
        tags=["audit"],
    )
    def get(self, request):
        limit, offset = page_params(request.query_params)
        rows = AuditLog.objects.all()
        principal = self.principal()
        site_id = request.query_params.get("siteId")
        if principal.site_id:
            if site_id and site_id != principal.site_id:
                raise exceptions.PermissionDenied(f"This token is bound to site {principal.site_id!r}.")
            rows = rows.filter(site_id=principal.site_id)
        if site_id:
            rows = rows.filter(site_id=site_id)
        if entity_type := request.query_params.get("entityType"):
            rows = rows.filter(entity_type=entity_type)
        if since := timestamp_param(request.query_params, "since"):
            rows = rows.filter(created_at__gte=since)
        total = rows.count()
        page = rows.order_by("-id")[offset : offset + limit]
        return Response(
            {"entries": [_entry(r) for r in page], "total": total, "limit": limit, "offset": offset}
        )
