"""Cron expressions as the spec writes them (Spring's six fields, seconds first: "0 0 2 * * *") and
the classic five-field form. Schedules run on whole minutes, so seconds must be 0.

`parse_cron` validates and returns the five classic fields with names turned into numbers, ready
for a django-celery-beat CrontabSchedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MONTHS = {
    name: i
    for i, name in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1
    )
}
DAYS = {name: i for i, name in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_ELEMENT = re.compile(r"^(?P<base>\*|\?|[A-Z0-9]+(?:-[A-Z0-9]+)?)(?:/(?P<step>\d+))?$")


class CronError(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    minute: str
    hour: str
    day_of_month: str
    month_of_year: str
    day_of_week: str

    def as_five_fields(self) -> str:
        return f"{self.minute} {self.hour} {self.day_of_month} {self.month_of_year} {self.day_of_week}"


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    question_mark: bool = False


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, question_mark=True),
    _Field("month", 1, 12, MONTHS),
    _Field("day of week", 0, 7, DAYS, question_mark=True),
)


def _value(token: str, spec: _Field) -> int:
    if spec.names and token in spec.names:
        return spec.names[token]
    if not token.isdigit():
        raise CronError(f"{spec.name}: {token!r} is not a number or a known name")
    number = int(token)
    if not spec.low <= number <= spec.high:
        raise CronError(f"{spec.name}: {number} is outside {spec.low}-{spec.high}")
    return number


def _range(low: int, high: int, spec: _Field) -> str:
    # Spring counts Sunday as 0 or 7; beat knows only 0-6.
    if spec.name == "day of week" and high == 7:
        if low == 7:
            return "0"
        return f"{low}-6,0" if low < 6 else "6,0"
    return str(low) if low == high else f"{low}-{high}"


def _normalize_field(text: str, spec: _Field) -> str:
    parts = []
    for element in text.upper().split(","):
        match = _ELEMENT.match(element)
        if not match:
            raise CronError(f"{spec.name}: {element!r} is not valid (L, W and # are not supported)")
        base, step = match["base"], match["step"]
        if base == "?" and not spec.question_mark:
            raise CronError(f"{spec.name}: '?' is only allowed for day of month and day of week")
        if step is not None and int(step) < 1:
            raise CronError(f"{spec.name}: step must be at least 1")
        if base in ("*", "?"):
            parts.append(f"*/{step}" if step else "*")  # beat reads "*/n" as Spring does
            continue
        elif "-" in base:
            low_text, high_text = base.split("-", 1)
            low, high = _value(low_text, spec), _value(high_text, spec)
            if low > high:
                raise CronError(f"{spec.name}: range {low}-{high} runs backwards")
        else:
            low = _value(base, spec)
            # Spring's "n/step" runs from n to the field's end; a bare "n" is just n.
            high = (6 if spec.name == "day of week" and low < 7 else spec.high) if step else low
        if step is None:
            parts.append(_range(low, high, spec))
        else:
            # Beat has no "n/step": write the numbers out (Sunday 7 → 0).
            values = sorted(
                {0 if (spec.name == "day of week" and v == 7) else v for v in range(low, high + 1, int(step))}
            )
            parts.append(",".join(map(str, values)))
    return ",".join(parts)


def parse_cron(expression: str) -> Cron:
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("a cron expression is required")
    fields = expression.split()
    if len(fields) == 6:
        seconds, fields = fields[0], fields[1:]
        if seconds not in ("0", "00"):
            raise CronError("seconds must be 0: schedules run on whole minutes")
    elif len(fields) != 5:
        raise CronError(f"expected 5 or 6 fields, got {len(fields)}")
    normalized = [_normalize_field(text, spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    return Cron(*normalized)


def validate_cron(expression: str) -> str:
    """The expression as given, if valid; CronError otherwise."""
    parse_cron(expression)
    return expression.strip()
