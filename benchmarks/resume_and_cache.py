"""Issue 5's closing figures: what a SIGKILL costs, and what the result cache saves.

1. Kill and resume: `intel enrich` of N simulated contacts runs as a real subprocess (the
   pipeline's defaults, into a temporary SQLite store) against a simulator in this process
   that counts the requests naming each contact. Once half the contacts are committed, the
   process gets SIGKILL; `intel enrich --resume` then finishes the batch. Prints how many
   contacts were in flight at the kill (requested, never recorded), how many were sent again
   on resume, and what the kill cost (answers billed by the API but never recorded).
2. Cache: the same file enriched twice (SPEC 3.3, default --cache-ttl 7d): requests and
   cost of each run, and the cost the second run saved.

    python benchmarks/resume_and_cache.py [--contacts 500] [--ttft 0.3] [--speed 200]
        [--concurrency N]   (default: the pipeline's adaptive default)
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

from intel_cli.pipeline import RunOptions, run
from intel_cli.pricing import price
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "sim-key"


def email(i: int) -> str:
    return f"contact{i:06d}@outlet{i:06d}.example"


def write_contacts(path: Path, n: int) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            writer.writerow([f"Contact {i}", email(i), f"Outlet {i} FM", "Producer"])


class CountingSimulator(Simulator):
    """Counts the /v1/messages requests that name each contact."""

    def __init__(self, config: SimulatorConfig, n: int) -> None:
        super().__init__(config)
        self.n = n
        self.sent: Counter[int] = Counter()
        self._count_lock = threading.Lock()

    def messages(self, body: dict[str, Any], raw: str) -> Any:  # type: ignore[override]
        marker = raw.find("contact")
        while marker != -1:
            digits = raw[marker + 7 : marker + 13]
            if digits.isdigit() and raw[marker + 13 : marker + 14] == "@":
                with self._count_lock:
                    self.sent[int(digits)] += 1
                break
            marker = raw.find("contact", marker + 1)
        return super().messages(body, raw)


def cost_of(billed: list[dict[str, Any]]) -> Decimal:
    return sum((price(MODEL, Usage.from_api(b)).cost for b in billed), Decimal(0))


def stored_rows(db: Path) -> int:
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM intel_results").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def kill_and_resume(
    n: int, ttft: float, speed: float, work: Path, concurrency: int | None
) -> None:
    inputs, db, out = work / "contacts.csv", work / "kill.db", work / "kill.csv"
    write_contacts(inputs, n)
    config = SimulatorConfig(ttft_s=ttft, tokens_per_s=speed)
    with CountingSimulator(config, n) as sim:
        env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.base_url,
               "INTEL_HOME": str(work / "home")}
        command = [sys.executable, "-m", "intel_cli", "enrich", str(inputs), "--store", str(db),
                   "-o", str(out), "--quiet", "--model", MODEL]
        if concurrency is not None:
            command += ["--concurrency", str(concurrency)]
        began = time.monotonic()
        child = subprocess.Popen([*command, "--batch-id", "b_bench_kill"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while stored_rows(db) < n // 2 and child.poll() is None:
            time.sleep(0.005)
        child.send_signal(signal.SIGKILL)
        child.wait()
        killed_at = time.monotonic() - began
        time.sleep(0.2)  # let the simulator notice the dropped connections
        billed_before = sim.billed
        with SQLiteStore(db) as store:
            recorded = {r["row_index"] for r in store.batch_results("b_bench_kill")}
        requested = set(sim.sent)
        in_flight = requested - recorded
        resume_began = time.monotonic()
        resumed = subprocess.run([*command, "--resume", "b_bench_kill"], env=env,
                                 capture_output=True, text=True)
        resume_s = time.monotonic() - resume_began
        billed_all = sim.billed
    if resumed.returncode != 0:
        raise SystemExit(f"resume failed ({resumed.returncode}): {resumed.stderr.strip()}")
    resent = {i for i, times in sim.sent.items() if times > 1}
    with SQLiteStore(db) as store:
        batch = store.get_batch("b_bench_kill")
    assert batch is not None
    lost = cost_of(billed_all) - batch["cost"]
    cap = "adaptive (the default)" if concurrency is None else f"--concurrency {concurrency}"
    print(f"Kill and resume: {n} contacts, simulator ttft {ttft:g} s at {speed:g} tok/s, "
          f"concurrency: {cap}")
    print(f"  killed (SIGKILL) after {killed_at:.1f} s with {len(recorded)} contacts committed")
    print(f"  in flight at the kill (requested, never recorded): {len(in_flight)}")
    print(f"  answers billed before the kill but not recorded: "
          f"{len(billed_before) - len(recorded)}")
    print(f"  re-sent on resume: {len(resent)} (all of them among those in flight: "
          f"{resent <= in_flight}); resume took {resume_s:.1f} s")
    print(f"  batch after resume: {batch['status']}, {batch['enriched']}/{batch['total']} "
          f"enriched, cost ${batch['cost']:.6f}; billed by the API ${cost_of(billed_all):.6f} "
          f"(the kill cost ${lost:.6f}, {lost / cost_of(billed_all) * 100:.2f}%)")


def cache_twice(n: int, work: Path) -> None:
    inputs = work / "contacts.csv"
    with Simulator(SimulatorConfig.instant()) as sim, SQLiteStore(work / "cache.db") as store:
        store.migrate()
        figures = []
        for run_no in (1, 2):
            requests = sim.stats.requests
            summary = run(
                RunOptions(inputs=[str(inputs)], output=str(work / f"cache{run_no}.csv"),
                           model=MODEL),
                store, api_key=KEY, base_url=sim.base_url,
            )
            figures.append((summary, sim.stats.requests - requests))
    (first, sent1), (second, sent2) = figures
    saved = first.cost - second.cost
    print(f"Cache: the same {n} contacts enriched twice (default --cache-ttl 7d)")
    print(f"  first run:  {sent1} requests, {first.enriched} enriched, {first.cached} cached, "
          f"cost ${first.cost:.6f}")
    print(f"  second run: {sent2} requests, {second.enriched} enriched, {second.cached} cached, "
          f"cost ${second.cost:.6f}")
    print(f"  saved by the cache: ${saved:.6f} "
          f"({saved / first.cost * 100 if first.cost else 0:.1f}% of the first run)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=500)
    parser.add_argument("--ttft", type=float, default=0.3)
    parser.add_argument("--speed", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        kill_and_resume(args.contacts, args.ttft, args.speed, work, args.concurrency)
        cache_twice(args.contacts, work)


if __name__ == "__main__":
    main()
