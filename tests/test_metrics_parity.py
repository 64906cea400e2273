"""SQLite and PostgreSQL publish the same metrics for the same data (issue 4, SPEC 2.3).

The same seeded random batches (more than 1,000: zero-total batches, batches exactly on
window edges, several models, costs with 10 decimals, rounding ties) go into both stores
through the Store interface; every window must give byte-identical JSON on both, and the
whole-range figures must match sums done here in Python.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

from intel_cli.stores.base import BatchTotals, ContactResult, Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage
from tests.conftest import postgres_url
from tests.pg import fresh_postgres_store

pytestmark = pytest.mark.postgres

START = datetime(2026, 1, 1, tzinfo=UTC)
DAYS = 40
N_RANDOM = 1_100
MODELS = ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1")
MODES = ("realtime", "batch", "simulated")
STATUSES = ("completed", "interrupted", "rate_limited", "over_budget", "failed", "running")
# window edges that batches sit on exactly (since is in the window, until is not)
EDGE_SINCE = START + timedelta(days=10, hours=6, microseconds=250_000)
EDGE_UNTIL = START + timedelta(days=11, hours=6, microseconds=250_000)
TIES = START + timedelta(days=DAYS + 5)  # a day after the random ones: only the rounding ties


@dataclass
class Seed:
    batch_id: str
    created_at: datetime
    model: str
    mode: str
    totals: BatchTotals
    results: list[ContactResult]


def random_cost(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(0, 5 * 10**9)).scaleb(-10)  # 0 .. 0.5 USD, 10 decimals


def make_batch(rng: random.Random, batch_id: str, created_at: datetime) -> Seed:
    model = rng.choice(MODELS)
    total = 0 if rng.random() < 0.08 else rng.randint(1, 6)
    enriched = rng.randint(0, total)
    results = []
    for row in range(total):
        ok = row < enriched
        results.append(
            ContactResult(
                batch_id=batch_id,
                row_index=row,
                contact_key=f"c{rng.randrange(500)}@example.com",
                status="enriched" if ok else rng.choice(("failed", "timed_out")),
                # a routed contact uses the fast model; a few rows were never sent
                model=None if rng.random() < 0.05 else rng.choice((model, MODELS[1])),
                usage=Usage(rng.randint(0, 3000), rng.randint(0, 900), rng.randint(0, 50), 0),
                cost=random_cost(rng),
                latency_ms=rng.randint(50, 20_000),
                attempts=rng.randint(1, 3),
                intel={"platform": "x"} if ok else None,
                prompt_version="p1",
                created_at=created_at + timedelta(seconds=row),
            )
        )
    if rng.random() < 0.3:  # skipped rows: stored, counted, but no model
        results.append(
            ContactResult(batch_id=batch_id, row_index=total, contact_key=None, status="skipped")
        )
    totals = BatchTotals(
        status=rng.choice(STATUSES),
        total=total,
        enriched=enriched,
        failed=total - enriched,
        retried=rng.randint(0, total),
        timed_out=rng.randint(0, total - enriched),
        cached=rng.randint(0, enriched),
        skipped=rng.randint(0, 2),
        cost=sum((r.cost for r in results), Decimal(0)),
        avg_time_ms=None if rng.random() < 0.1 else rng.randint(80, 25_000),
        usage=sum((r.usage for r in results), Usage()),
    )
    return Seed(batch_id, created_at, model, rng.choice(MODES), totals, results)


def tie_batch(batch_id: str, at: datetime, **values: Any) -> Seed:
    """A hand-made batch whose figures land exactly on a rounding tie."""
    totals = BatchTotals(status="completed", **values)
    return Seed(batch_id, at, MODELS[0], "realtime", totals, [])


def seeds() -> list[Seed]:
    rng = random.Random(20260301)
    out: list[Seed] = []
    for i in range(N_RANDOM):
        at = START + timedelta(microseconds=rng.randrange(DAYS * 86_400 * 10**6))
        out.append(make_batch(rng, f"b_rand_{i:05d}", at))
    # on the edges: two exactly at since (in), two exactly at until (out), one just before each
    for n, at in enumerate(
        (
            EDGE_SINCE,
            EDGE_SINCE,
            EDGE_UNTIL,
            EDGE_UNTIL,
            EDGE_SINCE - timedelta(microseconds=1),
            EDGE_UNTIL - timedelta(microseconds=1),
        )
    ):
        out.append(make_batch(rng, f"b_edge_{n}", at))
    # ties: 0.125 % success, cost x.xxxxx5 at 4 and 6 places, 2.5 ms average time (half-even
    # rounding, Python's and float's default, would give 0.12, 0.0000, 0.123456 and 2)
    out += [
        tie_batch("b_tie_rate", TIES, total=800, enriched=1, failed=799,
                  cost=Decimal("0.0000500000"), avg_time_ms=1),
        tie_batch("b_tie_cost", TIES + timedelta(hours=1), total=1, enriched=1,
                  cost=Decimal("0.1234565000"), avg_time_ms=2),
        tie_batch("b_tie_time", TIES + timedelta(hours=2), total=1, enriched=0, failed=1,
                  cost=Decimal("0.0000000001"), avg_time_ms=3),
    ]
    return out


def fill(store: Store, data: list[Seed]) -> None:
    for seed in data:
        store.create_batch(
            seed.batch_id,
            model_used=seed.model,
            mode=seed.mode,
            metadata={"seeded": True},
            total=seed.totals.total,
            now=seed.created_at,
        )
        for result in seed.results:
            store.record_result(result)
        store.finalise_batch(seed.batch_id, seed.totals, now=seed.created_at)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Store, list[Seed]]]:
    url = postgres_url()
    assert url is not None
    data = seeds()
    sqlite = SQLiteStore(Path(tmp_path_factory.mktemp("parity")) / "parity.db")
    sqlite.migrate()
    pg = fresh_postgres_store(url)
    try:
        fill(sqlite, data)
        fill(pg, data)
        yield sqlite, pg, data
    finally:
        sqlite.close()
        pg.close()


WINDOWS = [
    pytest.param(START - timedelta(days=1), START + timedelta(days=DAYS + 9), 10, id="everything"),
    pytest.param(EDGE_SINCE, EDGE_UNTIL, 10, id="24h-on-the-edges"),
    pytest.param(EDGE_SINCE, EDGE_UNTIL, 2000, id="24h-all-recent"),
    pytest.param(START + timedelta(days=3), START + timedelta(days=10), 5, id="a-week"),
    pytest.param(START + timedelta(days=7, hours=9), START + timedelta(days=7, hours=10), 10,
                 id="an-hour"),
    pytest.param(TIES, TIES + timedelta(hours=1), 10, id="tie-rate-and-cost-4dp"),
    pytest.param(TIES + timedelta(hours=1), TIES + timedelta(hours=2), 10, id="tie-cost-6dp"),
    pytest.param(TIES, TIES + timedelta(hours=3), 0, id="ties-no-recent"),
    pytest.param(TIES + timedelta(hours=1), TIES + timedelta(hours=3), 10, id="tie-time"),
    pytest.param(START - timedelta(days=9), START - timedelta(days=1), 10, id="empty"),
]


def as_json(value: Any) -> str:
    """Types and key order matter too: `metrics --json` must read the same on both."""
    return json.dumps(value, default=str)


@pytest.mark.parametrize(("since", "until", "recent"), WINDOWS)
def test_metrics_are_identical_on_sqlite_and_postgres(
    stores: tuple[Store, Store, list[Seed]], since: datetime, until: datetime, recent: int
) -> None:
    sqlite, pg, _ = stores
    assert as_json(pg.metrics(since, until, recent)) == as_json(
        sqlite.metrics(since, until, recent)
    )
    assert as_json(pg.metrics_by_day(since, until)) == as_json(sqlite.metrics_by_day(since, until))
    assert as_json(pg.metrics_by_model(since, until)) == as_json(
        sqlite.metrics_by_model(since, until)
    )


def half_up(value: Decimal, places: int) -> float:
    return float(value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def test_the_shared_figures_are_the_definitions(stores: tuple[Store, Store, list[Seed]]) -> None:
    """Both could agree and both be wrong: check the 24 h edge window against Python sums."""
    _, pg, data = stores
    window = [s for s in data if EDGE_SINCE <= s.created_at < EDGE_UNTIL]
    contacts = sum(s.totals.total for s in window)
    enriched = sum(s.totals.enriched for s in window)
    weighted = sum((s.totals.avg_time_ms or 0) * s.totals.total for s in window)
    models = Counter(r.model for s in window for r in s.results if r.model is not None)

    m = pg.metrics(EDGE_SINCE, EDGE_UNTIL, 3)

    assert sum(1 for s in window if s.batch_id.startswith("b_edge_")) == 3
    assert m["summary"] == {
        "totalBatches": len(window),
        "totalContacts": contacts,
        "totalEnriched": enriched,
        "totalFailed": sum(s.totals.failed for s in window),
        "totalCost": half_up(sum((s.totals.cost for s in window), Decimal(0)), 4),
        "avgSuccessRate": half_up(Decimal(100 * enriched) / contacts, 2) if contacts else 0.0,
        "avgTimePerContact": int(half_up(Decimal(weighted) / contacts, 0)) if contacts else 0,
    }
    assert m["tokens"]["totalInput"] == sum(s.totals.usage.input for s in window)
    assert m["tokens"]["total"] == sum(s.totals.usage.input + s.totals.usage.output for s in window)
    assert m["modelBreakdown"] == dict(models)
    # newest first; equal times: the later insert first
    order = {s.batch_id: i for i, s in enumerate(data)}
    newest = sorted(window, key=lambda s: (s.created_at, order[s.batch_id]), reverse=True)[:3]
    assert [b["batch_id"] for b in m["recentBatches"]] == [s.batch_id for s in newest]


def test_the_ties_round_half_away_from_zero(stores: tuple[Store, Store, list[Seed]]) -> None:
    sqlite, pg, _ = stores
    for store in (sqlite, pg):
        rate = store.metrics(TIES, TIES + timedelta(hours=1))
        assert rate["summary"]["avgSuccessRate"] == 0.13  # 0.125
        assert rate["summary"]["totalCost"] == 0.0001  # 0.00005
        cost = store.metrics(TIES + timedelta(hours=1), TIES + timedelta(hours=2))
        assert cost["recentBatches"][0]["cost"] == 0.123457  # 0.1234565
        time = store.metrics(TIES + timedelta(hours=1), TIES + timedelta(hours=3))
        assert time["summary"]["avgTimePerContact"] == 3  # (2*1 + 3*1) / 2 = 2.5
        assert time["summary"]["totalCost"] == 0.1235  # 0.1234565001


def test_enough_data_went_in(stores: tuple[Store, Store, list[Seed]]) -> None:
    sqlite, pg, data = stores
    everything = (START - timedelta(days=1), START + timedelta(days=DAYS + 9))
    assert len(data) > 1_000
    for store in (sqlite, pg):
        summary = store.metrics(*everything)["summary"]
        assert summary["totalBatches"] == len(data)
        assert len(store.metrics(*everything)["modelBreakdown"]) == len(MODELS)
    zero_total = [s for s in data if s.totals.total == 0]
    assert len(zero_total) > 20
