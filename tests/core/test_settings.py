"""Settings come from the environment: generated once in the embedded default, required in production."""

import base64
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VALID_RING = "k1:" + base64.b64encode(b"k" * 32).decode()


def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEBUG"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_without_a_secret_and_names_it(tmp_path):
    production = {"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/postgres", "VAR_DIR": str(tmp_path)}
    missing_key = run_check({**production, "FIELD_ENCRYPTION_KEYS": VALID_RING})
    assert missing_key.returncode != 0
    assert "SECRET_KEY is not set" in missing_key.stderr

    missing_ring = run_check({**production, "SECRET_KEY": "s" * 50})
    assert missing_ring.returncode != 0
    assert "FIELD_ENCRYPTION_KEYS is not set" in missing_ring.stderr

    complete = run_check({**production, "SECRET_KEY": "s" * 50, "FIELD_ENCRYPTION_KEYS": VALID_RING})
    assert complete.returncode == 0, complete.stderr
    assert not (tmp_path / "secrets").exists()  # production never writes secrets to disk


def test_embedded_default_generates_secrets_once_under_var(tmp_path):
    first = run_check({"VAR_DIR": str(tmp_path)})
    assert first.returncode == 0, first.stderr
    secret_key = (tmp_path / "secrets" / "secret_key").read_text()
    key_ring = (tmp_path / "secrets" / "field_encryption_keys").read_text()
    assert len(secret_key.strip()) >= 50
    assert key_ring.startswith("k1:")
    assert oct((tmp_path / "secrets" / "secret_key").stat().st_mode & 0o777) == "0o600"

    second = run_check({"VAR_DIR": str(tmp_path)})
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "secrets" / "secret_key").read_text() == secret_key
    assert (tmp_path / "secrets" / "field_encryption_keys").read_text() == key_ring


def test_bad_timing_settings_stop_start_up(tmp_path):
    result = run_check(
        {"VAR_DIR": str(tmp_path), "HEARTBEAT_INTERVAL_SECONDS": "30", "HEARTBEAT_TIMEOUT_SECONDS": "10"}
    )
    assert result.returncode != 0
    assert "HEARTBEAT_TIMEOUT_SECONDS must be larger" in result.stderr
    not_a_number = run_check({"VAR_DIR": str(tmp_path), "PORT": "eighty"})
    assert not_a_number.returncode != 0
    assert "PORT must be an integer" in not_a_number.stderr


def test_a_malformed_key_ring_stops_start_up_with_a_check_error(tmp_path):
    short_key = run_check({"VAR_DIR": str(tmp_path), "FIELD_ENCRYPTION_KEYS": "k1:AAAA"})
    assert short_key.returncode != 0
    assert "core.E001" in short_key.stderr and "AES-256 needs 32" in short_key.stderr
    no_id = run_check(
        {"VAR_DIR": str(tmp_path), "FIELD_ENCRYPTION_KEYS": base64.b64encode(b"k" * 32).decode()}
    )
    assert no_id.returncode != 0
    assert "core.E001" in no_id.stderr


def test_sizes_intervals_and_timeouts_must_be_at_least_one(tmp_path):
    for name in (
        "DISCOVERY_SWEEP_INTERVAL_SECONDS",
        "INVENTORY_CHANGE_LOG_RETENTION",
        "FAILOVER_GRACE_SECONDS",
    ):
        result = run_check({"VAR_DIR": str(tmp_path), name: "0"})
        assert result.returncode != 0
        assert f"{name} must be at least 1" in result.stderr


def test_gunicorns_worker_timeout_is_a_setting_that_run_prod_passes(tmp_path, settings):
    from config.run_prod import gunicorn_arguments

    settings.GUNICORN_TIMEOUT = 120
    arguments = gunicorn_arguments()
    assert arguments[arguments.index("--timeout") + 1] == "120"
    result = run_check({"VAR_DIR": str(tmp_path), "GUNICORN_TIMEOUT": "0"})
    assert result.returncode != 0
    assert "GUNICORN_TIMEOUT must be at least 1" in result.stderr


def test_sqlite_connections_are_kept_postgresqls_come_from_the_pool(tmp_path):
    """daphne's requests run in a fixed set of threads (core/asgi.py): each keeps its SQLite connection.
    PostgreSQL's are never persistent (daphne would keep one per thread): the pool hands them out."""
    show = (
        "from django.conf import settings; d = settings.DATABASES['default']; "
        "print(d['CONN_MAX_AGE'], 'pool' in d['OPTIONS'])"
    )
    secrets = {"SECRET_KEY": "s" * 50, "FIELD_ENCRYPTION_KEYS": VALID_RING}
    for database_url, expected in (
        (None, "None False"),
        (f"sqlite:///{tmp_path / 'other.sqlite3'}", "None False"),
        ("postgres://postgres@127.0.0.1:5432/postgres", "0 True"),
    ):
        env = {
            "VAR_DIR": str(tmp_path),
            **secrets,
            **({"DATABASE_URL": database_url} if database_url else {}),
        }
        base = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "DEBUG"}}
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "--no-imports", "-c", show],
            cwd=ROOT,
            env={**base, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected, (database_url, result.stdout)
