"""Credentials at rest: AES-256-GCM under a key ring (FIELD_ENCRYPTION_KEYS).

The ring is "id:base64key[,id:base64key…]" with 32-byte keys; the first key encrypts, every key
decrypts. A ciphertext names its key, so keys rotate: add a new key first, run
`manage.py rotate_encryption_key`, then drop the old one.

Stored form: "enc1:<key id>:<base64(12-byte nonce || ciphertext || 16-byte tag)>".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from functools import cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "enc1"
_NONCE_BYTES = 12


class DecryptionError(ValueError):
    pass


def _decode_key(text: str) -> bytes:
    padded = text + "=" * (-len(text) % 4)
    try:
        return base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS: a key is not valid base64") from exc


@dataclass(frozen=True)
class KeyRing:
    primary_id: str
    keys: dict[str, bytes]

    @classmethod
    def parse(cls, spec: str) -> KeyRing:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            key_id, sep, encoded = item.partition(":")
            if not sep or not key_id or not key_id.isalnum():
                raise ImproperlyConfigured(
                    "FIELD_ENCRYPTION_KEYS must be 'id:base64key[,id:base64key…]' with alphanumeric ids"
                )
            key = _decode_key(encoded)
            if len(key) != 32:
                raise ImproperlyConfigured(
                    f"FIELD_ENCRYPTION_KEYS: key {key_id!r} is {len(key)} bytes; AES-256 needs 32"
                )
            if key_id in keys:
                raise ImproperlyConfigured(f"FIELD_ENCRYPTION_KEYS: key id {key_id!r} appears twice")
            keys[key_id] = key
            order.append(key_id)
        if not order:
            raise ImproperlyConfigured("FIELD_ENCRYPTION_KEYS holds no key")
        return cls(primary_id=order[0], keys=keys)

    def encrypt(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = AESGCM(self.keys[self.primary_id]).encrypt(nonce, plaintext, self.primary_id.encode())
        return f"{PREFIX}:{self.primary_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str) -> bytes:
        try:
            prefix, key_id, payload = stored.split(":", 2)
        except ValueError as exc:
            raise DecryptionError("not an encrypted value") from exc
        if prefix != PREFIX:
            raise DecryptionError("not an encrypted value")
        key = self.keys.get(key_id)
        if key is None:
            raise DecryptionError(f"key {key_id!r} is not in FIELD_ENCRYPTION_KEYS")
        try:
            raw = base64.b64decode(payload, validate=True)
            return AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key_id.encode())
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise DecryptionError("ciphertext does not decrypt (wrong key or corrupted)") from exc

    @staticmethod
    def key_id_of(stored: str) -> str | None:
        parts = stored.split(":", 2)
        return parts[1] if len(parts) == 3 and parts[0] == PREFIX else None


@cache
def _ring_for(spec: str) -> KeyRing:
    return KeyRing.parse(spec)


def key_ring() -> KeyRing:
    return _ring_for(settings.FIELD_ENCRYPTION_KEYS)


def encrypt_json(value: dict[str, Any]) -> str:
    return key_ring().encrypt(json.dumps(value, separators=(",", ":"), sort_keys=True).encode())


def decrypt_json(stored: str) -> dict[str, Any]:
    return json.loads(key_ring().decrypt(stored))


def fingerprint(document: Any) -> str:
    """Keyed hash of a canonical JSON document: detects changes without revealing secrets."""
    canonical = json.dumps(document, separators=(",", ":"), sort_keys=True, default=str).encode()
    return hmac.new(_fingerprint_key(settings.SECRET_KEY), canonical, hashlib.sha256).hexdigest()


@cache
def _fingerprint_key(secret_key: str) -> bytes:
    # From SECRET_KEY, not the AES ring: rotating the encryption key must not make every device "changed".
    return hashlib.sha256(b"promsnmp-fingerprint:" + secret_key.encode()).digest()


# Fields that hold ciphertexts ("app_label.Model", field name): what rotate_encryption_key re-encrypts.
ENCRYPTED_FIELDS: list[tuple[str, str]] = []


def register_encrypted_field(model_label: str, field_name: str) -> None:
    if (model_label, field_name) not in ENCRYPTED_FIELDS:
        ENCRYPTED_FIELDS.append((model_label, field_name))
