"""How `intel enrich` looks: the progress display while it runs, the summary and per-model
tables when it ends, and the `--json` summary.

Progress goes to stderr: a Rich progress bar on a terminal, plain periodic lines otherwise
(logs of cron jobs), nothing with --quiet/--json. The pipeline reports through a callback
(`intel_cli.pipeline.Progress`); this module decides how often and how it is shown. Figures
are formatted by the helpers of `intel_cli.render.reports`, so every command shows money,
counts and times alike.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from intel_cli import render
from intel_cli.pipeline import Progress as RunProgress
from intel_cli.pipeline import RunSummary

if TYPE_CHECKING:
    from intel_cli.forecast import Forecast
from intel_cli.render.reports import count, millis, money, success_text

ProgressCallback = Callable[[RunProgress], None]

# plain progress lines: at most one per interval, plus one per step of this fraction
LINE_INTERVAL_S = 2.0
LINE_STEP = 0.10


def _rate(p: RunProgress) -> str:
    return f"{p.done / p.elapsed_s:.1f}/s" if p.elapsed_s > 0 else "-"


class ProgressBar:
    """A Rich progress bar: done/total, enriched, failed, cost so far, contacts/s."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[green]{task.fields[enriched]} enriched[/]"),
            TextColumn("[red]{task.fields[failed]} failed[/]"),
            TextColumn("{task.fields[cost]}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            "reading contacts", total=None, enriched=0, failed=0, cost=money(0), rate="-"
        )

    def __enter__(self) -> ProgressBar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def update(self, p: RunProgress) -> None:
        self._progress.update(
            self._task,
            description=p.phase,
            completed=p.done,
            total=p.total,
            enriched=p.enriched,
            failed=p.failed,
            cost=money(p.cost),
            rate=_rate(p),
        )


class ProgressLines:
    """Plain lines for logs: every LINE_INTERVAL_S or LINE_STEP of the total, and at the end."""

    def __init__(self, console: Console, clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self._clock = clock
        self._last_at: float | None = None
        self._last_step = -1
        self._last_line: tuple[int, int, str] | None = None

    def update(self, p: RunProgress) -> None:
        now = self._clock()
        step = int(p.done / p.total / LINE_STEP) if p.total else 0
        finished = p.total > 0 and p.done >= p.total
        due = (
            self._last_at is None
            or now - self._last_at >= LINE_INTERVAL_S
            or step > self._last_step
            or finished
        )
        key = (p.done, p.total, p.phase)
        if not due or key == self._last_line:
            return
        self._last_at, self._last_step, self._last_line = now, step, key
        percent = f"{100 * p.done // p.total}%" if p.total else "-"
        self._console.print(
            f"{p.phase}: {p.done}/{p.total} ({percent}), {p.enriched} enriched, "
            f"{p.failed} failed, {money(p.cost)}, {_rate(p)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@contextmanager
def progress_display(
    *, quiet: bool, console: Console | None = None
) -> Iterator[ProgressCallback | None]:
    """The progress callback for a run: a bar on a terminal, lines otherwise, None if quiet."""
    if quiet:
        yield None
        return
    console = console or render.stderr()
    if console.is_terminal:
        with ProgressBar(console) as bar:
            yield bar.update
    else:
        yield ProgressLines(console).update


def summary_table(summary: RunSummary) -> Table:
    table = Table(box=box.SIMPLE_HEAVY, show_header=False)
    table.add_column("figure", style="bold")
    table.add_column("value", justify="right")
    wall_s = summary.wall_time_ms / 1000
    rows: list[tuple[str, Any]] = [
        ("Total", count(summary.total)),
        ("Enriched", count(summary.enriched)),
        ("Cached", count(summary.cached)),
        ("Failed", count(summary.failed)),
        ("Timed out", count(summary.timed_out)),
        ("Retried", count(summary.retried)),
        ("Skipped", count(summary.skipped)),
        ("Success rate", success_text(summary.success_rate, contacts=summary.total)),
        ("Input tokens", count(summary.usage.input)),
        ("Output tokens", count(summary.usage.output)),
        ("Cache read / write tokens",
         f"{count(summary.usage.cache_read)} / {count(summary.usage.cache_write)}"),
        ("Cost" + (" (unpriced model: 0)" if summary.unpriced else ""), money(summary.cost)),
        ("Cost per enriched contact", money(summary.cost_per_enriched)),
        ("Avg time per contact", millis(summary.avg_time_ms)),
        ("Wall time", f"{wall_s:,.1f} s"),
        ("Contacts/s", f"{summary.contacts_per_s:.2f}"),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def models_table(summary: RunSummary) -> Table:
    table = Table(title="Per model", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("Model", no_wrap=True)
    for name in ("Contacts", "Enriched", "Input tok", "Output tok", "Cost", "Share"):
        table.add_column(name, justify="right")
    for row in summary.models:
        table.add_row(
            Text(row.model),
            count(row.contacts),
            count(row.enriched),
            count(row.usage.input),
            count(row.usage.output),
            money(row.cost),
            # where the money went (routing sends some contacts to a cheaper model)
            f"{100 * row.cost / summary.cost:.0f}%" if summary.cost else "-",
        )
    return table


def render_summary(summary: RunSummary, console: Console | None = None) -> None:
    """The end-of-run tables, then where the output went and the batch id."""
    console = console or render.stdout()
    style = "green" if summary.status == "completed" else "red"
    console.print(f"Batch {summary.batch_id}: [{style}]{summary.status}[/]", highlight=False)
    console.print(summary_table(summary))
    if summary.models:
        console.print(models_table(summary))
    output = "stdout" if summary.output == "-" else summary.output
    console.print(f"Output: {output}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"Batch: {summary.batch_id} (mode {summary.mode}; `intel batches show "
        f"{summary.batch_id}` for every contact)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_summary_json(summary: RunSummary, file: TextIO) -> None:
    """The SPEC 2.2 `--json` object, one document, never wrapped."""
    file.write(json.dumps(summary.to_json(), indent=2) + "\n")
    file.flush()


def print_error_json(message: str, file: TextIO) -> None:
    """`--json` when the run failed before it had a summary."""
    file.write(json.dumps({"success": False, "error": message}, indent=2) + "\n")
    file.flush()


# --- intel enrich --dry-run -----------------------------------------------------------------


def forecast_table(forecast: Forecast) -> Table:
    """Expected cost per model and mode; "with reuse" leaves out the contacts whose earlier
    results would be reused (SPEC 3.3)."""
    table = Table(title="Expected cost (dry run)", box=box.SIMPLE_HEAVY, title_justify="left")
    table.add_column("Model", no_wrap=True)
    columns = ("Contacts", "Reused", "Input tok", "Output tok", "Realtime", "Batch",
               "Realtime w/ reuse", "Batch w/ reuse")
    for name in columns:
        table.add_column(name, justify="right")

    def cells(row: Any) -> list[str]:
        # realtime, batch, realtime with reuse, batch with reuse: the columns' order
        return [
            money(row.cost(batch=batch, cache=cache))
            for cache in (False, True)
            for batch in (False, True)
        ]

    for row in forecast.models:
        table.add_row(
            Text(row.model), count(row.contacts), count(row.cached), count(row.input_tokens),
            count(row.output_tokens), *cells(row),
        )
    if len(forecast.models) > 1:
        table.add_row(
            Text("all models", style="bold"), count(forecast.contacts), count(forecast.cached),
            count(forecast.input_tokens), count(forecast.output_tokens), *cells(forecast),
        )
    return table


def render_forecast(forecast: Forecast, console: Console | None = None) -> None:
    """The dry run: where the token counts come from, the cost table, and the notes."""
    console = console or render.stdout()

    def line(text: str) -> None:
        console.print(text, markup=False, highlight=False, soft_wrap=True)

    line(
        f"Dry run: {forecast.contacts:,} contacts to enrich ({forecast.skipped:,} skipped, "
        f"{forecast.duplicates:,} duplicates); nothing was sent."
    )
    counted = f", {forecast.counted:,} counted" if forecast.counted else ""
    line(f"Input tokens: {forecast.token_source}{counted}.")
    for row in forecast.models:
        line(
            f"Output tokens for {row.model}: {row.output_per_request:,.0f} per request "
            f"({row.output_source})."
        )
    console.print(forecast_table(forecast))
    if forecast.max_cost is not None:
        worst = forecast.cost(batch=False, cache=False)
        verdict = "fits within" if worst <= forecast.max_cost else "exceeds"
        line(f"The realtime estimate {verdict} --max-cost {money(forecast.max_cost)}.")
    if not forecast.cache_used:
        line("--no-cache: every contact would be sent.")
    for note in forecast.notes:
        line(f"Note: {note}.")


def print_forecast_json(forecast: Forecast, file: TextIO) -> None:
    """`--dry-run --json`: one document."""
    file.write(json.dumps(forecast.to_json(), indent=2) + "\n")
    file.flush()
