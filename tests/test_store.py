"""The store contract, run on every backend through the parametrised `store` fixture.

Only the Store interface is used here, so the same tests hold SQLite and
PostgreSQL (and any later backend) to one behaviour.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from intel_cli.errors import BatchExists
from intel_cli.stores.base import BatchTotals, ContactResult, Store
from intel_cli.usage import Usage

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
INTEL = {"platform": "BBC Radio 6 Music", "genres": ["indie", "alt"], "confidence": "High"}


def new_batch(store: Store, batch_id: str = "b_1", *, at: datetime = T0, **kwargs: Any) -> None:
    options: dict[str, Any] = {"model_used": "claude-sonnet-4-5", "mode": "realtime"}
    options.update(kwargs)
    options.setdefault("metadata", {"input": "contacts.csv"})
    store.create_batch(batch_id, now=at, **options)


def result(batch_id: str = "b_1", row_index: int = 0, **kwargs: Any) -> ContactResult:
    values: dict[str, Any] = {
        "contact_key": f"person{row_index}@example.com",
        "status": "enriched",
        "model": "claude-sonnet-4-5",
        "usage": Usage(input=1200, output=350, cache_read=40, cache_write=7),
        "cost": Decimal("0.0089123456"),
        "latency_ms": 812,
        "attempts": 1,
        "intel": INTEL,
        "raw_usage": [{"input_tokens": 1200, "output_tokens": 350}],
        "prompt_version": "p1",
        "created_at": T0 + timedelta(seconds=5),
    }
    values.update(kwargs)
    return ContactResult(batch_id=batch_id, row_index=row_index, **values)


# --- batches --------------------------------------------------------------------------------


def test_create_batch_round_trips_through_get_batch(store: Store) -> None:
    at = T0 + timedelta(microseconds=123456)
    new_batch(store, "b_round", at=at, total=12, skipped=3, metadata={"input": "a.csv", "n": 2})

    row = store.get_batch("b_round")

    assert row is not None
    assert row["batch_id"] == "b_round"
    assert row["created_at"] == at
    assert row["created_at"].utcoffset() == timedelta(0)
    assert row["status"] == "running"
    assert row["mode"] == "realtime"
    assert row["model_used"] == "claude-sonnet-4-5"
    assert (row["total"], row["skipped"], row["enriched"], row["failed"]) == (12, 3, 0, 0)
    assert row["cost"] == Decimal(0)
    assert row["finished_at"] is None
    assert row["metadata"] == {"input": "a.csv", "n": 2}
    assert isinstance(row["id"], int)


def test_get_batch_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.get_batch("b_nope") is None
    assert store.batch_results("b_nope") == []


def test_a_batch_id_can_only_be_created_once(store: Store) -> None:
    new_batch(store, "b_dup", metadata={"first": True})

    with pytest.raises(BatchExists) as caught:
        new_batch(store, "b_dup", metadata={"first": False}, mode="batch")

    assert "b_dup" in str(caught.value)
    assert "--resume b_dup" in str(caught.value)
    row = store.get_batch("b_dup")
    assert row is not None
    assert row["metadata"] == {"first": True}
    assert row["mode"] == "realtime"


def test_secrets_never_reach_stored_metadata(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "sk-ant-api03-supersecretvalue"
    monkeypatch.setenv("ANTHROPIC_API_KEY", key)
    new_batch(store, "b_secret", metadata={"argv": ["enrich", key], "nested": {"k": key}})
    store.finalise_batch(
        "b_secret", BatchTotals(status="failed", metadata={"error": f"bad key {key}"}), now=T0
    )

    row = store.get_batch("b_secret")

    assert row is not None
    assert key not in repr(row["metadata"])
    assert row["metadata"]["argv"][0] == "enrich"


def test_finalise_writes_counters_cost_tokens_status_and_merges_metadata(store: Store) -> None:
    new_batch(store, "b_fin", metadata={"input": "a.csv", "prompt_version": "p1"})
    finished = T0 + timedelta(minutes=3, microseconds=7)
    totals = BatchTotals(
        status="completed",
        total=10,
        enriched=9,
        failed=1,
        retried=2,
        timed_out=1,
        cached=3,
        skipped=4,
        cost=Decimal("0.1234567891"),
        avg_time_ms=640,
        usage=Usage(input=10_000, output=3_000, cache_read=500, cache_write=250),
        metadata={"per_model": {"claude-sonnet-4-5": 10}, "input": "b.csv"},
    )

    store.finalise_batch("b_fin", totals, now=finished)
    row = store.get_batch("b_fin")

    assert row is not None
    assert row["status"] == "completed"
    assert row["finished_at"] == finished
    assert row["created_at"] == T0
    counters = ("total", "enriched", "failed", "retried", "timed_out", "cached", "skipped")
    assert [row[k] for k in counters] == [10, 9, 1, 2, 1, 3, 4]
    assert row["cost"] == Decimal("0.1234567891")
    assert row["avg_time_ms"] == 640
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    assert [row[k] for k in tokens] == [10_000, 3_000, 500, 250]
    assert float(row["success_rate"]) == pytest.approx(90.0)
    assert row["metadata"] == {
        "input": "b.csv",
        "prompt_version": "p1",
        "per_model": {"claude-sonnet-4-5": 10},
    }


def test_success_rate_of_an_empty_batch_is_zero(store: Store) -> None:
    new_batch(store, "b_empty")
    store.finalise_batch("b_empty", BatchTotals(status="completed"), now=T0)

    row = store.get_batch("b_empty")

    assert row is not None
    assert float(row["success_rate"]) == 0.0


def test_finalise_can_run_again_after_a_resume(store: Store) -> None:
    new_batch(store, "b_again")
    store.finalise_batch("b_again", BatchTotals(status="interrupted", total=5, enriched=2), now=T0)
    later = T0 + timedelta(hours=1)
    store.finalise_batch("b_again", BatchTotals(status="completed", total=5, enriched=5), now=later)

    row = store.get_batch("b_again")

    assert row is not None
    assert (row["status"], row["enriched"], row["finished_at"]) == ("completed", 5, later)


# --- per-contact results -----------------------------------------------------------------------


def test_record_result_round_trips_every_column(store: Store) -> None:
    new_batch(store)
    store.record_result(result(row_index=0))

    [row] = store.batch_results("b_1")

    assert row["batch_id"] == "b_1"
    assert row["row_index"] == 0
    assert row["contact_key"] == "person0@example.com"
    assert row["status"] == "enriched"
    assert row["model"] == "claude-sonnet-4-5"
    tokens = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    assert [row[k] for k in tokens] == [1200, 350, 40, 7]
    assert row["cost"] == Decimal("0.0089123456")
    assert (row["latency_ms"], row["attempts"], row["error"]) == (812, 1, None)
    assert row["intel"] == INTEL
    assert row["usage"] == [{"input_tokens": 1200, "output_tokens": 350}]
    assert row["prompt_version"] == "p1"
    assert row["created_at"] == T0 + timedelta(seconds=5)


def test_results_come_back_in_row_order(store: Store) -> None:
    new_batch(store)
    for index in (3, 0, 2, 1):
        store.record_result(result(row_index=index))

    assert [row["row_index"] for row in store.batch_results("b_1")] == [0, 1, 2, 3]


def test_recording_a_row_again_replaces_it(store: Store) -> None:
    new_batch(store)
    store.record_result(result(row_index=4, status="timed_out", intel=None, error="timeout"))
    retried_at = T0 + timedelta(minutes=2)
    store.record_result(result(row_index=4, attempts=2, created_at=retried_at))

    rows = store.batch_results("b_1")

    assert len(rows) == 1
    assert (rows[0]["status"], rows[0]["attempts"], rows[0]["error"]) == ("enriched", 2, None)
    assert rows[0]["intel"] == INTEL
    assert rows[0]["created_at"] == retried_at


def test_a_skipped_row_has_no_model_and_no_intel(store: Store) -> None:
    new_batch(store)
    store.record_result(
        ContactResult(
            batch_id="b_1", row_index=7, contact_key=None, status="skipped", error="missing email"
        )
    )

    [row] = store.batch_results("b_1")

    assert (row["status"], row["model"], row["intel"], row["usage"]) == (
        "skipped",
        None,
        None,
        None,
    )
    assert row["error"] == "missing email"
    assert row["cost"] == Decimal(0)


def test_created_at_defaults_to_now(store: Store) -> None:
    new_batch(store)
    before = datetime.now(UTC)
    store.record_result(result(created_at=None))
    after = datetime.now(UTC)

    [row] = store.batch_results("b_1")

    assert before <= row["created_at"] <= after


def test_results_of_other_batches_stay_apart(store: Store) -> None:
    new_batch(store, "b_a")
    new_batch(store, "b_b")
    store.record_result(result("b_a", 0))
    store.record_result(result("b_b", 0, status="failed", intel=None))

    assert [r["status"] for r in store.batch_results("b_a")] == ["enriched"]
    assert [r["status"] for r in store.batch_results("b_b")] == ["failed"]


def test_the_store_serves_a_thread_other_than_its_creator(store: Store) -> None:
    # the pipeline makes every store call from one dedicated worker thread
    new_batch(store)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for index in range(20):
                store.record_result(result(row_index=index))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()

    assert errors == []
    assert len(store.batch_results("b_1")) == 20


# --- the global limiter ---------------------------------------------------------------------


def test_limiter_is_unset_on_a_new_store(store: Store) -> None:
    assert store.get_limiter() is None
    assert store.reset_limiter() is None


def test_block_sets_the_limiter(store: Store) -> None:
    until = T0 + timedelta(seconds=60)

    state = store.block_limiter(until, reason="429 from Anthropic", set_by="b_1", now=T0)

    assert state.blocked_until == until
    assert (state.reason, state.set_by, state.updated_at) == ("429 from Anthropic", "b_1", T0)
    assert state.active(T0)
    assert store.get_limiter() == state


def test_block_keeps_the_later_of_stored_and_new(store: Store) -> None:
    later = T0 + timedelta(seconds=90)
    store.block_limiter(later, reason="first", set_by="b_1", now=T0)

    kept = store.block_limiter(
        T0 + timedelta(seconds=30), reason="second", set_by="b_2", now=T0 + timedelta(seconds=1)
    )

    assert (kept.blocked_until, kept.reason, kept.set_by) == (later, "first", "b_1")
    assert store.get_limiter() == kept

    latest = T0 + timedelta(seconds=120)
    replaced = store.block_limiter(latest, reason="third", set_by="b_3", now=T0)
    assert (replaced.blocked_until, replaced.reason, replaced.set_by) == (latest, "third", "b_3")


def test_limiter_expires_on_its_own(store: Store) -> None:
    until = T0 + timedelta(seconds=60)
    store.block_limiter(until, reason="429", set_by=None, now=T0)

    state = store.get_limiter()

    assert state is not None
    assert state.active(until - timedelta(microseconds=1))
    assert not state.active(until)
    assert not state.active(until + timedelta(hours=1))


def test_an_expired_block_is_replaced_by_a_new_one(store: Store) -> None:
    store.block_limiter(T0, reason="old", set_by="b_old", now=T0 - timedelta(minutes=1))
    new_until = T0 + timedelta(hours=1, seconds=1)

    state = store.block_limiter(
        new_until, reason="new", set_by="b_new", now=T0 + timedelta(hours=1)
    )

    assert (state.blocked_until, state.set_by) == (new_until, "b_new")


def test_reset_clears_and_returns_what_it_cleared(store: Store) -> None:
    until = T0 + timedelta(seconds=60)
    store.block_limiter(until, reason="429", set_by="b_1", now=T0)

    cleared = store.reset_limiter()

    assert cleared is not None
    assert (cleared.blocked_until, cleared.reason, cleared.set_by) == (until, "429", "b_1")
    after = store.get_limiter()
    assert after is None or not after.active(T0)
    assert store.reset_limiter() is None


def test_limiters_are_kept_per_name(store: Store) -> None:
    store.block_limiter(T0 + timedelta(seconds=5), reason="a", set_by=None, now=T0, name="other")

    assert store.get_limiter() is None
    other = store.get_limiter("other")
    assert other is not None
    assert other.name == "other"


# --- reuse of earlier results (cache) ----------------------------------------------------------


def cache_fixture(store: Store) -> None:
    new_batch(store, "b_old", at=T0 - timedelta(days=10))
    new_batch(store, "b_mid", at=T0 - timedelta(days=2))
    new_batch(store, "b_new", at=T0)
    key = "dj@station.example"
    old_intel = {**INTEL, "platform": "old"}
    mid_intel = {**INTEL, "platform": "mid"}
    store.record_result(
        result("b_old", 0, contact_key=key, intel=old_intel, created_at=T0 - timedelta(days=10))
    )
    store.record_result(
        result("b_mid", 0, contact_key=key, intel=mid_intel, created_at=T0 - timedelta(days=2))
    )
    # newer rows that must never be served from the cache
    later = T0 + timedelta(minutes=1)
    store.record_result(
        result("b_new", 0, contact_key=key, status="failed", intel=None, created_at=later)
    )
    store.record_result(result("b_new", 1, contact_key=key, status="cached", created_at=later))
    store.record_result(result("b_new", 2, contact_key=key, prompt_version="p2", created_at=later))
    store.record_result(
        result("b_new", 3, contact_key=key, model="claude-haiku-4-5", created_at=later)
    )
    store.record_result(result("b_new", 4, contact_key="other@x.example", created_at=later))


def test_find_cached_returns_the_newest_enriched_match(store: Store) -> None:
    cache_fixture(store)

    hit = store.find_cached(
        "dj@station.example",
        prompt_version="p1",
        model="claude-sonnet-4-5",
        since=T0 - timedelta(days=7),
    )

    assert hit is not None
    assert hit["intel"]["platform"] == "mid"
    assert hit["batch_id"] == "b_mid"
    assert hit["status"] == "enriched"


def test_find_cached_respects_the_window(store: Store) -> None:
    cache_fixture(store)
    key, model = "dj@station.example", "claude-sonnet-4-5"

    on_edge = store.find_cached(key, prompt_version="p1", model=model, since=T0 - timedelta(days=2))
    past_edge = store.find_cached(
        key, prompt_version="p1", model=model, since=T0 - timedelta(days=2, microseconds=-1)
    )
    wide = store.find_cached(key, prompt_version="p1", model=model, since=T0 - timedelta(days=30))

    assert on_edge is not None and on_edge["batch_id"] == "b_mid"
    assert past_edge is None
    assert wide is not None and wide["batch_id"] == "b_mid"


def test_find_cached_matches_prompt_version_and_model(store: Store) -> None:
    cache_fixture(store)
    since = T0 - timedelta(days=30)
    key = "dj@station.example"

    p2 = store.find_cached(key, prompt_version="p2", model="claude-sonnet-4-5", since=since)
    haiku = store.find_cached(key, prompt_version="p1", model="claude-haiku-4-5", since=since)

    assert p2 is not None and (p2["batch_id"], p2["row_index"]) == ("b_new", 2)
    assert haiku is not None and (haiku["batch_id"], haiku["row_index"]) == ("b_new", 3)
    assert (
        store.find_cached(key, prompt_version="p3", model="claude-sonnet-4-5", since=since) is None
    )
    assert store.find_cached(key, prompt_version="p1", model="claude-opus-4", since=since) is None
    assert (
        store.find_cached(
            "nobody@x.example", prompt_version="p1", model="claude-sonnet-4-5", since=since
        )
        is None
    )


# --- streaming a big batch (issue 6) ----------------------------------------------------------


def test_record_results_writes_every_row_and_replaces_existing_ones(store: Store) -> None:
    new_batch(store)
    store.record_result(result(row_index=1, status="failed", intel=None, error="boom"))
    store.record_results(
        [result(row_index=i, status="skipped", model=None, intel=None, error="opted out",
                usage=Usage(), cost=Decimal(0), raw_usage=None) for i in (4, 1, 0)]
        + [result(row_index=2)]
    )
    rows = store.batch_results("b_1")
    assert [(r["row_index"], r["status"], r["error"]) for r in rows] == [
        (0, "skipped", "opted out"),
        (1, "skipped", "opted out"),  # replaced, not duplicated
        (2, "enriched", None),
        (4, "skipped", "opted out"),
    ]
    assert rows[2]["intel"] == INTEL and rows[2]["cost"] == Decimal("0.0089123456")
    store.record_results([])  # nothing to write is not an error
    assert len(store.batch_results("b_1")) == 4


def test_record_results_is_all_or_nothing(store: Store) -> None:
    new_batch(store)
    with pytest.raises(ValueError, match="unknown result status"):
        store.record_results([result(row_index=0), result(row_index=1, status="bogus")])
    assert store.batch_results("b_1") == []


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7])
def test_iter_results_streams_the_rows_in_order_a_page_at_a_time(
    store: Store, n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from intel_cli.stores import postgres, sqlite

    # 3 rows a page: n = 6 ends on a page boundary, 7 just past one
    monkeypatch.setattr(sqlite, "RESULTS_PAGE", 3)
    monkeypatch.setattr(postgres, "RESULTS_PAGE", 3)
    new_batch(store)
    new_batch(store, "b_2")
    indices = [i * 2 for i in range(n)]  # gaps, as skipped duplicates leave
    store.record_results([result(row_index=i) for i in reversed(indices)])
    store.record_results([result("b_2", row_index=i) for i in range(5)])  # another batch
    rows = store.iter_results("b_1")
    assert not isinstance(rows, list)  # a generator: nothing is read until asked
    streamed = list(rows)
    assert [r["row_index"] for r in streamed] == indices
    assert streamed == store.batch_results("b_1")
    assert all(r["intel"] == INTEL and r["batch_id"] == "b_1" for r in streamed)
    assert list(store.iter_results("b_nope")) == []
