"""The speed baseline (issue 3's closing note): N simulated contacts, about 2 s a request, no
binding rate limit, run two ways:

1. `intel enrich` with its defaults (the pipeline: adaptive pacing under --concurrency's cap,
   a new request as soon as the pacer allows), into a temporary SQLite store;
2. the original service's schedule: waves of 5 at a time with a 500 ms pause between waves
   (each wave waits for its slowest request), through the same client.

Prints wall time, contacts/s, mean request latency, tokens and cost for each.

    python benchmarks/enrich_baseline.py [--contacts 200] [--ttft 0.6] [--speed 130]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import tempfile
import time
from decimal import Decimal
from pathlib import Path

from intel_cli.anthropic_client import AnthropicClient, Attempt
from intel_cli.contacts import Contact, read_contacts
from intel_cli.pipeline import RunOptions, run
from intel_cli.prompt import RunContext
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KINDS = ("radio", "fm", "magazine", "blog", "playlists", "press")


def write_contacts(path: Path, n: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            kind = KINDS[i % len(KINDS)]
            writer.writerow(
                [f"Contact {i}", f"c{i:04d}@{kind}-{i:04d}.example", f"Outlet {i} {kind}",
                 "Producer"]
            )


def report(name: str, wall_s: float, n: int, latencies: list[int], usage: Usage,
           cost: Decimal, enriched: int) -> None:
    print(f"{name}")
    print(f"  contacts        {n} ({enriched} enriched)")
    print(f"  wall time       {wall_s:.1f} s")
    print(f"  contacts/s      {n / wall_s:.2f}")
    print(f"  mean latency    {statistics.mean(latencies):.0f} ms per request")
    print(f"  tokens          {usage.input:,} in, {usage.output:,} out")
    print(f"  cost            ${cost:.4f}")


def pipeline_defaults(sim: Simulator, csv_path: Path, tmp: Path) -> None:
    with SQLiteStore(tmp / "bench.db") as store:
        store.migrate()
        began = time.monotonic()
        summary = run(
            RunOptions(inputs=[str(csv_path)], output=str(tmp / "out.csv"), model=MODEL),
            store, api_key="bench-key", base_url=sim.base_url,
        )
        wall = time.monotonic() - began
        latencies = [r["latency_ms"] for r in store.batch_results(summary.batch_id)]
    report("intel enrich defaults (adaptive pacing under a cap of 256)", wall,
           summary.total, latencies, summary.usage, summary.cost, summary.enriched)


async def _waves(sim: Simulator, contacts: list[Contact], size: int, pause: float
                 ) -> tuple[float, list[Attempt]]:
    attempts: list[Attempt] = []
    async with AnthropicClient(api_key="bench-key", base_url=sim.base_url) as client:
        began = time.monotonic()
        for start in range(0, len(contacts), size):
            wave = contacts[start:start + size]
            attempts += await asyncio.gather(
                *(client.attempt(c, model=MODEL, context=RunContext()) for c in wave)
            )
            if start + size < len(contacts):
                await asyncio.sleep(pause)
        return time.monotonic() - began, attempts


def original_waves(sim: Simulator, csv_path: Path) -> None:
    with read_contacts([str(csv_path)]) as source:
        contacts = list(source)
    wall, attempts = asyncio.run(_waves(sim, contacts, 5, 0.5))
    usage = sum((a.usage for a in attempts), Usage())
    cost = sum((a.cost for a in attempts), Decimal(0))
    enriched = sum(a.intel is not None for a in attempts)
    report("original schedule (waves of 5, 500 ms pause)", wall, len(contacts),
           [a.latency_ms for a in attempts], usage, cost, enriched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200)
    parser.add_argument("--ttft", type=float, default=0.6, help="simulated time to first token")
    parser.add_argument("--speed", type=float, default=130.0, help="simulated output tokens/s")
    args = parser.parse_args()
    config = SimulatorConfig(ttft_s=args.ttft, tokens_per_s=args.speed, jitter=0.1, seed=1)
    with tempfile.TemporaryDirectory() as tmp_name, Simulator(config) as sim:
        tmp = Path(tmp_name)
        csv_path = tmp / "contacts.csv"
        write_contacts(csv_path, args.contacts)
        pipeline_defaults(sim, csv_path, tmp)
        original_waves(sim, csv_path)


if __name__ == "__main__":
    main()
