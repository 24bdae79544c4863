"""SNMP credentials as the wire carries them, for agents and discovery seeds alike.

`parse_snmp_credentials` validates one credential object and splits it into the plain part (stored
as JSON) and the secrets (stored encrypted); `wire_credentials` rebuilds the wire form, with the
secrets decrypted or as "****".
Plain Python, no serializer: a bulk import validates 100,000 of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.crypto import decrypt_json
from core.validation import storable

MASK = "****"
SECRET_KEYS = ("readCommunity", "writeCommunity", "authPassphrase", "privPassphrase")
SECURITY_LEVELS = ("noAuthNoPriv", "authNoPriv", "authPriv")
AUTH_PROTOCOLS = ("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512")
PRIV_PROTOCOLS = ("DES", "AES", "AES128", "AES192", "AES256")
VERSIONS = (1, 2, 3)
MIN_PASSPHRASE = 8
MAX_TEXT = 255
_SECRET_HELP = '{what} characters, the secret itself (not the mask "****").'


@dataclass
class ParsedCredentials:
    plain: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    errors: dict[str, list[str]] = field(default_factory=dict)


def _text(value: Any) -> str | None:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        return None
    return value if storable(value) else None


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
    expected_type = "usm" if version == 3 else "community"
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


def wire_credentials(
    plain: dict[str, Any], *, encrypted: str, secret_keys: list[str], include_credentials: bool
) -> dict[str, Any]:
    """The wire form of stored credentials: the secrets decrypted for a caller who may see them
    (includeCredentials), else masked."""
    if include_credentials:
        return {**plain, **decrypt_json(encrypted)}
    return masked(plain, secret_keys)
