"""The SNMP discovery scanner (asyncio), shared by the manager and the reference agent (`agent/`).

Plain Python: no Django, no settings. It reads the wire form of SNMP credentials (`snmp.credentials`'
fields: version, readCommunity, securityName, securityLevel, authProtocol, …) and targets as
`snmp.targets` parses them (addresses, CIDR networks, ranges).

    result = await scan(["127.0.0.1-127.0.0.20"], [seed["snmpConfig"]], port=161, concurrency=50,
                        timeout=1.0, retries=0, on_progress=print)
    devices = [wire_device(found) for found in result.devices]  # POST …/inventory/devices

Two passes. The sweep (`snmp.sweep`) asks every address whether it speaks SNMP at all, with one
hand-encoded request per address and kind of config (v1/v2c: a GET of sysObjectID with the community;
v3: the engine-id discovery, which any v3 agent answers without credentials), from one socket, at a
bounded rate, keeping one byte per address in flight. Only the addresses that answered get the full
GET (pysnmp, one SnmpEngine for the scan, closed at the end): sysDescr, sysObjectID, sysContact,
sysName, sysLocation and ifNumber, with each config in order until one answers. Only 127.0.0.0/8 is
scanned unless the caller passes `allow_non_loopback=True` (the agent CLI does; tests and benchmarks
never).
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    UsmUserData,
    get_cmd,
    usmAesBlumenthalCfb192Protocol,
    usmAesBlumenthalCfb256Protocol,
    usmAesCfb128Protocol,
    usmDESPrivProtocol,
    usmHMAC128SHA224AuthProtocol,
    usmHMAC192SHA256AuthProtocol,
    usmHMAC256SHA384AuthProtocol,
    usmHMAC384SHA512AuthProtocol,
    usmHMACMD5AuthProtocol,
    usmHMACSHAAuthProtocol,
)
from pysnmp.proto import errind, rfc1905

from snmp.credentials import (
    CREDENTIAL_KEYS,
    MASK,
    MIN_PASSPHRASE,
    SECURITY_LEVELS,
    type_for,
)
from snmp.sweep import RATE, Addresses, Sweep, probes_for
from snmp.targets import Target, parse_target

# The wire name of each value read → its OID. One GET asks for all of them.
OIDS: dict[str, str] = {
    "sysDescr": "1.3.6.1.2.1.1.1.0",
    "sysObjectId": "1.3.6.1.2.1.1.2.0",
    "sysContact": "1.3.6.1.2.1.1.4.0",
    "sysName": "1.3.6.1.2.1.1.5.0",
    "sysLocation": "1.3.6.1.2.1.1.6.0",
    "interfaces": "1.3.6.1.2.1.2.1.0",  # IF-MIB::ifNumber
}
# The limits of inventory/parsing.py: longer texts are cut, so that a found device is never refused.
TEXT_LIMITS = {"sysName": 255, "sysDescr": 4096, "sysContact": 255, "sysLocation": 255, "sysObjectId": 128}
MAX_INTERFACES = 10_000_000
MAX_ERROR_MESSAGES = 1000  # what discovery_complete accepts as a list
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")

# The vocabulary's protocol names (snmp.credentials.AUTH_PROTOCOLS, PRIV_PROTOCOLS) → pysnmp's.
_AUTH_PROTOCOLS = {
    "MD5": usmHMACMD5AuthProtocol,
    "SHA": usmHMACSHAAuthProtocol,
    "SHA224": usmHMAC128SHA224AuthProtocol,
    "SHA256": usmHMAC192SHA256AuthProtocol,
    "SHA384": usmHMAC256SHA384AuthProtocol,
    "SHA512": usmHMAC384SHA512AuthProtocol,
}
# AES-192/256 as net-snmp (and most vendors) do them: the Blumenthal key extension.
_PRIV_PROTOCOLS = {
    "DES": usmDESPrivProtocol,
    "AES": usmAesCfb128Protocol,
    "AES128": usmAesCfb128Protocol,
    "AES192": usmAesBlumenthalCfb192Protocol,
    "AES256": usmAesBlumenthalCfb256Protocol,
}
# Answers that say the credentials are wrong (v3); a wrong v1/v2c community gets no answer at all.
_AUTH_FAILURES = (
    errind.UnknownUserName,
    errind.WrongDigest,
    errind.DecryptionError,
    errind.AuthenticationFailure,
    errind.AuthenticationError,
    errind.UnsupportedSecurityLevel,
    errind.UnknownSecurityName,
    errind.NotInTimeWindow,
    errind.UnknownCommunityName,
)
_NO_VALUE = (rfc1905.NoSuchObject, rfc1905.NoSuchInstance, rfc1905.EndOfMibView)


@dataclass(frozen=True)
class FoundDevice:
    """An address that answered, with the config that worked and what it said (None: not answered)."""

    address: str
    port: int
    snmp_config: dict[str, Any]  # the wire credentials that answered, secrets included
    sys_descr: str | None = None
    sys_object_id: str | None = None
    sys_name: str | None = None
    sys_location: str | None = None
    sys_contact: str | None = None
    interfaces: int | None = None


@dataclass
class ScanResult:
    devices: list[FoundDevice] = field(default_factory=list)
    targets_scanned: int = 0
    unreachable: int = 0  # no answer with any config (silent, or a wrong v1/v2c community)
    errors: Counter = field(default_factory=Counter)  # other failures, by kind: "auth", "error"
    error_messages: list[str] = field(default_factory=list)  # "address: what", at most 1,000
    seconds: float = 0.0
    peak_concurrency: int = 0  # the most full GETs in flight at once
    responded: int = 0  # addresses that answered the sweep (and got the full GET)
    requests_sent: int = 0  # by the sweep, resends included

    @property
    def devices_found(self) -> int:
        return len(self.devices)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def counts(self) -> dict[str, int]:
        """The `counts` of a discovery_complete frame (the device counts the POST adds)."""
        return {"targetsScanned": self.targets_scanned, "devicesFound": self.devices_found}


@dataclass(frozen=True)
class _Credentials:
    wire: dict[str, Any]
    auth: CommunityData | UsmUserData


def credentials(config: dict[str, Any]) -> _Credentials:
    """One wire SNMP config → what pysnmp needs; ValueError when it cannot be used."""
    if not isinstance(config, dict):
        raise ValueError("an SNMP config must be an object")
    version = config.get("version")
    if version in (1, 2) and not isinstance(version, bool):
        community = config.get("readCommunity")
        if not isinstance(community, str) or not community or community == MASK:
            raise ValueError(f"SNMP v{version} needs readCommunity (in clear, not masked)")
        auth: CommunityData | UsmUserData = CommunityData(community, mpModel=0 if version == 1 else 1)
    elif version == 3 and not isinstance(version, bool):
        name = config.get("securityName")
        level = config.get("securityLevel")
        if not isinstance(name, str) or not name:
            raise ValueError("SNMP v3 needs securityName")
        if level not in SECURITY_LEVELS:
            raise ValueError("SNMP v3 needs securityLevel: noAuthNoPriv, authNoPriv or authPriv")
        options: dict[str, Any] = {}
        if level != "noAuthNoPriv":
            options["authKey"] = _passphrase(config, "authPassphrase")
            options["authProtocol"] = _protocol(config, "authProtocol", _AUTH_PROTOCOLS)
        if level == "authPriv":
            options["privKey"] = _passphrase(config, "privPassphrase")
            options["privProtocol"] = _protocol(config, "privProtocol", _PRIV_PROTOCOLS)
        auth = UsmUserData(name, **options)  # noqa: S509 -- the level is the operator's choice
    else:
        raise ValueError("SNMP version must be 1, 2 or 3")
    # The credentials that answered are copied into the found device's agent.
    keys = ("version", *CREDENTIAL_KEYS[version])
    wire = {key: config[key] for key in keys if config.get(key) not in (None, "")}
    wire["type"] = type_for(version)
    if version == 3 and level == "noAuthNoPriv":
        wire = {k: v for k, v in wire.items() if not k.startswith(("auth", "priv"))}
    elif version == 3 and level == "authNoPriv":
        wire = {k: v for k, v in wire.items() if not k.startswith("priv")}
    return _Credentials(wire=wire, auth=auth)


def _passphrase(config: dict[str, Any], key: str) -> str:
    value = config.get(key)
    if not isinstance(value, str) or len(value) < MIN_PASSPHRASE or value == MASK:
        raise ValueError(f"{key}: at least {MIN_PASSPHRASE} characters, in clear (not masked)")
    return value


def _protocol(config: dict[str, Any], key: str, protocols: dict[str, Any]) -> Any:
    value = config.get(key)
    if value not in protocols:
        raise ValueError(f"{key}: one of {', '.join(protocols)}")
    return protocols[value]


def check_targets(targets: Iterable[str | Target], *, allow_non_loopback: bool = False) -> list[Target]:
    """Parse the targets; ValueError for a bad one, or for one outside 127.0.0.0/8 unless allowed."""
    parsed = [target if isinstance(target, Target) else parse_target(target) for target in targets]
    if not allow_non_loopback:
        for target in parsed:
            if target.version != 4 or target.first not in LOOPBACK or target.last not in LOOPBACK:
                raise ValueError(
                    f"{target.text!r} is outside 127.0.0.0/8: pass allow_non_loopback=True to scan it"
                )
    return parsed


def _text(value: Any) -> str:
    return value.asOctets().decode("utf-8", errors="replace").replace("\x00", "")


def _values(var_binds: Iterable[Any], names: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, (_, value) in zip(names, var_binds, strict=False):
        if value is None or isinstance(value, _NO_VALUE):
            continue
        try:
            if name == "interfaces":
                number = int(value)
                found[name] = number if 0 <= number <= MAX_INTERFACES else None
            elif name == "sysObjectId":
                found[name] = ".".join(str(part) for part in value.asTuple()) or None
            else:
                found[name] = _text(value)
        except (TypeError, ValueError, AttributeError):
            continue  # a value of an unexpected type: leave the field out
    return found


class _Scanner:
    def __init__(
        self, engine: SnmpEngine, creds: list[_Credentials], port: int, timeout: float, retries: int
    ):
        self.engine = engine
        self.creds = creds
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.in_flight = 0
        self.peak = 0

    async def probe(self, address: str) -> tuple[FoundDevice | None, str | None, str | None]:
        """(device, None, None) when a config answers; else (None, kind, message): kind None = silent."""
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            target_class = UdpTransportTarget if ":" not in address else Udp6TransportTarget
            target = await target_class.create(
                (address, self.port), timeout=self.timeout, retries=self.retries
            )
            failure: tuple[str, str] | None = None
            for cred in self.creds:
                outcome = await self._get(cred, target)
                if isinstance(outcome, dict):
                    return _device(address, self.port, cred.wire, outcome), None, None
                if outcome is not None and failure is None:
                    failure = outcome
            if failure is None:
                return None, None, None
            return None, failure[0], f"{address}: {failure[1]}"
        except Exception as exc:  # one bad target must not end the scan
            return None, "error", f"{address}: {type(exc).__name__}: {exc}"
        finally:
            self.in_flight -= 1

    async def _get(self, cred: _Credentials, target: Any) -> dict[str, Any] | tuple[str, str] | None:
        """The values read; or (kind, message) for a refusal; or None for no answer."""
        names = list(OIDS)
        # v1 answers a GET with one missing OID with noSuchName for the whole PDU: ask again without it.
        for _ in range(len(OIDS)):
            indication, status, index, var_binds = await get_cmd(
                self.engine,
                cred.auth,
                target,
                ContextData(),
                *(ObjectType(ObjectIdentity(OIDS[name])) for name in names),
                lookupMib=False,
            )
            if indication:
                if isinstance(indication, errind.RequestTimedOut):
                    return None
                kind = "auth" if isinstance(indication, _AUTH_FAILURES) else "error"
                return kind, str(indication)
            if not status:
                return _values(var_binds, names)
            if not index or int(index) > len(names) or len(names) == 1:
                return {}  # it answered (the credentials work) but gave nothing usable
            names.pop(int(index) - 1)
        return {}


def _device(address: str, port: int, wire: dict[str, Any], values: dict[str, Any]) -> FoundDevice:
    return FoundDevice(
        address=address,
        port=port,
        snmp_config=dict(wire),
        sys_descr=values.get("sysDescr"),
        sys_object_id=values.get("sysObjectId"),
        sys_name=values.get("sysName"),
        sys_location=values.get("sysLocation"),
        sys_contact=values.get("sysContact"),
        interfaces=values.get("interfaces"),
    )


def _order(found: FoundDevice) -> tuple[int, int, int]:
    address = ipaddress.ip_address(found.address)
    return address.version, int(address), found.port


ProgressCallback = Callable[[int, int], Any]


async def scan(
    targets: Iterable[str | Target],
    snmp_configs: list[dict[str, Any]],
    *,
    port: int = 161,
    concurrency: int = 50,
    timeout: float = 1.0,
    retries: int = 0,
    rate: float = RATE,
    on_progress: ProgressCallback | None = None,
    allow_non_loopback: bool = False,
) -> ScanResult:
    """Scan every address of `targets` with the wire configs, in order.

    Two passes: the sweep (snmp.sweep) sends one small request per address and config kind at most
    `rate` requests per second and waits `timeout` seconds for the answers, resending `retries` times
    to the silent ones; each address that answered then gets the full GET, with each config in order
    until one answers, at most `concurrency` at once (the same `timeout` and `retries`).
    `on_progress(scanned, found)` (it may be a coroutine function) is called when the counts change: as
    addresses are done (silent ones a batch at a time), the last call with the totals. ValueError for a
    bad target or config, before anything is sent.
    """
    parsed = check_targets(targets, allow_non_loopback=allow_non_loopback)
    if not snmp_configs:
        raise ValueError("at least one SNMP config is needed")
    creds = [credentials(config) for config in snmp_configs]
    if not 1 <= port <= 65535:
        raise ValueError("port: 1 to 65535")
    if concurrency < 1:
        raise ValueError("concurrency: at least 1")
    if not rate > 0:
        raise ValueError("rate: above 0 requests per second")
    result = ScanResult()
    started = time.monotonic()
    addresses = Addresses(parsed)
    answered: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

    reported = (0, 0)

    async def progress() -> None:
        nonlocal reported
        counts = (result.targets_scanned, len(result.devices))
        if on_progress is not None and counts != reported:
            reported = counts
            outcome = on_progress(*counts)
            if inspect.isawaitable(outcome):
                await outcome

    def failed(kind: str, message: str) -> None:
        result.errors[kind] += 1
        if len(result.error_messages) < MAX_ERROR_MESSAGES:
            result.error_messages.append(message)

    async def silent(count: int) -> None:
        result.targets_scanned += count
        result.unreachable += count
        await progress()

    def unsendable(index: int, address: str, error: OSError) -> None:
        result.targets_scanned += 1
        if isinstance(error, PermissionError):
            result.unreachable += 1  # a broadcast address (a network's last): no one device answers it
        else:
            failed("error", f"{address}: {error}")  # no route, …: worth the operator's eye

    sweep = Sweep(
        addresses,
        probes_for([cred.wire for cred in creds]),
        port=port,
        timeout=timeout,
        retries=retries,
        rate=rate,
        on_answer=lambda index, address: answered.put_nowait((index, address)),
        on_silent=silent,
        on_error=unsendable,
    )
    engine: SnmpEngine | None = None  # made for the first address that answers
    scanner: _Scanner | None = None

    async def worker() -> None:
        nonlocal engine, scanner
        while (item := await answered.get()) is not None:
            index, address = item
            if scanner is None:
                engine = SnmpEngine()
                scanner = _Scanner(engine, creds, port, timeout, retries)
            device, kind, message = await scanner.probe(address)
            result.targets_scanned += 1
            if device is not None:
                result.devices.append(device)
            elif kind is None:
                result.unreachable += 1  # answered the sweep, then not the GET: lost, or just rebooted
            else:
                failed(kind, message or address)
            sweep.release(index)
            await progress()

    async def sweep_then_stop_workers() -> None:
        await sweep.run()
        for _ in workers:
            answered.put_nowait(None)  # after every address that answered: each worker ends

    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, addresses.total))]
    tasks = [asyncio.create_task(sweep_then_stop_workers()), *workers]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        sweep.close()
        if engine is not None:
            engine.close_dispatcher()
    await progress()
    result.responded = sweep.answered
    result.requests_sent = sweep.sent
    result.peak_concurrency = scanner.peak if scanner is not None else 0
    result.seconds = time.monotonic() - started
    result.devices.sort(key=_order)
    return result


def wire_device(found: FoundDevice) -> dict[str, Any]:
    """A found device in the form `POST /api/v1/sites/{siteId}/inventory/devices` takes (one agent)."""
    texts = {
        "sysName": found.sys_name,
        "sysDescr": found.sys_descr,
        "sysObjectId": found.sys_object_id,
        "sysLocation": found.sys_location,
        "sysContact": found.sys_contact,
    }
    device: dict[str, Any] = {
        key: (value[: TEXT_LIMITS[key]] if isinstance(value, str) and value else None)
        for key, value in texts.items()
    }
    if device["sysObjectId"] and len(found.sys_object_id or "") > TEXT_LIMITS["sysObjectId"]:
        device["sysObjectId"] = None  # a cut OID would be a different OID
    device["interfaces"] = found.interfaces
    device["agents"] = [
        {"address": found.address, "port": found.port, **found.snmp_config, "isPrimary": True}
    ]
    return device


MAX_AGENTS = 64  # inventory/parsing.py


def wire_devices(found: Iterable[FoundDevice]) -> list[dict[str, Any]]:
    """The found devices as one POST body's `devices`: addresses that gave the same sysName are one
    device (its identity in the inventory) with one agent each, the lowest address the primary;
    addresses without a sysName stay one device each."""
    devices: list[dict[str, Any]] = []
    by_name: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, int]] = set()  # overlapping targets scan an address twice
    for item in sorted(found, key=_order):
        if (item.address, item.port) in seen:
            continue
        seen.add((item.address, item.port))
        device = wire_device(item)
        name = (device["sysName"] or "").strip()
        if not name:
            devices.append(device)
        elif name not in by_name:
            by_name[name] = device
            devices.append(device)
        elif len(by_name[name]["agents"]) < MAX_AGENTS:
            by_name[name]["agents"].append({**device["agents"][0], "isPrimary": False})
    return devices
