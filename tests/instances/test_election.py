"""Leader election through the services and instances/election.py, on PostgreSQL (issue 2, section 5).

Heartbeat ages are moved with queryset .update() on last_heartbeat; timings come from the settings
fixture (interval 10 s, timeout 30 s unless a test says otherwise).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.models import AuditLog, OutboxMessage
from instances import election
from instances.models import Instance
from instances.services import instance_deregister, instance_heartbeat
from sites.models import Site
from sites.services import site_update
from tests.conftest import TEST_ACTOR
from tests.openapi import assert_matches_schema

INTERVAL = 10
TIMEOUT = 30
LEADER_ACTIONS = ("leader_assigned", "leader_revoked")


@pytest.fixture(autouse=True)
def timings(settings):
    settings.HEARTBEAT_INTERVAL_SECONDS = INTERVAL
    settings.HEARTBEAT_TIMEOUT_SECONDS = TIMEOUT


def leader_of(site_id: str) -> str | None:
    leaders = list(Instance.objects.filter(site_id=site_id, is_leader=True).values_list("id", flat=True))
    assert len(leaders) <= 1, leaders
    return leaders[0] if leaders else None


def term_of(site_id: str) -> int:
    return Site.objects.get(pk=site_id).leader_term


def age(instance_id: str, seconds: float) -> None:
    """Make the instance's last heartbeat `seconds` old."""
    Instance.objects.filter(pk=instance_id).update(last_heartbeat=timezone.now() - timedelta(seconds=seconds))


def leader_audit(site_id: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(site_id=site_id, action__in=LEADER_ACTIONS).order_by("id"))


def heartbeat(instance_id: str, **kwargs):
    return instance_heartbeat(actor=TEST_ACTOR, instance_id=instance_id, status="healthy", **kwargs)


# --- first leader, terms, audit --------------------------------------------------------------------


def test_first_instance_of_a_site_is_leader_with_audit_row(make_site, register):
    site = make_site("chicago-pop-01")
    assert term_of(site) == 0
    a = register(site, "host-a")
    b = register(site, "host-b")

    assert leader_of(site) == a
    assert Instance.objects.get(pk=a).leader_since is not None
    assert Instance.objects.get(pk=b).leader_since is None
    assert term_of(site) == 1
    [row] = leader_audit(site)
    assert row.action == "leader_assigned"
    assert row.entity_type == "instance"
    assert row.entity_id == a
    assert row.instance_id == a
    assert row.details == {
        "leader": a,
        "previousLeader": None,
        "reason": "no_previous_leader",
        "leaderTerm": 1,
    }


def test_leader_term_increments_on_every_change_and_each_change_is_audited(make_site, register):
    site = make_site("nyc-dc-01")
    a, b, c = register(site, "a"), register(site, "b"), register(site, "c")
    terms = [term_of(site)]
    assert terms == [1]

    age(a, TIMEOUT + 5)  # a times out → the healthiest follower takes over
    [change] = election.leader_health_check()
    terms.append(term_of(site))
    assert (change.leader_id, change.term) == (c, terms[-1])  # c registered last: most recent heartbeat

    election.leader_assign(site_id=site, actor=TEST_ACTOR, instance_id=b)  # c led; b is assigned
    terms.append(term_of(site))

    # Re-registering the leader and heartbeats of the leader change nothing.
    register(site, "b")
    heartbeat(b)
    assert term_of(site) == terms[-1]

    instance_deregister(actor=TEST_ACTOR, instance_id=b)  # hand-over
    terms.append(term_of(site))
    assert leader_of(site) == c  # a is offline

    for other in (a, c):
        age(other, TIMEOUT + 5)  # everybody offline: the leader is revoked
    election.leader_health_check()
    terms.append(term_of(site))
    assert leader_of(site) is None

    heartbeat(c)  # a live instance in a leaderless site becomes leader on its heartbeat
    terms.append(term_of(site))
    assert leader_of(site) == c

    assert terms == [1, 2, 3, 4, 5, 6]
    rows = leader_audit(site)
    assert [row.details["leaderTerm"] for row in rows] == terms
    assert [row.details["reason"] for row in rows] == [
        "no_previous_leader",
        "previous_leader_unhealthy",
        "manual_assignment",
        "previous_leader_deregistered",
        "previous_leader_unhealthy",
        "no_previous_leader",
    ]
    assert [row.action for row in rows] == ["leader_assigned"] * 4 + ["leader_revoked", "leader_assigned"]


# --- health check ----------------------------------------------------------------------------------


def test_leader_past_timeout_is_replaced_by_the_most_recent_follower(make_site, register):
    site = make_site("chicago-pop-01")
    a, b, c, d = (register(site, name) for name in ("a", "b", "c", "d"))
    age(a, TIMEOUT + 1)
    age(b, 20)
    age(c, 2)  # the most recent heartbeat
    age(d, 15)

    changes = election.leader_health_check()

    assert leader_of(site) == c
    assert [(ch.site_id, ch.leader_id, ch.previous_leader_id, ch.reason) for ch in changes] == [
        (site, c, a, "previous_leader_unhealthy")
    ]
    assert Instance.objects.get(pk=a).leader_since is None
    row = leader_audit(site)[-1]
    assert row.action == "leader_assigned"
    assert row.actor == "system:leader-health-check"
    assert row.details == {
        "leader": c,
        "previousLeader": a,
        "reason": "previous_leader_unhealthy",
        "leaderTerm": 2,
    }
    # A second pass finds nothing to do.
    assert election.leader_health_check() == []
    assert term_of(site) == 2


def test_degraded_leader_within_timeout_is_kept(make_site, register):
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    age(a, TIMEOUT - 2)  # missed intervals (degraded), not yet offline
    assert election.leader_health_check() == []
    assert leader_of(site) == a
    assert term_of(site) == 1
    age(a, TIMEOUT + 1)
    election.leader_health_check()
    assert leader_of(site) == b


@pytest.mark.parametrize("earlier", ["b", "c"])
def test_heartbeat_tie_goes_to_the_earliest_registered_follower(make_site, register, earlier):
    site = make_site("tie-site")
    ids = {name: register(site, name) for name in ("a", "b", "c")}
    same = timezone.now() - timedelta(seconds=5)
    base = timezone.now() - timedelta(hours=1)
    later = "c" if earlier == "b" else "b"
    Instance.objects.filter(pk=ids[earlier]).update(last_heartbeat=same, registered_at=base)
    Instance.objects.filter(pk=ids[later]).update(
        last_heartbeat=same, registered_at=base + timedelta(seconds=1)
    )
    age(ids["a"], TIMEOUT + 1)

    election.leader_health_check()

    assert leader_of(site) == ids[earlier]


def test_follower_past_timeout_is_never_chosen_and_leader_is_revoked(make_site, register):
    site = make_site("lonely-site")
    a, b, c = register(site, "a"), register(site, "b"), register(site, "c")
    age(a, TIMEOUT + 60)
    age(b, TIMEOUT + 1)  # offline, though more recent than the leader
    age(c, TIMEOUT + 30)

    changes = election.leader_health_check()

    assert leader_of(site) is None
    assert [(ch.leader_id, ch.previous_leader_id, ch.reason) for ch in changes] == [
        (None, a, "previous_leader_unhealthy")
    ]
    assert term_of(site) == 2
    row = leader_audit(site)[-1]
    assert row.action == "leader_revoked"
    assert row.entity_id == a
    assert row.details == {
        "leader": None,
        "previousLeader": a,
        "reason": "previous_leader_unhealthy",
        "leaderTerm": 2,
    }
    # No live instance: further passes leave the site without a leader and the term alone.
    assert election.leader_health_check() == []
    assert term_of(site) == 2

    # The next heartbeat of a live instance makes it leader.
    result = heartbeat(b)
    assert result.is_leader is True
    assert result.leader_term == 3
    assert leader_of(site) == b
    assert leader_audit(site)[-1].details["reason"] == "no_previous_leader"


def test_health_check_gives_a_leaderless_site_with_a_live_instance_a_leader(make_site, register):
    site = make_site("leaderless")
    a, b = register(site, "a"), register(site, "b")
    age(a, TIMEOUT + 10)
    age(b, TIMEOUT + 5)
    election.leader_health_check()
    assert leader_of(site) is None
    # b's heartbeat time moves without going through the heartbeat service (which would elect it).
    age(b, 1)

    [change] = election.leader_health_check()

    assert (change.leader_id, change.previous_leader_id, change.reason) == (b, None, "no_previous_leader")
    assert leader_of(site) == b


def test_health_check_handles_every_site_and_leaves_healthy_ones_alone(make_site, register):
    sick, well = make_site("sick-site"), make_site("well-site")
    s1, s2 = register(sick, "s1"), register(sick, "s2")
    w1, _w2 = register(well, "w1"), register(well, "w2")
    age(s1, TIMEOUT + 1)
    changes = election.leader_health_check()
    assert [(ch.site_id, ch.leader_id) for ch in changes] == [(sick, s2)]
    assert leader_of(well) == w1
    assert term_of(well) == 1


# --- live_leader: the health check's definition, read-only, for other apps ------------------------

GRACE = 10


def socket_state(instance_id: str, *, closed_ago: float, heartbeat_ago: float, reopened: bool = False):
    now = timezone.now()
    closed = now - timedelta(seconds=closed_ago)
    Instance.objects.filter(pk=instance_id).update(
        socket_connected_at=closed + timedelta(seconds=1) if reopened else closed - timedelta(minutes=5),
        socket_disconnected_at=closed,
        last_heartbeat=now - timedelta(seconds=heartbeat_ago),
    )


LIVENESS_CASES = {
    "healthy": (lambda a: None, True),
    "degraded, within the timeout": (lambda a: age(a, TIMEOUT - 2), True),
    "past the heartbeat timeout": (lambda a: age(a, TIMEOUT + 1), False),
    "never heartbeated": (lambda a: Instance.objects.filter(pk=a).update(last_heartbeat=None), False),
    "socket closed inside the grace period": (
        lambda a: socket_state(a, closed_ago=GRACE - 3, heartbeat_ago=GRACE),
        True,
    ),
    "socket lost past the grace period": (
        lambda a: socket_state(a, closed_ago=GRACE + 3, heartbeat_ago=GRACE + 4),
        False,
    ),
    "socket closed past the grace period, then reopened": (
        lambda a: socket_state(a, closed_ago=GRACE + 3, heartbeat_ago=GRACE + 4, reopened=True),
        True,
    ),
    "socket closed past the grace period, heartbeat since": (
        lambda a: socket_state(a, closed_ago=GRACE + 3, heartbeat_ago=1),
        True,
    ),
}


@pytest.mark.parametrize("case", list(LIVENESS_CASES))
def test_live_leader_is_exactly_the_leader_the_health_check_keeps(make_site, register, settings, case):
    settings.FAILOVER_GRACE_SECONDS = GRACE
    site, other = make_site("chicago-pop-01"), make_site("london-colo-01")
    a, b = register(site, "a"), register(site, "b")
    x = register(other, "x")
    setup, live = LIVENESS_CASES[case]
    setup(a)
    term, audit = term_of(site), len(leader_audit(site))

    found = election.live_leader(site)
    assert (found.pk if found else None) == (a if live else None)
    assert set(election.live_leaders().values_list("id", flat=True)) == ({a, x} if live else {x})
    assert election.live_leader("no-such-site") is None
    # Read-only: nothing changed, no event, no audit row.
    assert (leader_of(site), term_of(site), len(leader_audit(site))) == (a, term, audit)

    # The health check agrees: it replaces exactly the leaders live_leader does not return.
    changes = election.leader_health_check()
    assert [(ch.site_id, ch.previous_leader_id, ch.leader_id) for ch in changes] == (
        [] if live else [(site, a, b)]
    )
    assert election.live_leader(site).pk == (a if live else b)


def test_live_leader_takes_the_time_to_judge_at(make_site, register, settings):
    settings.FAILOVER_GRACE_SECONDS = GRACE
    site = make_site("chicago-pop-01")
    a = register(site, "a")
    socket_state(a, closed_ago=GRACE - 5, heartbeat_ago=GRACE - 4)
    assert election.live_leader(site).pk == a
    assert election.live_leader(site, timezone.now() + timedelta(seconds=6)) is None
    assert election.live_leader(site, timezone.now() + timedelta(seconds=TIMEOUT + 1)) is None


# --- the check when a lost socket's grace ends (the consumer's timer) -------------------------------


def leader_events(site_id: str) -> list[str]:
    return [
        row.body["type"]
        for row in OutboxMessage.objects.filter(site_id=site_id, body__type__in=LEADER_ACTIONS)
    ]


@pytest.mark.parametrize("case", list(LIVENESS_CASES))
def test_lost_socket_check_replaces_exactly_the_leaders_the_health_check_would(
    make_site, register, settings, case
):
    """A timer fires for every close; a stale one (the leader reconnected or heartbeated within the
    grace, or a later close started a new grace) must find the leader back and change nothing."""
    settings.FAILOVER_GRACE_SECONDS = GRACE
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    setup, live = LIVENESS_CASES[case]
    setup(a)
    term, audit, events = term_of(site), len(leader_audit(site)), len(leader_events(site))

    changes = election.leader_check_lost_sockets(instance_ids=[a])
    if live:
        assert changes == []
        assert (leader_of(site), term_of(site)) == (a, term)
        assert (len(leader_audit(site)), len(leader_events(site))) == (audit, events)
    else:
        assert [(ch.previous_leader_id, ch.leader_id, ch.reason, ch.term) for ch in changes] == [
            (a, b, "previous_leader_unhealthy", term + 1)
        ]
        assert leader_audit(site)[-1].actor == "system:failover-check"
        assert leader_events(site)[-2:] == ["leader_assigned", "leader_revoked"]
    # What comes later (the periodic check, another close's timer) finds a live leader: nothing moves.
    assert election.leader_check_lost_sockets(instance_ids=[a, a]) == []
    assert election.leader_health_check() == []
    assert term_of(site) == (term if live else term + 1)


def test_lost_socket_check_of_followers_and_gone_instances_is_one_query_and_changes_nothing(
    make_site, register, settings, django_assert_num_queries
):
    settings.FAILOVER_GRACE_SECONDS = GRACE
    site = make_site("chicago-pop-01")
    a, b, c = register(site, "a"), register(site, "b"), register(site, "c")
    socket_state(c, closed_ago=GRACE + 3, heartbeat_ago=GRACE + 4)  # a follower's socket lost
    # A leader that deregistered (handing over) before the timer of its close fired.
    socket_state(a, closed_ago=GRACE + 3, heartbeat_ago=GRACE + 4)
    instance_deregister(actor=TEST_ACTOR, instance_id=a)
    term, audit = term_of(site), len(leader_audit(site))
    assert leader_of(site) == b
    # A proxy dropping every socket at once: no lock, one query whatever the number.
    for ids in ([c], [c, a, "no-such-instance"], [c, a] + [f"inst_gone{n}" for n in range(300)]):
        with django_assert_num_queries(1):
            assert election.leader_check_lost_sockets(instance_ids=ids) == []
    with django_assert_num_queries(2):  # SQLite takes at most LOST_SOCKET_BATCH ids a query
        assert election.leader_check_lost_sockets(instance_ids=[f"i{n}" for n in range(501)]) == []
    assert (leader_of(site), term_of(site), len(leader_audit(site))) == (b, term, audit)


def test_lost_socket_check_handles_every_site_it_is_given(make_site, register, settings):
    settings.FAILOVER_GRACE_SECONDS = GRACE
    lost, back = make_site("lost-site"), make_site("back-site")
    l1, l2 = register(lost, "l1"), register(lost, "l2")
    b1, _b2 = register(back, "b1"), register(back, "b2")
    socket_state(l1, closed_ago=GRACE + 1, heartbeat_ago=GRACE + 2)
    socket_state(b1, closed_ago=GRACE + 1, heartbeat_ago=GRACE + 2, reopened=True)
    changes = election.leader_check_lost_sockets(instance_ids=[b1, l2, l1])
    assert [(ch.site_id, ch.previous_leader_id, ch.leader_id) for ch in changes] == [(lost, l1, l2)]
    assert (leader_of(back), term_of(back)) == (b1, 1)


def test_lost_socket_check_waits_for_the_grace_on_the_clock_of_the_close(settings):
    settings.FAILOVER_GRACE_SECONDS = 7
    assert election.lost_socket_check_delay() == 7 + election.LOST_SOCKET_CHECK_MARGIN_SECONDS
    assert 0 < election.LOST_SOCKET_CHECK_MARGIN_SECONDS < 1


# --- coming back after offline ---------------------------------------------------------------------


def test_instance_back_after_offline_rejoins_as_follower(make_site, register, client_for):
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    age(a, TIMEOUT + 1)
    election.leader_health_check()
    assert leader_of(site) == b

    api = client_for("instance", site=site)
    response = api.post(f"/api/v1/instances/{a}/heartbeat", {"status": "healthy"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["isLeader"] is False
    assert response.json()["leaderTerm"] == 2
    again = api.post("/api/v1/instances/register", {"siteId": site, "hostname": "a"}, format="json")
    assert again.status_code == 200, again.content
    assert (again.json()["instanceId"], again.json()["isLeader"]) == (a, False)
    assert leader_of(site) == b
    assert term_of(site) == 2


def test_instance_back_after_offline_takes_leadership_when_site_has_none(make_site, register, client_for):
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    age(a, TIMEOUT + 10)
    age(b, TIMEOUT + 5)
    election.leader_health_check()
    assert leader_of(site) is None

    api = client_for("instance", site=site)
    response = api.post(f"/api/v1/instances/{a}/heartbeat", {"status": "healthy"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["isLeader"] is True
    assert response.json()["leaderTerm"] == 3
    assert leader_of(site) == a
    other = api.post(f"/api/v1/instances/{b}/heartbeat", {"status": "healthy"}, format="json")
    assert other.json()["isLeader"] is False


# --- deregistration --------------------------------------------------------------------------------


def test_deregistering_the_leader_hands_over_to_the_healthiest_follower(make_site, client_for):
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    ids = {}
    for name in ("a", "b", "c"):
        response = api.post("/api/v1/instances/register", {"siteId": site, "hostname": name}, format="json")
        assert response.status_code == 200, response.content
        ids[name] = response.json()["instanceId"]
    age(ids["b"], 12)
    age(ids["c"], 3)  # the most recent heartbeat

    response = api.delete(f"/api/v1/instances/{ids['a']}")

    assert response.status_code == 200, response.content
    assert_matches_schema(response, "DELETE", f"/api/v1/instances/{ids['a']}")
    assert response.json() == {"status": "deregistered", "wasLeader": True, "newLeader": ids["c"]}
    assert leader_of(site) == ids["c"]
    assert term_of(site) == 2
    row = leader_audit(site)[-1]
    assert row.details == {
        "leader": ids["c"],
        "previousLeader": ids["a"],
        "reason": "previous_leader_deregistered",
        "leaderTerm": 2,
    }
    assert api.get(f"/api/v1/instances/{ids['a']}").status_code == 404
    assert AuditLog.objects.filter(action="instance_deregistered", entity_id=ids["a"]).count() == 1

    # A follower leaving changes no leadership.
    follower = api.delete(f"/api/v1/instances/{ids['b']}")
    assert follower.json() == {"status": "deregistered", "wasLeader": False, "newLeader": None}
    assert leader_of(site) == ids["c"]
    assert term_of(site) == 2

    # The last one leaving leaves the site without a leader.
    last = api.delete(f"/api/v1/instances/{ids['c']}")
    assert last.json() == {"status": "deregistered", "wasLeader": True, "newLeader": None}
    assert leader_of(site) is None
    assert term_of(site) == 3
    assert leader_audit(site)[-1].action == "leader_revoked"


def test_deregistering_the_leader_never_hands_over_to_an_offline_follower(make_site, register):
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    age(b, TIMEOUT + 1)
    result = instance_deregister(actor=TEST_ACTOR, instance_id=a)
    assert (result.was_leader, result.new_leader_id) == (True, None)
    assert leader_of(site) is None


# --- heartbeat response ----------------------------------------------------------------------------


def test_heartbeat_response_fields(make_site, client_for):
    site = make_site("chicago-pop-01")
    api = client_for("instance", site=site)
    registered = api.post(
        "/api/v1/instances/register", {"siteId": site, "hostname": "a"}, format="json"
    ).json()
    follower = api.post("/api/v1/instances/register", {"siteId": site, "hostname": "b"}, format="json").json()
    body = {"status": "healthy", "uptime": 12, "inventoryVersion": 1, "metrics": {"cpuPercent": 1.5}}

    response = api.post(f"/api/v1/instances/{registered['instanceId']}/heartbeat", body, format="json")

    assert response.status_code == 200, response.content
    assert_matches_schema(response, "POST", f"/api/v1/instances/{registered['instanceId']}/heartbeat")
    data = response.json()
    assert set(data) == {
        "status",
        "isLeader",
        "inventoryVersion",
        "configVersion",
        "configChanged",
        "serverTime",
        "leaderTerm",
    }
    assert data["status"] == "ok"
    assert data["isLeader"] is True
    assert data["inventoryVersion"] == registered["inventoryVersion"]
    assert data["configVersion"] == registered["configVersion"]
    assert data["configChanged"] is False
    assert data["leaderTerm"] == registered["leaderTerm"] == 1
    server_time = datetime.strptime(data["serverTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((server_time - timezone.now()).total_seconds()) < 5
    stored = Instance.objects.get(pk=registered["instanceId"])
    assert (stored.uptime, stored.inventory_version, stored.metrics) == (12, 1, {"cpuPercent": 1.5})

    other = api.post(
        f"/api/v1/instances/{follower['instanceId']}/heartbeat", {"status": "healthy"}, format="json"
    )
    assert other.json()["isLeader"] is False
    assert other.json()["leaderTerm"] == 1


def test_config_changed_follows_the_reported_version(make_site, register):
    site = make_site("chicago-pop-01")
    a = register(site, "a")
    assert Site.objects.get(pk=site).config_version == 1

    assert heartbeat(a).config_changed is False  # reports none: given 1 at register, site at 1
    assert heartbeat(a, config_version=1).config_changed is False

    site_update(actor=TEST_ACTOR, site_id=site, values={"collection_interval": 60000}, partial=True)
    result = heartbeat(a, config_version=1)
    assert result.config_version == 2
    assert result.config_changed is True  # behind the site's
    assert heartbeat(a, config_version=1).config_changed is True  # still behind: still true
    assert heartbeat(a, config_version=2).config_changed is False  # caught up
    assert heartbeat(a, config_version=2).config_changed is False


def test_config_changed_without_a_reported_version_is_told_once(make_site, register):
    """No configVersion in the heartbeat: compare with the last version it was given (docs/decisions.md):
    at register, then by the heartbeat answer that carried the new configVersion."""
    site = make_site("chicago-pop-01")
    a = register(site, "a")
    site_update(actor=TEST_ACTOR, site_id=site, values={"discovery_enabled": False}, partial=True)
    # Never reported a version; was given 1 at register; the site is at 2.
    first = heartbeat(a)
    assert (first.config_changed, first.config_version) == (True, 2)
    assert heartbeat(a).config_changed is False  # that answer gave it 2
    site_update(actor=TEST_ACTOR, site_id=site, values={"collection_interval": 60000}, partial=True)
    assert heartbeat(a).config_changed is True
    assert heartbeat(a).config_changed is False
    site_update(actor=TEST_ACTOR, site_id=site, values={"cache_expiration": 1000}, partial=True)
    register(site, "a")  # given 4 at register
    assert heartbeat(a).config_changed is False


def test_config_changed_after_reregister_ignores_a_version_reported_before_it(make_site, register):
    """A heartbeat without configVersion compares with the version given at (re-)register."""
    site = make_site("chicago-pop-01")
    a = register(site, "a")
    site_update(actor=TEST_ACTOR, site_id=site, values={"discovery_enabled": False}, partial=True)
    assert heartbeat(a, config_version=1).config_changed is True
    register(site, "a")  # the instance restarts and is handed configVersion 2
    assert heartbeat(a).config_changed is False


# --- force_election --------------------------------------------------------------------------------


def test_force_election_with_instance(make_site, register):
    site = make_site("chicago-pop-01")
    a, b, _c = register(site, "a"), register(site, "b"), register(site, "c")

    call_command("force_election", site, "--instance", b)

    assert leader_of(site) == b
    assert term_of(site) == 2
    row = leader_audit(site)[-1]
    assert row.actor == "command:manage.py force_election"
    assert row.details == {"leader": b, "previousLeader": a, "reason": "manual_assignment", "leaderTerm": 2}


def test_force_election_without_instance_picks_the_healthiest_follower(make_site, register):
    site = make_site("chicago-pop-01")
    a, b, c, d = (register(site, name) for name in ("a", "b", "c", "d"))
    age(b, 8)
    age(c, 1)
    age(d, TIMEOUT + 1)
    Instance.objects.filter(pk=a).update(last_heartbeat=timezone.now())  # the leader is most recent

    call_command("force_election", site)

    assert leader_of(site) == c
    assert leader_audit(site)[-1].details["reason"] == "manual_assignment"
    assert leader_audit(site)[-1].details["previousLeader"] == a


def test_force_election_errors_are_command_errors_and_change_nothing(make_site, register):
    site = make_site("chicago-pop-01")
    other = make_site("other-site")
    a, b = register(site, "a"), register(site, "b")
    elsewhere = register(other, "x")
    age(b, TIMEOUT + 1)
    before = AuditLog.objects.count()

    with pytest.raises(CommandError, match="inst_nope"):
        call_command("force_election", site, "--instance", "inst_nope")
    with pytest.raises(CommandError):
        call_command("force_election", site, "--instance", elsewhere)  # not in this site
    with pytest.raises(CommandError, match="offline"):
        call_command("force_election", site, "--instance", b)
    with pytest.raises(CommandError):
        call_command("force_election", site)  # no live follower
    with pytest.raises(CommandError):
        call_command("force_election", "no-such-site")

    assert leader_of(site) == a
    assert term_of(site) == 1
    assert AuditLog.objects.count() == before


# --- the database's own guarantee ------------------------------------------------------------------


def test_partial_unique_constraint_refuses_a_second_leader(make_site, register):
    site = make_site("chicago-pop-01")
    a, b = register(site, "a"), register(site, "b")
    with pytest.raises(IntegrityError), transaction.atomic():
        Instance.objects.filter(pk=b).update(is_leader=True)
    assert leader_of(site) == a
    # A leader in another site is fine.
    other = make_site("other-site")
    register(other, "a")
    assert Instance.objects.filter(is_leader=True).count() == 2
