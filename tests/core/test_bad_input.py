"""Bad input on every endpoint that takes a body, a query or an id → a 4xx JSON error, nothing changed.

The error body is exactly {"error", "detail", "fields"}; a validation error names the offending field
by its path (config.minReplicas, location.latitude). The database (sites, instances, audit log) is
compared before and after each request. No 500 anywhere.
"""

from __future__ import annotations

import json

import pytest

from core.models import AuditLog
from instances.models import Instance
from sites.models import Site

SITE = "site-a"
MB = 1024 * 1024
FIVE_MB = "x" * (5 * MB)
ELEVEN_MB = "x" * (11 * MB)

SITE_PATH = f"/api/v1/sites/{SITE}"
VALID_SITE = {"id": "site-new", "label": "New"}
VALID_REGISTER = {"siteId": SITE, "hostname": "host-new"}
VALID_HEARTBEAT = {"status": "healthy"}


def db_snapshot() -> dict:
    return {
        model.__name__: sorted(map(repr, model.objects.order_by("pk").values()))
        for model in (Site, Instance, AuditLog)
    }


@pytest.fixture
def world(make_site, register, admin_api):
    make_site(SITE, description="kept", latitude=41.0, longitude=-87.0)
    instance = register(SITE, "host-a", "pod-a")
    return {"api": admin_api, "instance": instance}


def assert_error(response, status: int, error: str | None = None, fields: set[str] | None = None) -> dict:
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "detail", "fields"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["fields"], dict)
    if error is not None:
        assert body["error"] == error, body
    if fields is not None:
        for name in fields:
            assert any(names_field(key, name) for key in body["fields"]), (name, body)
        assert all(isinstance(m, list) and m for m in body["fields"].values()), body
    return body


def names_field(key: str, name: str) -> bool:
    """`key` is the field's path, or the path of a part of it (capabilities[0]); never DRF's internals."""
    if key == name:
        return True
    rest = key[len(name) :] if key.startswith(name) else ""
    return rest[:1] in (".", "[") and "non_field_errors" not in rest


# --- JSON bodies: (method, path with {instance}, body, status, error code, fields that must be named) ----


def _site(**changes):
    return {**VALID_SITE, **changes}


def _config(**config):
    return _site(config=config)


def _location(**location):
    return _site(location=location)


SITE_BODY_CASES = [
    ("missing everything", {}, {"id", "label"}),
    ("missing label", {"id": "site-new"}, {"label"}),
    ("label is a number", _site(label=5), {"label"}),
    ("label is null", _site(label=None), {"label"}),
    ("label is a list", _site(label=["a"]), {"label"}),
    ("label too long", _site(label="x" * 256), {"label"}),
    ("label with NUL", _site(label="a\x00b"), {"label"}),
    ("label with a lone surrogate", _site(label="a\ud800b"), {"label"}),
    ("id is a number", _site(id=5), {"id"}),
    ("id uppercase", _site(id="Site-A"), {"id"}),
    ("id with a space", _site(id="site a"), {"id"}),
    ("id starts with dash", _site(id="-site"), {"id"}),
    ("id too long", _site(id="a" * 65), {"id"}),
    ("id empty", _site(id=""), {"id"}),
    ("description is a number", _site(description=1), {"description"}),
    ("description 5 MB", _site(description=FIVE_MB), {"description"}),
    ("location is a string", _site(location="Chicago"), {"location"}),
    ("location is null", _site(location=None), {"location"}),
    ("latitude 91", _location(latitude=91), {"location.latitude"}),
    ("latitude -90.5", _location(latitude=-90.5), {"location.latitude"}),
    ("longitude 181", _location(longitude=181), {"location.longitude"}),
    ("latitude is a string", _location(latitude="41.8"), {"location.latitude"}),
    ("latitude is a bool", _location(latitude=True), {"location.latitude"}),
    ("address is a number", _location(address=7), {"location.address"}),
    ("config is a list", _site(config=[]), {"config"}),
    ("minReplicas is a string", _config(minReplicas="3"), {"config.minReplicas"}),
    ("minReplicas is a float", _config(minReplicas=2.5), {"config.minReplicas"}),
    ("minReplicas is 0", _config(minReplicas=0), {"config.minReplicas"}),
    ("minReplicas is huge", _config(minReplicas=10**30), {"config.minReplicas"}),
    ("discoveryEnabled is 'yes'", _config(discoveryEnabled="yes"), {"config.discoveryEnabled"}),
    ("discoveryEnabled is 1", _config(discoveryEnabled=1), {"config.discoveryEnabled"}),
    ("discoveryCron is a number", _config(discoveryCron=5), {"config.discoveryCron"}),
    ("discoveryCron garbage", _config(discoveryCron="every day"), {"config.discoveryCron"}),
    ("timezone unknown", _config(timezone="Mars/Olympus"), {"config.timezone"}),
    ("collectionInterval negative", _config(collectionInterval=-1), {"config.collectionInterval"}),
    ("collectionInterval huge", _config(collectionInterval=2**63), {"config.collectionInterval"}),
    ("cacheExpiration is a string", _config(cacheExpiration="300000"), {"config.cacheExpiration"}),
    ("cacheMaxEntries is null", _config(cacheMaxEntries=None), {"config.cacheMaxEntries"}),
    ("several at once", _site(label=5, config={"minReplicas": "3"}), {"label", "config.minReplicas"}),
]

REGISTER_BODY_CASES = [
    ("missing everything", {}, {"siteId", "hostname"}),
    ("missing hostname", {"siteId": SITE}, {"hostname"}),
    ("siteId is a number", {**VALID_REGISTER, "siteId": 1}, {"siteId"}),
    ("hostname is a number", {**VALID_REGISTER, "hostname": 5}, {"hostname"}),
    ("hostname 5 MB", {**VALID_REGISTER, "hostname": FIVE_MB}, {"hostname"}),
    ("hostname with NUL", {**VALID_REGISTER, "hostname": "a\x00b"}, {"hostname"}),
    ("version is a number", {**VALID_REGISTER, "version": 10}, {"version"}),
    ("podName is a list", {**VALID_REGISTER, "podName": ["p"]}, {"podName"}),
    ("capabilities is a string", {**VALID_REGISTER, "capabilities": "snmpv2c"}, {"capabilities"}),
    ("capabilities of numbers", {**VALID_REGISTER, "capabilities": [1]}, {"capabilities"}),
    ("labels is a list", {**VALID_REGISTER, "labels": ["a"]}, {"labels"}),
    ("labels with a number value", {**VALID_REGISTER, "labels": {"a": 1}}, {"labels"}),
    ("labels with NUL", {**VALID_REGISTER, "labels": {"a": "x\x00y"}}, {"labels"}),
    ("labels with a lone surrogate", {**VALID_REGISTER, "labels": {"a": "x\ud800"}}, {"labels"}),
    ("hostname with a lone surrogate", {**VALID_REGISTER, "hostname": "h\udfff"}, {"hostname"}),
    ("labels 5 MB", {**VALID_REGISTER, "labels": {"big": FIVE_MB}}, {"labels"}),
]

HEARTBEAT_BODY_CASES = [
    ("missing status", {}, {"status"}),
    ("status unknown word", {"status": "great"}, {"status"}),
    ("status is a number", {"status": 1}, {"status"}),
    ("uptime is a string", {**VALID_HEARTBEAT, "uptime": "10"}, {"uptime"}),
    ("uptime negative", {**VALID_HEARTBEAT, "uptime": -1}, {"uptime"}),
    ("uptime beyond bigint", {**VALID_HEARTBEAT, "uptime": 2**63}, {"uptime"}),
    ("inventoryVersion is a bool", {**VALID_HEARTBEAT, "inventoryVersion": True}, {"inventoryVersion"}),
    ("inventoryVersion beyond bigint", {**VALID_HEARTBEAT, "inventoryVersion": 2**63}, {"inventoryVersion"}),
    ("configVersion is a float", {**VALID_HEARTBEAT, "configVersion": 1.5}, {"configVersion"}),
    ("configVersion beyond integer", {**VALID_HEARTBEAT, "configVersion": 2**31}, {"configVersion"}),
    ("metrics is a list", {**VALID_HEARTBEAT, "metrics": [1]}, {"metrics"}),
    ("metrics is a string", {**VALID_HEARTBEAT, "metrics": "fast"}, {"metrics"}),
    ("metrics with NUL", {**VALID_HEARTBEAT, "metrics": {"note": "a\x00b"}}, {"metrics"}),
    ("metrics with a NUL key", {**VALID_HEARTBEAT, "metrics": {"a\x00": 1}}, {"metrics"}),
    ("metrics with a lone surrogate", {**VALID_HEARTBEAT, "metrics": {"note": "\ud800"}}, {"metrics"}),
    ("metrics 5 MB", {**VALID_HEARTBEAT, "metrics": {"blob": FIVE_MB}}, {"metrics"}),
]

BODY_CASES = [
    *(pytest.param("POST", "/api/v1/sites", body, f, id=f"create: {n}") for n, body, f in SITE_BODY_CASES),
    *(
        pytest.param(
            "PUT", SITE_PATH, {k: v for k, v in body.items() if k != "id"}, f - {"id"}, id=f"put: {n}"
        )
        for n, body, f in SITE_BODY_CASES
        if f != {"id"}
    ),
    pytest.param("PUT", SITE_PATH, {"id": "other-id", "label": "X"}, {"id"}, id="put: id differs from path"),
    pytest.param("PUT", SITE_PATH, {"description": "no label"}, {"label"}, id="put: missing label"),
    pytest.param("PATCH", SITE_PATH, {"label": 5}, {"label"}, id="patch: label is a number"),
    pytest.param("PATCH", SITE_PATH, {"label": None}, {"label"}, id="patch: label is null"),
    pytest.param("PATCH", SITE_PATH, {"id": "other-id"}, {"id"}, id="patch: id differs from path"),
    pytest.param(
        "PATCH",
        SITE_PATH,
        {"config": {"minReplicas": "3"}},
        {"config.minReplicas"},
        id="patch: minReplicas str",
    ),
    pytest.param(
        "PATCH",
        SITE_PATH,
        {"config": {"discoveryEnabled": "yes"}},
        {"config.discoveryEnabled"},
        id="patch: discoveryEnabled 'yes'",
    ),
    pytest.param(
        "PATCH", SITE_PATH, {"location": {"latitude": 91}}, {"location.latitude"}, id="patch: lat 91"
    ),
    pytest.param(
        "PATCH",
        SITE_PATH,
        {"config": {"timezone": "Nowhere/Land"}},
        {"config.timezone"},
        id="patch: timezone",
    ),
    pytest.param("PATCH", SITE_PATH, {"description": FIVE_MB}, {"description"}, id="patch: description 5 MB"),
    *(
        pytest.param("POST", "/api/v1/instances/register", body, f, id=f"register: {n}")
        for n, body, f in REGISTER_BODY_CASES
    ),
    *(
        pytest.param("POST", "/api/v1/instances/{instance}/heartbeat", body, f, id=f"heartbeat: {n}")
        for n, body, f in HEARTBEAT_BODY_CASES
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "fields"), BODY_CASES)
def test_invalid_body_is_400_with_fields_and_changes_nothing(world, method, path, body, fields):
    before = db_snapshot()
    # Sent as a client would: ASCII JSON, where "\ud800" and "\u0000" travel as escapes.
    response = world["api"].generic(
        method, path.format(**world), json.dumps(body), content_type="application/json"
    )
    assert_error(response, 400, "validation_error", fields)
    assert db_snapshot() == before


# --- raw bodies: malformed JSON, not an object, other media types, too large -----------------------

BODY_ENDPOINTS = [
    ("POST", "/api/v1/sites"),
    ("PUT", SITE_PATH),
    ("PATCH", SITE_PATH),
    ("POST", "/api/v1/instances/register"),
    ("POST", "/api/v1/instances/{instance}/heartbeat"),
]

RAW_CASES = [
    # (name, raw body, content type, status, error code)
    ("malformed JSON", '{"id": "x", "label": ', "application/json", 400, "parse_error"),
    ("trailing garbage", '{"id": "x", "label": "X"} trailing', "application/json", 400, "parse_error"),
    (
        "NaN",
        '{"id": "x", "label": "X", "location": {"latitude": NaN}}',
        "application/json",
        400,
        "parse_error",
    ),
    ("not UTF-8", b'{"label": "\xff\xfe"}', "application/json", 400, "parse_error"),
    (
        "Infinity",
        '{"id": "x", "label": "X", "location": {"latitude": -Infinity}}',
        "application/json",
        400,
        "parse_error",
    ),
    ("5000 [", "[" * 5000 + "]" * 5000, "application/json", 400, "parse_error"),  # was RecursionError, a 500
    ("5000 [ unclosed", "[" * 5000, "application/json", 400, "parse_error"),
    ("5000 nested objects", '{"a":' * 5000 + "1" + "}" * 5000, "application/json", 400, "parse_error"),
    ("a JSON array", '[{"id": "x", "label": "X"}]', "application/json", 400, "validation_error"),
    ("a JSON string", '"site"', "application/json", 400, "validation_error"),
    ("a JSON number", "42", "application/json", 400, "validation_error"),
    ("JSON null", "null", "application/json", 400, "validation_error"),
    ("form encoded", "id=x&label=X", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ("plain text", '{"id": "x", "label": "X"}', "text/plain", 415, "unsupported_media_type"),
    ("11 MB", '{"description": "' + ELEVEN_MB + '"}', "application/json", 413, "payload_too_large"),
]


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS, ids=[f"{m} {p}" for m, p in BODY_ENDPOINTS])
@pytest.mark.parametrize(
    ("name", "raw", "content_type", "status", "error"), RAW_CASES, ids=[c[0] for c in RAW_CASES]
)
def test_unparseable_body_is_4xx_and_changes_nothing(
    world, method, path, name, raw, content_type, status, error
):
    before = db_snapshot()
    response = world["api"].generic(method, path.format(**world), raw, content_type=content_type)
    assert_error(response, status, error)
    assert db_snapshot() == before


def test_five_megabyte_valid_json_is_parsed_not_refused(world):
    """5 MB is under the 10 MB limit: the body is read and validated (400 on the field, not 413)."""
    body = json.dumps({"status": "healthy", "metrics": {"blob": FIVE_MB}})
    assert len(body) > 5 * MB
    response = world["api"].generic(
        "POST", f"/api/v1/instances/{world['instance']}/heartbeat", body, content_type="application/json"
    )
    assert_error(response, 400, "validation_error", {"metrics"})


# --- unknown ids ----------------------------------------------------------------------------------

UNKNOWN_ID_CASES = [
    ("GET", "/api/v1/sites/no-such-site", None),
    ("PUT", "/api/v1/sites/no-such-site", {"label": "X"}),
    ("PATCH", "/api/v1/sites/no-such-site", {"label": "X"}),
    ("DELETE", "/api/v1/sites/no-such-site", None),
    ("GET", "/api/v1/sites/no-such-site/config", None),
    ("POST", "/api/v1/instances/register", {"siteId": "no-such-site", "hostname": "h"}),
    ("POST", "/api/v1/instances/inst_0000000000000000/heartbeat", {"status": "healthy"}),
    ("GET", "/api/v1/instances/inst_0000000000000000", None),
    ("DELETE", "/api/v1/instances/inst_0000000000000000", None),
    # Ids no row can have: longer than the column, or with characters PostgreSQL refuses in text.
    ("GET", "/api/v1/sites/" + "a" * 300, None),
    ("GET", "/api/v1/sites/bad%00id", None),
    ("PATCH", "/api/v1/sites/bad%00id", {"label": "X"}),
    ("GET", "/api/v1/sites/bad%00id/config", None),
    ("POST", "/api/v1/instances/register", {"siteId": "bad\x00id", "hostname": "h"}),
    ("GET", "/api/v1/instances/inst%00x", None),
    ("POST", "/api/v1/instances/inst%00x/heartbeat", {"status": "healthy"}),
    ("DELETE", "/api/v1/instances/inst%00x", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"), UNKNOWN_ID_CASES, ids=[f"{m} {p[:60]}" for m, p, _ in UNKNOWN_ID_CASES]
)
def test_unknown_id_is_404_and_changes_nothing(world, method, path, body):
    before = db_snapshot()
    call = getattr(world["api"], method.lower())
    response = call(path, body, format="json") if body is not None else call(path)
    # A NUL in an id may be refused as bad input (400) instead; never a 500.
    if "\x00" in path or "%00" in path or (body and "\x00" in body.get("siteId", "")):
        assert response.status_code in (400, 404), response.content[:300]
        assert_error(response, response.status_code)
    else:
        assert_error(response, 404, "not_found")
    assert db_snapshot() == before


def test_unknown_route_and_wrong_method_are_json(world):
    assert_error(world["api"].get("/api/v1/no-such-thing"), 404, "not_found")
    assert_error(world["api"].post(SITE_PATH, {"label": "X"}, format="json"), 405, "method_not_allowed")
    assert_error(world["api"].get("/api/v1/instances/register"), 405, "method_not_allowed")


# --- query parameters -----------------------------------------------------------------------------

QUERY_CASES = [
    ("/api/v1/sites", {"limit": "abc"}, {"limit"}),
    ("/api/v1/sites", {"limit": "0"}, {"limit"}),
    ("/api/v1/sites", {"limit": "-5"}, {"limit"}),
    ("/api/v1/sites", {"limit": "100000"}, {"limit"}),
    ("/api/v1/sites", {"limit": "1.5"}, {"limit"}),
    ("/api/v1/sites", {"offset": "-1"}, {"offset"}),
    ("/api/v1/sites", {"offset": "x"}, {"offset"}),
    ("/api/v1/sites", {"offset": "9" * 40}, {"offset"}),
    ("/api/v1/sites", {"limit": "x", "offset": "y"}, {"limit", "offset"}),
    ("/api/v1/audit-log", {"limit": "abc"}, {"limit"}),
    ("/api/v1/audit-log", {"offset": "-1"}, {"offset"}),
    ("/api/v1/audit-log", {"since": "yesterday"}, {"since"}),
    ("/api/v1/audit-log", {"since": "2024-13-45T00:00:00Z"}, {"since"}),
    ("/api/v1/audit-log", {"since": "2024-01-15T10:30:00"}, {"since"}),
    ("/api/v1/audit-log", {"since": "2024-01-15"}, {"since"}),
]


@pytest.mark.parametrize(
    ("path", "query", "fields"), QUERY_CASES, ids=[f"{p} {q}" for p, q, _ in QUERY_CASES]
)
def test_bad_query_is_400_with_fields(world, path, query, fields):
    before = db_snapshot()
    response = world["api"].get(path, query)
    assert_error(response, 400, "validation_error", fields)
    assert db_snapshot() == before


@pytest.mark.parametrize(
    "query",
    [{"siteId": "bad\x00id"}, {"entityType": "x\x00y"}],
    ids=["siteId with NUL", "entityType with NUL"],
)
def test_audit_log_filter_with_nul_is_not_a_500(world, query):
    response = world["api"].get("/api/v1/audit-log", query)
    assert response.status_code in (200, 400), response.content[:300]
    if response.status_code == 400:
        assert_error(response, 400)
    else:
        assert response.json()["total"] == 0
