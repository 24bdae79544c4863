"""One instance's life (asyncio): register, heartbeat, hold the event socket, run discovery, deregister.

    agent = Agent(ManagerClient(url, token), site_id="chicago-pop-01", hostname="promsnmp-1")
    await agent.run(stop_event)  # returns after stop_event is set and the instance deregistered

Resilience (the spec's "Offline Operation & Resilience"; every retry uses agent.backoff: 1 s, 2 s, 4 s …
capped at 300 s, full jitter after the cap, reset after a success, a Retry-After as a floor):
- The first registration is retried until it succeeds (a manager down at start is an outage, not an
  error); only a refusal that cannot change (401, 403, 404 …) ends the agent.
- Heartbeats every `config.heartbeatInterval` (or `heartbeat_interval`); after a failure the next one
  comes after the backoff instead. A 404 (the manager forgot the instance) registers again.
- One WebSocket, reconnected with the backoff. A close with 4401 registers again with the bootstrap
  token when the socket used the instance's own token (it was withdrawn), else ends the agent; 4403
  registers again first.
- Discovery results are queued on disk (agent.spool) with an Idempotency-Key each, and posted in order
  by one sender; a batch leaves the queue when the manager answered 2xx, or a 4xx that will never
  succeed (logged).
- After every (re)connect, and when the events' `seq` skips a number: resync, i.e. let the queue
  drain, then refresh the inventory (changes?since, or in full), the config, a heartbeat and the runs
  dispatched to this instance.
- `run_discovery`: each runId is run once per process; `cancel_discovery` stops it, and nothing of a
  cancelled run is posted or reported.
- Bridge mode (`bridge`, agent.bridge): the inventory is fetched in PromSNMP's form and posted to the
  PromSNMP beside the agent, and the version that PromSNMP holds is the `inventoryVersion` heartbeats
  report. Every inventory refresh above (start, resync, inventory_updated, the heartbeat's version,
  refresh_inventory) is a bridge sync; the leader also syncs every poll interval (what its PromSNMP
  found by itself goes to the manager), and a sync that failed is retried then.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from agent.backoff import DEFAULT_BASE, DEFAULT_CAP, Backoff, backoff, pause
from agent.bridge import Bridge, BridgeError
from agent.client import ApiError, ManagerClient, parse_retry_after, results_body
from agent.spool import Spool
from snmp.scanner import ScanResult, scan, wire_devices
from snmp.sweep import RATE as SWEEP_RATE

__all__ = ["Agent", "RunReport", "backoff"]

log = logging.getLogger("promsnmp.agent")

POST_CHUNK = 1000  # devices per POST of discovery results
FATAL_CLOSE = 4401  # the token is refused
REGISTER_AGAIN_CLOSE = 4403  # e.g. the instance was deregistered
STABLE_SOCKET_SECONDS = 5.0  # a socket that stayed open this long resets the reconnect backoff
DRAIN_BEFORE_RESYNC_SECONDS = 30.0  # "sync queued data → refresh inventory", but not forever


class Fatal(Exception):
    """The manager refuses this agent's credentials or site: retrying cannot help."""


@dataclass
class RunReport:
    run_id: str
    status: str = "running"  # running, completed, failed, cancelled
    targets_scanned: int = 0
    devices_found: int = 0
    devices_new: int = 0
    devices_updated: int = 0
    errors: list[str] = field(default_factory=list)


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
        backoff_base: float = DEFAULT_BASE,
        backoff_cap: float = DEFAULT_CAP,
        state_dir: str | Path | None = None,
        on_event: Callable[[dict[str, Any]], Any] | None = None,
        bridge: Bridge | None = None,
        scrape_address: str = "",
        discovery_rate: float = SWEEP_RATE,
    ):
        self.client = client
        self.site_id = site_id
        self.hostname = hostname
        self.pod_name = pod_name
        self.version = version
        self.allow_non_loopback = allow_non_loopback
        self.heartbeat_override = heartbeat_interval
        self.progress_interval = progress_interval
        self.discovery_rate = discovery_rate
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        Backoff(base=backoff_base, cap=backoff_cap)  # refuse a bad base/cap here, not in a loop later
        self.spool = Spool(state_dir)
        self.on_event = on_event
        self.instance_id: str | None = None
        self.is_leader = False
        self.leader_term = 0
        self.config: dict[str, Any] = {}
        self.config_version: int | None = None
        self.inventory_version: int | None = None  # the version of the inventory held in `devices`
        self.devices: dict[str, dict[str, Any]] = {}
        self.seeds: list[dict[str, Any]] = []
        self.websocket_url = ""
        self.started = time.monotonic()
        self.runs: dict[str, RunReport] = {}
        self.resyncs: list[str] = []  # why each resync ran (seq_gap, reconnect, …), oldest first
        self.last_seq: int | None = None
        self.connected = asyncio.Event()
        self.fatal: str | None = None
        self._stop: asyncio.Event | None = None
        self._socket: ClientConnection | None = None
        self._socket_token: str | None = None
        self._tasks: set[asyncio.Task] = set()
        self._run_tasks: dict[str, asyncio.Task] = {}
        self._outcomes: dict[str, asyncio.Future] = {}  # Idempotency-Key → the manager's answer
        self._spooled = asyncio.Event()
        self._resync_wanted = asyncio.Event()
        self._resync_reasons: list[str] = []
        self._register_lock = asyncio.Lock()
        self.bridge = bridge
        self.scrape_address = scrape_address
        if bridge is not None:
            self.inventory_version = bridge.applied_version  # what PromSNMP holds, even before any fetch

    def new_backoff(self) -> Backoff:
        return Backoff(base=self.backoff_base, cap=self.backoff_cap)

    # --- lifecycle -----------------------------------------------------------------------------------

    async def register(self) -> None:
        """Register (with the bootstrap token); the answer's instanceToken, if any, is used from now on."""
        async with self._register_lock:
            answer = await self.client.register(
                site_id=self.site_id,
                hostname=self.hostname,
                pod_name=self.pod_name,
                version=self.version,
                scrape_address=self.scrape_address,
            )
            self.instance_id = answer["instanceId"]
            self.config = answer.get("config") or {}
            self.config_version = answer.get("configVersion")
            self.websocket_url = answer["websocketUrl"]
            self._leadership(answer.get("isLeader", False), answer.get("leaderTerm", 0))
            log.info(
                "registered as %s (leader: %s, term %s, %s token)",
                self.instance_id,
                self.is_leader,
                self.leader_term,
                "own" if self.client.instance_token else "bootstrap",
            )

    async def _register_until_done(self, stop: asyncio.Event) -> bool:
        """The first registration: retried with the backoff while the manager is unreachable or
        overloaded. False when stopping, or when the manager refuses for good (self.fatal)."""
        retry = self.new_backoff()
        while not stop.is_set():
            attempt = retry.attempt + 1
            try:
                await self._until_stopped(self.register(), stop)
                return not stop.is_set()
            except ApiError as exc:
                if not exc.retryable:
                    self.fatal = f"registration refused: {exc.status} {exc.code or ''}".strip()
                    log.error("%s (%s): stopping", self.fatal, exc.body)
                    return False
                delay = retry.delay(exc.retry_after)
                log.warning(
                    "registration attempt %d: %s %s; retrying in %.1f s", attempt, exc.status, exc.code, delay
                )
            except OSError as exc:
                delay = retry.delay()
                log.warning(
                    "registration attempt %d: manager unreachable (%s); retrying in %.1f s",
                    attempt,
                    _why(exc),
                    delay,
                )
            if await pause(stop, delay):
                return False
        return False

    @staticmethod
    async def _until_stopped(coroutine, stop: asyncio.Event):
        """Await `coroutine`, but give up on it as soon as `stop` is set (SIGTERM stays prompt)."""
        task = asyncio.ensure_future(coroutine)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
        if not task.done():
            task.cancel()
            return None
        return task.result()

    async def run(self, stop: asyncio.Event) -> None:
        """Register, then heartbeat and listen until `stop` is set (or the token is refused);
        deregister on the way out. Queued results stay on disk for the next start."""
        self._stop = stop
        try:
            if not await self._register_until_done(stop):
                return
            self.request_resync("start")
            workers = [
                asyncio.create_task(self._heartbeats(stop), name="heartbeats"),
                asyncio.create_task(self._sender(stop), name="sender"),
                asyncio.create_task(self._resync_loop(stop), name="resync"),
                asyncio.create_task(self._socket_loop(stop), name="socket"),
            ]
            if self.bridge is not None:
                workers.insert(0, asyncio.create_task(self._bridge_polls(stop), name="bridge"))
            await self._supervise(stop, workers)
        finally:
            self.spool.close()

    async def _supervise(self, stop: asyncio.Event, workers: list[asyncio.Task]) -> None:
        stopper = asyncio.create_task(stop.wait())
        try:
            done, _ = await asyncio.wait([stopper, *workers], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not stopper and not task.cancelled() and task.exception() is not None:
                    if isinstance(task.exception(), Fatal):
                        self.fatal = str(task.exception())
                        log.error("%s: stopping", self.fatal)
                    else:
                        raise task.exception()
        finally:
            stop.set()  # the socket loop must not reconnect from here on
            stopper.cancel()
            *others, socket_loop = workers
            pending = [*others, *self._tasks]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if self.instance_id and self.fatal is None:
                # Deregister before the socket closes: a leader whose socket just drops is replaced later.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.client.deregister(self.instance_id), 10)
                    log.info("deregistered %s", self.instance_id)
            if self._socket is not None:
                with contextlib.suppress(Exception):
                    await self._socket.close()  # a normal close (1000), not a cancelled one
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(socket_loop, 5)
            if len(self.spool):
                log.warning("%d batches of discovery results stay queued for the next start", len(self.spool))

    def _leadership(self, is_leader: bool, term: int | None) -> None:
        if term is not None and term < self.leader_term:
            return  # an older word on leadership than one already seen (fencing)
        if is_leader != self.is_leader:
            log.info("leadership: %s (term %s)", "leader" if is_leader else "follower", term)
            if is_leader and self.bridge is not None:
                self.request_resync("leader", light=True)  # what our PromSNMP found is the site's now
        self.is_leader = is_leader
        if term is not None:
            self.leader_term = term

    async def _reauthenticate(self, why: str, *, refused: str | None = None) -> None:
        """Our token (the instance's own) or our instance is gone: register again with the bootstrap
        token. Raises Fatal when the bootstrap token is refused too. `refused`: the token a call was
        refused with; if another task has registered again since, its new token is already in use."""
        if refused is not None and refused != self.client.token:
            return
        log.warning("%s: registering again", why)
        try:
            await self.register()
        except ApiError as exc:
            if exc.status in (401, 403):
                raise Fatal(f"registration refused: {exc.status} {exc.code}") from None
            raise

    # --- heartbeats ----------------------------------------------------------------------------------

    def heartbeat_seconds(self) -> float:
        if self.heartbeat_override:
            return self.heartbeat_override
        return max(1.0, (self.config.get("heartbeatInterval") or 30000) / 1000)

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        retry = self.new_backoff()
        delay = self.heartbeat_seconds()
        while not await pause(stop, delay):
            try:
                await self.heartbeat()
            except ApiError as exc:
                delay = retry.delay(exc.retry_after)
                log.warning("heartbeat failed (%s %s): next in %.1f s", exc.status, exc.code, delay)
                continue
            except OSError as exc:
                delay = retry.delay()
                log.warning("heartbeat failed: manager unreachable (%s): next in %.1f s", _why(exc), delay)
                continue
            retry.reset()
            delay = self.heartbeat_seconds()

    async def heartbeat(self) -> dict[str, Any] | None:
        token = self.client.token
        try:
            answer = await self.client.heartbeat(
                self.instance_id,
                uptime=int(time.monotonic() - self.started),
                inventory_version=self.inventory_version,
                config_version=self.config_version,
                metrics={
                    "discoveryRuns": len(self.runs),
                    "devicesMonitored": len(self.devices)
                    if self.bridge is None
                    else self.bridge.device_count,
                    "queuedBatches": len(self.spool),
                },
            )
        except ApiError as exc:
            if exc.status == 404:
                await self._reauthenticate(f"the manager does not know {self.instance_id}")
                return None
            if exc.status == 401 and self.client.instance_token:
                await self._reauthenticate("the instance token is refused", refused=token)
                return None
            if exc.status in (401, 403):
                raise Fatal(f"heartbeat refused: {exc.status} {exc.code}") from None
            raise
        self._leadership(answer["isLeader"], answer.get("leaderTerm"))
        if self.bridge is not None:
            self.bridge.announce(answer.get("inventoryVersion"))
        if answer.get("configChanged"):
            await self._refresh_config()
        if isinstance(answer.get("inventoryVersion"), int) and answer["inventoryVersion"] != (
            self.inventory_version
        ):
            self.request_resync("inventory_version", light=True)
        return answer

    # --- resync: the recovery after a gap or a reconnect ---------------------------------------------

    def request_resync(self, reason: str, *, light: bool = False) -> None:
        """Ask for a resync (coalesced: many requests while one runs make one more). `light`: only the
        inventory is behind (an inventory_updated event, a heartbeat's inventoryVersion)."""
        self._resync_reasons.append(("inventory:" if light else "") + reason)
        self._resync_wanted.set()

    async def _resync_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self._resync_wanted.wait()
            self._resync_wanted.clear()
            reasons, self._resync_reasons = self._resync_reasons, []
            light = all(reason.startswith("inventory:") for reason in reasons)
            try:
                if light:
                    await self._refresh_inventory()
                else:
                    self.resyncs.extend(reasons)
                    log.info("resync (%s)", ", ".join(reasons))
                    await self.resync()
            except (ApiError, OSError, BridgeError) as exc:
                log.warning("resync failed (%s); the next reconnect or heartbeat retries", exc)
            except (Fatal, asyncio.CancelledError):
                raise
            except Exception:  # an answer we did not expect: logged, and the agent carries on
                log.exception("resync failed")

    async def resync(self) -> None:
        """Sync queued data → refresh inventory (the spec's order), then config, leadership, runs."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), DRAIN_BEFORE_RESYNC_SECONDS)
        try:
            await self._refresh_inventory()
        except BridgeError as exc:  # PromSNMP's trouble must not hold back the config and the runs
            log.warning("PromSNMP inventory sync failed (%s); the next poll retries", exc)
        await self._refresh_config()
        await self.heartbeat()
        await self._catch_up()

    async def _drained(self) -> None:
        while len(self.spool):
            await asyncio.sleep(0.1)

    async def _refresh_inventory(self, *, full: bool = False) -> None:
        if self.bridge is not None:
            try:
                await self.bridge.sync(leader=self.is_leader, instance_id=self.instance_id or "", full=full)
            finally:
                self.inventory_version = self.bridge.applied_version
            return
        if not full and self.inventory_version is not None:
            try:
                changes = await self.client.get_changes(self.site_id, self.inventory_version)
            except ApiError as exc:
                if exc.status != 410:
                    raise
            else:
                for device in changes.get("devices", []):
                    self.devices[device["id"]] = device
                for device_id in changes.get("removedDeviceIds", []):
                    self.devices.pop(device_id, None)
                self.seeds = changes.get("discoverySeeds", self.seeds)
                if changes["version"] != self.inventory_version:
                    log.info(
                        "inventory v%s (changes since v%s): %d devices",
                        changes["version"],
                        self.inventory_version,
                        len(self.devices),
                    )
                self.inventory_version = changes["version"]
                return
        document = await self.client.get_inventory(self.site_id)
        self.devices = {device["id"]: device for device in document.get("devices", [])}
        self.seeds = document.get("discoverySeeds", [])
        self.inventory_version = document["version"]
        log.info("inventory v%s: %d devices", self.inventory_version, len(self.devices))

    async def _refresh_config(self) -> None:
        site_config = await self.client.get_config(self.site_id)
        self.config, self.config_version = site_config["config"], site_config["configVersion"]

    # --- the event socket ----------------------------------------------------------------------------

    def _socket_url(self) -> str:
        separator = "&" if "?" in self.websocket_url else "?"
        return f"{self.websocket_url}{separator}instanceId={urllib.parse.quote(self.instance_id or '')}"

    async def _socket_loop(self, stop: asyncio.Event) -> None:
        retry = self.new_backoff()
        while not stop.is_set():
            close_code = None
            retry_after = None
            opened = None
            token = self._socket_token = self.client.token
            try:
                async with connect(
                    self._socket_url(),
                    additional_headers={"Authorization": f"Bearer {token}"},
                    open_timeout=10,
                    max_size=None,
                ) as socket:
                    self._socket = socket
                    self.connected.set()
                    opened = time.monotonic()
                    self.last_seq = None  # a new socket: the resync below covers what was missed
                    log.info("event socket open")
                    self._spooled.set()  # sync queued data first …
                    self.request_resync("reconnect")  # … then refresh the inventory
                    async for message in socket:
                        await self._handle(message)
                    close_code = socket.close_code
            except InvalidStatus as exc:  # the upgrade answered with an HTTP status (503 …)
                retry_after = parse_retry_after(exc.response.headers.get("Retry-After"))
                log.warning("event socket: %s", exc)
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed) as exc:
                close_code = getattr(getattr(exc, "rcvd", None), "code", None)
                log.warning("event socket: %s", exc)
            finally:
                self._socket = None
                self.connected.clear()
            if stop.is_set():
                return
            if opened is not None and time.monotonic() - opened >= STABLE_SOCKET_SECONDS:
                retry.reset()
            if close_code == FATAL_CLOSE:
                if token != self.client.token:
                    pass  # we registered again meanwhile: that withdrew the token this socket used
                elif self.client.instance_token:
                    with contextlib.suppress(ApiError, OSError):
                        await self._reauthenticate("the socket's instance token was withdrawn")
                else:
                    raise Fatal("the manager refused the token (4401)")
            elif close_code == REGISTER_AGAIN_CLOSE:
                with contextlib.suppress(ApiError, OSError):
                    await self._reauthenticate("the socket was refused (4403)")
            delay = retry.delay(retry_after)
            log.info("event socket closed (%s): reconnecting in %.1f s", close_code, delay)
            if await pause(stop, delay):
                return

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
        self._note_seq(event.get("seq"))
        if kind == "run_discovery":
            self.start_run(payload.get("runId"), payload.get("seedIds") or [])
        elif kind == "cancel_discovery":
            self.cancel_run(payload.get("runId"))
        elif kind == "leader_assigned":
            self._leadership(True, payload.get("leaderTerm"))
        elif kind == "leader_revoked":
            self._leadership(False, payload.get("leaderTerm"))
        elif kind == "inventory_updated" and isinstance(payload.get("version"), int):
            if self.bridge is not None:
                self.bridge.announce(payload["version"])
            if self.inventory_version is None or payload["version"] > self.inventory_version:
                self.request_resync("inventory_updated", light=True)
        elif kind == "refresh_inventory":
            self._spawn(self._full_refresh(bool(payload.get("fullSync", True))))
        elif kind == "config_updated" and isinstance(payload.get("configVersion"), int):
            if self.config_version is None or payload["configVersion"] > self.config_version:
                self.config.update(payload.get("config") or {})
                self.config_version = payload["configVersion"]
        elif kind == "error":
            # (on the way out, the deregistration's own close says "deregistered": not news)
            stopping = self._stop is not None and self._stop.is_set()
            log.log(logging.DEBUG if stopping else logging.WARNING, "manager refused a frame: %s", payload)

    def _note_seq(self, seq: Any) -> None:
        """A jump in the site's event numbers means events did not reach us: resync."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        if self.last_seq is not None and seq > self.last_seq + 1:
            log.info("event seq jumped from %d to %d: resync", self.last_seq, seq)
            self.request_resync("seq_gap")
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq

    async def _full_refresh(self, full: bool) -> None:
        try:
            await self._refresh_inventory(full=full)
        except (ApiError, OSError, BridgeError) as exc:
            log.warning("inventory refresh failed: %s", exc)

    async def _bridge_polls(self, stop: asyncio.Event) -> None:
        """Bridge mode, every poll interval: a bridge whose last sync failed tries again; the leader looks
        at what its PromSNMP found by itself (the manager is asked for nothing unless it did)."""
        while not await pause(stop, self.bridge.poll_interval):
            if self.bridge.behind:
                self.request_resync("promsnmp_retry", light=True)
            elif self.is_leader and self.instance_id:
                try:
                    if await self.bridge.harvest(instance_id=self.instance_id):
                        self.request_resync("promsnmp_found", light=True)
                except (ApiError, OSError, BridgeError) as exc:
                    log.warning("posting what PromSNMP found failed (%s); the next poll retries", exc)

    async def _catch_up(self) -> None:
        """The runs dispatched to this instance that no event may have announced."""
        for run in await self.client.list_runs(self.site_id):
            if run.get("leaderInstance") == self.instance_id:
                self.start_run(run["runId"], run.get("seedIds") or [])

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

    # --- queued discovery results --------------------------------------------------------------------

    def queue_results(self, devices: list[dict[str, Any]], *, run_id: str = "") -> list[str]:
        """Queue discovery results (in chunks) on disk; returns their Idempotency-Keys."""
        keys = []
        for start in range(0, len(devices), POST_CHUNK):
            body = results_body(
                devices[start : start + POST_CHUNK], instance_id=self.instance_id or "", run_id=run_id
            )
            key = self.spool.put(site_id=self.site_id, body=body, run_id=run_id)
            self._outcomes[key] = asyncio.get_running_loop().create_future()
            keys.append(key)
        self._spooled.set()
        return keys

    async def _sender(self, stop: asyncio.Event) -> None:
        """Post queued batches oldest first, each with its Idempotency-Key, until the manager answers."""
        retry = self.new_backoff()
        while not stop.is_set():
            batch = self.spool.first()
            if batch is None:
                self._spooled.clear()
                if self.spool.first() is None:
                    await self._spooled.wait()
                continue
            token = self.client.token
            try:
                answer = await self.client.post_results(batch.site_id, batch.body, batch.key)
            except ApiError as exc:
                if exc.status == 401:
                    # Not a reason to drop results: the token is what is wrong. The instance's own token
                    # is replaced by registering again; a refused bootstrap token stops the agent.
                    if self.client.instance_token:
                        with contextlib.suppress(ApiError, OSError):
                            await self._reauthenticate("the instance token is refused", refused=token)
                elif not exc.retryable:
                    log.error(
                        "discovery results %s refused for good (%s %s: %s): dropped from the queue",
                        batch.key,
                        exc.status,
                        exc.code,
                        exc.body,
                    )
                    self.spool.remove(batch.key)
                    self._settle(batch.key, exc)
                    continue
                delay = retry.delay(exc.retry_after)
                log.warning(
                    "posting results %s: %s %s; %d batches queued, retrying in %.1f s",
                    batch.key,
                    exc.status,
                    exc.code,
                    len(self.spool),
                    delay,
                )
            except OSError as exc:
                delay = retry.delay()
                log.warning(
                    "posting results %s: manager unreachable (%s); %d batches queued, retrying in %.1f s",
                    batch.key,
                    _why(exc),
                    len(self.spool),
                    delay,
                )
            else:
                answer = answer if isinstance(answer, dict) else {}
                self.spool.remove(batch.key)
                retry.reset()
                log.info(
                    "discovery results %s stored: %s added, %s updated, %s unchanged, %s failed",
                    batch.key,
                    answer.get("added"),
                    answer.get("updated"),
                    answer.get("unchanged"),
                    answer.get("failed"),
                )
                self._settle(batch.key, answer)
                continue
            # Woken early by a reconnect: the manager is likely back.
            self._spooled.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._spooled.wait(), delay)

    def _settle(self, key: str, outcome: dict[str, Any] | ApiError) -> None:
        future = self._outcomes.pop(key, None)
        if future is not None and not future.done():
            future.set_result(outcome)

    # --- discovery -----------------------------------------------------------------------------------

    def start_run(self, run_id: Any, seed_ids: list[str]) -> None:
        if not isinstance(run_id, str) or not run_id or run_id in self.runs:
            return  # the same runId again (resent after a reconnect or a leadership change): run it once
        self.runs[run_id] = RunReport(run_id=run_id)
        task = self._spawn(self.run_discovery(run_id, [s for s in seed_ids if isinstance(s, str)]))
        self._run_tasks[run_id] = task
        task.add_done_callback(lambda _t, run_id=run_id: self._run_tasks.pop(run_id, None))

    def cancel_run(self, run_id: Any) -> bool:
        """cancel_discovery: stop the run if this process runs it; its results and end go nowhere."""
        report = self.runs.get(run_id) if isinstance(run_id, str) else None
        if report is None or report.status != "running":
            return False
        report.status = "cancelled"
        dropped = self.spool.drop_run(run_id)
        for key in dropped:
            self._outcomes.pop(key, None)
        task = self._run_tasks.get(run_id)
        if task is not None:
            task.cancel()
        log.info(
            "discovery run %s cancelled by the manager (%d queued batches dropped)", run_id, len(dropped)
        )
        return True

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
            # Queued on disk first: an outage from here on delays the results, never loses them.
            keys = self.queue_results(wire_devices(found), run_id=run_id)
            for key in keys:
                future = self._outcomes.get(key)
                outcome = await future if future is not None else None
                if isinstance(outcome, ApiError):
                    report.errors.append(f"results refused: {outcome.status} {outcome.code}: {outcome.body}")
                    continue
                if outcome is None:
                    continue
                report.devices_new += outcome.get("added", 0)
                report.devices_updated += outcome.get("updated", 0)
                report.errors.extend(
                    f"{d.get('sysName')}: {d.get('error')}"
                    for d in outcome.get("devices", [])
                    if d.get("status") == "failed"
                )
            report.status = (
                "failed" if any(e.startswith("results refused") for e in report.errors) else "completed"
            )
        except asyncio.CancelledError:
            if report.status == "cancelled":
                return report  # cancel_discovery: no results, no discovery_complete
            raise
        except Exception as exc:  # any failure ends the run as failed, with why
            log.exception("discovery run %s failed", run_id)
            report.status = "failed"
            report.errors.append(f"{type(exc).__name__}: {exc}")
        if report.status == "cancelled":
            return report
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
            rate=self.discovery_rate,
            on_progress=progress,
            allow_non_loopback=self.allow_non_loopback,
        )

    async def _progress(self, report: RunReport) -> None:
        if report.status == "cancelled":
            return
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


def _why(exc: OSError) -> object:
    """URLError wraps the socket error: show that (`[Errno 111] Connection refused`)."""
    return getattr(exc, "reason", None) or exc
