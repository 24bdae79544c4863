"""A real `celery worker` and `celery beat` (the commands run_prod and the chart run) with LOG_FORMAT=json:
every line they write is one JSON object, and a task that a request enqueued carries the request's id
into the worker: its log lines, its audit rows and the events it sends (config/celery.py).

No request of the API enqueues a task yet, so the request here is RequestIdMiddleware around a view
that publishes the leader health check to the worker's queue (Redis) — the path any such view takes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from django.http import HttpResponse
from django.test import RequestFactory
from django.utils import timezone

from config.run_prod import child_commands
from core.middleware import RequestIdMiddleware
from core.models import AuditLog, OutboxMessage
from instances.models import Instance
from instances.services import instance_register
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import ROOT, database_url, stop
from tests.e2e.test_run_prod import own_name, redis_url  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)

SITE = "celery-logs"
REQUEST_ID = "req-celery-7f3a"


def start(name: str, log: Path, **env: str) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            child_commands()[name],
            cwd=ROOT,
            env={
                **os.environ,
                "DATABASE_URL": database_url(),
                "LOG_FORMAT": "json",
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def json_lines(log: Path) -> list[dict]:
    """Every line of the output, parsed: one that is not a JSON object fails the test."""
    lines = log.read_text().splitlines()
    assert lines, f"{log.name} is empty"
    parsed = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"{log.name}: not JSON: {line!r}\n{log.read_text()[-3000:]}") from None
        assert isinstance(entry, dict) and {"time", "level", "logger", "message"} <= set(entry), line
        parsed.append(entry)
    return parsed


def wait_for(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return value


@pytest.mark.timeout(120)
def test_worker_and_beat_log_json_and_tasks_carry_the_request_id(redis_url, own_name, tmp_path):  # noqa: F811
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Celery logs"})
    leader = instance_register(actor=TEST_ACTOR, site_id=SITE, hostname="a")[0].id
    follower = instance_register(actor=TEST_ACTOR, site_id=SITE, hostname="b")[0].id
    Instance.objects.filter(pk=leader).update(last_heartbeat=timezone.now() - timedelta(minutes=10))

    common = {"REDIS_URL": redis_url, "CHANNEL_LAYER_PREFIX": own_name, "VAR_DIR": str(tmp_path)}
    worker_log, beat_log = tmp_path / "worker.log", tmp_path / "beat.log"
    # Beat sends to a queue of its own that no worker reads: its health checks must not beat the request's.
    beat = start("beat", beat_log, CELERY_QUEUE=f"{own_name}-beat", **common)
    worker = start("worker", worker_log, CELERY_QUEUE=own_name, CELERY_WORKER_CONCURRENCY="1", **common)
    try:
        wait_for(lambda: "ready" in worker_log.read_text(), 60, "the worker ready", worker_log)

        sender = Celery("request-sender", broker=redis_url)
        sender.conf.task_default_queue = own_name

        def view(request):
            sender.send_task("instances.leader_health_check")
            return HttpResponse("queued")

        request = RequestFactory().post("/api/v1/example", HTTP_X_REQUEST_ID=REQUEST_ID)
        assert RequestIdMiddleware(view)(request)["X-Request-ID"] == REQUEST_ID

        change = wait_for(
            lambda: AuditLog.objects.filter(
                site_id=SITE, action="leader_assigned", details__leaderTerm=2
            ).first(),
            30,
            "the worker's health check replacing the leader",
            worker_log,
        )
        assert change.actor == "system:leader-health-check"
        assert change.request_id == REQUEST_ID
        event = OutboxMessage.objects.get(group=f"instance.{follower}", body__type="leader_assigned")
        assert event.body["requestId"] == REQUEST_ID
        wait_for(lambda: "celery beat started" in beat_log.read_text(), 30, "beat started", beat_log)
    finally:
        for process in (worker, beat):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in (worker, beat):
            try:
                process.wait(timeout=20)
            finally:
                stop(process)

    worker_lines = json_lines(worker_log)
    [replaced] = [line for line in worker_lines if line["logger"] == "promsnmp.election"]
    assert replaced["requestId"] == REQUEST_ID and replaced["siteId"] == SITE
    ready = next(line for line in worker_lines if line["logger"] == "promsnmp.celery")
    assert ready["requestId"] is None and ready["queue"] == own_name
    assert any("shutdown" in line["message"] for line in worker_lines)  # printed by Celery, as JSON here
    assert any(line["message"].startswith("celery beat started") for line in json_lines(beat_log))
