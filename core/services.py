"""Writes owned by core: API tokens."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.apps import apps
from django.db import transaction
from django.utils import timezone

from core.audit import Actor, audit_record
from core.authentication import hash_token
from core.crypto import ENCRYPTED_FIELDS, PREFIX, key_ring
from core.errors import InvalidInput, NotFoundError
from core.events import end_sessions, token_group
from core.hooks import Provider
from core.ids import new_id
from core.models import ApiToken, Scope

TOKEN_PREFIX = "psm_"


# site id → whether there is such a site (for a token bound to one); the sites app provides it in ready().
site_exists: Provider[[str], bool] = Provider("site_exists", default=lambda site_id: False)


@transaction.atomic
def token_create(
    *,
    actor: Actor,
    name: str,
    scopes: list[str],
    site_id: str | None = None,
    expires_days: int | None = None,
    instance_id: str = "",
) -> tuple[ApiToken, str]:
    """Create a token; returns it with the plaintext, which is never stored or shown again. With
    `instance_id` it is that instance's own credential (issued by register, see instances/services.py)."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name or len(name) > 255:
        errors["name"] = ["A name of 1 to 255 characters is required."]
    valid = set(Scope.values)
    if not scopes or any(scope not in valid for scope in scopes):
        errors["scopes"] = [f"Give one or more scopes from {sorted(valid)}."]
    if site_id and not site_exists(site_id):
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
        instance_id=instance_id,
        expires_at=timezone.now() + timedelta(days=expires_days) if expires_days else None,
        created_by=str(actor),
    )
    audit_record(
        actor=actor,
        action="token_created",
        entity_type="api_token",
        entity_id=token.id,
        site_id=site_id or "",
        instance_id=instance_id,
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
        _end_token_sessions(token.id, "token_revoked", "The token this socket was opened with was revoked.")
    return token


def instance_tokens_delete(*, instance_id: str) -> int:
    """Delete an instance's own tokens (it re-registered, or is gone) and close the sockets opened with
    them. No audit row of its own: the caller's (registration, deregistration) says why."""
    token_ids = list(ApiToken.objects.filter(instance_id=instance_id).values_list("id", flat=True))
    for token_id in token_ids:
        _end_token_sessions(token_id, "token_revoked", "This instance token was replaced or withdrawn.")
    ApiToken.objects.filter(id__in=token_ids).delete()
    return len(token_ids)


def _end_token_sessions(token_id: str, error: str, detail: str) -> None:
    end_sessions(group=token_group(token_id), code=4401, error=error, detail=detail)


def _iso(value) -> str | None:
    return value.isoformat() if value else None


def encryption_rotate(*, actor: Actor, batch_size: int = 1000) -> dict[str, int]:
    """Re-encrypt every stored secret under the primary key of FIELD_ENCRYPTION_KEYS.

    Idempotent and resumable: rows already under the primary key are skipped, and each batch commits
    on its own, so a run interrupted halfway can simply be started again.
    """
    ring = key_ring()
    counts: dict[str, int] = {}
    for model_label, field_name in ENCRYPTED_FIELDS:
        model = apps.get_model(model_label)
        stale = model.objects.exclude(**{f"{field_name}__startswith": f"{PREFIX}:{ring.primary_id}:"})
        done = 0
        while True:
            with transaction.atomic():
                rows = list(stale.select_for_update().only("pk", field_name).order_by("pk")[:batch_size])
                if not rows:
                    break
                for row in rows:
                    setattr(row, field_name, ring.encrypt(ring.decrypt(getattr(row, field_name))))
                model.objects.bulk_update(rows, [field_name])
                done += len(rows)
        counts[f"{model_label}.{field_name}"] = done
    audit_record(
        actor=actor,
        action="encryption_key_rotated",
        entity_type="encryption_key",
        entity_id=ring.primary_id,
        details={"reencrypted": counts},
    )
    return counts
