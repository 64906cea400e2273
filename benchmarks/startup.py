"""Start-up time of the commands cron runs (issue 6): `intel --help`, `intel metrics --json`,
`intel limiter status`, `intel migrate --status`, each the median wall time of N runs as a
subprocess (the installed `intel` script, as cron runs it) on a migrated SQLite store in a
temporary INTEL_HOME. Targets: --help under 0.3 s, metrics --json under 0.5 s.

    python benchmarks/startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = (
    (["--help"], 0.3),
    (["metrics", "--json"], 0.5),
    (["limiter", "status"], None),
    (["migrate", "--status"], None),
)


def intel_command() -> list[str]:
    """The `intel` console script next to this interpreter, else `python -m intel_cli`."""
    script = Path(sys.executable).with_name("intel")
    if script.exists():
        return [str(script)]
    found = shutil.which("intel")
    return [found] if found else [sys.executable, "-m", "intel_cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    intel = intel_command()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("INTEL_", "ANTHROPIC_", "SUPABASE_"))}
        env["INTEL_HOME"] = home
        subprocess.run([*intel, "migrate"], env=env, check=True, capture_output=True)
        print(f"{' '.join(intel)}, {args.runs} runs each, SQLite store in {home}\n")
        print("| command | median | min | max | target |")
        print("|---|---:|---:|---:|---:|")
        for command, target in COMMANDS:
            times = []
            for _ in range(args.runs):
                began = time.perf_counter()
                subprocess.run([*intel, *command], env=env, check=True, capture_output=True)
                times.append(time.perf_counter() - began)
            median = statistics.median(times)
            verdict = "" if target is None else (
                f"< {target} s {'met' if median < target else 'MISSED'}"
            )
            print(f"| intel {' '.join(command)} | {median:.3f} s | {min(times):.3f} s "
                  f"| {max(times):.3f} s | {verdict} |")


if __name__ == "__main__":
    main()
