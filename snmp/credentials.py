"""SNMP credentials as the wire carries them, for agents and discovery seeds alike: the vocabulary (one
place for the versions, types, security levels, protocols and which keys are secrets), their validation
and their JSON Schema.

`parse_snmp_credentials` validates one credential object and splits it into the plain part (stored
as JSON) and the secrets (stored encrypted); `masked` is the wire form without the secrets;
`credentials_json_schema` documents what `parse_snmp_credentials` takes.
Plain Python, no serializer: a bulk import validates 100,000 of these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

MASK = "****"
VERSIONS = (1, 2, 3)
VERSION_LABELS = {1: "v1", 2: "v2c", 3: "v3"}
TYPES = ("community", "usm")  # v1/v2c: a community; v3: a USM user
SECRET_KEYS = ("readCommunity", "writeCommunity", "authPassphrase", "privPassphrase")
SECURITY_LEVELS = ("noAuthNoPriv", "authNoPriv", "authPriv")
AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIV_PROTOCOLS = ("DES", "AES", "AES128", "AES192", "AES256")
# The wire keys that make up the credentials of each version (plain and secret, "type" aside).
CREDENTIAL_KEYS = {
    1: ("readCommunity", "writeCommunity"),
    2: ("readCommunity", "writeCommunity"),
    3: (
        "securityName",
        "securityLevel",
        "authProtocol",
        "authPassphrase",
        "privProtocol",
        "privPassphrase",
        "engineId",
    ),
}
MIN_PASSPHRASE = 8
MAX_TEXT = 255
_SECRET_HELP = '{what} characters, the secret itself (not the mask "****").'
# Text the database can hold as well: no NUL and no unpaired surrogate (what core.validation.storable
# checks of any JSON; this package imports nothing of the server).
_SURROGATE = re.compile("[\ud800-\udfff]")


def type_for(version: int) -> str:
    """The credential type of an SNMP version: "usm" for v3, "community" for v1 and v2c."""
    return "usm" if version == 3 else "community"


@dataclass
class ParsedCredentials:
    plain: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        return None
    return None if "\x00" in value or _SURROGATE.search(value) else value


def _secret(value: Any) -> str | None:
    # "****" is what a masked GET shows: sent back, it must not replace the real secret.
    return None if value == MASK else _text(value)


def parse_snmp_credentials(data: Any, path: str = "") -> ParsedCredentials:
    """Validate {version, type?, readCommunity | securityName, securityLevel, …}."""
    result = ParsedCredentials()
    prefix = f"{path}." if path else ""

    def error(name: str, message: str) -> None:
        result.errors.setdefault(f"{prefix}{name}", []).append(message)

    if not isinstance(data, dict):
        result.errors[path or "non_field_errors"] = ["Expected an object."]
        return result
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in VERSIONS:
        error("version", "Must be 1 (v1), 2 (v2c) or 3 (v3).")
        return result
    expected_type = type_for(version)
    given_type = data.get("type", expected_type)
    if given_type != expected_type:
        error("type", f"SNMP v{version} credentials are of type {expected_type!r}.")
    result.plain = {"version": version, "type": expected_type}

    if version in (1, 2):
        community = _secret(data.get("readCommunity"))
        if community is None:
            error(
                "readCommunity",
                _SECRET_HELP.format(what="Required for SNMP v1 and v2c: a string of 1 to 255"),
            )
        else:
            result.secrets["readCommunity"] = community
        write = data.get("writeCommunity")
        if write not in (None, ""):
            if _secret(write) is None:
                error("writeCommunity", _SECRET_HELP.format(what="A string of 1 to 255") + " Or null.")
            else:
                result.secrets["writeCommunity"] = write
    else:
        name = _text(data.get("securityName"))
        if name is None:
            error("securityName", "Required for SNMP v3: a string of 1 to 255 characters.")
        else:
            result.plain["securityName"] = name
        level = data.get("securityLevel")
        if level not in SECURITY_LEVELS:
            error("securityLevel", f"Required for SNMP v3: one of {', '.join(SECURITY_LEVELS)}.")
            return result
        result.plain["securityLevel"] = level
        if level in ("authNoPriv", "authPriv"):
            _protocol_and_passphrase(data, result, error, "auth", AUTH_PROTOCOLS)
        if level == "authPriv":
            _protocol_and_passphrase(data, result, error, "priv", PRIV_PROTOCOLS)
        engine_id = data.get("engineId")
        if engine_id not in (None, ""):
            if _text(engine_id) is None:
                error("engineId", "A string of up to 255 characters.")
            else:
                result.plain["engineId"] = engine_id
    return result


def _protocol_and_passphrase(data, result: ParsedCredentials, error, kind: str, protocols) -> None:
    protocol = data.get(f"{kind}Protocol")
    if protocol not in protocols:
        error(f"{kind}Protocol", f"Required for this securityLevel: one of {', '.join(protocols)}.")
    else:
        result.plain[f"{kind}Protocol"] = protocol
    passphrase = data.get(f"{kind}Passphrase")
    if not isinstance(passphrase, str) or len(passphrase) < MIN_PASSPHRASE or _secret(passphrase) is None:
        error(
            f"{kind}Passphrase",
            _SECRET_HELP.format(what=f"Required for this securityLevel: a string of {MIN_PASSPHRASE} to 255"),
        )
    else:
        result.secrets[f"{kind}Passphrase"] = passphrase


def masked(plain: dict[str, Any], secret_keys: list[str]) -> dict[str, Any]:
    """The wire form without secrets: each one present is "****"."""
    return {**plain, **dict.fromkeys(secret_keys, MASK)}


# --- JSON Schema (the OpenAPI documentation of what parse_snmp_credentials takes) -------------------


def _text_schema(minimum: int = 1) -> dict:
    return {"type": "string", "minLength": minimum, "maxLength": MAX_TEXT}


def _secret_schema(minimum: int = 1) -> dict:
    # "****" is the mask a GET shows: sent back it is refused, never stored as the secret.
    return {**_text_schema(minimum), "not": {"const": MASK}}


def _absent_or(schema: dict) -> dict:
    return {"anyOf": [{"type": "null"}, {"const": ""}, schema]}


def credentials_json_schema() -> dict:
    """SNMP credentials as parse_snmp_credentials takes them: one variant per version and
    securityLevel, each naming what it requires. Fields of another variant are ignored."""
    passphrase = _secret_schema(MIN_PASSPHRASE)
    community = {
        "type": "object",
        "title": "SNMP v1/v2c",
        "properties": {
            "version": {"enum": [version for version in VERSIONS if type_for(version) == "community"]},
            "type": {"const": "community"},
            "readCommunity": _secret_schema(),
            "writeCommunity": _absent_or(_secret_schema()),
        },
        "required": ["version", "readCommunity"],
    }
    variants = [community]
    needs: dict[str, dict] = {
        "noAuthNoPriv": {},
        "authNoPriv": {"authProtocol": {"enum": list(AUTH_PROTOCOLS)}, "authPassphrase": passphrase},
    }
    needs["authPriv"] = {
        **needs["authNoPriv"],
        "privProtocol": {"enum": list(PRIV_PROTOCOLS)},
        "privPassphrase": passphrase,
    }
    for level, extra in needs.items():
        variants.append(
            {
                "type": "object",
                "title": f"SNMP v3 {level}",
                "properties": {
                    "version": {"const": 3},
                    "type": {"const": "usm"},
                    "securityName": _text_schema(),
                    "securityLevel": {"const": level},
                    **extra,
                    "engineId": _absent_or(_text_schema()),
                },
                "required": ["version", "securityName", "securityLevel", *extra],
            }
        )
    return {
        "oneOf": variants,
        "description": 'Secrets are the secret itself: "****" (the mask a GET shows) is refused.',
    }
