"""The pieces of config.gunicorn.ThreadWorker's shedding that a real gunicorn run does not pin down (the
overload and slow-client e2e tests drive the whole worker)."""

from __future__ import annotations

import os
import subprocess
import sys

from config.gunicorn import WorkerOccupancy, request_path


def test_request_path_reads_the_path_of_a_request_line():
    assert request_path(b"GET /health/live HTTP/1.1") == "/health/live"
    assert request_path(b"GET /metrics?name=x HTTP/1.1") == "/metrics"
    assert request_path(b"POST /api/v1/instances/i/heartbeat HTTP/1.1") == "/api/v1/instances/i/heartbeat"
    assert request_path(b"garbage") == ""
    assert request_path(b"") == ""


def test_a_worker_sees_whether_a_sibling_has_a_free_thread():
    occupancy = WorkerOccupancy()
    mine = occupancy.claim(os.getpid())
    sibling_process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        sibling = occupancy.claim(sibling_process.pid)
        assert {mine, sibling} == {0, 1}
        occupancy.set_busy(sibling, 7)
        assert occupancy.sibling_has_free_thread(mine, threads=8)
        occupancy.set_busy(sibling, 8)
        assert not occupancy.sibling_has_free_thread(mine, threads=8)
        occupancy.set_busy(sibling, 3)
    finally:
        sibling_process.kill()
        sibling_process.wait()
    # A dead worker's slot counts for nothing, and its replacement takes it over.
    assert not occupancy.sibling_has_free_thread(mine, threads=8)
    assert occupancy.claim(os.getpid()) == sibling  # a new worker takes over the dead one's slot
    occupancy.release(sibling)
    occupancy.release(mine)
    assert occupancy.claim(os.getpid()) == 0
