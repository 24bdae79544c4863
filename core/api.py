"""Shared API pieces: base view, error schema, pagination parameters."""

from __future__ import annotations

from datetime import datetime

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers
from rest_framework.views import APIView

from core.errors import InvalidInput
from core.permissions import principal_of
from core.timefmt import TIMESTAMP_MESSAGE, parse_timestamp


def schema(name: str, fields: dict) -> type[serializers.Serializer]:
    """A serializer class that documents a response body the selectors render as plain dicts."""
    return type(name, (serializers.Serializer,), dict(fields))


ErrorSerializer = schema(
    "Error",
    {
        "error": serializers.CharField(help_text="Machine-readable code, e.g. validation_error, not_found."),
        "detail": serializers.CharField(help_text="What went wrong, for people."),
        "fields": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            help_text="Per-field messages, keyed by the field's path (location.latitude).",
        ),
    },
)


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    descriptions = {
        400: "Invalid input (malformed JSON, wrong types, failed validation).",
        401: "Missing, invalid, revoked or expired token.",
        403: "The token's scopes or site binding do not allow this.",
        404: "No such resource.",
        409: "Conflicts with the current state.",
        411: "A body sent without Content-Length (chunked).",
        413: "Request body too large.",
        415: "The body is not application/json.",
    }
    return {code: OpenApiResponse(ErrorSerializer, description=descriptions[code]) for code in codes}


# What any endpoint that takes a JSON body can answer besides its own errors.
BODY_ERRORS = (400, 401, 403, 411, 413, 415)

LIMIT_PARAM = OpenApiParameter(
    "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, description="Page size (default 100)."
)
OFFSET_PARAM = OpenApiParameter(
    "offset", {"type": "integer", "minimum": 0, "maximum": 10**9}, description="Items to skip (default 0)."
)
# A version number in a query (?version=, ?since=): what the server parses, 1 to 18 digits.
VERSION_SCHEMA = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}
# A free-text filter in a query: present means non-empty (see ApiView.check_query).
FILTER_SCHEMA = {"type": "string", "minLength": 1}


def page_params(query, default_limit: int = 100, max_limit: int = 1000) -> tuple[int, int]:
    errors = {}
    values = {}
    for name, default, low, high in (("limit", default_limit, 1, max_limit), ("offset", 0, 0, 10**9)):
        raw = query.get(name)
        if raw is None or raw == "":
            values[name] = default
            continue
        try:
            values[name] = int(raw)
        except ValueError:
            errors[name] = [f"Must be an integer from {low} to {high}."]
            continue
        if not low <= values[name] <= high:
            errors[name] = [f"Must be an integer from {low} to {high}."]
    if errors:
        raise InvalidInput(errors)
    return values["limit"], values["offset"]


def timestamp_param(query, name: str) -> datetime | None:
    """An ISO-8601 query parameter (?since=) in UTC; None when absent; 400 naming it when not a
    timestamp with a zone or outside what a datetime holds in UTC (9999-12-31T23:59:59-23:59)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    moment = parse_timestamp(raw)
    if moment is None:
        raise InvalidInput({name: [TIMESTAMP_MESSAGE]})
    return moment


def optional_body(properties: dict) -> dict:
    """The request of an endpoint whose JSON body may be left out or be null (json_object(optional=True)):
    an object with these properties, or null."""
    return {"application/json": {"type": ["object", "null"], "properties": properties}}


# Base for every v1 endpoint: scopes per method (`allowed_scopes`), helpers for the caller.
# (A comment, not a docstring: drf-spectacular would copy a docstring into every operation.)
class ApiView(APIView):
    allowed_scopes: dict = {}
    # Query parameters that may be repeated (?deviceIds=a&deviceIds=b); any other is given at most once.
    repeatable_query: frozenset[str] = frozenset()

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.check_query(request)

    def check_query(self, request) -> None:
        """A query parameter given twice (?limit=1&limit=2) or empty (?format=) is a 400, so that what a
        request means never depends on which copy the server reads, and the schema's types hold."""
        errors = {}
        for name, values in request.query_params.lists():
            if len(values) > 1 and name not in self.repeatable_query:
                errors[name] = ["Give this parameter at most once."]
            elif any(value == "" for value in values) and name not in self.repeatable_query:
                errors[name] = ["Must not be empty: leave the parameter out instead."]
        if errors:
            raise InvalidInput(errors)

    def actor(self):
        return principal_of(self.request).actor

    def principal(self):
        return principal_of(self.request)

    def json_object(self, *, optional: bool = False) -> dict:
        """The JSON body, which must be an object; with `optional`, no body (or null) reads as {}."""
        body = self.request.data
        if optional and body is None:
            return {}
        if not isinstance(body, dict):
            expected = "Expected a JSON object (or no body)." if optional else "Expected a JSON object."
            raise InvalidInput({"non_field_errors": [expected]})
        return body

    def validated(self, serializer_class, data=None, **kwargs) -> dict:
        serializer = serializer_class(data=self.request.data if data is None else data, **kwargs)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


async def _async_chunks(chunks):
    """A sync iterator as an async one, each step in the thread the view ran in (its DB connection)."""
    step = sync_to_async(next, thread_sensitive=True)
    while (chunk := await step(chunks, None)) is not None:
        yield chunk


def json_stream(request, chunks) -> StreamingHttpResponse:
    """A streamed JSON answer. Under ASGI (daphne) Django collects a sync iterator into a list before
    sending anything (the whole document in memory, no byte out until the last one is made): give it an
    async iterator there."""
    if isinstance(getattr(request, "_request", request), ASGIRequest):
        chunks = _async_chunks(iter(chunks))
    return StreamingHttpResponse(chunks, content_type="application/json")
