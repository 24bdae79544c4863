"""A real Prometheus (the Debian package) for the end-to-end tests, and what they drive it with:
instances heartbeating over HTTP, bounded waits."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from tests.e2e.servers import free_port, stop


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Heartbeats:
    """An instance's heartbeats every second until stopped; any answer but 200 is kept for the test."""

    def __init__(self, base_url: str, instance_id: str, token: str):
        self.stopped = threading.Event()
        self.failures: list[str] = []
        self.thread = threading.Thread(target=self.run, args=(base_url, instance_id, token), daemon=True)
        self.thread.start()

    def run(self, base_url, instance_id, token):
        session = requests.Session()
        while not self.stopped.is_set():
            try:
                response = session.post(
                    f"{base_url}/api/v1/instances/{instance_id}/heartbeat",
                    json={"status": "healthy"},
                    headers=bearer(token),
                    timeout=10,
                )
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.stopped.wait(1)

    def stop(self):
        self.stopped.set()
        self.thread.join(timeout=15)


@contextmanager
def prometheus(config: str, files: dict[str, str] | None = None):
    """The Debian package's `prometheus` on a free loopback port, with a temporary config and storage;
    `files` (name → text, e.g. rule files) are written next to prometheus.yml."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail(
            "The real-Prometheus test needs the `prometheus` binary (Debian package `prometheus`): "
            "`make system-packages` installs it."
        )
    with tempfile.TemporaryDirectory(prefix="prometheus-") as directory:
        config_path = Path(directory) / "prometheus.yml"
        config_path.write_text(config)
        for name, text in (files or {}).items():
            (Path(directory) / name).write_text(text)
        log_path = Path(directory) / "prometheus.log"
        port = free_port()
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={Path(directory) / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                if process.poll() is not None:
                    raise AssertionError(
                        f"prometheus exited {process.returncode}:\n{log_path.read_text()[-4000:]}"
                    )
                try:
                    if requests.get(f"{url}/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                assert time.monotonic() < deadline, f"prometheus not ready:\n{log_path.read_text()[-4000:]}"
                time.sleep(0.2)
            yield url
        except BaseException:
            print(f"--- prometheus log ---\n{log_path.read_text()[-6000:]}")
            raise
        finally:
            stop(process)


def wait_for(check, timeout: float, what: str):
    """check() → (done, value) until done; the value then, or a failure naming the last value."""
    deadline = time.monotonic() + timeout
    while True:
        done, value = check()
        if done:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s; last seen: {value!r}"[:3000])
        time.sleep(0.25)
