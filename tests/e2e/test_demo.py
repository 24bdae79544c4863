"""`make demo` end to end (issue 10, part 3).

`make demo` on a free port with a state directory of the test's own, in the suite's environment
(DATABASE_URL, SECRET_KEY … of the test database: the demo must leave them aside), proves:
- within a minute it says the fleet is ready: three sites of the spec's examples, each with its leader;
- the fleet dashboard (/admin/fleet/, logged in with the password it printed) lists the three sites,
  each with a leader (the one the API names), all its instances live (two in london-colo-01) and its
  devices;
- the first discovery run of every site completed and found its devices (API), v2c and v3 alike;
- its state is where it was told (SQLite there), and a second demo on the same directory is refused
  without wiping it (the dashboard still answers afterwards);
- SIGINT (Ctrl-C) stops every process it started (checked by pid and process group), the agents
  deregister first, and it exits 0 (so does make).
The manager dying stops the rest and the demo exits 1; a non-empty directory the demo did not make is
refused and left as it was.

make runs with `-o <venv>/.installed`: `make test` has installed the virtualenv this test runs in, and
the test must not reinstall it (a worktree's pyproject.toml may be newer than the marker).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests

from tests.e2e.servers import ROOT, command_line, descendants, free_port, running

READY_SECONDS = 60  # the issue: "/admin/fleet/ shows a living fleet within a minute"
STOP_SECONDS = 60  # agents deregister, then the manager and snmpd stop (SIGKILL after 15 s each)
READY_LINE = re.compile(r"fleet ready in ([\d.]+) s")
ANNOUNCED = re.compile(
    r"\| Ctrl-C stops everything$", re.MULTILINE
)  # the last line of what it prints when ready
LOGIN_LINE = re.compile(r"log in as (\S+) / (\S+)")
TOKEN_LINE = re.compile(r"Admin API token created \(shown once\): (psm_\S+)")
PROCESSES_LINE = re.compile(r"processes: (.*)$", re.MULTILINE)
# The spec's example sites, their agents and the devices the demo's snmpd play (v2c and v3).
DEVICES = {
    "chicago-pop-01": {"core-rtr-01.chicago", "access-sw-15.chicago"},  # v2c
    "nyc-dc-01": {"dist-sw-01.nyc", "dist-sw-02.nyc"},  # v3
    "london-colo-01": {"core-rtr-01.london", "dist-sw-01.london"},  # v2c, v3
}
AGENTS = {
    "chicago-pop-01": {"promsnmp-chicago-1"},
    "nyc-dc-01": {"promsnmp-nyc-1"},
    "london-colo-01": {"promsnmp-london-1", "promsnmp-london-2"},
}


def start_demo(state_dir: Path, port: int, log_path: Path, *, make: bool = False) -> subprocess.Popen:
    """`manage.py demo`, or `make demo` (then the demo is make's child)."""
    if make:
        venv = Path(sys.executable).parent.parent
        command = ["make", "--no-print-directory", "-o", f"{venv}/.installed", "demo", f"VENV={venv}"]
        command += ["HOST=127.0.0.1", f"PORT={port}", f"DEMO_STATE_DIR={state_dir}"]
    else:
        command = [sys.executable, "manage.py", "demo", "--state-dir", str(state_dir)]
        command += ["--host", "127.0.0.1", "--port", str(port)]
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    with log_path.open("wb") as log:
        return subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a group of its own, as a foreground job has
        )


def the_demo(make: subprocess.Popen) -> int:
    """The pid of `manage.py demo` under `make demo`."""

    def is_demo(pid: int) -> bool:
        words = command_line(pid).split()  # python [/path/to/]manage.py demo …, not a shell around it
        return len(words) > 2 and words[1].endswith("manage.py") and words[2] == "demo"

    [pid] = [pid for pid in descendants(make.pid) if is_demo(pid)]
    return pid


def wait_for_line(pattern: re.Pattern, process: subprocess.Popen, log_path: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = log_path.read_text(errors="replace")
        if pattern.search(output):
            return output
        if process.poll() is not None:
            raise AssertionError(f"the demo exited with {process.returncode}:\n{output[-6000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {pattern.pattern!r} within {timeout} s:\n{log_path.read_text()[-6000:]}")


def processes(output: str) -> dict[str, int]:
    """The demo's "processes:" line: {name: pid}."""
    return {name: int(pid) for name, pid in re.findall(r"(\S+) pid (\d+)", PROCESSES_LINE.search(output)[1])}


def kill_leftovers(demo: subprocess.Popen, started: list[int]) -> None:
    """SIGKILL to what a failed test left: the process groups below the demo, and those of the processes
    it had started (which outlive it when it failed to stop them)."""
    for pid in {*started, *(descendants(demo.pid) if demo.poll() is None else [])}:
        if running(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
    if demo.poll() is None:
        os.killpg(demo.pid, signal.SIGKILL)
        demo.wait(timeout=30)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class FleetRows(HTMLParser):
    """The dashboard's site rows: {site id: {"cells": [cell texts], "leader": the leader link's title (its
    instance id) or None, "leader_name": the link's text (its hostname)}}."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, dict] = {}
        self.row: dict | None = None
        self.cell: list[str] | None = None
        self.in_leader = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = (attrs.get("class") or "").split()
        if tag == "tr" and "fleet-site" in classes:
            self.row = self.rows.setdefault(attrs["data-site"], {"cells": [], "leader": None})
        elif tag == "td" and self.row is not None:
            self.cell = []
        elif tag == "a" and "fleet-leader" in classes and self.row is not None:
            self.in_leader = True
            self.row["leader"] = attrs.get("title")
            self.row["leader_name"] = ""

    def handle_endtag(self, tag):
        if tag == "td" and self.row is not None and self.cell is not None:
            self.row["cells"].append(" ".join("".join(self.cell).split()))
            self.cell = None
        elif tag == "a":
            self.in_leader = False
        elif tag == "tr":
            self.row = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.in_leader:
            self.row["leader_name"] += data.strip()


def dashboard(base_url: str, user: str, password: str) -> dict[str, dict]:
    """Log into the admin as a browser does and read /admin/fleet/."""
    session = requests.Session()
    login_url = f"{base_url}/admin/login/?next=/admin/fleet/"
    assert session.get(login_url, timeout=10).status_code == 200
    response = session.post(
        login_url,
        data={
            "username": user,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/fleet/",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text[-2000:]
    assert response.url == f"{base_url}/admin/fleet/", response.url  # logged in, redirected to the page
    parser = FleetRows()
    parser.feed(response.text)
    return parser.rows


@pytest.mark.timeout(READY_SECONDS + STOP_SECONDS + 120)
def test_make_demo_starts_a_living_fleet_and_ctrl_c_stops_it_all(tmp_path):
    state_dir = tmp_path / "state"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    make_run_database = ROOT / "var" / "manager.sqlite3"
    make_run_before = make_run_database.stat().st_mtime_ns if make_run_database.exists() else None
    log_path = tmp_path / "demo.log"
    started = time.monotonic()
    make = start_demo(state_dir, port, log_path, make=True)
    everything: list[int] = []
    try:
        output = wait_for_line(ANNOUNCED, make, log_path, READY_SECONDS)
        assert READY_LINE.search(output), output[-3000:]  # every run completed and found its devices
        demo = the_demo(make)
        everything[:] = descendants(make.pid)
        print(
            f"\nmake demo: fleet ready after {time.monotonic() - started:.1f} s (the demo says "
            f"{READY_LINE.search(output).group(1)} s)"
        )
        user, password = LOGIN_LINE.search(output).groups()
        admin = {"Authorization": f"Bearer {TOKEN_LINE.search(output).group(1)}"}
        printed = processes(output)
        snmpd_names = {name for names in DEVICES.values() for name in names}
        agent_names = {name for names in AGENTS.values() for name in names}
        assert set(printed) == snmpd_names | agent_names | {"manager"}, printed
        assert sorted(descendants(demo)) == sorted(printed.values()), "it started what it printed, no more"

        # Its own state, on SQLite, whatever the environment said (the suite's DATABASE_URL).
        assert (state_dir / "manager.sqlite3").is_file()
        assert (state_dir / "logs" / "manager.log").is_file()

        # A second demo on the same directory is refused at once, and wipes nothing (checked below).
        second = subprocess.run(
            [sys.executable, "manage.py", "demo", "--state-dir", str(state_dir), "--port", str(free_port())],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1, second.stdout + second.stderr
        assert "A demo is running with" in second.stderr, second.stderr

        sites = requests.get(f"{base_url}/api/v1/sites", headers=admin, timeout=10).json()["sites"]
        leaders = {site["id"]: site["leaderInstanceId"] for site in sites}
        assert set(leaders) == set(DEVICES), leaders
        rows = dashboard(base_url, user, password)
        assert set(rows) == set(DEVICES), rows
        for site_id, row in rows.items():
            assert row["leader"] and row["leader"] == leaders[site_id], (site_id, row)  # the id on hover
            assert row["leader_name"].startswith("promsnmp-"), (site_id, row)  # shown by hostname
            agents = len(AGENTS[site_id])
            assert row["cells"][3] == f"{agents} / {agents}", (site_id, row)  # instances live / registered
            # cells[4] is drift: an agent may still be catching up with the seeds just written.
            assert row["cells"][5] == str(len(DEVICES[site_id])), (site_id, row)  # devices

        for site_id, names in DEVICES.items():
            runs = requests.get(
                f"{base_url}/api/v1/sites/{site_id}/discovery-runs", headers=admin, timeout=10
            )
            assert runs.status_code == 200, runs.text
            [run] = runs.json()["discoveryRuns"]
            assert run["status"] == "completed", run
            assert run["devicesFound"] == len(names), run
            inventory = requests.get(
                f"{base_url}/api/v1/sites/{site_id}/inventory", headers=admin, timeout=10
            )
            assert {device["sysName"] for device in inventory.json()["devices"]} == names
            hostnames = {
                instance["hostname"]
                for instance in requests.get(
                    f"{base_url}/api/v1/sites/{site_id}", headers=admin, timeout=10
                ).json()["instances"]
            }
            assert hostnames == AGENTS[site_id]

        # The pid it names for watching a failover is london-colo-01's leader's.
        london = requests.get(f"{base_url}/api/v1/sites/london-colo-01", headers=admin, timeout=10).json()
        [leader] = [instance["hostname"] for instance in london["instances"] if instance["isLeader"]]
        assert f"kill {printed[leader]} ({leader}, london-colo-01's leader)" in output, output[-3000:]

        # Ctrl-C: SIGINT to the demo (a terminal sends it to make as well, which then waits for the demo
        # and dies of the signal itself: the demo's status is make's only when make is left out of it).
        os.kill(demo, signal.SIGINT)
        stopping = time.monotonic()
        assert make.wait(timeout=STOP_SECONDS) == 0, log_path.read_text()[-4000:]
        print(f"make demo: exited 0 {time.monotonic() - stopping:.1f} s after SIGINT")
        left = [pid for pid in everything if running(pid)]
        assert not left, f"still running after the demo exited: {left}"
        assert not [name for name, pid in printed.items() if group_alive(pid)], "a process group outlived it"
        output = log_path.read_text()
        assert len(re.findall(r"INFO promsnmp\.agent deregistered inst_", output)) == len(agent_names)
        if make_run_before is None:
            assert not make_run_database.exists()
        else:
            assert make_run_database.stat().st_mtime_ns == make_run_before
    finally:
        kill_leftovers(make, everything)


@pytest.mark.timeout(READY_SECONDS + STOP_SECONDS + 60)
def test_the_manager_dying_stops_the_demo_with_status_1(tmp_path):
    demo = start_demo(tmp_path / "state", free_port(), tmp_path / "demo.log")
    everything: list[int] = []
    try:
        output = wait_for_line(ANNOUNCED, demo, tmp_path / "demo.log", READY_SECONDS)
        assert READY_LINE.search(output), output[-3000:]
        printed = processes(output)
        everything[:] = descendants(demo.pid)
        os.kill(printed["manager"], signal.SIGKILL)
        assert demo.wait(timeout=STOP_SECONDS) == 1
        output = (tmp_path / "demo.log").read_text()
        assert "stopping: the manager exited with code -9" in output, output[-3000:]
        assert not [pid for pid in everything if running(pid)], "it stopped the agents and snmpd"
    finally:
        kill_leftovers(demo, everything)


def test_demo_refuses_a_directory_it_did_not_make(tmp_path):
    state_dir = tmp_path / "mine"
    state_dir.mkdir()
    (state_dir / "keep.txt").write_text("not the demo's")
    refused = subprocess.run(
        [sys.executable, "manage.py", "demo", "--state-dir", str(state_dir), "--port", str(free_port())],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "is not empty and was not made by the demo" in refused.stderr, refused.stderr
    assert [path.name for path in state_dir.iterdir()] == ["keep.txt"]
    assert (state_dir / "keep.txt").read_text() == "not the demo's"
