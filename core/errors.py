"""One error shape for every 4xx/5xx: {"error": code, "detail": text, "fields": {path: [messages]}}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response

logger = logging.getLogger("promsnmp.errors")


class ApiError(exceptions.APIException):
    """An error a service raises with its own status and code (409 not_leader, 404 not_found, …)."""

    def __init__(self, status_code: int, code: str, detail: str, fields: dict | None = None):
        self.status_code = status_code
        self.code = code
        self.fields = fields or {}
        super().__init__(detail=detail, code=code)


class NotFoundError(ApiError):
    def __init__(self, detail: str):
        super().__init__(status.HTTP_404_NOT_FOUND, "not_found", detail)


class ConflictError(ApiError):
    def __init__(self, code: str, detail: str):
        super().__init__(status.HTTP_409_CONFLICT, code, detail)


class InvalidInput(ApiError):
    """Validation that a service does (one field at a time or several)."""

    def __init__(self, fields: dict[str, Any], detail: str = "Invalid input."):
        super().__init__(status.HTTP_400_BAD_REQUEST, "validation_error", detail, flatten_fields(fields))


def flatten_fields(errors: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error structure → {"location.latitude": ["…"], "labels": ["…"]}."""
    flat: dict[str, list[str]] = {}
    if isinstance(errors, dict):
        for key, value in errors.items():
            if key == "non_field_errors":
                path = prefix or "non_field_errors"
            elif isinstance(key, int):
                path = f"{prefix}[{key}]"
            else:
                path = f"{prefix}.{key}" if prefix else str(key)
            flat.update(flatten_fields(value, path))
    elif isinstance(errors, list):
        if all(not isinstance(item, dict | list) for item in errors):
            flat.setdefault(prefix or "non_field_errors", []).extend(str(item) for item in errors)
        else:
            for index, item in enumerate(errors):
                if item:
                    flat.update(flatten_fields(item, f"{prefix}[{index}]"))
    else:
        flat.setdefault(prefix or "non_field_errors", []).append(str(errors))
    return flat


_CODES = {
    exceptions.ParseError: "parse_error",
    exceptions.AuthenticationFailed: "unauthorized",
    exceptions.NotAuthenticated: "unauthorized",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
}


def error_body(code: str, detail: str, fields: dict | None = None) -> dict[str, Any]:
    return {"error": code, "detail": detail, "fields": fields or {}}


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)

    if isinstance(exc, ApiError):
        body = error_body(exc.code, str(exc.detail), exc.fields)
    elif isinstance(exc, exceptions.ValidationError):
        body = error_body("validation_error", "Invalid input.", flatten_fields(exc.detail))
    elif isinstance(exc, exceptions.APIException):
        code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), "error")
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        body = error_body(code, str(detail))
    else:
        return None  # a real bug: let Django log it and answer 500 (handler500 keeps it JSON)

    headers = {}
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    return Response(body, status=exc.status_code, headers=headers)


def json_not_found(request, exception=None):
    return JsonResponse(error_body("not_found", f"No endpoint at {request.path}."), status=404)


def json_server_error(request):
    return JsonResponse(error_body("server_error", "Internal server error; it has been logged."), status=500)


def json_bad_request(request, exception=None):
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_permission_denied(request, exception=None):
    return JsonResponse(error_body("forbidden", "Permission denied."), status=403)
