"""How long `intel metrics` takes on a big store (issue 6): the store's `metrics()` call (the
summary, tokens, model breakdown and recent batches that `intel metrics` prints) over a 24 h
and a 365 d window, at 10,000, 100,000 and 1,000,000 batches, on SQLite and on PostgreSQL.

The batches are spread evenly over the last 400 days (so a 24 h window holds about 1/400 of
them: 2,500 at 1M) with one result row each (the model breakdown joins the results), and
inserted oldest first within each growth step, as a store gains them. The
store is filled once and grown between sizes (SQLite executemany, PostgreSQL COPY), each
backend migrated by its own migrations. Times are the median of --repeat calls after one
warm-up call.

    python benchmarks/metrics_query.py [--sizes 10000,100000,1000000] [--repeat 5]

PostgreSQL runs when INTEL_TEST_POSTGRES_URL is set (in a schema of its own, dropped after);
without it, it is skipped with a note.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore

SPREAD_DAYS = 400
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
STATUSES = ("completed",) * 8 + ("failed", "interrupted")
_LOG_COLUMNS = (
    "created_at", "batch_id", "total", "enriched", "failed", "retried", "timed_out", "cached",
    "skipped", "cost", "avg_time_ms", "input_tokens", "output_tokens", "model_used", "mode",
    "status", "finished_at", "metadata",
)
_RESULT_COLUMNS = (
    "batch_id", "row_index", "contact_key", "status", "model", "input_tokens",
    "output_tokens", "cost", "latency_ms", "attempts", "created_at",
)


def rows(start: int, stop: int, now: datetime, rng: random.Random
         ) -> Iterator[tuple[tuple[object, ...], tuple[object, ...]]]:
    """(intel_logs row, intel_results row) for batches start..stop-1, oldest first within
    the chunk (a store gains its batches in time order; three chunks interleave)."""
    offsets = sorted((rng.uniform(0, SPREAD_DAYS * 86400) for _ in range(start, stop)),
                     reverse=True)
    for i, offset in zip(range(start, stop), offsets, strict=True):
        created = now - timedelta(seconds=offset)
        total = rng.randint(0, 500)
        enriched = rng.randint(0, total)
        model = MODELS[i % len(MODELS)]
        cost = f"{rng.uniform(0, 5):.6f}"
        batch_id = f"b_bench_{i:08d}"
        log = (created, batch_id, total, enriched, total - enriched, total // 10, total // 20,
               0, rng.randint(0, 5), cost, rng.randint(800, 9000), total * 2000, total * 300,
               model, "realtime", STATUSES[i % len(STATUSES)], created, "{}")
        result = (batch_id, 0, f"c{i}@example.com", "enriched", model, 2000, 300,
                  "0.0105", 3000, 1, created)
        yield log, result


def sqlite_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill_sqlite(path: Path, start: int, stop: int, now: datetime, rng: random.Random) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        logs, results = [], []
        for log, result in rows(start, stop, now, rng):
            logs.append((sqlite_text(log[0]), *log[1:16], sqlite_text(log[16]), log[17]))
            results.append((*result[:10], sqlite_text(result[10])))
        with conn:
            conn.executemany(
                f"INSERT INTO intel_logs ({', '.join(_LOG_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_LOG_COLUMNS))})", logs)
            conn.executemany(
                f"INSERT INTO intel_results ({', '.join(_RESULT_COLUMNS)}) "
                f"VALUES ({', '.join('?' * len(_RESULT_COLUMNS))})", results)
        conn.execute("ANALYZE")
    finally:
        conn.close()


def fill_postgres(url: str, start: int, stop: int, now: datetime, rng: random.Random) -> None:
    import psycopg

    with psycopg.connect(url) as conn, conn.cursor() as cur:
        batch = list(rows(start, stop, now, rng))
        with cur.copy(f"COPY intel_logs ({', '.join(_LOG_COLUMNS)}) FROM STDIN") as copy:
            for log, _ in batch:
                copy.write_row(log)
        with cur.copy(f"COPY intel_results ({', '.join(_RESULT_COLUMNS)}) FROM STDIN") as copy:
            for _, result in batch:
                copy.write_row(result)
        conn.commit()
        cur.execute("ANALYZE intel_logs")
        cur.execute("ANALYZE intel_results")
        conn.commit()


def timed(call: Callable[[], object], repeat: int) -> float:
    """Median milliseconds of `repeat` calls, after one warm-up."""
    call()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def measure(store: Store, now: datetime, repeat: int) -> dict[str, float]:
    figures = {}
    for label, days in (("24 h", 1), ("365 d", 365)):
        since = now - timedelta(days=days)
        figures[label] = timed(lambda since=since: store.metrics(since, now), repeat)
    return figures


def search_path_url(url: str, schema: str) -> str:
    parts = urlsplit(url)
    option = "options=" + quote(f"-csearch_path={schema}", safe="")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit(parts._replace(query=query))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    now = datetime.now(UTC)
    table: list[tuple[str, int, dict[str, float]]] = []

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "metrics.db"
        with SQLiteStore(path) as store:
            store.migrate()
        rng, have = random.Random(1), 0
        for size in sizes:
            began = time.perf_counter()
            fill_sqlite(path, have, size, now, rng)
            have = size
            print(f"sqlite: {size:,} batches (filled in {time.perf_counter() - began:.1f} s)",
                  flush=True)
            with SQLiteStore(path) as store:
                figures = measure(store, now, args.repeat)
            table.append(("SQLite", size, figures))
            print(f"  24 h {figures['24 h']:.1f} ms, 365 d {figures['365 d']:.1f} ms",
                  flush=True)

    admin = os.environ.get("INTEL_TEST_POSTGRES_URL")
    if not admin:
        print("postgresql: skipped (set INTEL_TEST_POSTGRES_URL to include it)")
    else:
        import psycopg
        from psycopg import sql

        from intel_cli.stores.postgres import PostgresStore

        schema = f"intel_bench_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        url = search_path_url(admin, schema)
        try:
            with PostgresStore(url) as store:
                store.migrate()
            rng, have = random.Random(1), 0
            for size in sizes:
                began = time.perf_counter()
                fill_postgres(url, have, size, now, rng)
                have = size
                print(f"postgresql: {size:,} batches (filled in "
                      f"{time.perf_counter() - began:.1f} s)", flush=True)
                with PostgresStore(url) as store:
                    figures = measure(store, now, args.repeat)
                table.append(("PostgreSQL", size, figures))
                print(f"  24 h {figures['24 h']:.1f} ms, 365 d {figures['365 d']:.1f} ms",
                      flush=True)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )

    print("\n| store | batches | 24 h window | 365 d window |")
    print("|---|---:|---:|---:|")
    for backend, size, figures in table:
        print(f"| {backend} | {size:,} | {figures['24 h']:.1f} ms | {figures['365 d']:.1f} ms |")


if __name__ == "__main__":
    main()
