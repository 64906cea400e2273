"""`intel metrics`: what the batches in a time window cost and how well they worked (SPEC 2.3),
with cron alerts (`--fail-under`, `--budget`, exit 5)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Annotated, Any

import typer

from intel_cli import timeparse
from intel_cli.cli.common import open_store
from intel_cli.errors import ThresholdError, UsageError

DEFAULT_WINDOW = timedelta(hours=24)


class By(StrEnum):
    day = "day"
    model = "model"


def window(since: str | None, until: str | None, *, now: datetime) -> tuple[datetime, datetime]:
    """The [since, until) window; defaults: the last 24 hours. Raises UsageError (exit 2)."""
    end = timeparse.parse_when(until, now=now, option="--until") if until else now
    start = (
        timeparse.parse_when(since, now=now, option="--since") if since else end - DEFAULT_WINDOW
    )
    if start >= end:
        raise UsageError(
            f"--since ({timeparse.format_utc(start)}) must be before --until "
            f"({timeparse.format_utc(end)}): the window is empty"
        )
    return start, end


def parse_usd(text: str, option: str) -> Decimal:
    try:
        value = Decimal(text.strip().removeprefix("$"))
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite() or value < 0:
        raise UsageError(f"bad {option} value {text!r}: use an amount in USD, e.g. 5 or 12.50")
    return value


def threshold_failures(
    summary: dict[str, Any], *, fail_under: float | None, budget: Decimal | None
) -> list[str]:
    """Why a cron alert fires, one phrase per crossed threshold (empty when none is)."""
    reasons = []
    rate = Decimal(str(summary.get("avgSuccessRate") or 0))
    cost = Decimal(str(summary.get("totalCost") or 0))
    # an empty window has no success rate to fall short: it is not an alert (nor an error)
    has_contacts = bool(summary.get("totalContacts"))
    if fail_under is not None and has_contacts and rate < Decimal(str(fail_under)):
        reasons.append(f"success rate {rate:.2f}% is under --fail-under {fail_under:g}%")
    if budget is not None and cost > budget:
        reasons.append(f"cost ${cost:.4f} is over --budget ${budget}")
    return reasons


def metrics_command(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Start of the window: ISO date/datetime (UTC), 90m, 24h, 7d, 4w, today, "
            "yesterday, now (default: 24 h before --until).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="End of the window (exclusive), same forms (default: now).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON (SPEC 2.3 shape).")
    ] = False,
    recent: Annotated[
        int, typer.Option("--recent", min=0, metavar="N", help="How many recent batches to list.")
    ] = 10,
    by: Annotated[
        By | None,
        typer.Option("--by", help="Add a breakdown per UTC day or per model.", show_default=False),
    ] = None,
    fail_under: Annotated[
        float | None,
        typer.Option(
            "--fail-under", min=0, max=100, metavar="PCT",
            help="Exit 5 when the success rate is under PCT percent (cron alert).",
        ),
    ] = None,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget", metavar="USD", help="Exit 5 when the total cost is over USD (cron alert)."
        ),
    ] = None,
) -> None:
    """Cost, tokens and success rate of the batches in a time window."""
    from intel_cli.render import reports

    # whole seconds: the timeframe then prints as 2025-11-12T10:30:00Z, like SPEC 2.3's example
    now = timeparse.ceil_second(timeparse.now())
    start, end = window(since, until, now=now)
    budget_usd = parse_usd(budget, "--budget") if budget is not None else None
    with open_store(ctx) as store:
        report = store.metrics(start, end, recent=recent)
        by_day = store.metrics_by_day(start, end) if by is By.day else None
        by_model = store.metrics_by_model(start, end) if by is By.model else None
        store_name = store.display_name

    reasons = threshold_failures(
        report.get("summary", {}), fail_under=fail_under, budget=budget_usd
    )
    if as_json:
        reports.print_json(
            reports.metrics_json(
                report, since=start, until=end, by_day=by_day, by_model=by_model,
                error="; ".join(reasons) if reasons else None,
            )
        )
    else:
        reports.render_metrics(
            report, since=start, until=end, store_name=store_name, by_day=by_day, by_model=by_model
        )
    if reasons:
        # the report is already on stdout; the root prints this one line on stderr, exit 5
        raise ThresholdError("; ".join(reasons))


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.command("metrics")(metrics_command)
