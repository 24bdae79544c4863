"""Discovery runs API: trigger (one seed, or several), list and get runs.

POST …/discovery-seeds/{seedId}/run  → 202 {status, runId, estimatedTargets, leaderInstance}
POST …/discovery-runs {seedIds?}     → 202 the same, with seedIds
GET  …/discovery-runs                → {discoveryRuns, total}, newest first
GET  …/discovery-runs/{runId}        → the run
POST …/discovery-runs/{runId}/cancel → 200 the run, cancelled (409 run_finished when it has ended)
(… = /api/v1/sites/{siteId})
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from core.api import (
    BODY_ERRORS,
    LIMIT_PARAM,
    OFFSET_PARAM,
    ApiView,
    ErrorSerializer,
    error_responses,
    optional_body,
    page_params,
    schema,
)
from core.errors import InvalidInput, NotFoundError
from core.permissions import INSTANCES, READERS, WRITERS, require_site_access
from discovery import runs, selectors
from discovery.models import DiscoveryRun, RunStatus
from sites.selectors import site_get

STARTED = "started"
PENDING = "pending"


_TRIGGER_FIELDS = {
    "status": serializers.ChoiceField(
        [STARTED, PENDING],
        help_text="started: sent to the site's leader; pending: no leader online, sent when one appears.",
    ),
    "runId": serializers.CharField(),
    "estimatedTargets": serializers.IntegerField(help_text="Addresses the seeds cover (a /24 counts 256)."),
    "leaderInstance": serializers.CharField(allow_null=True, help_text="null while pending."),
}
TriggerOut = schema(
    "DiscoveryRunTriggered",
    {
        **_TRIGGER_FIELDS,
        "seedIds": serializers.ListField(
            child=serializers.CharField(),
            required=False,
            help_text="The seeds of the run (POST discovery-runs only).",
        ),
    },
)
RunOut = schema(
    "DiscoveryRun",
    {
        "runId": serializers.CharField(),
        "seedId": serializers.CharField(help_text="The first of seedIds (the spec's single seed)."),
        "seedIds": serializers.ListField(child=serializers.CharField()),
        "status": serializers.ChoiceField(
            RunStatus.values,
            help_text=(
                "pending: waiting for a leader; dispatched: run_discovery sent; running: progress reported; "
                "completed, failed: reported by the leader; timed_out: no end within the timeout; "
                "cancelled: cancelled by an operator (cancel_discovery sent to its instance)."
            ),
        ),
        "startedAt": serializers.DateTimeField(allow_null=True),
        "completedAt": serializers.DateTimeField(allow_null=True),
        "targetsScanned": serializers.IntegerField(),
        "devicesFound": serializers.IntegerField(),
        "devicesNew": serializers.IntegerField(),
        "devicesUpdated": serializers.IntegerField(),
        "errors": serializers.IntegerField(),
        "errorDetail": serializers.CharField(allow_null=True),
        "triggeredBy": serializers.ChoiceField(list(runs.TRIGGERS)),
        "leaderInstance": serializers.CharField(
            allow_null=True, help_text="The instance the run is dispatched to; null while pending."
        ),
        "estimatedTargets": serializers.IntegerField(),
        "createdAt": serializers.DateTimeField(),
        "dispatchedAt": serializers.DateTimeField(allow_null=True),
    },
)
RunListOut = schema(
    "DiscoveryRunList", {"discoveryRuns": RunOut(many=True), "total": serializers.IntegerField()}
)
# The trigger's 409s, run_in_progress among them (a seed runs once at a time).
TRIGGER_CONFLICT = {
    409: OpenApiResponse(
        ErrorSerializer,
        description=(
            "seed_disabled: a seed named is disabled; no_enabled_seeds: no seed named and none enabled; "
            "discovery_disabled: the site's discoveryEnabled is false; run_in_progress: a seed is already "
            "in a pending, dispatched or running run, which the detail names (nothing is started)."
        ),
        examples=[
            OpenApiExample(
                "run_in_progress",
                value={
                    "error": "run_in_progress",
                    "detail": "Discovery seed 'seed_001' is already in run 'run_abc123' (running); "
                    "run it again when that run has ended.",
                    "fields": {},
                },
            )
        ],
    )
}
CANCEL_CONFLICT = {
    409: OpenApiResponse(
        ErrorSerializer,
        description=(
            "run_finished: the run has already ended (completed, failed, timed_out or cancelled); "
            "nothing changes."
        ),
        examples=[
            OpenApiExample(
                "run_finished",
                value={
                    "error": "run_finished",
                    "detail": "Discovery run 'run_abc123' has already ended (completed).",
                    "fields": {},
                },
            )
        ],
    )
}
_ONE_STATUS = "(?:" + "|".join(RunStatus.values) + ")"
STATUS_PARAM = OpenApiParameter(
    "status",
    {"type": "string", "pattern": f"^{_ONE_STATUS}(?:,{_ONE_STATUS})*$"},
    description="Only runs in this status (comma-separated for several).",
)


def _triggered(run: DiscoveryRun) -> dict:
    return {
        "status": PENDING if run.status == RunStatus.PENDING else STARTED,
        "runId": run.pk,
        "estimatedTargets": run.targets_estimated,
        "leaderInstance": run.dispatched_to or None,
    }


def _statuses(request) -> list[str] | None:
    raw = request.query_params.get("status")
    if raw is None or raw == "":
        return None
    values = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [value for value in values if value not in RunStatus.values]
    if bad or not values:
        raise InvalidInput({"status": [f"One or more of {', '.join(RunStatus.values)}."]})
    return values


class SeedRunView(ApiView):
    allowed_scopes = {"POST": WRITERS}

    @extend_schema(
        operation_id="discovery_seed_run",
        summary="Run a discovery seed now (202; pending until the site has a leader)",
        request=None,
        responses={202: TriggerOut, **error_responses(401, 403, 404), **TRIGGER_CONFLICT},
        tags=["discovery"],
    )
    def post(self, request, site_id: str, seed_id: str):
        require_site_access(request, site_id)
        run = runs.run_start(
            actor=self.actor(), site_id=site_id, seed_ids=[seed_id], triggered_by=runs.MANUAL
        )
        return Response(_triggered(run), status=status.HTTP_202_ACCEPTED)


class RunListView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES, "POST": WRITERS}

    @extend_schema(
        operation_id="discovery_runs_list",
        summary="A site's discovery runs, newest first",
        parameters=[STATUS_PARAM, LIMIT_PARAM, OFFSET_PARAM],
        responses={200: RunListOut, **error_responses(400, 401, 403, 404)},
        tags=["discovery"],
    )
    def get(self, request, site_id: str):
        require_site_access(request, site_id)
        limit, offset = page_params(request.query_params)
        statuses = _statuses(request)
        site_get(site_id)
        total, page = selectors.site_runs(site_id, statuses=statuses, limit=limit, offset=offset)
        return Response({"discoveryRuns": page, "total": total})

    @extend_schema(
        operation_id="discovery_runs_create",
        summary="Run several seeds (or every enabled seed) of the site as one run (202)",
        request=optional_body(
            {
                "seedIds": {
                    "type": ["array", "null"],
                    "items": {"type": "string", "minLength": 1, "maxLength": 64},
                    "minItems": 1,
                    "description": "The seeds to run; left out or null: every enabled seed of the site.",
                }
            }
        ),
        responses={202: TriggerOut, **error_responses(*BODY_ERRORS, 404), **TRIGGER_CONFLICT},
        tags=["discovery"],
    )
    def post(self, request, site_id: str):
        require_site_access(request, site_id)
        body = self.json_object(optional=True)
        seed_ids = body.get("seedIds")
        if seed_ids is not None:
            if not isinstance(seed_ids, list) or not seed_ids:
                raise InvalidInput(
                    {"seedIds": ["A non-empty list of seed ids, or null for every enabled seed."]}
                )
            bad = {
                f"seedIds[{index}]": ["A seed id."]
                for index, value in enumerate(seed_ids)
                if not isinstance(value, str) or not value or len(value) > 64
            }
            if bad:
                raise InvalidInput(bad)
        site_get(site_id)
        run = runs.run_start(actor=self.actor(), site_id=site_id, seed_ids=seed_ids, triggered_by=runs.MANUAL)
        return Response({**_triggered(run), "seedIds": list(run.seed_ids)}, status=status.HTTP_202_ACCEPTED)


class RunDetailView(ApiView):
    allowed_scopes = {"GET": READERS | INSTANCES}

    @extend_schema(
        operation_id="discovery_runs_retrieve",
        summary="One discovery run's status and counts",
        responses={200: RunOut, **error_responses(401, 403, 404)},
        tags=["discovery"],
    )
    def get(self, request, site_id: str, run_id: str):
        require_site_access(request, site_id)
        try:
            run = selectors.run_get(site_id, run_id)
        except NotFoundError:
            site_get(site_id)  # an unknown site is said first
            raise
        return Response(selectors.run_representation(run))


class RunCancelView(ApiView):
    allowed_scopes = {"POST": WRITERS}

    @extend_schema(
        operation_id="discovery_runs_cancel",
        summary="Cancel a pending, dispatched or running discovery run",
        description=(
            "The run ends as cancelled (completedAt set) and its seeds may run again at once. A run "
            "dispatched to an instance (dispatched or running) is followed by the event "
            'cancel_discovery {"runId": ...} to that instance; a pending run tells nobody. The leader\'s '
            "later discovery_progress and discovery_complete frames for it are refused (run_finished). "
            "No body."
        ),
        request=None,
        responses={
            200: OpenApiResponse(RunOut, description="The run, now cancelled (as GET returns it)."),
            **error_responses(401, 403, 404),
            **CANCEL_CONFLICT,
        },
        tags=["discovery"],
    )
    def post(self, request, site_id: str, run_id: str):
        require_site_access(request, site_id)
        run = runs.run_cancel(actor=self.actor(), site_id=site_id, run_id=run_id)
        return Response(selectors.run_representation(run))
