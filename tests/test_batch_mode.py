"""`--mode batch` (issue 7 item 1) end to end: the pipeline through the real SDK over real HTTP
against the simulator's Message Batches endpoints, into real stores; and a real subprocess
killed after submission, then resumed without submitting again."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intel_cli import batch_mode
from intel_cli.cli import app
from intel_cli.errors import UsageError
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.pricing import price
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "test-key"
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def email(i: int) -> str:
    return f"dj{i:03d}@station{i:03d}.example"


def write_contacts(path: Path, n: int) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            writer.writerow([f"DJ {i}", email(i), f"Station {i} FM", "Producer"])
    return str(path)


def read_output(path: str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def enrich(sim: Simulator, store: Store, inputs: str, **options: Any) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("batch_poll_s", 0.02)
    options.setdefault("mode", "batch")
    return run(RunOptions(inputs=[inputs], model=MODEL, **options), store,
               api_key=KEY, base_url=sim.base_url)


def billed_cost(sim: Simulator) -> tuple[Usage, Decimal]:
    usage, cost = Usage(), Decimal(0)
    for billed in sim.billed:
        one = Usage.from_api(billed)
        usage += one
        cost += price(MODEL, one, batch=billed["batch"]).cost
    return usage, cost


# --- custom ids and chunks --------------------------------------------------------------------


def test_custom_ids_fit_the_api_and_map_back() -> None:
    for batch_id in ("b_20261204T202944_5dljk0", "nightly.run:2026-12-04", "x" * 128):
        prefix = batch_mode.custom_id_prefix(batch_id)
        for row in (0, 7, 99_999, 4_294_967_295):
            value = batch_mode.custom_id(prefix, row)
            assert CUSTOM_ID.match(value), value
            assert batch_mode.row_of(prefix, value) == row
    prefix = batch_mode.custom_id_prefix("b_20261204T202944_5dljk0")
    assert prefix == "b_20261204T202944_5dljk0"  # a generated id is used as it is
    assert batch_mode.custom_id_prefix("nightly.run:1") == "nightly_run_1"
    assert batch_mode.row_of(prefix, "someone-else-3") is None
    assert batch_mode.row_of(prefix, f"{prefix}-x") is None


def test_chunks_stay_within_the_count_and_byte_limits() -> None:
    requests = [(i, {"custom_id": f"r-{i}", "params": {"text": "x" * 100}}) for i in range(10)]
    by_count = list(batch_mode.chunks(iter(requests), max_requests=4))
    assert [len(c) for c in by_count] == [4, 4, 2]
    assert [k for c in by_count for k, _ in c] == list(range(10))
    one = len(json.dumps(requests[0][1]).encode()) + 1
    by_bytes = list(batch_mode.chunks(iter(requests), max_bytes=3 * one))
    assert [len(c) for c in by_bytes] == [3, 3, 3, 1]
    # one request larger than the limit still goes (alone), for the API to judge
    assert [len(c) for c in batch_mode.chunks(iter(requests[:2]), max_bytes=10)] == [1, 1]
    assert batch_mode.MAX_REQUESTS == 100_000 and batch_mode.MAX_BYTES < 256 * 1000 * 1000


def test_row_ranges_round_trip() -> None:
    rows = {0, 1, 2, 3, 7, 9, 10}
    assert batch_mode.to_ranges(rows) == [[0, 3], [7, 7], [9, 10]]
    assert batch_mode.from_ranges(batch_mode.to_ranges(rows)) == rows
    assert batch_mode.to_ranges(range(100_000)) == [[0, 99_999]]


def test_batch_mode_refuses_a_budget() -> None:
    with pytest.raises(UsageError, match="--mode batch cannot hold a budget"):
        RunOptions(inputs=["x.csv"], mode="batch", max_cost=Decimal("1")).validate()
    with pytest.raises(UsageError, match="--mode must be realtime or batch"):
        RunOptions(inputs=["x.csv"], mode="bulk").validate()


# --- end to end -------------------------------------------------------------------------------


def test_batch_run_maps_results_back_retries_failures_in_realtime_and_bills_half(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_mode, "MAX_REQUESTS", 5)  # 12 contacts -> three batches
    inputs = write_contacts(tmp_path / "c.csv", 12)
    rules = [
        FaultRule(email(2), "batch_errored"),
        FaultRule(email(3), "batch_expired"),
        FaultRule(email(4), "invalid", times=1),  # the realtime follow-up is the re-ask
        FaultRule(email(5), "max_tokens", times=1),  # failed, no follow-up
    ]
    with Simulator(SimulatorConfig.instant(batch_processing_s=0.1, rules=rules)) as sim:
        summary = enrich(sim, store, inputs, retries=1)
        usage, cost = billed_cost(sim)
        stats = sim.stats
        billed = sim.billed
    assert stats.batches_created == 3 and stats.batch_requests == 12
    assert set(stats.by_status) == {200} and stats.internal_errors == []
    # realtime: the errored and the expired one, and the re-ask of the invalid one
    realtime = [b for b in billed if not b["batch"]]
    assert len(realtime) == 3 and len(billed) == 12 - 2 + 3
    assert (summary.total, summary.enriched, summary.failed) == (12, 11, 1)
    assert summary.mode == "batch" and summary.status == "completed"
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["mode"] == "batch" and batch["status"] == "completed"
    assert batch["cost"] == cost == summary.cost
    assert (batch["input_tokens"], batch["output_tokens"]) == (usage.input, usage.output)
    assert (batch["cache_read_tokens"], batch["cache_write_tokens"]) == (
        usage.cache_read, usage.cache_write,
    )
    submitted = batch["metadata"]["anthropicBatches"]
    assert len(submitted) == 3 and all(s["collected"] for s in submitted)
    assert sum(s["requests"] for s in submitted) == 12
    results = {r["row_index"]: r for r in store.batch_results(summary.batch_id)}
    assert results[5]["status"] == "failed" and results[5]["error"] == "max_tokens"
    assert results[2]["attempts"] == 2 and results[4]["attempts"] == 2
    assert results[0]["attempts"] == 1 and results[0]["latency_ms"] == 0
    assert results[0]["usage"][0]["service_tier"] == "batch"
    assert sum(len(r["usage"]) for r in results.values()) == len(billed)
    # results came back out of order; each row still holds its own contact's answer
    rows = read_output(str(tmp_path / "c.enriched.csv"))
    assert [r["Email"] for r in rows] == [email(i) for i in range(12)]
    for row in rows:
        if row["intel_status"] == "enriched":
            assert row["Email"] in row["intel_contact_method"]


def test_batch_costs_half_of_realtime_for_the_same_answers(tmp_path: Path) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 8)
    costs: dict[str, Decimal] = {}
    tokens: dict[str, Usage] = {}
    for mode in ("realtime", "batch"):
        with Simulator(SimulatorConfig.instant(batch_processing_s=0.05)) as sim:
            with SQLiteStore(tmp_path / f"{mode}.db") as store:
                store.migrate()
                summary = enrich(sim, store, inputs, mode=mode, concurrency=1,
                                 output=str(tmp_path / f"{mode}.csv"))
            costs[mode], tokens[mode] = summary.cost, summary.usage
    # the same prompts, the same cached prefix (written once, then read), the same answers
    assert tokens["batch"] == tokens["realtime"]
    assert tokens["batch"].cache_read > 0
    assert abs(costs["batch"] * 2 - costs["realtime"]) <= Decimal("1E-9")


def test_without_retries_errored_expired_and_canceled_fail_with_the_reason(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 4)
    rules = [FaultRule(email(0), "batch_errored"), FaultRule(email(1), "batch_expired"),
             FaultRule(email(2), "529")]
    with Simulator(SimulatorConfig.instant(batch_processing_s=0.05, rules=rules)) as sim:
        summary = enrich(sim, store, inputs, retries=0)
        assert not any(not b["batch"] for b in sim.billed)  # nothing went realtime
    results = {r["row_index"]: r for r in store.batch_results(summary.batch_id)}
    assert results[0]["error"] == (
        "batch request errored (api_error: Internal server error (simulated batch request)); "
        "--retries 0: not retried"
    )
    assert results[1]["error"] == "batch request expired; --retries 0: not retried"
    assert results[2]["error"].startswith("batch request errored (overloaded_error")
    assert results[3]["status"] == "enriched"
    assert (summary.enriched, summary.failed) == (1, 3)
    assert all(r["cost"] == 0 for i, r in results.items() if i < 3)


def test_a_request_the_api_calls_invalid_fails_at_once(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 2)
    with Simulator(SimulatorConfig.instant(batch_processing_s=0.05,
                                           rules=[FaultRule(email(1), "400")])) as sim:
        summary = enrich(sim, store, inputs, retries=2)
        assert not any(not b["batch"] for b in sim.billed)
    results = {r["row_index"]: r for r in store.batch_results(summary.batch_id)}
    assert results[1]["error"] == (
        "batch request errored (invalid_request_error: simulated invalid request)"
    )


def test_a_fatal_error_on_create_stops_the_run_with_exit_4(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 2)
    with Simulator(SimulatorConfig.instant(api_keys={"other"})) as sim:
        summary = enrich(sim, store, inputs)
    assert summary.error is not None and "401" in str(summary.error)
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["status"] == "failed"
    assert "anthropicBatches" not in batch["metadata"]


def test_cli_simulate_mode_batch_json(tmp_path: Path, intel_home: Path) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    env = {"INTEL_SIMULATE_TTFT": "0", "INTEL_SIMULATE_SPEED": "inf",
           "INTEL_SIMULATE_BATCH_S": "0.1", "INTEL_BATCH_POLL_S": "0.02"}
    result = CliRunner().invoke(app, ["enrich", inputs, "--simulate", "--mode", "batch",
                                      "--json"], env=env)
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert (body["status"], body["enriched"]) == ("completed", 3)
    plain = CliRunner().invoke(app, ["enrich", inputs, "--simulate", "--mode", "batch",
                                     "--no-cache", "-o", str(tmp_path / "o.csv")], env=env)
    assert plain.exit_code == 0, plain.stderr
    # progress while waiting says what it waits on
    assert "waiting on 1 Message Batch(es), 3 requests" in plain.stderr
    assert "Cache read / write tokens" in plain.stdout
    bad = CliRunner().invoke(app, ["enrich", inputs, "--simulate", "--mode", "bulk"], env=env)
    assert bad.exit_code == 2 and "--mode must be realtime or batch" in bad.stderr


# --- killed after submission, then resumed ----------------------------------------------------


def stored_submissions(db: Path, batch_id: str) -> list[dict[str, Any]]:
    """metadata.anthropicBatches as another process sees it (nothing before it migrated)."""
    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            row = conn.execute(
                "SELECT metadata FROM intel_logs WHERE batch_id = ?", (batch_id,)
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created or not migrated yet
        return []
    listed = json.loads(row[0] or "{}").get("anthropicBatches") if row else None
    return list(listed or [])


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_stopped_after_submission_resumes_without_submitting_again(
    tmp_path: Path, intel_home: Path, signum: int
) -> None:
    """SIGKILL leaves the batch `running`; Ctrl-C finalises it `interrupted` (exit 130) and
    leaves the Message Batch running at Anthropic. Either way --resume collects it."""
    n = 6
    inputs = write_contacts(tmp_path / "c.csv", n)
    db = tmp_path / "store.db"
    out = tmp_path / "out.csv"
    offset = [0.0]  # the simulator's clock, which the test moves past the processing time
    config = SimulatorConfig.instant(batch_processing_s=3600.0)
    with Simulator(config, clock=lambda: time.monotonic() + offset[0]) as sim:
        env = {**os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.base_url,
               "INTEL_HOME": str(intel_home), "INTEL_BATCH_POLL_S": "0.05"}
        child = subprocess.Popen(
            [sys.executable, "-m", "intel_cli", "enrich", inputs, "--store", str(db),
             "-o", str(out), "--mode", "batch", "--batch-id", "b_killed", "--quiet"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 30
            submitted: list[dict[str, Any]] = []
            while not submitted and time.monotonic() < deadline and child.poll() is None:
                time.sleep(0.05)
                submitted = stored_submissions(db, "b_killed")
            assert submitted, "the batch id never reached the store"
            child.send_signal(signum)
            _, stderr = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
                child.communicate()
        assert b"Traceback" not in stderr
        assert sim.stats.batches_created == 1 and sim.billed == []
        with SQLiteStore(db) as s:
            stopped = s.get_batch("b_killed")
            before = s.batch_results("b_killed")
        assert stopped is not None
        if signum == signal.SIGINT:
            assert child.returncode == 130, stderr
            assert stopped["status"] == "interrupted"
            assert {r["error"] for r in before} == {"unfinished: run interrupted"}
            assert [r["intel_status"] for r in read_output(str(out))] == ["failed"] * n
        else:
            assert child.returncode == -signal.SIGKILL
            assert stopped["status"] == "running" and before == []
        assert submitted[0]["requests"] == n and not submitted[0]["collected"]
        offset[0] += 3601.0  # Anthropic finishes the batch while nobody is watching

        with SQLiteStore(db) as store:
            summary = run(
                RunOptions(inputs=[inputs], model=MODEL, resume="b_killed", mode="batch",
                           batch_poll_s=0.02),
                store, api_key=KEY, base_url=sim.base_url,
            )
            batch = store.get_batch("b_killed")
            results = store.batch_results("b_killed")
        stats = sim.stats
        usage, cost = billed_cost(sim)
    assert stats.batches_created == 1  # collected, not submitted again
    assert len(sim.billed) == n and all(b["batch"] for b in sim.billed)
    assert (summary.status, summary.enriched) == ("completed", n)
    assert batch is not None and batch["status"] == "completed" and batch["cost"] == cost
    assert batch["metadata"]["anthropicBatches"][0]["collected"] is True
    assert [r["attempts"] for r in results] == [1] * n
    rows = read_output(str(out))
    assert [r["intel_status"] for r in rows] == ["enriched"] * n


def test_routed_contacts_go_to_the_fast_model_in_the_batch_and_escalate_in_realtime(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        writer.writerow(["DJ A", "a@kexp.org", "KEXP", "DJ"])
        writer.writerow(["DJ B", "", "Tiny FM", "DJ"])  # no e-mail: the answer is Low
        writer.writerow(["Ed C", "c@nme.com", "NME", "Editor"])
    fast = "claude-haiku-4-5"
    with Simulator(SimulatorConfig.instant(batch_processing_s=0.05)) as sim:
        with SQLiteStore(tmp_path / "s.db") as store:
            store.migrate()
            summary = enrich(sim, store, str(path), fast_model=fast, route_roles=["DJ"])
            results = {r["row_index"]: r for r in store.batch_results(summary.batch_id)}
        billed = sim.billed
    in_batch = sorted((b["model"], b["batch"]) for b in billed if b["batch"])
    assert in_batch == [(fast, True), (fast, True), (MODEL, True)]
    # the Low answer of the fast model is asked again of the main model, in realtime
    assert [(b["model"], b["batch"]) for b in billed if not b["batch"]] == [(MODEL, False)]
    assert results[0]["model"] == fast and results[2]["model"] == MODEL
    assert results[1]["attempts"] == 2 and results[1]["status"] == "enriched"
    assert summary.enriched == 3
