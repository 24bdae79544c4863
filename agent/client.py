"""The manager's REST API as an instance uses it: register, heartbeat, deregister, seeds, results.

Standard library only (urllib), called from asyncio through `asyncio.to_thread`: an instance makes a
few requests a minute, so a thread per call costs nothing and needs no HTTP dependency.

Two tokens: the bootstrap token the agent was started with, used to register; and the `instanceToken`
a register answer may carry (a credential for that one instance), used for every other call once
given. A manager that sends no instanceToken gets the bootstrap token everywhere.

Failures: an answer that is not 2xx raises ApiError (with `retry_after` from a Retry-After header);
a manager that cannot be reached raises OSError (ConnectionError for a reply cut short).
"""

from __future__ import annotations

import asyncio
import email.utils
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

USER_AGENT = "promsnmp-agent/0.1"


class ApiError(Exception):
    """An answer that is not 2xx: `status`, and the manager's `{error, detail, fields}` as `body`."""

    def __init__(self, method: str, path: str, status: int, body: Any, *, retry_after: float | None = None):
        self.status = status
        self.body = body
        self.code = body.get("error") if isinstance(body, dict) else None
        self.retry_after = retry_after
        super().__init__(f"{method} {path}: {status} {body}")

    @property
    def retryable(self) -> bool:
        """Worth sending again as is, later: overload (429, 503), a server error, a timeout."""
        return self.status in (408, 425, 429) or self.status >= 500


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Retry-After as seconds from now: delta-seconds (`120`) or an HTTP-date; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class ManagerClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.bootstrap_token = token
        self.instance_token: str | None = None
        self.timeout = timeout

    @property
    def token(self) -> str:
        """The token for every call but register: the instance's own once the manager issued one."""
        return self.instance_token or self.bootstrap_token

    # --- plumbing ------------------------------------------------------------------------------------

    def request_sync(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        _, raw = self.exchange_sync(method, path, body, query, headers=headers, token=token)
        try:
            return json.loads(raw) if raw else None
        except ValueError:  # a 2xx that is not JSON: a proxy's page, a body cut short
            raise ConnectionError(f"{method} {path}: the answer is not JSON") from None

    def exchange_sync(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """One call: the headers (lower-case names) and the raw body of a 2xx; ApiError otherwise (a 304
        too), ConnectionError when the body was cut short."""
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL: {url!r}")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 -- http(s) checked
        request.add_header("Authorization", f"Bearer {token or self.token}")
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                raw = response.read()
                answer_headers = {name.lower(): value for name, value in response.headers.items()}
        except urllib.error.HTTPError as exc:
            try:
                raw = exc.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            try:
                detail: Any = json.loads(raw) if raw else None
            except ValueError:
                detail = raw.decode(errors="replace")[:500]
            retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
            raise ApiError(method, path, exc.code, detail, retry_after=retry_after) from None
        except http.client.HTTPException as exc:  # a reply cut short (IncompleteRead, BadStatusLine, …)
            raise ConnectionError(f"{method} {path}: {type(exc).__name__}: {exc}") from None
        return answer_headers, raw

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict | None = None,
        *,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> Any:
        return await asyncio.to_thread(
            self.request_sync, method, path, body, query, headers=headers, token=token
        )

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
        scrape_address: str = "",
    ) -> dict[str, Any]:
        """POST /api/v1/instances/register → {instanceId, isLeader, config, websocketUrl, leaderTerm, …}.
        Always with the bootstrap token; an `instanceToken` in the answer is used from then on.
        `scrape_address`: host:port where Prometheus scrapes this instance's PromSNMP (bridge mode)."""
        body: dict[str, Any] = {
            "siteId": site_id,
            "hostname": hostname,
            "podName": pod_name,
            "version": version,
            "capabilities": capabilities if capabilities is not None else ["snmpv1", "snmpv2c", "snmpv3"],
            "labels": labels or {},
        }
        if scrape_address:
            body["scrapeAddress"] = scrape_address
        answer = await self.request("POST", "/api/v1/instances/register", body, token=self.bootstrap_token)
        self.instance_token = answer.get("instanceToken") or None if isinstance(answer, dict) else None
        return answer

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
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """POST …/inventory/devices (discovery results) → {added, updated, unchanged, failed, …}."""
        return await self.post_results(
            site_id,
            results_body(devices, instance_id=instance_id, run_id=run_id, source=source),
            idempotency_key,
        )

    async def post_results(
        self, site_id: str, body: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST a discovery-results body as queued; a repeat with the same key is stored once."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self.request(
            "POST", f"/api/v1/sites/{_q(site_id)}/inventory/devices", body, headers=headers
        )

    async def get_inventory(self, site_id: str) -> dict[str, Any]:
        """The whole inventory document, secrets included (an instance token may)."""
        return await self.request(
            "GET", f"/api/v1/sites/{_q(site_id)}/inventory", query={"includeCredentials": "true"}
        )

    async def get_changes(self, site_id: str, since: int) -> dict[str, Any]:
        """What changed after version `since`; ApiError 410 when the log no longer covers it."""
        return await self.request(
            "GET",
            f"/api/v1/sites/{_q(site_id)}/inventory/changes",
            query={"since": since, "includeCredentials": "true"},
        )

    async def get_promsnmp_inventory(
        self, site_id: str, *, known_version: int | None = None
    ) -> tuple[dict[str, str], bytes] | None:
        """GET …/inventory?format=promsnmp (the instance's own token): the headers and the raw body
        (X-Inventory-Version, PromSNMP's InventoryDTO), or None when `known_version` is current (304)."""
        query: dict[str, Any] = {"format": "promsnmp"}
        if known_version is not None:
            query["version"] = known_version
        try:
            return await asyncio.to_thread(
                self.exchange_sync, "GET", f"/api/v1/sites/{_q(site_id)}/inventory", None, query
            )
        except ApiError as exc:
            if exc.status == 304:
                return None
            raise

    async def post_found_devices(
        self, site_id: str, devices: list[dict[str, Any]], *, instance_id: str
    ) -> dict[str, Any]:
        """POST …/inventory/devices with devices in PromSNMP's form (what a bridge's PromSNMP found by
        itself): the manager adds the new ones → {added, unchanged, failed, newVersion, devices}."""
        body = {"source": "discovery", "format": "promsnmp", "instanceId": instance_id, "devices": devices}
        return await self.request("POST", f"/api/v1/sites/{_q(site_id)}/inventory/devices", body)

    async def get_config(self, site_id: str) -> dict[str, Any]:
        return await self.request("GET", f"/api/v1/sites/{_q(site_id)}/config")


def results_body(
    devices: list[dict[str, Any]], *, instance_id: str, run_id: str | None = None, source: str = "discovery"
) -> dict[str, Any]:
    body: dict[str, Any] = {"source": source, "instanceId": instance_id, "devices": devices}
    if run_id:
        body["runId"] = run_id
    return body


def _q(part: str) -> str:
    return urllib.parse.quote(part, safe="")
