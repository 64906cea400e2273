"""Peak memory (issue 6): `intel enrich` on 25,000 and 100,000 contacts (is it flat as the input
grows?), and reading a 1,000,000-row CSV (benchmarks/read_memory.py).

The enrichment runs as the real CLI in a child process (`intel enrich FILE -o OUT --quiet
--json` into a SQLite store in a temporary INTEL_HOME) against a simulator at zero latency
and without rate limits that runs in this process, so the child's peak RSS (ru_maxrss from
wait4) is intel's alone: not the simulator's record of what it billed. The CSV reading runs
read_memory.py as a child too and quotes its figures. Target: under 200 MB for 100,000
contacts, and flat as the input grows.

    python benchmarks/memory.py [--sizes 25000,100000] [--read-rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from enrich_baseline import write_contacts  # noqa: E402

from intel_cli.simulator import Simulator, SimulatorConfig  # noqa: E402

HERE = Path(__file__).resolve().parent


def maxrss_mb(usage_kb: int) -> float:
    return usage_kb / (1024 * 1024) if sys.platform == "darwin" else usage_kb / 1024


def enrich_peak(n: int, sim: Simulator, tmp: Path) -> tuple[float, float, dict[str, object]]:
    """(peak RSS MB, wall s, the --json summary) of `intel enrich` on n contacts."""
    inputs = tmp / f"contacts-{n}.csv"
    write_contacts(inputs, n)
    home = tmp / f"home-{n}"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("INTEL_", "ANTHROPIC_", "SUPABASE_"))}
    env.update(INTEL_HOME=str(home), ANTHROPIC_API_KEY="bench-key",
               ANTHROPIC_BASE_URL=sim.base_url)
    command = [sys.executable, "-m", "intel_cli", "enrich", str(inputs),
               "-o", str(tmp / f"out-{n}.csv"), "--quiet", "--json", "--no-cache"]
    out_path, err_path = tmp / f"stdout-{n}.json", tmp / f"stderr-{n}.txt"
    began = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        # wait4, not wait(): it also returns the child's own resource usage
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - began
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"intel enrich failed ({code}): {err_path.read_text()[-2000:]}")
    peak = usage.ru_maxrss
    return maxrss_mb(peak), wall, json.loads(out_path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25000,100000",
                        help="contact counts to enrich, smallest first")
    parser.add_argument("--read-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    table = []
    with tempfile.TemporaryDirectory() as tmp_name, Simulator(SimulatorConfig.instant()) as sim:
        for n in sizes:
            peak, wall, summary = enrich_peak(n, sim, Path(tmp_name))
            table.append((f"intel enrich, {n:,} contacts (simulator at zero latency)", peak,
                          f"{wall:.0f} s, {summary['enriched']:,} enriched, "
                          f"{n / wall:,.0f} contacts/s"))
            print(f"enrich {n:,}: peak RSS {peak:.1f} MB, {wall:.1f} s", flush=True)
            sim.reset()  # forget what was billed: the simulator is not what is measured
    read = subprocess.run(
        [sys.executable, str(HERE / "read_memory.py"), "--rows", str(args.read_rows)],
        capture_output=True, text=True, check=True,
    )
    print(read.stdout.strip(), flush=True)
    after = [line for line in read.stdout.splitlines() if line.startswith("peak RSS after")]
    read_peak = float(after[0].split(":")[1].split("MB")[0]) if after else float("nan")
    table.append((f"reading a {args.read_rows:,}-row CSV (read_memory.py)", read_peak, ""))

    print("\n| what | peak RSS | notes |")
    print("|---|---:|---|")
    for what, peak, notes in table:
        print(f"| {what} | {peak:.0f} MB | {notes} |")
    if len(sizes) > 1:
        small, large = table[0][1], table[len(sizes) - 1][1]
        print(f"\n{sizes[-1]:,} vs {sizes[0]:,} contacts: {large - small:+.1f} MB "
              f"({large / small:.2f}x for {sizes[-1] / sizes[0]:.0f}x the input)")


if __name__ == "__main__":
    main()
