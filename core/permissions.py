"""Scope checks. Each API view declares, per HTTP method, which scopes may call it."""

from __future__ import annotations

from rest_framework import exceptions, permissions

from core.authentication import Principal
from core.errors import InvalidInput
from core.hooks import Provider
from core.models import Scope

READERS = frozenset({Scope.READ, Scope.WRITE, Scope.ADMIN})
WRITERS = frozenset({Scope.WRITE, Scope.ADMIN})
ADMINS = frozenset({Scope.ADMIN})
INSTANCES = frozenset({Scope.INSTANCE, Scope.ADMIN})


def principal_of(request) -> Principal:
    principal = request.user
    if not isinstance(principal, Principal):
        raise exceptions.NotAuthenticated()
    return principal


class ScopePermission(permissions.BasePermission):
    """`view.allowed_scopes = {"GET": READERS, "POST": WRITERS}`; admin may do everything."""

    message = "This token's scopes do not allow this operation."

    def has_permission(self, request, view) -> bool:
        principal = request.user
        if not isinstance(principal, Principal):
            return False
        method = "GET" if request.method in ("HEAD", "OPTIONS") else request.method
        allowed = getattr(view, "allowed_scopes", {}).get(method)
        if allowed is None:
            return True  # no such method here: DRF answers 405
        if principal.is_admin or principal.has_any(allowed):
            return True
        self.message = (
            f"{method} here needs one of the scopes {sorted(str(s) for s in allowed)}; "
            f"this token has {sorted(principal.scopes)}."
        )
        return False


# site id → whether the site takes enrolment tokens for register only (its requireInstanceTokens); the
# sites app provides it in ready().
instance_tokens_required: Provider[[str], bool] = Provider(
    "instance_tokens_required", default=lambda site_id: False
)


def enrolment_refused(principal: Principal, site_id: str) -> str | None:
    """Why an instance-scope token that is not an instance's own may not act for the site beyond
    registering (its config says requireInstanceTokens), or None."""
    if principal.is_admin or principal.instance_id or Scope.INSTANCE not in principal.scopes:
        return None
    if not instance_tokens_required(site_id):
        return None
    return (
        f"Site {site_id!r} requires instance tokens: this token may only register; use the "
        "instanceToken that register answers."
    )


def require_site_access(request, site_id: str, *, enrolling: bool = False) -> None:
    """403 when the caller's token is bound to another site, or (unless `enrolling`, i.e. register) is an
    enrolment token of a site that requires instance tokens."""
    principal = principal_of(request)
    if not principal.may_access_site(site_id):
        raise exceptions.PermissionDenied(f"This token is bound to site {principal.site_id!r}.")
    if not enrolling and (refused := enrolment_refused(principal, site_id)):
        raise exceptions.PermissionDenied(refused)


def require_instance_access(request, instance_id: str, site_id: str, *, enrolling: bool = False) -> None:
    """require_site_access, and 403 when the token is another instance's own."""
    require_site_access(request, site_id, enrolling=enrolling)
    if not principal_of(request).may_act_for_instance(instance_id):
        raise exceptions.PermissionDenied("This token belongs to another instance.")


def require_scopes(request, allowed: frozenset[str], what: str) -> None:
    principal = principal_of(request)
    if not (principal.is_admin or principal.has_any(allowed)):
        raise exceptions.PermissionDenied(f"{what} needs one of the scopes {sorted(map(str, allowed))}.")


def credentials_allowed(request) -> bool:
    """?includeCredentials=true: secrets for admin tokens and instance tokens (of the site: binding is
    checked separately); 403 for anyone else who asks; False when not asked."""
    raw = request.query_params.get("includeCredentials")
    if raw is None:
        return False
    value = raw.strip().lower()
    if value not in ("true", "false", "1", "0"):
        raise InvalidInput({"includeCredentials": ["Must be true or false."]})
    if value in ("false", "0"):
        return False
    principal = principal_of(request)
    if principal.is_admin or Scope.INSTANCE in principal.scopes:
        return True
    raise exceptions.PermissionDenied("Credentials are only for admin tokens and the site's instance tokens.")
