"""`Idempotency-Key` for POST …/inventory/devices (discovery results), as Stripe does it.

The first request with a key (per site and caller) is processed and its 2xx answer stored in the same
transaction; a repeat gets that answer again (same status and body) and changes nothing: no version, no
event, no audit row, no lastSeen. An answer that is an error is not stored: it changed nothing (the
transaction rolled back), so a repeat is processed afresh.

Concurrency: the site row is locked (as every inventory change set locks it) before the key is looked
up, so two requests with the same key run one after the other; the second finds the first's committed
answer. The key's row is never visible half-done.

Rows live IDEMPOTENCY_KEY_TTL_SECONDS (24 h); older ones are deleted when a new key is stored (one
indexed DELETE, so no periodic job is needed).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from core.errors import ApiError, InvalidInput
from inventory.models import IdempotencyKey
from sites.services import site_get_locked

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    replayed: bool = False


class KeyReused(ApiError):
    """422 idempotency_key_reused: the key was used for a different request body."""

    def __init__(self, key: str):
        super().__init__(
            422,
            "idempotency_key_reused",
            f"Idempotency-Key {key[:64]!r} was already used with a different request body; "
            "use a new key for a new request.",
            {HEADER: ["Already used with a different request body."]},
        )


def ttl_seconds() -> int:
    return settings.IDEMPOTENCY_KEY_TTL_SECONDS


def key_from_header(value: str | None) -> str | None:
    """The header's key; None when the header is absent. Empty or longer than 255 characters → 400."""
    if value is None:
        return None
    key = value.strip()
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise InvalidInput(
            {HEADER: [f"1 to {MAX_KEY_LENGTH} printable characters (a UUID is a good key)."]},
            detail=f"Invalid {HEADER} header.",
        )
    return key


def request_hash(body: Any) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotent_call(
    *,
    site_id: str,
    owner: str,
    key: str,
    body_hash: str,
    process: Callable[[], Answer],
) -> Answer:
    """Run `process` once per (site, owner, key); a repeat answers what the first one answered."""
    with transaction.atomic():
        site_get_locked(site_id)  # 404 for an unknown site; serialises requests with the same key
        stored = (
            IdempotencyKey.objects.filter(site_id=site_id, owner=owner, key=key)
            .only("request_hash", "status", "response")
            .first()
        )
        if stored is not None:
            if stored.request_hash != body_hash:
                raise KeyReused(key)
            return Answer(status=stored.status, body=stored.response, replayed=True)
        answer = process()
        if 200 <= answer.status < 300:
            now = timezone.now()
            IdempotencyKey.objects.filter(created_at__lt=now - timedelta(seconds=ttl_seconds())).delete()
            IdempotencyKey.objects.create(
                site_id=site_id,
                owner=owner,
                key=key,
                request_hash=body_hash,
                status=answer.status,
                response=answer.body,
                created_at=now,
            )
        return answer
