"""refresh_inventory: tell every instance of a site to fetch its inventory again."""

from __future__ import annotations

from django.db import transaction

from core.audit import Actor, audit_record
from core.errors import NotFoundError
from core.events import publish, site_group
from sites.models import Site

ADMIN_REQUEST = "admin_request"


def inventory_refresh_request(
    *, actor: Actor, site_id: str, reason: str = ADMIN_REQUEST, full_sync: bool = True
) -> None:
    """Publish refresh_inventory {reason, fullSync} to the site's group (after commit), with an audit row."""
    with transaction.atomic():
        if not Site.objects.filter(pk=site_id).exists():
            raise NotFoundError(f"No site {site_id!r}.")
        audit_record(
            actor=actor,
            action="inventory_refresh_requested",
            entity_type="site",
            entity_id=site_id,
            site_id=site_id,
            details={"reason": reason, "fullSync": full_sync},
        )
        publish(
            group=site_group(site_id),
            event_type="refresh_inventory",
            site_id=site_id,
            payload={"reason": reason, "fullSync": full_sync},
        )
