"""PromSNMP inventory files ↔ the manager's inventory documents: the migration path off NFS/EFS files.

A PromSNMP instance keeps its whole inventory in one JSON file, `{"devices": [...], "discoverySeeds":
[...]}`, often encrypted: base64(12-byte IV || AES-GCM ciphertext with its 16-byte tag), keyed with the
raw bytes of PROM_ENCRYPT_KEY (tests/fixtures/promsnmp/README.md).

- `decrypt_file` / `encrypt_file`: that encryption.
- `read_document` / `load_document`: file bytes → (format, document); plain or encrypted, the format
  detected when not given. Without a key an encrypted file is tried with PromSNMP's default key.
- `from_promsnmp` (`convert_promsnmp`): a PromSNMP document → the manager's wire document that
  inventory.parsing.parse_device and inventory.seeds.parse_seed accept. What the manager has no field
  for (PromSNMP ids, the agents' discoveredAt, a device without a primary agent) is kept in the device's
  metadata under "promsnmp"; a seed's id is kept in its name, "promsnmp-<id>".
- `to_promsnmp`: the reverse, from a document with revealed secrets; `export_document` builds one for a
  site from the selectors, `stream_promsnmp_document` streams one (GET inventory?format=promsnmp, for
  the agent's bridge mode).
- `devices_from_promsnmp`: devices in PromSNMP's form, each on its own (POST inventory/devices with
  "format": "promsnmp": what a bridge's PromSNMP found by itself).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import InvalidInput
from core.parsers import JSONInputError, loads_strict
from core.timefmt import iso_z
from inventory.selectors import iter_devices, site_seeds, stream_json_document
from snmp.credentials import SECURITY_LEVELS, VERSION_LABELS
from snmp.targets import iter_addresses, parse_target

DEFAULT_KEY = "0123456789ABCDEF"  # PromSNMP's InventoryBackupManager.DEFAULT_SYMMETRIC_KEY
KEY_SIZES = (16, 24, 32)  # AES-128/192/256; PromSNMP writes plain JSON with a key of any other length
IV_BYTES = 12
TAG_BYTES = 16
FORMATS = ("manager", "promsnmp")
METADATA_KEY = "promsnmp"
SEED_NAME_PREFIX = "promsnmp-"

# SNMP4J's version numbers (SnmpConstants.version1/2c/3) ↔ the manager's 1, 2, 3.
_VERSION_FROM_SNMP4J = {0: 1, 1: 2, 3: 3}
_VERSION_TO_SNMP4J = {manager: snmp4j for snmp4j, manager in _VERSION_FROM_SNMP4J.items()}
# SNMP4J's SecurityLevel numbers (1 noAuthNoPriv, 2 authNoPriv, 3 authPriv) ↔ the manager's names.
_LEVEL_FROM_NUMBER = dict(enumerate(SECURITY_LEVELS, start=1))
_LEVEL_TO_NUMBER = {name: number for number, name in _LEVEL_FROM_NUMBER.items()}
_SEED_VERSIONS = {label: version for version, label in VERSION_LABELS.items()}  # "v2c" → 2
_AGENT_TYPES = {"snmp-community": "community", "snmp-user": "usm"}
_PROMSNMP_TYPE = {"community": "snmp-community", "usm": "snmp-user"}
_TYPE_FOR_VERSION = {1: "snmp-community", 2: "snmp-community", 3: "snmp-user"}
_AGENT_DEFAULTS = {"timeout": 1500, "retries": 1}  # PromSNMP's Agent defaults
# Stable ids for manager devices, agents and seeds that never came from PromSNMP (same on every export).
_ID_NAMESPACE = uuid.UUID("7d3c1f8e-52a4-4f0b-9c61-3e0f5b2a8d17")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class PromSnmpFileError(ValueError):
    """The file cannot be read: wrong key, corrupt, not JSON, not an inventory document."""


# --- encryption -----------------------------------------------------------------------------------


def _key_bytes(key: str) -> bytes:
    if not isinstance(key, str):
        raise PromSnmpFileError("The key must be a string (PROM_ENCRYPT_KEY).")
    raw = key.encode("utf-8")  # Java's key.getBytes(): the raw bytes of the key
    if len(raw) not in KEY_SIZES:
        raise PromSnmpFileError(
            f"The key is {len(raw)} bytes; PromSNMP encrypts with a key of 16, 24 or 32 characters "
            "(AES-128/192/256) and writes plain JSON with any other key."
        )
    return raw


def encrypt_file(plain: bytes, key: str) -> bytes:
    """As PromSNMP's EncryptionUtils.encrypt: base64(IV || ciphertext || tag), no line breaks."""
    aes = AESGCM(_key_bytes(key))
    iv = os.urandom(IV_BYTES)
    return base64.b64encode(iv + aes.encrypt(iv, plain, None))


def decrypt_file(data: bytes | str, key: str) -> bytes:
    """PromSNMP's encrypted file → the plain JSON bytes; PromSnmpFileError when it does not decrypt."""
    aes = AESGCM(_key_bytes(key))
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    text = b"".join(data.split())  # tolerate a trailing newline or line-wrapped base64
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PromSnmpFileError(
            "The file is neither JSON nor valid base64: not a PromSNMP inventory file, or corrupt."
        ) from exc
    if len(raw) < IV_BYTES + TAG_BYTES:
        raise PromSnmpFileError(
            f"The encrypted file is too short ({len(raw)} bytes after base64): truncated or corrupt."
        )
    try:
        return aes.decrypt(raw[:IV_BYTES], raw[IV_BYTES:], None)
    except InvalidTag as exc:
        raise PromSnmpFileError(
            "The file does not decrypt with this key: the key is wrong or the file is corrupt."
        ) from exc


# --- reading a file -------------------------------------------------------------------------------


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook. Jackson may write an agent's "type" twice (the type id, then the getter): the
    first is the type id PromSNMP reads back, so keep it; any other repeated key keeps its last value,
    as Jackson does."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key == "type" and key in result:
            continue
        result[key] = value
    return result


def _parse_json(raw: bytes, what: str) -> dict[str, Any]:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        # Strict: bounded nesting (json.loads recursed on 5000 `[`), no NaN or Infinity literals.
        document = loads_strict(raw.decode("utf-8"), object_pairs_hook=_object)
    except UnicodeDecodeError as exc:
        raise PromSnmpFileError(f"{what} is not UTF-8 text.") from exc
    except JSONInputError as exc:
        raise PromSnmpFileError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise PromSnmpFileError(f"{what} is JSON but not an object: expected {{'devices': [...], …}}.")
    if "devices" not in document and "discoverySeeds" not in document:
        raise PromSnmpFileError(
            f"{what} is not an inventory document: expected {{'devices': [...], 'discoverySeeds': [...]}}."
        )
    return document


def _dicts(value: Any) -> list[dict]:
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def detect_format(document: dict[str, Any]) -> str | None:
    """ "promsnmp", "manager", or None when the document says nothing either way (no devices, no seeds).
    PromSnmpFileError when it mixes both forms."""
    promsnmp = manager = False
    for device in _dicts(document.get("devices")):
        if "primaryAgent" in device:
            promsnmp = True
        for agent in _dicts(device.get("agents")):
            if "endpoint" in agent or agent.get("type") in _AGENT_TYPES:
                promsnmp = True
            if "address" in agent or agent.get("type") in _PROMSNMP_TYPE:
                manager = True
    for seed in _dicts(document.get("discoverySeeds")):
        if "potentialTargets" in seed or "agentType" in seed:
            promsnmp = True
        if "targets" in seed or "snmpConfig" in seed or "name" in seed:
            manager = True
    if promsnmp and manager:
        raise PromSnmpFileError(
            "The document mixes the manager's form (agents with 'address', seeds with 'targets') and "
            "PromSNMP's (agents with 'endpoint', seeds with 'potentialTargets')."
        )
    return "promsnmp" if promsnmp else "manager" if manager else None


@dataclass
class LoadedDocument:
    format: str  # "manager" or "promsnmp"
    document: dict[str, Any]  # as found in the file, not converted
    encrypted: bool
    key: str | None  # the key that decrypted it (DEFAULT_KEY when none was given)


def read_document(data: bytes | str, *, key: str | None = None, format: str | None = None) -> LoadedDocument:
    """A file's bytes → its document and format. Plain JSON starts with "{"; anything else is taken as
    PromSNMP's encrypted form and decrypted with `key`, or with PromSNMP's default key when no key is
    given (it is public, and the key most deployments never changed)."""
    if format is not None and format not in FORMATS:
        raise PromSnmpFileError(f"Unknown format {format!r}: either manager or promsnmp.")
    if isinstance(data, str):
        data = data.encode("utf-8")
    body = data.lstrip(b"\xef\xbb\xbf").lstrip()
    if not body:
        raise PromSnmpFileError("The file is empty.")
    encrypted = not body.startswith((b"{", b"["))
    used_key = None
    if encrypted:
        used_key = key if key else DEFAULT_KEY
        try:
            body = decrypt_file(body, used_key)
        except PromSnmpFileError as exc:
            if key:
                raise
            raise PromSnmpFileError(
                "The file is encrypted and does not decrypt with PromSNMP's default key "
                f"{DEFAULT_KEY!r}: give the instance's PROM_ENCRYPT_KEY (or the file is corrupt). ({exc})"
            ) from exc
        document = _parse_json(body, "The decrypted file")
    else:
        document = _parse_json(body, "The file")
    detected = detect_format(document)
    if format is not None and detected is not None and detected != format:
        raise PromSnmpFileError(
            f"The file is in the {detected} format, not {format} (leave the format out to detect it)."
        )
    resolved = format or detected or ("promsnmp" if encrypted else "manager")
    return LoadedDocument(format=resolved, document=document, encrypted=encrypted, key=used_key)


def load_document(data: bytes | str, *, key: str | None, format: str | None) -> tuple[str, dict[str, Any]]:
    """A file's bytes → (format, document as found in the file). See read_document."""
    loaded = read_document(data, key=key, format=format)
    return loaded.format, loaded.document


# --- PromSNMP → manager ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _address(value: Any) -> Any:
    """The address as the manager stores it (so metadata matches the agent row), when it is an IP."""
    if isinstance(value, str):
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            return value
    return value


def _instant(value: Any) -> Any:
    """Jackson writes an Instant as ISO-8601, or as epoch seconds when dates are written as numbers."""
    if _is_int(value) or isinstance(value, float):
        try:
            moment = datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return value
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return value


def _protocol(value: Any) -> Any:
    # PromSNMP's protocol mappers read names case-insensitively; the manager's are upper case.
    return value.strip().upper() if isinstance(value, str) else value


def _without_nulls(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


class _Errors(dict):
    def add(self, path: str, message: str) -> None:
        self.setdefault(path, []).append(message)


def _agent_from_promsnmp(data: Any, path: str, errors: _Errors) -> Any:
    if not isinstance(data, dict):
        return data  # parse_device: "Expected an object."
    agent: dict[str, Any] = {}
    endpoint = data.get("endpoint")
    if isinstance(endpoint, dict):
        agent["address"] = _address(endpoint.get("address"))
        if endpoint.get("port") is not None:
            agent["port"] = endpoint["port"]
    else:
        errors.add(f"{path}.endpoint", "Required: an object {address, port}.")

    agent_type = data.get("type")
    version = data.get("version")
    manager_version = _VERSION_FROM_SNMP4J.get(version) if _is_int(version) else None
    if manager_version is None:
        errors.add(f"{path}.version", "An SNMP4J version number: 0 (v1), 1 (v2c) or 3 (v3).")
    if agent_type not in _AGENT_TYPES:
        errors.add(f"{path}.type", "Either snmp-community or snmp-user.")
    elif manager_version is not None and _TYPE_FOR_VERSION[manager_version] != agent_type:
        errors.add(
            f"{path}.type",
            f"An {agent_type} agent cannot have version {version}: "
            + ("snmp-user agents are SNMP v3 (3)." if agent_type == "snmp-user" else "v3 needs snmp-user."),
        )
    if manager_version is None or agent_type not in _AGENT_TYPES:
        return agent
    agent["version"] = manager_version
    agent["type"] = _AGENT_TYPES[agent_type]

    if agent_type == "snmp-community":
        agent.update(
            _without_nulls(
                {"readCommunity": data.get("readCommunity"), "writeCommunity": data.get("writeCommunity")}
            )
        )
    else:
        agent.update(_usm_from_promsnmp(data, path, errors, with_engine_id=True))
    agent.update(_without_nulls({"timeout": data.get("timeout"), "retries": data.get("retries")}))
    return agent


def _primary_index(data: dict[str, Any], agents: list[Any]) -> int | None:
    """Which agent primaryAgent names: by id, else by endpoint (as PromSNMP's Agent.matches)."""
    primary = data.get("primaryAgent")
    if not isinstance(primary, dict):
        return None
    raw_agents = data.get("agents") or []
    primary_id = primary.get("id")
    if primary_id is not None:
        for index, raw in enumerate(raw_agents):
            if isinstance(raw, dict) and raw.get("id") == primary_id:
                return index
    endpoint = primary.get("endpoint")
    if isinstance(endpoint, dict):
        wanted = (_address(endpoint.get("address")), endpoint.get("port"))
        for index, agent in enumerate(agents):
            if isinstance(agent, dict) and (agent.get("address"), agent.get("port")) == wanted:
                return index
    return None


def _device_from_promsnmp(data: Any, path: str, errors: _Errors) -> Any:
    if not isinstance(data, dict):
        return data  # parse_device: "Expected a device object."
    device: dict[str, Any] = {
        "sysName": data.get("sysName"),
        "sysDescr": data.get("sysDescr"),
        "sysContact": data.get("sysContact"),
        "sysLocation": data.get("sysLocation"),
    }
    if data.get("sysObjectId") is not None:
        device["sysObjectId"] = data["sysObjectId"]
    if data.get("discoveredAt") is not None:
        device["discoveredAt"] = _instant(data["discoveredAt"])
    metadata = _without_nulls({"id": data.get("id"), "discoveredAt": data.get("discoveredAt")})

    raw_agents = data.get("agents")
    if not isinstance(raw_agents, list):
        device["agents"] = raw_agents  # parse_device: "A list of 1 to 64 SNMP agents."
    else:
        agents = [
            _agent_from_promsnmp(raw, f"{path}.agents[{i}]", errors) for i, raw in enumerate(raw_agents)
        ]
        primary = _primary_index(data, agents)
        for index, agent in enumerate(agents):
            if isinstance(agent, dict):
                agent["isPrimary"] = index == primary
        if primary is None:
            metadata["noPrimaryAgent"] = True
        metadata["agents"] = [
            _without_nulls(
                {
                    "address": agent.get("address"),
                    "port": agent.get("port", 161),
                    "id": raw.get("id"),
                    "discoveredAt": raw.get("discoveredAt"),
                }
            )
            for raw, agent in zip(raw_agents, agents, strict=True)
            if isinstance(raw, dict) and isinstance(agent, dict)
        ]
        device["agents"] = agents
    device["metadata"] = {METADATA_KEY: metadata}
    return device


def seed_name(seed_id: Any, seed: dict[str, Any]) -> str:
    """PromSNMP seeds have no name: "promsnmp-<seed id>" (the id comes back on export); a seed without
    an id gets a stable name from what it scans (never from its secrets)."""
    if isinstance(seed_id, str) and seed_id.strip():
        return f"{SEED_NAME_PREFIX}{seed_id.strip()}"
    basis = json.dumps(
        [seed.get(k) for k in ("potentialTargets", "port", "version", "agentType", "securityName")],
        sort_keys=True,
        default=str,
    )
    return f"{SEED_NAME_PREFIX}{hashlib.sha256(basis.encode()).hexdigest()[:12]}"


def _usm_from_promsnmp(data: dict, path: str, errors: _Errors, *, with_engine_id: bool) -> dict[str, Any]:
    """SNMP v3 (USM) settings of a PromSNMP agent or seed → the manager's names (seeds have no engineId)."""
    usm: dict[str, Any] = {}
    level = data.get("securityLevel")
    if not _is_int(level) or level not in _LEVEL_FROM_NUMBER:
        errors.add(
            f"{path}.securityLevel",
            "An SNMP4J security level: 1 (noAuthNoPriv), 2 (authNoPriv) or 3 (authPriv).",
        )
    else:
        usm["securityLevel"] = _LEVEL_FROM_NUMBER[level]
    fields = {
        "securityName": data.get("securityName"),
        "authProtocol": _protocol(data.get("authProtocol")),
        "authPassphrase": data.get("authPassphrase"),
        "privProtocol": _protocol(data.get("privProtocol")),
        "privPassphrase": data.get("privPassphrase"),
    }
    if with_engine_id:
        fields["engineId"] = data.get("engineId")
    usm.update(_without_nulls(fields))
    return usm


def _seed_from_promsnmp(data: Any, path: str, errors: _Errors) -> Any:
    if not isinstance(data, dict):
        return data  # parse_seed: "Expected an object."
    seed: dict[str, Any] = {"name": seed_name(data.get("id"), data), "targets": data.get("potentialTargets")}
    if data.get("port") is not None:
        seed["options"] = {"port": data["port"]}
    version_text = data.get("version")
    version = _SEED_VERSIONS.get(version_text.strip().lower()) if isinstance(version_text, str) else None
    if version is None:
        errors.add(f"{path}.version", 'Either "v2c" or "v3".')
        return seed
    agent_type = data.get("agentType")
    if agent_type is not None and agent_type != _TYPE_FOR_VERSION[version]:
        errors.add(f"{path}.agentType", f"A {version_text} seed has agentType {_TYPE_FOR_VERSION[version]}.")
    config: dict[str, Any] = {"version": version}
    if version == 3:
        config.update(_usm_from_promsnmp(data, path, errors, with_engine_id=False))
    elif data.get("readCommunity") is not None:
        config["readCommunity"] = data["readCommunity"]
    seed["snmpConfig"] = config
    return seed


def convert_promsnmp(document: Any) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """A PromSNMP document → (the manager's wire document, errors by PromSNMP field path).

    Only what the mapping itself cannot express is an error here (an unknown SNMP4J version, type or
    security level); everything else is left to inventory.parsing and inventory.seeds to judge.
    "discoverySeeds" is in the result only when the document has it (absent: seeds are left alone)."""
    errors = _Errors()
    if not isinstance(document, dict):
        errors.add("non_field_errors", "Expected a PromSNMP inventory document: {devices, discoverySeeds}.")
        return {"devices": None}, dict(errors)
    devices = document.get("devices")
    result: dict[str, Any] = {
        "devices": (
            [_device_from_promsnmp(item, f"devices[{i}]", errors) for i, item in enumerate(devices)]
            if isinstance(devices, list)
            else devices
        )
    }
    if document.get("discoverySeeds") is not None:
        seeds = document["discoverySeeds"]
        result["discoverySeeds"] = (
            [_seed_from_promsnmp(item, f"discoverySeeds[{i}]", errors) for i, item in enumerate(seeds)]
            if isinstance(seeds, list)
            else seeds
        )
    return result, dict(errors)


def from_promsnmp(document: Any) -> dict[str, Any]:
    """A PromSNMP document → the manager's wire document; InvalidInput (400) when it cannot be mapped."""
    result, errors = convert_promsnmp(document)
    if errors:
        raise InvalidInput(errors, detail="The PromSNMP document cannot be mapped.")
    return result


_PATH_TO_PROMSNMP = (
    (re.compile(r"^(devices\[\d+\]\.agents\[\d+\])\.(address|port)\b"), r"\1.endpoint.\2"),
    (re.compile(r"^(discoverySeeds\[\d+\])\.targets\b"), r"\1.potentialTargets"),
    (re.compile(r"^(discoverySeeds\[\d+\])\.options\.port\b"), r"\1.port"),
    (re.compile(r"^(discoverySeeds\[\d+\])\.snmpConfig\.(\w+)"), r"\1.\2"),
)


def promsnmp_path(path: str) -> str:
    """A manager field path in an error → the same field in the PromSNMP document."""
    for pattern, replacement in _PATH_TO_PROMSNMP:
        path = pattern.sub(replacement, path)
    return path


# --- manager → PromSNMP ---------------------------------------------------------------------------


def _uuid_or(value: Any, fallback: str) -> str:
    if isinstance(value, str) and _UUID.match(value):
        return value
    return str(uuid.uuid5(_ID_NAMESPACE, fallback))


def _agent_to_promsnmp(
    agent: dict[str, Any], known: dict[str, Any], device_key: str, fallback_at: Any
) -> dict:
    address, port = agent["address"], agent.get("port", 161)
    version = agent["version"]
    agent_type = _TYPE_FOR_VERSION[version]
    result: dict[str, Any] = {
        "type": agent_type,
        "id": _uuid_or(known.get("id"), f"agent:{device_key}:{address}:{port}"),
        "endpoint": {"address": address, "port": port},
        "version": _VERSION_TO_SNMP4J[version],
        "timeout": agent.get("timeout", _AGENT_DEFAULTS["timeout"]),
        "retries": agent.get("retries", _AGENT_DEFAULTS["retries"]),
        "discoveredAt": known.get("discoveredAt", fallback_at),
    }
    if agent_type == "snmp-community":
        result["readCommunity"] = agent.get("readCommunity")
        result["writeCommunity"] = agent.get("writeCommunity")
    else:
        result["securityName"] = agent.get("securityName")
        result["securityLevel"] = _LEVEL_TO_NUMBER.get(agent.get("securityLevel"), 1)
        for name in ("authProtocol", "authPassphrase", "privProtocol", "privPassphrase", "engineId"):
            result[name] = agent.get(name)
    return result


def _device_to_promsnmp(device: dict[str, Any]) -> dict[str, Any]:
    metadata = device.get("metadata") or {}
    kept = metadata.get(METADATA_KEY) if isinstance(metadata.get(METADATA_KEY), dict) else {}
    agents = list(device.get("agents") or [])
    primary = next((a for a in agents if a.get("isPrimary")), agents[0] if agents else None)
    device_key = device.get("id") or device.get("sysName") or (primary or {}).get("address", "")
    discovered_at = kept.get("discoveredAt", device.get("discoveredAt"))
    known_agents = {
        (entry.get("address"), entry.get("port", 161)): (index, entry)
        for index, entry in enumerate(kept.get("agents") or [])
        if isinstance(entry, dict)
    }
    # PromSNMP's own order first (the order of its file), then agents it never had.
    agents.sort(key=lambda a: known_agents.get((a["address"], a.get("port", 161)), (len(known_agents),))[0])
    rendered = []
    primary_rendered = None
    for agent in agents:
        _, known = known_agents.get((agent["address"], agent.get("port", 161)), (0, {}))
        item = _agent_to_promsnmp(agent, known, device_key, discovered_at)
        rendered.append(item)
        if agent is primary:
            primary_rendered = item
    return {
        "id": _uuid_or(kept.get("id"), f"device:{device_key}"),
        "sysName": device.get("sysName"),
        "sysDescr": device.get("sysDescr"),
        "sysContact": device.get("sysContact"),
        "sysLocation": device.get("sysLocation"),
        "discoveredAt": discovered_at,
        "agents": rendered,
        "primaryAgent": None
        if kept.get("noPrimaryAgent") or primary_rendered is None
        else dict(primary_rendered),
    }


def _seed_to_promsnmp(seed: dict[str, Any], warnings: list[str]) -> dict[str, Any] | None:
    name = seed.get("name") or ""
    config = seed.get("snmpConfig") or {}
    version = config.get("version")
    if version not in (2, 3):
        warnings.append(f"Seed {name!r} left out: PromSNMP seeds are SNMP v2c or v3, this one is v{version}.")
        return None
    if seed.get("enabled") is False:
        warnings.append(f"Seed {name!r} left out: it is disabled, and PromSNMP seeds cannot be.")
        return None
    kept_id = name[len(SEED_NAME_PREFIX) :] if name.startswith(SEED_NAME_PREFIX) else None
    # PromSNMP resolves each target with InetAddress.getByName: networks and ranges become addresses.
    targets = list(iter_addresses(parse_target(text) for text in seed.get("targets") or []))
    is_v3 = version == 3
    return {
        "id": _uuid_or(kept_id, f"seed:{seed.get('id') or name}"),
        "potentialTargets": targets,
        "port": (seed.get("options") or {}).get("port", 161),
        "version": "v3" if is_v3 else "v2c",
        "agentType": _TYPE_FOR_VERSION[version],
        "readCommunity": None if is_v3 else config.get("readCommunity"),
        "securityName": config.get("securityName") if is_v3 else None,
        "securityLevel": _LEVEL_TO_NUMBER.get(config.get("securityLevel"), 1) if is_v3 else 0,
        "authProtocol": config.get("authProtocol") if is_v3 else None,
        "authPassphrase": config.get("authPassphrase") if is_v3 else None,
        "privProtocol": config.get("privProtocol") if is_v3 else None,
        "privPassphrase": config.get("privPassphrase") if is_v3 else None,
    }


def seeds_to_promsnmp(seeds: list[dict[str, Any]], *, warnings: list[str] | None = None) -> list[dict]:
    """The manager's seeds (secrets revealed) → PromSNMP's; v1 and disabled seeds are left out (said in
    `warnings`)."""
    warnings = warnings if warnings is not None else []
    rendered = (_seed_to_promsnmp(seed, warnings) for seed in seeds)
    return [seed for seed in rendered if seed is not None]


def to_promsnmp(document: dict[str, Any], *, warnings: list[str] | None = None) -> dict[str, Any]:
    """The manager's wire document with revealed secrets (iter_devices / site_seeds with
    include_credentials=True) → a document a PromSNMP instance loads. What PromSNMP cannot hold is left
    out and said in `warnings`: v1 seeds and disabled seeds."""
    devices = [_device_to_promsnmp(device) for device in document.get("devices") or []]
    seeds = seeds_to_promsnmp(document.get("discoverySeeds") or [], warnings=warnings)
    return {"devices": devices, "discoverySeeds": seeds}


def stream_promsnmp_document(site) -> Iterator[bytes]:
    """The site's whole inventory as PromSNMP's InventoryDTO, `{"devices": [...], "discoverySeeds":
    [...]}`, secrets in clear, written piece by piece (CHUNK devices in memory at a time): the body of
    GET inventory?format=promsnmp, which the bridge posts to PromSNMP's /inventory as it is. The caller
    has checked that it may see the secrets (selectors.require_decryptable too)."""
    devices = (_device_to_promsnmp(device) for device in iter_devices(site, include_credentials=True))
    seeds = seeds_to_promsnmp(site_seeds(site.pk, include_credentials=True))
    return stream_json_document({}, {"devices": devices, "discoverySeeds": seeds})


def devices_from_promsnmp(items: list[Any]) -> tuple[list[Any], dict[int, dict[str, list[str]]]]:
    """Discovery results in PromSNMP's device form (what a bridge finds in its PromSNMP) → the manager's
    device inputs, and the mapping errors by index (keyed by PromSNMP's field paths, `devices[2].…`).
    A device the mapping cannot read is None in the list, so that it fails on its own."""
    converted: list[Any] = []
    failures: dict[int, dict[str, list[str]]] = {}
    for index, item in enumerate(items):
        errors = _Errors()
        device = _device_from_promsnmp(item, f"devices[{index}]", errors)
        if errors:
            failures[index] = dict(errors)
            device = None
        converted.append(device)
    return converted, failures


def export_document(site, *, format: str, warnings: list[str] | None = None) -> dict[str, Any]:
    """The site's whole inventory, secrets revealed: the manager's document (as GET inventory with
    includeCredentials) or PromSNMP's."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, not {format!r}")
    document = {
        "devices": list(iter_devices(site, include_credentials=True)),
        "discoverySeeds": site_seeds(site.pk, include_credentials=True),
    }
    if format == "promsnmp":
        return to_promsnmp(document, warnings=warnings)
    return {"version": site.inventory_version, "updatedAt": iso_z(site.inventory_updated_at), **document}


def dump_document(document: dict[str, Any]) -> bytes:
    """As PromSNMP writes its file: pretty-printed UTF-8 JSON."""
    return json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8")
