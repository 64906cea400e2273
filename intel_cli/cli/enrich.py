"""`intel enrich`: parse the options, check the key, open the store, run the pipeline, render.

`--simulate` starts the simulated Messages API in this process and points the client at it
(SPEC 6); its latency can be tuned with INTEL_SIMULATE_TTFT (seconds to first token) and
INTEL_SIMULATE_SPEED (output tokens per second, `inf` for none).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from intel_cli.cli.common import open_store
from intel_cli.config import DEFAULT_MODEL
from intel_cli.errors import IntelError, Interrupted, UsageError
from intel_cli.signals import StopSignals

SIMULATED_KEY = "sim-key"  # the in-process simulator accepts any key
# a realistic but quick simulated API: about 2 s for a full answer
SIMULATE_TTFT_S = 0.3
SIMULATE_SPEED = 200.0


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"bad {name} value {raw!r}: use a number of seconds") from None


@contextmanager
def _simulated_api() -> Iterator[str]:
    """The simulator on a free loopback port for the length of the run; yields its URL."""
    from intel_cli.simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(
        ttft_s=_env_float("INTEL_SIMULATE_TTFT", SIMULATE_TTFT_S),
        tokens_per_s=_env_float("INTEL_SIMULATE_SPEED", SIMULATE_SPEED),
    )
    with Simulator(config) as simulator:
        yield simulator.base_url


def enrich_command(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="INPUT",
            help="Contact files (CSV, TSV, JSON, JSONL), or - for stdin.",
            show_default=False,
        ),
    ],
    output: Annotated[
        str | None,
        typer.Option(
            "--output", "-o",
            help="Output file (.csv, .json, .jsonl), or - for CSV on stdout. "
            "Default: <input stem>.enriched.csv next to the input.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", envvar="INTEL_MODEL", help="Claude model.")
    ] = DEFAULT_MODEL,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", min=1, show_default=False,
            help="Requests in flight at most; under this cap the pace adapts to the "
            "account's rate limits. Default: 256.",
        ),
    ] = 256,  # intel_cli.pacing.DEFAULT_CAP (not imported: it would load asyncio at start)
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.001, help="Seconds per attempt.")
    ] = 10.0,
    retries: Annotated[
        int,
        typer.Option("--retries", min=0, help="Retries of a failed attempt (not of a timeout)."),
    ] = 1,
    adaptive_threshold: Annotated[
        float,
        typer.Option(
            "--adaptive-threshold", min=0.0, max=1.0,
            help="Retry timed-out contacts once when the success rate is under this.",
        ),
    ] = 0.8,
    no_adaptive_retry: Annotated[
        bool, typer.Option("--no-adaptive-retry", help="Never retry timed-out contacts.")
    ] = False,
    batch_id: Annotated[
        str | None,
        typer.Option(
            "--batch-id",
            help="Batch id, unique in the store. Default: b_YYYYMMDDTHHMMSS_xxxxxx (UTC).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="If the global rate limiter is active, wait instead of exit 3."
        ),
    ] = False,
    max_wait: Annotated[
        float,
        typer.Option("--max-wait", min=0.0, help="Seconds a run waits on the limiter at most."),
    ] = 300.0,
    genre: Annotated[
        str | None, typer.Option("--genre", help="Genre of the release, for the prompt.")
    ] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Target region, for the prompt.")
    ] = None,
    campaign: Annotated[
        str, typer.Option("--campaign", help="radio, press, playlist or all.")
    ] = "all",
    simulate: Annotated[
        bool, typer.Option("--simulate", help="Use the built-in simulated API, not Anthropic.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run summary as JSON (for cron).")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress and no tables; errors still show.")
    ] = False,
    resume: Annotated[
        str | None,
        typer.Option(
            "--resume",
            metavar="BATCH_ID",
            help="Continue an interrupted or killed batch with the same input files: "
            "finished contacts are not sent again.",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Send every contact, even with a reusable result."),
    ] = False,
    cache_ttl: Annotated[
        str,
        typer.Option(
            "--cache-ttl",
            metavar="DURATION",
            help="Reuse a contact's result this recent (same prompt and model): "
            "e.g. 90m, 24h, 7d; 0 turns reuse off. Default: 7d.",
            show_default=False,
        ),
    ] = "7d",
) -> None:
    """Enrich contacts with Claude: every row comes back, enriched or honestly marked."""
    from intel_cli import render
    from intel_cli.contacts import default_output_path
    from intel_cli.pipeline import NO_KEY_MESSAGE, RunOptions, run
    from intel_cli.render import enrich as view

    to_stdout = (output or default_output_path(inputs)) == "-"
    # with CSV on stdout, everything else goes to stderr so the CSV stays clean
    json_file = sys.stderr if to_stdout else sys.stdout
    try:
        api_key = SIMULATED_KEY if simulate else os.environ.get("ANTHROPIC_API_KEY")
        if not api_key:
            from intel_cli.errors import ConfigError

            raise ConfigError(NO_KEY_MESSAGE)
        options = RunOptions(
            inputs=list(inputs),
            output=output,
            model=model,
            concurrency=concurrency,
            timeout=timeout,
            retries=retries,
            adaptive_threshold=adaptive_threshold,
            adaptive_retry=not no_adaptive_retry,
            batch_id=batch_id,
            wait=wait,
            max_wait=max_wait,
            genre=genre,
            region=region,
            campaign=campaign.strip().lower(),
            simulate=simulate,
            resume=resume,
            cache=not no_cache,
            cache_ttl_s=_cache_ttl(cache_ttl),
            # how long a run rides out a store that is away (tests make it short)
            store_retries=int(_env_float("INTEL_STORE_RETRIES", 3)),
            store_backoff=_env_float("INTEL_STORE_BACKOFF", 0.5),
        )
        options.validate()
        with (
            open_store(ctx) as store,
            _base_url(simulate) as base_url,
            StopSignals() as stop_signals,
        ):
            with view.progress_display(quiet=quiet or as_json) as progress:
                summary = run(
                    options,
                    store,
                    api_key=api_key,
                    base_url=base_url,
                    progress=progress,
                    warn=render.warn,
                    stdin=sys.stdin.buffer if "-" in inputs else None,
                    stdout=sys.stdout,
                    cancel=stop_signals,
                )
    except IntelError as exc:
        if as_json:
            view.print_error_json(str(exc), json_file)
        raise
    if as_json:
        view.print_summary_json(summary, json_file)
    elif not quiet:
        view.render_summary(summary, render.stderr() if to_stdout else render.stdout())
    if summary.error is not None:
        if isinstance(summary.error, Interrupted):
            raise stop_signals.error(summary.error.message)  # 143 after SIGTERM
        raise summary.error


def _cache_ttl(text: str) -> float:
    from intel_cli.timeparse import parse_duration

    if text.strip() == "0":
        return 0.0
    ttl = parse_duration(text)
    if ttl is None:
        raise UsageError(f"bad --cache-ttl {text!r}: use a duration such as 90m, 24h or 7d")
    return ttl.total_seconds()


@contextmanager
def _base_url(simulate: bool) -> Iterator[str | None]:
    """The simulator's URL with --simulate; else None (the SDK reads ANTHROPIC_BASE_URL)."""
    if not simulate:
        yield None
        return
    with _simulated_api() as url:
        yield url


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.command("enrich")(enrich_command)
