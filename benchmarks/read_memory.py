"""How much memory and time reading a big contact list takes (intel_cli.contacts.read_contacts).

Generates a CSV of N rows (default 1,000,000) in a temp dir, with the mess of a real export
(a tenth of the addresses repeated in another case, some unsubscribed, some without an
address, multi-line notes), iterates every contact through `read_contacts`, and prints the
peak RSS before and after reading and the rows per second.

    python benchmarks/read_memory.py [--rows N] [--no-dedupe]

Reading streams, so the peak grows only with the dedupe index (one 8-byte digest and a row
number per distinct contact), not with the rows themselves.
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from intel_cli.contacts import read_contacts


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def generate(path: Path, rows: int) -> None:
    genres = ["Indie, Alternative", "Dance; Electronic", "Hip-Hop / R&B", "Folk, Americana"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["Name", "Email", "Station", "Role", "Show", "Genres", "Region", "Status", "Notes"]
        )
        for i in range(rows):
            if i % 10 == 9:
                email = f" Person{i - 5}@Station{(i - 5) % 5000}.Example.co.uk "  # a repeat
            elif i % 97 == 0:
                email = ""
            else:
                email = f"person{i}@station{i % 5000}.example.co.uk"
            writer.writerow(
                [
                    f"Person {i}",
                    email,
                    f"Station {i % 5000} FM",
                    "Music Producer" if i % 3 else "Presenter",
                    f"The {i % 700} Show",
                    genres[i % len(genres)],
                    "UK" if i % 2 else "Australia",
                    "Unsubscribed" if i % 13 == 0 else "Subscribed",
                    "Prefers links\nno attachments" if i % 50 == 0 else "",
                ]
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--no-dedupe", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "contacts.csv"
        started = time.perf_counter()
        generate(path, args.rows)
        size_mb = os.path.getsize(path) / (1024 * 1024)
        print(
            f"generated {args.rows:,} rows, {size_mb:.1f} MB, "
            f"in {time.perf_counter() - started:.1f} s"
        )

        baseline = peak_rss_mb()
        started = time.perf_counter()
        counts = {"contacts": 0, "enrichable": 0, "duplicates": 0, "skipped": 0}
        with read_contacts([str(path)], dedupe=not args.no_dedupe) as source:
            opened = time.perf_counter() - started
            for contact in source:
                counts["contacts"] += 1
                if contact.skip_reason:
                    counts["skipped"] += 1
                elif contact.duplicate_of is not None:
                    counts["duplicates"] += 1
                else:
                    counts["enrichable"] += 1
        elapsed = time.perf_counter() - started
        peak = peak_rss_mb()

    print(", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"open (encoding check + header + sample): {opened:.2f} s")
    print(f"read: {elapsed:.1f} s, {counts['contacts'] / elapsed:,.0f} rows/s")
    print(f"peak RSS before reading: {baseline:.1f} MB")
    print(f"peak RSS after reading:  {peak:.1f} MB (+{peak - baseline:.1f} MB)")


if __name__ == "__main__":
    main()
