"""Reads owned by core: the audit log, an instance's own tokens."""

from __future__ import annotations

from datetime import datetime

from django.db.models import QuerySet

from core.models import ApiToken, AuditLog
from core.timefmt import iso_z


def instance_tokens(instance_id: str) -> QuerySet[ApiToken]:
    """The tokens issued to one instance (by its registration), newest first."""
    return ApiToken.objects.filter(instance_id=instance_id).order_by("-created_at")


def audit_entry(row: AuditLog) -> dict:
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


def audit_log_list(
    *, site_id: str | None, entity_type: str | None, since: datetime | None, limit: int, offset: int
) -> dict:
    """GET /audit-log: a page of entries, newest first, of one site, one entity type and from `since`
    when given, and how many match in all."""
    rows = AuditLog.objects.all()
    if site_id:
        rows = rows.filter(site_id=site_id)
    if entity_type:
        rows = rows.filter(entity_type=entity_type)
    if since:
        rows = rows.filter(created_at__gte=since)
    total = rows.count()
    page = rows.order_by("-id")[offset : offset + limit]
    return {"entries": [audit_entry(row) for row in page], "total": total, "limit": limit, "offset": offset}
