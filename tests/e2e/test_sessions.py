"""Sessions end with their credentials across processes (issue 8, sections 1 and 3), with real servers,
real sockets and management commands in processes of their own:
- the embedded default (one daphne, in-memory channel layer): a token revoked by `manage.py
  revoke_token` closes its socket, and a `force_election` reaches the sockets, through the outbox that
  the server relays; a deregistration and a site deletion through REST, and a token's expiry, close
  the sockets at once;
- the production shape (gunicorn for REST, two daphne processes, Redis): a revocation by a command, a
  deregistration and a site deletion through gunicorn, and a token's expiry close the sockets held by
  either daphne.
"""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import requests
from django.utils import timezone

from core.models import ApiToken
from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR, TEST_REDIS_URL
from tests.e2e.servers import EventSocket, delete_redis_keys, gunicorn, manage, serve, websocket_url
from tests.e2e.test_websocket import assert_event, bearer, ok, register

pytestmark = pytest.mark.django_db(transaction=True)

CLOSE_WITHIN = 2  # seconds: the bound for a revoked token's sockets
DELIVERY = 5  # seconds: a bound for "it arrives"


def enrol(base_url: str, site_token: str, site: str, hostname: str) -> tuple[str, str, EventSocket]:
    """Register with the site's token; open the socket with the instance's own token."""
    answer = register(base_url, site_token, site, hostname)
    return answer["instanceId"], answer["instanceToken"], None


def socket_on(ws_base: str, instance_id: str, token: str) -> EventSocket:
    socket = EventSocket(websocket_url(ws_base, instance_id, token))
    socket.ping()
    return socket


def assert_ended(socket: EventSocket, code: int, error: str, within: float) -> None:
    got, last = socket.closed(within)
    assert got == code, (got, last)
    assert last is not None and last["type"] == "error" and last["payload"]["error"] == error, last


def instance_token_id(instance_id: str) -> str:
    return ApiToken.objects.get(instance_id=instance_id).pk


def test_embedded_commands_and_deregistration_end_sessions():
    site = "sessions-embedded"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": site})
    _, site_token = token_create(actor=TEST_ACTOR, name="enrolment", scopes=["instance"], site_id=site)

    with serve() as (base_url, _process):
        one, one_token, _ = enrol(base_url, site_token, site, "promsnmp-1")
        two, two_token, _ = enrol(base_url, site_token, site, "promsnmp-2")
        three, three_token, _ = enrol(base_url, site_token, site, "promsnmp-3")
        on_one, on_two, on_three = (
            socket_on(base_url, one, one_token),
            socket_on(base_url, two, two_token),
            socket_on(base_url, three, three_token),
        )

        # A command in another process: its events reach the server's sockets through the outbox.
        manage("force_election", site, "--instance", two)
        assigned, _ = on_two.wait_for("leader_assigned", DELIVERY)
        assert assert_event(assigned, "leader_assigned", site)["reason"] == "manual_assignment"
        revoked, _ = on_one.wait_for("leader_revoked", DELIVERY)
        assert revoked["payload"]["newLeader"] == two

        manage("revoke_token", instance_token_id(one))
        started = time.monotonic()
        assert_ended(on_one, 4401, "token_revoked", CLOSE_WITHIN + 1)
        assert time.monotonic() - started < CLOSE_WITHIN

        response = requests.delete(
            f"{base_url}/api/v1/instances/{three}", headers=bearer(three_token), timeout=10
        )
        assert ok(response)["status"] == "deregistered"
        assert_ended(on_three, 4403, "deregistered", CLOSE_WITHIN)
        # A revoked token cannot come back, and the sibling's session is untouched.
        assert (
            requests.get(
                f"{base_url}/api/v1/instances/{one}", headers=bearer(one_token), timeout=10
            ).status_code
            == 401
        )
        on_two.ping()

        # A token that expires in a moment → its socket closes when it expires.
        four, four_token, _ = enrol(base_url, site_token, site, "promsnmp-4")
        expires = timezone.now() + timedelta(seconds=3)
        ApiToken.objects.filter(instance_id=four).update(expires_at=expires)
        assert_ended(socket_on(base_url, four, four_token), 4401, "token_expired", 3 + CLOSE_WITHIN)
        assert timezone.now() >= expires

        # The site deleted by an operator → its sockets close.
        _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
        response = requests.delete(f"{base_url}/api/v1/sites/{site}", headers=bearer(admin_token), timeout=10)
        assert response.status_code == 204, response.text
        assert_ended(on_two, 4403, "site_deleted", CLOSE_WITHIN)


@pytest.fixture
def redis_prefix():
    prefix = f"psm-sessions-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_redis_keys(TEST_REDIS_URL, f"{prefix}*")


def test_production_shape_ends_sessions_across_processes(redis_prefix):
    site = "sessions-prod"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": site})
    _, site_token = token_create(actor=TEST_ACTOR, name="enrolment", scopes=["instance"], site_id=site)
    env = {"REDIS_URL": TEST_REDIS_URL, "CHANNEL_LAYER_PREFIX": redis_prefix}

    with (
        gunicorn(env=env) as (rest, _g),
        serve(env=env, args=["--no-beat"]) as (ws_a, _a),
        serve(env=env, args=["--no-beat"]) as (ws_b, _b),
    ):
        leader, leader_token, _ = enrol(rest, site_token, site, "promsnmp-1")
        follower, follower_token, _ = enrol(rest, site_token, site, "promsnmp-2")
        on_a = socket_on(ws_a, leader, leader_token)
        on_b = socket_on(ws_b, follower, follower_token)

        # Revoked by a command (its own process) → the socket on daphne A closes within the bound.
        manage("revoke_token", instance_token_id(leader), env=env)
        started = time.monotonic()
        assert_ended(on_a, 4401, "token_revoked", CLOSE_WITHIN + 1)
        assert time.monotonic() - started < CLOSE_WITHIN

        # Deregistered through gunicorn → the socket on daphne B closes at once.
        other = EventSocket(websocket_url(ws_b, follower, follower_token))
        response = requests.delete(
            f"{rest}/api/v1/instances/{follower}", headers=bearer(follower_token), timeout=10
        )
        assert ok(response)["wasLeader"] is False
        for socket in (on_b, other):
            assert_ended(socket, 4403, "deregistered", CLOSE_WITHIN)

        # A token that expires in a moment → its socket on daphne B closes when it expires.
        third, third_token, _ = enrol(rest, site_token, site, "promsnmp-3")
        expires = timezone.now() + timedelta(seconds=3)
        ApiToken.objects.filter(instance_id=third).update(expires_at=expires)
        expiring = socket_on(ws_b, third, third_token)
        assert_ended(expiring, 4401, "token_expired", 3 + CLOSE_WITHIN)
        assert timezone.now() >= expires

        # The site deleted through gunicorn → every socket of the site, on both daphnes, closes.
        fourth, fourth_token, _ = enrol(rest, site_token, site, "promsnmp-4")
        fifth, fifth_token, _ = enrol(rest, site_token, site, "promsnmp-5")
        on_a, on_b = socket_on(ws_a, fourth, fourth_token), socket_on(ws_b, fifth, fifth_token)
        _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
        response = requests.delete(f"{rest}/api/v1/sites/{site}", headers=bearer(admin_token), timeout=10)
        assert response.status_code == 204, response.text
        for socket in (on_a, on_b):
            assert_ended(socket, 4403, "site_deleted", CLOSE_WITHIN)
