"""Backup and restore (issue 13 §1) with real parts: PostgreSQL databases of their own (made from one
migrated template), a SQLite file, moto's S3 server on loopback, `manage.py` processes for every command,
and `manage.py serve` answering the API before the backup and after the restore, compared document by
document."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings

from tests.e2e.servers import ROOT, database_url, serve
from tests.e2e.test_websocket import bearer, ok
from tests.fleet.conftest import BUCKET

pytestmark = pytest.mark.django_db(transaction=True)  # committed rows: the processes read them

# Instance status follows heartbeat age: an hour's interval keeps it still while the test compares.
STILL = {"HEARTBEAT_INTERVAL_SECONDS": "3600", "HEARTBEAT_TIMEOUT_SECONDS": "7200"}
RESTORE_ACTIONS = {"fleet_restored", "fleet_backed_up"}  # what a restore and a backup add to the log
CHICAGO, DENVER, NYC = "chicago-pop-01", "denver-edge-02", "nyc-core-03"


# --- real services -------------------------------------------------------------------------------------


def _base_name() -> str:
    # pytest-django's database is test_<DATABASE_URL's name>: ours are named after the latter.
    return settings.DATABASES["default"]["NAME"].removeprefix("test_")


def _postgres(*statements: str) -> None:
    with psycopg.connect(database_url("postgres"), autocommit=True) as connection:
        for statement in statements:
            connection.execute(statement)


def manage_on(database: str, command: str, *args: str, env: dict | None = None, check: bool = True):
    """`manage.py command` in a process of its own on `database` (a postgres:// or sqlite:/// URL)."""
    process_env = {**os.environ, "DATABASE_URL": database, **STILL, **(env or {})}
    process_env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", command, *args],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert result.returncode == 0, f"{command}: {result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def migrated_template():
    """A migrated PostgreSQL database to copy empty databases from (CREATE DATABASE … TEMPLATE)."""
    name = f"{_base_name()}_template"
    _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    manage_on(database_url(name), "migrate", "--verbosity", "0")
    yield name
    _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database(migrated_template):
    """empty_database("restored") → the URL of a freshly migrated PostgreSQL database of its own."""
    made = []

    def make(suffix: str) -> str:
        name = f"{_base_name()}_{suffix}"
        _postgres(
            f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
            f'CREATE DATABASE "{name}" TEMPLATE "{migrated_template}"',
        )
        made.append(name)
        return database_url(name)

    yield make
    for name in made:
        _postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def serve_on(database: str, tmp_path: Path):
    return serve(env={"DATABASE_URL": database, "VAR_DIR": str(tmp_path), **STILL}, args=["--no-beat"])


# --- a fleet worth restoring ---------------------------------------------------------------------------


def last_line(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def device(name: str, address: str, version: int = 2, **fields) -> dict:
    agent = {"address": address, "version": version}
    if version == 3:
        agent |= {
            "securityName": f"{name}-user",
            "securityLevel": "authPriv",
            "authProtocol": "SHA256",
            "authPassphrase": f"{name}-auth-secret",
            "privProtocol": "AES128",
            "privPassphrase": f"{name}-priv-secret",
        }
    else:
        agent["readCommunity"] = f"{name}-ro"
    return {"sysName": name, "sysDescr": f"{name} running tests", "agents": [agent], **fields}


@dataclass
class Fleet:
    admin: str  # an admin token's plaintext
    enrolment: str  # chicago's instance (enrolment) token
    instances: dict[str, dict]  # hostname → register's answer (instanceId, instanceToken, …)


def populate(base: str, database: str) -> Fleet:
    """Three sites, inventories of several versions with v2c and v3 credentials, seeds with schedules, two
    registered instances (a leader) with heartbeats, a discovery run, tokens, a user: through the API and
    the commands, as an operator and instances make them."""
    admin = last_line(manage_on(database, "bootstrap")).rsplit(" ", 1)[-1]
    api = requests.Session()
    api.headers.update(bearer(admin))

    sites = [
        {
            "id": CHICAGO,
            "label": "Chicago POP",
            "description": "Primary aggregation point",
            "location": {
                "address": "350 E Cermak Rd, Chicago, IL",
                "latitude": 41.853742,
                "longitude": -87.618805,
            },
            "config": {"timezone": "America/Chicago", "minReplicas": 2},
        },
        {"id": DENVER, "label": "Denver edge", "config": {"discoveryCron": "0 30 4 * * *"}},
        {"id": NYC, "label": "NYC core", "config": {"discoveryEnabled": False}},
    ]
    for site in sites:
        ok(api.post(f"{base}/api/v1/sites", json=site, timeout=10), 201)
    ok(api.patch(f"{base}/api/v1/sites/{DENVER}", json={"config": {"collectionInterval": 60000}}, timeout=10))

    enrolment = last_line(
        manage_on(
            database, "create_token", "--name", "chicago enrolment", "--scope", "instance", "--site", CHICAGO
        )
    )
    manage_on(database, "create_token", "--name", "dashboards", "--scope", "read", "--expires-days", "30")
    chicago = f"{base}/api/v1/sites/{CHICAGO}"
    document = {
        "mode": "merge",
        "devices": [device("core-router-01", "127.0.1.1"), device("edge-switch-07", "127.0.1.7", version=3)],
        "discoverySeeds": [
            {
                "name": "chicago-mgmt",
                "targets": ["127.0.1.0/24", "127.0.2.1-20"],
                "snmpConfig": {"version": 2, "readCommunity": "chicago-ro"},
                "schedule": "0 0 3 * * *",
            }
        ],
    }
    ok(api.put(f"{chicago}/inventory", json=document, timeout=10))
    instances = {
        hostname: ok(
            requests.post(
                f"{base}/api/v1/instances/register",
                json={
                    "siteId": CHICAGO,
                    "hostname": hostname,
                    "podName": f"{hostname}-pod",
                    "version": "0.5.0",
                },
                headers=bearer(enrolment),
                timeout=10,
            )
        )
        for hostname in ("promsnmp-a", "promsnmp-b")
    }
    for number, answer in enumerate(instances.values()):
        beat = {"status": "healthy", "uptime": 60 + number, "inventoryVersion": 2, "configVersion": 1}
        beat["metrics"] = {"devicesMonitored": 2, "cpuPercent": 3.5 + number}
        url = f"{base}/api/v1/instances/{answer['instanceId']}/heartbeat"
        ok(requests.post(url, json=beat, headers=bearer(answer["instanceToken"]), timeout=10))
    leader = next(answer for answer in instances.values() if answer["isLeader"])
    found = {"source": "discovery", "instanceId": leader["instanceId"]}
    found["devices"] = [
        device("access-sw-12", "127.0.1.12", interfaces=48),
        device("core-router-01", "127.0.1.1"),
    ]
    headers = {**bearer(leader["instanceToken"]), "Idempotency-Key": "discovery-result-1"}
    ok(requests.post(f"{chicago}/inventory/devices", json=found, headers=headers, timeout=10))
    doomed = next(
        d
        for d in ok(api.get(f"{chicago}/inventory", timeout=10))["devices"]
        if d["sysName"] == "edge-switch-07"
    )
    assert api.delete(f"{chicago}/inventory/devices/{doomed['id']}", timeout=10).status_code == 204
    seed = ok(api.get(f"{chicago}/discovery-seeds", timeout=10))["discoverySeeds"][0]
    ok(api.post(f"{chicago}/discovery-seeds/{seed['id']}/run", timeout=10), 202)

    denver = f"{base}/api/v1/sites/{DENVER}"
    ok(
        api.put(
            f"{denver}/inventory",
            json={"devices": [device("den-1", "127.0.3.1"), device("den-2", "127.0.3.2")]},
        )
    )
    ok(api.put(f"{denver}/inventory", json={"mode": "replace", "devices": [device("den-2", "127.0.3.2")]}))
    seed = {
        "name": "denver-loopback",
        "targets": ["127.0.3.0/28"],
        "snmpConfig": {"version": 2, "readCommunity": "x"},
    }
    ok(api.post(f"{denver}/discovery-seeds", json={**seed, "schedule": "0 15 * * *"}, timeout=10), 201)
    return Fleet(admin=admin, enrolment=enrolment, instances=instances)


def reads(base: str, fleet: Fleet) -> dict[str, tuple[int, object]]:
    """Every API read of the fleet: path → (status, document)."""
    token = fleet.admin
    api = requests.Session()
    api.headers.update(bearer(token))
    found: dict[str, tuple[int, object]] = {}

    def get(path: str) -> object:
        response = api.get(f"{base}{path}", timeout=10)
        found[path] = (response.status_code, response.json())
        return found[path][1]

    for path in (
        "/api/v1/fleet/health",
        "/api/v1/fleet/metrics",
        "/api/v1/sd/instances",
        "/api/v1/sd/devices",
    ):
        get(path)
    get("/api/v1/audit-log?limit=1000")
    for site in get("/api/v1/sites?limit=100")["sites"]:
        prefix = f"/api/v1/sites/{site['id']}"
        get(prefix)
        get(f"{prefix}/config")
        get(f"/api/v1/sd/devices?site={site['id']}")
        inventory = get(f"{prefix}/inventory?includeCredentials=true")
        get(f"{prefix}/inventory")
        for since in range(inventory["version"] + 1):
            get(f"{prefix}/inventory/changes?since={since}&includeCredentials=true")
        for item in inventory["devices"]:
            get(f"{prefix}/inventory/devices/{item['id']}?includeCredentials=true")
        for seed in get(f"{prefix}/discovery-seeds?includeCredentials=true")["discoverySeeds"]:
            get(f"{prefix}/discovery-seeds/{seed['id']}?includeCredentials=true")
        for run in get(f"{prefix}/discovery-runs")["discoveryRuns"]:
            get(f"{prefix}/discovery-runs/{run['runId']}")
    for answer in fleet.instances.values():
        get(f"/api/v1/instances/{answer['instanceId']}")
    return found


def without_restore_entries(audit: dict) -> tuple[dict, list[str]]:
    """An audit-log page without the rows a restore and the backup after it wrote, and their actions."""
    kept = [entry for entry in audit["entries"] if entry["action"] not in RESTORE_ACTIONS]
    extra = [entry["action"] for entry in audit["entries"] if entry["action"] in RESTORE_ACTIONS]
    return {**audit, "entries": kept, "total": audit["total"] - len(extra)}, extra


def assert_same_reads(before: dict, after: dict) -> None:
    assert set(after) == set(before)
    for path, (status, document) in before.items():
        got_status, got = after[path]
        if path.startswith("/api/v1/audit-log"):
            got, extra = without_restore_entries(got)
            assert extra == ["fleet_backed_up", "fleet_restored"], extra  # newest first
        if path in ("/api/v1/fleet/health", "/api/v1/fleet/metrics"):  # the time of the read
            document, got = {**document, "timestamp": None}, {**got, "timestamp": None}
        assert (got_status, got) == (status, document), path


def archive_tables(data: bytes) -> dict[str, list[dict]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        return {
            member.name: [json.loads(line) for line in tar.extractfile(member)]
            for member in tar.getmembers()
            if member.name.startswith("tables/")
        }


def assert_same_tables(original: dict, again: dict) -> None:
    """The archive of the restored database is the original one, with the restore's own audit row."""
    assert set(again) == set(original)
    for name, rows in original.items():
        if name == "tables/core.auditlog.jsonl":
            assert [row["action"] for row in again[name][len(rows) :]] == ["fleet_restored"]
            assert again[name][: len(rows)] == rows
        else:
            assert again[name] == rows, name


def assert_instances_carry_on(base: str, fleet: Fleet) -> None:
    """Instances heartbeat with their old tokens, and re-register into the same instance."""
    for hostname, answer in fleet.instances.items():
        url = f"{base}/api/v1/instances/{answer['instanceId']}/heartbeat"
        beat = {"status": "healthy", "uptime": 600, "inventoryVersion": 4, "configVersion": 1}
        body = ok(requests.post(url, json=beat, headers=bearer(answer["instanceToken"]), timeout=10))
        assert body["leaderTerm"] == answer["leaderTerm"], body
        again = ok(
            requests.post(
                f"{base}/api/v1/instances/register",
                json={
                    "siteId": CHICAGO,
                    "hostname": hostname,
                    "podName": f"{hostname}-pod",
                    "version": "0.5.1",
                },
                headers=bearer(fleet.enrolment),
                timeout=10,
            )
        )
        assert (again["instanceId"], again["isLeader"]) == (answer["instanceId"], answer["isLeader"])


# --- the tests -----------------------------------------------------------------------------------------


def test_a_fleet_backed_up_to_s3_restores_into_an_empty_database_answering_every_read_as_before(
    s3, empty_database, tmp_path
):
    source = database_url()
    with serve_on(source, tmp_path) as (base, _):
        fleet = populate(base, source)
        before = reads(base, fleet)
    assert len(before) > 40  # every site, device, seed, run, change feed and instance was read

    url = last_line(manage_on(source, "backup_fleet", "--to", s3.url("prod"), env=s3.env))
    name = url.rsplit("/", 1)[-1]
    assert url == s3.url(f"prod/{name}") and s3.names("prod") == [name]
    archive = s3.client.get_object(Bucket=BUCKET, Key=f"prod/{name}")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert (manifest["formatVersion"], manifest["keyIds"]) == (1, ["t1"])
    rows = {table["name"]: table["rows"] for table in manifest["tables"]}
    assert (
        rows["sites.site"] == 3 and rows["instances.instance"] == 2 and rows["inventory.inventorychange"] == 6
    )
    assert rows["auth.user"] == 1 and rows["core.apitoken"] == 5 and rows["inventory.idempotencykey"] == 1
    assert b"chicago-ro" not in archive and b"edge-switch-07-auth-secret" not in archive  # ciphertexts only

    restored = empty_database("restored")
    result = manage_on(restored, "restore_fleet", url, env=s3.env)
    assert "sites.site: 3" in result.stdout
    again = last_line(manage_on(restored, "backup_fleet", "--to", str(tmp_path / "again")))
    assert_same_tables(archive_tables(archive), archive_tables(Path(again).read_bytes()))

    with serve_on(restored, tmp_path) as (base, _):
        assert_same_reads(before, reads(base, fleet))
        assert_instances_carry_on(base, fleet)

    # Restoring again over it is refused, and changes nothing.
    refused = manage_on(restored, "restore_fleet", url, env=s3.env, check=False)
    assert refused.returncode == 1
    assert "The database is not empty (1 auth.user, 3 sites.site," in refused.stderr
    with psycopg.connect(restored.replace("postgres://", "postgresql://")) as connection:
        restores = connection.execute(
            "SELECT count(*) FROM audit_log WHERE action = 'fleet_restored'"
        ).fetchone()
    assert restores == (1,)


def test_an_archive_written_on_sqlite_restores_into_postgresql_with_the_same_documents(
    empty_database, tmp_path
):
    """The way from the embedded default (`make run`, SQLite) to production (PostgreSQL)."""
    sqlite = f"sqlite:///{tmp_path / 'manager.sqlite3'}"
    manage_on(sqlite, "migrate", "--verbosity", "0", env={"VAR_DIR": str(tmp_path)})
    with serve_on(sqlite, tmp_path) as (base, _):
        fleet = populate(base, sqlite)
        before = reads(base, fleet)
    backups = tmp_path / "backups"
    url = last_line(
        manage_on(sqlite, "backup_fleet", "--to", f"file://{backups}", env={"VAR_DIR": str(tmp_path)})
    )
    assert url.startswith(f"file://{backups}/fleet-backup-")

    production = empty_database("from_sqlite")
    manage_on(production, "restore_fleet", url)
    again = last_line(manage_on(production, "backup_fleet", "--to", str(tmp_path / "again")))
    archive = (backups / url.rsplit("/", 1)[-1]).read_bytes()
    assert_same_tables(archive_tables(archive), archive_tables(Path(again).read_bytes()))

    with serve_on(production, tmp_path) as (base, _):
        assert_same_reads(before, reads(base, fleet))
        assert_instances_carry_on(base, fleet)
