"""`intel enrich`: parse the options, check the key, open the store, run the pipeline, render.

`--simulate` starts the simulated Messages API in this process and points the client at it
(SPEC 6); its latency can be tuned with INTEL_SIMULATE_TTFT (seconds to first token) and
INTEL_SIMULATE_SPEED (output tokens per second, `inf` for none), and how long its Message
Batches take with INTEL_SIMULATE_BATCH_S. `--mode batch` checks on its Message Batches every
INTEL_BATCH_POLL_S seconds [15].
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from intel_cli.cli.common import open_store
from intel_cli.config import DEFAULT_FAST_MODEL, DEFAULT_MODEL
from intel_cli.errors import IntelError, Interrupted, UsageError
from intel_cli.signals import StopSignals

if TYPE_CHECKING:
    from intel_cli.pipeline import RunOptions

SIMULATED_KEY = "sim-key"  # the in-process simulator accepts any key
# a realistic but quick simulated API: about 2 s for a full answer
SIMULATE_TTFT_S = 0.3
SIMULATE_SPEED = 200.0
SIMULATE_BATCH_S = 2.0  # a simulated Message Batch ends this long after it is created


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
        batch_processing_s=_env_float("INTEL_SIMULATE_BATCH_S", SIMULATE_BATCH_S),
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
    mode: Annotated[
        str,
        typer.Option(
            "--mode",
            metavar="realtime|batch",
            help="realtime: one request per contact as it goes. batch: the Message Batches "
            "API, half the price, results within 24 h (usually minutes); --resume collects "
            "a submitted batch without sending it again. Default: realtime.",
            show_default=False,
        ),
    ] = "realtime",
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
    max_cost: Annotated[
        str | None,
        typer.Option(
            "--max-cost",
            metavar="USD",
            help="Never spend more than this on the run: each request's worst case is "
            "reserved before it is sent; contacts that do not fit end over_budget (exit 5). "
            "INTEL_DAILY_BUDGET (USD per UTC day) caps every run sharing the store.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Estimate tokens and cost per model and mode (realtime, batch, with and "
            "without reused results); send nothing.",
        ),
    ] = False,
    fast_model: Annotated[
        str | None,
        typer.Option(
            "--fast-model",
            metavar="NAME",
            help=f"Cheaper model for contacts matching --route-roles. Default: "
            f"{DEFAULT_FAST_MODEL}.",
            show_default=False,
        ),
    ] = None,
    route_roles: Annotated[
        str | None,
        typer.Option(
            "--route-roles",
            metavar="LIST",
            help='Roles sent to --fast-model, e.g. "DJ,Producer" (case-insensitive, on the '
            "role column); a Low-confidence answer is asked again on --model.",
            show_default=False,
        ),
    ] = None,
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
        # stripped: a key with a trailing newline (.env files, CI secrets) is an illegal header
        # value, and every contact failed with a connection error instead of being enriched
        api_key = SIMULATED_KEY if simulate else os.environ.get("ANTHROPIC_API_KEY", "").strip()
        if not api_key and not dry_run:  # a dry run without a key estimates offline
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
            mode=mode.strip().lower(),
            batch_poll_s=_env_float("INTEL_BATCH_POLL_S", 15.0),
            resume=resume,
            cache=not no_cache,
            cache_ttl_s=_cache_ttl(cache_ttl),
            # how long a run rides out a store that is away (tests make it short)
            store_retries=int(_env_float("INTEL_STORE_RETRIES", 3)),
            store_backoff=_env_float("INTEL_STORE_BACKOFF", 0.5),
            **_money_and_routing(max_cost, fast_model, route_roles),
        )
        options.validate()
        if dry_run:
            _dry_run(ctx, options, api_key=api_key, simulate=simulate, as_json=as_json,
                     out=json_file if as_json else None, to_stderr=to_stdout)
            return
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


def _money_and_routing(
    max_cost: str | None, fast_model: str | None, route_roles: str | None
) -> dict[str, Any]:
    """RunOptions for --max-cost, INTEL_DAILY_BUDGET, --fast-model and --route-roles."""
    from intel_cli.budget import daily_budget_from_env, parse_usd
    from intel_cli.routing import parse_roles

    roles = parse_roles(route_roles)
    if fast_model is not None and not roles:
        raise UsageError(
            '--fast-model needs --route-roles to say which contacts go to it, e.g. '
            '--route-roles "DJ,Producer"'
        )
    return {
        "max_cost": None if max_cost is None else parse_usd(max_cost, "--max-cost"),
        "daily_budget": daily_budget_from_env(),
        "fast_model": (fast_model or DEFAULT_FAST_MODEL) if roles else None,
        "route_roles": roles,
    }


def _dry_run(
    ctx: typer.Context,
    options: RunOptions,
    *,
    api_key: str | None,
    simulate: bool,
    as_json: bool,
    out: TextIO | None,
    to_stderr: bool,
) -> None:
    """--dry-run: the forecast of intel_cli.forecast, as tables or JSON; nothing is sent."""
    from intel_cli import render
    from intel_cli.forecast import forecast
    from intel_cli.render import enrich as view

    with open_store(ctx) as store, _base_url(simulate) as base_url:
        result = forecast(
            options,
            store,
            api_key=api_key or None,
            base_url=base_url,
            simulated=simulate,
            stdin=sys.stdin.buffer if "-" in options.inputs else None,
            warn=render.warn,
        )
    if out is not None:
        view.print_forecast_json(result, out)
    else:
        view.render_forecast(result, render.stderr() if to_stderr else render.stdout())


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
