"""Reading the times users type (`--since`, `--until`) and writing the times we print.

Every time that leaves this module is an aware UTC datetime; every time we
print is `YYYY-MM-DDTHH:MM:SSZ` (with `.ffffff` only when the microseconds are
not zero), so JSON consumers see one format everywhere.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from intel_cli.errors import UsageError

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# one or more <number><unit> parts: 90m, 24h, 7d, 4w, and also 1h30m
_DURATION = re.compile(r"^(?:\d+[smhdw])+$")
_PART = re.compile(r"(\d+)([smhdw])")


def now() -> datetime:
    """The current time, aware UTC. Commands call this (never datetime.now directly) so
    tests can freeze it."""
    return datetime.now(UTC)


def ceil_second(value: datetime) -> datetime:
    """Round up to a whole second: a window ending there still holds everything up to
    `value`, and prints without fractional digits."""
    if value.microsecond:
        return value.replace(microsecond=0) + timedelta(seconds=1)
    return value


def to_utc(value: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted to UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def parse_duration(text: str) -> timedelta | None:
    """`90m`, `24h`, `7d`, `4w`, `30s`, `1h30m` -> timedelta; None when `text` is not one."""
    compact = text.strip().lower().replace(" ", "")
    if not _DURATION.match(compact):
        return None
    total = timedelta()
    for amount, unit in _PART.findall(compact):
        total += timedelta(**{_UNITS[unit]: int(amount)})
    return total


def parse_when(text: str, *, now: datetime, option: str = "--since") -> datetime:
    """Parse a `--since`/`--until` value into an aware UTC datetime.

    Accepts ISO 8601 dates (midnight UTC) and datetimes (naive = UTC, offsets
    converted, trailing Z), durations meaning "that long before now", `today`,
    `yesterday` and `now`. Raises UsageError (exit 2) naming `option` otherwise.
    """
    now = to_utc(now)
    value = text.strip()
    word = value.lower()
    if word == "now":
        return now
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    duration = parse_duration(word)
    if duration is not None:
        return now - duration
    if value:
        try:
            # Python 3.11 reads dates, "T" or space separators, offsets and a trailing Z
            return to_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    raise UsageError(
        f"bad {option} value {text!r}: use an ISO date (2025-11-12), a duration (24h, 7d), "
        "today, yesterday or now"
    )


def format_utc(value: datetime) -> str:
    """`2025-11-12T10:30:00Z`, or `2025-11-12T10:30:00.250000Z` when there are microseconds."""
    value = to_utc(value)
    spec = "%Y-%m-%dT%H:%M:%S.%fZ" if value.microsecond else "%Y-%m-%dT%H:%M:%SZ"
    return value.strftime(spec)
