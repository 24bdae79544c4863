"""`make run` from a clean copy of the repository: the embedded default end to end (issue 2, Acceptance).

The copy holds the working tree's tracked files and untracked files that are not ignored (so no .venv,
no var/); `make run` creates its own .venv (pip uses the machine's pip configuration and cache),
migrates the SQLite database under var/, prints the first admin user and API token, and serves.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import requests

from tests.e2e.servers import ROOT, free_port

READY_TIMEOUT_SECONDS = 300
# What `make run` may inherit: nothing that configures the manager (DATABASE_URL, REDIS_URL, secrets…).
INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYENV_ROOT", "SSL_CERT_FILE", "SSL_CERT_DIR")
TOKEN_LINE = re.compile(r"Admin API token created \(shown once\): (psm_\S+)")
ADMIN_LINE = re.compile(r"Admin user created: admin / (\S+)")


def clean_environment() -> dict[str, str]:
    env = {name: os.environ[name] for name in INHERITED if name in os.environ}
    env.update({name: value for name, value in os.environ.items() if name.startswith("PIP_")})
    # Not the lead's virtualenv: `make run` must build its own.
    env["PATH"] = os.pathsep.join(
        part
        for part in env.get("PATH", os.defpath).split(os.pathsep)
        if not part.startswith(str(ROOT / ".venv"))
    )
    return env


def copy_working_tree(destination: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        check=True,
        capture_output=True,
    ).stdout.decode()
    for relative in filter(None, listed.split("\0")):
        source = ROOT / relative
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.timeout(READY_TIMEOUT_SECONDS + 120)
def test_make_run_from_a_clean_copy_serves_and_elects_one_leader():
    with tempfile.TemporaryDirectory(prefix="promsnmp-make-run-") as tmp:
        copy = Path(tmp) / "repo"
        copy_working_tree(copy)
        assert (copy / "Makefile").is_file() and (copy / "manage.py").is_file()
        assert not (copy / ".venv").exists() and not (copy / "var").exists()
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        log_path = Path(tmp) / "make-run.log"
        started = time.monotonic()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["make", "run", "HOST=127.0.0.1", f"PORT={port}"],
                cwd=copy,
                env=clean_environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            ready_after = wait_ready(base_url, process, log_path, started)
            print(f"\nmake run: ready after {ready_after:.1f} s (venv, pip install, migrate, serve)")
            output = log_path.read_text(errors="replace")
            tokens = TOKEN_LINE.findall(output)
            assert len(tokens) == 1, output[-4000:]
            assert len(ADMIN_LINE.findall(output)) == 1, output[-4000:]
            admin = {"Authorization": f"Bearer {tokens[0]}"}

            check_one_leader(base_url, admin)

            assert (copy / ".venv" / "bin" / "python").exists()
            secret_key = copy / "var" / "secrets" / "secret_key"
            assert secret_key.is_file() and secret_key.read_text().strip()
            assert secret_key.stat().st_mode & 0o077 == 0
            assert (copy / "var" / "secrets" / "field_encryption_keys").read_text().strip()
            assert (copy / "var" / "manager.sqlite3").is_file()

            os.killpg(process.pid, signal.SIGTERM)
            stopping = time.monotonic()
            process.wait(timeout=30)
            print(f"make run: exited {process.returncode} {time.monotonic() - stopping:.1f} s after SIGTERM")
            deadline = time.monotonic() + 10
            while group_alive(process.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not group_alive(process.pid), "the server outlived `make run`"
        finally:
            if process.poll() is None or group_alive(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)


def wait_ready(base_url: str, process: subprocess.Popen, log_path: Path, started: float) -> float:
    deadline = started + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(
                f"make run exited with {process.returncode}:\n{log_path.read_text()[-4000:]}"
            )
        try:
            response = requests.get(f"{base_url}/health/ready", timeout=2)
            if response.status_code == 200:
                assert response.json()["status"] == "ok", response.text
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise AssertionError(f"not ready after {READY_TIMEOUT_SECONDS} s:\n{log_path.read_text()[-4000:]}")


def check_one_leader(base_url: str, admin: dict[str, str]) -> None:
    site = "make-run-site"
    created = requests.post(
        f"{base_url}/api/v1/sites", json={"id": site, "label": "Make run"}, headers=admin, timeout=10
    )
    assert created.status_code == 201, created.text
    ids = []
    for hostname in ("promsnmp-a", "promsnmp-b"):
        response = requests.post(
            f"{base_url}/api/v1/instances/register",
            json={"siteId": site, "hostname": hostname, "version": "0.0.10"},
            headers=admin,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        ids.append((response.json()["instanceId"], response.json()["isLeader"]))
    assert [is_leader for _, is_leader in ids] == [True, False]

    detail = requests.get(f"{base_url}/api/v1/sites/{site}", headers=admin, timeout=10)
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert body["instanceCount"] == 2
    assert body["leaderInstanceId"] == ids[0][0]
    assert [instance["id"] for instance in body["instances"] if instance["isLeader"]] == [ids[0][0]]
