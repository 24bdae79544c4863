"""Shared fixtures. The suite runs on PostgreSQL (and Redis where a test needs it): `make test`."""

from __future__ import annotations

import os
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db.backends.postgresql.operations import DatabaseOperations
from django.test import override_settings
from rest_framework.test import APIClient

from core.audit import Actor
from core.services import token_create
from instances.services import instance_register
from sites.services import site_create
from tests.check_services import problems
from tests.e2e.servers import database_url, delete_redis_keys

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
SQLITE_RUN = "PROMSNMP_TESTS_ON_SQLITE"  # set by the test that runs the concurrency tests on SQLite


def pytest_sessionstart(session):
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine.endswith("sqlite3") and os.environ.get(SQLITE_RUN):
        return  # a module run on SQLite on purpose (tests/e2e/test_sqlite.py)
    if not engine.endswith("postgresql"):
        pytest.exit(
            "The suite runs on PostgreSQL: run it with `make test` (or set DATABASE_URL to a "
            "postgres:// URL).",
            returncode=2,
        )
    found = problems(database_url("postgres"), TEST_REDIS_URL)
    if found:
        pytest.exit("\n".join(found), returncode=2)


TEST_ACTOR = Actor(kind="command", name="tests")


_truncate = DatabaseOperations.sql_flush


def _delete_every_row(self, style, tables, *, reset_sequences=False, allow_cascade=False):
    """What a transactional test's teardown (Django's flush) runs: DELETE FROM each table, in one
    transaction with the foreign keys checked at its end (Django makes them DEFERRABLE INITIALLY
    DEFERRED), instead of one TRUNCATE of them all. The tables are as empty afterwards, but a TRUNCATE
    makes new files for every table and index: 0.3 to 1 s each time on a loaded machine, against
    milliseconds for the few rows a test leaves; the suite has a few hundred transactional tests.
    Anything Django asks for beyond emptying (sequences restarted, CASCADE) gets the TRUNCATE."""
    if reset_sequences or allow_cascade or not tables:
        return _truncate(self, style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    return ["SET CONSTRAINTS ALL DEFERRED;", *(f"DELETE FROM {self.quote_name(table)};" for table in tables)]


@pytest.fixture(scope="session", autouse=True)
def flush_by_delete():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DatabaseOperations, "sql_flush", _delete_every_row)
        yield


class FewIterationsPBKDF2PasswordHasher(PBKDF2PasswordHasher):
    """Django's default hasher (same algorithm name, same encoding) with few iterations: the users tests
    create get a password in a millisecond instead of about 0.4 s. A server process (production
    settings) still checks such a password, reading the iterations from the hash, and stores it again
    with its own at the first login."""

    iterations = 1000


@pytest.fixture(scope="session", autouse=True)
def cheap_passwords():
    with override_settings(PASSWORD_HASHERS=["tests.conftest.FewIterationsPBKDF2PasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def events_in_process(settings):
    """The test process holds its sockets in-process (WebsocketCommunicator, `listen`): it delivers its
    own events to its in-memory layer, and polls no outbox (server processes of the e2e tests do)."""
    settings.EVENT_RELAY_WITHOUT_SERVER = True
    settings.EVENT_RELAY_INTERVAL_SECONDS = 0


@pytest.fixture(autouse=True)
def token_uses_written_at_once(monkeypatch):
    """A token's last use is written at the end of the request that noted it (in production: batched, at
    most every LAST_USED_FLUSH_SECONDS), so each test counts the same queries whatever ran before it."""
    from core import authentication

    authentication._uses.clear()
    monkeypatch.setattr(authentication, "LAST_USED_FLUSH_SECONDS", 0)


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """Empty rate-limit counters for each test (tests register at the same site ids within a minute)."""
    from django.core.cache import caches

    caches["throttle"].clear()


# The fixtures below hand out plain functions, so a module-scoped fixture (which cannot use a
# function-scoped one) calls the same code: tests/core/test_read_query_counts.py.


def new_token(scopes: list[str], site: str | None = None, expires_days: int | None = None) -> str:
    """new_token(["read"], site="chicago") → plaintext bearer token."""
    _, plaintext = token_create(
        actor=TEST_ACTOR,
        name=f"test {'+'.join(scopes)}",
        scopes=scopes,
        site_id=site,
        expires_days=expires_days,
    )
    return plaintext


def api_client(*scopes: str, site: str | None = None) -> APIClient:
    """api_client("admin") or api_client("instance", site="x") → an authenticated APIClient."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {new_token(list(scopes), site=site)}")
    return client


def create_site(site_id: str = "chicago-pop-01", **values) -> str:
    site_create(actor=TEST_ACTOR, site_id=site_id, values={"label": site_id.title(), **values})
    return site_id


@pytest.fixture
def make_token(db):
    """make_token(["read"], site="chicago") → plaintext bearer token."""
    return new_token


@pytest.fixture
def client_for(make_token):
    """client_for("admin") or client_for("instance", site="x") → an authenticated APIClient."""
    return api_client


@pytest.fixture
def admin_api(client_for) -> APIClient:
    return client_for("admin")


@pytest.fixture
def make_site(db):
    return create_site


@pytest.fixture
def register(db):
    """register("site", "host-a") → instance id (through the service, as an instance would)."""

    def make(site_id: str, hostname: str, pod_name: str = "") -> str:
        instance, _ = instance_register(
            actor=TEST_ACTOR, site_id=site_id, hostname=hostname, pod_name=pod_name
        )
        return instance.id

    return make


# --- the channel layer (the in-memory one unless a test configures Redis) ------------------------------


@pytest.fixture
def layer():
    """The channel layer, emptied before and after the test."""
    layer = get_channel_layer()
    async_to_sync(layer.flush)()
    yield layer
    async_to_sync(layer.flush)()


@pytest.fixture
def redis_layer(settings):
    """The Redis channel layer (TEST_REDIS_URL) under a prefix of this test's own; its keys go after."""
    prefix = f"psm-test-{uuid.uuid4().hex[:12]}"
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [TEST_REDIS_URL], "prefix": prefix},
        }
    }
    layer = get_channel_layer()
    assert type(layer).__name__ == "RedisChannelLayer"
    yield layer
    delete_redis_keys(TEST_REDIS_URL, f"{prefix}*")


@pytest.fixture
def listen(layer):
    """listen("site.<id>" or "instance.<id>") → a new channel subscribed to that group."""

    def subscribe(group: str) -> str:
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.group_add)(group, channel)
        return channel

    return subscribe
