"""Bearer tokens for instances and automation; the admin's session for staff in a browser."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework import authentication, exceptions

from core.audit import Actor
from core.models import ApiToken, Scope

LAST_USED_RESOLUTION = timedelta(minutes=1)


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


def token_lookup(plaintext: str) -> ApiToken:
    """The live token for a plaintext, or AuthenticationFailed. Also used by the WebSocket."""
    token = ApiToken.objects.filter(token_hash=hash_token(plaintext)).first()
    if token is None or token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("Invalid or revoked token.")
    now = timezone.now()
    if token.expires_at is not None and token.expires_at <= now:
        raise exceptions.AuthenticationFailed("Token expired.")
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        # At most one write a minute per token, even under concurrent requests.
        ApiToken.objects.filter(pk=token.pk, last_used_at=token.last_used_at).update(last_used_at=now)
    return token


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
