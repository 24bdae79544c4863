"""manage.py bootstrap (make run's first start): an admin user and an admin API token when there are
none, each printed once; later runs print and create nothing. Both work, and both are in the audit log."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

from core.models import ApiToken, AuditLog

pytestmark = pytest.mark.django_db


def bootstrap() -> str:
    out = StringIO()
    call_command("bootstrap", stdout=out)
    return out.getvalue()


def test_the_first_run_creates_and_prints_an_admin_and_a_token_and_later_runs_nothing(client):
    printed = bootstrap()
    user_line, token_line = printed.splitlines()
    password = re.fullmatch(
        r"Admin user created: admin / (\S+)  \(shown once; change it in the admin\)", user_line
    )[1]
    token = re.fullmatch(r"Admin API token created \(shown once\): (psm_\S+)", token_line)[1]
    assert client.login(username="admin", password=password)
    assert get_user_model().objects.get(username="admin").is_superuser
    assert client.get("/api/v1/sites", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert list(ApiToken.objects.values_list("name", "scopes")) == [("bootstrap admin", ["admin"])]
    assert set(AuditLog.objects.values_list("actor", "action")) == {
        ("command:manage.py bootstrap", "user_created"),
        ("command:manage.py bootstrap", "token_created"),
    }

    assert bootstrap() == ""
    assert (get_user_model().objects.count(), ApiToken.objects.count(), AuditLog.objects.count()) == (1, 1, 2)
