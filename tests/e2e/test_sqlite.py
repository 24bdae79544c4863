"""The concurrency tests on SQLite named by DATABASE_URL (issue 8, section 3): the same WAL / IMMEDIATE /
busy-timeout options as the embedded default's file, so parallel registrations, heartbeats and the
health check elect exactly one leader with no "database is locked".

The election concurrency module runs in a pytest process of its own on a sqlite:/// URL. One of its tests
is left out there: it stages an interleaving with PostgreSQL row locks and pg_stat_activity, which
SQLite (one writer at a time) does not have.
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import SQLITE_RUN
from tests.e2e.servers import ROOT

MODULE = "tests/instances/test_election_concurrency.py"
POSTGRESQL_ONLY = "heartbeat_whose_instance_is_deregistered_meanwhile"


def test_the_election_concurrency_tests_pass_on_a_sqlite_database_url(tmp_path):
    env = {
        **os.environ,
        SQLITE_RUN: "1",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'manager.sqlite3'}",
        "VAR_DIR": str(tmp_path),
        # 10 s of chaos on SQLite, for the suite's 15-minute budget; the full 30 s runs on PostgreSQL.
        "CHAOS_SECONDS": "10",
    }
    env.pop("REDIS_URL", None)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        MODULE,
        "-k",
        f"not {POSTGRESQL_ONLY}",
    ]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "3 passed" in summary and "failed" not in summary, summary
