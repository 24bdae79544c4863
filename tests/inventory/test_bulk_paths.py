"""The fast paths of issue 12 §4 against what they replaced: COPY for a large change set's new rows
(PostgreSQL) against INSERT, tuple reads against the wire form rendered from model instances, the site's
counters moved by deltas against COUNT(*), and ANALYZE after a large change set."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core.crypto import decrypt_json
from core.timefmt import iso_z
from inventory import bulk, selectors, services
from inventory.models import Agent, Device
from sites.models import Site
from snmp.credentials import masked
from tests.inventory.test_inventory_api import (
    OTHER,
    SITE,
    changes_path,
    community_agent,
    device_path,
    get_inventory,
    ok,
    post_devices,
    put_inventory,
    seed,
    stats,
    usm_agent,
    version_of,
)


@pytest.fixture(autouse=True)
def _postgresql_only():
    """COPY and ANALYZE are PostgreSQL's: on another database these tests fail loudly, they never skip."""
    assert connection.vendor == "postgresql", "tests/inventory/test_bulk_paths.py needs PostgreSQL"


# Instants the epoch-second reads must render as iso_z does: before 1000 (isoformat pads the year), before
# 1970 with a fraction (floor, not truncation toward zero), the last second of 9999.
ODD_INSTANTS = {
    "0001-01-01T00:00:00Z": "0001-01-01T00:00:00Z",
    "0210-06-07T08:09:10.5Z": "0210-06-07T08:09:10Z",
    "1969-12-31T23:59:59.999Z": "1969-12-31T23:59:59Z",
    "9999-12-31T23:59:59.999999Z": "9999-12-31T23:59:59Z",
    "2026-12-05T10:00:00+02:00": "2026-12-05T08:00:00Z",
}


def varied_device(index: int) -> dict:
    """Devices unlike each other: 1 to 3 agents of v1, v2c and v3, no sysName for some, text that COPY must
    escape (tab, newline, backslash, non-ASCII), nested metadata or none, odd discovery instants."""
    address = f"127.1.{index // 200}.{index % 200 + 1}"
    agents = [community_agent(address, community=f"comm\\{index}\t")]
    if index % 3 >= 1:
        agents.append(usm_agent(f"::ffff:10.{index % 250}.0.{index % 200 + 1}", port=1161, isPrimary=True))
    if index % 3 == 2:
        agents.append(community_agent(address, community="v1-community", version=1, port=16100, timeout=1500))
    instants = list(ODD_INSTANTS)
    return {
        "sysName": None if index % 7 == 3 else f"dev-{index:03d}",
        "sysDescr": f"line one\nline two\t\\ tab — für {index}" if index % 2 else None,
        "sysContact": "noc@example.com",
        "sysLocation": "Chicago POP, Rack A1",
        "sysObjectId": "1.3.6.1.4.1.9.1.2066",
        "agents": agents,
        "interfaces": None if index % 5 == 0 else index,
        "metadata": {} if index % 2 else {"rack": index, "nested": {"b": [1, 2.5, None]}, "ü": "ß\\\n"},
        **({"discoveredAt": instants[index % len(instants)]} if index % 6 else {}),
    }


def wire_from_models(site_id: str, *, include_credentials: bool) -> list[dict]:
    """The wire form of the site's devices rendered from model instances, as the reads did before they
    read tuples."""
    rendered = []
    for row in Device.objects.filter(site_id=site_id).order_by("id"):
        agents = []
        for agent in row.agents.order_by("-is_primary", "address", "port"):
            secrets = decrypt_json(agent.credentials) if include_credentials else None
            wire = (
                {**agent.config, **secrets}
                if secrets is not None
                else masked(agent.config, agent.credential_keys)
            )
            agents.append(
                {
                    "id": agent.id,
                    "address": agent.address,
                    "port": agent.port,
                    **wire,
                    "isPrimary": agent.is_primary,
                }
            )
        rendered.append(
            {
                "id": row.id,
                "sysName": row.sys_name or None,
                "sysDescr": row.sys_descr or None,
                "sysContact": row.sys_contact or None,
                "sysLocation": row.sys_location or None,
                "sysObjectId": row.sys_object_id or None,
                "agents": agents,
                "interfaces": row.interfaces,
                "discoveredAt": iso_z(row.discovered_at),
                "lastSeen": iso_z(row.last_seen),
                "discoveredBy": row.discovered_by or None,
                "metadata": row.metadata,
            }
        )
    return rendered


def inserts_into(queries: CaptureQueriesContext, model) -> int:
    return sum(1 for query in queries if query["sql"].startswith(f'INSERT INTO "{model._meta.db_table}"'))


def stored(device_row: Device) -> dict:
    """A device's stored values that do not depend on where or when it was written."""
    return {
        "values": {
            name: getattr(device_row, name)
            for name in ("identity", "sys_name", "sys_descr", "sys_contact", "sys_location", "sys_object_id")
        }
        | {
            "interfaces": device_row.interfaces,
            "metadata": device_row.metadata,
            "fp": device_row.fingerprint,
        },
        "agents": [
            (
                a.address,
                a.port,
                a.version,
                a.config,
                decrypt_json(a.credentials),
                a.credential_keys,
                a.is_primary,
            )
            for a in device_row.agents.order_by("address", "port")
        ],
    }


@pytest.fixture
def sites(make_site) -> None:
    make_site(SITE)
    make_site(OTHER)


def test_a_large_change_set_goes_in_by_copy_and_reads_as_the_models_render_it(sites, admin_api, monkeypatch):
    monkeypatch.setattr(selectors, "CHUNK", 7)  # many chunks, and agents found by each chunk's id range
    devices = [varied_device(i) for i in range(130)]
    assert bulk.uses_copy(len(devices))
    with CaptureQueriesContext(connection) as queries:
        answer = put_inventory(admin_api, devices)
    assert answer["added"] == 130
    # COPY does not pass through Django's cursor: no INSERT of a device or an agent was run.
    assert (inserts_into(queries, Device), inserts_into(queries, Agent)) == (0, 0)
    assert Agent.objects.filter(device__site_id=SITE).count() == sum(len(d["agents"]) for d in devices)

    for include_credentials in (False, True):
        params = {"includeCredentials": "true"} if include_credentials else {}
        document = get_inventory(admin_api, **params)
        assert document["devices"] == wire_from_models(SITE, include_credentials=include_credentials)
    revealed = get_inventory(admin_api, includeCredentials="true")["devices"]
    # The secrets came back byte for byte through COPY and AES-GCM, tab and backslash included.
    assert {a["readCommunity"] for d in revealed for a in d["agents"] if a["version"] == 2} == {
        f"comm\\{i}\t" for i in range(130)
    }
    assert {d["discoveredAt"] for d in revealed} >= set(ODD_INSTANTS.values())

    # Written fingerprints are the parser's: the same document again changes nothing.
    again = put_inventory(admin_api, devices)
    assert (again["changed"], again["unchanged"]) == (False, 130)

    # changes?since reads the same way: the changed devices exactly as the full GET shows them.
    since = version_of()
    post_devices(admin_api, [{**varied_device(i), "sysLocation": "moved"} for i in (3, 64, 129)])
    body = ok(admin_api.get(changes_path(), {"since": since}), "GET", changes_path())
    full = {d["id"]: d for d in get_inventory(admin_api)["devices"]}
    assert len(body["devices"]) == 3
    assert body["devices"] == [full[d["id"]] for d in body["devices"]]
    assert [d["sysLocation"] for d in body["devices"]] == ["moved"] * 3

    one = body["devices"][1]
    assert ok(admin_api.get(device_path(one["id"])), "GET", device_path(one["id"])) == one


def test_a_small_change_set_takes_insert_and_stores_the_same_rows_as_copy(sites, admin_api):
    devices = [varied_device(i) for i in range(120)]
    put_inventory(admin_api, devices)  # COPY
    few = devices[:6]
    assert not bulk.uses_copy(len(few))
    with CaptureQueriesContext(connection) as queries:
        post_devices(admin_api, few, site=OTHER)
    assert (inserts_into(queries, Device), inserts_into(queries, Agent)) == (1, 1)
    written = Device.objects.filter(site_id=OTHER)
    assert written.count() == 6
    for by_insert in written:
        by_copy = Device.objects.get(site_id=SITE, identity=by_insert.identity)
        assert stored(by_copy) == stored(by_insert)


def counters(site_id: str = SITE) -> tuple[int, int]:
    site = Site.objects.get(pk=site_id)
    return site.device_count, site.agent_count


def counted(site_id: str = SITE) -> tuple[int, int]:
    return Device.objects.filter(site_id=site_id).count(), Agent.objects.filter(
        device__site_id=site_id
    ).count()


def test_the_counters_move_by_deltas_and_stay_exact(sites, admin_api):
    devices = [varied_device(i) for i in range(110)]
    steps = [
        ("merge, by COPY", lambda: put_inventory(admin_api, devices)),
        ("merge again, unchanged", lambda: put_inventory(admin_api, devices)),
        (
            "POST: 1 agent becomes 3, 3 become 1, one new",
            lambda: post_devices(
                admin_api,
                [
                    {**devices[0], "agents": varied_device(2)["agents"]},
                    {**devices[2], "agents": varied_device(0)["agents"]},
                    varied_device(500),
                ],
            ),
        ),
        (
            "addOnly",
            lambda: put_inventory(admin_api, [varied_device(i) for i in range(105, 125)], mode="addOnly"),
        ),
        ("replace with fewer", lambda: put_inventory(admin_api, devices[10:60], mode="replace")),
        ("DELETE one", lambda: admin_api.delete(device_path(Device.objects.filter(site_id=SITE).first().id))),
        ("seeds only", lambda: put_inventory(admin_api, [], discoverySeeds=[seed("S")])),
        ("replace with nothing", lambda: put_inventory(admin_api, [], mode="replace")),
    ]
    post_devices(admin_api, [varied_device(i) for i in range(4)], site=OTHER)
    other = counted(OTHER)
    for label, step in steps:
        step()
        assert counters() == counted(), label
        assert (stats(admin_api)["deviceCount"], stats(admin_api)["agentCount"]) == counted(), label
    assert counted() == (0, 0)
    assert counters(OTHER) == counted(OTHER) == other  # another site's counters are its own


def analyze_callbacks(callbacks) -> list:
    return [c for c in callbacks if c.__qualname__ == "analyze_after_commit.<locals>.analyze"]


def reltuples(model) -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [model._meta.db_table])
        return cursor.fetchone()[0]


def test_a_large_change_set_analyses_the_tables_after_commit(
    sites, admin_api, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(bulk, "ANALYZE_FROM_DEVICES", 100)
    with django_capture_on_commit_callbacks() as small:
        post_devices(admin_api, [varied_device(i) for i in range(99)])
    assert analyze_callbacks(small) == []
    with django_capture_on_commit_callbacks() as large:
        put_inventory(admin_api, [varied_device(i) for i in range(100, 200)])
    [analyze] = analyze_callbacks(large)
    assert (reltuples(Device), reltuples(Agent)) != (Device.objects.count(), Agent.objects.count())
    analyze()
    assert (reltuples(Device), reltuples(Agent)) == (Device.objects.count(), Agent.objects.count())


@pytest.mark.parametrize("count", [0, 1, 499, 500, 501, 1000, 1001, 2600])
@pytest.mark.parametrize("head", [{}, {"version": 7, "updatedAt": "2026-12-05T00:00:00Z"}])
def test_the_streamed_document_is_the_document(head, count):
    items = [{"id": f"dev_{i:04d}", "name": 'ä\n"', "n": [i, None, 1.5]} for i in range(count)]
    lists = {"devices": iter(items), "removedDeviceIds": ["a", "b"], "discoverySeeds": []}
    pieces = list(selectors.stream_json_document(head, lists))
    expected = {**head, "devices": items, "removedDeviceIds": ["a", "b"], "discoverySeeds": []}
    assert b"".join(pieces) == json.dumps(expected, separators=(",", ":")).encode()
    assert all(len(piece) >= selectors.PIECE for piece in pieces[:-1])


def test_the_written_rows_name_every_column():
    # COPY fills in nothing (no defaults, no auto_now): a new field must be added to the rows too.
    for model, fields in ((Device, services._DEVICE_FIELDS), (Agent, services._AGENT_FIELDS)):
        assert sorted(fields) == sorted(field.attname for field in model._meta.concrete_fields)
