"""The enrichment pipeline through the real SDK over real HTTP against the simulator, into
real stores (conftest's `store`: SQLite, and PostgreSQL when INTEL_TEST_POSTGRES_URL is set):
accounting, retries, re-ask, the global limiter, abort, adaptive retry, order, skipped rows
and duplicates (SPEC 2.2, 3.1, 4.1)."""

from __future__ import annotations

import asyncio
import csv
import re
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from intel_cli import pipeline
from intel_cli.errors import BatchExists, ConfigError, RateLimitedError, UsageError
from intel_cli.pipeline import Progress, RunOptions, RunSummary, run
from intel_cli.pricing import price
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "test-key"


def email(i: int) -> str:
    # zero-padded, so no address is a substring of another (fault rules match substrings)
    return f"dj{i:03d}@station{i:03d}.example"


def write_contacts(path: Path, rows: list[dict[str, str]]) -> str:
    columns = ["Name", "Email", "Station", "Role", "Status"]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return str(path)


def people(n: int) -> list[dict[str, str]]:
    return [
        {"Name": f"DJ {i}", "Email": email(i), "Station": f"Station {i} FM", "Role": "Producer"}
        for i in range(n)
    ]


def read_output(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def simulator(**overrides: Any) -> Simulator:
    return Simulator(SimulatorConfig.instant(**overrides))


def enrich(
    sim: Simulator, store: Store, inputs: str, *, key: str = KEY, **options: Any
) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    return run(
        RunOptions(inputs=[inputs], model=MODEL, **options),
        store,
        api_key=key,
        base_url=sim.base_url,
    )


def billed_for(sim: Simulator) -> tuple[Usage, Decimal]:
    usage, cost = Usage(), Decimal(0)
    for billed in sim.billed:
        one = Usage.from_api(billed)
        usage += one
        cost += price(MODEL, one).cost
    return usage, cost


def test_tokens_and_cost_in_the_store_equal_what_the_simulator_billed(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(12))
    rules = [
        FaultRule(email(1), "invalid", times=1),  # billed twice, enriched on re-ask
        FaultRule(email(2), "invalid"),  # billed twice, failed
        FaultRule(email(3), "500", times=1),  # not billed, then billed
        FaultRule(email(4), "max_tokens"),  # billed, failed
    ]
    with simulator(rules=rules) as sim:
        summary = enrich(sim, store, inputs, concurrency=4)
        usage, cost = billed_for(sim)
    assert len(sim.billed) == 12 + 2  # two re-asks
    batch = store.get_batch(summary.batch_id)
    assert batch is not None
    assert batch["status"] == "completed" and batch["mode"] == "realtime"
    assert (batch["input_tokens"], batch["output_tokens"]) == (usage.input, usage.output)
    # prompt caching: the fixed prefix is written once, then read (SPEC 3.1 cache columns)
    assert (batch["cache_read_tokens"], batch["cache_write_tokens"]) == (
        usage.cache_read, usage.cache_write,
    )
    assert usage.cache_write > 0 and usage.cache_read > 0
    assert batch["cost"] == cost > 0
    results = store.batch_results(summary.batch_id)
    assert sum(r["input_tokens"] for r in results) == usage.input
    assert sum(r["output_tokens"] for r in results) == usage.output
    assert sum((r["cost"] for r in results), Decimal(0)) == cost
    # every billed attempt's raw usage is kept, so cost can be recomputed
    assert sum(len(r["usage"]) for r in results) == len(sim.billed)
    assert summary.usage == usage and summary.cost == cost
    assert (summary.total, summary.enriched, summary.failed) == (12, 10, 2)
    assert summary.finished == 12 and summary.avg_time_ms is not None
    assert summary.retried == 3  # the re-asked two and the 500
    assert batch["metadata"]["models"][MODEL]["contacts"] == 12
    assert batch["metadata"]["promptVersion"]
    assert batch["metadata"]["inputs"][0]["sha256"]
    assert KEY not in str(batch["metadata"])


def test_adaptive_retry_recovers_a_timeout_under_the_threshold(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(3))
    with simulator(rules=[FaultRule(email(1), "timeout", times=1)]) as sim:
        summary = enrich(sim, store, inputs, timeout=0.3)
        requests = sim.stats.requests
    # 2/3 enriched after the main pass is under 0.8: the timed-out contact goes once more
    assert requests == 4
    assert (summary.enriched, summary.timed_out, summary.retried) == (3, 0, 1)
    assert summary.adaptive_retried == 1
    results = store.batch_results(summary.batch_id)
    assert [r["row_index"] for r in results] == [0, 1, 2]  # replaced, not duplicated
    assert results[1]["status"] == "enriched" and results[1]["attempts"] == 2
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and (batch["timed_out"], batch["enriched"]) == (0, 3)


def test_a_timeout_stays_timed_out_over_the_threshold(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(10))
    with simulator(rules=[FaultRule(email(4), "timeout")]) as sim:
        summary = enrich(sim, store, inputs, timeout=0.3)
        requests = sim.stats.requests
    assert requests == 10  # 9/10 is over 0.8: no adaptive retry, and timeouts never retried
    assert (summary.enriched, summary.failed, summary.timed_out) == (9, 1, 1)
    row = store.batch_results(summary.batch_id)[4]
    assert row["status"] == "timed_out" and row["attempts"] == 1
    assert "timed out" in row["error"]
    assert read_output(str(tmp_path / "c.enriched.csv"))[4]["intel_status"] == "timed_out"


def test_no_adaptive_retry_when_switched_off(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(2))
    with simulator(rules=[FaultRule(email(0), "timeout", times=1)]) as sim:
        summary = enrich(sim, store, inputs, timeout=0.3, adaptive_retry=False)
        assert sim.stats.requests == 2
    assert summary.timed_out == 1 and summary.adaptive_retried == 0


def test_429_sets_the_limiter_and_a_second_run_exits_3_without_sending(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(4))
    config = {"retry_after_s": 30, "rules": [FaultRule(email(0), "429", times=1)]}
    with simulator(**config) as sim:
        started = datetime.now(UTC)
        first = enrich(sim, store, inputs, concurrency=1, max_wait=5)
        # the block (30 s) outlasts --max-wait (5 s): the run stops at once, output written
        assert first.status == "rate_limited"
        assert isinstance(first.error, RateLimitedError)
        limiter = store.get_limiter()
        assert limiter is not None and limiter.set_by == first.batch_id
        assert limiter.blocked_until is not None
        assert limiter.blocked_until >= started + timedelta(seconds=29)
        batch = store.get_batch(first.batch_id)
        assert batch is not None and batch["status"] == "rate_limited"
        statuses = [r["status"] for r in store.batch_results(first.batch_id)]
        assert statuses == ["rate_limited"] * 4
        rows = read_output(str(tmp_path / "c.enriched.csv"))
        assert [r["intel_status"] for r in rows] == ["rate_limited"] * 4
        assert rows[1]["intel_error"].startswith("not sent: rate limited until")

        sent = sim.stats.requests
        with pytest.raises(RateLimitedError, match=rf"set by {first.batch_id}.*--wait"):
            enrich(sim, store, inputs, batch_id="b_second")
        assert sim.stats.requests == sent  # nothing was sent
        assert store.get_batch("b_second") is None

        store.reset_limiter()
        third = enrich(sim, store, inputs, batch_id="b_third")
        assert third.status == "completed" and third.enriched == 4
        assert third.error is None


def test_a_429_within_max_wait_is_waited_out_and_the_contact_retried(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(3))
    with simulator(retry_after_s=1, rules=[FaultRule(email(1), "429", times=1)]) as sim:
        began = time.monotonic()
        summary = enrich(sim, store, inputs, max_wait=10)
        elapsed = time.monotonic() - began
        assert sim.stats.rate_limited == 1
    assert summary.status == "completed" and summary.enriched == 3
    assert elapsed >= 0.9  # waited for retry-after
    row = store.batch_results(summary.batch_id)[1]
    assert row["attempts"] == 2 and row["status"] == "enriched"
    assert summary.retried == 1
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["metadata"]["limiterWaitS"] >= 0.5


def test_an_active_limiter_is_waited_for_with_wait(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(2))
    now = datetime.now(UTC)
    store.block_limiter(now + timedelta(seconds=0.6), reason="test", set_by="b_other", now=now)
    with simulator() as sim:
        with pytest.raises(RateLimitedError, match="b_other"):
            enrich(sim, store, inputs, wait=True, max_wait=0.1, batch_id="b_short")
        assert store.get_batch("b_short") is None
        summary = enrich(sim, store, inputs, wait=True, max_wait=5)
    assert summary.status == "completed" and summary.enriched == 2


def test_500_and_529_are_retried_with_backoff_and_counted(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(4))
    rules = [
        FaultRule(email(0), "500", times=1),
        FaultRule(email(1), "529", times=1),
        FaultRule(email(2), "503"),  # always: out of retries
    ]
    with simulator(rules=rules) as sim:
        began = time.monotonic()
        summary = enrich(sim, store, inputs, retries=2, backoff_base=0.2)
        elapsed = time.monotonic() - began
        assert sim.stats.by_status.get(500) == 1 and sim.stats.by_status.get(529) == 1
        assert sim.stats.by_status.get(503) == 3
    results = store.batch_results(summary.batch_id)
    assert [r["attempts"] for r in results] == [2, 2, 3, 1]
    assert [r["status"] for r in results] == ["enriched", "enriched", "failed", "enriched"]
    assert "503" in results[2]["error"]
    assert summary.retried == 3
    # the always-503 contact waited 0.2 s then 0.4 s (each +/- 25 %) before its retries
    assert elapsed >= 0.45


def test_backoff_doubles_per_retry_and_after_a_rate_limit() -> None:
    class Probe(pipeline._Run):
        def __init__(self) -> None:
            self.options = RunOptions(inputs=["x"], backoff_base=1.0)
            self.rate_limit_hit = False

    probe = Probe()
    assert 0.75 <= probe.backoff(1) <= 1.25
    assert 1.5 <= probe.backoff(2) <= 2.5
    probe.rate_limit_hit = True
    assert 3.0 <= probe.backoff(2) <= 5.0


def test_invalid_output_is_re_asked_then_failed_and_both_attempts_billed(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(2))
    with simulator(rules=[FaultRule(email(0), "invalid")]) as sim:
        summary = enrich(sim, store, inputs)
        billed = [b for b in sim.billed if b["status"] == "invalid"]
    assert len(billed) == 2
    row = store.batch_results(summary.batch_id)[0]
    assert row["status"] == "failed" and row["error"] == "invalid output"
    assert row["attempts"] == 2 and row["intel"] is None
    assert row["input_tokens"] == sum(b["input_tokens"] for b in billed)
    assert row["output_tokens"] == sum(b["output_tokens"] for b in billed)
    assert row["cost"] == sum(price(MODEL, Usage.from_api(b)).cost for b in billed) > 0
    assert len(row["usage"]) == 2
    assert summary.failed == 1 and summary.retried == 1


def test_a_bad_request_fails_the_contact_only(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(3))
    with simulator(rules=[FaultRule(email(1), "400")]) as sim:
        summary = enrich(sim, store, inputs)
        assert sim.stats.requests == 3
    row = store.batch_results(summary.batch_id)[1]
    assert row["status"] == "failed" and "simulated invalid request" in row["error"]
    assert summary.status == "completed" and summary.enriched == 2


def test_a_401_stops_the_run_after_the_in_flight_requests(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(30))
    with simulator(api_keys={"the-right-key"}) as sim:
        summary = enrich(sim, store, inputs, key="sk-ant-wrong-key-123456", concurrency=3)
        assert sim.stats.requests <= 3
    assert summary.status == "failed"
    assert isinstance(summary.error, ConfigError)
    assert "401" in str(summary.error) and "ANTHROPIC_API_KEY" in str(summary.error)
    assert "sk-ant-wrong" not in str(summary.error)
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["status"] == "failed"
    assert (batch["total"], batch["enriched"], batch["failed"]) == (30, 0, 30)
    results = store.batch_results(summary.batch_id)
    assert len(results) == 30
    not_sent = [r for r in results if r["attempts"] == 0]
    assert len(not_sent) >= 27
    assert all(r["error"].startswith("not sent: run aborted (") for r in not_sent)
    rows = read_output(str(tmp_path / "c.enriched.csv"))
    assert len(rows) == 30 and {r["intel_status"] for r in rows} == {"failed"}


def test_input_order_is_kept_with_mixed_outcomes(tmp_path: Path, store: Store) -> None:
    rows = people(8)
    rows.insert(2, {"Name": "No Address", "Email": "", "Station": "", "Role": "DJ"})
    rows.insert(5, {"Name": "Gone", "Email": "gone@away.example", "Status": "Unsubscribed"})
    rows.append({"Name": "Again", "Email": "  " + email(3).upper() + " "})
    inputs = write_contacts(tmp_path / "c.csv", rows)
    rules = [
        FaultRule(email(0), "timeout"),
        FaultRule(email(3), "invalid"),
        FaultRule(email(5), "500"),
    ]
    # row 0 times out last while the rest finish at once: completion order is not input order
    with simulator(rules=rules) as sim:
        summary = enrich(sim, store, inputs, timeout=0.3, concurrency=5, retries=0)
    out = read_output(str(tmp_path / "c.enriched.csv"))
    assert [r["Email"] for r in out] == [r.get("Email", "") for r in rows]
    assert [r["intel_status"] for r in out] == [
        "timed_out", "enriched", "skipped", "enriched", "failed", "skipped",
        "enriched", "failed", "enriched", "enriched", "failed",
    ]
    assert out[2]["intel_error"] == "missing email" and out[5]["intel_error"] == "opted out"
    assert out[10]["intel_error"] == "invalid output"  # the duplicate copies its first row
    assert summary.skipped == 2 and summary.total == 8


def test_skipped_rows_are_never_sent_and_recorded_without_a_model(
    tmp_path: Path, store: Store
) -> None:
    rows = [
        {"Name": "A", "Email": "emma@"},
        {"Name": "B", "Email": "", "Station": ""},
        {"Name": "C", "Email": email(1), "Status": "opted out"},
        {"Name": "D", "Email": email(2)},
    ]
    inputs = write_contacts(tmp_path / "c.csv", rows)
    with simulator() as sim:
        summary = enrich(sim, store, inputs)
        assert sim.stats.requests == 1
    results = store.batch_results(summary.batch_id)
    assert [(r["status"], r["model"], r["error"]) for r in results[:3]] == [
        ("skipped", None, "invalid email"),
        ("skipped", None, "missing email"),
        ("skipped", None, "opted out"),
    ]
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and (batch["total"], batch["skipped"]) == (1, 3)


def test_duplicates_are_sent_once_and_copied(tmp_path: Path, store: Store) -> None:
    rows = people(2) + [{"Name": "Dup", "Email": " " + email(0).upper()}]
    inputs = write_contacts(tmp_path / "c.csv", rows)
    with simulator() as sim:
        summary = enrich(sim, store, inputs)
        assert sim.stats.requests == 2
    assert summary.total == 2 and summary.duplicates == 1
    assert [r["row_index"] for r in store.batch_results(summary.batch_id)] == [0, 1]
    out = read_output(str(tmp_path / "c.enriched.csv"))
    assert out[2]["intel_status"] == "enriched"
    assert out[2]["intel_platform"] == out[0]["intel_platform"] != ""
    assert (out[2]["intel_input_tokens"], out[2]["intel_attempts"]) == ("0", "0")
    assert Decimal(out[2]["intel_cost_usd"]) == 0 < Decimal(out[0]["intel_cost_usd"])


def test_no_enrichable_rows_is_a_usage_error(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", [{"Name": "A", "Email": "nope"}])
    with simulator() as sim, pytest.raises(UsageError, match="no enrichable rows in c.csv"):
        enrich(sim, store, inputs)
    assert store.metrics(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(1))[
        "summary"
    ]["totalBatches"] == 0


def test_a_batch_id_must_be_unique(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(1))
    with simulator() as sim:
        enrich(sim, store, inputs, batch_id="b_same")
        with pytest.raises(BatchExists):
            enrich(sim, store, inputs, batch_id="b_same")


def test_no_more_than_concurrency_requests_in_flight(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(12))
    with Simulator(SimulatorConfig(ttft_s=0.05, tokens_per_s=1e9, jitter=0)) as sim:
        enrich(sim, store, inputs, concurrency=3)
        assert sim.stats.max_in_flight == 3


def test_progress_is_reported_as_contacts_finish(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(3))
    seen: list[Progress] = []
    with simulator(rules=[FaultRule(email(2), "400")]) as sim:
        run(
            RunOptions(inputs=[inputs], model=MODEL), store, api_key=KEY,
            base_url=sim.base_url, progress=seen.append,
        )
    assert [p.done for p in seen] == [0, 1, 2, 3]
    assert (seen[-1].enriched, seen[-1].failed, seen[-1].total) == (2, 1, 3)
    assert seen[-1].cost > 0


def test_a_generated_batch_id_has_the_documented_shape() -> None:
    batch_id = pipeline.new_batch_id(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert re.fullmatch(r"b_20260102T030405_[a-z0-9]{6}", batch_id)
    assert pipeline.new_batch_id(datetime.now(UTC)) != pipeline.new_batch_id(datetime.now(UTC))


def test_bad_options_are_usage_errors(tmp_path: Path, store: Store) -> None:
    with pytest.raises(UsageError, match="--campaign"):
        run(RunOptions(inputs=["x.csv"], campaign="tv"), store, api_key=KEY)
    with pytest.raises(UsageError, match="--batch-id"):
        run(RunOptions(inputs=["x.csv"], batch_id="has space"), store, api_key=KEY)
    with pytest.raises(ConfigError, match="No API key"):
        run(RunOptions(inputs=["x.csv"]), store, api_key=None)


def test_ctrl_c_finalises_the_batch_as_interrupted_and_writes_the_output(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-process stand-in for SIGINT: cancel the main task as asyncio.run does on Ctrl-C."""
    inputs = write_contacts(tmp_path / "c.csv", people(6))
    real_run = asyncio.run

    def run_then_interrupt(coro: Any) -> Any:
        async def main() -> Any:
            task = asyncio.ensure_future(coro)
            await asyncio.sleep(0.3)  # the first requests are in flight
            task.cancel()
            return await task

        return real_run(main())

    with Simulator(SimulatorConfig(ttft_s=0.1, tokens_per_s=1e9, jitter=0,
                                   rules=[FaultRule("Station", "timeout")])) as sim:
        monkeypatch.setattr(pipeline.asyncio, "run", run_then_interrupt)
        began = time.monotonic()
        summary = enrich(sim, store, inputs, concurrency=2, timeout=30)
        elapsed = time.monotonic() - began
    assert elapsed < 4  # in-flight requests get 2 s, then are cancelled
    assert summary.status == "interrupted"
    assert summary.finished == 0 and summary.avg_time_ms is None  # nothing came back
    assert "progress saved in batch" in str(summary.error)
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["status"] == "interrupted"
    assert batch["finished_at"] is not None
    out = read_output(str(tmp_path / "c.enriched.csv"))
    assert len(out) == 6
    assert {r["intel_error"] for r in out} <= {
        "unfinished: run interrupted", "not sent: run interrupted"
    }


def test_an_unpriced_model_costs_0_is_flagged_and_warned_once(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(3))
    warnings: list[str] = []
    with simulator() as sim:
        summary = run(
            RunOptions(inputs=[inputs], model="claude-imaginary-9"), store, api_key=KEY,
            base_url=sim.base_url, warn=warnings.append,
        )
        assert len(sim.billed) == 3
    assert summary.enriched == 3 and summary.cost == 0 and summary.unpriced
    assert summary.usage.input > 0
    assert len(warnings) == 1 and "claude-imaginary-9" in warnings[0]
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["metadata"]["unpriced"] is True


def test_an_unwritable_output_fails_before_anything_is_sent(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(2))
    with simulator() as sim:
        with pytest.raises(UsageError, match="does not exist"):
            enrich(sim, store, inputs, output=str(tmp_path / "missing" / "out.csv"))
        with pytest.raises(UsageError, match="would overwrite the input"):
            enrich(sim, store, inputs, output=inputs)
        assert sim.stats.requests == 0
