"""Backup and restore in the test process: what a restore refuses (and that it then changes nothing),
retention at an S3 destination (moto's server), the BACKUP_CRON beat entry and its task, and the snapshot
that makes an archive consistent."""

from __future__ import annotations

import base64
import io
import json
import tarfile
from io import StringIO
from pathlib import Path

import psycopg
import pytest
from django.core.management import CommandError, call_command
from django_celery_beat.models import PeriodicTask

from core.models import ApiToken, AuditLog
from fleet.backup import BACKUP_TASK, BACKUP_TASK_NAME, consistent_snapshot
from fleet.tasks import scheduled_backup
from inventory.models import Agent
from sites.models import Site
from tests.e2e.servers import database_url
from tests.fleet.conftest import BUCKET

KEY_T2 = "t2:" + base64.b64encode(b"2" * 32).decode()


def backup(destination: Path | str, *args: str) -> str:
    out = StringIO()
    call_command("backup_fleet", "--to", str(destination), *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()[-1]


def restore(archive: str, *args: str) -> str:
    out = StringIO()
    call_command("restore_fleet", archive, *args, stdout=out)
    return out.getvalue()


def rewritten(archive: str, change) -> str:
    """A copy of the archive with `change(name, bytes) → bytes` applied to each member."""
    with tarfile.open(archive, mode="r:gz") as tar:
        members = [(member, tar.extractfile(member).read()) for member in tar.getmembers()]
    path = Path(archive).with_name("changed.tar.gz")
    with tarfile.open(path, mode="w:gz") as tar:
        for member, data in members:
            data = change(member.name, data)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return str(path)


def fleet_state() -> tuple:
    return (
        list(Site.objects.order_by("pk").values_list("pk", "inventory_version")),
        list(Agent.objects.order_by("pk").values_list("pk", "credentials")),
        ApiToken.objects.count(),
        AuditLog.objects.count(),
    )


@pytest.fixture
def archive(db, make_site, make_token, admin_api, tmp_path) -> str:
    """A small fleet's archive (a site, a device with a v2c credential, tokens); the fleet stays."""
    make_site("chicago-pop-01")
    make_token(["instance"], site="chicago-pop-01")
    device = {"sysName": "r1", "agents": [{"address": "127.0.0.5", "version": 2, "readCommunity": "secret"}]}
    response = admin_api.put("/api/v1/sites/chicago-pop-01/inventory", {"devices": [device]}, format="json")
    assert response.status_code == 200, response.content
    return backup(tmp_path / "backups")


def test_an_archive_of_another_format_version_is_refused_and_nothing_changes(archive):
    def version_2(name: str, data: bytes) -> bytes:
        if name != "manifest.json":
            return data
        return json.dumps({**json.loads(data), "formatVersion": 2}).encode()

    before = fleet_state()
    with pytest.raises(CommandError, match=r"format version 2; this manager reads version 1"):
        restore(rewritten(archive, version_2), "--replace-existing")
    assert fleet_state() == before


def test_an_archive_whose_key_is_not_in_the_ring_is_refused_naming_it(archive, settings):
    settings.FIELD_ENCRYPTION_KEYS = KEY_T2  # t1, which encrypted the archive's credentials, is gone
    before = fleet_state()
    with pytest.raises(CommandError, match=r"key ids \['t1'\], which FIELD_ENCRYPTION_KEYS does not hold"):
        restore(archive, "--replace-existing")
    assert fleet_state() == before


def test_a_damaged_archive_rolls_the_whole_restore_back(archive):
    def tampered(name: str, data: bytes) -> bytes:
        return (
            data.replace(b"chicago-pop-01", b"chicago-pop-99") if name == "tables/sites.site.jsonl" else data
        )

    before = fleet_state()
    # replace empties the tables first: the failure afterwards must bring every row back.
    with pytest.raises(CommandError, match=r"tables/sites.site.jsonl does not match its checksum"):
        restore(rewritten(archive, tampered), "--replace-existing")
    assert fleet_state() == before


def test_a_non_empty_database_is_refused_unless_told_to_replace(archive):
    before = fleet_state()
    with pytest.raises(
        CommandError, match=r"The database is not empty \(1 sites.site, 2 core.apitoken, 1 inventory.device,"
    ):
        restore(archive)
    assert fleet_state() == before
    restore(archive, "--replace-existing")
    assert fleet_state()[:3] == before[:3]  # the same ids, versions and ciphertexts
    assert AuditLog.objects.filter(action="fleet_restored").count() == 1


def test_retention_keeps_the_newest_archives_and_leaves_other_files_alone(
    db, make_site, s3, settings, monkeypatch
):
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    settings.AWS_S3_ENDPOINT_URL = s3.endpoint
    make_site("chicago-pop-01")
    s3.client.put_object(Bucket=BUCKET, Key="retention/README.txt", Body=b"not an archive")
    urls = [backup(s3.url("retention"), "--keep", "2") for _ in range(4)]
    kept = [url.rsplit("/", 1)[-1] for url in urls[-2:]]
    assert s3.names("retention") == sorted([*kept, "README.txt"])
    audit = AuditLog.objects.filter(action="fleet_backed_up").order_by("id").last()
    assert audit.details["deleted"] == [urls[1].rsplit("/", 1)[-1]]


def test_backup_cron_makes_a_beat_entry_whose_task_writes_an_archive(db, settings, tmp_path):
    settings.BACKUP_CRON = "0 30 3 * * *"
    settings.BACKUP_URL = str(tmp_path / "scheduled")
    settings.BACKUP_RETENTION = 1
    out = StringIO()
    call_command("sync_schedules", stdout=out)
    assert f"{BACKUP_TASK_NAME}: 0 30 3 * * * (UTC) to {settings.BACKUP_URL}" in out.getvalue()
    entry = PeriodicTask.objects.select_related("crontab").get(name=BACKUP_TASK_NAME)
    assert (entry.task, entry.enabled, entry.crontab.minute, entry.crontab.hour) == (
        BACKUP_TASK,
        True,
        "30",
        "3",
    )
    assert str(entry.crontab.timezone) == "UTC"

    first, second = scheduled_backup(), scheduled_backup()
    assert [path.name for path in Path(settings.BACKUP_URL).iterdir()] == [second.rsplit("/", 1)[-1]]
    assert first != second

    settings.BACKUP_CRON = ""
    call_command("sync_schedules", stdout=StringIO())
    assert not PeriodicTask.objects.filter(name=BACKUP_TASK_NAME).exists()


def test_a_bad_backup_cron_stops_sync_schedules_with_its_reason(db, settings, tmp_path):
    settings.BACKUP_CRON, settings.BACKUP_URL = "0 99 * * *", str(tmp_path)
    with pytest.raises(CommandError, match=r"BACKUP_CRON '0 99 \* \* \*'"):
        call_command("sync_schedules", stdout=StringIO())


@pytest.mark.django_db(transaction=True)
def test_the_snapshot_does_not_see_what_commits_while_it_reads(make_site):
    make_site("chicago-pop-01")
    with consistent_snapshot():
        assert Site.objects.count() == 1
        with psycopg.connect(
            database_url().replace("postgres://", "postgresql://"), autocommit=True
        ) as other:
            other.execute(
                "INSERT INTO sites (id, label, description, address, timezone, min_replicas, "
                "discovery_enabled, discovery_cron, collection_interval, cache_expiration, "
                "cache_max_entries, require_instance_tokens, config_version, leader_term, event_seq, "
                "inventory_version, device_count, agent_count, seed_count, created_at, updated_at) "
                "VALUES ('late', 'Late', '', '', 'UTC', 1, true, '0 0 2 * * *', 30000, 300000, 10000, "
                "false, 1, 0, 0, 1, 0, 0, 0, now(), now())"
            )
        assert Site.objects.count() == 1  # the archive is of one moment
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SHOW transaction_isolation")
            assert cursor.fetchone() == ("repeatable read",)
            cursor.execute("SHOW transaction_read_only")
            assert cursor.fetchone() == ("on",)
    assert Site.objects.count() == 2
