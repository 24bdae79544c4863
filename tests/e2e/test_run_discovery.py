"""manage.py run_discovery end to end, the command in a process of its own as an operator runs it.

A real manager (`manage.py serve`, the embedded default), the reference agent as the site's leader and
a real snmpd on two loopback addresses: `run_discovery SITE --wait` starts the run, whose run_discovery
event reaches the agent from the command's process through the outbox; the command prints the run
going to the agent, its progress as the agent reports it and its completion, and exits 0. Ctrl-C while
waiting stops the command, not the run.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.services import token_create
from discovery.models import DiscoveryRun, RunStatus
from instances.models import Instance
from inventory.models import Device
from inventory.seeds import parse_seed, seed_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.agent_support import start_agent_cli, stop_agent, wait_until
from tests.e2e.servers import ROOT, database_url, serve
from tests.snmpd import run_snmpd

SITE = "command-e2e"
TARGETS = 12  # 127.0.0.1-127.0.0.12: the snmpd answers on .1 and .2, ten are silent
PROGRESS = re.compile(
    r"^(run_\w+): running on agent-1 \((inst_\w+)\): (\d+)/12 targets scanned, (\d+) devices found$"
)


def _as_from_a_terminal() -> None:
    """The child's Ctrl-C as a shell gives it: SIGINT neither ignored nor blocked. Both are inherited
    through exec, and a Python started with SIGINT ignored never raises KeyboardInterrupt; the test
    process (pytest, with every library the suite loads) is no terminal and once passed one on (the
    command ignored its Ctrl-C only when run in the whole suite)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Command:
    """`manage.py run_discovery …` on the test database, its output lines read as they come."""

    def __init__(self, *args: str):
        # PYTHONFAULTHANDLER: a command that hangs is sent SIGABRT and prints where each thread stood.
        env = {**os.environ, "DATABASE_URL": database_url(), "PYTHONUNBUFFERED": "1"}
        env["PYTHONFAULTHANDLER"] = "1"
        env.pop("REDIS_URL", None)  # the embedded default: its events go through the server's relay
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_discovery", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_as_from_a_terminal,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))

    def wait_for_line(self, pattern: str, timeout: float) -> str:
        def seen():
            while not self._queue.empty():
                self.lines.append(self._queue.get())
            return next((line for line in self.lines if re.search(pattern, line)), None)

        return wait_until(seen, timeout, f"a line matching {pattern!r} in {self.lines}")

    def finish(self, timeout: float) -> tuple[int, str]:
        """(exit code, stderr); every stdout line is in self.lines."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as hung:
            try:
                status = Path(f"/proc/{self.process.pid}/status").read_text()
                dispositions = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn"))]
            except OSError:
                dispositions = []
            self.process.send_signal(signal.SIGABRT)  # the faulthandler's tracebacks, on stderr
            try:
                self.process.wait(timeout=10)
                stacks = self.process.stderr.read()  # stdout is the reader thread's
            except subprocess.TimeoutExpired:
                stacks = "(no tracebacks)"
            with contextlib.suppress(ProcessLookupError):  # the abort may have ended the whole group
                os.killpg(self.process.pid, signal.SIGKILL)
            raise AssertionError(
                f"{hung}; output {self.lines}; signals {dispositions}; where it stood:\n{stacks}"
            ) from hung
        self._reader.join(timeout=10)  # stdout is read to its end by the reader alone
        while not self._queue.empty():
            self.lines.append(self._queue.get())
        return self.process.returncode, self.process.stderr.read()


def make_seed(port: int) -> str:
    parsed, errors = parse_seed(
        {
            "name": "loopback-lab",
            "targets": [f"127.0.0.1-127.0.0.{TARGETS}"],
            "snmpConfig": {"version": 2, "readCommunity": "lab-ro-2c"},
            # The silent addresses wait out their timeout: the scan lasts two seconds.
            "options": {"timeout": 2000, "retries": 0, "maxConcurrent": 2, "port": port},
        }
    )
    assert parsed is not None, errors
    return seed_create(actor=TEST_ACTOR, site_id=SITE, seed=parsed).pk


@pytest.mark.django_db(transaction=True)
def test_the_command_waits_while_a_real_leader_runs_the_discovery_and_prints_its_progress(tmp_path: Path):
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Command e2e"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="agents", scopes=["instance"], site_id=SITE)

    with (
        run_snmpd(("127.0.0.1", "127.0.0.2"), sys_name="lab-router") as router,
        serve() as (base_url, _server),
    ):
        seed_id = make_seed(router.port)
        log_path = tmp_path / "agent.log"
        agent = start_agent_cli(base_url, instance_token, SITE, "agent-1", log_path)
        try:
            leader = wait_until(
                lambda: Instance.objects.filter(site_id=SITE, is_leader=True).first(), 15, "a leader"
            )
            wait_until(lambda: "event socket open" in log_path.read_text(), 10, "the agent's socket is open")

            command = Command(SITE, "loopback-lab", "--wait", "--poll-interval", "0.1", "--timeout", "60")
            code, err = command.finish(timeout=90)
        finally:
            agent_code = stop_agent(agent, log_path)

    assert code == 0, (command.lines, err)
    run = DiscoveryRun.objects.get()
    first, dispatched, *progress, last = command.lines
    assert first == f"{run.pk}: started on site {SITE} (seeds {seed_id}; {TARGETS} targets estimated)"
    assert dispatched == f"{run.pk}: dispatched to agent-1 ({leader.id})"
    # While the agent scans: its reports, as they come, counts never going back.
    assert progress, command.lines
    counts = []
    for line in progress:
        match = PROGRESS.match(line)
        assert match and match.groups()[:2] == (run.pk, leader.id), line
        counts.append((int(match[3]), int(match[4])))
    assert counts == sorted(counts) and counts[0][0] < TARGETS, counts
    assert last == f"{run.pk}: completed: 12/12 targets scanned, 2 devices found (1 new, 0 updated), 0 errors"
    assert (run.status, run.devices_found, run.requested_by) == (
        RunStatus.COMPLETED,
        2,
        "command:manage.py run_discovery",
    )
    device = Device.objects.get(site_id=SITE)
    assert (device.sys_name, device.discovered_by) == ("lab-router", leader.id)
    assert agent_code == 0


@pytest.mark.django_db(transaction=True)
def test_ctrl_c_stops_the_waiting_not_the_run():
    site_create(actor=TEST_ACTOR, site_id=SITE, values={"label": "Command e2e"})
    make_seed(161)
    command = Command(SITE, "--wait", "--poll-interval", "0.1")
    command.wait_for_line(r": pending: the site has no live leader", 30)
    command.process.send_signal(signal.SIGINT)
    code, err = command.finish(timeout=30)
    run = DiscoveryRun.objects.get()
    assert code == 130, (command.lines, err)
    assert err.strip() == f"CommandError: Stopped waiting; run {run.pk} goes on (pending)."
    assert run.status == RunStatus.PENDING
