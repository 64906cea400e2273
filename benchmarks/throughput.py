"""Throughput against an account's real limits (issue 6): 500 simulated contacts on three
simulated accounts, latency 0.5 s + output tokens at 60 tokens/s, each run two ways in this
process, each against a fresh simulator (full buckets):

1. `intel enrich` with its defaults (the adaptive pacer, cap 256), into a temporary SQLite
   store, through the real SDK over HTTP;
2. the original service's schedule: waves of 5 at a time with a 500 ms pause between waves
   (benchmarks/enrich_baseline.py), through the same client; its 429s are failures, as
   they were in the original.

Prints, per account: the ceiling (the binding limit in contacts/min: min(rpm, otpm / mean
output tokens, itpm / mean input tokens)), our contacts/min over the run's wall time and its
percentage of the ceiling, the original's, their ratio, and the 429s each got.

    python benchmarks/throughput.py                      # all three (~17 min: 50 rpm is slow)
    python benchmarks/throughput.py --account 1000rpm    # one account (~1 min)
    python benchmarks/throughput.py --account 50rpm --contacts 100

A client starting on full buckets can beat the ceiling for a while: each bucket holds a
minute's worth up front (50 requests on the 50 rpm account; on the other two, more than 500
contacts' worth of requests and ~400 contacts' worth of output tokens on the 1,000 rpm one),
so on short runs the percentage can pass 100%.

The original's waves take ~7.5 min for 500 contacts whatever the account, so they run
alongside ours in threads (each account its own simulator, 5 requests in flight each);
`--sequential` runs them one after the other instead.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from enrich_baseline import MODEL, _waves, write_contacts  # noqa: E402

from intel_cli.anthropic_client import Outcome  # noqa: E402
from intel_cli.contacts import read_contacts  # noqa: E402
from intel_cli.pipeline import RunOptions, run  # noqa: E402
from intel_cli.simulator import Simulator, SimulatorConfig  # noqa: E402
from intel_cli.stores.sqlite import SQLiteStore  # noqa: E402

ACCOUNTS: dict[str, dict[str, int]] = {
    "50rpm": {"rpm": 50},
    "1000rpm": {"rpm": 1000, "otpm": 80_000},
    "4000rpm": {"rpm": 4000, "otpm": 400_000},
}
TTFT_S = 0.5
SPEED = 60.0


@dataclass
class Result:
    name: str
    contacts: int
    enriched: int
    wall_s: float
    requests: int
    rate_limited: int
    mean_in: float
    mean_out: float
    mean_latency_s: float
    peak_in_flight: int

    @property
    def per_min(self) -> float:
        return self.enriched / self.wall_s * 60


def config(limits: dict[str, int]) -> SimulatorConfig:
    values: dict[str, Any] = {"ttft_s": TTFT_S, "tokens_per_s": SPEED, "jitter": 0.1, "seed": 1}
    return SimulatorConfig(**values, **limits)


def ours(limits: dict[str, int], csv_path: Path, tmp: Path) -> Result:
    # a store of its own: a store that has seen these contacts would answer from its cache
    with Simulator(config(limits)) as sim, SQLiteStore(tmp / "bench.db") as store:
        store.migrate()
        summary = run(
            RunOptions(inputs=[str(csv_path)], output=str(tmp / "out.csv"), model=MODEL),
            store, api_key="bench-key", base_url=sim.base_url,
        )
        stats = sim.stats
        billed = sim.billed
        results = store.batch_results(summary.batch_id)
    latencies = [r["latency_ms"] / 1000 for r in results if r["latency_ms"]]
    return Result(
        "intel (defaults)", summary.total, summary.enriched, summary.wall_time_ms / 1000,
        stats.requests, stats.rate_limited,
        statistics.mean(b["input_tokens"] for b in billed),
        statistics.mean(b["output_tokens"] for b in billed),
        statistics.mean(latencies), stats.max_in_flight,
    )


def original(limits: dict[str, int], csv_path: Path) -> Result:
    with read_contacts([str(csv_path)]) as source:
        contacts = list(source)
    with Simulator(config(limits)) as sim:
        wall, attempts = asyncio.run(_waves(sim, contacts, 5, 0.5))
        stats = sim.stats
    answered = [a for a in attempts if a.billed]
    return Result(
        "original (waves of 5, 500 ms pause)", len(contacts),
        sum(a.intel is not None for a in attempts), wall, stats.requests,
        sum(a.outcome is Outcome.RATE_LIMITED for a in attempts),
        statistics.mean(a.usage.input for a in answered) if answered else 0.0,
        statistics.mean(a.usage.output for a in answered) if answered else 0.0,
        statistics.mean(a.latency_ms / 1000 for a in answered) if answered else 0.0,
        stats.max_in_flight,
    )


def ceiling(limits: dict[str, int], mean_in: float, mean_out: float) -> tuple[float, str]:
    """The binding limit in contacts per minute, and which limit it is."""
    options = {"requests/min": float(limits["rpm"])} if "rpm" in limits else {}
    if "otpm" in limits:
        options["output tokens/min"] = limits["otpm"] / mean_out
    if "itpm" in limits:
        options["input tokens/min"] = limits["itpm"] / mean_in
    name = min(options, key=lambda k: options[k])
    return options[name], name


def show(result: Result) -> None:
    pct = 100 * result.rate_limited / result.requests if result.requests else 0.0
    print(f"  {result.name}")
    print(f"    enriched        {result.enriched} of {result.contacts}")
    print(f"    wall time       {result.wall_s:.1f} s")
    print(f"    contacts/min    {result.per_min:,.0f}")
    print(f"    requests        {result.requests} ({result.rate_limited} x 429 = {pct:.2f}%)")
    print(f"    peak in flight  {result.peak_in_flight}")
    print(f"    mean latency    {result.mean_latency_s:.2f} s, "
          f"tokens {result.mean_in:,.0f} in / {result.mean_out:,.0f} out per request")


def compare(name: str, n: int, a: Result, b: Result) -> dict[str, float]:
    limits = ACCOUNTS[name]
    print(f"\n{name}: {', '.join(f'{k} {v:,}' for k, v in limits.items())}; "
          f"{n} contacts; latency {TTFT_S} s + output at {SPEED:g} tokens/s")
    show(a)
    show(b)
    top, binding = ceiling(limits, a.mean_in, a.mean_out)
    ratio = a.per_min / b.per_min if b.per_min else float("inf")
    share = 100 * a.per_min / top
    rate_429 = 100 * a.rate_limited / a.requests
    print(f"  ceiling           {top:,.0f} contacts/min ({binding})")
    print(f"  ours / ceiling    {share:.0f}%")
    print(f"  ours / original   {ratio:.1f}x")
    print(f"  429s              ours {a.rate_limited} ({rate_429:.2f}% of requests), "
          f"original {b.rate_limited}", flush=True)
    return {"ceiling": top, "ours": a.per_min, "original": b.per_min, "share": share,
            "ratio": ratio, "429": a.rate_limited, "429pct": rate_429}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--account", choices=sorted(ACCOUNTS), action="append",
                        help="run only this account (repeatable); default: all three")
    parser.add_argument("--sequential", action="store_true",
                        help="run the original schedules after ours, not alongside (slower)")
    args = parser.parse_args()
    names = args.account or list(ACCOUNTS)
    began = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp_name, ThreadPoolExecutor(len(names)) as pool:
        tmp = Path(tmp_name)
        paths = {}
        for name in names:
            paths[name] = tmp / f"contacts-{name}.csv"
            write_contacts(paths[name], args.contacts)
        # the original's waves take ~7 min for 500 contacts whatever the account: they run
        # alongside (5 requests in flight, each account its own simulator), ours one by one
        originals: dict[str, Future[Result]] = {}
        if not args.sequential:
            originals = {name: pool.submit(original, ACCOUNTS[name], paths[name])
                         for name in names}
        mine: dict[str, Result] = {}
        for name in names:
            (tmp / name).mkdir()
            mine[name] = ours(ACCOUNTS[name], paths[name], tmp / name)
            print(f"{name}: ours done in {mine[name].wall_s:.1f} s", flush=True)
        theirs = {name: originals[name].result() if name in originals
                  else original(ACCOUNTS[name], paths[name]) for name in names}
    figures = {name: compare(name, args.contacts, mine[name], theirs[name]) for name in names}
    print("\n| account | ceiling (contacts/min) | intel | % of ceiling | original | ratio "
          "| 429s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, f in figures.items():
        print(f"| {name} | {f['ceiling']:,.0f} | {f['ours']:,.0f} "
              f"| {f['share']:.0f}% | {f['original']:,.0f} | {f['ratio']:.1f}x "
              f"| {f['429']:.0f} ({f['429pct']:.1f}%) |")
    print(f"\n(benchmark wall time {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
