"""Strict JSON for request bodies (REST) and socket frames: bounded nesting, no NaN or Infinity.

The standard library's decoder recurses once per level, so 5000 `[` raised RecursionError (a 500 on
REST, close 1011 on the socket); and it accepts NaN and Infinity, which are not JSON (RFC 8259).
`loads_strict` refuses both with a JSONInputError (a ValueError) whose message says what is wrong.

A number beyond a double (1e400) is valid JSON; it is read as float("inf") as always, and refused
where it would be used: typed fields by their range, free-form JSON (metadata, metrics) by
`core.validation.storable`, which PostgreSQL's jsonb needs anyway (it cannot hold Infinity). So one
device with such a number fails alone in POST inventory/devices, and every other body is a 400.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rest_framework import parsers, renderers
from rest_framework.exceptions import ParseError

# Deep enough for any document we define (an inventory document is 5 levels before metadata), shallow
# enough that every recursive walk after parsing (validation, json.dumps, error flattening) is safe.
MAX_JSON_DEPTH = 64

# Bytes that matter to nesting: brackets, and the quotes that tell which brackets are inside strings.
_BUT_STRUCTURE = bytes(byte for byte in range(256) if byte not in b'[]{}"')
_ONE_KIND = bytes.maketrans(b"{}", b"[]")
_TOO_DEEP = "The JSON nests arrays and objects more than {} levels deep."


class JSONInputError(ValueError):
    """Text that is not JSON we accept; str(error) is a message for the sender."""


def nesting_depth_exceeds(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether arrays and objects nest deeper than `limit`, in a few C-speed passes (no Python loop
    per character: a 64 MB inventory takes a fraction of its decoding time).

    Escapes go first (\\\\ then \\"), so every quote left opens or closes a string; then everything but
    brackets and quotes. Adjacent quotes ("" — a string without brackets in it, or a close and an
    open) drop out without changing which brackets are inside strings; what remains between quotes
    is inside a string and is dropped. Each pass then removes the innermost pairs (objects folded
    into arrays), so text that still has a pair after `limit` passes nests deeper. Unbalanced text
    is the decoder's to refuse.
    """
    structure = raw.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _BUT_STRUCTURE)
    structure = structure.replace(b'""', b"")
    if b'"' in structure:
        structure = b"".join(structure.split(b'"')[::2])
    brackets = structure.translate(_ONE_KIND)
    if b"[" * (limit + 1) in brackets:  # the usual attack (5000 `[`), without the passes
        return True
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"")
        if len(shorter) == len(brackets):
            return False
        brackets = shorter
    return b"[]" in brackets


def _refuse_constant(name: str) -> Any:
    raise JSONInputError(f"{name} is not a JSON value (RFC 8259 has no NaN or Infinity); send a number.")


def loads_strict(
    text: str | bytes | bytearray,
    *,
    max_depth: int = MAX_JSON_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """JSON text (bytes are UTF-8) → Python values, or JSONInputError with a message for people."""
    if isinstance(text, bytes | bytearray):
        raw = bytes(text)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JSONInputError(f"The JSON is not UTF-8 text (byte {exc.start}).") from None
    else:
        raw = text.encode("utf-8", "surrogatepass")
    if nesting_depth_exceeds(raw, max_depth):
        raise JSONInputError(_TOO_DEEP.format(max_depth))
    try:
        return json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=object_pairs_hook)
    except JSONInputError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}).") from None
    except RecursionError:
        # Unbalanced brackets (5000 `[` and no `]`) get past the passes above; the decoder stops them.
        raise JSONInputError(_TOO_DEEP.format(max_depth)) from None
    except ValueError as exc:  # an integer of more than 4300 digits (sys.int_info.str_digits_check_threshold)
        raise JSONInputError(f"Not valid JSON: {exc}.") from None


class StrictJSONParser(parsers.BaseParser):
    """DRF's JSONParser with loads_strict: too deep, NaN/Infinity or malformed → 400 parse_error."""

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding") or "utf-8"
        raw = stream.read() if stream is not None else b""
        try:
            if encoding.lower().replace("_", "-") not in ("utf-8", "utf8"):
                raw = raw.decode(encoding).encode("utf-8", "surrogatepass")
            return loads_strict(raw)
        except (JSONInputError, UnicodeError, LookupError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
