"""/metrics in one process (the embedded default's shape: no PROMETHEUS_MULTIPROC_DIR), the database pool
gauges, the bookkeeping for dead processes, the alert rules' inputs against the series really exported,
and the request id that an event carries. The multiprocess shape (gunicorn, run_prod) is
tests/e2e/test_metrics_multiprocess.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
import yaml
from asgiref.sync import async_to_sync
from django.db import connections
from django.utils import timezone
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from core.metrics import SharedFilesCollector, mark_dead_processes, multiprocess_dir
from core.models import OutboxMessage
from discovery.models import DiscoveryRun
from discovery.runs import runs_expire
from instances.services import instance_heartbeat
from sites.models import Site
from sites.services import site_update
from tests.conftest import TEST_ACTOR
from tests.deploy.test_alert_rules import RULE_TESTS

POOL = ("active", "idle", "max")


def families(client) -> dict:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(response.content.decode())}


def pool_values(client) -> dict[str, float]:
    found = families(client)
    return {
        kind: found[f"promsnmp_manager_db_pool_connections_{kind}"].samples[0].value
        for kind in POOL
        if f"promsnmp_manager_db_pool_connections_{kind}" in found
    }


def test_metrics_is_the_process_registry_with_the_database_series_once(client, make_site, register):
    assert multiprocess_dir() is None  # the suite's own process: the embedded default's shape
    make_site("site")
    register("site", "a")
    client.get("/health/live")
    found = families(client)
    assert "process_cpu_seconds" in found and "python_gc_objects_collected" in found  # one process: its own
    assert found["promsnmp_manager_http_requests"].type == "counter"
    leader = found["promsnmp_manager_instance_is_leader"]
    assert len(leader.samples) == 1 and leader.samples[0].labels["site"] == "site"


def test_pool_gauges_follow_the_pool(client, db, settings):
    pool = settings.DATABASES["default"]["OPTIONS"].get("pool")
    assert pool, "the suite runs on PostgreSQL with Django's psycopg pool (DB_POOL on)"
    client.get("/health/ready")  # takes a connection and gives it back: a sample
    before = pool_values(client)
    assert set(before) == set(POOL)
    assert before["max"] == pool["max_size"]
    assert before["active"] >= 1  # this test's connection (pytest-django holds it in a transaction)
    assert before["active"] + before["idle"] <= before["max"]

    # Another thread takes a second pooled connection: counted while held, given back after.
    held, release = threading.Event(), threading.Event()

    def hold():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            held.set()
            release.wait(10)
        connections["default"].close()

    worker = threading.Thread(target=hold)
    worker.start()
    assert held.wait(10)
    assert pool_values(client)["active"] == before["active"] + 1
    release.set()
    worker.join(10)
    client.get("/health/live")  # the next request samples the pool again
    assert pool_values(client)["active"] == before["active"]


def test_live_gauges_of_dead_processes_go_and_their_counters_stay(tmp_path):
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead, alive = int(gone.stdout), os.getpid()
    for name in (f"gauge_livesum_{dead}.db", f"counter_{dead}.db", f"histogram_{dead}.db"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / f"gauge_livesum_{alive}.db").write_bytes(b"")
    (tmp_path / f"gauge_all_{dead}.db").write_bytes(b"")  # not a live mode: kept with its pid label

    assert mark_dead_processes(str(tmp_path)) == [dead]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [f"counter_{dead}.db", f"gauge_all_{dead}.db", f"gauge_livesum_{alive}.db", f"histogram_{dead}.db"]
    )


def test_a_file_being_created_does_not_fail_the_scrape(tmp_path):
    """A process that has just opened its file (empty until sized) while a scrape reads the directory."""
    written = MmapedDict(str(tmp_path / "counter_101.db"))
    key = mmap_key("promsnmp_x", "promsnmp_x_total", ["endpoint"], ["/a"], "X.")
    written.write_value(key, 3.0, 0.0)
    written.close()
    (tmp_path / "counter_102.db").write_bytes(b"")
    with pytest.raises(Exception, match="unpack"):  # what prometheus_client's own collector does
        list(MultiProcessCollector(None, path=str(tmp_path)).collect())
    [metric] = SharedFilesCollector(None, path=str(tmp_path)).collect()
    assert [(s.name, s.labels, s.value) for s in metric.samples] == [
        ("promsnmp_x_total", {"endpoint": "/a"}, 3.0)
    ]


def test_the_alert_rules_unit_tests_use_the_labels_the_series_have(client, make_site, register, settings):
    """deploy/prometheus/alerts_test.yaml feeds the rules series shaped by hand: each must have the label
    names of the real series on /metrics (a rule on a label that is not exported would never fire)."""
    settings.DISCOVERY_PENDING_TIMEOUT_SECONDS = 600
    make_site("site")
    instance = register("site", "a")
    instance_heartbeat(actor=TEST_ACTOR, instance_id=instance, status="running", inventory_version=0)
    Site.objects.filter(pk="site").update(last_discovery_at=timezone.now())
    DiscoveryRun.objects.create(id="run_old", site_id="site", triggered_by="manual")
    DiscoveryRun.objects.filter(pk="run_old").update(created_at=timezone.now() - timedelta(hours=1))
    runs_expire()
    client.get("/health/live")

    exported: dict[str, set[str]] = {}
    for family in families(client).values():
        for sample in family.samples:
            exported.setdefault(sample.name, set()).update(sample.labels)
    tested = [
        series["series"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for series in test["input_series"]
    ]
    assert tested
    for series in tested:
        name, _, labels = series.partition("{")
        names = {pair.split("=", 1)[0] for pair in labels.rstrip("}").split(",") if pair}
        assert name in exported, f"{name} (alerts_test.yaml) is not on /metrics"
        assert names == exported[name], f"{series}: /metrics has {sorted(exported[name])}"


@pytest.mark.django_db(transaction=True)
def test_an_event_caused_by_a_request_carries_its_id(client_for, make_site, layer, listen):
    make_site("site")
    channel = listen("site.site")
    api = client_for("admin")
    response = api.patch(
        "/api/v1/sites/site",
        {"config": {"discoveryCron": "0 0 3 * * *"}},
        format="json",
        HTTP_X_REQUEST_ID="req-evt-1",
    )
    assert response.status_code == 200, response.content
    message = async_to_sync(layer.receive)(channel)
    assert message["event"]["type"] == "config_updated"
    assert message["event"]["requestId"] == "req-evt-1"
    assert OutboxMessage.objects.get(group="site.site").body["requestId"] == "req-evt-1"

    # Without a request (a service called from a command, beat), no requestId.
    site_update(actor=TEST_ACTOR, site_id="site", values={"min_replicas": 2}, partial=True)
    message = async_to_sync(layer.receive)(channel)
    assert message["event"]["type"] == "config_updated" and "requestId" not in message["event"]
