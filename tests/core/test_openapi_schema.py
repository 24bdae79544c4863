"""The published OpenAPI schema: served without auth, complete for every route, in the spec's form."""

from __future__ import annotations

import json
import re
from functools import cache

import pytest
import yaml
from django.urls import URLPattern, get_resolver

from tests.openapi import openapi

METHODS = ("get", "post", "put", "patch", "delete")
NOT_IN_SCHEMA = {"api/v1/schema", "api/v1/docs"}
# The spec's operations of this issue, as (method, path).
SPEC_OPERATIONS = [
    ("get", "/api/v1/sites"),
    ("post", "/api/v1/sites"),
    ("get", "/api/v1/sites/{siteId}"),
    ("put", "/api/v1/sites/{siteId}"),
    ("patch", "/api/v1/sites/{siteId}"),
    ("delete", "/api/v1/sites/{siteId}"),
    ("get", "/api/v1/sites/{siteId}/config"),
    ("post", "/api/v1/instances/register"),
    ("post", "/api/v1/instances/{instanceId}/heartbeat"),
    ("get", "/api/v1/instances/{instanceId}"),
    ("delete", "/api/v1/instances/{instanceId}"),
    ("get", "/api/v1/audit-log"),
    ("get", "/api/v1/fleet/health"),
    ("get", "/api/v1/fleet/metrics"),
]
REQUIRED_BODY_FIELDS = {
    ("post", "/api/v1/sites"): {"id", "label"},
    ("put", "/api/v1/sites/{siteId}"): {"label"},
    ("patch", "/api/v1/sites/{siteId}"): set(),
    ("post", "/api/v1/instances/register"): {"siteId", "hostname"},
    ("post", "/api/v1/instances/{instanceId}/heartbeat"): {"status"},
}
CAMEL = re.compile(r"^[a-z][a-zA-Z0-9]*$")
HEADER_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*(-[A-Z][A-Za-z0-9]*)*$")


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@cache
def api_routes() -> list[tuple[str, str]]:
    """(method, path in OpenAPI form) for every URL route under /api/v1, from the URLconf itself."""
    routes = []
    for pattern in get_resolver().url_patterns:
        if not isinstance(pattern, URLPattern):
            continue
        route = str(pattern.pattern)
        if not route.startswith("api/v1/") or route.endswith("/") or route in NOT_IN_SCHEMA:
            continue
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", lambda m: "{" + camel(m[1]) + "}", route)
        view_class = pattern.callback.view_class
        routes += [(method, path) for method in METHODS if hasattr(view_class, method)]
    return routes


def operations() -> list[tuple[str, str, dict]]:
    return [
        (method, path, operation)
        for path, item in openapi()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


OPERATION_IDS = [f"{m.upper()} {p}" for m, p in SPEC_OPERATIONS]


def resolve(schema: dict) -> dict:
    ref = schema.get("$ref")
    if ref:
        return openapi()["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return schema


# --- served -----------------------------------------------------------------------------------------


def test_schema_is_served_without_auth_as_yaml_and_json(client, db):
    response = client.get("/api/v1/schema", HTTP_AUTHORIZATION="Bearer garbage")
    assert response.status_code == 200
    assert "openapi" in response["Content-Type"]
    as_yaml = yaml.safe_load(response.content)
    assert as_yaml["openapi"].startswith("3.")

    by_format = client.get("/api/v1/schema", {"format": "json"})
    by_accept = client.get("/api/v1/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    for response in (by_format, by_accept):
        assert response.status_code == 200
        assert "json" in response["Content-Type"]
        assert json.loads(response.content) == as_yaml
    assert set(as_yaml["paths"]) == set(openapi()["paths"])


def test_docs_are_served_as_html(client, db):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"/api/v1/schema" in response.content


# --- complete -------------------------------------------------------------------------------------


def test_every_route_is_in_the_schema():
    routes = api_routes()
    assert len(routes) >= len(SPEC_OPERATIONS)
    documented = {(m, p) for m, p, _ in operations()}
    missing = sorted(set(routes) - documented)
    assert not missing, f"routes missing from the schema: {missing}"
    assert documented == set(routes), f"schema operations without a route: {sorted(documented - set(routes))}"


@pytest.mark.parametrize(("method", "path"), SPEC_OPERATIONS, ids=OPERATION_IDS)
def test_spec_operation_is_documented(method, path):
    assert method in openapi()["paths"].get(path, {}), f"{method.upper()} {path} is not in the schema"


@pytest.mark.parametrize(("method", "path"), SPEC_OPERATIONS, ids=OPERATION_IDS)
def test_operation_documents_its_responses(method, path):
    operation = openapi()["paths"][path][method]
    responses = operation["responses"]
    success = [code for code in responses if code.startswith("2")]
    assert len(success) == 1, responses.keys()
    expected_errors = {"401", "403"}
    if "requestBody" in operation:
        expected_errors |= {"400", "413"}
    if any(p["in"] == "query" for p in operation.get("parameters", [])):
        expected_errors.add("400")
    if "{" in path:
        expected_errors.add("404")
    assert expected_errors <= set(responses), f"{method.upper()} {path}: {sorted(responses)}"
    for code, response in responses.items():
        if code.startswith(("4", "5")):
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (code, schema)
    if success[0] != "204":
        assert "application/json" in responses[success[0]]["content"]


def test_error_schema_is_exactly_error_detail_fields():
    error = openapi()["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"error", "detail", "fields"}
    assert set(error["required"]) == {"error", "detail", "fields"}


@pytest.mark.parametrize(("method", "path"), SPEC_OPERATIONS, ids=OPERATION_IDS)
def test_operation_requires_a_bearer_token_or_staff_session(method, path):
    operation = openapi()["paths"][path][method]
    security = operation.get("security", openapi().get("security"))
    assert security, "no security requirement"
    assert {} not in security, "anonymous access documented"
    assert {"bearerAuth": []} in security
    schemes = openapi()["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["type"] == "http" and schemes["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.parametrize(
    ("method", "path"), list(REQUIRED_BODY_FIELDS), ids=[f"{m} {p}" for m, p in REQUIRED_BODY_FIELDS]
)
def test_request_body_is_documented_with_required_fields(method, path):
    operation = openapi()["paths"][path][method]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    schema = resolve(body)
    assert set(schema.get("required", [])) == REQUIRED_BODY_FIELDS[(method, path)]
    assert all(CAMEL.match(name) for name in schema["properties"]), schema["properties"].keys()


# --- the spec's form ------------------------------------------------------------------------------


def test_paths_have_no_trailing_slash_and_camel_case_parameters():
    for path, item in openapi()["paths"].items():
        assert path.startswith("/api/v1/"), path
        assert not path.endswith("/"), path
        for name in re.findall(r"{([^}]+)}", path):
            assert name in {"siteId", "instanceId", "seedId", "deviceId", "runId", "jobId"}, (
                f"{path}: path parameter {{{name}}}"
            )
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for parameter in operation.get("parameters", []):
                # Path and query parameters are camelCase; headers keep HTTP's form (Idempotency-Key).
                form = HEADER_NAME if parameter["in"] == "header" else CAMEL
                assert form.match(parameter["name"]), f"{method} {path}: {parameter['name']}"
                if parameter["in"] == "path":
                    assert "{" + parameter["name"] + "}" in path


def test_operation_ids_are_unique():
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_every_operation_documents_rate_limiting_and_shedding_with_retry_after():
    for path, item in openapi()["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            for status in ("429", "503"):
                response = operation["responses"][status]
                assert "Retry-After" in response["headers"], (method, path, status)
                assert response["content"]["application/json"]["schema"] == {
                    "$ref": "#/components/schemas/Error"
                }
