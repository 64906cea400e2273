"""Reuse of earlier results (SPEC 3.3; issue 5 item 2): the same contact key, prompt version
and model within --cache-ttl is `cached` at cost 0 with no request; --no-cache sends
everything; cached rows count as enriched and are reported apart."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intel_cli import pipeline
from intel_cli.cli import app
from intel_cli.errors import ExitCode
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.base import ContactResult, Store

MODEL = "claude-sonnet-4-5"
KEY = "test-key"
runner = CliRunner()


def email(i: int) -> str:
    return f"dj{i:03d}@station{i:03d}.example"


def write_contacts(path: Path, indexes: list[int]) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in indexes:
            writer.writerow([f"DJ {i}", email(i), f"Station {i} FM", "Producer"])
    return str(path)


def read_output(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def enrich(sim: Simulator, store: Store, inputs: str, **options: Any) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    now = options.pop("now", None)
    extra = {"now": now} if now is not None else {}
    return run(
        RunOptions(inputs=[inputs], model=options.pop("model", MODEL), **options), store,
        api_key=KEY, base_url=sim.base_url, **extra,
    )


def test_a_second_run_of_the_same_list_is_cached_free_and_sends_nothing(
    tmp_path: Path, store: Store
) -> None:
    first_file = write_contacts(tmp_path / "a.csv", [0, 1, 2, 3])
    second_file = write_contacts(tmp_path / "b.csv", [2, 3, 4, 5, 2])  # 2 twice: a duplicate
    with Simulator(SimulatorConfig.instant()) as sim:
        first = enrich(sim, store, first_file)
        requests = sim.stats.requests
        second = enrich(sim, store, second_file)
        sent = sim.stats.requests - requests
    assert first.cached == 0 and first.cost > 0
    assert sent == 2  # only 4 and 5 were new
    assert (second.total, second.enriched, second.cached, second.failed) == (4, 4, 2, 0)
    assert second.duplicates == 1
    batch = store.get_batch(second.batch_id)
    assert batch is not None
    assert (batch["total"], batch["enriched"], batch["cached"]) == (4, 4, 2)
    results = {r["contact_key"]: r for r in store.batch_results(second.batch_id)}
    earlier = {r["contact_key"]: r for r in store.batch_results(first.batch_id)}
    for i in (2, 3):
        row = results[email(i)]
        assert row["status"] == "cached" and row["cost"] == Decimal(0)
        assert (row["input_tokens"], row["output_tokens"], row["attempts"]) == (0, 0, 0)
        assert row["intel"] == earlier[email(i)]["intel"]
        assert row["model"] == MODEL
    assert batch["cost"] == results[email(4)]["cost"] + results[email(5)]["cost"]
    rows = read_output(tmp_path / "b.enriched.csv")
    assert [r["intel_status"] for r in rows] == ["cached", "cached", "enriched", "enriched",
                                                 "cached"]
    assert rows[0]["intel_platform"] == earlier[email(2)]["intel"]["platform"]
    assert rows[0]["intel_cost_usd"] in ("0", "0.0", "0.000000", "")
    body = second.to_json()
    assert (body["cached"], body["enriched"]) == (2, 4)


def test_no_cache_sends_everything(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "a.csv", [0, 1, 2])
    with Simulator(SimulatorConfig.instant()) as sim:
        enrich(sim, store, inputs)
        again = enrich(sim, store, inputs, cache=False)
        assert sim.stats.requests == 6
    assert (again.cached, again.enriched) == (0, 3) and again.cost > 0


def test_only_fresh_results_of_the_same_model_and_prompt_version_are_reused(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = write_contacts(tmp_path / "a.csv", [0, 1])
    with Simulator(SimulatorConfig.instant()) as sim:
        enrich(sim, store, inputs)
        later = datetime.now(UTC) + timedelta(days=8)
        stale = enrich(sim, store, inputs, now=lambda: later)  # past the 7 d default
        assert (stale.cached, sim.stats.requests) == (0, 4)
        kept = enrich(sim, store, inputs, now=lambda: later, cache_ttl_s=9 * 86400.0)
        assert (kept.cached, sim.stats.requests) == (2, 4)
        other_model = enrich(sim, store, inputs, model="claude-haiku-4-5")
        assert (other_model.cached, sim.stats.requests) == (0, 6)
        monkeypatch.setattr(pipeline, "PROMPT_VERSION", "another-prompt")
        other_prompt = enrich(sim, store, inputs)
        assert (other_prompt.cached, sim.stats.requests) == (0, 8)


def test_find_cached_many_matches_find_cached(store: Store) -> None:
    now = datetime.now(UTC)
    store.create_batch("b_c", model_used=MODEL, mode="simulated", metadata={}, now=now)
    rows = [
        ("a@x.example", "enriched", {"platform": "old"}, now - timedelta(hours=2)),
        ("a@x.example", "enriched", {"platform": "new"}, now - timedelta(hours=1)),
        ("b@x.example", "failed", None, now),
        ("c@x.example", "cached", {"platform": "copy"}, now),
        ("d@x.example", "enriched", {"platform": "too old"}, now - timedelta(days=9)),
    ]
    for index, (key, status, intel, at) in enumerate(rows):
        store.record_result(ContactResult(
            "b_c", index, key, status, model=MODEL, intel=intel, prompt_version="p1",
            created_at=at,
        ))
    keys = [f"{c}@x.example" for c in "abcde"]
    since = now - timedelta(days=7)
    many = store.find_cached_many(keys, prompt_version="p1", model=MODEL, since=since)
    assert set(many) == {"a@x.example"} and many["a@x.example"]["intel"] == {"platform": "new"}
    for key in keys:
        one = store.find_cached(key, prompt_version="p1", model=MODEL, since=since)
        assert (one is None) == (key not in many)
    assert store.find_cached_many([], prompt_version="p1", model=MODEL, since=since) == {}


def test_cli_cache_options_and_json(tmp_path: Path) -> None:
    inputs = write_contacts(tmp_path / "a.csv", [0, 1])
    env = {"INTEL_SIMULATE_TTFT": "0", "INTEL_SIMULATE_SPEED": "inf"}
    first = runner.invoke(app, ["enrich", inputs, "--simulate", "--json"], env=env)
    assert first.exit_code == 0, first.stderr
    second = runner.invoke(app, ["enrich", inputs, "--simulate", "--json"], env=env)
    body = json.loads(second.stdout)
    assert (body["cached"], body["enriched"], body["costUsd"]) == (2, 2, 0.0)
    table = runner.invoke(app, ["enrich", inputs, "--simulate"], env=env)
    assert table.exit_code == 0 and "Cached" in table.stdout
    fresh = runner.invoke(app, ["enrich", inputs, "--simulate", "--json", "--no-cache"], env=env)
    assert json.loads(fresh.stdout)["cached"] == 0
    short = runner.invoke(
        app, ["enrich", inputs, "--simulate", "--json", "--cache-ttl", "0"], env=env
    )
    assert json.loads(short.stdout)["cached"] == 0
    bad = runner.invoke(app, ["enrich", inputs, "--simulate", "--cache-ttl", "soon"], env=env)
    assert bad.exit_code == ExitCode.USAGE and "bad --cache-ttl 'soon'" in bad.stderr
