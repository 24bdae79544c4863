"""API tokens: stored as a hash only, the create_token / revoke_token commands, expiry, last_used_at,
the Bearer header, and staff session auth from the browser (issue 2, §2)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from core import authentication
from core.audit import Actor
from core.models import ApiToken, AuditLog
from core.services import token_create
from sites.models import Site

ACTOR = Actor.command("tests")


def bearer(plaintext: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {plaintext}")
    return client


def create_token_command(*args: str) -> tuple[str, str]:
    """Run `manage.py create_token`; (all stdout, its last line)."""
    out, err = StringIO(), StringIO()
    call_command("create_token", *args, stdout=out, stderr=err)
    lines = out.getvalue().splitlines()
    assert lines, "create_token printed nothing on stdout"
    return out.getvalue(), lines[-1]


def assert_unauthorized(response) -> None:
    assert response.status_code == 401, response.content[:300]
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert set(response.json()) == {"error", "detail", "fields"}
    assert response.json()["error"] == "unauthorized"


# --- storage ---------------------------------------------------------------------------------------


def test_token_create_stores_only_a_hash(db, make_site):
    make_site("site-a")
    token, plaintext = token_create(actor=ACTOR, name="hash check", scopes=["read"], site_id="site-a")
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM api_tokens WHERE id = %s", [token.id])
        columns = [c.name for c in cursor.description]
        row = dict(zip(columns, cursor.fetchone(), strict=True))
    assert len(plaintext) >= 32
    secret_part = plaintext[-24:]
    for column, value in row.items():
        assert plaintext not in str(value), f"plaintext stored in column {column}"
        assert secret_part not in str(value), f"secret part stored in column {column}"
    assert row["token_hash"] == hashlib.sha256(plaintext.encode()).hexdigest()
    # Nor in the audit trail of its creation.
    for entry in AuditLog.objects.filter(entity_id=token.id).values():
        assert plaintext not in repr(entry)


# --- create_token / revoke_token commands ---------------------------------------------------------


def test_create_token_prints_plaintext_last_and_it_works(db, make_site):
    make_site("site-a")
    stdout, plaintext = create_token_command("--name", "ci", "--scope", "read")
    token = ApiToken.objects.get(name="ci")
    assert token.scopes == ["read"]
    assert token.site_id is None and token.expires_at is None
    assert stdout.count(plaintext) == 1
    response = bearer(plaintext).get("/api/v1/sites")
    assert response.status_code == 200, response.content
    # read scope: no writes.
    assert (
        bearer(plaintext).post("/api/v1/sites", {"id": "x", "label": "X"}, format="json").status_code == 403
    )


def test_create_token_with_several_scopes(db):
    _, plaintext = create_token_command("--name", "multi", "--scope", "read", "--scope", "instance")
    assert sorted(ApiToken.objects.get(name="multi").scopes) == ["instance", "read"]
    assert bearer(plaintext).get("/api/v1/sites").status_code == 200


def test_create_token_site_binding(db, make_site):
    make_site("site-a")
    make_site("site-b")
    _, plaintext = create_token_command("--name", "bound", "--scope", "write", "--site", "site-a")
    assert ApiToken.objects.get(name="bound").site_id == "site-a"
    api = bearer(plaintext)
    assert api.get("/api/v1/sites/site-a").status_code == 200
    assert api.get("/api/v1/sites/site-b").status_code == 403
    assert [s["id"] for s in api.get("/api/v1/sites").json()["sites"]] == ["site-a"]


def test_create_token_expires_days(db):
    before = timezone.now()
    create_token_command("--name", "temp", "--scope", "read", "--expires-days", "3")
    after = timezone.now()
    expires_at = ApiToken.objects.get(name="temp").expires_at
    assert before + timedelta(days=3) <= expires_at <= after + timedelta(days=3)


@pytest.mark.parametrize(
    "args",
    [
        ("--name", "x", "--scope", "superuser"),
        ("--name", "x", "--scope", "read", "--site", "no-such-site"),
        ("--name", "x", "--scope", "read", "--expires-days", "0"),
        ("--name", "x", "--scope", "read", "--expires-days", "-1"),
        ("--name", "", "--scope", "read"),
        ("--name", "x"),
    ],
    ids=["unknown scope", "unknown site", "expires 0", "expires negative", "empty name", "no scope"],
)
def test_create_token_refuses_bad_arguments(db, args):
    with pytest.raises((CommandError, SystemExit)):
        call_command("create_token", *args, stdout=StringIO(), stderr=StringIO())
    assert not ApiToken.objects.exists()


def test_revoke_token_command_makes_it_401(db):
    _, plaintext = create_token_command("--name", "to revoke", "--scope", "read")
    api = bearer(plaintext)
    assert api.get("/api/v1/sites").status_code == 200
    token = ApiToken.objects.get(name="to revoke")
    out = StringIO()
    call_command("revoke_token", token.id, stdout=out)
    assert token.id in out.getvalue()
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert_unauthorized(api.get("/api/v1/sites"))
    # Revoking again is harmless; an unknown id is an error.
    call_command("revoke_token", token.id, stdout=StringIO())
    with pytest.raises(CommandError):
        call_command("revoke_token", "tok_doesnotexist", stdout=StringIO())


def test_expired_token_is_401(make_token):
    plaintext = make_token(["admin"], expires_days=1)
    api = bearer(plaintext)
    assert api.get("/api/v1/sites").status_code == 200
    ApiToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_unauthorized(api.get("/api/v1/sites"))


# --- last_used_at ---------------------------------------------------------------------------------


def token_writes(queries) -> int:
    return sum(1 for q in queries if q["sql"].startswith("UPDATE") and '"api_tokens"' in q["sql"])


def test_last_used_at_is_written_at_most_once_a_minute(make_token):
    api = bearer(make_token(["read"]))
    assert ApiToken.objects.get().last_used_at is None

    with CaptureQueriesContext(connection) as first:
        assert api.get("/api/v1/sites").status_code == 200
    assert token_writes(first) == 1
    used = ApiToken.objects.get().last_used_at
    assert used is not None

    with CaptureQueriesContext(connection) as second:
        assert api.get("/api/v1/sites").status_code == 200
    assert token_writes(second) == 0
    assert ApiToken.objects.get().last_used_at == used

    ApiToken.objects.update(last_used_at=F("last_used_at") - timedelta(minutes=2))
    moved = ApiToken.objects.get().last_used_at
    with CaptureQueriesContext(connection) as third:
        assert api.get("/api/v1/sites").status_code == 200
    assert token_writes(third) == 1
    assert ApiToken.objects.get().last_used_at > moved


def test_last_used_at_is_written_after_the_response_in_batches(make_token, monkeypatch):
    """Outside tests a use is noted, and the uses of LAST_USED_FLUSH_SECONDS are written together, after
    a response (or at exit): in one UPDATE per second of use, none in the request path."""
    monkeypatch.setattr(authentication, "LAST_USED_FLUSH_SECONDS", 3600)
    plaintexts = [make_token(["read"]) for _ in range(3)]
    waiting = ApiToken.objects.exclude(token_hash=authentication.hash_token(plaintexts[0]))
    # The first response after a quiet period writes at once (the last write is more than a period old).
    with CaptureQueriesContext(connection) as first:
        assert bearer(plaintexts[0]).get("/api/v1/sites").status_code == 200
    assert token_writes(first) == 1
    # Within the period, uses wait: no request writes.
    with CaptureQueriesContext(connection) as later:
        for plaintext in plaintexts[1:]:
            assert bearer(plaintext).get("/api/v1/sites").status_code == 200
    assert token_writes(later) == 0
    assert waiting.filter(last_used_at__isnull=True).count() == 2

    with CaptureQueriesContext(connection) as flushed:
        assert authentication.token_uses_flush(force=True) == 2
    seconds = set(waiting.values_list("last_used_at", flat=True))
    assert None not in seconds and all(at.microsecond == 0 for at in seconds)  # recorded to the second
    assert token_writes(flushed) == len(seconds)  # one statement (two if the uses straddled a second)


def test_a_late_write_never_moves_last_used_at_backwards(make_token):
    bearer(make_token(["read"])).get("/api/v1/sites")
    token = ApiToken.objects.get()
    later = timezone.now() + timedelta(minutes=5)
    ApiToken.objects.update(last_used_at=later)  # another process wrote a later use meanwhile
    authentication._uses.note(token.pk, later - timedelta(minutes=1))
    authentication.token_uses_flush(force=True)
    assert ApiToken.objects.get().last_used_at == later


# --- the Authorization header ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "Bearer garbage",
        "Bearer psm_" + "A" * 43,
        "Bearer",
        "Bearer ",
        "Bearer a b",
        "bearer garbage",
        "Token garbage",
        "Basic dXNlcjpwYXNz",
        " ",
        "",
    ],
    ids=[
        "garbage",
        "well-formed unknown",
        "no token",
        "empty token",
        "two tokens",
        "lowercase",
        "Token",
        "Basic",
        "only a space",
        "empty header",
    ],
)
def test_bad_authorization_header_is_401_with_www_authenticate(db, make_site, header):
    make_site("site-a")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_unauthorized(client.get("/api/v1/sites"))
    assert_unauthorized(client.post("/api/v1/sites", {"id": "x", "label": "X"}, format="json"))
    assert not Site.objects.filter(pk="x").exists()


def test_plaintext_with_other_case_is_not_the_token(make_token):
    plaintext = make_token(["read"])
    assert bearer(plaintext).get("/api/v1/sites").status_code == 200
    assert_unauthorized(bearer(plaintext.swapcase()).get("/api/v1/sites"))


# --- staff session auth ---------------------------------------------------------------------------


@pytest.fixture
def superuser(db):
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-not-used-123")


def test_superuser_session_may_use_the_api(superuser, make_site):
    make_site("site-a")
    client = APIClient()
    client.force_login(superuser)
    response = client.get("/api/v1/sites")
    assert response.status_code == 200, response.content
    assert [s["id"] for s in response.json()["sites"]] == ["site-a"]
    assert client.get("/api/v1/audit-log").status_code == 200


def test_staff_session_without_superuser_reads_and_writes_but_no_audit_log(db, make_site):
    make_site("site-a")
    staff = get_user_model().objects.create_user("staff", password="pw-not-used-123", is_staff=True)
    client = APIClient()
    client.force_login(staff)
    assert client.get("/api/v1/sites").status_code == 200
    assert client.patch("/api/v1/sites/site-a", {"label": "By staff"}, format="json").status_code == 200
    assert client.get("/api/v1/audit-log").status_code == 403


def test_non_staff_session_may_not_use_the_api(db, make_site):
    make_site("site-a")
    user = get_user_model().objects.create_user("plain", password="pw-not-used-123")
    client = APIClient()
    client.force_login(user)
    response = client.get("/api/v1/sites")
    assert response.status_code in (401, 403), response.content
    assert set(response.json()) == {"error", "detail", "fields"}


def test_session_write_without_csrf_token_is_refused(superuser):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post("/api/v1/sites", {"id": "csrf-site", "label": "X"}, format="json")
    assert response.status_code == 403, response.content
    assert set(response.json()) == {"error", "detail", "fields"}
    assert "csrf" in response.json()["detail"].lower()
    assert not Site.objects.filter(pk="csrf-site").exists()

    # The same request with the CSRF cookie and header goes through: it was the CSRF check.
    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    response = client.post(
        "/api/v1/sites", {"id": "csrf-site", "label": "X"}, format="json", HTTP_X_CSRFTOKEN=secret
    )
    assert response.status_code == 201, response.content
    assert Site.objects.filter(pk="csrf-site").exists()


def test_bearer_token_writes_need_no_csrf_token(make_token):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(['write'])}")
    response = client.post("/api/v1/sites", {"id": "no-csrf", "label": "X"}, format="json")
    assert response.status_code == 201, response.content
