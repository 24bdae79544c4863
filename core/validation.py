"""Small checks shared by the plain-Python validators (bulk inventory, seeds) and the API fields."""

from __future__ import annotations

import math
import re
from typing import Any

_SURROGATE = re.compile("[\ud800-\udfff]")

# For messages about free-form JSON (metadata, metrics) that storable() refused.
UNSTORABLE_MESSAGE = (
    "No NUL characters or unpaired surrogates in strings, and no numbers beyond ±1.8e308 (such as 1e400)."
)


def storable(value: Any) -> bool:
    """Whether PostgreSQL can hold the value: text and jsonb refuse NUL and unpaired surrogates, and jsonb
    has no Infinity or NaN (JSON's 1e400 parses as infinity; a 500 if it reached the database).

    The one check every free-form JSON value passes before it is stored. Iterative, so any depth.
    """
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item or _SURROGATE.search(item):
                return False
        elif isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return True


def strict_int(value: Any, low: int, high: int) -> int | None:
    """The value if it is a JSON integer (not a bool, not a string) within [low, high], else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        return None
    return value
