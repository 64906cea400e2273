"""Rendering of the reporting commands, from hand-made data: no store involved."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from rich.console import Console

from intel_cli import render
from intel_cli.render import reports
from intel_cli.stores.base import LimiterState, Migration

NOW = datetime(2025, 11, 12, 12, 0, tzinfo=UTC)


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    buffer = io.StringIO()
    render.use_consoles(
        Console(file=buffer, width=100, color_system=None),
        Console(file=io.StringIO(), width=100, color_system=None),
    )
    try:
        yield buffer
    finally:
        render.use_consoles(None, None)


def colour_console() -> io.StringIO:
    buffer = io.StringIO()
    render.use_consoles(
        Console(file=buffer, width=100, color_system="standard", force_terminal=True),
        Console(file=io.StringIO(), width=100, color_system=None),
    )
    return buffer


def report(rate: float = 93.33, *, batches: int = 2) -> dict[str, Any]:
    return {
        "summary": {
            "totalBatches": batches,
            "totalContacts": 2250,
            "totalEnriched": 2100,
            "totalFailed": 150,
            "totalCost": 6.75,
            "avgSuccessRate": rate,
            "avgTimePerContact": 625,
        },
        "tokens": {"totalInput": 450000, "totalOutput": 675000, "total": 1125000},
        "modelBreakdown": {"claude-haiku-4-5": 250, "claude-sonnet-4-5": 2000},
        "recentBatches": [
            {
                "batch_id": "b_20251112T103000_abc123",
                "created_at": "2025-11-12T10:30:00Z",
                "total": 50,
                "enriched": 45,
                "failed": 5,
                "cost": 0.135,
                "success_rate": 90.0,
                "retried": 1,
                "timed_out": 2,
                "mode": "realtime",
                "status": "completed",
            },
            {
                "batch_id": "b_20251111T090000_def456",
                "created_at": "2025-11-11T09:00:00Z",
                "total": 10,
                "enriched": 5,
                "failed": 5,
                "cost": 0.02,
                "success_rate": 50.0,
                "retried": 0,
                "timed_out": 0,
                "mode": "batch",
                "status": "rate_limited",
            },
        ],
    }


def test_metrics_tables(out: io.StringIO) -> None:
    reports.render_metrics(
        report(),
        since=datetime(2025, 11, 11, tzinfo=UTC),
        until=datetime(2025, 11, 12, 23, 0, tzinfo=UTC),
        store_name="/tmp/x/intel.db",
    )
    text = out.getvalue()
    assert "Metrics from 2025-11-11T00:00:00Z to 2025-11-12T23:00:00Z (/tmp/x/intel.db)" in text
    assert "2,250" in text and "2,100" in text and "150" in text
    assert "93.33%" in text
    assert "$6.7500" in text
    assert "625 ms" in text
    assert "450,000" in text and "675,000" in text and "1,125,000" in text
    # the model breakdown, largest first
    assert text.index("claude-sonnet-4-5") < text.index("claude-haiku-4-5")
    assert "b_20251112T103000_abc123" in text and "2025-11-12 10:30" in text
    assert "$0.1350" in text and "90.00%" in text and "rate_limited" in text
    # the newest batch first, as the store ordered them
    assert text.index("b_20251112T103000_abc123") < text.index("b_20251111T090000_def456")
    assert "Per day" not in text and "Per model" not in text


def test_metrics_by_day_and_by_model(out: io.StringIO) -> None:
    reports.render_metrics(
        report(),
        since=NOW,
        until=NOW,
        store_name="s",
        by_day=[
            {"day": "2025-11-11", "batches": 1, "contacts": 10, "enriched": 5, "failed": 5,
             "cost": Decimal("0.02"), "success_rate": 50.0},
            {"day": "2025-11-12", "batches": 1, "contacts": 50, "enriched": 45, "failed": 5,
             "cost": Decimal("0.135"), "success_rate": 90.0},
        ],
        by_model=[
            {"model": "claude-sonnet-4-5", "contacts": 2000, "enriched": 1900,
             "input_tokens": 400000, "output_tokens": 600000, "cost": 6.5},
        ],
    )
    text = out.getvalue()
    day_table = text[text.index("Per day") :]
    assert "2025-11-11" in day_table and "2025-11-12" in day_table
    assert "T00:00:00Z" not in day_table  # a day is a date, not a moment
    assert "$0.0200" in day_table and "50.00%" in day_table
    model_table = text[text.index("Per model") : text.index("Per day")]
    assert "1,900" in model_table and "400,000" in model_table and "$6.5000" in model_table


def test_empty_window_says_so(out: io.StringIO) -> None:
    empty = {
        "summary": {"totalBatches": 0, "totalContacts": 0, "totalEnriched": 0, "totalFailed": 0,
                    "totalCost": 0, "avgSuccessRate": 0, "avgTimePerContact": 0},
        "tokens": {"totalInput": 0, "totalOutput": 0, "total": 0},
        "modelBreakdown": {},
        "recentBatches": [],
    }
    reports.render_metrics(empty, since=NOW, until=NOW, store_name="s")
    text = out.getvalue()
    assert "No batches in this window." in text
    assert "$0.0000" in text
    assert "Recent batches" not in text


@pytest.mark.parametrize(
    ("rate", "style"),
    [(93.33, "green"), (90.01, "green"), (90.0, "yellow"), (85, "yellow"), (80, "yellow"),
     (79.99, "red"), (0, "red"), (None, "dim")],
)
def test_success_style_thresholds(rate: float | None, style: str) -> None:
    assert reports.success_style(rate) == style


@pytest.mark.parametrize(
    ("rate", "sgr"), [(95.0, "32"), (85.0, "33"), (55.55, "31")]
)
def test_success_rate_is_coloured_in_a_colour_terminal(rate: float, sgr: str) -> None:
    buffer = colour_console()
    try:
        reports.render_metrics(report(rate), since=NOW, until=NOW, store_name="s")
    finally:
        render.use_consoles(None, None)
    text = buffer.getvalue()
    # the figure is right-aligned inside its coloured cell: ESC[32m   95.00%
    assert re.search(rf"\x1b\[{sgr}m *{rate:.2f}%", text)
    for other in {"32", "33", "31"} - {sgr}:
        assert not re.search(rf"\x1b\[{other}m *{rate:.2f}%", text)


def test_jsonable_and_print_json(out: io.StringIO) -> None:
    data = {
        "cost": Decimal("6.7500"),
        "whole": Decimal("7"),
        "tiny": Decimal("0.000123"),
        "at": datetime(2025, 11, 12, 10, 30, tzinfo=UTC),
        "rows": (Decimal("1.5"), None),
    }
    reports.print_json(data)
    parsed = json.loads(out.getvalue())
    assert parsed == {
        "cost": 6.75,
        "whole": 7,
        "tiny": 0.000123,
        "at": "2025-11-12T10:30:00Z",
        "rows": [1.5, None],
    }
    assert "6.75" in out.getvalue() and "0.000123" in out.getvalue()


def test_json_is_never_wrapped_or_marked_up(out: io.StringIO) -> None:
    reports.print_json({"error": "[bold]x[/bold] " + "y" * 300})
    assert json.loads(out.getvalue())["error"].startswith("[bold]x[/bold] yyy")


def batch_row() -> dict[str, Any]:
    return {
        "batch_id": "b_20251112T103000_abc123",
        "status": "completed",
        "mode": "simulated",
        "model_used": "claude-sonnet-4-5",
        "created_at": datetime(2025, 11, 12, 10, 30, tzinfo=UTC),
        "finished_at": datetime(2025, 11, 12, 10, 31, 15, tzinfo=UTC),
        "total": 3,
        "enriched": 2,
        "cached": 1,
        "failed": 1,
        "timed_out": 1,
        "retried": 1,
        "skipped": 1,
        "success_rate": 66.67,
        "cost": Decimal("0.0123456"),
        "avg_time_ms": 812,
        "input_tokens": 1200,
        "output_tokens": 900,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "metadata": {"input": "contacts.csv", "prompt_version": "2026-12-04.1",
                     "models": {"claude-sonnet-4-5": 3}},
    }


def test_batch_show(out: io.StringIO) -> None:
    results = [
        {"row_index": 0, "contact_key": "dj@bbc.co.uk", "status": "enriched",
         "model": "claude-sonnet-4-5", "input_tokens": 600, "output_tokens": 450,
         "cost": Decimal("0.0061728"), "latency_ms": 790, "attempts": 1, "error": None},
        {"row_index": 1, "contact_key": "ed@nme.com", "status": "timed_out",
         "model": "claude-sonnet-4-5", "input_tokens": 0, "output_tokens": 0,
         "cost": Decimal(0), "latency_ms": 10000, "attempts": 2, "error": "timed out after 10 s"},
        {"row_index": 2, "contact_key": None, "status": "skipped", "model": None,
         "input_tokens": 0, "output_tokens": 0, "cost": Decimal(0), "latency_ms": None,
         "attempts": 0, "error": "missing email"},
    ]
    reports.render_batch(batch_row(), results, store_name="/data/intel.db")
    text = out.getvalue()
    assert "Batch b_20251112T103000_abc123" in text
    for expected in ("completed", "simulated", "claude-sonnet-4-5", "2025-11-12T10:30:00Z",
                     "2025-11-12T10:31:15Z", "75.0 s", "66.67%", "$0.0123", "812 ms",
                     "1,200", "/data/intel.db", "contacts.csv", "2026-12-04.1"):
        assert expected in text, expected
    assert '{"claude-sonnet-4-5": 3}' in text
    contacts = text[text.index("Latency") :]
    for expected in ("dj@bbc.co.uk", "600/450", "$0.0062", "790 ms", "timed_out",
                     "timed out", "missing email", "10.0 s"):
        assert expected in contacts, expected


def test_batch_without_results(out: io.StringIO) -> None:
    reports.render_batch(batch_row(), [], store_name="s")
    assert "No per-contact results recorded for this batch." in out.getvalue()


def test_metadata_summary_truncates_and_redacts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secretsecret123")
    pairs = dict(reports.metadata_summary(
        {"note": "key sk-ant-secretsecret123", "long": "x" * 200}, width=20
    ))
    assert "secretsecret" not in pairs["note"]
    assert len(pairs["long"]) == 20 and pairs["long"].endswith("…")
    assert reports.metadata_summary(None) == []
    assert reports.metadata_summary('{"a": 1}') == [("a", "1")]


def limiter(until: datetime | None, *, set_by: str | None = "b_1") -> LimiterState:
    return LimiterState(
        name="anthropic", blocked_until=until, reason="429 from the API", set_by=set_by,
        updated_at=NOW,
    )


def test_limiter_json_shapes() -> None:
    active = reports.limiter_json(limiter(datetime(2025, 11, 12, 12, 1, tzinfo=UTC)), now=NOW)
    assert active == {"active": True, "blockedUntil": "2025-11-12T12:01:00Z",
                      "reason": "429 from the API", "setBy": "b_1"}
    inactive = {"active": False, "blockedUntil": None, "reason": None, "setBy": None}
    assert reports.limiter_json(None, now=NOW) == inactive
    # an expired block is inactive
    assert reports.limiter_json(limiter(datetime(2025, 11, 12, 11, 59, tzinfo=UTC)), now=NOW) == (
        inactive
    )


def test_limiter_status_lines(out: io.StringIO) -> None:
    reports.render_limiter_status(
        limiter(datetime(2025, 11, 12, 12, 1, tzinfo=UTC)), name="anthropic", now=NOW,
        store_name="s.db",
    )
    reports.render_limiter_status(
        limiter(datetime(2025, 11, 12, 11, 0, tzinfo=UTC)), name="anthropic", now=NOW,
        store_name="s.db",
    )
    reports.render_limiter_status(None, name="anthropic", now=NOW, store_name="s.db")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("The anthropic limiter is active for 60 more s (blocked until "
                               "2025-11-12T12:01:00Z, set by b_1, reason 429 from the API)")
    assert lines[1] == (
        "The anthropic limiter is not active (its last block ended at 2025-11-12T11:00:00Z) "
        "in s.db."
    )
    assert lines[2] == "The anthropic limiter is not active in s.db."


def test_limiter_reset_lines(out: io.StringIO) -> None:
    reports.render_limiter_reset(
        limiter(datetime(2025, 11, 12, 12, 1, tzinfo=UTC)), name="anthropic", now=NOW
    )
    reports.render_limiter_reset(None, name="anthropic", now=NOW)
    reports.render_limiter_reset(
        limiter(datetime(2025, 11, 12, 11, 0, tzinfo=UTC)), name="anthropic", now=NOW
    )
    assert out.getvalue().splitlines() == [
        "Cleared the anthropic limiter (blocked until 2025-11-12T12:01:00Z, set by b_1, "
        "reason 429 from the API).",
        "The limiter was not active; nothing to clear.",
        "The limiter was not active; nothing to clear.",
    ]


def test_migrate_renderings(out: io.StringIO) -> None:
    pending = [Migration("0002_more", "ALTER TABLE t ADD c int;\n")]
    reports.render_migrate_applied(["0001_initial", "0002_more"], total=2, store_name="s")
    reports.render_migrate_applied([], total=2, store_name="s")
    reports.render_migrate_status(["0001_initial"], pending, store_name="s")
    reports.render_migrate_sql(pending, applied=1)
    reports.render_migrate_sql([], applied=2)
    text = out.getvalue()
    assert "Applied 0001_initial\nApplied 0002_more\n" in text
    assert "Nothing to migrate: 2 migrations already applied (s)." in text
    status = text[text.index("Migrations of s\n") :]
    assert "0001_initial" in status and "applied" in status and "0002_more" in status
    assert "1 pending: run `intel migrate` to apply them." in text
    assert "-- 0002_more\nALTER TABLE t ADD c int;\n" in text
    assert "-- Nothing to migrate: 2 migrations already applied." in text


def test_data_is_never_read_as_markup(out: io.StringIO) -> None:
    results = [
        {"row_index": 0, "contact_key": "[/odd]@x.com", "status": "failed", "model": "m",
         "input_tokens": 1, "output_tokens": 1, "cost": 0, "latency_ms": 1, "attempts": 1,
         "error": "invalid output [bold]x[/bold] :smile:"},
    ]
    batch = {**batch_row(), "batch_id": "b_[/i]", "metadata": {"note": "[red]not red[/red]"}}
    reports.render_batch(batch, results, store_name="[b]store[/b]")
    reports.say("literal [/x] :smile:")
    text = out.getvalue()
    for expected in ("[/odd]@x.com", "[bold]x[/bold]", "[red]not red[/red]", "[b]store[/b]",
                     "literal [/x] :smile:", "Batch b_[/i]"):
        assert expected in text, expected
    assert ":smile:" in text.split("invalid output")[1]
