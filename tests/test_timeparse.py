"""`--since` / `--until` parsing (SPEC 2.3) and the one timestamp format we print."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from intel_cli import timeparse
from intel_cli.errors import ExitCode, UsageError
from intel_cli.timeparse import ceil_second, format_utc, parse_duration, parse_when

NOW = datetime(2025, 11, 12, 15, 45, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-11-12", datetime(2025, 11, 12, tzinfo=UTC)),
        ("2025-11-12T10:30:00", datetime(2025, 11, 12, 10, 30, tzinfo=UTC)),
        ("2025-11-12 10:30", datetime(2025, 11, 12, 10, 30, tzinfo=UTC)),
        ("2025-11-12T10:30:00Z", datetime(2025, 11, 12, 10, 30, tzinfo=UTC)),
        ("2025-11-12T10:30:00+02:00", datetime(2025, 11, 12, 8, 30, tzinfo=UTC)),
        ("2025-11-12T10:30:00.250-05:00", datetime(2025, 11, 12, 15, 30, 0, 250000, tzinfo=UTC)),
        ("90m", NOW - timedelta(minutes=90)),
        ("24h", NOW - timedelta(hours=24)),
        ("7d", NOW - timedelta(days=7)),
        ("4w", NOW - timedelta(weeks=4)),
        ("30s", NOW - timedelta(seconds=30)),
        ("1h30m", NOW - timedelta(minutes=90)),
        (" 24H ", NOW - timedelta(hours=24)),
        ("today", datetime(2025, 11, 12, tzinfo=UTC)),
        ("Yesterday", datetime(2025, 11, 11, tzinfo=UTC)),
        ("now", NOW),
    ],
)
def test_parse_when_accepts(text: str, expected: datetime) -> None:
    got = parse_when(text, now=NOW)
    assert got == expected
    assert got.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["xyz", "", "7", "d7", "-7d", "2025-13-01", "7 days", "1.5h"])
def test_parse_when_rejects_with_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_when(text, now=NOW, option="--until")
    assert info.value.exit_code == ExitCode.USAGE
    message = str(info.value)
    assert message.startswith(f"bad --until value {text!r}: use an ISO date (2025-11-12)")
    assert "\n" not in message


def test_default_option_name_in_message() -> None:
    with pytest.raises(UsageError, match=r"^bad --since value 'xyz': use an ISO date"):
        parse_when("xyz", now=NOW)


def test_naive_now_is_taken_as_utc() -> None:
    assert parse_when("today", now=datetime(2025, 11, 12, 0, 30)) == datetime(
        2025, 11, 12, tzinfo=UTC
    )


def test_today_is_utc_midnight_even_when_now_has_an_offset() -> None:
    # 01:00 in UTC+3 on the 13th is 22:00 UTC on the 12th: "today" is the 12th
    local = datetime(2025, 11, 13, 1, 0, tzinfo=timezone(timedelta(hours=3)))
    assert parse_when("today", now=local) == datetime(2025, 11, 12, tzinfo=UTC)


def test_parse_duration() -> None:
    assert parse_duration("2w3d") == timedelta(days=17)
    assert parse_duration("2025-11-12") is None
    assert parse_duration("") is None


@freeze_time("2025-11-12 15:45:30")
def test_now_is_frozen_and_aware() -> None:
    assert timeparse.now() == NOW
    assert parse_when("24h", now=timeparse.now()) == datetime(2025, 11, 11, 15, 45, 30, tzinfo=UTC)


def test_format_utc() -> None:
    assert format_utc(datetime(2025, 11, 11, tzinfo=UTC)) == "2025-11-11T00:00:00Z"
    assert format_utc(datetime(2025, 11, 11, 1, 2, 3, 4, tzinfo=UTC)) == (
        "2025-11-11T01:02:03.000004Z"
    )
    plus2 = timezone(timedelta(hours=2))
    assert format_utc(datetime(2025, 11, 11, 2, 0, tzinfo=plus2)) == "2025-11-11T00:00:00Z"
    assert format_utc(datetime(2025, 11, 11, 2, 0)) == "2025-11-11T02:00:00Z"


def test_ceil_second() -> None:
    assert ceil_second(NOW) == NOW
    assert ceil_second(NOW.replace(microsecond=1)) == NOW + timedelta(seconds=1)
