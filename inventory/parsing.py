"""Devices as the wire carries them → validated, normalised inputs. Plain Python on purpose: a bulk
import validates 100,000 devices, and a DRF serializer per device would take most of a minute.
(Seeds, the other half of the inventory document, are parsed by inventory.seeds.)"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.crypto import fingerprint
from core.timefmt import TIMESTAMP_MESSAGE, parse_timestamp
from core.validation import UNSTORABLE_MESSAGE, storable, strict_int
from snmp.credentials import parse_snmp_credentials

# How an imported document meets the site's inventory (PUT inventory's mode, import_inventory --mode),
# devices and seeds alike: merge adds new and updates changed, replace also removes what the document
# does not name, addOnly only adds new.
MODES = ("merge", "replace", "addOnly")

MAX_AGENTS = 64
MAX_METADATA_BYTES = 16384
_OID = re.compile(r"^\.?[0-9]+(\.[0-9]+)*$")
_TEXT_FIELDS = (
    # wire name, attribute, max length
    ("sysName", "sys_name", 255),
    ("sysDescr", "sys_descr", 4096),
    ("sysContact", "sys_contact", 255),
    ("sysLocation", "sys_location", 255),
    ("sysObjectId", "sys_object_id", 128),
)
_AGENT_OPTIONS = (("timeout", 1, 600_000), ("retries", 0, 100))


@dataclass
class AgentInput:
    address: str
    port: int
    version: int
    config: dict[str, Any]  # non-secret: type, securityName, levels, protocols, timeout, retries
    secrets: dict[str, str]
    is_primary: bool

    def document(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "config": self.config,
            "secrets": self.secrets,
            "isPrimary": self.is_primary,
        }


@dataclass
class DeviceInput:
    identity: str
    sys_name: str
    sys_descr: str
    sys_contact: str
    sys_location: str
    sys_object_id: str
    interfaces: int | None
    metadata: dict[str, Any]
    discovered_at: datetime | None
    agents: list[AgentInput] = field(default_factory=list)
    _fingerprint: str = ""

    @property
    def fingerprint(self) -> str:
        """Keyed hash of everything stored about the device except its timestamps."""
        if not self._fingerprint:
            self._fingerprint = fingerprint(
                {
                    "sysName": self.sys_name,
                    "sysDescr": self.sys_descr,
                    "sysContact": self.sys_contact,
                    "sysLocation": self.sys_location,
                    "sysObjectId": self.sys_object_id,
                    "interfaces": self.interfaces,
                    "metadata": self.metadata,
                    "agents": sorted(
                        (a.document() for a in self.agents), key=lambda d: (d["address"], d["port"])
                    ),
                }
            )
        return self._fingerprint


def parse_agent(data: Any, path: str, errors: dict[str, list[str]]) -> AgentInput | None:
    def error(name: str, message: str) -> None:
        errors.setdefault(f"{path}.{name}" if name else path, []).append(message)

    if not isinstance(data, dict):
        error("", "Expected an object.")
        return None
    before = len(errors)
    address_text = data.get("address")
    address = None
    if not isinstance(address_text, str):
        error("address", "Required: an IPv4 or IPv6 address.")
    else:
        try:
            address = str(ipaddress.ip_address(address_text))
        except ValueError:
            error("address", f"{address_text!r} is not an IP address.")
    port = strict_int(data.get("port", 161), 1, 65535)
    if port is None:
        error("port", "An integer from 1 to 65535.")
    parsed = parse_snmp_credentials(data, path)
    for key, messages in parsed.errors.items():
        errors.setdefault(key, []).extend(messages)
    config = dict(parsed.plain)
    for name, low, high in _AGENT_OPTIONS:
        if data.get(name) is not None:
            value = strict_int(data[name], low, high)
            if value is None:
                error(name, f"An integer from {low} to {high}.")
            else:
                config[name] = value
    is_primary = data.get("isPrimary", False)
    if not isinstance(is_primary, bool):
        error("isPrimary", "Must be true or false.")
    if len(errors) > before:
        return None
    return AgentInput(
        address=address,
        port=port,
        version=config["version"],
        config=config,
        secrets=parsed.secrets,
        is_primary=is_primary,
    )


def parse_device(data: Any, path: str) -> tuple[DeviceInput | None, dict[str, list[str]]]:
    """One device object → (input, {}) or (None, {field path: [messages]})."""
    errors: dict[str, list[str]] = {}

    def error(name: str, message: str) -> None:
        errors.setdefault(f"{path}.{name}" if name else path, []).append(message)

    if not isinstance(data, dict):
        error("", "Expected a device object.")
        return None, errors
    texts: dict[str, str] = {}
    for wire, attribute, limit in _TEXT_FIELDS:
        value = data.get(wire)
        if value is None:
            texts[attribute] = ""
        elif not isinstance(value, str) or len(value) > limit or not storable(value):
            error(wire, f"A string of at most {limit} characters, or null.")
        else:
            texts[attribute] = value.strip() if wire == "sysName" else value
    if texts.get("sys_object_id") and not _OID.match(texts["sys_object_id"]):
        error("sysObjectId", "An OID in dotted form, e.g. 1.3.6.1.4.1.9.1.2066.")
    interfaces = data.get("interfaces")
    if interfaces is not None and strict_int(interfaces, 0, 10_000_000) is None:
        error("interfaces", "An integer from 0 to 10000000, or null.")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        error("metadata", "Expected an object.")
    elif not storable(metadata):  # first: json.dumps would write 1e400 as Infinity, not fail
        error("metadata", UNSTORABLE_MESSAGE)
    elif len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        error("metadata", f"At most {MAX_METADATA_BYTES} bytes of JSON.")
    discovered_at = None
    if data.get("discoveredAt") is not None:
        discovered_at = parse_timestamp(data["discoveredAt"])  # in UTC, or None when out of range
        if discovered_at is None:
            error("discoveredAt", TIMESTAMP_MESSAGE)

    raw_agents = data.get("agents")
    agents: list[AgentInput] = []
    if not isinstance(raw_agents, list) or not 1 <= len(raw_agents) <= MAX_AGENTS:
        error("agents", f"A list of 1 to {MAX_AGENTS} SNMP agents.")
    else:
        for index, raw in enumerate(raw_agents):
            agent = parse_agent(raw, f"{path}.agents[{index}]", errors)
            if agent is not None:
                agents.append(agent)
        endpoints = [(a.address, a.port) for a in agents]
        if len(set(endpoints)) != len(endpoints):
            error("agents", "Two agents share the same address and port.")
        primaries = [a for a in agents if a.is_primary]
        if len(primaries) > 1:
            error("agents", "At most one agent may be primary.")
        elif agents and not primaries:
            agents[0].is_primary = True
    if errors:
        return None, errors
    primary = next(a for a in agents if a.is_primary)
    identity = f"name:{texts['sys_name']}" if texts["sys_name"] else f"addr:{primary.address}"
    return (
        DeviceInput(
            identity=identity,
            interfaces=interfaces,
            metadata=metadata,
            discovered_at=discovered_at,
            agents=agents,
            **texts,
        ),
        {},
    )


def identity_label(identity: str) -> str:
    """A device identity as people know it: its sysName, else its primary address."""
    kind, _, value = identity.partition(":")
    return value if kind == "name" else f"(no sysName) {value}"
