"""`intel simulate`: serve the simulated Messages API in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Annotated

import typer

# The simulator module (http.server and friends) is imported only when the command runs, so
# every other `intel` command starts without it.
DEFAULT_PORT = 8787


def _serve(
    port: int,
    rpm: int | None,
    itpm: int | None,
    otpm: int | None,
    ttft: float,
    speed: float,
    jitter: float,
    fault_rates: dict[str, float],
    seed: int | None,
    batch_seconds: float = 2.0,
) -> None:
    from intel_cli.simulator import Simulator, SimulatorConfig

    config = SimulatorConfig(
        ttft_s=ttft, tokens_per_s=speed, jitter=jitter, rpm=rpm, itpm=itpm, otpm=otpm,
        fault_rates={kind: rate for kind, rate in fault_rates.items() if rate > 0}, seed=seed,
        batch_processing_s=batch_seconds,
    )
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Ctrl-C and SIGTERM both end the server cleanly (exit 0). Installed explicitly because a
    # shell starting `intel simulate &` hands the process an ignored SIGINT.
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Simulator(config, port=port) as sim:
            typer.echo(f"Simulated Anthropic Messages API on {sim.base_url}")
            typer.echo("Point intel at it with:")
            typer.echo(
                f"  ANTHROPIC_BASE_URL={sim.base_url} ANTHROPIC_API_KEY=sim-key "
                "intel enrich contacts.csv"
            )
            typer.echo("Press Ctrl-C to stop.")
            # wait() with a timeout so the main thread gets to run the signal handlers
            while not stop.wait(0.5):
                pass
        stats, billed = sim.stats, len(sim.billed)  # after stop(): every thread has finished
        typer.echo(
            f"Stopped. {stats.requests} requests, {billed} billed, "
            f"{stats.rate_limited} rate-limited, {stats.batches_created} Message Batches."
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""

    @app.command(
        "simulate",
        help="Serve a local simulated Anthropic Messages API (for tests, demos and "
        "benchmarks) until Ctrl-C.",
    )
    def simulate(
        port: Annotated[
            int, typer.Option("--port", min=0, max=65535,
                              help="Port on 127.0.0.1 (0 = any free port).")
        ] = DEFAULT_PORT,
        rpm: Annotated[
            int | None, typer.Option("--rpm", min=1, help="Requests per minute limit.")
        ] = None,
        itpm: Annotated[
            int | None, typer.Option("--itpm", min=1, help="Input tokens per minute limit.")
        ] = None,
        otpm: Annotated[
            int | None, typer.Option("--otpm", min=1, help="Output tokens per minute limit.")
        ] = None,
        ttft: Annotated[
            float, typer.Option("--ttft", min=0, help="Time to first token, seconds.")
        ] = 0.4,
        speed: Annotated[
            float, typer.Option("--speed", help="Output tokens per second ('inf' = instant).")
        ] = 60.0,
        jitter: Annotated[
            float, typer.Option("--jitter", min=0, max=0.99,
                                help="Latency varies by +/- this fraction.")
        ] = 0.1,
        timeout_rate: Annotated[
            float, typer.Option("--timeout-rate", min=0, max=1,
                                help="Share of requests that hang (client timeout).")
        ] = 0.0,
        error_rate: Annotated[
            float, typer.Option("--error-rate", min=0, max=1, help="Share answered 500.")
        ] = 0.0,
        overload_rate: Annotated[
            float, typer.Option("--overload-rate", min=0, max=1, help="Share answered 529.")
        ] = 0.0,
        rate_limit_rate: Annotated[
            float, typer.Option("--rate-limit-rate", min=0, max=1,
                                help="Share answered 429 (on top of --rpm/--itpm/--otpm).")
        ] = 0.0,
        invalid_rate: Annotated[
            float, typer.Option("--invalid-rate", min=0, max=1,
                                help="Share answered with output that fails the schema.")
        ] = 0.0,
        seed: Annotated[
            int | None, typer.Option("--seed", help="Seed for faults and jitter.")
        ] = None,
        batch_seconds: Annotated[
            float, typer.Option("--batch-seconds", min=0,
                                help="How long a Message Batch takes to end.")
        ] = 2.0,
    ) -> None:
        _serve(
            port, rpm, itpm, otpm, ttft, speed, jitter,
            {"timeout": timeout_rate, "500": error_rate, "529": overload_rate,
             "429": rate_limit_rate, "invalid": invalid_rate},
            seed, batch_seconds,
        )
