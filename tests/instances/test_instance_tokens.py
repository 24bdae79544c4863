"""Per-instance credentials (issue 8, section 1): register answers an `instanceToken` good for that one
instance; with it an instance cannot act for a sibling. The site-bound token keeps working."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from core.models import ApiToken
from instances.services import SocketRefused, socket_authorize
from tests.openapi import assert_matches_schema

SITE, OTHER = "chicago-pop-01", "london-colo-01"
HEARTBEAT = {"status": "healthy"}


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def enrolled(make_site, client_for):
    """Two instances of SITE registered with the site's token: {name: (instanceId, instanceToken)}."""
    make_site(SITE)
    make_site(OTHER)
    site_token = client_for("instance", site=SITE)
    found = {"site": site_token}
    for name in ("a", "b"):
        response = site_token.post(
            "/api/v1/instances/register", {"siteId": SITE, "hostname": f"host-{name}"}, format="json"
        )
        assert response.status_code == 200, response.content
        assert_matches_schema(response, "POST", "/api/v1/instances/register")
        found[name] = (response.json()["instanceId"], response.json()["instanceToken"])
    return found


def test_register_issues_a_token_bound_to_the_instance(enrolled):
    instance_id, plaintext = enrolled["a"]
    token = ApiToken.objects.get(instance_id=instance_id)
    assert token.scopes == ["instance"] and token.site_id == SITE and token.revoked_at is None
    assert plaintext.startswith("psm_") and token.token_hash != plaintext  # only a hash is kept


def test_an_instance_token_acts_for_its_own_instance(enrolled):
    instance_id, plaintext = enrolled["a"]
    own = bearer(plaintext)
    assert own.post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json").status_code == 200
    assert own.get(f"/api/v1/instances/{instance_id}").status_code == 200
    assert own.get(f"/api/v1/sites/{SITE}/inventory").status_code == 200
    assert own.get(f"/api/v1/sites/{SITE}/config").status_code == 200
    assert own.get(f"/api/v1/sites/{OTHER}/inventory").status_code == 403  # bound to its site too
    assert own.delete(f"/api/v1/instances/{instance_id}").status_code == 200
    # Gone with its instance.
    assert not ApiToken.objects.filter(instance_id=instance_id).exists()
    assert own.get(f"/api/v1/sites/{SITE}/config").status_code == 401


def test_an_instance_token_cannot_act_for_a_sibling(enrolled):
    sibling, _ = enrolled["b"]
    own = bearer(enrolled["a"][1])
    for response in (
        own.post(f"/api/v1/instances/{sibling}/heartbeat", HEARTBEAT, format="json"),
        own.get(f"/api/v1/instances/{sibling}"),
        own.delete(f"/api/v1/instances/{sibling}"),
        # nor enrol another identity
        own.post("/api/v1/instances/register", {"siteId": SITE, "hostname": "host-c"}, format="json"),
    ):
        assert response.status_code == 403, response.content
        assert response.json()["error"] == "forbidden"
        assert "another instance" in response.json()["detail"]
    assert enrolled["site"].get(f"/api/v1/instances/{sibling}").status_code == 200  # still there


def test_re_registering_issues_a_new_token_and_withdraws_the_old(enrolled):
    instance_id, old = enrolled["a"]
    again = bearer(old).post(
        "/api/v1/instances/register", {"siteId": SITE, "hostname": "host-a"}, format="json"
    )
    assert again.status_code == 200 and again.json()["instanceId"] == instance_id
    new = again.json()["instanceToken"]
    assert new != old
    assert (
        bearer(old).post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json").status_code
        == 401
    )
    assert (
        bearer(new).post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json").status_code
        == 200
    )
    assert ApiToken.objects.filter(instance_id=instance_id).count() == 1


def test_the_site_token_keeps_working_for_every_instance_of_the_site(enrolled):
    site_token = enrolled["site"]
    for name in ("a", "b"):
        instance_id, _ = enrolled[name]
        response = site_token.post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json")
        assert response.status_code == 200


def test_a_site_that_requires_instance_tokens_takes_its_own_tokens_for_register_only(enrolled, admin_api):
    patched = admin_api.patch(
        f"/api/v1/sites/{SITE}", {"config": {"requireInstanceTokens": True}}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["config"]["requireInstanceTokens"] is True
    site_token, (instance_id, own) = enrolled["site"], enrolled["a"]
    refused = (
        site_token.post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json"),
        site_token.get(f"/api/v1/instances/{instance_id}"),
        site_token.get(f"/api/v1/sites/{SITE}/inventory"),
        site_token.get(f"/api/v1/sites/{SITE}/config"),
        site_token.delete(f"/api/v1/instances/{instance_id}"),
    )
    for response in refused:
        assert response.status_code == 403, response.content
        assert "requires instance tokens" in response.json()["detail"]
    with pytest.raises(SocketRefused) as socket:
        socket_authorize(
            token=site_token._credentials["HTTP_AUTHORIZATION"].split()[1], instance_id=instance_id
        )
    assert socket.value.code == 4403
    # Registering (enrolment) still works, and answers the token that does the rest.
    again = site_token.post(
        "/api/v1/instances/register", {"siteId": SITE, "hostname": "host-a"}, format="json"
    )
    assert again.status_code == 200
    own = bearer(again.json()["instanceToken"])
    assert own.post(f"/api/v1/instances/{instance_id}/heartbeat", HEARTBEAT, format="json").status_code == 200
    assert own.get(f"/api/v1/sites/{SITE}/inventory").status_code == 200
    assert admin_api.get(f"/api/v1/sites/{SITE}/inventory").status_code == 200  # admins are not instances
    # Off again: the site token is good for everything once more.
    admin_api.patch(f"/api/v1/sites/{SITE}", {"config": {"requireInstanceTokens": False}}, format="json")
    assert site_token.get(f"/api/v1/sites/{SITE}/config").status_code == 200
