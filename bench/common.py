"""What the benchmarks share: the machine's facts, a database of their own, the code measured, and real
server processes on free loopback ports. Only 127.0.0.1 is ever contacted."""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import os
import platform
import secrets
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


# A migrated database to copy instead of migrating each benchmark's own (bench/quick.py sets it: a
# copy takes a fraction of a second, migrating seconds); the benchmarks' own migrate then finds it done.
TEMPLATE_DATABASE_ENV = "BENCH_TEMPLATE_DATABASE"


@contextmanager
def own_database(prefix: str = "promsnmp_bench"):
    """A fresh database for this run (a copy of $BENCH_TEMPLATE_DATABASE when set), dropped afterwards
    whatever happens."""
    name = f"{prefix}_{os.getpid()}"
    template = os.environ.get(TEMPLATE_DATABASE_ENV)
    with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
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
        # run_prod's options (worker class, threads, multiprocess metrics; needs django.setup() first), 2
        # workers, and a timeout long enough for a 100k import: run_prod's (30 s) would kill the worker.
        from config.run_prod import gunicorn_arguments

        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        return [
            *(gunicorn, "config.wsgi", "-b", f"127.0.0.1:{port}", "-w", "2", *gunicorn_arguments()),
            *("--timeout", "600", "--no-control-socket"),
        ]
    return [sys.executable, "manage.py", "serve", "--no-beat", "--host", "127.0.0.1", "--port", str(port)]


def wait_until_ready(
    process: subprocess.Popen, urls: list[str], log_path: Path, *, timeout: float, name: str = "server"
) -> None:
    """Until every URL's /health/ready answers 200; fails with the log's tail when the process exits
    first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            if process.poll() is not None:
                log = log_path.read_text()[-3000:]
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{log}")
            try:
                if requests.get(f"{url}/health/ready", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} not ready after {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)


@contextmanager
def servers(specs: list[tuple[str, Path]], env: dict[str, str], processes: list | None = None, *, timeout=60):
    """Real server processes on 127.0.0.1, one per (kind, log path), started together; yields their base
    URLs once all are ready (and appends their Popens to `processes`). `run-prod` is ready when both its
    REST (PORT) and WebSocket (WS_PORT) servers are. Stopped together at the end."""
    started: list[tuple[str, subprocess.Popen, list[str], Path]] = []
    taken: set[int] = set()

    def port() -> int:
        chosen = next(candidate for candidate in iter(free_port, None) if candidate not in taken)
        taken.add(chosen)
        return chosen

    try:
        for kind, log_path in specs:
            rest = port()
            ports = {"HOST": "127.0.0.1", "PORT": str(rest)}
            urls = [f"http://127.0.0.1:{rest}"]
            if kind == "run-prod":
                ports["WS_PORT"] = str(port())
                urls.append(f"http://127.0.0.1:{ports['WS_PORT']}")
            if kind == "gunicorn":  # its metrics' files (config/gunicorn_conf.py) in the run's directory
                ports["PROMETHEUS_MULTIPROC_DIR"] = str(log_path.parent / f"metrics-{rest}")
            with log_path.open("w") as log:
                process = subprocess.Popen(
                    server_command(kind, rest),
                    cwd=ROOT,
                    env={**env, **ports, "PYTHONUNBUFFERED": "1"},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            started.append((kind, process, urls, log_path))
            if processes is not None:
                processes.append(process)
        for kind, process, urls, log_path in started:
            wait_until_ready(process, urls, log_path, timeout=timeout, name=kind)
        yield [urls[0] for _, _, urls, _ in started]
    finally:
        for kind, process, _, _ in started:
            if process.poll() is None:
                # The measuring is over: gunicorn's quick stop (SIGINT; its graceful one takes seconds).
                os.killpg(process.pid, signal.SIGINT if kind == "gunicorn" else signal.SIGTERM)
        for kind, process, _, _ in started:
            try:
                # run_prod stops four processes; a gunicorn worker whose threads are still busy (say, with
                # requests it refused) can hold its quick stop up to the graceful timeout (10 s): not waited.
                process.wait(timeout=3 if kind == "gunicorn" else 30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@contextmanager
def server(kind: str, env: dict[str, str], log_path: Path, processes: list | None = None, *, timeout=60):
    """One server process (see `servers`); yields its base URL."""
    with servers([(kind, log_path)], env, processes, timeout=timeout) as (base,):
        yield base


def settings_environment(var_dir: Path) -> dict[str, str]:
    """What every benchmark's Django (in-process and its servers) runs with: fresh secrets, its own
    VAR_DIR, no debug, and no line per request in the logs."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "FIELD_ENCRYPTION_KEYS": "b1:" + base64.b64encode(secrets.token_bytes(32)).decode(),
        "VAR_DIR": str(var_dir),
        "DEBUG": "0",
        "LOG_LEVEL": "WARNING",
    }


def delete_redis_keys(url: str, prefix: str) -> None:
    """The run's own keys (channel layer, Celery queue, throttle cache: all named with `prefix`)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = set(client.scan_iter(match=f"*{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least `fraction` of them at or below it."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered) - 1e-9))
    return ordered[rank - 1]


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def rate_step_summary(rate: float, results: list[tuple[str, float, float, float]]) -> dict:
    """One step of an open-loop load at `rate`/s; `results` are (status or error name, latency_s, lag_s,
    answered_at_s) per request. The 200s per second are over the step's real length (until the last
    answer): a client that fell behind (lag) stretched it beyond the planned seconds."""
    statuses: dict[str, int] = {}
    for outcome, *_ in results:
        statuses[outcome] = statuses.get(outcome, 0) + 1
    ok = [latency for outcome, latency, *_ in results if outcome == "200"]
    elapsed = max(done for *_, done in results)

    def ms(samples: list[float], fraction: float) -> float | None:
        return round(percentile(samples, fraction) * 1000, 1) if samples else None

    return {
        "offered_per_s": rate,
        "requests": len(results),
        "statuses": dict(sorted(statuses.items())),
        "elapsed_s": round(elapsed, 2),
        "ok_per_s": round(len(ok) / elapsed, 1),
        "ok_p50_ms": ms(ok, 0.50),
        "ok_p95_ms": ms(ok, 0.95),
        "ok_p99_ms": ms(ok, 0.99),
        "client_lag_p99_ms": ms([lag for _, _, lag, _ in results], 0.99),
    }


def capacity_per_s(rows: list[dict]) -> float | None:
    """The highest offered rate whose step meets the benchmark's criteria (`meets`), or None."""
    return max((row["offered_per_s"] for row in rows if row["meets"]), default=None)


def machine_line(info: dict) -> str:
    return f"machine: {info['nproc']} × {info['cpu']}, {info['ram_gib']} GiB, PostgreSQL {info['postgresql']}"


def shown(path: Path) -> str:
    """A results path as the printout names it: relative to the checkout when it is inside."""
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


# --- CPU, from /proc ---------------------------------------------------------------------------------

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {root}, [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


class CpuMeter:
    """CPU time of the servers' process trees (each root and everything it started) and of the database's
    backends between start() and stop(), the load client's (this process) and the machine's busy share.
    CPU per operation is the figure the shared machine's noise moves least."""

    def __init__(self, root_pids: list[int], database: str | None):
        self.root_pids, self.database = root_pids, database

    def _backends(self) -> set[int]:
        if self.database is None:
            return set()
        with psycopg.connect(dbname="postgres", autocommit=True, **PG) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.database],
            ).fetchall()
        return {pid for (pid,) in rows}

    def _sample(self) -> dict:
        server = {pid: _ticks(pid) for root in self.root_pids for pid in _descendants(root)}
        database = {pid: _ticks(pid) for pid in self._backends()}
        return {"server": server, "database": database, "machine": _machine_ticks(), "at": time.monotonic()}

    def start(self) -> None:
        self.before = self._sample()
        self.client_before = time.process_time()  # this process: the load client

    def stop(self) -> dict:
        after = self._sample()
        seconds = after["at"] - self.before["at"]

        def used(kind: str) -> float:
            # A process that appeared meanwhile counts from 0 (a new pooled backend, a restarted worker).
            ticks = sum(
                (now or 0) - (self.before[kind].get(pid) or 0) for pid, now in after[kind].items() if now
            )
            return ticks / CLK_TCK

        client = time.process_time() - self.client_before
        busy = after["machine"][0] - self.before["machine"][0]
        total = after["machine"][1] - self.before["machine"][1]
        return {
            "seconds": round(seconds, 2),
            "server_cpu_s": round(used("server"), 2),
            "database_cpu_s": round(used("database"), 2),
            "client_cpu_s": round(client, 2),
            "machine_busy_share": round(busy / total, 3) if total else None,
        }


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
