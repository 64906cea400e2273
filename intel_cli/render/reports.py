"""Rendering of the reporting commands: `intel metrics`, `intel batches show`, `intel limiter`
and `intel migrate`, as Rich tables or as JSON.

The commands hand over what the store returned (dicts of ints, Decimals,
datetimes); this module decides how each figure looks: money as `$` with 4
decimals, times as `...Z`, success rates coloured green > 90, yellow 80-90,
red < 80. Nothing here computes a figure.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from intel_cli.render import stdout
from intel_cli.secrets import redact
from intel_cli.stores.base import LimiterState, Migration
from intel_cli.timeparse import format_utc

# --- JSON ---------------------------------------------------------------------------------


def jsonable(value: Any) -> Any:
    """Decimals become JSON numbers, datetimes `...Z` strings, dates ISO strings."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Decimal):
        # Stored money has at most ~15 significant digits, so the float's shortest repr
        # prints exactly the stored decimal digits; integral values stay integers.
        return int(value) if value == value.to_integral_value() and abs(value) < 2**53 else float(
            value
        )
    if isinstance(value, datetime):
        return format_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


def print_json(data: Any) -> None:
    """One JSON document on stdout, unwrapped and without markup (for cron and jq)."""
    stdout().out(json.dumps(jsonable(data), indent=2, ensure_ascii=False), highlight=False)


def say(message: str) -> None:
    """One plain line on stdout (no markup: messages may hold brackets)."""
    stdout().print(message, markup=False, emoji=False, highlight=False, soft_wrap=True)


# --- formatting of single figures ----------------------------------------------------------


def _num(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        return None


def success_style(rate: Any) -> str:
    """green above 90 %, yellow from 80 to 90 %, red under 80 %."""
    number = _num(rate)
    if number is None:
        return "dim"
    if number > 90:
        return "green"
    if number >= 80:
        return "yellow"
    return "red"


def success_text(rate: Any, *, contacts: Any = None) -> Text:
    """The success rate as `93.33%`, coloured; `-` when there were no contacts."""
    number = _num(rate)
    if number is None or _num(contacts) == 0:
        return Text("-", style="dim")
    return Text(f"{number:.2f}%", style=success_style(number))


def money(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"${number:,.4f}"


def count(value: Any) -> str:
    number = _num(value)
    return "-" if number is None else f"{int(number):,}"


def millis(value: Any) -> str:
    number = _num(value)
    if number is None:
        return "-"
    if number >= 10_000:
        return f"{number / 1000:,.1f} s"
    return f"{int(number.to_integral_value()):,} ms"


def _as_datetime(value: Any) -> datetime | None:
    """Stores hand back datetimes, or (in pre-shaped reports) `...Z` strings."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def when(value: Any) -> str:
    moment = _as_datetime(value)
    if moment is not None:
        return format_utc(moment)
    return "-" if value is None else str(value)


def _short_when(value: Any) -> str:
    """`2025-11-12 10:30` for table cells, where the seconds only cost width."""
    moment = _as_datetime(value)
    if moment is not None:
        return format_utc(moment)[:16].replace("T", " ")
    return "-" if value is None else str(value)


_STATUS_STYLES = {
    "enriched": "green",
    "completed": "green",
    "cached": "cyan",
    "failed": "red",
    "timed_out": "yellow",
    "interrupted": "yellow",
    "running": "blue",
    "skipped": "dim",
    "rate_limited": "magenta",
    "over_budget": "magenta",
}


def status_text(status: Any) -> Text:
    return Text(str(status or "-"), style=_STATUS_STYLES.get(str(status), ""))


def _table(title: str | None = None, **kwargs: Any) -> Table:
    # collapsed padding: the wide tables (recent batches, contacts) fit 100 columns;
    # titles as Text, since they may hold a user-chosen batch id
    return Table(
        title=Text(title) if title else None, title_justify="left", box=box.SIMPLE_HEAD,
        collapse_padding=True, show_edge=False, pad_edge=False, **kwargs,
    )


def _add_row(table: Table, *cells: str | Text) -> None:
    """Data goes in as Text, never as markup: a contact key or an API error holding
    `[/x]` would otherwise be read as a Rich tag (and an unmatched one raises)."""
    table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in cells))


def _emit(table: Table) -> None:
    """A table after a blank line: edge-less tables need the air between them."""
    stdout().print()
    stdout().print(table)


def _key_values(title: str, rows: Iterable[tuple[str, str | Text]]) -> Table:
    table = _table(title, show_header=False)
    table.add_column("", style="bold")
    table.add_column("", justify="right")
    for key, value in rows:
        _add_row(table, key, value)
    return table


# --- intel metrics --------------------------------------------------------------------------


def metrics_json(
    report: Mapping[str, Any],
    *,
    since: datetime,
    until: datetime,
    by_day: Sequence[Mapping[str, Any]] | None = None,
    by_model: Sequence[Mapping[str, Any]] | None = None,
    error: str | None = None,
) -> dict[str, Any]:
    """SPEC 2.3's document: success, timeframe, then the store's figures (plus byDay /
    byModel when asked, and `error` when a cron threshold was crossed)."""
    data: dict[str, Any] = {
        "success": error is None,
        "timeframe": {"since": format_utc(since), "until": format_utc(until)},
        **report,
    }
    # stores hand back created_at as datetimes or as their own text; print one format
    data["recentBatches"] = [
        {**row, "created_at": when(row.get("created_at"))}
        for row in report.get("recentBatches") or []
    ]
    if by_day is not None:
        data["byDay"] = list(by_day)
    if by_model is not None:
        data["byModel"] = list(by_model)
    if error is not None:
        data["error"] = error
    return data


def render_metrics(
    report: Mapping[str, Any],
    *,
    since: datetime,
    until: datetime,
    store_name: str,
    by_day: Sequence[Mapping[str, Any]] | None = None,
    by_model: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """The metrics report of SPEC 2.3 as tables: summary, models, recent batches (and per
    day / per model when asked)."""
    summary = report.get("summary", {})
    tokens = report.get("tokens", {})
    say(f"Metrics from {format_utc(since)} to {format_utc(until)} ({store_name})")
    _emit(
        _key_values(
            "Summary",
            [
                ("Batches", count(summary.get("totalBatches"))),
                ("Contacts", count(summary.get("totalContacts"))),
                ("Enriched", count(summary.get("totalEnriched"))),
                ("Failed", count(summary.get("totalFailed"))),
                (
                    "Success rate",
                    success_text(
                        summary.get("avgSuccessRate"), contacts=summary.get("totalContacts")
                    ),
                ),
                ("Cost", money(summary.get("totalCost"))),
                ("Avg time per contact", millis(summary.get("avgTimePerContact"))),
                ("Input tokens", count(tokens.get("totalInput"))),
                ("Output tokens", count(tokens.get("totalOutput"))),
                ("Total tokens", count(tokens.get("total"))),
                *(
                    (label, count(tokens[key]))
                    for label, key in (
                        ("Cache read tokens", "cacheRead"),
                        ("Cache write tokens", "cacheWrite"),
                    )
                    if tokens.get(key)
                ),
            ],
        )
    )
    if not summary.get("totalBatches"):
        say("No batches in this window.")
        return

    breakdown = report.get("modelBreakdown") or {}
    if breakdown and by_model is None:  # the per-model table repeats these counts
        models = _table("Models")
        models.add_column("Model")
        models.add_column("Results", justify="right")
        for model, n in sorted(breakdown.items(), key=lambda item: (-int(item[1]), item[0])):
            _add_row(models, str(model), count(n))
        _emit(models)

    if by_model is not None:
        _emit(_by_model_table(by_model))
    if by_day is not None:
        _emit(_by_day_table(by_day))

    recent = report.get("recentBatches") or []
    if recent:
        _emit(_recent_table(recent))


def _recent_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    # the mode is left to --json and `intel batches show`: ids and times must not wrap
    table = _table("Recent batches")
    table.add_column("Batch", no_wrap=True)
    table.add_column("Created (UTC)", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Total", justify="right")
    table.add_column("Enriched", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Cost", justify="right")
    table.add_column("Success", justify="right")
    for row in rows:
        _add_row(
            table,
            str(row.get("batch_id")),
            _short_when(row.get("created_at")),
            status_text(row.get("status")),
            count(row.get("total")),
            count(row.get("enriched")),
            count(row.get("failed")),
            money(row.get("cost")),
            success_text(row.get("success_rate"), contacts=row.get("total")),
        )
    return table


def _by_day_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Per day (UTC)")
    table.add_column("Day", no_wrap=True)
    table.add_column("Batches", justify="right")
    table.add_column("Contacts", justify="right")
    table.add_column("Enriched", justify="right")
    table.add_column("Failed", justify="right")
    table.add_column("Cost", justify="right")
    table.add_column("Success", justify="right")
    for row in rows:
        _add_row(
            table,
            str(row.get("day") or "-"),  # a UTC date, not a moment: no time of day
            count(row.get("batches")),
            count(row.get("contacts")),
            count(row.get("enriched")),
            count(row.get("failed")),
            money(row.get("cost")),
            success_text(row.get("success_rate"), contacts=row.get("contacts")),
        )
    return table


def _by_model_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Per model")
    table.add_column("Model")
    table.add_column("Contacts", justify="right")
    table.add_column("Enriched", justify="right")
    table.add_column("Input tokens", justify="right")
    table.add_column("Output tokens", justify="right")
    table.add_column("Cost", justify="right")
    for row in rows:
        _add_row(
            table,
            str(row.get("model") or "-"),
            count(row.get("contacts")),
            count(row.get("enriched")),
            count(row.get("input_tokens")),
            count(row.get("output_tokens")),
            money(row.get("cost")),
        )
    return table


# --- intel batches show ---------------------------------------------------------------------


def metadata_summary(metadata: Any, *, width: int = 70) -> list[tuple[str, str]]:
    """Top-level metadata as (key, short text) pairs; nested values as compact JSON."""
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except ValueError:
            return [("metadata", redact(metadata)[:width])]
    if not isinstance(metadata, Mapping):
        return []
    pairs = []
    for key, value in metadata.items():
        if isinstance(value, Mapping | list | tuple):
            text = json.dumps(jsonable(value), separators=(", ", ": "), ensure_ascii=False)
        else:
            text = str(jsonable(value))
        if len(text) > width:
            text = text[: width - 1] + "…"
        pairs.append((str(key), redact(text)))
    return pairs


def render_batch(
    batch: Mapping[str, Any], results: Sequence[Mapping[str, Any]], *, store_name: str
) -> None:
    """One batch's `intel_logs` row and its per-contact `intel_results` rows."""
    created = _as_datetime(batch.get("created_at"))
    finished = _as_datetime(batch.get("finished_at"))
    duration = "-"
    if created is not None and finished is not None:
        duration = millis(Decimal(int((finished - created).total_seconds() * 1000)))
    rows: list[tuple[str, str | Text]] = [
        ("Store", store_name),
        ("Status", status_text(batch.get("status"))),
        ("Mode", str(batch.get("mode") or "-")),
        ("Model", str(batch.get("model_used") or "-")),
        ("Created", when(created)),
        ("Finished", when(finished)),
        ("Duration", duration),
        ("Contacts", count(batch.get("total"))),
        ("Enriched", count(batch.get("enriched"))),
        ("Cached", count(batch.get("cached"))),
        ("Failed", count(batch.get("failed"))),
        ("Timed out", count(batch.get("timed_out"))),
        ("Retried", count(batch.get("retried"))),
        ("Skipped", count(batch.get("skipped"))),
        ("Success rate", success_text(batch.get("success_rate"), contacts=batch.get("total"))),
        ("Cost", money(batch.get("cost"))),
        ("Avg time per contact", millis(batch.get("avg_time_ms"))),
        ("Input tokens", count(batch.get("input_tokens"))),
        ("Output tokens", count(batch.get("output_tokens"))),
        ("Cache read tokens", count(batch.get("cache_read_tokens"))),
        ("Cache write tokens", count(batch.get("cache_write_tokens"))),
    ]
    _emit(_key_values(f"Batch {batch.get('batch_id')}", rows))
    meta = metadata_summary(batch.get("metadata"))
    if meta:
        table = _table("Metadata", show_header=False)
        table.add_column("", style="bold")
        table.add_column("", overflow="fold")
        for key, text in meta:
            _add_row(table, key, text)
        _emit(table)
    if not results:
        say("No per-contact results recorded for this batch.")
        return
    _emit(_results_table(results))


def _results_table(results: Sequence[Mapping[str, Any]]) -> Table:
    table = _table("Contacts")
    table.add_column("Row", justify="right")
    table.add_column("Key", overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Model", overflow="fold")
    table.add_column("Tokens", justify="right", no_wrap=True)  # input/output
    table.add_column("Cost", justify="right", no_wrap=True)
    table.add_column("Latency", justify="right", no_wrap=True)
    table.add_column("Tries", justify="right")
    table.add_column("Error", overflow="fold")
    for row in results:
        tokens = f"{count(row.get('input_tokens'))}/{count(row.get('output_tokens'))}"
        _add_row(
            table,
            count(row.get("row_index")),
            str(row.get("contact_key") or "-"),
            status_text(row.get("status")),
            str(row.get("model") or "-"),
            tokens,
            money(row.get("cost")),
            millis(row.get("latency_ms")),
            count(row.get("attempts")),
            redact(str(row.get("error") or "")),
        )
    return table


# --- intel limiter --------------------------------------------------------------------------


def limiter_json(state: LimiterState | None, *, now: datetime) -> dict[str, Any]:
    """SPEC 2.4's shape; an expired block is inactive and reported as nulls."""
    if state is None or not state.active(now):
        return {"active": False, "blockedUntil": None, "reason": None, "setBy": None}
    return {
        "active": True,
        "blockedUntil": when(state.blocked_until),
        "reason": state.reason,
        "setBy": state.set_by,
    }


def _block_details(state: LimiterState) -> str:
    parts = [f"blocked until {when(state.blocked_until)}"]
    parts.append(f"set by {state.set_by}" if state.set_by else "set by an unknown run")
    if state.reason:
        parts.append(f"reason {state.reason}")
    return ", ".join(parts)


def render_limiter_status(
    state: LimiterState | None, *, name: str, now: datetime, store_name: str
) -> None:
    if state is not None and state.active(now):
        assert state.blocked_until is not None  # active() says so
        left = int((state.blocked_until - now).total_seconds() + 0.999)
        say(
            f"The {name} limiter is active for {left} more s ({_block_details(state)}) "
            f"in {store_name}. Runs exit 3 until then, or wait with --wait; "
            "`intel limiter reset` clears it."
        )
        return
    expired = ""
    if state is not None and state.blocked_until is not None:
        expired = f" (its last block ended at {when(state.blocked_until)})"
    say(f"The {name} limiter is not active{expired} in {store_name}.")


def render_limiter_reset(cleared: LimiterState | None, *, name: str, now: datetime) -> None:
    if cleared is not None and cleared.active(now):
        say(f"Cleared the {name} limiter ({_block_details(cleared)}).")
    else:
        say("The limiter was not active; nothing to clear.")


# --- intel migrate --------------------------------------------------------------------------


def render_migrate_applied(applied_now: Sequence[str], *, total: int, store_name: str) -> None:
    if not applied_now:
        say(f"Nothing to migrate: {total} migrations already applied ({store_name}).")
        return
    for name in applied_now:
        say(f"Applied {name}")
    say(f"Migrated {store_name}: {len(applied_now)} applied, {total} in all.")


def render_migrate_status(
    applied: Sequence[str], pending: Sequence[Migration], *, store_name: str
) -> None:
    say(f"Migrations of {store_name}")
    table = _table()
    table.add_column("Migration")
    table.add_column("State")
    for name in applied:
        _add_row(table, name, Text("applied", style="green"))
    for migration in pending:
        _add_row(table, migration.name, Text("pending", style="yellow"))
    _emit(table)
    if pending:
        say(f"{len(pending)} pending: run `intel migrate` to apply them.")
    else:
        say(f"Up to date: {len(applied)} migrations applied.")


def render_migrate_sql(pending: Sequence[Migration], *, applied: int) -> None:
    """The SQL of pending migrations, ready to paste into an SQL editor or pipe into psql.
    Everything printed is SQL (comments included), so piping it is always safe."""
    if not pending:
        say(f"-- Nothing to migrate: {applied} migrations already applied.")
        return
    for migration in pending:
        say(f"-- {migration.name}")
        stdout().out(migration.sql.rstrip() + "\n", highlight=False)
