"""gunicorn's configuration module (`--config python:config.gunicorn_conf`: run_prod, the image and the chart
start gunicorn with it): prometheus_client's multiprocess mode for the workers.

Each worker counts the requests it answers; a scrape of /metrics reaches one of them and must show them
all (core.metrics). So the workers write their series to files in PROMETHEUS_MULTIPROC_DIR:
- set (run_prod sets it per launch, shared with its daphne; the chart mounts an emptyDir): that one;
- unset: a fresh directory of this master's own under the temporary directory, removed when it exits.

Set here, before anything imports prometheus_client: the mode is chosen when the first metric is made,
and the master imports the worker class (config.gunicorn, core.admission) after reading this file.
Hooks: a worker that exits (killed, timed out, recycled) has its live gauges deleted; its counters stay,
so the totals never go back. At start, the live gauges of processes that are gone (a container restarted
with its emptyDir) are deleted too.
"""

from __future__ import annotations

import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

if os.environ.get(MULTIPROC_ENV):
    OWN_DIRECTORY = None
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
else:
    OWN_DIRECTORY = tempfile.mkdtemp(prefix="promsnmp-metrics-")
    os.environ[MULTIPROC_ENV] = OWN_DIRECTORY


def on_starting(server):
    from core.metrics import mark_dead_processes

    mark_dead_processes()


def child_exit(server, worker):
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(worker.pid)


def on_exit(server):
    if OWN_DIRECTORY is not None:
        shutil.rmtree(OWN_DIRECTORY, ignore_errors=True)
