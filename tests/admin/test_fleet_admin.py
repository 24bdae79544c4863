"""The admin's "Refresh inventory on all instances" action: the service, its audit row, its event."""

import pytest
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model

from core.models import AuditLog


@pytest.fixture
def admin_client(client, db):
    user = get_user_model().objects.create_superuser("admin", "", "pw-not-used")
    client.force_login(user)
    return client


def test_refresh_inventory_action_sends_the_event_to_the_site(
    admin_client, make_site, django_capture_on_commit_callbacks
):
    site = make_site("chicago-pop-01")
    make_site("nyc-dc-01")
    layer = get_channel_layer()
    channel = async_to_sync(layer.new_channel)()
    async_to_sync(layer.group_add)(f"site.{site}", channel)

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            "/admin/sites/site/",
            {"action": "refresh_inventory", "_selected_action": [site]},
            follow=True,
        )
    assert response.status_code == 200
    assert "refresh_inventory sent to every instance" in response.content.decode()

    message = async_to_sync(layer.receive)(channel)
    event = message["event"]
    assert event["type"] == "refresh_inventory"
    assert event["siteId"] == site
    assert event["payload"] == {"reason": "admin_request", "fullSync": True}
    assert isinstance(event["seq"], int)
    rows = AuditLog.objects.filter(action="inventory_refresh_requested")
    assert [(r.site_id, r.actor) for r in rows] == [(site, "user:admin")]
