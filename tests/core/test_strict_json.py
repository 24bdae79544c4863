"""Strict JSON (issue 8, §6): bounded nesting, no NaN/Infinity, numbers and dates out of range.

From a chaos run, each of these was a 500: 5000 `[` in a body (RecursionError), 1e400 in heartbeat
metrics (jsonb has no Infinity), `since=9999-12-31T23:59:59-23:59` on the audit log (overflow in UTC).
Now each is a 400 JSON error that changes nothing. core.parsers.loads_strict is also what the WebSocket
consumer reads frames with.
"""

from __future__ import annotations

import json
import random
import time
from datetime import UTC

import pytest

from core.models import AuditLog
from core.parsers import MAX_JSON_DEPTH, JSONInputError, loads_strict, nesting_depth_exceeds
from core.timefmt import parse_timestamp
from core.validation import storable
from instances.models import Instance
from sites.models import Site
from tests.core.test_bad_input import assert_error, db_snapshot

SITE = "site-a"
BIG = "__OUT_OF_RANGE__"  # json.dumps cannot write 1e400: the placeholder is spliced into the text


def nested(depth: int, kind: str = "[") -> str:
    if kind == "[":
        return "[" * depth + "]" * depth
    if kind == "{":
        return '{"a":' * depth + "1" + "}" * depth
    half = depth // 2  # alternating [{"a":[{"a": …
    return '[{"a":' * half + ("[]" if depth % 2 else "1") + "}]" * half


def depth_of(value) -> int:
    """Reference nesting depth of a parsed value (a scalar is 0)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


# --- loads_strict ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["[", "{", "mixed"])
def test_nesting_up_to_the_limit_is_read_and_one_more_is_refused(kind):
    at_limit = loads_strict(nested(MAX_JSON_DEPTH, kind))
    assert depth_of(at_limit) == MAX_JSON_DEPTH
    with pytest.raises(JSONInputError, match=f"more than {MAX_JSON_DEPTH} levels deep"):
        loads_strict(nested(MAX_JSON_DEPTH + 1, kind))


@pytest.mark.parametrize(
    "text",
    [
        "[" * 5000 + "]" * 5000,
        "[" * 30000 + "]" * 30000,
        "[" * 5000,  # unbalanced: no closers at all
        "[" * 30000 + "1",
        '{"a":' * 5000 + "1" + "}" * 5000,
        '{"a":' * 5000,
        "[{" * 3000,
        '{"k": ' + "[" * 100 + "]" * 100 + "}",
    ],
    ids=["[x5000", "[x30000", "[x5000 open", "[x30000 open", "{x5000", "{x5000 open", "[{ open", "101"],
)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(text):
    started = time.monotonic()
    with pytest.raises(JSONInputError, match=f"more than {MAX_JSON_DEPTH} levels deep"):
        loads_strict(text)
    assert time.monotonic() - started < 5


def test_brackets_inside_strings_do_not_count():
    text = json.dumps({"a": "[" * 5000, "b": ["]" * 300, '\\"[[[', "\\"], "c": '"' * 9 + "{" * 200})
    assert loads_strict(text) == json.loads(text)
    assert not nesting_depth_exceeds(text.encode())


SCALARS = [
    1,
    -2.5,
    True,
    None,
    "",
    "plain",
    "[",
    "]]",
    "{[}",
    '"',
    '\\"[',
    "\\",
    "\\\\",
    '\\"]"',
    "ü[€",
    "\x00[",
]
KEYS = ["k", "[", "\\", '"{', "]}"]


def _random_value(rng: random.Random, depth: int):
    """A value nesting exactly `depth` levels: one spine that deep, with a few shallow siblings."""
    if depth == 0:
        return rng.choice(SCALARS)
    siblings = [_random_value(rng, rng.randint(0, min(depth - 1, 2))) for _ in range(rng.randint(0, 2))]
    children = [*siblings, _random_value(rng, depth - 1)]
    rng.shuffle(children)
    if rng.random() < 0.5:
        return children
    return {rng.choice(KEYS) + str(index): child for index, child in enumerate(children)}


def test_depth_check_agrees_with_the_parsed_depth_on_random_documents():
    """The C-speed pre-scan (quotes, escapes, brackets in strings) against a plain recursive count."""
    rng = random.Random(20261204)
    checked = 0
    for _ in range(3000):
        depth = rng.randint(0, 80)
        value = _random_value(rng, depth)
        assert depth_of(value) == depth
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=rng.choice([None, 1]))):
            raw = text.encode("utf-8")
            for limit in (depth - 1, depth, depth + 1):
                if limit >= 0:
                    assert nesting_depth_exceeds(raw, limit) == (depth > limit), (text[:200], limit)
                    checked += 1
    assert checked > 9000


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(literal):
    with pytest.raises(JSONInputError, match=f"{literal} is not a JSON value"):
        loads_strict(f'{{"x": [1, {literal}]}}')


def test_numbers_beyond_a_double_read_as_infinity_and_are_not_storable():
    value = loads_strict('{"a": 1e400, "b": [-1E+999], "c": 1e-400, "d": 123456789012345678901234567890}')
    assert value["a"] == float("inf") and value["b"] == [float("-inf")]
    assert value["c"] == 0.0 and value["d"] == 123456789012345678901234567890
    assert not storable(value) and not storable(value["b"]) and not storable({"x": {"y": [value["a"]]}})
    assert not storable(float("nan"))
    assert storable({"c": value["c"], "d": value["d"], "e": [1.5, "text", None, True]})


def test_other_bad_text_is_a_json_input_error_with_a_message():
    for text, message in [
        (b'{"a": "\xff"}', "not UTF-8"),
        ('{"a": 1,}', "Not valid JSON"),
        ("", "Not valid JSON"),
        ("[1] [2]", "Not valid JSON"),
        ("9" * 5000, "Not valid JSON"),  # past Python's 4300-digit limit for int()
    ]:
        with pytest.raises(JSONInputError, match=message) as caught:
            loads_strict(text)
        assert isinstance(caught.value, ValueError)
    assert loads_strict(b'{"a": "\xc3\xbc"}') == {"a": "ü"}
    assert loads_strict("[1, 2.5, null]") == [1, 2.5, None]


def test_storable_is_iterative():
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert storable(deep)


# --- REST bodies -------------------------------------------------------------------------------------


@pytest.fixture
def world(make_site, register, admin_api):
    make_site(SITE, description="kept", latitude=41.0, longitude=-87.0)
    instance = register(SITE, "host-a", "pod-a")
    return {"api": admin_api, "instance": instance}


BODY_ENDPOINTS = [
    ("POST", "/api/v1/sites"),
    ("PUT", f"/api/v1/sites/{SITE}"),
    ("PATCH", f"/api/v1/sites/{SITE}"),
    ("POST", "/api/v1/instances/register"),
    ("POST", "/api/v1/instances/{instance}/heartbeat"),
    ("PUT", f"/api/v1/sites/{SITE}/inventory"),
    ("POST", f"/api/v1/sites/{SITE}/inventory/devices"),
    ("POST", f"/api/v1/sites/{SITE}/discovery-seeds"),
    ("POST", f"/api/v1/sites/{SITE}/discovery-runs"),
]

DEEP_BODIES = {
    "[x5000": "[" * 5000 + "]" * 5000,
    "{x5000": '{"a":' * 5000 + "1" + "}" * 5000,
    "[x30000 open": "[" * 30000,
    "65 deep inside a valid object": json.dumps({"label": "X", "config": {}})[:-1]
    + ', "deep": '
    + nested(MAX_JSON_DEPTH)
    + "}",
}


@pytest.mark.parametrize(("method", "path"), BODY_ENDPOINTS, ids=[f"{m} {p}" for m, p in BODY_ENDPOINTS])
@pytest.mark.parametrize("name", list(DEEP_BODIES))
def test_deeply_nested_body_is_400_and_changes_nothing(world, method, path, name):
    before = db_snapshot()
    response = world["api"].generic(
        method, path.format(**world), DEEP_BODIES[name], content_type="application/json"
    )
    body = assert_error(response, 400, "parse_error")
    assert f"more than {MAX_JSON_DEPTH} levels deep" in body["detail"], body
    assert db_snapshot() == before


def splice(document: dict, literal: str) -> str:
    text = json.dumps(document)
    assert text.count(f'"{BIG}"') == 1
    return text.replace(f'"{BIG}"', literal)


OUT_OF_RANGE_CASES = [
    # (method, path, body with the placeholder, field that must be named)
    (
        "POST",
        "/api/v1/instances/{instance}/heartbeat",
        {"status": "healthy", "metrics": {"x": BIG}},
        "metrics",
    ),
    (
        "POST",
        "/api/v1/instances/{instance}/heartbeat",
        {"status": "healthy", "metrics": {"ifaces": [{"octets": BIG}]}},
        "metrics",
    ),
    ("POST", "/api/v1/instances/{instance}/heartbeat", {"status": "healthy", "uptime": BIG}, "uptime"),
    ("POST", "/api/v1/instances/register", {"siteId": SITE, "hostname": "h", "labels": {"a": BIG}}, "labels"),
    (
        "POST",
        "/api/v1/sites",
        {"id": "site-new", "label": "X", "location": {"latitude": BIG}},
        "location.latitude",
    ),
    ("PATCH", f"/api/v1/sites/{SITE}", {"config": {"collectionInterval": BIG}}, "config.collectionInterval"),
    (
        "POST",
        f"/api/v1/sites/{SITE}/discovery-seeds",
        {
            "name": "s",
            "targets": ["127.0.0.1"],
            "snmpConfig": {"version": 2, "readCommunity": "c"},
            "options": {"timeout": BIG},
        },
        "options.timeout",
    ),
]


@pytest.mark.parametrize("literal", ["1e400", "-1e400"])
@pytest.mark.parametrize(
    ("method", "path", "document", "field"),
    OUT_OF_RANGE_CASES,
    ids=[f"{c[0]} {c[1]} {c[3]}" for c in OUT_OF_RANGE_CASES],
)
def test_a_number_out_of_range_is_400_naming_the_field(world, method, path, document, field, literal):
    before = db_snapshot()
    response = world["api"].generic(
        method, path.format(**world), splice(document, literal), content_type="application/json"
    )
    body = assert_error(response, 400, "validation_error", {field})
    if field == "metrics":
        assert any("1.8e308" in message for message in body["fields"][field]), body
    assert db_snapshot() == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_in_heartbeat_metrics_is_a_parse_error(world, literal):
    before = db_snapshot()
    response = world["api"].generic(
        "POST",
        f"/api/v1/instances/{world['instance']}/heartbeat",
        splice({"status": "healthy", "metrics": {"x": BIG}}, literal),
        content_type="application/json",
    )
    body = assert_error(response, 400, "parse_error")
    assert literal in body["detail"]
    assert db_snapshot() == before


def test_heartbeat_with_finite_metrics_still_stores_them(world):
    response = world["api"].generic(
        "POST",
        f"/api/v1/instances/{world['instance']}/heartbeat",
        '{"status": "healthy", "metrics": {"rate": 1.5e300, "tiny": 1e-400, "n": 12345678901234567890}}',
        content_type="application/json",
    )
    assert response.status_code == 200, response.content[:400]
    metrics = Instance.objects.get(pk=world["instance"]).metrics
    # jsonb keeps numbers as numeric and writes 1.5e300 out in full: it comes back as that integer.
    assert float(metrics["rate"]) == 1.5e300
    assert metrics["tiny"] == 0 and metrics["n"] == 12345678901234567890


def _leaves(value, path=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _leaves(item, (*path, index))
    else:
        yield path


def _with(value, path, replacement):
    if not path:
        return replacement
    copy = dict(value) if isinstance(value, dict) else list(value)
    copy[path[0]] = _with(value[path[0]], path[1:], replacement)
    return copy


VALID_BODIES = [
    (
        "POST",
        "/api/v1/sites",
        {
            "id": "site-new",
            "label": "New",
            "location": {"latitude": 1.5, "longitude": 2.5},
            "config": {"minReplicas": 2, "collectionInterval": 30000},
        },
    ),
    (
        "PATCH",
        f"/api/v1/sites/{SITE}",
        {"label": "L", "location": {"latitude": 3.5}, "config": {"cacheMaxEntries": 5}},
    ),
    (
        "POST",
        "/api/v1/instances/register",
        {
            "siteId": SITE,
            "hostname": "h2",
            "podName": "p",
            "version": "1",
            "capabilities": ["snmpv3"],
            "labels": {"a": "b"},
        },
    ),
    (
        "POST",
        "/api/v1/instances/{instance}/heartbeat",
        {
            "status": "healthy",
            "uptime": 5,
            "inventoryVersion": 1,
            "configVersion": 1,
            "metrics": {"a": 1.5, "b": [2]},
        },
    ),
    (
        "POST",
        f"/api/v1/sites/{SITE}/discovery-seeds",
        {
            "name": "s1",
            "targets": ["127.0.0.0/30"],
            "snmpConfig": {"version": 2, "readCommunity": "c"},
            "schedule": "0 0 2 * * *",
            "enabled": True,
            "options": {"timeout": 1000, "retries": 1},
        },
    ),
    ("POST", f"/api/v1/sites/{SITE}/discovery-runs", {"seedIds": ["x"]}),
]


@pytest.mark.parametrize(
    ("method", "path", "document"), VALID_BODIES, ids=[f"{m} {p}" for m, p, _ in VALID_BODIES]
)
def test_1e400_in_any_field_of_any_body_is_never_a_500(world, method, path, document):
    """The sweep: every leaf of a valid body replaced by 1e400 in turn. A 4xx, or a 2xx that stored
    no infinity (an ignored field); never a 500."""
    paths = list(_leaves(document))
    assert paths
    for leaf in paths:
        text = splice(_with(document, leaf, BIG), "1e400")
        response = world["api"].generic(method, path.format(**world), text, content_type="application/json")
        assert response.status_code < 500, (leaf, response.status_code, response.content[:400])
        if response.status_code >= 400:
            assert_error(response, response.status_code)
        else:
            assert b"Infinity" not in response.content, (leaf, response.content[:400])
    assert not Site.objects.filter(pk="site-new").exists() or Site.objects.get(pk="site-new").latitude < 90


# --- dates --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-10T08:00:00-05:00", "2024-01-10T13:00:00+00:00"),
        ("2024-01-10T08:00:00Z", "2024-01-10T08:00:00+00:00"),
        ("9999-12-31T23:59:59Z", "9999-12-31T23:59:59+00:00"),
        ("0001-01-01T00:00:00+00:00", "0001-01-01T00:00:00+00:00"),
        ("9999-12-31T23:59:59-23:59", None),  # past year 9999 in UTC
        ("0001-01-01T00:00:00+23:59", None),  # before year 1 in UTC
        ("2024-01-10T08:00:00+24:00", None),
        ("2024-02-30T00:00:00Z", None),
        ("2024-01-10T08:00:00", None),  # no zone
        ("2024-01-10", None),
        ("x" * 100, None),
    ],
)
def test_parse_timestamp(text, expected):
    moment = parse_timestamp(text)
    assert (moment.isoformat() if moment else None) == expected


def test_audit_log_since_with_an_offset_filters_in_utc(world):
    latest = AuditLog.objects.order_by("-id").first()
    stamp = latest.created_at.astimezone(UTC).replace(microsecond=0)
    # The newest entry's UTC wall-clock time read at -05:00 is five hours later: nothing is that new.
    later = stamp.isoformat().replace("+00:00", "-05:00")
    response = world["api"].get("/api/v1/audit-log", {"since": later})
    assert response.status_code == 200 and response.json()["total"] == 0
    earlier = stamp.isoformat().replace("+00:00", "+05:00")
    response = world["api"].get("/api/v1/audit-log", {"since": earlier})
    assert response.status_code == 200 and response.json()["total"] >= 1


@pytest.mark.parametrize(
    "since", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2024-01-15T10:30:00+24:00"]
)
def test_audit_log_since_out_of_range_is_400(world, since):
    response = world["api"].get("/api/v1/audit-log", {"since": since})
    body = assert_error(response, 400, "validation_error", {"since"})
    assert "9999-12-31T23:59:59Z" in body["fields"]["since"][0]


def test_audit_log_since_with_an_offset_postgresql_refuses_is_read_in_utc(world):
    """PostgreSQL refuses offsets beyond ±15:59 (a DataError, a 500): the view converts to UTC first."""
    response = world["api"].get("/api/v1/audit-log", {"since": "2000-01-01T00:00:00+20:00"})
    assert response.status_code == 200, response.content[:300]
    assert response.json()["total"] == AuditLog.objects.count() > 0
