"""Instance liveness from heartbeat age: healthy, degraded (missed one interval), offline (timed out).

Liveness is the manager's view of whether an instance is alive; the instance's own report of its
health is a separate field (reportedStatus). The two are never folded into one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

HEALTHY = "healthy"
DEGRADED = "degraded"
OFFLINE = "offline"

# A heartbeat may arrive a little late (network, GC) before it counts as missed.
LATE_FACTOR = 1.5


def healthy_cutoff(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now - timedelta(seconds=settings.HEARTBEAT_INTERVAL_SECONDS * LATE_FACTOR)


def alive_cutoff(now: datetime | None = None) -> datetime:
    """Heartbeats older than this are past HEARTBEAT_TIMEOUT_SECONDS: the instance is offline."""
    now = now or timezone.now()
    return now - timedelta(seconds=settings.HEARTBEAT_TIMEOUT_SECONDS)


def liveness(last_heartbeat: datetime | None, now: datetime | None = None) -> str:
    if last_heartbeat is None:
        return OFFLINE
    now = now or timezone.now()
    if last_heartbeat >= healthy_cutoff(now):
        return HEALTHY
    if last_heartbeat >= alive_cutoff(now):
        return DEGRADED
    return OFFLINE
