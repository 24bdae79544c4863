"""Bridge mode: the agent as a sidecar that keeps one unmodified PromSNMP's inventory equal to its site's.

PromSNMP's REST API (pbrane/promsnmp-metrics) has what it takes: `GET /inventory` answers its inventory
as an InventoryDTO `{devices, discoverySeeds}`, and `POST /inventory` **replaces** all of it with the one
posted (every device and seed deleted, the posted ones saved, in one transaction). A POST is therefore
all or nothing, and the rule of this module is: post nothing but a whole, valid, current document
from the manager.

- `Bridge.sync`: `GET …/inventory?format=promsnmp&version=<applied>` from the manager (304: nothing to
  do); the body read to its end and checked field by field (`validate_inventory`), its
  `X-Inventory-Version` present and not older than the version last announced (event or heartbeat);
  posted to PromSNMP only when the version moved; then kept in the state directory (`AppliedState`,
  written atomically). Any failure on the way (manager down, a body cut short, an invalid document,
  PromSNMP down) posts nothing and records nothing: the next trigger tries again. A bridge that starts
  while the manager is down posts nothing at all: its PromSNMP keeps what it has, and heartbeats report
  the applied version from the state file.
- `Bridge.harvest` (the leader only, before each apply and every poll): devices in PromSNMP's
  `GET /inventory` that are not in the document last applied (by PromSNMP id or by the manager's
  device identity) are devices PromSNMP found by itself; they are posted to the manager
  (`POST …/inventory/devices` with `"format": "promsnmp"`, new devices only). No echo: the manager's
  version moves, every bridge applies the new document, which has the device, so it is no longer
  "not in the applied document"; until then it waits in `posted`, and a device the manager refused is
  not posted again unless it changes.

Pieces that need no network (`validate_inventory`, `device_identity`, `found_devices`, `AppliedState`)
are plain functions and classes, tested on their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.client
import ipaddress
import json
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.client import USER_AGENT, ApiError, ManagerClient

log = logging.getLogger("promsnmp.agent.bridge")

STATE_FILE = "promsnmp-inventory.json"
VERSION_HEADER = "x-inventory-version"
DEFAULT_POLL_INTERVAL = 30.0
MAX_REPORTED_ERRORS = 5
HARVEST_CHUNK = 500  # devices per POST of what PromSNMP found


class BridgeError(Exception):
    """A fetch, a check or a post that did not happen; nothing was posted to PromSNMP."""


# --- the document -----------------------------------------------------------------------------------

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_AGENT_TYPES = {"snmp-community": (0, 1), "snmp-user": (3,)}  # SNMP4J version numbers per type
_SEED_TYPES = {"v2c": "snmp-community", "v3": "snmp-user"}
_DEVICE_KEYS = {
    "id",
    "sysName",
    "sysDescr",
    "sysContact",
    "sysLocation",
    "discoveredAt",
    "agents",
    "primaryAgent",
}
_AGENT_KEYS = {"type", "id", "endpoint", "version", "timeout", "retries", "discoveredAt"}
_COMMUNITY_KEYS = {"readCommunity", "writeCommunity"}
_USER_KEYS = {
    "securityName",
    "securityLevel",
    "authProtocol",
    "authPassphrase",
    "privProtocol",
    "privPassphrase",
    "engineId",
}
_SEED_KEYS = {
    "id",
    "potentialTargets",
    "port",
    "version",
    "agentType",
    "readCommunity",
    "securityName",
    "securityLevel",
    "authProtocol",
    "authPassphrase",
    "privProtocol",
    "privPassphrase",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _text_or_null(value: Any) -> bool:
    return value is None or isinstance(value, str)


class _Check:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def __call__(self, ok: bool, path: str, message: str) -> bool:
        if not ok:
            self.errors.append(f"{path}: {message}")
        return ok

    def keys(self, item: dict, allowed: set[str], required: set[str], path: str) -> None:
        for key in sorted(required - set(item)):
            self(False, f"{path}.{key}", "missing")
        for key in sorted(set(item) - allowed):
            self(False, f"{path}.{key}", "not a field PromSNMP knows")


def _agent(check: _Check, agent: Any, path: str) -> None:
    if not check(isinstance(agent, dict), path, "an agent object"):
        return
    kind = agent.get("type")
    if not check(kind in _AGENT_TYPES, f"{path}.type", "snmp-community or snmp-user"):
        return
    extra = _COMMUNITY_KEYS if kind == "snmp-community" else _USER_KEYS
    check.keys(agent, _AGENT_KEYS | extra, _AGENT_KEYS - {"discoveredAt"}, path)
    check(isinstance(agent.get("id"), str) and bool(_UUID.match(agent["id"])), f"{path}.id", "a UUID")
    endpoint = agent.get("endpoint")
    if check(isinstance(endpoint, dict), f"{path}.endpoint", "{address, port}"):
        address = endpoint.get("address")
        check(isinstance(address, str) and bool(address.strip()), f"{path}.endpoint.address", "an address")
        port = endpoint.get("port")
        check(_is_int(port) and 1 <= port <= 65535, f"{path}.endpoint.port", "1-65535")
    check(agent.get("version") in _AGENT_TYPES[kind], f"{path}.version", f"one of {_AGENT_TYPES[kind]}")
    for name in ("timeout", "retries"):
        check(_is_int(agent.get(name)) and agent[name] >= 0, f"{path}.{name}", "a whole number")
    check(
        agent.get("discoveredAt") is None or isinstance(agent["discoveredAt"], str | int | float),
        f"{path}.discoveredAt",
        "a timestamp or null",
    )
    if kind == "snmp-community":
        community = agent.get("readCommunity")
        check(isinstance(community, str) and community != "", f"{path}.readCommunity", "the community")
        check(_text_or_null(agent.get("writeCommunity")), f"{path}.writeCommunity", "text or null")
        check("****" not in (community, agent.get("writeCommunity")), f"{path}.readCommunity", "masked")
    else:
        check(isinstance(agent.get("securityName"), str), f"{path}.securityName", "the user name")
        check(agent.get("securityLevel") in (1, 2, 3), f"{path}.securityLevel", "1, 2 or 3")
        for name in _USER_KEYS - {"securityName", "securityLevel"}:
            check(_text_or_null(agent.get(name)), f"{path}.{name}", "text or null")
        secrets = (agent.get("authPassphrase"), agent.get("privPassphrase"))
        check("****" not in secrets, f"{path}.authPassphrase", "masked")


def _device(check: _Check, device: Any, path: str, ids: set[str]) -> None:
    if not check(isinstance(device, dict), path, "a device object"):
        return
    check.keys(device, _DEVICE_KEYS, {"id", "agents", "primaryAgent"}, path)
    device_id = device.get("id")
    if check(isinstance(device_id, str) and bool(_UUID.match(device_id)), f"{path}.id", "a UUID"):
        check(device_id not in ids, f"{path}.id", "the id of another device")
        ids.add(device_id)
    for name in ("sysName", "sysDescr", "sysContact", "sysLocation"):
        check(_text_or_null(device.get(name)), f"{path}.{name}", "text or null")
    agents = device.get("agents")
    if check(isinstance(agents, list) and len(agents) > 0, f"{path}.agents", "a list of agents"):
        for index, agent in enumerate(agents):
            _agent(check, agent, f"{path}.agents[{index}]")
    primary = device.get("primaryAgent")
    if primary is not None:
        _agent(check, primary, f"{path}.primaryAgent")
        agent_ids = {a.get("id") for a in agents or [] if isinstance(a, dict)}
        check(
            isinstance(primary, dict) and primary.get("id") in agent_ids,
            f"{path}.primaryAgent",
            "a copy of one of the device's agents",
        )


def _seed(check: _Check, seed: Any, path: str, ids: set[str]) -> None:
    if not check(isinstance(seed, dict), path, "a seed object"):
        return
    check.keys(seed, _SEED_KEYS, {"id", "potentialTargets", "port", "version", "agentType"}, path)
    seed_id = seed.get("id")
    if check(isinstance(seed_id, str) and bool(_UUID.match(seed_id)), f"{path}.id", "a UUID"):
        check(seed_id not in ids, f"{path}.id", "the id of another seed")
        ids.add(seed_id)
    targets = seed.get("potentialTargets")
    check(
        isinstance(targets, list) and all(isinstance(t, str) and t for t in targets),
        f"{path}.potentialTargets",
        "a list of addresses",
    )
    check(_is_int(seed.get("port")) and 1 <= seed["port"] <= 65535, f"{path}.port", "1-65535")
    version = seed.get("version")
    if check(version in _SEED_TYPES, f"{path}.version", "v2c or v3"):
        check(seed.get("agentType") == _SEED_TYPES[version], f"{path}.agentType", _SEED_TYPES[version])
    check(seed.get("securityLevel") in (None, 0, 1, 2, 3), f"{path}.securityLevel", "0 to 3")
    for name in _SEED_KEYS - {"id", "potentialTargets", "port", "version", "agentType", "securityLevel"}:
        check(_text_or_null(seed.get(name)), f"{path}.{name}", "text or null")


def validate_inventory(document: Any) -> list[str]:
    """Every way `document` is not a whole InventoryDTO as the manager writes it; [] when it is one.
    Strict on purpose: what PromSNMP is given replaces everything it has."""
    check = _Check()
    if not check(isinstance(document, dict), "document", "a JSON object {devices, discoverySeeds}"):
        return check.errors
    check.keys(document, {"devices", "discoverySeeds"}, {"devices", "discoverySeeds"}, "document")
    devices, seeds = document.get("devices"), document.get("discoverySeeds")
    if check(isinstance(devices, list), "devices", "a list"):
        device_ids: set[str] = set()
        for index, device in enumerate(devices):
            _device(check, device, f"devices[{index}]", device_ids)
    if check(isinstance(seeds, list), "discoverySeeds", "a list"):
        seed_ids: set[str] = set()
        for index, seed in enumerate(seeds):
            _seed(check, seed, f"discoverySeeds[{index}]", seed_ids)
    return check.errors


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def parse_strict(raw: bytes) -> Any:
    """JSON as RFC 8259 says: UTF-8, no NaN or Infinity, no key twice in an object."""
    return json.loads(
        raw.decode("utf-8"), parse_constant=_refuse_constant, object_pairs_hook=_no_duplicate_keys
    )


def device_identity(device: Any) -> str | None:
    """The manager's identity of a PromSNMP device: its sysName (trimmed), else its primary agent's
    address (primaryAgent, else the first agent); None when it has neither."""
    if not isinstance(device, dict):
        return None
    name = device.get("sysName")
    if isinstance(name, str) and name.strip():
        return f"name:{name.strip()}"
    primary = device.get("primaryAgent")
    if not isinstance(primary, dict):
        agents = device.get("agents")
        primary = agents[0] if isinstance(agents, list) and agents and isinstance(agents[0], dict) else None
    endpoint = primary.get("endpoint") if isinstance(primary, dict) else None
    address = endpoint.get("address") if isinstance(endpoint, dict) else None
    if not isinstance(address, str):
        return None
    try:
        return f"addr:{ipaddress.ip_address(address.strip())}"
    except ValueError:
        return f"addr:{address.strip()}"


def fingerprint(device: Any) -> str:
    return hashlib.sha256(json.dumps(device, sort_keys=True, default=str).encode()).hexdigest()


def found_devices(current: dict[str, Any], known: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The devices of `current` (PromSNMP's GET /inventory) that `known` (what it was given) has neither
    by id nor by identity: what PromSNMP found by itself."""
    known_devices = [d for d in (known or {}).get("devices") or [] if isinstance(d, dict)]
    ids = {d.get("id") for d in known_devices}
    identities = {device_identity(d) for d in known_devices} - {None}
    return [
        device
        for device in current.get("devices") or []
        if isinstance(device, dict)
        and device.get("id") not in ids
        and (device_identity(device) is None or device_identity(device) not in identities)
    ]


def same_devices(first: dict[str, Any], second: dict[str, Any]) -> bool:
    """Whether two inventories hold the same devices and seeds (by id and identity): PromSNMP still has
    what it was given."""

    def keys(document: dict[str, Any]) -> tuple[set, set]:
        devices = {
            (d.get("id"), device_identity(d)) for d in document.get("devices") or [] if isinstance(d, dict)
        }
        seeds = {s.get("id") for s in document.get("discoverySeeds") or [] if isinstance(s, dict)}
        return devices, seeds

    return keys(first) == keys(second)


# --- the state directory ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    """A document posted to PromSNMP, and the manager's version it is."""

    version: int
    document: dict[str, Any]


class AppliedState:
    """The last document applied to PromSNMP, in `<state dir>/promsnmp-inventory.json`: written to a
    temporary file, flushed to disk and renamed over the old one, so a crash leaves the old or the new
    file, never half of one. It holds SNMP secrets in clear (as PromSNMP's own file may): mode 0600.
    Without a state directory it lives in memory only (a restart forgets it)."""

    def __init__(self, state_dir: str | Path | None):
        self.path = Path(state_dir) / STATE_FILE if state_dir else None
        self._memory: Applied | None = None

    def load(self) -> Applied | None:
        if self.path is None:
            return self._memory
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = parse_strict(raw)
            version, document = data["version"], data["document"]
            if not _is_int(version) or validate_inventory(document):
                raise ValueError("not a version and a valid document")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s): starting as if nothing was applied", self.path, exc)
            return None
        return Applied(version=version, document=document)

    def save(self, applied: Applied) -> None:
        self._memory = applied
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = json.dumps({"version": applied.version, "document": applied.document}).encode()
        # mkstemp creates the file with mode 0600, in the same directory (so the rename is atomic).
        handle, temporary = tempfile.mkstemp(prefix=f".{STATE_FILE}.", dir=self.path.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself reaches the disk
        finally:
            os.close(directory)


# --- PromSNMP's REST API ------------------------------------------------------------------------------


class PromSnmpClient:
    """PromSNMP's `/inventory`: GET (its InventoryDTO) and POST (replace it). Standard library only,
    run in a thread like the manager's client. Every failure (unreachable, an answer that is not 2xx or
    not an inventory) is a BridgeError, so that it is never taken for the manager's."""

    def __init__(self, base_url: str, *, timeout: float = 60):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"not an HTTP URL: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, document: dict[str, Any] | None = None) -> bytes:
        data = None if document is None else json.dumps(document).encode()
        request = urllib.request.Request(f"{self.base_url}/inventory", data=data, method=method)  # noqa: S310
        request.add_header("Accept", "application/json")
        request.add_header("User-Agent", USER_AGENT)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                return response.read()
        except urllib.error.HTTPError as exc:
            raise BridgeError(f"PromSNMP {method} /inventory: {exc.code} {exc.reason}") from None
        except (OSError, http.client.HTTPException) as exc:  # PromSNMP's trouble, not the manager's
            reason = getattr(exc, "reason", None) or exc
            raise BridgeError(f"PromSNMP {method} /inventory: unreachable ({reason})") from None

    async def get_inventory(self) -> dict[str, Any]:
        raw = await asyncio.to_thread(self._call, "GET")
        try:
            document = parse_strict(raw)
        except ValueError as exc:
            raise BridgeError(f"PromSNMP GET /inventory is not JSON: {exc}") from None
        if not isinstance(document, dict) or not isinstance(document.get("devices"), list):
            raise BridgeError("PromSNMP GET /inventory is not an inventory {devices, discoverySeeds}")
        return document

    async def post_inventory(self, document: dict[str, Any]) -> None:
        await asyncio.to_thread(self._call, "POST", document)


def scrape_address_of(url: str) -> str:
    """host:port of a URL (the default port of its scheme when it names none): the default scrape
    address of the PromSNMP at `url`."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


# --- the bridge -----------------------------------------------------------------------------------------


class Bridge:
    """One PromSNMP kept equal to its site's inventory. `sync` and `harvest` run one at a time."""

    def __init__(
        self,
        manager: ManagerClient,
        promsnmp: PromSnmpClient,
        *,
        site_id: str,
        state_dir: str | Path | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
    ):
        self.manager = manager
        self.promsnmp = promsnmp
        self.site_id = site_id
        self.poll_interval = poll_interval
        self.state = AppliedState(state_dir)
        self.applied = self.state.load()
        self.announced: int | None = None  # the newest version the manager said it has
        self.behind = False  # the last sync failed: the poll retries it
        self.posts = 0  # documents posted to PromSNMP by this process
        # identity → fingerprint of devices posted to the manager (or refused by it) and not yet seen in
        # an applied document: not posted again until they change.
        self.posted: dict[str, str] = {}
        self._lock = asyncio.Lock()
        if self.applied is not None:
            log.info(
                "PromSNMP holds inventory v%d (%d devices), from %s",
                self.applied.version,
                len(self.applied.document["devices"]),
                self.state.path,
            )

    @property
    def applied_version(self) -> int | None:
        return self.applied.version if self.applied is not None else None

    @property
    def device_count(self) -> int:
        return len(self.applied.document["devices"]) if self.applied is not None else 0

    def announce(self, version: Any) -> None:
        """A version the manager announced (an inventory_updated event, a heartbeat answer)."""
        if _is_int(version):
            self.announced = version

    async def sync(self, *, leader: bool, instance_id: str, full: bool = False) -> bool:
        """Bring PromSNMP to the site's current inventory; True when a document was posted. `full`
        (refresh_inventory with fullSync, the operator's repair): fetch without ?version, and post also
        when the version did not move but PromSNMP no longer holds the applied document's devices, or
        when the manager's version went back (a restore). Raises (ApiError, OSError, BridgeError) with
        nothing posted when any step fails."""
        async with self._lock:
            try:
                posted = await self._sync(leader=leader, instance_id=instance_id, full=full)
            except BaseException:
                self.behind = True
                raise
            self.behind = False
            return posted

    async def _sync(self, *, leader: bool, instance_id: str, full: bool) -> bool:
        known = None if full else self.applied_version
        fetched = await self._fetch(known)
        if leader and instance_id:
            # Before a replace: what PromSNMP found by itself goes to the manager first, or the POST
            # would delete it from PromSNMP before anyone saw it.
            reference = self.applied.document if self.applied is not None else fetched.document
            try:
                moved = await self._harvest(instance_id, reference)
            except ApiError as exc:
                if exc.retryable or exc.status == 401:
                    raise  # the manager is in trouble, or our token is: try again later
                # Refused for good: holding the site's inventory back for it would help nobody.
                log.error("the manager refused what PromSNMP found (%s): applying the site's anyway", exc)
                moved = False
            if moved:
                fetched = await self._fetch(known) or fetched
        if fetched is None:
            return False  # 304: PromSNMP holds the current version
        if self.applied is not None and not full and fetched.version <= self.applied.version:
            return False
        if self.applied is not None and full and fetched.version == self.applied.version:
            if same_devices(await self.promsnmp.get_inventory(), fetched.document):
                return False
            log.warning("PromSNMP no longer holds inventory v%d: posting it again", fetched.version)
        await self.promsnmp.post_inventory(fetched.document)
        self.posts += 1
        previous = self.applied_version
        self.applied = fetched
        identities = {device_identity(d) for d in fetched.document["devices"]}
        self.posted = {key: value for key, value in self.posted.items() if key not in identities}
        try:
            self.state.save(fetched)
        except OSError as exc:  # PromSNMP has it; a restart will post it again, which is harmless
            log.error("inventory v%d applied but not saved to %s: %s", fetched.version, self.state.path, exc)
        log.info(
            "PromSNMP inventory v%s → v%d: %d devices, %d discovery seeds",
            previous,
            fetched.version,
            len(fetched.document["devices"]),
            len(fetched.document["discoverySeeds"]),
        )
        return True

    async def _fetch(self, known: int | None) -> Applied | None:
        """The site's whole inventory in PromSNMP's form, checked; None when `known` is current."""
        answer = await self.manager.get_promsnmp_inventory(self.site_id, known_version=known)
        if answer is None:
            return None
        headers, raw = answer
        version_text = headers.get(VERSION_HEADER, "")
        if not version_text.isdigit():
            raise BridgeError(f"the manager's answer has no {VERSION_HEADER} ({version_text!r}): not applied")
        version = int(version_text)
        try:
            document = parse_strict(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BridgeError(f"inventory v{version} is not JSON ({exc}): not applied") from None
        errors = validate_inventory(document)
        if errors:
            shown = "; ".join(errors[:MAX_REPORTED_ERRORS])
            more = (
                f" (and {len(errors) - MAX_REPORTED_ERRORS} more)"
                if len(errors) > MAX_REPORTED_ERRORS
                else ""
            )
            raise BridgeError(f"inventory v{version} is not a valid PromSNMP inventory: {shown}{more}")
        if self.announced is not None and version < self.announced:
            raise BridgeError(f"the manager answered v{version}, older than v{self.announced} it announced")
        return Applied(version=version, document=document)

    async def harvest(self, *, instance_id: str) -> bool:
        """The leader's poll: post what PromSNMP found by itself since the last apply, without asking the
        manager for anything else; True when the manager's version moved (then sync)."""
        async with self._lock:
            if self.applied is None:
                return False  # nothing applied yet: the first sync compares with the manager's document
            return await self._harvest(instance_id, self.applied.document)

    async def _harvest(self, instance_id: str, reference: dict[str, Any]) -> bool:
        current = await self.promsnmp.get_inventory()
        found = [
            device
            for device in found_devices(current, reference)
            if self.posted.get(device_identity(device) or fingerprint(device)) != fingerprint(device)
        ]
        added = 0
        for start in range(0, len(found), HARVEST_CHUNK):  # well under the manager's 10 MiB per request
            chunk = found[start : start + HARVEST_CHUNK]
            try:
                answer = await self.manager.post_found_devices(self.site_id, chunk, instance_id=instance_id)
            except ApiError as exc:
                if exc.code == "not_leader":
                    log.info("not the leader any more: what PromSNMP found is left to the new leader")
                    return bool(added)
                raise
            answer = answer if isinstance(answer, dict) else {}
            outcomes = answer.get("devices") if isinstance(answer.get("devices"), list) else []
            for device, outcome in zip(chunk, outcomes, strict=False):
                self.posted[device_identity(device) or fingerprint(device)] = fingerprint(device)
                if isinstance(outcome, dict) and outcome.get("status") == "failed":
                    log.warning(
                        "the manager refused device %s that PromSNMP found: %s",
                        device.get("sysName") or device.get("id"),
                        outcome.get("error"),
                    )
            added += answer.get("added", 0) if _is_int(answer.get("added")) else 0
        log.info("PromSNMP found %d devices by itself: %d new to the site", len(found), added)
        return bool(added)
