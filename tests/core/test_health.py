"""Health probes, request ids, and one-JSON-object-per-line logs."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from core.logging import JsonFormatter, RequestIdFilter

TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
CLOSED_PORT_REDIS_URL = "redis://127.0.0.1:1/0"
BASE_DIR = Path(__file__).resolve().parents[2]


def test_live_is_200_json(client):
    response = client.get("/health/live")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


def test_ready_checks_the_database(client, db, settings):
    settings.REDIS_URL = ""
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


def test_ready_checks_redis_when_configured(client, db, settings):
    settings.REDIS_URL = TEST_REDIS_URL
    response = client.get("/health/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_ready_is_503_json_when_redis_is_down(client, db, settings):
    settings.REDIS_URL = CLOSED_PORT_REDIS_URL
    response = client.get("/health/ready")
    assert response.status_code == 503, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["redis"] != "ok"


def test_probes_need_no_credentials_and_ignore_bad_ones(client, db, settings):
    settings.REDIS_URL = ""
    for path in ("/health/live", "/health/ready"):
        assert client.get(path, HTTP_AUTHORIZATION="Bearer garbage").status_code == 200


# --- request ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/health/live", "/api/v1/sites", "/api/v1/no-such-endpoint"])
def test_request_id_is_made_and_echoed(client, db, path):
    first = client.get(path)["X-Request-ID"]
    second = client.get(path)["X-Request-ID"]
    assert re.fullmatch(r"[A-Za-z0-9._\-]{8,64}", first)
    assert first != second


@pytest.mark.parametrize("incoming", ["abc-123", "req.2024_01_15-ABC", "a" * 64])
def test_sane_incoming_request_id_is_kept(client, db, incoming):
    assert client.get("/api/v1/sites", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["has space", "a" * 65, "<script>", "x\r\nSet-Cookie: a=b", ""])
def test_odd_incoming_request_id_is_replaced(client, db, incoming):
    echoed = client.get("/api/v1/sites", HTTP_X_REQUEST_ID=incoming)["X-Request-ID"]
    assert echoed != incoming
    assert re.fullmatch(r"[A-Za-z0-9._\-]{8,64}", echoed)


# --- JSON logs ------------------------------------------------------------------------------------


@pytest.fixture
def json_log():
    """Lines the "promsnmp.request" logger writes through JsonFormatter + RequestIdFilter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("promsnmp.request")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield stream
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_request_log_line_is_one_json_object_with_the_request_id(client, db, json_log):
    response = client.get("/api/v1/sites", HTTP_X_REQUEST_ID="log-req-1")
    assert response.status_code == 401
    client.get("/api/v1/sites/x", HTTP_X_REQUEST_ID="log-req-2")

    lines = json_log.getvalue().splitlines()
    assert len(lines) == 2
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) for entry in entries)
    first, second = entries
    assert first["requestId"] == "log-req-1" and second["requestId"] == "log-req-2"
    assert first["logger"] == "promsnmp.request"
    assert first["level"] == "INFO"
    assert (first["method"], first["path"], first["status"]) == ("GET", "/api/v1/sites", 401)
    assert first["time"].endswith("Z")
    assert isinstance(first["durationMs"], int | float)


def test_log_format_json_setting_makes_every_line_json():
    """With LOG_FORMAT=json the configured console handler writes one JSON object per line."""
    script = textwrap.dedent(
        """
        import logging
        import django
        django.setup()
        from django.test import Client
        Client().get("/api/v1/sites", HTTP_X_REQUEST_ID="subprocess-req")
        logging.getLogger("promsnmp.test").warning("multi\\nline message")
        """
    )
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]
    assert all(isinstance(entry, dict) and "requestId" in entry for entry in entries), lines
    request_lines = [e for e in entries if e.get("logger") == "promsnmp.request"]
    assert [e["requestId"] for e in request_lines] == ["subprocess-req"]
    assert any(e["message"] == "multi\nline message" for e in entries)
