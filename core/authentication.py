"""Bearer tokens for instances and automation; the admin's session for staff in a browser."""

from __future__ import annotations

import atexit
import hashlib
import ipaddress
import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions

from core.audit import Actor
from core.db import model_from_row, prepared_cursor, select_columns
from core.models import ApiToken, Scope

logger = logging.getLogger("promsnmp.tokens")

LAST_USED_RESOLUTION = timedelta(minutes=1)
# A token's use is noted in memory and written after the response, together with the other uses noted
# meanwhile: at most one write of last_used_at every this many seconds per process (tests set 0).
LAST_USED_FLUSH_SECONDS = 10.0
LAST_USED_BATCH = 500  # tokens per UPDATE statement


def hash_token(plaintext: str) -> str:
    # Tokens are 256 random bits: a fast hash is enough, and lookups stay one index probe.
    return hashlib.sha256(plaintext.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """What the permission checks need to know about a caller."""

    scopes: frozenset[str]
    site_id: str | None  # a token bound to one site
    actor: Actor
    token: ApiToken | None = None
    is_authenticated: bool = True
    instance_id: str = ""  # an instance's own token: good for that instance only

    def may_act_for_instance(self, instance_id: str) -> bool:
        return not self.instance_id or self.instance_id == instance_id

    def has_any(self, scopes: frozenset[str] | set[str]) -> bool:
        return bool(self.scopes & set(scopes))

    @property
    def is_admin(self) -> bool:
        return Scope.ADMIN in self.scopes

    def may_access_site(self, site_id: str) -> bool:
        return self.site_id is None or self.site_id == site_id


def client_ip(request) -> str | None:
    """The caller's address; behind NUM_PROXIES trusted proxies, taken from X-Forwarded-For."""
    remote = request.META.get("REMOTE_ADDR") or None
    proxies = settings.NUM_PROXIES
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            candidate = hops[-min(proxies, len(hops))]
            try:
                return str(ipaddress.ip_address(candidate))
            except ValueError:
                return remote
    return remote


def token_principal(token: ApiToken, ip_address: str | None) -> Principal:
    actor = Actor(
        kind="token",
        name=token.name,
        token_id=token.id,
        ip_address=ip_address,
        scopes=frozenset(token.scopes),
    )
    return Principal(
        scopes=frozenset(token.scopes),
        site_id=token.site_id,
        actor=actor,
        token=token,
        instance_id=token.instance_id,
    )


def live_tokens():
    """Tokens that authenticate now: not revoked, not expired."""
    return ApiToken.objects.filter(revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
    )


@cache
def _token_sql() -> str:
    return f"SELECT {select_columns(ApiToken)} FROM api_tokens WHERE token_hash = %s"  # noqa: S608 (column names)


def token_lookup(plaintext: str) -> ApiToken:
    """The live token for a plaintext, or AuthenticationFailed: one read, no write (the use is noted for
    token_uses_flush). Also used by the WebSocket."""
    # A fixed SQL text: the same row as the ORM's filter().first() for a fraction of its CPU (no SQL to
    # compile), prepared on PostgreSQL (core.db), since this runs on every request.
    with prepared_cursor() as cursor:
        cursor.execute(_token_sql(), [hash_token(plaintext)])
        row = cursor.fetchone()
    token = None if row is None else model_from_row(ApiToken, row)
    if token is None or token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("Invalid or revoked token.")
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        raise exceptions.AuthenticationFailed("Token expired.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        _uses.note(token.pk, now)
    return token


class _TokenUses:
    """Uses of tokens whose stored last_used_at is older than LAST_USED_RESOLUTION, by token id, waiting to
    be written in one statement. Per process; a process that dies loses at most a flush period of them."""

    def __init__(self):
        self._lock = threading.Lock()
        self._pending: dict[str, datetime] = {}
        self._flushed_at = float("-inf")  # time.monotonic() of the last write

    def note(self, token_id: str, at: datetime) -> None:
        with self._lock:
            self._pending[token_id] = at

    def take(self, *, force: bool) -> dict[str, datetime]:
        """What is to be written now (everything, when `force` or the last write is old enough)."""
        with self._lock:
            due = force or time.monotonic() - self._flushed_at >= LAST_USED_FLUSH_SECONDS
            if not self._pending or not due:
                return {}
            taken, self._pending = self._pending, {}
            self._flushed_at = time.monotonic()
            return taken

    def put_back(self, uses: dict[str, datetime]) -> None:
        with self._lock:
            for token_id, at in uses.items():
                self._pending[token_id] = max(at, self._pending.get(token_id, at))

    def clear(self) -> None:
        with self._lock:
            self._pending.clear()
            self._flushed_at = float("-inf")


_uses = _TokenUses()


def token_uses_flush(*, force: bool = False) -> int:
    """Write the noted uses (when the last write is LAST_USED_FLUSH_SECONDS old, or `force`). Uses are
    recorded to the second, one UPDATE per second of use and LAST_USED_BATCH tokens (a busy process writes a
    period's uses in about as many statements as the period has seconds), never moving a last_used_at
    backwards. Returns the rows written. A failure keeps the uses for the next flush and is logged; it never
    reaches the caller."""
    uses = _uses.take(force=force)
    if not uses:
        return 0
    by_second: dict[datetime, list[str]] = {}
    for token_id, at in uses.items():
        by_second.setdefault(at.replace(microsecond=0), []).append(token_id)
    written = 0
    try:
        for at, token_ids in sorted(by_second.items()):
            for start in range(0, len(token_ids), LAST_USED_BATCH):
                written += (
                    ApiToken.objects.filter(pk__in=token_ids[start : start + LAST_USED_BATCH])
                    .filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=at))
                    .update(last_used_at=at)
                )
    except Exception:
        _uses.put_back(uses)
        logger.warning("could not record the last use of %d token(s); will retry", len(uses), exc_info=True)
    return written


def token_uses_flush_after_request(**_kwargs) -> None:
    """request_finished: the response is sent; write the noted uses if due. Django closed the request's
    connection before this ran (close_old_connections): close the one the flush opened, too."""
    was_open = connection.connection is not None
    token_uses_flush()
    if not was_open and connection.connection is not None and not connection.in_atomic_block:
        connection.close()


atexit.register(token_uses_flush, force=True)  # a process that stops writes what it noted


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        parts = header.split()
        if not parts or parts[0].lower() != self.keyword.lower():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Authorization header must be 'Bearer <token>'.")
        token = token_lookup(parts[1])
        return token_principal(token, client_ip(request)), token

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


class StaffSessionAuthentication(authentication.SessionAuthentication):
    """Staff logged in to the admin may use the API from the browser (CSRF enforced on writes)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is None:
            return None
        user, _ = result
        if not user.is_staff:
            return None
        scopes = {Scope.ADMIN} if user.is_superuser else {Scope.READ, Scope.WRITE}
        principal = Principal(
            scopes=frozenset(scopes), site_id=None, actor=Actor.user(user, client_ip(request))
        )
        return principal, None
