from datetime import UTC, datetime
from typing import Any

from django.utils.dateparse import parse_datetime

TIMESTAMP_MESSAGE = (
    "An ISO-8601 timestamp with a zone, from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z in UTC, "
    "e.g. 2024-01-10T08:00:00Z."
)


def iso_z(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, to the second, as the spec writes timestamps."""
    if value is None:
        return None
    # isoformat pads the year to four digits; strftime("%Y") does not before year 1000 ("210-06-07…").
    return value.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO-8601 timestamp with a zone → the same instant in UTC; None when it is not one.

    Converted here, not by the database: "9999-12-31T23:59:59-23:59" is past year 9999 in UTC
    (OverflowError), and PostgreSQL refuses offsets beyond ±15:59 (DataError); both were 500s.
    """
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = parse_datetime(value)
    except ValueError:  # a well-formed date that does not exist (2024-02-30), an offset of ±24:00
        return None
    if moment is None or moment.tzinfo is None:
        return None
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        return None


def short_age(seconds: float) -> str:
    """A duration as kubectl's AGE column writes it, in its largest whole unit: 45s, 12m, 3h, 2d.
    A negative one (a clock ahead of ours) is 0s."""
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
