"""POST /api/v1/sites/{siteId}/refresh-inventory: admin only, 202, refresh_inventory to the site's group
with the spec's payload, an audit row."""

from __future__ import annotations

import re

import pytest
from asgiref.sync import async_to_sync

from core.errors import NotFoundError
from core.models import AuditLog
from inventory.refresh import inventory_refresh_request
from sites.models import Site
from tests.conftest import TEST_ACTOR
from tests.openapi import assert_matches_schema

SITE = "chicago-pop-01"
OTHER = "london-colo-01"
PATH = f"/api/v1/sites/{SITE}/refresh-inventory"
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def waiting(layer, channel: str) -> list[dict]:
    events = []
    while (queue := layer.channels.get(channel)) is not None and queue.qsize():
        events.append(async_to_sync(layer.receive)(channel)["event"])
    return events


@pytest.fixture
def sites(make_site):
    make_site(OTHER)
    return make_site(SITE)


def test_admin_refresh_sends_refresh_inventory_to_the_site(
    sites, admin_api, register, layer, listen, django_capture_on_commit_callbacks
):
    instance = register(SITE, "host-a")
    to_site, to_other = listen(f"site.{SITE}"), listen(f"site.{OTHER}")
    to_instance = listen(f"instance.{instance}")
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = admin_api.post(PATH)
        assert waiting(layer, to_site) == []  # after the commit only
    assert len(callbacks) == 1
    assert response.status_code == 202, response.content
    assert_matches_schema(response, "POST", PATH)
    assert response.json() == {"status": "sent", "siteId": SITE}

    [event] = waiting(layer, to_site)
    # requestId: the X-Request-ID of the request that caused it (core.events)
    assert set(event) - {"requestId"} == {"type", "timestamp", "siteId", "payload", "seq"}
    assert isinstance(event.get("requestId", ""), str)
    assert event["type"] == "refresh_inventory"
    assert ISO_Z.match(event["timestamp"])
    assert event["siteId"] == SITE
    assert event["seq"] == Site.objects.get(pk=SITE).event_seq
    assert event["payload"] == {"reason": "admin_request", "fullSync": True}
    assert waiting(layer, to_other) == [] and waiting(layer, to_instance) == []

    audit = AuditLog.objects.get(action="inventory_refresh_requested")
    assert audit.site_id == SITE and audit.entity_type == "site" and audit.entity_id == SITE
    assert audit.actor == "token:test admin"
    assert audit.details == {"reason": "admin_request", "fullSync": True}


def test_full_sync_false_and_bad_bodies(sites, admin_api, layer, listen, django_capture_on_commit_callbacks):
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_api.post(PATH, {"fullSync": False}, format="json")
    assert response.status_code == 202
    [event] = waiting(layer, channel)
    assert event["payload"] == {"reason": "admin_request", "fullSync": False}
    for body in ({"fullSync": "yes"}, [1]):
        response = admin_api.post(PATH, body, format="json")
        assert response.status_code == 400, response.content
        assert_matches_schema(response, "POST", PATH)
        assert response.json()["error"] == "validation_error"
    assert AuditLog.objects.filter(action="inventory_refresh_requested").count() == 1


def test_only_admins(sites, client_for, layer, listen, django_capture_on_commit_callbacks):
    channel = listen(f"site.{SITE}")
    with django_capture_on_commit_callbacks(execute=True):
        for scopes in (("write",), ("read",), ("instance",), ("read", "write")):
            response = client_for(*scopes).post(PATH)
            assert response.status_code == 403, (scopes, response.content)
            assert response.json()["error"] == "forbidden"
            assert_matches_schema(response, "POST", PATH)
        response = client_for("admin", site=OTHER).post(PATH)
        assert response.status_code == 403
        anonymous = client_for("admin")
        anonymous.credentials()
        assert anonymous.post(PATH).status_code == 401
    assert waiting(layer, channel) == []
    assert not AuditLog.objects.filter(action="inventory_refresh_requested").exists()
    response = client_for("admin", site=SITE).post(PATH)
    assert response.status_code == 202


def test_unknown_site_is_404_and_the_service_publishes_nothing(
    sites, admin_api, layer, listen, django_capture_on_commit_callbacks
):
    response = admin_api.post("/api/v1/sites/nowhere/refresh-inventory")
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    channel = listen("site.nowhere")
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(NotFoundError) as raised,
    ):
        inventory_refresh_request(actor=TEST_ACTOR, site_id="nowhere")
    assert "nowhere" in str(raised.value.detail)
    assert callbacks == [] and waiting(layer, channel) == []
