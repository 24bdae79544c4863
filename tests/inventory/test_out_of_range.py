"""Numbers and dates out of range in devices, and import_inventory on an endless file (issue 8, §6).

A number beyond a double (1e400) is valid JSON that PostgreSQL's jsonb cannot hold; a timestamp whose
offset pushes it past year 9999 (or before year 1) in UTC cannot be stored either. In POST
inventory/devices such a device fails alone (counted in `failed`, with its error), the others are
stored; PUT inventory (all or nothing) and import_inventory refuse the whole document, naming the field.
Never a 500. import_inventory reads at most MAX_INVENTORY_BODY_BYTES from a file.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from core.models import AuditLog
from inventory.models import Device, InventoryChange
from tests.e2e.servers import database_url
from tests.inventory.test_inventory_api import (
    SITE,
    device,
    devices_path,
    inventory_path,
    ok,
    post_devices,
    version_of,
)

REPO = Path(__file__).resolve().parents[2]
CHILD_MEMORY = 2 * 1024**3  # address space for manage.py: Django needs well under 1 GB; /dev/zero is endless
BIG = "__OUT_OF_RANGE__"  # placeholder: json.dumps cannot write 1e400, so it is spliced into the text


def raw_body(document: dict, literal: str) -> str:
    text = json.dumps(document)
    assert text.count(f'"{BIG}"') == 1
    return text.replace(f'"{BIG}"', literal)


def post_raw(api, path: str, text: str, method: str = "POST"):
    return api.generic(method, path, text, content_type="application/json")


@pytest.fixture
def site(make_site) -> str:
    return make_site(SITE)


# Each: (name, a device with the placeholder somewhere, the literal, the field path that must be named)
BAD_DEVICES = [
    ("metadata 1e400", device("bad", "127.0.9.2", metadata={"speed": BIG}), "1e400", "metadata"),
    ("metadata -1e400", device("bad", "127.0.9.2", metadata={"speed": BIG}), "-1e400", "metadata"),
    (
        "metadata 1e400 nested in a list",
        device("bad", "127.0.9.2", metadata={"ports": [{"speed": BIG}]}),
        "1E+999",
        "metadata",
    ),
    ("interfaces 1e400", device("bad", "127.0.9.2", interfaces=BIG), "1e400", "interfaces"),
    (
        "agent port 1e400",
        {**device("bad", "127.0.9.2"), "agents": [{**device("x")["agents"][0], "port": BIG}]},
        "1e400",
        "agents[0].port",
    ),
    (
        "discoveredAt past year 9999 in UTC",
        device("bad", "127.0.9.2", discoveredAt=BIG),
        '"9999-12-31T23:59:59-23:59"',
        "discoveredAt",
    ),
    (
        "discoveredAt before year 1 in UTC",
        device("bad", "127.0.9.2", discoveredAt=BIG),
        '"0001-01-01T00:00:00+23:59"',
        "discoveredAt",
    ),
    (
        "discoveredAt with an offset of 24 hours",
        device("bad", "127.0.9.2", discoveredAt=BIG),
        '"2024-01-10T08:00:00+24:00"',
        "discoveredAt",
    ),
]


@pytest.mark.parametrize(("name", "bad", "literal", "field"), BAD_DEVICES, ids=[c[0] for c in BAD_DEVICES])
def test_post_devices_a_device_out_of_range_fails_alone(site, admin_api, name, bad, literal, field):
    version = version_of()
    document = {"devices": [device("ok-1", "127.0.9.1"), bad, device("ok-2", "127.0.9.3")]}
    response = post_raw(admin_api, devices_path(), raw_body(document, literal))
    assert response.status_code == 200, (response.status_code, response.content[:800])
    body = response.json()
    assert (body["added"], body["failed"], body["newVersion"]) == (2, 1, version + 1), body
    failed = body["devices"][1]
    assert failed["status"] == "failed" and failed["id"] is None and failed["sysName"] == "bad"
    assert set(failed["error"]) == {f"devices[1].{field}"}, failed
    assert all(isinstance(m, str) and m for ms in failed["error"].values() for m in ms)
    assert set(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == {"ok-1", "ok-2"}


@pytest.mark.parametrize(("name", "bad", "literal", "field"), BAD_DEVICES, ids=[c[0] for c in BAD_DEVICES])
def test_put_inventory_with_a_device_out_of_range_is_400_and_changes_nothing(
    site, admin_api, name, bad, literal, field
):
    post_devices(admin_api, [device("kept", "127.0.9.9")])
    version, changes, audits = version_of(), InventoryChange.objects.count(), AuditLog.objects.count()
    document = {"mode": "replace", "devices": [device("ok-1", "127.0.9.1"), bad]}
    response = post_raw(admin_api, inventory_path(), raw_body(document, literal), method="PUT")
    assert response.status_code == 400, (response.status_code, response.content[:800])
    body = response.json()
    assert body["error"] == "validation_error"
    assert set(body["fields"]) == {f"devices[1].{field}"}, body
    assert version_of() == version and InventoryChange.objects.count() == changes
    assert AuditLog.objects.count() == audits
    assert list(Device.objects.filter(site_id=SITE).values_list("sys_name", flat=True)) == ["kept"]


def test_a_nan_literal_in_a_device_is_a_parse_error_for_the_whole_body(site, admin_api):
    """NaN and Infinity are not JSON at all (RFC 8259): the body cannot be read, so nothing is stored."""
    for literal in ("NaN", "Infinity", "-Infinity"):
        document = {"devices": [device("ok-1", "127.0.9.1"), device("bad", "127.0.9.2", metadata={"x": BIG})]}
        response = post_raw(admin_api, devices_path(), raw_body(document, literal))
        assert response.status_code == 400, (literal, response.status_code, response.content[:400])
        assert response.json()["error"] == "parse_error"
        assert literal in response.json()["detail"]
    assert Device.objects.count() == 0


def test_discovered_at_with_an_offset_is_stored_in_utc(site, admin_api):
    body = post_devices(
        admin_api,
        [
            device("east", "127.0.9.1", discoveredAt="2024-01-10T08:00:00-05:00"),
            device("late", "127.0.9.2", discoveredAt="9999-12-31T23:59:59Z"),
            device("early", "127.0.9.3", discoveredAt="0001-01-01T00:00:00Z"),
            # PostgreSQL refuses offsets beyond ±15:59 (a DataError, a 500): converted to UTC first.
            device("far-east", "127.0.9.4", discoveredAt="2024-01-10T08:00:00+20:00"),
        ],
    )
    assert (body["added"], body["failed"]) == (4, 0)
    stored = dict(Device.objects.values_list("sys_name", "discovered_at"))
    assert stored["east"] == datetime(2024, 1, 10, 13, 0, tzinfo=UTC)
    assert stored["late"] == datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
    assert stored["early"] == datetime(1, 1, 1, tzinfo=UTC)
    assert stored["far-east"] == datetime(2024, 1, 9, 12, 0, tzinfo=UTC)
    inventory = ok(admin_api.get(inventory_path()), "GET", inventory_path())
    found = {d["sysName"]: d["discoveredAt"] for d in inventory["devices"]}
    assert found["east"] == "2024-01-10T13:00:00Z"
    assert found["late"] == "9999-12-31T23:59:59Z"


# --- import_inventory --------------------------------------------------------------------------------


def run_import(*args: str) -> str:
    out = StringIO()
    call_command("import_inventory", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_import_inventory_file_with_a_device_out_of_range_names_the_field(site, tmp_path):
    version = version_of()
    for literal, field in (("1e400", "devices[1].metadata"), ('"9999-12-31T23:59:59-23:59"', None)):
        bad = device("bad", "127.0.9.2", metadata={"x": BIG})
        if field is None:
            bad = device("bad", "127.0.9.2", discoveredAt=BIG)
            field = "devices[1].discoveredAt"
        path = tmp_path / "inventory.json"
        path.write_text(raw_body({"devices": [device("ok-1", "127.0.9.1"), bad]}, literal))
        with pytest.raises(CommandError, match="nothing imported") as caught:
            run_import(SITE, str(path))
        assert field in str(caught.value)
    assert Device.objects.count() == 0 and version_of() == version


@pytest.mark.parametrize(
    "text",
    ['{"devices": ' + "[" * 5000 + "]" * 5000 + "}", '{"devices": [' + '{"a":' * 5000, '{"devices": [NaN]}'],
    ids=["5000 [", "5000 { unclosed", "NaN"],
)
def test_import_inventory_of_a_file_nested_too_deep_or_with_nan_is_a_clear_error(site, tmp_path, text):
    """json.loads in the PromSNMP reader raised RecursionError: a traceback instead of a CommandError."""
    path = tmp_path / "inventory.json"
    path.write_text(text)
    with pytest.raises(CommandError, match="not valid JSON") as caught:
        run_import(SITE, str(path))
    assert "levels deep" in str(caught.value) or "NaN is not a JSON value" in str(caught.value)
    assert Device.objects.count() == 0


def test_import_inventory_refuses_a_file_over_the_limit_before_reading_it_all(site, tmp_path, settings):
    """A sparse file of 1 GB (no disk used): refused by the limit, not read into memory."""
    settings.MAX_INVENTORY_BODY_BYTES = 1024 * 1024
    path = tmp_path / "huge.json"
    with path.open("wb") as handle:
        handle.truncate(1024 * 1024 * 1024)
    started = time.monotonic()
    with pytest.raises(CommandError) as caught:
        run_import(SITE, str(path))
    assert time.monotonic() - started < 10
    message = str(caught.value)
    assert "MAX_INVENTORY_BODY_BYTES" in message and "1048576" in message, message
    assert Device.objects.count() == 0


def test_import_inventory_just_under_the_limit_is_read(site, tmp_path, settings):
    text = json.dumps({"devices": [device("ok-1", "127.0.9.1")]})
    settings.MAX_INVENTORY_BODY_BYTES = len(text.encode())
    path = tmp_path / "inventory.json"
    path.write_text(text)
    assert "1 added" in run_import(SITE, str(path))


def test_import_inventory_of_dev_zero_stops_at_the_limit(live_database_env, site):
    """The chaos run: `manage.py import_inventory SITE /dev/zero` grew to 7 GB in 20 s. Now it stops at
    the limit with a clear error, in a real process whose memory we measure."""
    limit = 4 * 1024 * 1024
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "import_inventory", SITE, "/dev/zero"],
        cwd=REPO,
        env={**live_database_env, "MAX_INVENTORY_BODY_BYTES": str(limit)},
        capture_output=True,
        text=True,
        timeout=60,
        # A regression must fail this test with a MemoryError, not take the shared machine's memory.
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY, CHILD_MEMORY)),
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 1, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    assert "MAX_INVENTORY_BODY_BYTES" in result.stderr and str(limit) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert elapsed < 30
    assert Device.objects.count() == 0


@pytest.fixture
def live_database_env(transactional_db) -> dict[str, str]:
    """The environment for a manage.py child process that uses the test database (committed rows)."""
    return {**os.environ, "DATABASE_URL": database_url()}
