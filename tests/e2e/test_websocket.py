"""The event socket end to end: a real WebSocket client (`websockets`) against real daphne processes.

1. The embedded default (`manage.py serve`: one daphne, in-memory channel layer, beat in a thread) on the
   test PostgreSQL database: config_updated and inventory_updated reach every socket of the site, and
   a leader_assigned produced by the embedded health check (in the beat thread, not a request) reaches
   the follower promptly (DESIGN.md).
2. PostgreSQL + Redis with two daphne processes (`serve --no-beat`, REDIS_URL): an event produced in
   one process (an API request on either server, or a service call in this pytest process) reaches
   sockets held by both (issue 4 §1).
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
import uuid

import pytest
import requests
from websockets.exceptions import ConnectionClosed

from core.services import token_create
from instances import election
from sites.models import Site
from sites.services import site_create, site_update
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import EventSocket, delete_redis_keys, serve, websocket_url

pytestmark = pytest.mark.django_db(transaction=True)

ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
EVENT_KEYS = {"type", "timestamp", "siteId", "payload", "seq"}
REDIS_URL = os.environ.get("TEST_WS_REDIS_URL", "redis://127.0.0.1:6379/12")
DELIVERY = 5  # seconds: a bound for "it arrives" (never reached when it works: delivery takes ms)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: requests.Response, status: int = 200) -> dict:
    assert response.status_code == status, f"{response.request.method} {response.url}: {response.text}"
    return response.json()


def register(base_url: str, token: str, site: str, hostname: str) -> dict:
    return ok(
        requests.post(
            f"{base_url}/api/v1/instances/register",
            json={"siteId": site, "hostname": hostname, "version": "0.5.0"},
            headers=bearer(token),
            timeout=10,
        )
    )


def assert_event(event: dict, event_type: str, site: str) -> dict:
    # and requestId when a request (or a task it caused) made the event (core.events)
    assert set(event) - {"requestId"} == EVENT_KEYS, event
    assert isinstance(event.get("requestId", ""), str), event
    assert event["type"] == event_type
    assert event["siteId"] == site
    assert ISO_Z.match(event["timestamp"]), event
    assert isinstance(event["seq"], int) and event["seq"] > 0
    return event["payload"]


def device(name: str, address: str) -> dict:
    return {
        "sysName": name,
        "sysDescr": f"Router {name}",
        "agents": [
            {"type": "community", "address": address, "port": 161, "version": 2, "readCommunity": "pub123"}
        ],
    }


class Heartbeats:
    """Instances heartbeating over HTTP every 0.5 s from a thread, until each is told to stop."""

    def __init__(self, base_url: str, token: str, instance_ids: list[str]):
        self.base_url, self.token = base_url, token
        self.alive = set(instance_ids)
        self.last_sent: dict[str, float] = {}
        self.failures: list[str] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="heartbeats", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join(timeout=15)

    def _run(self) -> None:
        with requests.Session() as http:
            http.headers.update(bearer(self.token))
            while not self.stopped.is_set():
                for instance_id in sorted(self.alive):
                    with self.lock:  # stop() waits for a heartbeat in flight: last_sent is then final
                        if instance_id not in self.alive:
                            continue
                        self.last_sent[instance_id] = time.monotonic()
                        try:
                            response = http.post(
                                f"{self.base_url}/api/v1/instances/{instance_id}/heartbeat",
                                json={"status": "healthy"},
                                timeout=10,
                            )
                        except requests.RequestException as exc:
                            self.failures.append(repr(exc))
                            continue
                        if response.status_code != 200:
                            self.failures.append(f"{response.status_code} {response.text}")
                self.stopped.wait(0.5)

    def stop(self, instance_id: str) -> float:
        """Stop heartbeating one instance; → when its last heartbeat was sent (time.monotonic())."""
        with self.lock:
            self.alive.discard(instance_id)
            return self.last_sent[instance_id]


# --- 1. the embedded default ----------------------------------------------------------------------

TIMINGS = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "LEADER_CHECK_INTERVAL_SECONDS": "1",
}
# A leader_assigned from the embedded health check: within one check interval after the heartbeat
# timeout, plus 2 s.
FAILOVER_BOUND = 1 + 3 + 2


def test_embedded_server_delivers_site_events_and_a_prompt_leader_assigned():
    site = "ws-embedded"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "WS embedded"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    admin = requests.Session()
    admin.headers.update(bearer(admin_token))

    with serve(env=TIMINGS) as (base_url, _process):
        leader = register(base_url, instance_token, site, "promsnmp-a")
        follower = register(base_url, instance_token, site, "promsnmp-b")
        assert (leader["isLeader"], follower["isLeader"]) == (True, False)
        leader_id, follower_id = leader["instanceId"], follower["instanceId"]
        assert leader["websocketUrl"] == f"ws{base_url.removeprefix('http')}/api/v1/ws"

        # Refused sockets: accepted, an error frame, then the close code and a reason reach a real client.
        for url, code in (
            (websocket_url(base_url, leader_id, "psm_no-such-token"), 4401),
            (websocket_url(base_url, "inst_nosuchinstance", instance_token), 4403),
        ):
            refused = EventSocket(url)
            error = refused.receive(DELIVERY)
            assert error is not None and error["type"] == "error", error
            with pytest.raises(ConnectionClosed) as closed:
                refused.connection.recv(timeout=DELIVERY)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == code
            # daphne drops the close reason (ws_protocol.serverClose sends the code only): the reason
            # reaches the client in the error frame.
            assert error["payload"]["detail"] and error["payload"]["error"] in {"unauthorized", "forbidden"}

        with Heartbeats(base_url, instance_token, [leader_id, follower_id]) as heartbeats:
            # The register response's websocketUrl is the socket to open.
            sockets = {
                leader_id: EventSocket(
                    f"{leader['websocketUrl']}?instanceId={leader_id}&token={instance_token}"
                ),
                follower_id: EventSocket(websocket_url(base_url, follower_id, instance_token)),
            }
            for socket in sockets.values():
                assert socket.ping()["siteId"] == site

            # config_updated: a PUT of the site (the full representation) changing three config fields.
            body = {
                "label": "WS embedded",
                "config": {
                    "discoveryCron": "0 30 3 * * *",
                    "collectionInterval": 60000,
                    "timezone": "America/Chicago",
                },
            }
            ok(admin.put(f"{base_url}/api/v1/sites/{site}", json=body, timeout=10))
            config = ok(admin.get(f"{base_url}/api/v1/sites/{site}/config", timeout=10))
            configs = [socket.wait_for("config_updated", DELIVERY)[0] for socket in sockets.values()]
            assert configs[0] == configs[1]  # one event, the same on every socket of the site
            payload = assert_event(configs[0], "config_updated", site)
            assert set(payload) == {"configVersion", "changes", "config"}
            assert payload["configVersion"] == config["configVersion"] == 2
            assert sorted(payload["changes"]) == ["collectionInterval", "discoveryCron", "discoveryTimezone"]
            assert payload["config"] == {
                "discoveryCron": "0 30 3 * * *",
                "collectionInterval": 60000,
                "discoveryTimezone": "America/Chicago",
            }
            assert all(config["config"][name] == value for name, value in payload["config"].items())

            # inventory_updated: a PUT of the inventory.
            put = ok(
                admin.put(
                    f"{base_url}/api/v1/sites/{site}/inventory",
                    json={"devices": [device("edge-1", "127.0.0.11"), device("edge-2", "127.0.0.12")]},
                    timeout=10,
                )
            )
            inventory = ok(admin.get(f"{base_url}/api/v1/sites/{site}/inventory", timeout=10))
            updates = [socket.wait_for("inventory_updated", DELIVERY)[0] for socket in sockets.values()]
            assert updates[0] == updates[1]
            payload = assert_event(updates[0], "inventory_updated", site)
            assert payload == {
                "version": put["version"],
                "changeType": "bulk_import",
                "deviceIds": payload["deviceIds"],
                "source": "import",
                "triggeredBy": "token:operator",
            }
            assert sorted(payload["deviceIds"]) == sorted(d["id"] for d in inventory["devices"])
            assert len(payload["deviceIds"]) == 2
            assert updates[0]["seq"] == configs[0]["seq"] + 1

            # The leader goes silent (its socket stays open); only the embedded beat can replace it.
            silent_since = heartbeats.stop(leader_id)
            assigned, assigned_at = sockets[follower_id].wait_for("leader_assigned", FAILOVER_BOUND + 1)
            revoked, _ = sockets[leader_id].wait_for("leader_revoked", DELIVERY)
            assert not heartbeats.failures, heartbeats.failures

        elapsed = assigned_at - silent_since
        print(
            f"\nembedded: leader_assigned reached the follower {elapsed:.2f} s after the leader's last "
            "heartbeat"
        )
        assert elapsed <= FAILOVER_BOUND
        term = ok(admin.get(f"{base_url}/api/v1/sites/{site}", timeout=10))["leaderTerm"]
        assert assert_event(assigned, "leader_assigned", site) == {
            "instanceId": follower_id,
            "previousLeader": leader_id,
            "reason": "previous_leader_unhealthy",
            "leaderTerm": term,
        }
        assert assert_event(revoked, "leader_revoked", site) == {
            "instanceId": leader_id,
            "newLeader": follower_id,
            "reason": "health_check_failed",
            "leaderTerm": term,
        }
        assert term == 2
        # Published in that order: assigned, then revoked; each socket saw only its own leader event.
        assert revoked["seq"] == assigned["seq"] + 1 and assigned["seq"] > updates[0]["seq"]
        for socket in sockets.values():
            seqs = [frame["seq"] for _, frame in socket.frames if frame["type"] != "pong"]
            assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)) == 3
            socket.close()


# --- 2. PostgreSQL + Redis, two daphne processes --------------------------------------------------


@pytest.fixture
def redis_prefix():
    """A channel-layer prefix of this run's own in a Redis database of these tests; only its keys go."""
    prefix = f"psm-ws-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_redis_keys(REDIS_URL, f"{prefix}*")


def test_events_cross_daphne_processes_through_redis(redis_prefix, settings):
    site = "ws-redis"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "WS redis"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    admin = requests.Session()
    admin.headers.update(bearer(admin_token))
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": redis_prefix}

    with (
        serve(env=env, args=["--no-beat"]) as (server_a, _a),
        serve(env=env, args=["--no-beat"]) as (server_b, _b),
    ):
        ready = ok(requests.get(f"{server_a}/health/ready", timeout=10))
        assert ready["checks"]["redis"] == "ok", ready
        one = register(server_a, instance_token, site, "promsnmp-1")["instanceId"]
        two = register(server_b, instance_token, site, "promsnmp-2")["instanceId"]
        on_a = EventSocket(websocket_url(server_a, one, instance_token))
        on_b = EventSocket(websocket_url(server_b, two, instance_token))
        for socket in (on_a, on_b):
            socket.ping()

        # A change through B's API → the socket on A (and the one on B).
        ok(
            admin.patch(
                f"{server_b}/api/v1/sites/{site}", json={"config": {"cacheMaxEntries": 500}}, timeout=10
            )
        )
        from_b = [socket.wait_for("config_updated", DELIVERY)[0] for socket in (on_a, on_b)]
        assert from_b[0] == from_b[1]
        assert assert_event(from_b[0], "config_updated", site) == {
            "configVersion": 2,
            "changes": ["cacheMaxEntries"],
            "config": {"cacheMaxEntries": 500},
        }

        # A change through A's API → the socket on B (and the one on A).
        put = ok(
            admin.put(
                f"{server_a}/api/v1/sites/{site}/inventory",
                json={"devices": [device("core-1", "127.0.0.21")]},
                timeout=10,
            )
        )
        from_a = [socket.wait_for("inventory_updated", DELIVERY)[0] for socket in (on_a, on_b)]
        assert from_a[0] == from_a[1]
        payload = assert_event(from_a[0], "inventory_updated", site)
        assert (payload["version"], payload["changeType"], len(payload["deviceIds"])) == (
            put["version"],
            "bulk_import",
            1,
        )

        # Changes made in this pytest process (as a Celery worker would make them), on the same Redis.
        settings.REDIS_URL = REDIS_URL
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {"hosts": [REDIS_URL], "prefix": redis_prefix},
            }
        }
        site_update(actor=TEST_ACTOR, site_id=site, values={"cache_expiration": 600000}, partial=True)
        here = [socket.wait_for("config_updated", DELIVERY)[0] for socket in (on_a, on_b)]
        assert here[0] == here[1]
        assert assert_event(here[0], "config_updated", site) == {
            "configVersion": 3,
            "changes": ["cacheExpiration"],
            "config": {"cacheExpiration": 600000},
        }
        # A leadership change made here: instance groups span processes too.
        assert Site.objects.get(pk=site).leader_term == 1
        election.leader_assign(site_id=site, actor=TEST_ACTOR, instance_id=two)
        assigned, _ = on_b.wait_for("leader_assigned", DELIVERY)
        revoked, _ = on_a.wait_for("leader_revoked", DELIVERY)
        assert assert_event(assigned, "leader_assigned", site) == {
            "instanceId": two,
            "previousLeader": one,
            "reason": "manual_assignment",
            "leaderTerm": 2,
        }
        assert assert_event(revoked, "leader_revoked", site) == {
            "instanceId": one,
            "newLeader": two,
            "reason": "manual_assignment",
            "leaderTerm": 2,
        }
        # Each socket got its own leader event only, and one number sequence spans both processes.
        for socket in (on_a, on_b):
            assert not socket.listen(0.3)
        start = from_b[0]["seq"]
        assert [from_a[0]["seq"], here[0]["seq"], assigned["seq"], revoked["seq"]] == [
            start + 1,
            start + 2,
            start + 3,
            start + 4,
        ]
        on_a.close()
        on_b.close()


def test_a_burst_of_events_beyond_the_layers_default_capacity_reaches_the_socket(redis_prefix, settings):
    """channels-redis queues every message for one server process in one Redis key, and its default
    capacity (100) counts against that key: a burst of group sends faster than the process reads them was
    dropped past the hundredth (bench/scaling.py lost 65 % of 1,200 events to 400 sites). 300 events sent
    back to back, as the relay sends a backlog, while the process is busy, must all arrive, in order."""
    from asgiref.sync import async_to_sync
    from channels_redis.core import RedisChannelLayer

    from core.events import site_group

    site = "ws-burst"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "WS burst"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": redis_prefix}
    # The sender, configured as the project's processes configure theirs (the check is the sender's).
    capacity = settings.CHANNEL_LAYER_CAPACITY
    layer = RedisChannelLayer(hosts=[REDIS_URL], prefix=redis_prefix, capacity=capacity)
    burst = 300
    assert 100 < burst <= capacity

    async def send_burst():
        for version in range(1, burst + 1):
            event = {"type": "inventory_updated", "timestamp": "2026-12-05T00:00:00Z", "siteId": site}
            event["payload"] = {"version": version}
            await layer.group_send(site_group(site), {"type": "event.message", "event": event})
        await layer.close_pools()

    with serve(env=env, args=["--no-beat"]) as (server, process):
        instance_id = register(server, instance_token, site, "burst-1")["instanceId"]
        socket = EventSocket(websocket_url(server, instance_id, instance_token))
        socket.ping()
        # The server process stopped while the burst is sent: a process busier than its senders, made
        # certain (a live one may happen to read as fast as this test sends).
        os.kill(process.pid, signal.SIGSTOP)
        try:
            async_to_sync(send_burst)()
        finally:
            os.kill(process.pid, signal.SIGCONT)
        versions = []
        deadline = time.monotonic() + 30
        while len(versions) < burst and time.monotonic() < deadline:
            versions += [frame["payload"]["version"] for frame in socket.listen(0.5)]
        socket.close()
    assert versions == list(range(1, burst + 1))


def test_idle_sockets_stay_open_on_the_redis_layer(redis_prefix):
    """channels-redis waits with a 5 s blocking pop; with redis-py 8's default 5 s read timeout that read
    timed out first and the consumer holding it crashed (close 1011), about one socket per process every
    5 idle seconds (found by bench/fanout.py). Sockets idle for three such rounds must all stay open."""
    site = "ws-idle"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "WS idle"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, admin_token = token_create(actor=TEST_ACTOR, name="operator", scopes=["admin"])
    env = {"REDIS_URL": REDIS_URL, "CHANNEL_LAYER_PREFIX": redis_prefix}

    with serve(env=env, args=["--no-beat"]) as (server, _):
        ids = [register(server, instance_token, site, f"idle-{n}")["instanceId"] for n in range(3)]
        sockets = [EventSocket(websocket_url(server, instance_id, instance_token)) for instance_id in ids]
        for socket in sockets:
            socket.ping()
        idle_until = time.monotonic() + 16
        while time.monotonic() < idle_until:
            for socket in sockets:
                try:
                    frames = socket.listen(0.5)
                except ConnectionClosed as closed:
                    pytest.fail(f"a socket closed while idle: {closed!r}")
                assert frames == [], frames
        ok(
            requests.patch(
                f"{server}/api/v1/sites/{site}",
                json={"config": {"cacheMaxEntries": 700}},
                headers=bearer(admin_token),
                timeout=10,
            )
        )
        for socket in sockets:
            event, _ = socket.wait_for("config_updated", DELIVERY)
            assert assert_event(event, "config_updated", site)["config"] == {"cacheMaxEntries": 700}
            assert socket.ping()["type"] == "pong"
            socket.close()
