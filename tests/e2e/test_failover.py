"""Failover end to end: a real `manage.py serve` (daphne + embedded beat) on the test PostgreSQL database.

With HEARTBEAT_TIMEOUT_SECONDS=3 and LEADER_CHECK_INTERVAL_SECONDS=1, a leader that stops heartbeating
is replaced by a live follower within 5 s (issue 2, Acceptance). Nothing in the test runs the check:
only the django-celery-beat entry inside the server process can.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django_celery_beat.models import PeriodicTask

from core.models import AuditLog
from core.services import token_create
from sites.services import site_create
from tests.conftest import TEST_ACTOR
from tests.e2e.servers import serve

pytestmark = pytest.mark.django_db(transaction=True)

FAILOVER_BOUND_SECONDS = 5
TIMINGS = {
    "HEARTBEAT_INTERVAL_SECONDS": "1",
    "HEARTBEAT_TIMEOUT_SECONDS": "3",
    "LEADER_CHECK_INTERVAL_SECONDS": "1",
}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_leader_that_stops_heartbeating_is_replaced_within_five_seconds():
    site = "failover-site"
    site_create(actor=TEST_ACTOR, site_id=site, values={"label": "Failover"})
    _, instance_token = token_create(actor=TEST_ACTOR, name="instances", scopes=["instance"], site_id=site)
    _, read_token = token_create(actor=TEST_ACTOR, name="reader", scopes=["read"])

    with serve(env=TIMINGS) as (base_url, _process):
        http = requests.Session()
        http.headers.update(bearer(instance_token))

        def register(hostname: str) -> dict:
            response = http.post(
                f"{base_url}/api/v1/instances/register",
                json={"siteId": site, "hostname": hostname},
                timeout=10,
            )
            assert response.status_code == 200, response.text
            return response.json()

        leader = register("promsnmp-a")
        follower = register("promsnmp-b")
        assert (leader["isLeader"], follower["isLeader"]) == (True, False)
        leader_id, follower_id = leader["instanceId"], follower["instanceId"]

        # The leader heartbeats a few times, then goes silent; its last heartbeat's send time is t0.
        for _ in range(3):
            leader_last_sent = time.monotonic()
            response = http.post(
                f"{base_url}/api/v1/instances/{leader_id}/heartbeat", json={"status": "healthy"}, timeout=10
            )
            assert response.status_code == 200, response.text
            assert response.json()["isLeader"] is True

        # Only the follower heartbeats from now on, from its own thread.
        answers: list[tuple[float, dict]] = []
        failures: list[str] = []
        stop = threading.Event()

        def follower_heartbeats() -> None:
            with requests.Session() as own:
                own.headers.update(bearer(instance_token))
                while not stop.is_set():
                    try:
                        response = own.post(
                            f"{base_url}/api/v1/instances/{follower_id}/heartbeat",
                            json={"status": "healthy"},
                            timeout=10,
                        )
                    except requests.RequestException as exc:
                        failures.append(repr(exc))
                        return
                    if response.status_code != 200:
                        failures.append(f"{response.status_code} {response.text}")
                        return
                    answers.append((time.monotonic(), response.json()))
                    stop.wait(0.2)

        thread = threading.Thread(target=follower_heartbeats, name="follower-heartbeats")
        thread.start()
        try:
            deadline = leader_last_sent + FAILOVER_BOUND_SECONDS
            while time.monotonic() < deadline and not failures and not any(b["isLeader"] for _, b in answers):
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(timeout=15)

        assert not failures, failures
        became_leader_at = next((at for at, body in answers if body["isLeader"]), None)
        assert became_leader_at is not None, (
            f"the follower was not leader {FAILOVER_BOUND_SECONDS} s after the leader's last heartbeat; "
            f"answers: {[body for _, body in answers][-5:]}"
        )
        elapsed = became_leader_at - leader_last_sent
        print(f"\nfailover: the follower learned it leads {elapsed:.2f} s after the leader's last heartbeat")
        assert elapsed <= FAILOVER_BOUND_SECONDS
        first = next(body for _, body in answers if body["isLeader"])
        assert first["leaderTerm"] == 2

        detail = requests.get(f"{base_url}/api/v1/sites/{site}", headers=bearer(read_token), timeout=10)
        assert detail.status_code == 200, detail.text
        assert detail.json()["leaderInstanceId"] == follower_id
        by_id = {instance["id"]: instance for instance in detail.json()["instances"]}
        assert by_id[follower_id]["isLeader"] is True
        assert by_id[leader_id]["isLeader"] is False
        assert by_id[leader_id]["status"] == "offline"

    rows = list(AuditLog.objects.filter(site_id=site, action="leader_assigned").order_by("id"))
    assert [
        (row.details["reason"], row.details["leader"], row.details["previousLeader"]) for row in rows
    ] == [
        ("no_previous_leader", leader_id, None),
        ("previous_leader_unhealthy", follower_id, leader_id),
    ]
    assert rows[1].actor == "system:leader-health-check"
    assert rows[1].details["leaderTerm"] == 2
    # The entry that drove it: the server synced it to LEADER_CHECK_INTERVAL_SECONDS=1 at start.
    entry = PeriodicTask.objects.get(name="leader-health-check")
    assert (entry.task, entry.enabled, entry.interval.every, entry.interval.period) == (
        "instances.leader_health_check",
        True,
        1,
        "seconds",
    )
