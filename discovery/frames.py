"""Socket frames from the leader about a discovery run (registered in DiscoveryConfig.ready()):

- discovery_progress {runId, targetsScanned, devicesFound}
- discovery_complete {runId, status: "completed" | "failed" ("success" = completed),
  counts?: {targetsScanned?, devicesFound?, devicesNew?, devicesUpdated?},
  errors?: a count, or a list of messages (counted)}

Strict types: "5" is not a count and true is not 1. A bad payload is answered with an error frame
(validation_error and the fields), never applied in part.
"""

from __future__ import annotations

from typing import Any

from discovery import runs
from discovery.models import RunStatus
from instances.frames import FrameRejected

MAX_COUNT = 2**31 - 1
MAX_TARGETS = 2**63 - 1
MAX_ERROR_MESSAGES = 1000
MAX_DETAIL = 10_000
COUNT_NAMES = ("targetsScanned", "devicesFound", "devicesNew", "devicesUpdated")
STATUSES = {"completed": RunStatus.COMPLETED, "success": RunStatus.COMPLETED, "failed": RunStatus.FAILED}


def _count(value: Any, path: str, fields: dict, high: int = MAX_COUNT) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        fields.setdefault(path, []).append(f"A whole number from 0 to {high}.")
        return None
    return value


def _run_id(payload: dict, fields: dict) -> str:
    value = payload.get("runId")
    if not isinstance(value, str) or not value or len(value) > 64:
        fields.setdefault("runId", []).append("Required: the run id from run_discovery.")
        return ""
    return value


def _rejected(frame_type: str, fields: dict) -> FrameRejected:
    return FrameRejected("validation_error", f"Invalid {frame_type} payload.", fields)


def handle_progress(instance_id: str, site_id: str, payload: dict[str, Any]) -> None:
    fields: dict[str, list[str]] = {}
    run_id = _run_id(payload, fields)
    values = {}
    for name, high in (("targetsScanned", MAX_TARGETS), ("devicesFound", MAX_COUNT)):
        if name not in payload:
            fields.setdefault(name, []).append("Required.")
        else:
            values[name] = _count(payload[name], name, fields, high)
    if fields:
        raise _rejected("discovery_progress", fields)
    runs.run_progress(
        instance_id=instance_id,
        run_id=run_id,
        targets_scanned=values["targetsScanned"],
        devices_found=values["devicesFound"],
        site_id=site_id,
    )


def handle_complete(instance_id: str, site_id: str, payload: dict[str, Any]) -> None:
    fields: dict[str, list[str]] = {}
    run_id = _run_id(payload, fields)
    status = STATUSES.get(payload.get("status")) if isinstance(payload.get("status"), str) else None
    if status is None:
        fields["status"] = ["Required: completed or failed."]
    counts: dict[str, int] = {}
    raw_counts = payload.get("counts", {})
    if raw_counts is None:
        raw_counts = {}
    if not isinstance(raw_counts, dict):
        fields["counts"] = [f"An object with any of {', '.join(COUNT_NAMES)}."]
    else:
        for name in COUNT_NAMES:
            if name in raw_counts and raw_counts[name] is not None:
                high = MAX_TARGETS if name == "targetsScanned" else MAX_COUNT
                value = _count(raw_counts[name], f"counts.{name}", fields, high)
                if value is not None:
                    counts[name] = value
    errors, detail = 0, ""
    raw_errors = payload.get("errors", 0)
    if raw_errors is None:
        raw_errors = 0
    if isinstance(raw_errors, list):
        if len(raw_errors) > MAX_ERROR_MESSAGES or not all(isinstance(item, str) for item in raw_errors):
            fields["errors"] = [f"A count, or a list of at most {MAX_ERROR_MESSAGES} messages (strings)."]
        else:
            errors, detail = len(raw_errors), "\n".join(raw_errors)[:MAX_DETAIL]
    else:
        errors = _count(raw_errors, "errors", fields) or 0
    if fields:
        raise _rejected("discovery_complete", fields)
    runs.run_complete(
        instance_id=instance_id,
        run_id=run_id,
        status=status,
        counts=counts,
        errors=errors,
        error_detail=detail,
        site_id=site_id,
    )
