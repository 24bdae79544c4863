"""Request id, request log line, and the body-size limit (413 JSON before anything reads the body)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from urllib.parse import unquote_plus

from django.conf import settings
from django.http import JsonResponse

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
