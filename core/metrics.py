"""The manager's /metrics: prometheus_client, summed over the server's processes when they share a
PROMETHEUS_MULTIPROC_DIR (gunicorn's workers, and run_prod's daphne beside them).

Two kinds of series:
- **Process series** (the HTTP requests and their durations, admission control, open sockets, the
  database pool): each process counts its own. In multiprocess mode every process writes them to files
  in PROMETHEUS_MULTIPROC_DIR and a scrape, whichever worker answers it, adds up all the files: counters
  and histograms keep the counts of workers that died; live gauges (`livesum`) are summed over the
  processes alive (gunicorn's child_exit hook and run_prod delete a dead process's gauge files,
  `mark_dead_processes`).
- **Scrape-time collectors** (the database-backed fleet series, `register_collector`): read once per
  scrape by the process that answers it, never per process.

Without PROMETHEUS_MULTIPROC_DIR (the embedded default, one daphne) the default registry is served as
is, with the Python process metrics.
"""

from __future__ import annotations

import glob
import os
import re
import threading
from pathlib import Path

from django.http import HttpResponse
from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")

_scrape_collectors: list = []
_collectors_lock = threading.Lock()


def multiprocess_dir() -> str | None:
    """The shared directory when this process runs in multiprocess mode (read at start, like
    prometheus_client itself: the mode is chosen when the first metric is made)."""
    return os.environ.get(MULTIPROC_ENV) or None


def register_collector(collector) -> None:
    """A collector read at scrape time from shared state (the database): served once per scrape in both
    modes. Registering twice is a no-op (AppConfig.ready() may run more than once)."""
    with _collectors_lock:
        if any(existing is collector for existing in _scrape_collectors):
            return
        _scrape_collectors.append(collector)
        REGISTRY.register(collector)


def scrape_registry():
    """What one scrape of /metrics serves."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry(auto_describe=False)  # a scrape's own: reading the files is its work
    SharedFilesCollector(registry, path=directory)
    for collector in list(_scrape_collectors):
        registry.register(collector)
    return registry


class SharedFilesCollector(MultiProcessCollector):
    """prometheus_client's MultiProcessCollector, safe against the files changing while it reads: a file
    that a process has just created is empty until sized (read, it raised struct.error: a 500 for the
    scrape), and holds nothing yet, so it is skipped; a file deleted meanwhile (a dead process's gauges)
    makes it list the directory again."""

    ATTEMPTS = 3

    def collect(self):
        for attempt in range(self.ATTEMPTS):
            files = [path for path in glob.glob(os.path.join(self._path, "*.db")) if _sized(path)]
            try:
                return self.merge(files, accumulate=True)
            except FileNotFoundError:
                if attempt == self.ATTEMPTS - 1:
                    raise
        return []


def _sized(path: str) -> bool:
    try:
        return os.stat(path).st_size >= 8  # the header: how much of the file is used
    except FileNotFoundError:
        return False


def metrics(request):
    """GET /metrics (no token: block it at the proxy; docs/operations.md)."""
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(scrape_registry()), content_type=content_type)


def mark_dead_processes(directory: str | None = None, alive=None) -> list[int]:
    """Delete the live-gauge files of processes that are gone (counters and histograms stay: their
    counts must not go back). → the pids cleared. `alive(pid)` says whether a process runs."""
    directory = directory or multiprocess_dir()
    if not directory:
        return []
    alive = alive or process_exists
    dead = set()
    for path in Path(directory).glob("gauge_live*_*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_process_dead(pid, directory)
    return sorted(dead)


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- the database pool (the spec's promsnmp_manager_db_pool_connections_*) -------------------------------


class PoolGauges:
    """psycopg's pool per process (Django's OPTIONS["pool"]), as gauges summed over the processes alive.

    Sampled from the pool's own statistics whenever this process takes a connection (connection_created)
    and after a request returned it (request_finished): a process at rest keeps the value of its last
    request, which is what its pool holds. Made on the first pooled connection, so a process without a
    pool (SQLite, DB_POOL=0) has no such series at all rather than zeros that would look like an empty
    pool.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pools: dict[str, object] = {}
        self._gauges: tuple[Gauge, Gauge, Gauge] | None = None

    def connection_created(self, sender=None, connection=None, **_) -> None:
        pool = getattr(connection, "pool", None) if connection is not None else None
        if pool is None:
            return
        with self._lock:
            self._pools[connection.alias] = pool
        self.sample()

    def request_finished(self, sender=None, **_) -> None:
        if self._pools:
            self.sample()

    def sample(self) -> None:
        with self._lock:
            pools = list(self._pools.values())
            active = idle = size_max = 0
            for pool in pools:
                stats = pool.get_stats()
                idle += stats.get("pool_available", 0)
                active += stats.get("pool_size", 0) - stats.get("pool_available", 0)
                size_max += stats.get("pool_max", 0)
            active_gauge, idle_gauge, max_gauge = self._made()
            active_gauge.set(max(active, 0))
            idle_gauge.set(idle)
            max_gauge.set(size_max)

    def _made(self) -> tuple[Gauge, Gauge, Gauge]:
        if self._gauges is None:
            self._gauges = (
                Gauge(
                    "promsnmp_manager_db_pool_connections_active",
                    "Pooled database connections in use (taken by a request or task), summed over the "
                    "server's processes",
                    multiprocess_mode="livesum",
                ),
                Gauge(
                    "promsnmp_manager_db_pool_connections_idle",
                    "Pooled database connections open and free, summed over the server's processes",
                    multiprocess_mode="livesum",
                ),
                Gauge(
                    "promsnmp_manager_db_pool_connections_max",
                    "The pools' largest size (DB_POOL_MAX_SIZE per process), summed over the server's "
                    "processes",
                    multiprocess_mode="livesum",
                ),
            )
        return self._gauges


POOL = PoolGauges()
