"""Health probes and the audit-log API."""

from __future__ import annotations

from datetime import datetime

import redis
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
from core.permissions import ADMINS
from core.selectors import audit_log_list


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
        bound = self.principal().site_id
        site_id = request.query_params.get("siteId")
        if bound and site_id and site_id != bound:
            raise exceptions.PermissionDenied(f"This token is bound to site {bound!r}.")
        return Response(
            audit_log_list(
                site_id=bound or site_id,
                entity_type=request.query_params.get("entityType"),
                since=timestamp_param(request.query_params, "since"),
                limit=limit,
                offset=offset,
            )
        )
