"""SPEC 2.3's metric definitions against hand-computed figures, on every backend.

Every expected number below was worked out by hand from the fixture, with
rounding half away from zero; the cases are chosen so that float sums or
banker's rounding would give a different answer.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest

from intel_cli.stores.base import BatchTotals, ContactResult, Store
from intel_cli.usage import Usage

SINCE = datetime(2026, 3, 1, tzinfo=UTC)
UNTIL = datetime(2026, 3, 2, tzinfo=UTC)
TICK = timedelta(microseconds=1)
SONNET, HAIKU, OPUS = "claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"


def seed(
    store: Store,
    batch_id: str,
    at: datetime,
    *,
    mode: str = "realtime",
    model: str = SONNET,
    status: str = "completed",
    cost: str = "0",
    usage: Usage | None = None,
    **counters: Any,
) -> None:
    """One finalised batch, created at `at`."""
    store.create_batch(batch_id, model_used=model, mode=mode, metadata={}, now=at)
    totals = BatchTotals(status=status, cost=Decimal(cost), usage=usage or Usage(), **counters)
    store.finalise_batch(batch_id, totals, now=at + timedelta(minutes=1))


def results(store: Store, batch_id: str, *specs: tuple[str | None, str]) -> None:
    """intel_results rows for (model, status) pairs, in row order."""
    for index, (model, status) in enumerate(specs):
        store.record_result(
            ContactResult(
                batch_id=batch_id,
                row_index=index,
                contact_key=f"c{index}@{batch_id}.example",
                status=status,
                model=model,
                created_at=SINCE,
            )
        )


def recent_entry(batch_id: str, created_at: str, **values: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "batch_id": batch_id,
        "created_at": created_at,
        "total": 0,
        "enriched": 0,
        "failed": 0,
        "cost": 0.0,
        "success_rate": 0.0,
        "retried": 0,
        "timed_out": 0,
        "cached": 0,
        "skipped": 0,
        "mode": "realtime",
        "status": "completed",
        "model_used": SONNET,
    }
    entry.update(values)
    return entry


def test_an_empty_window_is_all_zeros(store: Store) -> None:
    seed(store, "b_elsewhere", SINCE - timedelta(days=3), total=5, enriched=5, cost="1.5")

    assert store.metrics(SINCE, UNTIL) == {
        "summary": {
            "totalBatches": 0,
            "totalContacts": 0,
            "totalEnriched": 0,
            "totalFailed": 0,
            "totalCost": 0.0,
            "avgSuccessRate": 0.0,
            "avgTimePerContact": 0,
        },
        "tokens": {"totalInput": 0, "totalOutput": 0, "total": 0, "cacheRead": 0, "cacheWrite": 0},
        "modelBreakdown": {},
        "recentBatches": [],
    }
    assert store.metrics_by_day(SINCE, UNTIL) == []
    assert store.metrics_by_model(SINCE, UNTIL) == []


def window_fixture(store: Store) -> None:
    # just outside, on both sides
    seed(store, "b_before", SINCE - TICK, total=100, enriched=100, cost="5", avg_time_ms=9000)
    seed(store, "b_until", UNTIL, total=50, enriched=50, cost="7", avg_time_ms=9000)
    # inside: the since edge is included
    seed(
        store,
        "b_since",
        SINCE,
        total=10,
        enriched=9,
        failed=1,
        retried=2,
        timed_out=1,
        skipped=1,
        cost="0.03",
        avg_time_ms=500,
        usage=Usage(input=1000, output=2000, cache_read=10, cache_write=20),
    )
    seed(
        store,
        "b_mid",
        SINCE + timedelta(hours=10, minutes=30),
        mode="batch",
        model=HAIKU,
        total=4,
        enriched=3,
        failed=1,
        cached=1,
        cost="0.0123456789",
        avg_time_ms=1000,
        usage=Usage(input=400, output=800, cache_write=5),
    )
    # a run that failed before any contact was enriched: counted as a batch, no contacts
    seed(
        store,
        "b_zero",
        SINCE + timedelta(hours=12),
        mode="simulated",
        status="failed",
        skipped=3,
    )
    # the last microsecond inside; no avg_time_ms (counts as 0 in the weighted mean)
    seed(
        store,
        "b_late",
        UNTIL - TICK,
        total=6,
        enriched=6,
        cost="0.00005",
        usage=Usage(input=600, output=900),
    )
    results(
        store,
        "b_since",
        (SONNET, "enriched"),
        (SONNET, "enriched"),
        (HAIKU, "enriched"),
        (SONNET, "failed"),
        (None, "skipped"),
    )
    results(store, "b_mid", (HAIKU, "enriched"), (HAIKU, "cached"))
    results(store, "b_late", (OPUS, "enriched"))
    results(store, "b_before", *[(SONNET, "enriched")] * 5)
    results(store, "b_until", (OPUS, "enriched"), (HAIKU, "enriched"))


def test_metrics_of_a_hand_computed_window(store: Store) -> None:
    window_fixture(store)

    got = store.metrics(SINCE, UNTIL)

    assert got["summary"] == {
        "totalBatches": 4,
        "totalContacts": 20,  # 10 + 4 + 0 + 6
        "totalEnriched": 18,  # 9 + 3 + 0 + 6
        "totalFailed": 2,
        "totalCost": 0.0424,  # 0.03 + 0.0123456789 + 0 + 0.00005 = 0.0423956789
        "avgSuccessRate": 90.0,  # 100 * 18 / 20
        "avgTimePerContact": 450,  # (500*10 + 1000*4 + 0*0 + 0*6) / 20
    }
    assert got["tokens"] == {
        "totalInput": 2000,
        "totalOutput": 3700,
        "total": 5700,
        "cacheRead": 10,
        "cacheWrite": 25,
    }
    # rows of the window's batches with a model; skipped rows have none
    assert got["modelBreakdown"] == {SONNET: 3, HAIKU: 3, OPUS: 1}
    assert got["recentBatches"] == [
        recent_entry(
            "b_late",
            "2026-03-01T23:59:59.999999Z",
            total=6,
            enriched=6,
            cost=0.00005,
            success_rate=100.0,
        ),
        recent_entry(
            "b_zero",
            "2026-03-01T12:00:00.000000Z",
            skipped=3,
            mode="simulated",
            status="failed",
        ),
        recent_entry(
            "b_mid",
            "2026-03-01T10:30:00.000000Z",
            total=4,
            enriched=3,
            failed=1,
            cached=1,
            cost=0.012346,
            success_rate=75.0,
            mode="batch",
            model_used=HAIKU,
        ),
        recent_entry(
            "b_since",
            "2026-03-01T00:00:00.000000Z",
            total=10,
            enriched=9,
            failed=1,
            retried=2,
            timed_out=1,
            skipped=1,
            cost=0.03,
            success_rate=90.0,
        ),
    ]


def test_recent_limits_the_list_newest_first(store: Store) -> None:
    window_fixture(store)

    two = store.metrics(SINCE, UNTIL, recent=2)["recentBatches"]
    none = store.metrics(SINCE, UNTIL, recent=0)

    assert [b["batch_id"] for b in two] == ["b_late", "b_zero"]
    assert none["recentBatches"] == []
    assert none["summary"]["totalBatches"] == 4


def test_the_window_edges_move_batches_in_and_out(store: Store) -> None:
    window_fixture(store)

    shifted = store.metrics(SINCE - TICK, UNTIL - TICK)["summary"]
    single = store.metrics(SINCE, SINCE + TICK)["summary"]

    # b_before comes in, b_late drops out
    assert (shifted["totalBatches"], shifted["totalContacts"]) == (4, 10 + 4 + 0 + 100)
    assert (single["totalBatches"], single["totalContacts"], single["totalCost"]) == (1, 10, 0.03)


# --- rounding: half away from zero, from exact sums --------------------------------------------


def test_success_rate_rounds_half_up(store: Store) -> None:
    # 100 * 1 / 800 = 0.125 exactly: half-up 0.13, banker's and float round() give 0.12
    seed(store, "b_1", SINCE, total=800, enriched=1, failed=799)

    got = store.metrics(SINCE, UNTIL)

    assert got["summary"]["avgSuccessRate"] == 0.13
    assert got["recentBatches"][0]["success_rate"] == 0.13


def test_total_cost_is_an_exact_sum_rounded_half_up(store: Store) -> None:
    # 0.00002 + 0.00003 = 0.00005 exactly -> 0.0001 (banker's rounding would give 0.0)
    seed(store, "b_1", SINCE, total=1, enriched=1, cost="0.00002")
    seed(store, "b_2", SINCE + TICK, total=1, enriched=1, cost="0.00003")
    # float(0.00015) is 0.000149999..., so a float round gives 0.0001; exact half-up gives 0.0002
    seed(store, "b_3", SINCE + timedelta(days=1, hours=1), total=1, enriched=1, cost="0.00015")

    first_day = store.metrics(SINCE, UNTIL)["summary"]["totalCost"]
    second_day = store.metrics(UNTIL, UNTIL + timedelta(days=1))["summary"]["totalCost"]

    assert (first_day, second_day) == (0.0001, 0.0002)


def test_many_small_costs_sum_without_float_drift(store: Store) -> None:
    # 25 x 0.00003 is exactly 0.00075 -> 0.0008; summed as floats it is 0.000749999... -> 0.0007
    for index in range(25):
        seed(store, f"b_{index}", SINCE + index * TICK, total=1, enriched=1, cost="0.00003")

    got = store.metrics(SINCE, UNTIL)["summary"]["totalCost"]
    by_day = store.metrics_by_day(SINCE, UNTIL)

    assert got == 0.0008
    assert by_day[0]["cost"] == 0.00075


def test_recent_batch_cost_rounds_half_up_to_six_places(store: Store) -> None:
    seed(store, "b_up", SINCE, total=1, enriched=1, cost="0.0000125")
    seed(store, "b_down", SINCE + TICK, total=1, enriched=1, cost="0.0000124999")

    recent = {b["batch_id"]: b["cost"] for b in store.metrics(SINCE, UNTIL)["recentBatches"]}

    assert recent == {"b_up": 0.000013, "b_down": 0.000012}


def test_average_time_is_weighted_by_contacts_and_rounds_half_up(store: Store) -> None:
    seed(store, "b_1", SINCE, total=1, enriched=1, avg_time_ms=100)
    seed(store, "b_2", SINCE + TICK, total=1, enriched=1, avg_time_ms=101)
    # no latency recorded counts as 0 ms: (0*2 + 301*2) / 4 = 150.5 -> 151
    day2 = UNTIL
    seed(store, "b_3", day2, total=2, enriched=2)
    seed(store, "b_4", day2 + TICK, total=2, enriched=2, avg_time_ms=301)

    first = store.metrics(SINCE, UNTIL)["summary"]["avgTimePerContact"]
    second = store.metrics(day2, day2 + timedelta(days=1))["summary"]["avgTimePerContact"]

    assert (first, second) == (101, 151)  # 201 / 2 = 100.5 -> 101


def test_zero_total_batches_only(store: Store) -> None:
    seed(store, "b_1", SINCE, status="failed", avg_time_ms=700)
    seed(store, "b_2", SINCE + TICK, status="interrupted", skipped=4)

    summary = store.metrics(SINCE, UNTIL)["summary"]

    assert summary == {
        "totalBatches": 2,
        "totalContacts": 0,
        "totalEnriched": 0,
        "totalFailed": 0,
        "totalCost": 0.0,
        "avgSuccessRate": 0.0,
        "avgTimePerContact": 0,
    }


# --- more than a thousand batches --------------------------------------------------------------


def test_more_than_a_thousand_batches(store: Store) -> None:
    count = 1_003
    base = SINCE + timedelta(hours=1)
    expected_cost = Decimal(0)
    contacts = enriched = weighted = 0
    for i in range(count):
        # the last three share one timestamp: ties go to the later-created (higher id) batch
        at = base + timedelta(seconds=min(i, count - 3))
        total, ok = i % 7, min(i % 7, i % 5)
        cost = Decimal(i) * Decimal("0.0000001234")
        seed(
            store,
            f"b_{i:04d}",
            at,
            total=total,
            enriched=ok,
            failed=total - ok,
            cost=str(cost),
            avg_time_ms=300 + i % 11,
            usage=Usage(input=100 * total, output=40 * total),
        )
        expected_cost += cost
        contacts += total
        enriched += ok
        weighted += (300 + i % 11) * total

    got = store.metrics(SINCE, UNTIL)

    summary = got["summary"]
    assert summary["totalBatches"] == count
    assert summary["totalContacts"] == contacts
    assert summary["totalEnriched"] == enriched
    assert summary["totalFailed"] == contacts - enriched
    assert summary["totalCost"] == float(
        expected_cost.quantize(Decimal("0.0001"), rounding=ROUND_HALF_UP)
    )
    assert summary["avgSuccessRate"] == float(
        (Decimal(100 * enriched) / contacts).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    )
    assert summary["avgTimePerContact"] == int(
        (Decimal(weighted) / contacts).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    )
    assert got["tokens"]["totalInput"] == 100 * contacts
    assert got["tokens"]["total"] == 140 * contacts
    assert [b["batch_id"] for b in got["recentBatches"]] == [
        f"b_{i:04d}" for i in range(count - 1, count - 11, -1)
    ]

    # a sub-window: batches 100..899 by creation second
    part = store.metrics(base + timedelta(seconds=100), base + timedelta(seconds=900))
    assert part["summary"]["totalBatches"] == 800
    assert part["summary"]["totalContacts"] == sum(i % 7 for i in range(100, 900))


# --- by day and by model -----------------------------------------------------------------------


def test_metrics_by_day_groups_on_the_utc_date(store: Store) -> None:
    seed(store, "b_1", SINCE, total=4, enriched=3, failed=1, cost="0.0100000001")
    seed(store, "b_2", UNTIL - TICK, total=4, enriched=4, cost="0.02")
    seed(store, "b_3", UNTIL, total=800, enriched=1, failed=799, cost="0.0000005")
    seed(store, "b_4", UNTIL + timedelta(days=1), total=9, enriched=9, cost="1")  # outside

    got = store.metrics_by_day(SINCE, UNTIL + timedelta(days=1))

    assert got == [
        {
            "day": "2026-03-01",
            "batches": 2,
            "contacts": 8,
            "enriched": 7,
            "failed": 1,
            "cost": 0.03,
            "success_rate": 87.5,
        },
        {
            "day": "2026-03-02",
            "batches": 1,
            "contacts": 800,
            "enriched": 1,
            "failed": 799,
            "cost": 0.000001,  # 0.0000005 half-up
            "success_rate": 0.13,
        },
    ]


def test_metrics_by_model_counts_result_rows_of_the_window(store: Store) -> None:
    seed(store, "b_in", SINCE, total=4, enriched=3)
    seed(store, "b_out", UNTIL, total=1, enriched=1)
    rows = [
        (SONNET, "enriched", Usage(100, 50, 5, 1), "0.001"),
        (SONNET, "cached", Usage(), "0"),
        (SONNET, "failed", Usage(80, 0), "0.0000005"),
        (HAIKU, "enriched", Usage(60, 20), "0.0002"),
        (None, "skipped", Usage(), "0"),
    ]
    for index, (model, status, usage, cost) in enumerate(rows):
        store.record_result(
            ContactResult(
                batch_id="b_in",
                row_index=index,
                contact_key=f"k{index}",
                status=status,
                model=model,
                usage=usage,
                cost=Decimal(cost),
                created_at=SINCE,
            )
        )
    results(store, "b_out", (SONNET, "enriched"), (OPUS, "enriched"))

    got = store.metrics_by_model(SINCE, UNTIL)

    assert got == [
        {
            "model": SONNET,
            "contacts": 3,
            "enriched": 2,  # cached results are enriched contacts
            "input_tokens": 180,
            "output_tokens": 50,
            "cache_read_tokens": 5,
            "cache_write_tokens": 1,
            "cost": 0.001001,  # 0.0010005 half-up (banker's: 0.001000)
        },
        {
            "model": HAIKU,
            "contacts": 1,
            "enriched": 1,
            "input_tokens": 60,
            "output_tokens": 20,
            "cache_read_tokens": 0,
            "cache_write_tokens": 0,
            "cost": 0.0002,
        },
    ]


@pytest.mark.parametrize("recent", [1, 10, 50])
def test_recent_never_exceeds_the_window(store: Store, recent: int) -> None:
    for index in range(5):
        seed(store, f"b_{index}", SINCE + index * TICK, total=1, enriched=1)

    got = store.metrics(SINCE, UNTIL, recent=recent)["recentBatches"]

    assert len(got) == min(recent, 5)
    assert got[0]["batch_id"] == "b_4"
