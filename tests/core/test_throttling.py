"""Rate limits in-process, on the local-memory cache of the embedded default (issue 8 §2).

The Redis cache of the production shape, shared by several server processes, is tested end to end in
tests/e2e/test_overload.py. Limits here are per day: a test never straddles the window's end.
"""

from __future__ import annotations

import random

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from rest_framework.test import APIClient

from core.throttling import MAX_BACKLOG_WINDOWS, parse_rate, retry_after
from instances.models import Instance
from tests.core.test_settings import run_check
from tests.openapi import assert_matches_schema

DAY = 86400


@pytest.fixture(autouse=True)
def empty_throttle_cache():
    caches["throttle"].clear()  # counts of other tests' sites (site ids repeat between tests)


def register_body(site: str, hostname: str) -> dict:
    return {"siteId": site, "hostname": hostname, "version": "1.0.0"}


def assert_throttled(response, window: int = DAY) -> int:
    assert response.status_code == 429, (response.status_code, response.content)
    body = response.json()
    assert body["error"] == "throttled" and body["fields"] == {} and body["detail"], body
    wait = int(response["Retry-After"])
    assert 1 <= wait <= (MAX_BACKLOG_WINDOWS + 2) * window
    return wait


# --- the rate syntax and Retry-After ------------------------------------------------------------------


def test_rates_in_drf_syntax():
    assert parse_rate("X", "1200/min") == (1200, 60)
    assert parse_rate("X", "120/m") == (120, 60)
    assert parse_rate("X", "10/second") == (10, 1)
    assert parse_rate("X", "5000/hour") == (5000, 3600)
    assert parse_rate("X", " 3 / days ") == (3, 86400)
    for bad in ("", "1200", "1200/fortnight", "0/min", "-1/min", "ten/min", "1200/min/2", "1.5/s"):
        with pytest.raises(ValueError, match="RATE_LIMIT_PER_TOKEN must be a rate like"):
            parse_rate("RATE_LIMIT_PER_TOKEN", bad)


def test_a_bad_rate_stops_start_up_naming_the_setting(tmp_path):
    for name in ("RATE_LIMIT_PER_TOKEN", "RATE_LIMIT_REGISTER_PER_SITE"):
        result = run_check({"VAR_DIR": str(tmp_path), name: "100/fortnight"})
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and f"{name} must be a rate like" in result.stderr
    assert run_check({"VAR_DIR": str(tmp_path), "RATE_LIMIT_PER_TOKEN": "50/s"}).returncode == 0


def test_retry_after_spreads_a_storm_over_the_windows_that_have_room():
    """1,000 registrations at once, 120/min: the rejected 880 are sent to the next windows, about 120 to
    each, spread over each window by jitter; nobody is sent further than the cap (+ one window)."""
    rng = random.Random(8)
    now = 1_000_000.25  # 20.25 s into a minute: the next window starts 40 s later
    comebacks = [retry_after(count=n, limit=120, window=60, now=now, rng=rng) for n in range(121, 1001)]
    windows = [int((now + wait) // 60) - int(now // 60) for wait in comebacks]
    per_window = {w: windows.count(w) for w in set(windows)}
    assert min(windows) == 1 and max(windows) == 8  # 880 = 7 full windows of 120 + 40
    assert all(count <= 120 for count in per_window.values()), per_window
    assert per_window[1] == 120 and per_window[8] == 40
    # Jitter spreads each window's comers over the whole window, not at its first second.
    first_window = sorted(now + wait for wait, w in zip(comebacks, windows, strict=True) if w == 1)
    assert first_window[-1] - first_window[0] > 45
    # The cap: a flood of 100,000 is told at most MAX_BACKLOG_WINDOWS windows beyond the next one.
    assert (
        retry_after(count=100_000, limit=120, window=60, now=now, rng=rng)
        < 40 + (MAX_BACKLOG_WINDOWS + 1) * 60
    )
    assert retry_after(count=2, limit=1, window=1, now=now, rng=rng) == 1


# --- per token ----------------------------------------------------------------------------------------


def test_each_token_has_its_own_budget(settings, make_site, make_token):
    settings.RATE_LIMIT_PER_TOKEN = "3/day"
    site = make_site("chicago-pop-01")
    one, two = APIClient(), APIClient()
    one.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(['read'])}")
    two.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(['read'])}")
    for _ in range(3):
        assert one.get("/api/v1/sites").status_code == 200
    assert_throttled(one.get("/api/v1/sites"))
    throttled = one.get(f"/api/v1/sites/{site}")
    assert_throttled(throttled)  # the budget is the token's, on every endpoint
    assert_matches_schema(throttled, "GET", "/api/v1/sites/{siteId}")  # 429 is documented
    for _ in range(3):
        assert two.get("/api/v1/sites").status_code == 200
    assert_throttled(two.get("/api/v1/sites"))
    # Health probes and metrics are not the API: never throttled.
    assert one.get("/health/live").status_code == 200
    assert one.get("/metrics").status_code == 200


def test_a_throttled_write_changes_nothing(settings, make_site, client_for):
    settings.RATE_LIMIT_PER_TOKEN = "1/day"
    site = make_site("chicago-pop-01")
    api = client_for("admin")
    assert api.patch(f"/api/v1/sites/{site}", {"label": "First"}, format="json").status_code == 200
    assert_throttled(api.patch(f"/api/v1/sites/{site}", {"label": "Second"}, format="json"))
    assert client_for("read").get(f"/api/v1/sites/{site}").json()["label"] == "First"


def test_staff_sessions_are_limited_per_user(settings, db):
    settings.RATE_LIMIT_PER_TOKEN = "2/day"
    users = get_user_model()
    alice = users.objects.create_user("alice", password="x" * 12, is_staff=True, is_superuser=True)
    bob = users.objects.create_user("bob", password="x" * 12, is_staff=True, is_superuser=True)
    browser_a, browser_b, alice_again = APIClient(), APIClient(), APIClient()
    browser_a.force_login(alice)
    alice_again.force_login(alice)  # another session of the same user: the same budget
    browser_b.force_login(bob)
    assert browser_a.get("/api/v1/sites").status_code == 200
    assert alice_again.get("/api/v1/sites").status_code == 200
    assert_throttled(browser_a.get("/api/v1/sites"))
    assert browser_b.get("/api/v1/sites").status_code == 200


def test_unauthenticated_requests_get_401_not_a_throttle(settings, db):
    settings.RATE_LIMIT_PER_TOKEN = "1/day"
    anonymous = APIClient()
    for _ in range(3):
        assert anonymous.get("/api/v1/sites").status_code == 401


# --- registrations per site -----------------------------------------------------------------------------


def test_registrations_are_limited_per_site_whatever_the_token(settings, make_site, client_for):
    settings.RATE_LIMIT_REGISTER_PER_SITE = "2/day"
    chicago, nyc = make_site("chicago-pop-01"), make_site("nyc-pop-01")
    first, second = client_for("instance"), client_for("instance")  # two tokens, one site budget
    assert (
        first.post("/api/v1/instances/register", register_body(chicago, "a"), format="json").status_code
        == 200
    )
    registered = second.post("/api/v1/instances/register", register_body(chicago, "b"), format="json")
    assert registered.status_code == 200
    assert_throttled(first.post("/api/v1/instances/register", register_body(chicago, "c"), format="json"))
    assert_throttled(second.post("/api/v1/instances/register", register_body(chicago, "d"), format="json"))
    assert not Instance.objects.filter(site_id=chicago, hostname__in=["c", "d"]).exists()  # changed nothing
    # Another site has its own budget; heartbeats are not registrations.
    assert first.post("/api/v1/instances/register", register_body(nyc, "a"), format="json").status_code == 200
    heartbeat = second.post(
        f"/api/v1/instances/{registered.json()['instanceId']}/heartbeat", {"status": "healthy"}, format="json"
    )
    assert heartbeat.status_code == 200, heartbeat.content


def test_another_sites_token_cannot_use_up_a_sites_registrations(settings, make_site, client_for):
    settings.RATE_LIMIT_REGISTER_PER_SITE = "1/day"
    chicago, nyc = make_site("chicago-pop-01"), make_site("nyc-pop-01")
    nyc_token = client_for("instance", site=nyc)
    for hostname in ("x", "y", "z"):
        refused = nyc_token.post(
            "/api/v1/instances/register", register_body(chicago, hostname), format="json"
        )
        assert refused.status_code == 403, refused.content
    chicago_token = client_for("instance", site=chicago)
    assert (
        chicago_token.post(
            "/api/v1/instances/register", register_body(chicago, "a"), format="json"
        ).status_code
        == 200
    )


def test_malformed_register_bodies_get_their_400(settings, make_site, client_for):
    settings.RATE_LIMIT_REGISTER_PER_SITE = "1/day"
    make_site("chicago-pop-01")
    api = client_for("instance")
    for body in ({"hostname": "a"}, {"siteId": 7, "hostname": "a"}, ["chicago-pop-01"]):
        response = api.post("/api/v1/instances/register", body, format="json")
        assert response.status_code == 400, (body, response.content)
    response = api.post("/api/v1/instances/register", data="{nope", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"] == "parse_error"


def test_the_defaults_never_touch_a_fifty_instance_site(make_site, client_for):
    """Issue 8: 50 instances sharing one site token, registering and then a minute of heartbeats (every
    30 s: two each), all on the default limits."""
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    ids = []
    for n in range(50):
        response = api.post(
            "/api/v1/instances/register", register_body(site, f"promsnmp-{n:02d}"), format="json"
        )
        assert response.status_code == 200, response.content
        ids.append(response.json()["instanceId"])
    for _ in range(2):
        for instance_id in ids:
            response = api.post(
                f"/api/v1/instances/{instance_id}/heartbeat", {"status": "healthy"}, format="json"
            )
            assert response.status_code == 200, response.content


def test_an_unreachable_cache_admits_requests(settings, make_site, client_for):
    """Redis down: the throttle logs and admits (the API must not fail with its counter)."""
    settings.RATE_LIMIT_PER_TOKEN = "1/day"
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # discard port: nothing listens
            "OPTIONS": {"socket_timeout": 1, "socket_connect_timeout": 1},
        },
    }
    api = client_for("read")
    for _ in range(3):
        assert api.get("/api/v1/sites").status_code == 200
