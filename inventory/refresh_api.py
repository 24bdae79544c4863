"""POST /api/v1/sites/{siteId}/refresh-inventory (admin): every instance of the site refetches."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import BODY_ERRORS, ApiView, error_responses, optional_body, schema
from core.errors import InvalidInput
from core.permissions import ADMINS, require_site_access
from inventory.refresh import inventory_refresh_request

RefreshOut = schema(
    "RefreshInventorySent",
    {"status": serializers.ChoiceField(["sent"]), "siteId": serializers.CharField()},
)


class RefreshInventoryView(ApiView):
    allowed_scopes = {"POST": ADMINS}

    @extend_schema(
        operation_id="inventory_refresh",
        summary="Send refresh_inventory to every instance of the site (the body is optional)",
        request=optional_body(
            {"fullSync": {"type": "boolean", "default": True, "description": "Ask for a full fetch."}}
        ),
        responses={202: RefreshOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["inventory"],
    )
    def post(self, request, site_id: str):
        require_site_access(request, site_id)
        body = self.json_object(optional=True)
        full_sync = body.get("fullSync", True)
        if not isinstance(full_sync, bool):
            raise InvalidInput({"fullSync": ["Must be true or false."]})
        inventory_refresh_request(actor=self.actor(), site_id=site_id, full_sync=full_sync)
        return Response({"status": "sent", "siteId": site_id}, status=status.HTTP_202_ACCEPTED)
