"""What the benchmarks share: the machine's facts, a database of their own, the code measured, and real
server processes on free loopback ports. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def machine() -> dict:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    with psycopg.connect(dbname="postgres", **PG) as conn:
        pg_version = conn.execute("SHOW server_version").fetchone()[0]
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "postgresql": pg_version,
        "postgresql_autovacuum": autovacuum,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


@contextmanager
def own_database(prefix: str = "promsnmp_bench"):
    """A fresh database for this run, dropped afterwards whatever happens."""
    name = f"{prefix}_{os.getpid()}"
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # Django never set up
            pass
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"dropped database {name}", file=sys.stderr)


def database_url(name: str) -> str:
    return f"postgres://{PG['user']}@{PG['host']}:{PG['port']}/{name}"


def code_version() -> dict:
    """The commit measured, and which tracked files differed from it (the code may be mid-change)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "modified": []}
    return {"commit": commit, "modified": sorted(line[3:] for line in status.splitlines())}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_command(kind: str, port: int) -> list[str]:
    """`serve`: `manage.py serve --no-beat` (daphne: the embedded default's server, and the production
    shape's WebSocket server); `embedded`: `manage.py serve` as `make run` starts it (beat in a thread of
    it); `gunicorn`: the production shape's REST server; `run-prod`: `manage.py run_prod` (`make run-prod`:
    gunicorn on PORT, daphne on WS_PORT, a Celery worker and beat; needs DATABASE_URL and REDIS_URL)."""
    if kind == "embedded":
        return [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if kind == "run-prod":
        return [sys.executable, "manage.py", "run_prod"]  # HOST, PORT and WS_PORT from the environment
    if kind == "gunicorn":
        # The worker class and threads run_prod starts (GUNICORN_THREADS from the environment, default 8),
        # and a timeout long enough for a 100k import: gunicorn's default (30 s) would kill the worker.
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        threads = os.environ.get("GUNICORN_THREADS", "8")
        return [
            *(gunicorn, "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", "--timeout", "600"),
            *("--worker-class", "config.gunicorn.ThreadWorker", "--threads", threads, "--no-control-socket"),
        ]
    return [sys.executable, "manage.py", "serve", "--no-beat", "--host", "127.0.0.1", "--port", str(port)]


@contextmanager
def server(kind: str, env: dict[str, str], log_path: Path, processes: list | None = None):
    """A real server process on 127.0.0.1; yields its base URL (and appends its Popen to `processes`)."""
    port = free_port()
    ports = {"HOST": "127.0.0.1", "PORT": str(port)}
    if kind == "run-prod":
        ports["WS_PORT"] = str(free_port())
    with log_path.open("w") as log:
        process = subprocess.Popen(
            server_command(kind, port),
            cwd=ROOT,
            env={**env, **ports, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    if processes is not None:
        processes.append(process)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                if requests.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after 60 s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def summary(samples: list[float]) -> dict:
    return {
        "median_s": round(statistics.median(samples), 4),
        "min_s": round(min(samples), 4),
        "max_s": round(max(samples), 4),
        "samples_s": [round(s, 4) for s in samples],
    }


def end_on_sigterm() -> None:
    """SIGTERM ends like Ctrl-C: through the finally blocks (servers stopped, database dropped)."""

    def interrupted(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)


def write_report(
    *,
    benchmark: str,
    started_at: dt.datetime,
    info: dict,
    parameters: dict,
    extra: dict,
    results: dict,
    suffix: str = "",
    out: str | None = None,
) -> Path:
    """bench/results/<benchmark>-<date><suffix>.json (or `out`): machine, code, parameters, results."""
    report = {
        "benchmark": benchmark,
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": info,
        "code": code_version(),
        "parameters": parameters,
        **extra,
        "results": results,
    }
    path = Path(out) if out else RESULTS / f"{benchmark}-{started_at:%Y-%m-%d}{suffix}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
