"""Every endpoint x every caller → 2xx, 401 or 403, derived from the rule table below (issue 2, §2).

The world of every case: sites `site-a` and `site-b`, one instance registered in `site-a`. Endpoints
that name a site or an instance always name `site-a` (or its instance). A caller is a token with one
scope, unbound or bound to `site-a` ("same") or to `site-b` ("other"), or a broken credential.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit import Actor
from core.models import ApiToken, AuditLog
from core.services import token_revoke
from instances.models import Instance
from sites.models import Site
from tests.openapi import assert_matches_schema

READ, WRITE, ADMIN, INSTANCE = "read", "write", "admin", "instance"
SCOPES = (READ, WRITE, ADMIN, INSTANCE)
SITE, OTHER = "site-a", "site-b"

# name: (method, path, body, 2xx status, is the request about site-a?)
ENDPOINTS = {
    "sites.list": ("GET", "/api/v1/sites", None, 200, False),
    "sites.create": ("POST", "/api/v1/sites", {"id": "site-new", "label": "New"}, 201, False),
    "sites.get": ("GET", "/api/v1/sites/{site}", None, 200, True),
    "sites.put": ("PUT", "/api/v1/sites/{site}", {"label": "Replaced"}, 200, True),
    "sites.patch": ("PATCH", "/api/v1/sites/{site}", {"description": "patched"}, 200, True),
    "sites.delete": ("DELETE", "/api/v1/sites/{site}", None, 204, True),
    "sites.config": ("GET", "/api/v1/sites/{site}/config", None, 200, True),
    "instances.register": (
        "POST",
        "/api/v1/instances/register",
        {"siteId": SITE, "hostname": "host-new"},
        200,
        True,
    ),
    "instances.heartbeat": (
        "POST",
        "/api/v1/instances/{instance}/heartbeat",
        {"status": "healthy"},
        200,
        True,
    ),
    "instances.get": ("GET", "/api/v1/instances/{instance}", None, 200, True),
    "instances.deregister": ("DELETE", "/api/v1/instances/{instance}", None, 200, True),
    "audit.list": ("GET", "/api/v1/audit-log", None, 200, False),
    "fleet.health": ("GET", "/api/v1/fleet/health", None, 200, False),
    "fleet.metrics": ("GET", "/api/v1/fleet/metrics", None, 200, False),
    "fleet.metrics.prometheus": ("GET", "/api/v1/fleet/metrics?format=prometheus", None, 200, False),
}

# The rules, written once: which scopes may call each endpoint (admin may do everything).
ALLOWED = {
    "sites.list": {READ, WRITE, ADMIN},
    "sites.create": {WRITE, ADMIN},
    "sites.get": {READ, WRITE, ADMIN},
    "sites.put": {WRITE, ADMIN},
    "sites.patch": {WRITE, ADMIN},
    "sites.delete": {WRITE, ADMIN},
    "sites.config": {READ, WRITE, ADMIN, INSTANCE},
    "instances.register": {INSTANCE, ADMIN},
    "instances.heartbeat": {INSTANCE, ADMIN},
    "instances.get": {READ, WRITE, ADMIN, INSTANCE},
    "instances.deregister": {WRITE, ADMIN, INSTANCE},
    "audit.list": {ADMIN},
    "fleet.health": {READ, WRITE, ADMIN},
    "fleet.metrics": {READ, WRITE, ADMIN},
    "fleet.metrics.prometheus": {READ, WRITE, ADMIN},
}
# A token bound to any site may never do these.
FORBIDDEN_WHEN_BOUND = {"sites.create"}
# What GET /sites and the fleet endpoints show, by binding.
VISIBLE_SITES = {None: {SITE, OTHER}, "same": {SITE}, "other": {OTHER}}
BOUND_TO = {None: None, "same": SITE, "other": OTHER}


@dataclass(frozen=True)
class Caller:
    credential: str  # "token", "none", "garbage", "expired", "revoked"
    scope: str = ADMIN
    binding: str | None = None  # None, "same" (site-a), "other" (site-b)

    def __str__(self) -> str:
        if self.credential != "token":
            return f"{self.credential}-token"
        return f"{self.scope}-{self.binding or 'unbound'}"


CALLERS = [
    *(Caller("token", scope, binding) for scope in SCOPES for binding in (None, "same", "other")),
    *(Caller(credential) for credential in ("none", "garbage", "expired", "revoked")),
]


def expected_status(endpoint: str, caller: Caller) -> int:
    if caller.credential != "token":
        return 401
    if caller.scope != ADMIN and caller.scope not in ALLOWED[endpoint]:
        return 403
    if caller.binding and endpoint in FORBIDDEN_WHEN_BOUND:
        return 403
    if caller.binding == "other" and ENDPOINTS[endpoint][4]:
        return 403
    return ENDPOINTS[endpoint][3]


CASES = [
    pytest.param(endpoint, caller, id=f"{endpoint}-{caller}") for endpoint in ENDPOINTS for caller in CALLERS
]


def db_snapshot() -> dict:
    return {
        model.__name__: sorted(map(repr, model.objects.order_by("pk").values()))
        for model in (Site, Instance, AuditLog)
    }


@pytest.fixture
def world(make_site, register):
    make_site(SITE)
    make_site(OTHER)
    return {"site": SITE, "instance": register(SITE, "host-a", "pod-a")}


def client_as(caller: Caller, make_token) -> APIClient:
    client = APIClient()
    if caller.credential == "none":
        return client
    if caller.credential == "garbage":
        client.credentials(HTTP_AUTHORIZATION="Bearer psm_this-is-not-a-token")
        return client
    plaintext = make_token([caller.scope], site=BOUND_TO[caller.binding])
    if caller.credential == "expired":
        ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    elif caller.credential == "revoked":
        token_revoke(actor=Actor.command("tests"), token_id=ApiToken.objects.get().pk)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


@pytest.mark.parametrize(("endpoint", "caller"), CASES)
def test_scope_matrix(endpoint, caller, world, make_token):
    method, template, body, _, _ = ENDPOINTS[endpoint]
    path = template.format(**world)
    client = client_as(caller, make_token)
    before = db_snapshot()

    call = getattr(client, method.lower())
    response = call(path, body, format="json") if body else call(path)

    want = expected_status(endpoint, caller)
    assert response.status_code == want, (response.status_code, response.content[:300])
    if want < 300 and endpoint == "fleet.metrics.prometheus":
        assert response["Content-Type"].startswith("text/plain")
        shown = re.findall(r'promsnmp_site_instances\{site="([^"]+)"\}', response.content.decode())
        assert set(shown) == VISIBLE_SITES[caller.binding]
    elif want < 300:
        assert_matches_schema(response, method, path)
        if endpoint == "sites.list":
            assert {site["id"] for site in response.json()["sites"]} == VISIBLE_SITES[caller.binding]
            assert response.json()["total"] == len(VISIBLE_SITES[caller.binding])
        if endpoint in ("fleet.health", "fleet.metrics"):
            assert {site["id"] for site in response.json()["sites"]} == VISIBLE_SITES[caller.binding]
    else:
        assert set(response.json()) == {"error", "detail", "fields"}
        assert db_snapshot() == before, "a refused request changed something"
    if want == 401:
        assert response.json()["error"] == "unauthorized"
        assert response["WWW-Authenticate"].startswith("Bearer")
    if want == 403:
        assert response.json()["error"] == "forbidden"
