"""Retry timing, one helper for every retry loop of the agent: the first registration, heartbeats that
fail, the event socket's reconnects and the delivery of queued discovery results.

The spec's schedule (1 s, 2 s, 4 s, … up to 5 min) with FULL jitter applied after the cap:
`sleep = uniform(0, min(cap, base · 2**n))`. Jitter after the cap matters: capped first and then left
alone, a fleet that lost the manager at once retries in lockstep every `cap` seconds. A server's
`Retry-After` (429, 503) is a floor: the agent waits at least that long, spread over up to 20 % more so
that the fleet it told the same number does not come back in one burst.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

DEFAULT_BASE = 1.0
DEFAULT_CAP = 300.0
MAX_RETRY_AFTER = 3600.0  # a Retry-After beyond an hour is a server bug, not a reason to stop for a day
_MAX_EXPONENT = 64  # 2**64 is past any cap; keeps base * 2**n a finite float


def backoff(attempt: int, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, rng=random) -> float:
    """Seconds to wait before retry number `attempt` (0-based): full jitter under the capped ceiling."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt, _MAX_EXPONENT)))


class Backoff:
    """The retry state of one loop: `delay()` after a failure, `reset()` after a success."""

    def __init__(
        self, *, base: float = DEFAULT_BASE, cap: float = DEFAULT_CAP, rng: random.Random | None = None
    ):
        if base <= 0 or cap < base:
            raise ValueError("backoff needs 0 < base <= cap")
        self.base = base
        self.cap = cap
        self.rng = rng or random.Random()  # noqa: S311 -- jitter, not a secret
        self.attempt = 0

    def ceiling(self) -> float:
        """The most the next delay may be (before any Retry-After)."""
        return min(self.cap, self.base * 2 ** min(self.attempt, _MAX_EXPONENT))

    def delay(self, retry_after: float | None = None) -> float:
        """The wait before the next try; counts one more failure."""
        wait = backoff(self.attempt, base=self.base, cap=self.cap, rng=self.rng)
        self.attempt += 1
        if retry_after is not None and retry_after > 0:
            floor = min(retry_after, MAX_RETRY_AFTER)
            wait = max(wait, floor * self.rng.uniform(1.0, 1.2))
        return wait

    def reset(self) -> None:
        self.attempt = 0


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep `seconds`, or less if `stop` is set meanwhile; True when stopping."""
    if seconds > 0 and not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()
