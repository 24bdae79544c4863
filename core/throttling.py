"""Rate limits per token and per site's registrations: DRF throttles on a cache that all processes share.

A fixed window per key (`<scope>:<who>:<window number>`), counted with the cache's atomic increment:
Redis (`CACHES["throttle"]`, REDIS_URL) in production, so every process draws on one budget; local
memory in the embedded default (one process). Over the limit → 429 with Retry-After (core.errors).

Retry-After spreads a storm instead of sending it back at once: the n-th request over the limit is told
to come back in the window that has room for it (the backlog of rejected requests ahead of it, at the
rate, capped), plus jitter over that whole window, applied after the cap. 1,000 instances re-registering
at once on a site allowed 120/min come back about 120 a minute.

The cache failing (Redis down) admits the request: a throttle must not turn an outage of its counter
into an outage of the API. /health/ready reports Redis.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import re
import time

from django.conf import settings
from django.core.cache import caches

logger = logging.getLogger("promsnmp.throttle")

# DRF's rate syntax: "<count>/<period>", the period s, m, h or d (or a word starting so: "min", "hour").
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour|d|day)s?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BACKLOG_WINDOWS = 10  # Retry-After sends no one further than this many windows ahead (+ jitter)
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def parse_rate(name: str, value: str) -> tuple[int, int]:
    """ "1200/min" → (1200, 60): requests per window and the window in seconds. Raises ValueError naming
    the setting (settings.py turns it into ImproperlyConfigured at start-up)."""
    match = _RATE.match(value or "")
    if not match or int(match.group(1)) < 1:
        raise ValueError(
            f"{name} must be a rate like '1200/min' (a count of at least 1, '/', then s, min, hour or day); "
            f"got {value!r}"
        )
    return int(match.group(1)), _SECONDS[match.group(2)[0].lower()]


def retry_after(*, count: int, limit: int, window: int, now: float, rng: random.Random = random) -> int:
    """Seconds until the request that was `count`-th in this window (count > limit) should come back."""
    excess = count - limit
    backlog = min((excess - 1) // limit, MAX_BACKLOG_WINDOWS)  # whole windows of rejects ahead of it
    until_next = math.ceil((math.floor(now / window) + 1) * window - now)
    return max(1, until_next + backlog * window + rng.randrange(window))


# Not a subclass of DRF's throttles: DRF only calls allow_request() and wait(), and importing
# rest_framework.throttling reads DRF's settings, while settings.py imports parse_rate from here.
class WindowThrottle:
    """Counts requests per key and fixed window; subclasses say which key and which rate setting."""

    rate_setting = ""
    scope = ""

    def key_for(self, request, view) -> str | None:
        raise NotImplementedError

    def allow_request(self, request, view) -> bool:
        self.wait_seconds = None
        who = self.key_for(request, view)
        if who is None:
            return True
        limit, window = parse_rate(self.rate_setting, getattr(settings, self.rate_setting))
        now = time.time()
        key = f"{self.scope}:{who}:{window}:{int(now // window)}"
        try:
            count = _increment(caches["throttle"], key, timeout=2 * window)
        except Exception:
            _warn_cache_unavailable()
            return True
        if count <= limit:
            return True
        self.wait_seconds = retry_after(count=count, limit=limit, window=window, now=now)
        logger.debug("throttled %s (%s, %d in this window)", who, self.rate_setting, count)
        return False

    def wait(self) -> int | None:
        return self.wait_seconds


_warned_at = [float("-inf")]


def _warn_cache_unavailable() -> None:
    """At most one warning a minute, not one per request, while the cache is down."""
    if time.monotonic() - _warned_at[0] >= 60:
        _warned_at[0] = time.monotonic()
        logger.warning("rate-limit cache unavailable; admitting requests unthrottled", exc_info=True)


def _increment(cache, key: str, *, timeout: int) -> int:
    """Atomic on Redis (INCR) and in local memory (under its lock). The window's number is in the key, so
    the key is never incremented once it expires: the counter cannot outlive its window."""
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request
        if cache.add(key, 1, timeout=timeout):
            return 1
        return cache.incr(key)  # another process added it meanwhile


class TokenRateThrottle(WindowThrottle):
    """RATE_LIMIT_PER_TOKEN: per API token (staff sessions: per user). Unauthenticated requests never get
    this far (permissions are checked before throttles: 401)."""

    rate_setting = "RATE_LIMIT_PER_TOKEN"
    scope = "token"

    def key_for(self, request, view) -> str | None:
        principal = getattr(request, "user", None)
        actor = getattr(principal, "actor", None)
        if actor is None:
            return None
        if actor.token_id:
            return f"t{actor.token_id}"
        if actor.user_id:
            return f"u{actor.user_id}"
        return None


class RegisterSiteThrottle(WindowThrottle):
    """RATE_LIMIT_REGISTER_PER_SITE: registrations per siteId of the body, on views that set
    `throttle_scope = "register"`. A token bound to another site is not counted against this one (the view
    answers it 403), so one site's token cannot use up another site's budget."""

    rate_setting = "RATE_LIMIT_REGISTER_PER_SITE"
    scope = "register"

    def key_for(self, request, view) -> str | None:
        if getattr(view, "throttle_scope", None) != "register" or request.method != "POST":
            return None
        data = request.data  # parsed once, kept for the view; a malformed body is its 400
        site_id = data.get("siteId") if isinstance(data, dict) else None
        if not isinstance(site_id, str) or not site_id:
            return None  # the view's validation answers it
        principal = getattr(request, "user", None)
        if hasattr(principal, "may_access_site") and not principal.may_access_site(site_id):
            return None
        return site_id if _SAFE_KEY.match(site_id) else hashlib.sha256(site_id.encode()).hexdigest()[:32]
