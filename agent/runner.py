"""One instance's life (asyncio): register, heartbeat, hold the event socket, run discovery, deregister.

    agent = Agent(ManagerClient(url, token), site_id="chicago-pop-01", hostname="promsnmp-1")
    await agent.run(stop_event)  # returns after stop_event is set and the instance deregistered

- Heartbeats every `config.heartbeatInterval` (or `heartbeat_interval`), with the versions it has;
  a 404 (deregistered, or the manager forgot it) registers again.
- One WebSocket, reconnected with capped exponential backoff and jitter applied after the cap. A close
  with 4401 (bad token) ends the agent; 4403 (unknown instance) registers again first. After every
  (re)connect it lists the runs dispatched to it, as docs/protocol.md asks.
- `run_discovery`: each runId is run once per process. Fetch the seeds with their credentials, scan
  them with `discovery.snmp`, send `discovery_progress` at most every `progress_interval` seconds,
  POST the devices with the runId (in chunks), and send `discovery_complete`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.client import ApiError, ManagerClient
from discovery.snmp import ScanResult, scan, wire_devices

log = logging.getLogger("promsnmp.agent")

POST_CHUNK = 1000  # devices per POST of discovery results
FATAL_CLOSE = 4401  # the token is refused: retrying as is cannot help
REGISTER_AGAIN_CLOSE = 4403  # e.g. the instance was deregistered


@dataclass
class RunReport:
    run_id: str
    status: str = "running"
    targets_scanned: int = 0
    devices_found: int = 0
    devices_new: int = 0
    devices_updated: int = 0
    errors: list[str] = field(default_factory=list)


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before reconnect number `attempt` (0-based): exponential, capped, then jittered down to
    half, so that a fleet that lost the manager at once does not come back in lockstep."""
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)  # noqa: S311 -- jitter, not a secret


class Agent:
    def __init__(
        self,
        client: ManagerClient,
        *,
        site_id: str,
        hostname: str,
        pod_name: str = "",
        version: str = "0.1.0",
        allow_non_loopback: bool = False,
        heartbeat_interval: float | None = None,
        progress_interval: float = 1.0,
        reconnect_cap: float = 30.0,
        on_event: Callable[[dict[str, Any]], Any] | None = None,
    ):
        self.client = client
        self.site_id = site_id
        self.hostname = hostname
        self.pod_name = pod_name
        self.version = version
        self.allow_non_loopback = allow_non_loopback
        self.heartbeat_override = heartbeat_interval
        self.progress_interval = progress_interval
        self.reconnect_cap = reconnect_cap
        self.on_event = on_event
        self.instance_id: str | None = None
        self.is_leader = False
        self.leader_term = 0
        self.config: dict[str, Any] = {}
        self.config_version: int | None = None
        self.inventory_version: int | None = None
        self.websocket_url = ""
        self.started = time.monotonic()
        self.runs: dict[str, RunReport] = {}
        self.connected = asyncio.Event()
        self.fatal: str | None = None
        self._socket: ClientConnection | None = None
        self._tasks: set[asyncio.Task] = set()

    # --- lifecycle -----------------------------------------------------------------------------------

    async def register(self) -> None:
        answer = await self.client.register(
            site_id=self.site_id, hostname=self.hostname, pod_name=self.pod_name, version=self.version
        )
        self.instance_id = answer["instanceId"]
        self.config = answer.get("config") or {}
        self.config_version = answer.get("configVersion")
        self.inventory_version = answer.get("inventoryVersion")
        self.websocket_url = answer["websocketUrl"]
        self._leadership(answer.get("isLeader", False), answer.get("leaderTerm", 0))
        log.info("registered as %s (leader: %s, term %s)", self.instance_id, self.is_leader, self.leader_term)

    async def run(self, stop: asyncio.Event) -> None:
        """Register, then heartbeat and listen until `stop` is set (or the token is refused);
        deregister on the way out."""
        await self.register()
        workers = [
            asyncio.create_task(self._heartbeats(stop), name="heartbeats"),
            asyncio.create_task(self._socket_loop(stop), name="socket"),
        ]
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and task.exception() is not None:
                    raise task.exception()
        finally:
            stop.set()  # the socket loop must not reconnect from here on
            stopper.cancel()
            heartbeats, socket_loop = workers
            for task in [heartbeats, *self._tasks]:
                task.cancel()
            await asyncio.gather(heartbeats, *self._tasks, return_exceptions=True)
            if self.instance_id and self.fatal is None:
                # Deregister before the socket closes: a leader whose socket just drops is replaced later.
                with contextlib.suppress(Exception):
                    await self.client.deregister(self.instance_id)
                    log.info("deregistered %s", self.instance_id)
            if self._socket is not None:
                with contextlib.suppress(Exception):
                    await self._socket.close()  # a normal close (1000), not a cancelled one
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(socket_loop, 5)

    def _leadership(self, is_leader: bool, term: int | None) -> None:
        if term is not None and term < self.leader_term:
            return  # an older word on leadership than one already seen (fencing)
        if is_leader != self.is_leader:
            log.info("leadership: %s (term %s)", "leader" if is_leader else "follower", term)
        self.is_leader = is_leader
        if term is not None:
            self.leader_term = term

    # --- heartbeats ----------------------------------------------------------------------------------

    def heartbeat_seconds(self) -> float:
        if self.heartbeat_override:
            return self.heartbeat_override
        return max(1.0, (self.config.get("heartbeatInterval") or 30000) / 1000)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.heartbeat_seconds())
            if stop.is_set():
                return
            try:
                await self.heartbeat()
            except (ApiError, OSError) as exc:
                log.warning("heartbeat failed: %s", exc)

    async def heartbeat(self) -> dict[str, Any] | None:
        try:
            answer = await self.client.heartbeat(
                self.instance_id,
                uptime=int(time.monotonic() - self.started),
                inventory_version=self.inventory_version,
                config_version=self.config_version,
                metrics={"discoveryRuns": len(self.runs)},
            )
        except ApiError as exc:
            if exc.status == 404:
                log.warning("the manager does not know %s: registering again", self.instance_id)
                await self.register()
                return None
            raise
        self._leadership(answer["isLeader"], answer.get("leaderTerm"))
        if answer.get("configChanged"):
            site_config = await self.client.request("GET", f"/api/v1/sites/{self.site_id}/config")
            self.config, self.config_version = site_config["config"], site_config["configVersion"]
        return answer

    # --- the event socket ----------------------------------------------------------------------------

    def _socket_url(self) -> str:
        separator = "&" if "?" in self.websocket_url else "?"
        return f"{self.websocket_url}{separator}instanceId={urllib.parse.quote(self.instance_id or '')}"

    async def _socket_loop(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            close_code = None
            try:
                async with connect(
                    self._socket_url(),
                    additional_headers={"Authorization": f"Bearer {self.client.token}"},
                    open_timeout=10,
                    max_size=None,
                ) as socket:
                    self._socket = socket
                    self.connected.set()
                    attempt = 0
                    log.info("event socket open")
                    self._spawn(self._catch_up())
                    async for message in socket:
                        await self._handle(message)
                    close_code = socket.close_code
            except (OSError, TimeoutError, InvalidHandshake, InvalidStatus, ConnectionClosed) as exc:
                close_code = getattr(getattr(exc, "rcvd", None), "code", None)
                log.warning("event socket: %s", exc)
            finally:
                self._socket = None
                self.connected.clear()
            if stop.is_set():
                return
            if close_code == FATAL_CLOSE:
                self.fatal = "the manager refused the token (4401)"
                log.error("%s: stopping", self.fatal)
                return
            if close_code == REGISTER_AGAIN_CLOSE:
                with contextlib.suppress(ApiError, OSError):
                    await self.register()
            delay = backoff(attempt, cap=self.reconnect_cap)
            attempt += 1
            log.info("event socket closed (%s): reconnecting in %.1f s", close_code, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)

    async def _handle(self, message: str | bytes) -> None:
        try:
            event = json.loads(message)
        except ValueError:
            log.warning("not JSON: %r", message[:200])
            return
        if not isinstance(event, dict):
            return
        kind, payload = event.get("type"), event.get("payload") or {}
        if self.on_event is not None:
            self.on_event(event)
        if kind == "run_discovery":
            self.start_run(payload.get("runId"), payload.get("seedIds") or [])
        elif kind == "leader_assigned":
            self._leadership(True, payload.get("leaderTerm"))
        elif kind == "leader_revoked":
            self._leadership(False, payload.get("leaderTerm"))
        elif kind == "inventory_updated" and isinstance(payload.get("version"), int):
            self.inventory_version = max(self.inventory_version or 0, payload["version"])
        elif kind == "config_updated" and isinstance(payload.get("configVersion"), int):
            self.config.update(payload.get("config") or {})
            self.config_version = payload["configVersion"]
        elif kind == "error":
            log.warning("manager refused a frame: %s", payload)

    async def _catch_up(self) -> None:
        """After a (re)connect: the runs dispatched to this instance that no event may have announced."""
        try:
            for run in await self.client.list_runs(self.site_id):
                if run.get("leaderInstance") == self.instance_id:
                    self.start_run(run["runId"], run.get("seedIds") or [])
        except (ApiError, OSError) as exc:
            log.warning("listing discovery runs failed: %s", exc)

    async def send(self, frame: dict[str, Any], *, wait: float = 0) -> bool:
        """Send a frame on the socket; wait up to `wait` seconds for one to be open. False if not sent."""
        deadline = time.monotonic() + wait
        while True:
            socket = self._socket
            if socket is not None:
                try:
                    await socket.send(json.dumps(frame))
                    return True
                except ConnectionClosed:
                    pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.connected.wait(), min(remaining, 1.0))
            await asyncio.sleep(0.05)

    # --- discovery -----------------------------------------------------------------------------------

    def start_run(self, run_id: Any, seed_ids: list[str]) -> None:
        if not isinstance(run_id, str) or not run_id or run_id in self.runs:
            return  # the same runId again (resent after a reconnect or a leadership change): run it once
        self.runs[run_id] = RunReport(run_id=run_id)
        self._spawn(self.run_discovery(run_id, [s for s in seed_ids if isinstance(s, str)]))

    def _spawn(self, coroutine) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run_discovery(self, run_id: str, seed_ids: list[str]) -> RunReport:
        report = self.runs.setdefault(run_id, RunReport(run_id=run_id))
        log.info("discovery run %s: seeds %s", run_id, ", ".join(seed_ids))
        found = []
        try:
            seeds = [await self.client.get_seed(self.site_id, seed_id) for seed_id in seed_ids]
            last_sent = 0.0
            for seed in seeds:
                before = report.targets_scanned, report.devices_found

                async def progress(scanned: int, devices: int, before=before) -> None:
                    nonlocal last_sent
                    report.targets_scanned = before[0] + scanned
                    report.devices_found = before[1] + devices
                    now = time.monotonic()
                    if now - last_sent >= self.progress_interval:
                        last_sent = now
                        await self._progress(report)

                result = await self._scan_seed(seed, progress)
                found.extend(result.devices)
                report.errors.extend(
                    f"{seed.get('name', seed.get('id'))}: {m}" for m in result.error_messages
                )
            await self._progress(report)
            devices = wire_devices(found)
            for start in range(0, len(devices), POST_CHUNK):
                answer = await self.client.post_devices(
                    self.site_id,
                    devices[start : start + POST_CHUNK],
                    instance_id=self.instance_id,
                    run_id=run_id,
                )
                report.devices_new += answer.get("added", 0)
                report.devices_updated += answer.get("updated", 0)
                report.errors.extend(
                    f"{d.get('sysName')}: {d.get('error')}"
                    for d in answer.get("devices", [])
                    if d.get("status") == "failed"
                )
            report.status = "completed"
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure ends the run as failed, with why
            log.exception("discovery run %s failed", run_id)
            report.status = "failed"
            report.errors.append(f"{type(exc).__name__}: {exc}")
        await self.send(
            {
                "type": "discovery_complete",
                "payload": {
                    "runId": run_id,
                    "status": report.status,
                    "counts": {
                        "targetsScanned": report.targets_scanned,
                        "devicesFound": report.devices_found,
                        "devicesNew": report.devices_new,
                        "devicesUpdated": report.devices_updated,
                    },
                    "errors": [message[:1000] for message in report.errors[:1000]],
                },
            },
            wait=60,
        )
        log.info(
            "discovery run %s %s: %d scanned, %d found, %d new, %d updated, %d errors",
            run_id,
            report.status,
            report.targets_scanned,
            report.devices_found,
            report.devices_new,
            report.devices_updated,
            len(report.errors),
        )
        return report

    async def _scan_seed(self, seed: dict[str, Any], progress) -> ScanResult:
        options = seed.get("options") or {}
        return await scan(
            seed["targets"],
            [seed["snmpConfig"]],
            port=options.get("port", 161),
            concurrency=options.get("maxConcurrent", 50),
            timeout=options.get("timeout", 5000) / 1000,
            retries=options.get("retries", 1),
            on_progress=progress,
            allow_non_loopback=self.allow_non_loopback,
        )

    async def _progress(self, report: RunReport) -> None:
        await self.send(
            {
                "type": "discovery_progress",
                "payload": {
                    "runId": report.run_id,
                    "targetsScanned": report.targets_scanned,
                    "devicesFound": report.devices_found,
                },
            }
        )
