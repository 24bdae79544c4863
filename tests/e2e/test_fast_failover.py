"""Fast failover without flapping (issue 4 §4), end to end on a real `manage.py serve` (daphne + embedded
beat) on the test PostgreSQL database.

HEARTBEAT_TIMEOUT_SECONDS is 60, so the heartbeat timeout (the backstop) cannot act within these tests:
only a closed event socket, FAILOVER_GRACE_SECONDS=3 and the health check every second can.
- The leader is a separate OS process (INSTANCE_PROGRAM) killed with SIGKILL → the follower receives
  leader_assigned within FAILOVER_GRACE_SECONDS + LEADER_CHECK_INTERVAL_SECONDS + 2 s of the kill.
- A leader that drops its socket and reconnects within the grace period keeps its leadership, and no
  leader event is sent to anyone.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time

import pytest
import requests

from core.services import token_create
from instances.models import Instance
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import ROOT, EventSocket, serve, websocket_url

pytestmark = pytest.mark.django_db(transaction=True)

GRACE = 3
CHECK = 1
TIMINGS = {
    "FAILOVER_GRACE_SECONDS": str(GRACE),
    "LEADER_CHECK_INTERVAL_SECONDS": str(CHECK),
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "HEARTBEAT_TIMEOUT_SECONDS": "60",
}
BOUND = GRACE + CHECK + 2  # issue 4, Acceptance
LEADER_EVENTS = {"leader_assigned", "leader_revoked"}

# A tiny PromSNMP instance: registers, opens its event socket, heartbeats every second, and says so
# on stdout ("ready {...}", then "heartbeat <status>" after each answer, "event {...}" for each event).
INSTANCE_PROGRAM = r"""
import json, sys, threading, time
import requests
from websockets.sync.client import connect

base_url, token, site, hostname = sys.argv[1:5]
http = requests.Session()
http.headers["Authorization"] = f"Bearer {token}"
answer = http.post(
    f"{base_url}/api/v1/instances/register", json={"siteId": site, "hostname": hostname}, timeout=10
).json()
instance_id = answer["instanceId"]
socket = connect(f"{answer['websocketUrl']}?instanceId={instance_id}&token={token}", legacy=True)
socket.send(json.dumps({"type": "ping", "payload": {}}))
assert json.loads(socket.recv(timeout=10))["type"] == "pong"


def read_events():
    for message in socket:
        print("event", message, flush=True)


threading.Thread(target=read_events, daemon=True).start()
print("ready", json.dumps(answer), flush=True)
while True:
    response = http.post(
        f"{base_url}/api/v1/instances/{instance_id}/heartbeat", json={"status": "healthy"}, timeout=10
    )
    print("heartbeat", response.status_code, flush=True)
    time.sleep(1)
"""


class InstanceProcess:
    """INSTANCE_PROGRAM in its own OS process; its stdout lines arrive on `lines`."""

    def __init__(self, base_url: str, token: str, site: str, hostname: str):
        self.process = subprocess.Popen(
            [sys.executable, "-c", INSTANCE_PROGRAM, base_url, token, site, hostname],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.output.append(line.rstrip())
            self.lines.put(line.rstrip())

    def next_line(self, prefix: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from the instance in {timeout} s: {self.output[-20:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # SIGKILL: no deregister, no close frame; the kernel closes its sockets
            self.process.wait(timeout=10)


@pytest.fixture
def fleet():
    site = "fast-failover"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "Fast failover"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, read_token = token_create(actor=TEST_ACTOR, name="reader", scopes=["read"])
    return site, instance_token, read_token


def register(base_url: str, token: str, site: str, hostname: str) -> dict:
    response = requests.post(
        f"{base_url}/api/v1/instances/register",
        json={"siteId": site, "hostname": hostname},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def site_detail(base_url: str, token: str, site: str) -> dict:
    response = requests.get(
        f"{base_url}/api/v1/sites/{site}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_until(condition, timeout: float = 10, message: str = "") -> float:
    """Poll until condition() is true; → when it became true (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, message or "condition not met"
        time.sleep(0.02)
    return time.monotonic()


def socket_closed_since(instance_id: str, after) -> bool:
    row = Instance.objects.get(pk=instance_id)
    return row.socket_disconnected_at is not None and (after is None or row.socket_disconnected_at > after)


def leader_frames(*sockets: EventSocket) -> list[dict]:
    return [frame for socket in sockets for _, frame in socket.frames if frame["type"] in LEADER_EVENTS]


def test_sigkilled_leader_is_replaced_within_grace_plus_check_interval(fleet):
    site, instance_token, read_token = fleet
    with serve(env=TIMINGS) as (base_url, _server):
        leader = InstanceProcess(base_url, instance_token, site, "promsnmp-leader")
        try:
            registered = json.loads(leader.next_line("ready ").removeprefix("ready "))
            assert registered["isLeader"] is True and registered["leaderTerm"] == 1
            leader_id = registered["instanceId"]

            follower = register(base_url, instance_token, site, "promsnmp-follower")
            assert follower["isLeader"] is False
            follower_id = follower["instanceId"]
            socket = EventSocket(websocket_url(base_url, follower_id, instance_token))
            socket.ping()
            for _ in range(2):
                assert leader.next_line("heartbeat ") == "heartbeat 200"
            # Kill it just after a heartbeat was answered (none in flight): only its socket can tell.
            assert leader.next_line("heartbeat ") == "heartbeat 200"
            killed_at = time.monotonic()
            leader.kill()
        finally:
            leader.kill()

        assigned, assigned_at = socket.wait_for("leader_assigned", BOUND + 2)
        elapsed = assigned_at - killed_at
        print(f"\nfast failover: leader_assigned reached the follower {elapsed:.2f} s after SIGKILL")
        assert elapsed <= BOUND
        # Not before the grace period: a socket that drops is not yet a dead leader.
        assert elapsed >= GRACE
        assert assigned["payload"] == {
            "instanceId": follower_id,
            "previousLeader": leader_id,
            "reason": "previous_leader_unhealthy",
            "leaderTerm": 2,
        }
        assert assigned["siteId"] == site and isinstance(assigned["seq"], int)
        detail = site_detail(base_url, read_token, site)
        assert (detail["leaderInstanceId"], detail["leaderTerm"]) == (follower_id, 2)
        # The dead leader was not deregistered, and its last heartbeat is seconds old (the timeout is
        # 60 s): only the socket path can have replaced it.
        dead = Instance.objects.get(pk=leader_id)
        assert dead.is_leader is False and dead.socket_disconnected_at is not None
        assert dead.last_heartbeat <= dead.socket_disconnected_at
        socket.close()


def test_leader_that_reconnects_within_grace_keeps_leadership_and_nothing_is_sent(fleet):
    site, instance_token, read_token = fleet
    with serve(env=TIMINGS) as (base_url, _server):
        leader_id = register(base_url, instance_token, site, "promsnmp-leader")["instanceId"]
        follower_id = register(base_url, instance_token, site, "promsnmp-follower")["instanceId"]
        leader_socket = EventSocket(websocket_url(base_url, leader_id, instance_token))
        follower_socket = EventSocket(websocket_url(base_url, follower_id, instance_token))
        for socket in (leader_socket, follower_socket):
            socket.ping()
        before = site_detail(base_url, read_token, site)
        assert (before["leaderInstanceId"], before["leaderTerm"]) == (leader_id, 1)

        # The leader's socket drops; the server notes it; the leader reconnects one second later.
        leader_socket.close()
        dropped_at = wait_until(lambda: socket_closed_since(leader_id, None), message="close not recorded")
        time.sleep(1)
        reconnected = EventSocket(websocket_url(base_url, leader_id, instance_token))
        reconnected.ping()
        assert time.monotonic() - dropped_at < GRACE

        # Nothing happens, to anyone, for longer than a failover would take.
        while time.monotonic() < dropped_at + BOUND:
            reconnected.listen(0.1)
            follower_socket.listen(0.1)
        assert leader_frames(reconnected, follower_socket) == []
        after = site_detail(base_url, read_token, site)
        assert (after["leaderInstanceId"], after["leaderTerm"]) == (leader_id, 1)
        row = Instance.objects.get(pk=leader_id)
        assert row.socket_connected_at > row.socket_disconnected_at  # it never heartbeated over HTTP

        # Control: the same leader dropping without reconnecting is replaced (the wait above was not idle).
        reconnected.close()
        dropped_again = wait_until(
            lambda: socket_closed_since(leader_id, row.socket_disconnected_at), message="close not recorded"
        )
        assigned, assigned_at = follower_socket.wait_for("leader_assigned", BOUND + 2)
        assert assigned_at - dropped_again <= BOUND
        assert assigned["payload"] == {
            "instanceId": follower_id,
            "previousLeader": leader_id,
            "reason": "previous_leader_unhealthy",
            "leaderTerm": 2,
        }
        follower_socket.close()


def test_leader_whose_new_socket_opens_before_the_old_one_closes_keeps_leadership(fleet):
    """The reconnect can overtake the close: a client that lost its connection reconnects at once, and the
    server notices the old connection's end only afterwards (a half-open TCP connection ends on a
    timeout). The instance has reconnected within the grace period; it must keep its leadership."""
    site, instance_token, read_token = fleet
    with serve(env=TIMINGS) as (base_url, _server):
        leader_id = register(base_url, instance_token, site, "promsnmp-leader")["instanceId"]
        follower_id = register(base_url, instance_token, site, "promsnmp-follower")["instanceId"]
        follower_socket = EventSocket(websocket_url(base_url, follower_id, instance_token))
        old = EventSocket(websocket_url(base_url, leader_id, instance_token))
        old.ping()
        opened_before = Instance.objects.get(pk=leader_id).socket_connected_at
        new = EventSocket(websocket_url(base_url, leader_id, instance_token))
        new.ping()
        wait_until(lambda: Instance.objects.get(pk=leader_id).socket_connected_at > opened_before)
        old.close()  # returns when the server has answered the close frame
        closed_at = time.monotonic()

        while time.monotonic() < closed_at + BOUND + 1:
            new.listen(0.1)
            follower_socket.listen(0.1)
        assert leader_frames(new, follower_socket) == []
        after = site_detail(base_url, read_token, site)
        assert (after["leaderInstanceId"], after["leaderTerm"]) == (leader_id, 1)
        new.ping()  # its socket is still open and serving
        new.close()
        follower_socket.close()
