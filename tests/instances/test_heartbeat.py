"""The heartbeat's cost and its answers on every path (issue 12 §1): the common heartbeat is two queries,
authentication included (the token read, then one UPDATE … RETURNING); refusals come as before."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from core import authentication
from core.models import ApiToken
from instances.models import Instance
from sites.models import Site

SITE, OTHER = "chicago-pop-01", "london-colo-01"
BODY = {
    "status": "healthy",
    "uptime": 60,
    "inventoryVersion": 1,
    "configVersion": 1,
    "metrics": {"devicesMonitored": 3},
}


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def world(make_site, client_for):
    """SITE with a leader (a) and a follower (b), registered with the site's token; OTHER with one (c).
    {name: (instanceId, its own APIClient)}, and the site's token."""
    make_site(SITE)
    make_site(OTHER)
    found = {"site": client_for("instance", site=SITE)}
    for name, site in (("a", SITE), ("b", SITE), ("c", OTHER)):
        enrolment = client_for("instance", site=site)
        answer = enrolment.post(
            "/api/v1/instances/register", {"siteId": site, "hostname": name}, format="json"
        )
        assert answer.status_code == 200, answer.content
        found[name] = (answer.json()["instanceId"], bearer(answer.json()["instanceToken"]))
    return found


def beat(client: APIClient, instance_id: str, body=BODY):
    return client.post(f"/api/v1/instances/{instance_id}/heartbeat", body, format="json")


@pytest.mark.parametrize("who", ["leader", "follower"])
def test_the_common_heartbeat_takes_two_queries_authentication_included(
    world, who, django_assert_max_num_queries
):
    instance_id, own = world["a" if who == "leader" else "b"]
    assert beat(own, instance_id).status_code == 200  # the token's first use: its lastUsedAt is written

    with CaptureQueriesContext(connection) as queries, django_assert_max_num_queries(2):
        response = beat(own, instance_id)

    assert response.status_code == 200, response.content
    assert response.json()["isLeader"] is (who == "leader")
    assert response.json()["leaderTerm"] == 1
    assert response.json()["configChanged"] is False
    statements = [query["sql"].lstrip().split()[0].upper() for query in queries]
    assert statements == ["SELECT", "UPDATE"]  # no transaction, no lock taken before the write


def test_an_admin_token_heartbeats_in_two_queries_too(world, client_for, django_assert_max_num_queries):
    admin = client_for("admin")
    instance_id, _ = world["c"]
    assert beat(admin, instance_id).status_code == 200
    with django_assert_max_num_queries(2):
        assert beat(admin, instance_id).status_code == 200


def test_a_token_used_for_the_first_time_writes_nothing_before_the_answer(
    world, monkeypatch, django_assert_max_num_queries
):
    """Its lastUsedAt is noted, and written after the response with the other uses of the period."""
    monkeypatch.setattr(authentication, "LAST_USED_FLUSH_SECONDS", 3600)
    authentication._uses.take(force=True)  # a write is "recent": nothing is due for an hour
    instance_id, own = world["b"]
    token = ApiToken.objects.get(instance_id=instance_id)
    assert token.last_used_at is None

    with django_assert_max_num_queries(2):
        assert beat(own, instance_id).status_code == 200

    assert ApiToken.objects.get(pk=token.pk).last_used_at is None
    assert authentication.token_uses_flush(force=True) == 1
    assert ApiToken.objects.get(pk=token.pk).last_used_at is not None


def test_the_heartbeat_writes_what_it_reports_and_keeps_what_it_leaves_out(world):
    instance_id, own = world["b"]
    assert beat(own, instance_id).status_code == 200
    stored = Instance.objects.get(pk=instance_id)
    assert (stored.reported_status, stored.uptime, stored.inventory_version) == ("healthy", 60, 1)
    assert (stored.config_version, stored.metrics) == (1, {"devicesMonitored": 3})
    before = stored.last_heartbeat

    assert beat(own, instance_id, {"status": "degraded"}).status_code == 200

    stored = Instance.objects.get(pk=instance_id)
    assert stored.reported_status == "degraded" and stored.last_heartbeat > before
    assert (stored.uptime, stored.inventory_version, stored.config_version) == (60, 1, 1)
    assert stored.metrics == {"devicesMonitored": 3}


def test_the_answer_carries_the_sites_versions_and_term(world):
    instance_id, own = world["b"]
    Site.objects.filter(pk=SITE).update(inventory_version=7, config_version=3, leader_term=5)
    data = beat(own, instance_id).json()
    assert (data["inventoryVersion"], data["configVersion"], data["leaderTerm"]) == (7, 3, 5)
    assert data["configChanged"] is True  # it reports configVersion 1


# --- refusals: the same answers as before, in the same order (404 or 403 before 400) ----------------


def test_another_instances_own_token_is_refused(world):
    a, _ = world["a"]
    _, own_b = world["b"]
    assert beat(own_b, a).status_code == 403
    assert beat(own_b, a, {"status": "nonsense"}).status_code == 403
    assert beat(own_b, "inst_missing").status_code == 404
    assert Instance.objects.get(pk=a).uptime is None


def test_a_token_of_another_site_is_refused(world, client_for):
    c, _ = world["c"]
    for token in (world["site"], client_for("admin", site=SITE)):
        response = beat(token, c)
        assert response.status_code == 403, response.content
        assert response.json()["error"] == "forbidden"
        assert beat(token, c, {"status": "nonsense"}).status_code == 403
    assert Instance.objects.get(pk=c).uptime is None  # nothing was written


def test_an_unknown_instance_is_404_even_with_a_bad_body(world, client_for):
    for token in (world["site"], client_for("admin")):
        assert beat(token, "inst_missing").status_code == 404
        assert beat(token, "inst_missing", {"status": "nonsense"}).status_code == 404
    _, own = world["a"]
    assert beat(own, "inst_missing").status_code == 404


def test_a_bad_body_changes_nothing(world):
    instance_id, own = world["a"]
    before = Instance.objects.get(pk=instance_id).last_heartbeat
    for body in ({"status": "nonsense"}, {"status": "healthy", "uptime": -1}, [1]):
        response = beat(own, instance_id, body)
        assert response.status_code == 400, response.content
        assert response.json()["error"] == "validation_error"
    assert Instance.objects.get(pk=instance_id).last_heartbeat == before


def test_an_enrolment_token_of_a_site_that_requires_instance_tokens_is_refused(world):
    instance_id, _ = world["a"]
    Site.objects.filter(pk=SITE).update(require_instance_tokens=True)
    response = beat(world["site"], instance_id)
    assert response.status_code == 403, response.content
    assert "requires instance tokens" in response.json()["detail"]
    _, own = world["a"]
    assert beat(own, instance_id).status_code == 200
