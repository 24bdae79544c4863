"""Check real responses against the OpenAPI schema the server publishes (OAS 3.1 = JSON Schema)."""

from __future__ import annotations

import re
from functools import cache

import jsonschema
from drf_spectacular.generators import SchemaGenerator


@cache
def openapi() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


def _operation(method: str, path: str) -> dict:
    path = path.split("?")[0].rstrip("/")
    for template, operations in openapi()["paths"].items():
        pattern = "^" + re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template.rstrip("/"))) + "$"
        if re.match(pattern, path) and method.lower() in operations:
            return operations[method.lower()]
    raise AssertionError(f"{method} {path} is not in the OpenAPI schema")


def assert_matches_schema(response, method: str, path: str) -> None:
    """The response's status is documented for the operation, and its JSON body fits the schema."""
    operation = _operation(method, path)
    documented = operation.get("responses", {})
    status = str(response.status_code)
    assert status in documented, f"{method} {path} answered {status}, documented: {sorted(documented)}"
    content = documented[status].get("content", {}).get("application/json")
    if content is None:
        return
    # "#/components/..." references resolve inside this document.
    schema = {**content["schema"], "components": openapi()["components"]}
    jsonschema.validate(response.json(), schema, cls=jsonschema.Draft202012Validator)
