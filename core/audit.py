"""Who is acting, and the audit trail every write leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.logging import current_request_id
from core.models import AuditLog


@dataclass(frozen=True)
class Actor:
    """The caller of a service: an API token, an admin user, a command, or the system itself."""

    kind: str  # "token", "user", "command", "system"
    name: str
    token_id: str = ""
    user_id: str = ""
    ip_address: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        return cls(kind="system", name=name)

    @classmethod
    def command(cls, name: str) -> Actor:
        return cls(kind="command", name=f"manage.py {name}")

    @classmethod
    def user(cls, user, ip_address: str | None = None) -> Actor:
        return cls(kind="user", name=user.get_username(), user_id=str(user.pk), ip_address=ip_address)

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def audit_record(
    *,
    actor: Actor,
    action: str,
    entity_type: str,
    entity_id: str,
    site_id: str = "",
    instance_id: str = "",
    details: dict[str, Any] | None = None,
) -> AuditLog:
    """Write one audit row. Callers pass details without secrets."""
    return AuditLog.objects.create(
        site_id=site_id or "",
        instance_id=instance_id or "",
        user_id=actor.user_id,
        token_id=actor.token_id,
        actor=str(actor)[:255],
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        details=details or {},
        ip_address=actor.ip_address,
        request_id=current_request_id() or "",
    )
