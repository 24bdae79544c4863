"""The manager's REST API as an instance uses it: register, heartbeat, deregister, seeds, results.

Standard library only (urllib), called from asyncio through `asyncio.to_thread`: an instance makes a
few requests a minute, so a thread per call costs nothing and needs no HTTP dependency.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USER_AGENT = "promsnmp-agent/0.1"


class ApiError(Exception):
    """An answer that is not 2xx: `status`, and the manager's `{error, detail, fields}` as `body`."""

    def __init__(self, method: str, path: str, status: int, body: Any):
        self.status = status
        self.body = body
        self.code = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"{method} {path}: {status} {body}")


class ManagerClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    # --- plumbing ------------------------------------------------------------------------------------

    def request_sync(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL: {url!r}")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 -- http(s) checked
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                detail: Any = json.loads(raw) if raw else None
            except ValueError:
                detail = raw.decode(errors="replace")[:500]
            raise ApiError(method, path, exc.code, detail) from None
        return json.loads(raw) if raw else None

    async def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        return await asyncio.to_thread(self.request_sync, method, path, body, query)

    # --- the protocol --------------------------------------------------------------------------------

    async def register(
        self,
        *,
        site_id: str,
        hostname: str,
        pod_name: str = "",
        version: str = "",
        capabilities: list[str] | None = None,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST /api/v1/instances/register → {instanceId, isLeader, config, websocketUrl, leaderTerm, …}."""
        return await self.request(
            "POST",
            "/api/v1/instances/register",
            {
                "siteId": site_id,
                "hostname": hostname,
                "podName": pod_name,
                "version": version,
                "capabilities": capabilities if capabilities is not None else ["snmpv1", "snmpv2c", "snmpv3"],
                "labels": labels or {},
            },
        )

    async def heartbeat(
        self,
        instance_id: str,
        *,
        status: str = "healthy",
        uptime: int | None = None,
        inventory_version: int | None = None,
        config_version: int | None = None,
        metrics: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": status,
            "uptime": uptime,
            "inventoryVersion": inventory_version,
            "configVersion": config_version,
        }
        if metrics is not None:
            body["metrics"] = metrics
        return await self.request("POST", f"/api/v1/instances/{_q(instance_id)}/heartbeat", body)

    async def deregister(self, instance_id: str) -> Any:
        return await self.request("DELETE", f"/api/v1/instances/{_q(instance_id)}")

    async def get_seed(
        self, site_id: str, seed_id: str, *, include_credentials: bool = True
    ) -> dict[str, Any]:
        """One discovery seed; with its secrets in clear (an instance or admin token may ask)."""
        query = {"includeCredentials": "true"} if include_credentials else None
        return await self.request(
            "GET", f"/api/v1/sites/{_q(site_id)}/discovery-seeds/{_q(seed_id)}", query=query
        )

    async def list_runs(self, site_id: str, *, statuses: str = "dispatched,running") -> list[dict[str, Any]]:
        answer = await self.request(
            "GET", f"/api/v1/sites/{_q(site_id)}/discovery-runs", query={"status": statuses, "limit": 1000}
        )
        return answer["discoveryRuns"]

    async def post_devices(
        self,
        site_id: str,
        devices: list[dict[str, Any]],
        *,
        instance_id: str,
        run_id: str | None = None,
        source: str = "discovery",
    ) -> dict[str, Any]:
        """POST …/inventory/devices (discovery results) → {added, updated, unchanged, failed, …}."""
        body: dict[str, Any] = {"source": source, "instanceId": instance_id, "devices": devices}
        if run_id:
            body["runId"] = run_id
        return await self.request("POST", f"/api/v1/sites/{_q(site_id)}/inventory/devices", body)


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
