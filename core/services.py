"""Writes owned by core: API tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from core.audit import Actor, audit_record
from core.authentication import hash_token
from core.errors import InvalidInput, NotFoundError
from core.ids import new_id
from core.models import ApiToken, Scope

TOKEN_PREFIX = "psm_"


def _site_exists(site_id: str) -> bool:
    # Through the FK's model, so core never imports a domain app.
    return ApiToken._meta.get_field("site").related_model.objects.filter(pk=site_id).exists()


@transaction.atomic
def token_create(
    *,
    actor: Actor,
    name: str,
    scopes: list[str],
    site_id: str | None = None,
    expires_days: int | None = None,
) -> tuple[ApiToken, str]:
    """Create a token; returns it with the plaintext, which is never stored or shown again."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name or len(name) > 255:
        errors["name"] = ["A name of 1 to 255 characters is required."]
    valid = set(Scope.values)
    if not scopes or any(scope not in valid for scope in scopes):
        errors["scopes"] = [f"Give one or more scopes from {sorted(valid)}."]
    if site_id and not _site_exists(site_id):
        errors["site"] = [f"No site {site_id!r}."]
    if expires_days is not None and not (1 <= expires_days <= 3650):
        errors["expiresDays"] = ["Expiry must be between 1 and 3650 days."]
    if errors:
        raise InvalidInput(errors)

    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        id=new_id("tok"),
        name=name,
        token_hash=hash_token(plaintext),
        prefix=plaintext[:12],
        scopes=sorted(set(scopes)),
        site_id=site_id or None,
        expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
        created_by=str(actor),
    )
    audit_record(
        actor=actor,
        action="token_created",
        entity_type="api_token",
        entity_id=token.id,
        site_id=site_id or "",
        details={"name": name, "scopes": token.scopes, "expiresAt": _iso(token.expires_at)},
    )
    return token, plaintext


@transaction.atomic
def token_revoke(*, actor: Actor, token_id: str) -> ApiToken:
    token = ApiToken.objects.select_for_update().filter(pk=token_id).first()
    if token is None:
        raise NotFoundError(f"No token {token_id!r}.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            action="token_revoked",
            entity_type="api_token",
            entity_id=token.id,
            site_id=token.site_id or "",
            details={"name": token.name},
        )
    return token


def _iso(value) -> str | None:
    return value.isoformat() if value else None
