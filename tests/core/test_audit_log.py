"""Every write leaves an AuditLog row (who, which token, from where, which request); the audit-log API."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from core.audit import Actor
from core.models import ApiToken, AuditLog
from core.services import token_create
from instances.election import leader_health_check
from instances.models import Instance
from tests.openapi import assert_matches_schema

ACTOR = Actor.command("tests")


@pytest.fixture
def token_client(db):
    """token_client(["admin"], site=None) → (APIClient, ApiToken)."""

    def make(scopes: list[str], site: str | None = None, name: str = "auditor") -> tuple[APIClient, ApiToken]:
        token, plaintext = token_create(actor=ACTOR, name=name, scopes=scopes, site_id=site)
        client = APIClient(REMOTE_ADDR="192.0.2.10")
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
        return client, token

    return make


def rows_after(mark: int, **filters) -> list[AuditLog]:
    return list(AuditLog.objects.filter(id__gt=mark, **filters).order_by("id"))


def mark() -> int:
    last = AuditLog.objects.order_by("-id").first()
    return last.id if last else 0


def assert_trail(row: AuditLog, token: ApiToken, response) -> None:
    assert row.actor == f"token:{token.name}"
    assert row.token_id == token.id
    assert row.ip_address == "192.0.2.10"
    assert row.request_id and row.request_id == response["X-Request-ID"]


# --- writes through the API -----------------------------------------------------------------------


def test_site_create_update_delete_leave_rows(token_client):
    api, token = token_client(["write"])
    start = mark()

    response = api.post(
        "/api/v1/sites", {"id": "site-a", "label": "A"}, format="json", HTTP_X_REQUEST_ID="req-1"
    )
    assert response.status_code == 201
    [created] = rows_after(start)
    assert (created.action, created.entity_type, created.entity_id, created.site_id) == (
        "site_created",
        "site",
        "site-a",
        "site-a",
    )
    assert_trail(created, token, response)
    assert created.request_id == "req-1"

    start = mark()
    response = api.put("/api/v1/sites/site-a", {"label": "A2", "config": {"minReplicas": 2}}, format="json")
    assert response.status_code == 200
    [updated] = rows_after(start)
    assert (updated.action, updated.entity_id) == ("site_updated", "site-a")
    assert_trail(updated, token, response)
    assert updated.details["changes"]["label"] == {"from": "A", "to": "A2"}
    assert updated.details["changes"]["minReplicas"] == {"from": 1, "to": 2}

    start = mark()
    response = api.patch("/api/v1/sites/site-a", {"description": "patched"}, format="json")
    assert response.status_code == 200
    [patched] = rows_after(start)
    assert patched.action == "site_updated"
    assert_trail(patched, token, response)

    start = mark()
    response = api.delete("/api/v1/sites/site-a")
    assert response.status_code == 204
    [deleted] = rows_after(start)
    assert (deleted.action, deleted.entity_type, deleted.entity_id) == ("site_deleted", "site", "site-a")
    assert_trail(deleted, token, response)


def test_no_op_put_and_patch_leave_no_row(token_client, make_site):
    make_site("site-a")
    api, _ = token_client(["write"])
    current = {"label": "Site-A"}
    assert api.put("/api/v1/sites/site-a", current, format="json").status_code == 200
    start = mark()
    assert api.put("/api/v1/sites/site-a", current, format="json").status_code == 200
    assert api.patch("/api/v1/sites/site-a", {"label": "Site-A"}, format="json").status_code == 200
    assert api.patch("/api/v1/sites/site-a", {}, format="json").status_code == 200
    assert rows_after(start) == []


def test_refused_writes_leave_no_row(token_client, make_site):
    make_site("site-a")
    reader, _ = token_client(["read"], name="reader")
    writer, _ = token_client(["write"], name="writer")
    start = mark()
    assert reader.patch("/api/v1/sites/site-a", {"label": "X"}, format="json").status_code == 403
    assert writer.patch("/api/v1/sites/site-a", {"label": 5}, format="json").status_code == 400
    assert writer.post("/api/v1/sites", {"id": "site-a", "label": "dup"}, format="json").status_code == 409
    assert rows_after(start) == []


def test_register_and_deregister_leave_rows_with_leadership_changes(token_client, make_site):
    make_site("site-a")
    api, token = token_client(["instance"], site="site-a", name="agent")
    start = mark()

    response = api.post("/api/v1/instances/register", {"siteId": "site-a", "hostname": "a"}, format="json")
    assert response.status_code == 200
    first = response.json()["instanceId"]
    rows = rows_after(start)
    # Register also issues the instance its own token.
    assert [r.action for r in rows] == ["instance_registered", "leader_assigned", "token_created"]
    for row in rows:
        assert_trail(row, token, response)
        assert row.site_id == "site-a" and row.instance_id == first
    assert rows[1].details["reason"] == "no_previous_leader"
    assert (
        rows[2].details["scopes"] == ["instance"]
        and rows[2].entity_id == ApiToken.objects.get(instance_id=first).pk
    )

    response = api.post("/api/v1/instances/register", {"siteId": "site-a", "hostname": "b"}, format="json")
    second = response.json()["instanceId"]

    start = mark()
    response = api.post("/api/v1/instances/register", {"siteId": "site-a", "hostname": "a"}, format="json")
    assert [r.action for r in rows_after(start)] == ["instance_reregistered", "token_created"]

    start = mark()
    response = api.delete(f"/api/v1/instances/{first}")
    assert response.status_code == 200
    rows = rows_after(start)
    assert sorted(r.action for r in rows) == ["instance_deregistered", "leader_assigned"]
    leader_row = next(r for r in rows if r.action == "leader_assigned")
    assert leader_row.details["reason"] == "previous_leader_deregistered"
    assert leader_row.details["leader"] == second and leader_row.details["previousLeader"] == first
    deregistered = next(r for r in rows if r.action == "instance_deregistered")
    assert deregistered.entity_id == first
    for row in rows:
        assert_trail(row, token, response)

    start = mark()
    response = api.delete(f"/api/v1/instances/{second}")
    rows = rows_after(start)
    assert sorted(r.action for r in rows) == ["instance_deregistered", "leader_revoked"]


def test_token_commands_leave_rows(db, make_site):
    make_site("site-a")
    start = mark()
    call_command(
        "create_token",
        "--name",
        "cmd",
        "--scope",
        "read",
        "--site",
        "site-a",
        stdout=StringIO(),
        stderr=StringIO(),
    )
    token = ApiToken.objects.get(name="cmd")
    [created] = rows_after(start)
    assert (created.action, created.entity_type, created.entity_id) == (
        "token_created",
        "api_token",
        token.id,
    )
    assert created.actor == "command:manage.py create_token"
    assert created.site_id == "site-a"
    assert created.details["scopes"] == ["read"]

    start = mark()
    call_command("revoke_token", token.id, stdout=StringIO())
    [revoked] = rows_after(start)
    assert (revoked.action, revoked.entity_id) == ("token_revoked", token.id)
    assert revoked.actor == "command:manage.py revoke_token"

    start = mark()
    call_command("revoke_token", token.id, stdout=StringIO())
    assert rows_after(start) == []


def test_leadership_changes_by_health_check_and_force_election_leave_rows(make_site, register, settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = 10
    settings.HEARTBEAT_TIMEOUT_SECONDS = 30
    make_site("site-a")
    leader = register("site-a", "a")
    follower = register("site-a", "b")

    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now() - timedelta(seconds=60))
    start = mark()
    leader_health_check()
    [row] = rows_after(start)
    assert row.action == "leader_assigned"
    assert row.details["reason"] == "previous_leader_unhealthy"
    assert row.details["leader"] == follower and row.details["previousLeader"] == leader
    assert row.actor.startswith("system:")

    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now())
    start = mark()
    call_command("force_election", "site-a", "--instance", leader, stdout=StringIO())
    [row] = rows_after(start)
    assert row.action == "leader_assigned"
    assert row.details["reason"] == "manual_assignment"
    assert row.details["leader"] == leader
    assert row.actor == "command:manage.py force_election"


# --- GET /api/v1/audit-log ------------------------------------------------------------------------


@pytest.fixture
def history(token_client):
    """Two sites created and changed through the API: a known set of rows."""
    api, token = token_client(["admin"])
    for site_id in ("site-a", "site-b"):
        assert api.post("/api/v1/sites", {"id": site_id, "label": site_id}, format="json").status_code == 201
    assert api.patch("/api/v1/sites/site-a", {"label": "A again"}, format="json").status_code == 200
    assert api.patch("/api/v1/sites/site-b", {"label": "B again"}, format="json").status_code == 200
    assert api.patch("/api/v1/sites/site-a", {"label": "A third"}, format="json").status_code == 200
    return api, token


def get_log(api, **query) -> dict:
    response = api.get("/api/v1/audit-log", query)
    assert response.status_code == 200, response.content
    assert_matches_schema(response, "GET", "/api/v1/audit-log")
    return response.json()


def test_audit_log_lists_newest_first_with_the_trail(history):
    api, token = history
    body = get_log(api)
    assert body["total"] == AuditLog.objects.count() == 6  # token + 2 creates + 3 updates
    ids = [e["id"] for e in body["entries"]]
    assert ids == sorted(ids, reverse=True)
    created = [e["createdAt"] for e in body["entries"]]
    assert created == sorted(created, reverse=True)
    newest = body["entries"][0]
    assert (newest["action"], newest["siteId"], newest["entityType"]) == ("site_updated", "site-a", "site")
    assert newest["tokenId"] == token.id
    assert newest["ipAddress"] == "192.0.2.10"
    assert newest["requestId"]
    assert newest["details"]["changes"]["label"] == {"from": "A again", "to": "A third"}


def test_audit_log_filters(history):
    api, _ = history
    site_a = get_log(api, siteId="site-a")
    assert site_a["total"] == 3
    assert {e["siteId"] for e in site_a["entries"]} == {"site-a"}

    tokens = get_log(api, entityType="api_token")
    assert tokens["total"] == 1 and tokens["entries"][0]["action"] == "token_created"

    both = get_log(api, siteId="site-b", entityType="site")
    assert [e["action"] for e in both["entries"]] == ["site_updated", "site_created"]

    assert get_log(api, siteId="no-such-site") == {"entries": [], "total": 0, "limit": 100, "offset": 0}


def test_audit_log_since(history):
    api, _ = history
    old = list(AuditLog.objects.order_by("id").values_list("id", flat=True)[:4])
    AuditLog.objects.filter(id__in=old).update(created_at=timezone.now() - timedelta(days=2))
    since = (timezone.now() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = get_log(api, since=since)
    assert body["total"] == 2
    assert not set(old) & {e["id"] for e in body["entries"]}
    assert get_log(api, since="2000-01-01T00:00:00Z")["total"] == 6
    assert get_log(api, since="2000-01-01T00:00:00+02:00")["total"] == 6


def test_audit_log_pagination(history):
    api, _ = history
    everything = [e["id"] for e in get_log(api)["entries"]]
    pages = []
    for offset in (0, 2, 4):
        page = get_log(api, limit=2, offset=offset)
        assert page["total"] == 6 and page["limit"] == 2 and page["offset"] == offset
        assert len(page["entries"]) == 2
        pages += [e["id"] for e in page["entries"]]
    assert pages == everything
    assert get_log(api, offset=6)["entries"] == []


@pytest.mark.parametrize("scopes", [["read"], ["write"], ["instance"], ["read", "write", "instance"]])
def test_audit_log_is_for_admin_tokens_only(history, token_client, scopes):
    api, _ = token_client(scopes, name="not admin")
    response = api.get("/api/v1/audit-log")
    assert response.status_code == 403
    assert set(response.json()) == {"error", "detail", "fields"}


def test_audit_log_for_a_site_bound_admin_token(history, token_client):
    api, _ = token_client(["admin"], site="site-a", name="bound admin")
    own = AuditLog.objects.filter(site_id="site-a").count()
    assert own == 4  # 3 site rows + this token's creation
    body = get_log(api)
    assert body["total"] == own
    assert {e["siteId"] for e in body["entries"]} == {"site-a"}
    assert get_log(api, siteId="site-a")["total"] == own
    # Another site's log is another site's data: 403, as for every other endpoint.
    response = api.get("/api/v1/audit-log", {"siteId": "site-b"})
    assert response.status_code == 403, response.content
