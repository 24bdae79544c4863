"""Small checks shared by the plain-Python validators (bulk inventory, seeds) and the API fields."""

from __future__ import annotations

from typing import Any


def storable(value: Any) -> bool:
    """PostgreSQL text and jsonb refuse NUL and unpaired surrogates (a 500 if they reached it)."""
    if isinstance(value, str):
        return "\x00" not in value and not any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(storable(v) for v in value)
    return True


def strict_int(value: Any, low: int, high: int) -> int | None:
    """The value if it is a JSON integer (not a bool, not a string) within [low, high], else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value
