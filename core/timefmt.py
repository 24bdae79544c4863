from datetime import UTC, datetime


def iso_z(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a Z, to the second, as the spec writes timestamps."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
