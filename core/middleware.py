"""Request id, request log line, the spec's HTTP metrics, and the body-size limit (413 JSON before anything
reads the body)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import JsonResponse
from prometheus_client import Counter, Histogram

from core.logging import reset_request_id, set_request_id

logger = logging.getLogger("promsnmp.request")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestIdMiddleware:
    """Takes X-Request-ID when it is sane, else makes one; echoes it and logs one line per request."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        incoming = request.headers.get("X-Request-ID", "")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        request.request_id = request_id
        token = set_request_id(request_id)
        started = time.monotonic()
        try:
            response = self.get_response(request)
            response["X-Request-ID"] = request_id
            if not request.path.startswith("/health/"):
                logger.info(
                    "%s %s %s",
                    request.method,
                    request.path,
                    response.status_code,
                    extra={
                        "method": request.method,
                        "path": request.path,
                        "status": response.status_code,
                        "durationMs": round((time.monotonic() - started) * 1000, 1),
                    },
                )
            return response
        finally:
            reset_request_id(token)


HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # no route: label values stay bounded whatever paths clients send
REQUESTS = Counter(
    "promsnmp_manager_http_requests_total",
    "HTTP requests answered, by method, route pattern and status.",
    ["method", "endpoint", "status"],
)
DURATION = Histogram(
    "promsnmp_manager_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route pattern.",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)


def endpoint_label(request) -> str:
    """The route pattern that served the request (`/api/v1/instances/<str:instance_id>/heartbeat`),
    never the raw path: ids would make a series per instance. A path served with and without a trailing
    slash is one endpoint."""
    match = getattr(request, "resolver_match", None)
    return "/" + match.route.rstrip("/") if match is not None and match.route else UNMATCHED


class HttpMetricsMiddleware:
    """promsnmp_manager_http_requests_total and promsnmp_manager_http_request_duration_seconds (the spec's
    ManagerAPIErrors and ManagerAPIHighLatency rules read them)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.monotonic()
        response = self.get_response(request)
        method = request.method if request.method in HTTP_METHODS else "other"
        endpoint = endpoint_label(request)
        REQUESTS.labels(method, endpoint, str(response.status_code)).inc()
        DURATION.labels(method, endpoint).observe(time.monotonic() - started)
        return response


def body_limit_for(request) -> int:
    """The largest body this request may carry (bytes)."""
    for method, pattern, setting_name in getattr(settings, "LARGE_BODY_ROUTES", ()):
        if request.method == method and re.fullmatch(pattern, request.path):
            return getattr(settings, setting_name)
    return settings.MAX_REQUEST_BODY_BYTES


class BodySizeLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if "\x00" in request.path or "\x00" in unquote_plus(request.META.get("QUERY_STRING", "")):
            # PostgreSQL text cannot hold NUL: refuse it here rather than fail in the database.
            return JsonResponse(
                {"error": "bad_request", "detail": "NUL characters are not allowed in URLs.", "fields": {}},
                status=400,
            )
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            # Without a length the limit cannot be checked before the body is read.
            return JsonResponse(
                {"error": "length_required", "detail": "Send the body with a Content-Length.", "fields": {}},
                status=411,
            )
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(
                {"error": "bad_request", "detail": "Content-Length is not a number.", "fields": {}},
                status=400,
            )
        limit = body_limit_for(request)
        if length > limit:
            return JsonResponse(
                {
                    "error": "payload_too_large",
                    "detail": f"Request body is {length} bytes; the limit here is {limit} bytes.",
                    "fields": {},
                },
                status=413,
            )
        return self.get_response(request)
