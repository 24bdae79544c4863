"""Strict JSON fields: a wrong type is a 400, never silently coerced ("5" is not an integer)."""

from __future__ import annotations

import json

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from core.validation import UNSTORABLE_MESSAGE, storable


def with_schema(field_class: type[serializers.Field], schema: dict) -> type[serializers.Field]:
    """field_class, documented in the OpenAPI schema as `schema` (a pattern, an enum): a subclass, as
    serializers copy their declared field instances and an annotation on an instance would be lost."""
    return extend_schema_field(schema)(type(field_class.__name__, (field_class,), {}))


class StrictCharField(serializers.CharField):
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid")
        return data


@extend_schema_field({"type": "object", "additionalProperties": True})
class BoundedJSONObjectField(serializers.JSONField):
    """A JSON object whose encoded size stays under a limit (metrics, labels)."""

    default_error_messages = {
        "not_object": "Expected a JSON object.",
        "too_large": "At most {max_bytes} bytes of JSON.",
        "unstorable": UNSTORABLE_MESSAGE,
    }

    def __init__(self, *, max_bytes: int = 65536, **kwargs):
        self.max_bytes = max_bytes
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            self.fail("not_object")
        if len(json.dumps(data)) > self.max_bytes:
            self.fail("too_large", max_bytes=self.max_bytes)
        if not storable(data):
            self.fail("unstorable")
        return data
