"""Admission control for the HTTP side of an ASGI server (daphne: the embedded default's one process).

Past MAX_REQUESTS_IN_FLIGHT requests in flight, a new request is answered at once with 503, a JSON
error and Retry-After, instead of waiting its turn: beyond capacity every extra request only makes
all of them slower, until clients time out (measured before this: at twice the capacity a third of the
heartbeats waited 5 s and timed out). Health probes and /metrics are never shed, nor WebSocket traffic.

Of the admitted requests at most MAX_REQUESTS_RUNNING run their views at once (Django gives each
request a thread of its own); the others wait on the event loop. Fewer threads contending for the GIL
keep the loop quick to answer the 503s, and the admitted requests finish sooner (bench/overload.py).

"In flight" lasts until the request's sync work is over, not only its ASGI call: Django cancels the
ASGI task of a client that disconnects, but the thread running its view goes on. So the Django
middleware `AdmissionTicketMiddleware` (first in MIDDLEWARE) holds the request's ticket while the view
runs in its thread, and the slots are freed when both are done.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time

from django.http import JsonResponse
from prometheus_client import Counter, Gauge

logger = logging.getLogger("promsnmp.admission")

NEVER_SHED = frozenset({"/health/live", "/health/ready", "/metrics"})
RETRY_AFTER_SECONDS = (1, 5)  # drawn at random for each 503: shed clients do not come back together
SCOPE_KEY = "promsnmp.admission"
LOG_EVERY_SECONDS = 10

SHED = Counter("promsnmp_http_requests_shed_total", "HTTP requests answered 503 by admission control.")
# Summed over the processes alive when they share PROMETHEUS_MULTIPROC_DIR (gunicorn: core.metrics).
IN_FLIGHT = Gauge(
    "promsnmp_http_requests_in_flight",
    "HTTP requests admitted and not finished.",
    multiprocess_mode="livesum",
)


class Ticket:
    """One admitted request's slot; freed when its last holder (the ASGI call, the view's thread) lets go."""

    __slots__ = ("_gate", "_holders", "_loop", "released", "running")

    def __init__(self, gate: AdmissionControl, loop: asyncio.AbstractEventLoop):
        self._gate = gate
        self._loop = loop
        self._holders = 1  # the ASGI call
        self.released = False
        self.running = False  # holds one of the gate's running slots

    def hold(self) -> bool:
        """The view's thread takes the ticket; False when the request is already over (client gone)."""
        with self._gate.lock:
            if self.released:
                return False
            self._holders += 1
            return True

    def release(self) -> None:
        with self._gate.lock:
            self._holders -= 1
            if self._holders == 0 and not self.released:
                self.released = True
                self._gate.in_flight -= 1
                IN_FLIGHT.dec()
                if self.running and not self._loop.is_closed():  # closed: the server has stopped
                    self._loop.call_soon_threadsafe(self._gate.running.release)


class AdmissionControl:
    """ASGI wrapper: counts HTTP requests in flight in this process and sheds the ones above `limit`;
    lets `running` of them into the app at once."""

    def __init__(self, app, *, limit: int, running: int | None = None):
        self.app = app
        self.limit = limit
        self.in_flight = 0
        self.running = asyncio.Semaphore(running or max(limit, 1))
        self.lock = threading.Lock()
        self.shed_log = ShedLog(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.limit <= 0 or scope["path"] in NEVER_SHED:
            return await self.app(scope, receive, send)
        with self.lock:
            admitted = self.in_flight < self.limit
            if admitted:
                self.in_flight += 1
        if not admitted:
            self.shed_log.shed()
            return await overloaded(send, self.limit)
        IN_FLIGHT.inc()
        ticket = Ticket(self, asyncio.get_running_loop())
        try:
            await self.running.acquire()
            ticket.running = True
            await self.app({**scope, SCOPE_KEY: ticket}, receive, send)
        finally:
            ticket.release()


class ShedLog:
    """Counts 503s (promsnmp_http_requests_shed_total) and logs them once per period, not once per 503."""

    def __init__(self, limit: int):
        self.limit = limit
        self._since_log = 0
        self._logged_at = 0.0

    def shed(self) -> None:
        SHED.inc()
        self._since_log += 1
        now = time.monotonic()
        if now - self._logged_at >= LOG_EVERY_SECONDS:
            logger.warning(
                "overloaded: %d requests answered 503 (limit %d in flight)", self._since_log, self.limit
            )
            self._since_log, self._logged_at = 0, now


def overloaded_body(limit: int) -> bytes:
    return json.dumps(
        {
            "error": "overloaded",
            "detail": f"The server is at capacity ({limit} requests in flight); retry after the "
            "Retry-After seconds.",
            "fields": {},
        }
    ).encode()


def retry_after() -> str:
    return str(random.randint(*RETRY_AFTER_SECONDS))  # noqa: S311 (jitter, not a secret)


async def overloaded(send, limit: int) -> None:
    body = overloaded_body(limit)
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", retry_after().encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class AdmissionTicketMiddleware:
    """Holds the request's admission ticket while the view runs (in the sync thread). A request whose
    ASGI call is already over (the client went away before the thread started) is not run at all."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        ticket = getattr(request, "scope", {}).get(SCOPE_KEY)
        if ticket is None:  # WSGI (gunicorn), the test client, an exempt path
            return self.get_response(request)
        if not ticket.hold():
            return JsonResponse({"error": "client_gone", "detail": "Not run.", "fields": {}}, status=499)
        try:
            return self.get_response(request)
        finally:
            ticket.release()
