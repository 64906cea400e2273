"""UTC timestamps as text: the one format every store writes and every JSON body shows.

SPEC 3.1: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always six fractional digits, always
UTC, so that text order is time order (the SQLite window queries compare text)
and other tools (Datasette, sqlite-utils) read the values as timestamps.
"""

from __future__ import annotations

from datetime import UTC, datetime

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def to_text(moment: datetime) -> str:
    """An aware datetime as `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC.

    Naive datetimes are refused: guessing their zone is how an hour of metrics
    silently shifts between windows.
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"naive datetime {moment.isoformat()}: pass an aware UTC datetime")
    return moment.astimezone(UTC).strftime(_FORMAT)


def from_text(text: str | None) -> datetime | None:
    """Parse stored text back into an aware UTC datetime (None stays None)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        # written by another tool without a zone: our stores only ever hold UTC
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def now_utc() -> datetime:
    return datetime.now(UTC)
