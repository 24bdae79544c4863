"""`make demo` (`manage.py demo`): a living fleet on this machine in one command, on loopback only.

It starts, in this order:
- net-snmp's snmpd, one process per demo device, each on an address of its own in 127.0.0.0/8 and all
  at one free UDP port: v2c devices answer the community of the spec's example, v3 devices its USM
  user (SHA-256 / AES-256);
- the manager in the embedded default (`manage.py serve`: SQLite, beat inside) on HOST:PORT, after
  migrate, collectstatic and bootstrap (the admin user and token, printed), with the three sites of the
  spec's examples (chicago-pop-01, nyc-dc-01, london-colo-01), their seeds (config/demo_fleet.py, the
  data `manage.py seed_demo` writes too) and one instance token per agent;
- one reference agent (`python -m agent --loopback-only`) per instance: two in london-colo-01, whose
  minReplicas is 2 in the spec's example (chicago-pop-01's is 1 here: it has one agent);
- a first discovery run of every site once it has its leader and its instances.
Then it prints what to open and how to log in, and waits. Ctrl-C (SIGINT) or SIGTERM stops every process
(agents first, so that they deregister while the manager still answers) and `run` answers 0. The
manager exiting on its own stops the rest and `run` answers 1; an agent or an snmpd that exits is
reported and left so (stop a leader to watch the failover).

Every process logs to logs/<name>.log; the terminal shows the manager's and the agents' lines without
the one-per-request lines. Its state is a directory of its own (default var/demo/): the SQLite
database, the secrets, the static files, the agents' spools, snmpd's configs and the logs. It is
emptied at every start; a non-empty directory that the demo did not make is refused, and so is one
that a running demo holds (a lock on its marker file). It never uses the `make run` database,
DATABASE_URL or REDIS_URL: `main` starts the command again (exec, same pid) in an environment of its
own (`environment`), and `run` works in that one. Shorter timings than the defaults (TIMINGS) make
heartbeats and failover visible within seconds.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command

from config.demo_fleet import CONTACT, SITES, V2C, V3, Device, demo_fleet_create
from config.run_prod import close_database_connections, stop_all
from core.audit import Actor
from core.services import token_create

DEFAULT_STATE_DIR = settings.BASE_DIR / "var" / "demo"
MARKER = ".promsnmp-demo"  # in a state dir the demo made; also its lock (one demo per directory)
STATE_DIR_VARIABLE = "PROMSNMP_DEMO_STATE_DIR"  # set by `main` for the command it starts again
# Settings of the user's environment that would take the demo off its own state or off the embedded
# default: dropped for the demo and every process it starts.
DROPPED_SETTINGS = (
    "DATABASE_URL",
    "REDIS_URL",
    "SECRET_KEY",
    "FIELD_ENCRYPTION_KEYS",
    "PUBLIC_URL",
    "PUBLIC_WS_URL",
    "WS_PORT",
    "DJANGO_SETTINGS_MODULE",
)
TIMINGS = {
    "HEARTBEAT_INTERVAL_SECONDS": "5",
    "HEARTBEAT_TIMEOUT_SECONDS": "15",
    "LEADER_CHECK_INTERVAL_SECONDS": "5",
}
MANAGER_READY_SECONDS = 60
FLEET_READY_SECONDS = 120  # leaders, instances and the first runs; past it the demo says what is missing
SNMPD_READY_SECONDS = 10
POLL_SECONDS = 0.25
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
NAME_WIDTH = 18  # the longest process name ("promsnmp-london-2") and a little more
OUTPUT_LOCK = threading.Lock()
REQUEST_LOG_LINE = re.compile(r" INFO promsnmp\.request ")  # kept in the log file, not shown

FINISHED_RUN_STATUSES = ("completed", "failed", "timed_out", "cancelled")


class DemoError(Exception):
    """The demo cannot start or go on; the message says why."""


class Stopped(Exception):
    """SIGINT or SIGTERM during the start."""


# --- the first process: its own state and environment ------------------------------------------------


def main(*, state_dir: Path, host: str, port: int) -> int:
    """The command's entry point: in the user's environment, prepare the state directory and start the
    command again in the demo's own environment (exec: the same pid, so signals reach it); in that one,
    run the demo."""
    state_dir = state_dir.resolve()
    if in_demo_environment(state_dir):
        return run(state_dir=state_dir, host=host, port=port)
    lock = reset_state_dir(state_dir)
    os.set_inheritable(lock, True)  # the lock is held by the demo until it exits
    # Blocked across the exec, where a Ctrl-C would be lost, until `run` handles them: one that comes
    # meanwhile is delivered then (the mask and pending signals survive exec).
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    sys.stdout.flush()
    sys.stderr.flush()
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "demo"]
    command += ["--state-dir", str(state_dir), "--host", host, "--port", str(port)]
    os.execve(sys.executable, command, environment(state_dir, host, port))  # noqa: S606 (our own command)
    raise AssertionError("unreachable")  # pragma: no cover


def in_demo_environment(state_dir: Path) -> bool:
    return (
        os.environ.get(STATE_DIR_VARIABLE) == str(state_dir)
        and Path(settings.VAR_DIR).resolve() == state_dir
        and settings.EMBEDDED
        and settings.DATABASES["default"]["ENGINE"].endswith("sqlite3")
    )


def environment(state_dir: Path, host: str, port: int) -> dict[str, str]:
    """The demo's environment, for it and every process it starts."""
    env = {name: value for name, value in os.environ.items() if name not in DROPPED_SETTINGS}
    env.update(TIMINGS)
    env.update(
        {
            STATE_DIR_VARIABLE: str(state_dir),
            "VAR_DIR": str(state_dir),
            "HOST": host,
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def reset_state_dir(state_dir: Path) -> int:
    """Empty the state directory (all but its marker) and return the file descriptor of the marker, locked:
    one demo per directory. Refuses a non-empty directory without the marker, and one a demo is using."""
    if state_dir.exists() and not state_dir.is_dir():
        raise DemoError(f"{state_dir} is not a directory.")
    marker = state_dir / MARKER
    if state_dir.is_dir() and any(state_dir.iterdir()) and not marker.is_file():
        raise DemoError(
            f"{state_dir} is not empty and was not made by the demo, which empties its state directory at "
            "every start: give another one with --state-dir."
        )
    state_dir.mkdir(parents=True, exist_ok=True)
    lock = os.open(marker, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        raise DemoError(f"A demo is running with {state_dir}: stop it first (Ctrl-C).") from None
    os.write(lock, b"made by `manage.py demo`, which empties this directory at every start\n")
    for entry in state_dir.iterdir():
        if entry.name == MARKER:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return lock


# --- the demo, in its own environment ------------------------------------------------------------------


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    kind: str  # "manager", "agent" or "snmpd"
    reported: bool = False


@dataclass
class Demo:
    state_dir: Path
    host: str
    port: int
    stop: threading.Event
    processes: list[Process] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        """The manager as the browser and the agents reach it: a wildcard HOST through loopback."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host  # noqa: S104
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def manager(self) -> Process | None:
        return next((process for process in self.processes if process.kind == "manager"), None)

    def check(self) -> None:
        """Between the steps of the start: stop when asked, fail when the manager died."""
        if self.stop.is_set():
            raise Stopped
        manager = self.manager()
        if manager is not None and manager.popen.poll() is not None:
            manager.reported = True
            raise DemoError(f"the manager exited with code {manager.popen.returncode}")

    def wait_for(self, condition: Callable[[], Any], timeout: float) -> Any:
        """condition()'s first answer other than None (not yet) within `timeout` seconds, else None;
        checks between tries."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            value = condition()
            if value is not None or time.monotonic() >= deadline:
                return value
            self.stop.wait(POLL_SECONDS)


def run(*, state_dir: Path, host: str, port: int) -> int:
    """Start everything, report, wait for SIGINT or SIGTERM (→ 0) or the manager's end (→ 1)."""
    demo = Demo(state_dir=state_dir, host=host, port=port, stop=threading.Event())
    for signum in STOP_SIGNALS:
        signal.signal(signum, lambda *_: demo.stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # blocked by `main`; before any child starts
    try:
        say("demo", f"state in {state_dir} (emptied at every start); loopback addresses only")
        snmp_port = start_devices(demo)
        demo.check()
        login, tokens, launcher_token = prepare(snmp_port)
        demo.check()
        start_manager(demo)
        start_agents(demo, tokens)
        api = Api(demo.url, launcher_token)
        first_discovery(demo, api)
        announce(demo, api, login)
        while not demo.stop.wait(0.5):
            watch(demo)
        return 0
    except Stopped:
        return 0
    except DemoError as exc:
        say("demo", f"stopping: {exc}")
        return 1
    finally:
        stop_processes(demo.processes)
        say("demo", "stopped")


def prepare(snmp_port: int) -> tuple[tuple[str, str], dict[str, str], str]:
    """The database: migrate, static files, bootstrap, the sites with their seeds, an instance token per
    agent and the launcher's own token. Returns ((user, password), {hostname: token}, launcher token)."""
    call_command("migrate", interactive=False, verbosity=0)
    call_command("collectstatic", interactive=False, verbosity=0)
    output = io.StringIO()
    call_command("bootstrap", stdout=output)  # the admin user and token: printed, as by `make run`
    for line in output.getvalue().splitlines():
        say("bootstrap", line)
    created = re.search(r"Admin user created: (\S+) / (\S+)", output.getvalue())
    if created is None:
        raise DemoError(f"bootstrap created no admin user:\n{output.getvalue()}")
    actor = Actor.command("demo")
    # Sites and seeds only: discovery finds the devices snmpd plays.
    demo_fleet_create(actor=actor, sites=SITES, snmp_port=snmp_port, with_devices=False)
    tokens = {}
    for site in SITES:
        say(
            "demo",
            f"site {site.id}: seeds " + ", ".join(f"{s.name} {' '.join(s.targets)}" for s in site.seeds),
        )
        for hostname in site.agents:
            _, tokens[hostname] = token_create(
                actor=actor, name=f"demo agent {hostname}", scopes=["instance"], site_id=site.id
            )
    _, launcher = token_create(actor=actor, name="demo launcher", scopes=["write"], expires_days=1)
    close_database_connections()  # the manager and the agents write from now on
    return (created.group(1), created.group(2)), tokens, launcher


# --- processes ---------------------------------------------------------------------------------------------


def start(demo: Demo, name: str, kind: str, command: list[str], *, env=None, quiet: bool = False) -> Process:
    """A child leading a process group of its own (stop_processes reaches what it starts). Its output goes
    to logs/<name>.log, and unless `quiet` also to stdout, prefixed with its name, without the request
    log lines (one per heartbeat)."""
    log_path = log_file(demo, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("wb")
    try:
        popen = subprocess.Popen(
            command,
            cwd=settings.BASE_DIR,
            env=env or dict(os.environ),
            stdout=log if quiet else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
        )
    except BaseException:
        log.close()
        raise
    if quiet:
        log.close()
    else:
        threading.Thread(target=copy_output, args=(name, popen.stdout, log), daemon=True).start()
    process = Process(name=name, popen=popen, kind=kind)
    demo.processes.append(process)
    return process


def log_file(demo: Demo, name: str) -> Path:
    return demo.state_dir / "logs" / f"{name}.log"


def snmpd_binary() -> str:
    found = shutil.which("snmpd", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))
    if not found:
        raise DemoError("net-snmp's snmpd is missing: `make system-packages` installs it (Debian: snmpd).")
    return found


def snmpd_config(device: Device) -> str:
    if device.snmp["version"] == 3:
        user, auth, priv = V3["securityName"], V3["authPassphrase"], V3["privPassphrase"]
        access = [f'createUser {user} SHA-256 "{auth}" AES-256 "{priv}"', f"rouser {user} priv"]
    else:
        access = [f"rocommunity {V2C['readCommunity']} 127.0.0.0/8"]
    return "\n".join(
        [
            *access,
            f"sysName {device.sys_name}",
            f"sysDescr {device.sys_descr}",
            f"sysLocation {device.sys_location}",
            f"sysContact {CONTACT}",
            "sysServices 72",
            "dontLogTCPWrappersConnects yes",
            "",
        ]
    )


def free_udp_port(addresses: list[str]) -> int:
    """A UDP port free on every one of the addresses (each bound, then let go)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as first:
            first.bind((addresses[0], 0))
            port = first.getsockname()[1]
            try:
                for address in addresses[1:]:
                    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
                        other.bind((address, port))
            except OSError:
                continue
            return port
    raise DemoError(f"no UDP port is free on all of {', '.join(addresses)}")


def start_devices(demo: Demo) -> int:
    """One snmpd per device, all at one free UDP port (another one if a port was taken meanwhile);
    returns the port once every one of them listens."""
    binary = snmpd_binary()
    devices = [device for site in SITES for device in site.devices]
    for _attempt in range(3):
        port = free_udp_port([device.address for device in devices])
        started = []
        for device in devices:
            directory = demo.state_dir / "snmpd" / device.sys_name
            (directory / "persist").mkdir(parents=True, exist_ok=True)
            (directory / "snmpd.conf").write_text(snmpd_config(device))
            command = [binary, "-f", "-Lo", "-C", "-c", str(directory / "snmpd.conf"), "-I", "-smux"]
            env = {**os.environ, "SNMP_PERSISTENT_DIR": str(directory / "persist"), "MIBS": ""}
            process = start(
                demo,
                device.sys_name,
                "snmpd",
                [*command, f"udp:{device.address}:{port}"],
                env=env,
                quiet=True,
            )
            started.append((process, log_file(demo, device.sys_name)))
        if all(
            demo.wait_for(lambda p=p, log=log: snmpd_listens(p, log), SNMPD_READY_SECONDS)
            for p, log in started
        ):
            say(
                "demo",
                f"snmpd: {len(devices)} devices at UDP port {port}: "
                + ", ".join(
                    f"{d.sys_name} {d.address} (v{'3' if d.snmp['version'] == 3 else '2c'})" for d in devices
                ),
            )
            return port
        failed = [process for process, _ in started if process.popen.poll() is not None]
        stop_all([process.popen for process, _ in started])
        demo.processes = [process for process in demo.processes if process.kind != "snmpd"]
        say(
            "demo",
            f"snmpd did not start at UDP port {port} ({', '.join(p.name for p in failed)}): another port",
        )
    raise DemoError(f"snmpd did not start; see its logs in {demo.state_dir / 'logs'}")


def snmpd_listens(process: Process, log: Path) -> bool | None:
    """True once snmpd says it runs (it prints its version after opening its port); None while it starts.
    False (the wait ends) when it exited."""
    if process.popen.poll() is not None:
        return False
    text = log.read_text(errors="replace") if log.exists() else ""
    return True if "NET-SNMP version" in text else None


def start_manager(demo: Demo) -> None:
    command = [sys.executable, str(settings.BASE_DIR / "manage.py"), "serve", "--host", demo.host]
    start(demo, "manager", "manager", [*command, "--port", str(demo.port)])
    if not demo.wait_for(lambda: answers(f"{demo.url}/health/ready"), MANAGER_READY_SECONDS):
        raise DemoError(
            f"the manager did not answer {demo.url}/health/ready within {MANAGER_READY_SECONDS} s"
        )


def start_agents(demo: Demo, tokens: dict[str, str]) -> None:
    for site in SITES:
        for hostname in site.agents:
            command = [sys.executable, "-m", "agent", "--url", demo.url, "--site", site.id]
            command += ["--hostname", hostname, "--loopback-only"]
            command += ["--state-dir", str(demo.state_dir / "agents" / hostname)]
            start(demo, hostname, "agent", command, env={**os.environ, "PROMSNMP_TOKEN": tokens[hostname]})


def stop_processes(processes: list[Process]) -> None:
    """SIGTERM to the agents first (they deregister while the manager answers), then to the rest; SIGKILL
    to what is still there after run_prod's STOP_TIMEOUT_SECONDS, and to what is left in their groups."""
    stop_all([process.popen for process in processes if process.kind == "agent"])
    stop_all([process.popen for process in processes if process.kind != "agent"])


def watch(demo: Demo) -> None:
    """While the demo runs: the manager's end ends it; any other process's end is said once."""
    for process in demo.processes:
        if process.reported or process.popen.poll() is None:
            continue
        if process.kind == "manager":
            demo.check()  # raises
        process.reported = True
        say("demo", f"{process.name} (pid {process.popen.pid}) exited with code {process.popen.returncode}")


# --- the first discovery and the report ------------------------------------------------------------------


class Api:
    """The manager's REST API with the launcher's token (no proxy: it is on loopback)."""

    def __init__(self, base_url: str, token: str):
        self.base_url = base_url
        self.token = token
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, method: str, path: str, body: dict | None = None) -> dict:
        request = urllib.request.Request(  # noqa: S310 (an http:// URL of our own)
            self.base_url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with self.opener.open(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    def get(self, path: str) -> dict | None:
        """The answer, or None while the manager does not answer (overloaded, restarting)."""
        try:
            return self.call("GET", path)
        except (OSError, ValueError):
            return None


def answers(url: str) -> bool | None:
    """True when the URL answers 200, else None (not yet)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as response:
            return True if response.status == 200 else None
    except OSError:
        return None


def sites_led(api: Api) -> dict[str, dict] | None:
    """{site id: site} once every demo site has its leader and all its instances, else None."""
    listed = api.get("/api/v1/sites?limit=100")
    if listed is None:
        return None
    sites = {site["id"]: site for site in listed["sites"]}
    for site in SITES:
        found = sites.get(site.id)
        if found is None or not found["leaderInstanceId"] or found["instanceCount"] < len(site.agents):
            return None
    return sites


def first_discovery(demo: Demo, api: Api) -> None:
    """Once every site has its leader: a run of all its seeds; then wait for them to end, and report."""
    sites = demo.wait_for(lambda: sites_led(api), FLEET_READY_SECONDS)
    if sites is None:
        say(
            "demo",
            f"not every site has its leader and instances after {FLEET_READY_SECONDS} s: see the agents",
        )
        return
    runs = {}
    for site in SITES:
        try:
            answer = api.call("POST", f"/api/v1/sites/{site.id}/discovery-runs", {})
        except (OSError, ValueError) as exc:
            raise DemoError(f"could not start a discovery run on {site.id}: {exc}") from exc
        runs[site.id] = answer["runId"]
        say(
            "demo", f"{site.id}: leader {sites[site.id]['leaderInstanceId']}, discovery run {answer['runId']}"
        )

    def finished() -> dict[str, dict] | None:
        done = {}
        for site_id, run_id in runs.items():
            run = api.get(f"/api/v1/sites/{site_id}/discovery-runs/{run_id}")
            if run is None or run["status"] not in FINISHED_RUN_STATUSES:
                return None
            done[site_id] = run
        return done

    done = demo.wait_for(finished, FLEET_READY_SECONDS)
    if done is None:
        say(
            "demo",
            "the first discovery runs have not ended yet: see GET /api/v1/sites/{siteId}/discovery-runs",
        )
        return
    complete = True
    for site in SITES:
        run = done[site.id]
        expected = len(site.devices)
        complete &= run["status"] == "completed" and run["devicesFound"] >= expected
        detail = f": {run['errorDetail']}" if run.get("errorDetail") else ""
        say(
            "demo",
            f"{site.id}: run {run['status']}, {run['devicesFound']} of {expected} devices found{detail}",
        )
    instances = sum(len(site.agents) for site in SITES)
    devices = sum(done[site.id]["devicesFound"] for site in SITES)
    elapsed = time.monotonic() - demo.started
    if complete:
        say(
            "demo",
            f"fleet ready in {elapsed:.1f} s: {len(SITES)} sites with a leader each, {instances} "
            f"instances, {devices} devices",
        )
    else:
        say("demo", f"fleet up in {elapsed:.1f} s, but a first discovery run did not find every device")


def announce(demo: Demo, api: Api, login: tuple[str, str]) -> None:
    user, password = login
    pids = ", ".join(f"{process.name} pid {process.popen.pid}" for process in demo.processes)
    say("demo", f"open {demo.url}/admin/fleet/ and log in as {user} / {password}")
    say("demo", f"API: {demo.url}/api/v1/docs with the admin token printed above")
    say("demo", f"processes: {pids}")
    # The site with two agents: stopping its leader shows the failover.
    site = next(site for site in SITES if len(site.agents) > 1)
    detail = api.get(f"/api/v1/sites/{site.id}") or {}
    leader = next((i["hostname"] for i in detail.get("instances", []) if i["isLeader"]), None)
    process = next((p for p in demo.processes if p.name == leader), None)
    if process is not None:
        say(
            "demo",
            f"kill {process.popen.pid} ({leader}, {site.id}'s leader) to watch the other agent take over",
        )
    say("demo", "Ctrl-C stops everything")


# --- output ---------------------------------------------------------------------------------------------


def copy_output(name: str, stream, log) -> None:
    with log:
        for line in iter(stream.readline, b""):
            log.write(line)
            log.flush()
            text = line.decode(errors="replace")
            if not REQUEST_LOG_LINE.search(text):
                say(name, text)


def say(name: str, line: str) -> None:
    with OUTPUT_LOCK:
        sys.stdout.write(f"{name:<{NAME_WIDTH}}| {line.rstrip()}\n")
        sys.stdout.flush()
