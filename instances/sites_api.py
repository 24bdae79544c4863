"""Sites API: /api/v1/sites and /api/v1/sites/{id}.

A site is rendered with what derives from its instances (status, leader, counts, liveness), so these
views live where instances are known; the input rules and the writes are the sites app's (sites/api.py,
sites/services.py). /api/v1/sites/{id}/config needs no instance and stays in sites/api.py.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response

from core.api import BODY_ERRORS, LIMIT_PARAM, OFFSET_PARAM, ApiView, error_responses, page_params, schema
from core.errors import InvalidInput
from core.permissions import READERS, WRITERS, require_site_access
from instances.selectors import site_detail, site_list, site_with_instances
from sites.api import LocationOut, SiteConfigOut, SiteIn, SitePatchIn, SiteUpdateIn, model_values
from sites.selectors import site_get
from sites.services import site_create, site_delete, site_update

# --- output (documentation of what the selectors render) ------------------------------------------

_SUMMARY_FIELDS = {
    "id": serializers.CharField(),
    "label": serializers.CharField(),
    "description": serializers.CharField(),
    "location": LocationOut(),
    "status": serializers.ChoiceField(["healthy", "degraded", "offline"]),
    "instanceCount": serializers.IntegerField(),
    "healthyInstances": serializers.IntegerField(),
    "leaderInstanceId": serializers.CharField(allow_null=True),
    "deviceCount": serializers.IntegerField(),
    "lastDiscovery": serializers.DateTimeField(allow_null=True),
    "createdAt": serializers.DateTimeField(),
}
SiteSummaryOut = schema("SiteSummary", _SUMMARY_FIELDS)
SiteListOut = schema("SiteList", {"sites": SiteSummaryOut(many=True), "total": serializers.IntegerField()})
SiteDetailOut = schema(
    "SiteDetail",
    {
        **_SUMMARY_FIELDS,
        "config": SiteConfigOut(),
        "configVersion": serializers.IntegerField(),
        "leaderTerm": serializers.IntegerField(),
        "updatedAt": serializers.DateTimeField(),
        "instances": schema(
            "SiteInstance",
            {
                "id": serializers.CharField(),
                "hostname": serializers.CharField(),
                "isLeader": serializers.BooleanField(),
                "status": serializers.ChoiceField(["healthy", "degraded", "offline"]),
                "reportedStatus": serializers.CharField(),
                "lastHeartbeat": serializers.DateTimeField(allow_null=True),
                "version": serializers.CharField(),
            },
        )(many=True),
        "stats": schema(
            "SiteStats",
            {
                "deviceCount": serializers.IntegerField(),
                "agentCount": serializers.IntegerField(),
                "seedCount": serializers.IntegerField(),
                "lastDiscovery": serializers.DateTimeField(allow_null=True),
                "inventoryVersion": serializers.IntegerField(),
            },
        )(),
    },
)


def _detail(site_id: str) -> dict:
    return site_detail(site_with_instances(site_id))


# --- views -----------------------------------------------------------------------------------------


class SiteListView(ApiView):
    allowed_scopes = {"GET": READERS, "POST": WRITERS}

    @extend_schema(
        operation_id="sites_list",
        summary="List sites",
        parameters=[LIMIT_PARAM, OFFSET_PARAM],
        responses={200: SiteListOut, **error_responses(400, 401, 403)},
        tags=["sites"],
    )
    def get(self, request):
        limit, offset = page_params(request.query_params)
        return Response(site_list(bound_site_id=self.principal().site_id, limit=limit, offset=offset))

    @extend_schema(
        operation_id="sites_create",
        summary="Create a site",
        request=SiteIn,
        responses={201: SiteDetailOut, **error_responses(*BODY_ERRORS, 409)},
        tags=["sites"],
    )
    def post(self, request):
        if self.principal().site_id:
            raise exceptions.PermissionDenied("A token bound to a site cannot create sites.")
        data = self.validated(SiteIn)
        site = site_create(actor=self.actor(), site_id=data["id"], values=model_values(data))
        return Response(_detail(site.id), status=status.HTTP_201_CREATED)


class SiteDetailView(ApiView):
    allowed_scopes = {"GET": READERS, "PUT": WRITERS, "PATCH": WRITERS, "DELETE": WRITERS}

    @extend_schema(
        operation_id="sites_retrieve",
        summary="Get a site with its instances and stats",
        responses={200: SiteDetailOut, **error_responses(401, 403, 404)},
        tags=["sites"],
    )
    def get(self, request, site_id: str):
        require_site_access(request, site_id)
        return Response(_detail(site_id))

    def _update(self, request, site_id: str, partial: bool):
        require_site_access(request, site_id)
        site_get(site_id)
        data = self.validated(SitePatchIn if partial else SiteUpdateIn)
        if "id" in data and data["id"] != site_id:
            raise InvalidInput({"id": ["A site's id cannot change; it must equal the path's id."]})
        site_update(actor=self.actor(), site_id=site_id, values=model_values(data), partial=partial)
        return Response(_detail(site_id))

    @extend_schema(
        operation_id="sites_update",
        summary="Replace a site (omitted optional fields go back to their defaults)",
        request=SiteUpdateIn,
        responses={200: SiteDetailOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["sites"],
    )
    def put(self, request, site_id: str):
        return self._update(request, site_id, partial=False)

    @extend_schema(
        operation_id="sites_partial_update",
        summary="Change some fields of a site",
        request=SitePatchIn,
        responses={200: SiteDetailOut, **error_responses(*BODY_ERRORS, 404)},
        tags=["sites"],
    )
    def patch(self, request, site_id: str):
        return self._update(request, site_id, partial=True)

    @extend_schema(
        operation_id="sites_destroy",
        summary="Delete a site with its instances and inventory",
        responses={204: None, **error_responses(401, 403, 404)},
        tags=["sites"],
    )
    def delete(self, request, site_id: str):
        require_site_access(request, site_id)
        site_delete(actor=self.actor(), site_id=site_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
