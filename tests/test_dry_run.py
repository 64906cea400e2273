"""`intel enrich --dry-run` (issue 7 item 3): token counts from count_tokens (simulator or API)
or offline, output from the store's history, cost per model and mode, with and without reused
results; never a message and never a batch."""

from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from intel_cli.anthropic_client import AnthropicClient
from intel_cli.cli import app
from intel_cli.contacts import read_contacts
from intel_cli.errors import ExitCode
from intel_cli.forecast import (
    DEFAULT_OUTPUT_TOKENS,
    SAMPLE,
    SOURCE_API,
    SOURCE_OFFLINE,
    SOURCE_SIMULATOR,
    Forecast,
    forecast,
    sample_indexes,
)
from intel_cli.pipeline import RunOptions, run
from intel_cli.pricing import price
from intel_cli.prompt import RunContext
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
FAST = "claude-haiku-4-5"
runner = CliRunner()


def write_contacts(path: Path, n: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            writer.writerow([f"C {i}", f"c{i:03d}@st{i:03d}.example", f"St {i}",
                             "DJ" if i % 3 == 0 else "Producer"])
    return path


def options(inputs: Path, **overrides: object) -> RunOptions:
    values: dict[str, object] = {"inputs": [str(inputs)], "model": MODEL}
    values.update(overrides)
    return RunOptions(**values)  # type: ignore[arg-type]


def batches(store: Store) -> int:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    return int(store.metrics(now - timedelta(days=1), now + timedelta(days=1))["summary"]
               ["totalBatches"])


async def exact_counts(sim: Simulator, inputs: Path) -> list[int]:
    with read_contacts([str(inputs)]) as source:
        contacts = list(source)
    async with AnthropicClient(api_key="k", base_url=sim.base_url) as client:
        return [
            await client.count_tokens(c, model=MODEL, context=RunContext()) for c in contacts
        ]


def test_simulated_dry_run_counts_tokens_and_sends_no_message(
    tmp_path: Path, store: Store
) -> None:
    import asyncio

    inputs = write_contacts(tmp_path / "c.csv", 12)
    with Simulator(SimulatorConfig.instant()) as sim:
        result = forecast(options(inputs), store, api_key="k", base_url=sim.base_url,
                          simulated=True)
        stats = sim.stats
        assert sim.billed == []  # no /v1/messages answer was ever billed
        assert stats.requests == result.counted == 12  # only count_tokens requests
        exact = asyncio.run(exact_counts(sim, inputs))
    assert batches(store) == 0
    assert result.token_source == SOURCE_SIMULATOR
    assert result.contacts == 12 and result.input_tokens == sum(exact)
    (row,) = result.models
    assert row.output_source == "default" and row.output_per_request == DEFAULT_OUTPUT_TOKENS
    assert row.output_tokens == 12 * DEFAULT_OUTPUT_TOKENS
    # batch: every token at half price, without prompt caching
    uncached = price(MODEL, Usage(input=row.input_tokens, output=row.output_tokens)).cost
    assert row.cost(batch=True, cache=False) == price(
        MODEL, Usage(input=row.input_tokens, output=row.output_tokens), batch=True
    ).cost == uncached / 2
    # realtime: the prompt-cached prefix is written once and read by the other requests
    assert row.prefix_tokens > 1000
    assert row.cost(batch=False, cache=False) < uncached
    # nothing reusable yet: with and without reuse are the same
    assert row.cost(batch=False, cache=True) == row.cost(batch=False, cache=False)


def test_offline_dry_run_says_so_and_makes_no_request(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 4)
    result = forecast(options(inputs), store, api_key=None, base_url="http://127.0.0.1:9")
    assert result.token_source == SOURCE_OFFLINE and result.counted == 0
    assert result.input_tokens > 4 * 1000  # system prompt + schema + contact, erring high
    assert batches(store) == 0


def test_a_large_list_is_counted_on_a_sample_and_scaled(tmp_path: Path, store: Store) -> None:
    import asyncio

    inputs = write_contacts(tmp_path / "c.csv", SAMPLE + 25)
    with Simulator(SimulatorConfig.instant()) as sim:
        result = forecast(options(inputs), store, api_key="k", base_url=sim.base_url)
        assert sim.stats.requests == SAMPLE and sim.billed == []
        exact = sum(asyncio.run(exact_counts(sim, inputs)))
    assert result.token_source == SOURCE_API and result.counted == SAMPLE
    assert abs(result.input_tokens - exact) <= exact * 0.01
    assert any("scaled" in note for note in result.notes)


def test_sample_indexes_spread_over_the_list() -> None:
    assert sample_indexes(3, 50) == [0, 1, 2]
    picks = sample_indexes(1000, 50)
    assert len(picks) == 50 and picks[0] == 0 and picks[-1] >= 950


def test_history_and_reusable_results_come_from_the_store(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 6)
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = run(options(inputs, output=str(tmp_path / "o.csv"), backoff_base=0.01),
                      store, api_key="k", base_url=sim.base_url)
        sim.reset()
        result = forecast(options(inputs), store, api_key="k", base_url=sim.base_url)
        assert sim.billed == []
        no_cache = forecast(options(inputs, cache=False), store, api_key=None, base_url=None)
    assert summary.enriched == 6 and batches(store) == 1  # the real run's batch only
    (row,) = result.models
    mean = (Decimal(summary.usage.output) / 6).quantize(Decimal("0.01"))
    assert row.output_per_request == mean and row.output_source == "history (6 results)"
    assert row.cached == 6
    assert row.cost(batch=False, cache=True) == 0 == row.cost(batch=True, cache=True)
    assert row.cost(batch=False, cache=False) > 0
    assert no_cache.models[0].cached == 0 and not no_cache.cache_used


def test_routing_splits_the_forecast_by_model(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 9)
    result = forecast(options(inputs, fast_model=FAST, route_roles=["DJ"]), store,
                      api_key=None, base_url=None)
    assert [(m.model, m.contacts) for m in result.models] == [(MODEL, 6), (FAST, 3)]
    main, fast = result.models
    per_contact = {m.model: m.cost(batch=False, cache=False) / m.contacts for m in (main, fast)}
    assert per_contact[FAST] < per_contact[MODEL]
    assert result.cost(batch=False, cache=False) == main.cost(batch=False, cache=False) + \
        fast.cost(batch=False, cache=False)
    assert any("second opinion" in note for note in result.notes)


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_dry_run_json_with_simulate(tmp_path: Path, intel_home: Path) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 5)
    result = runner.invoke(app, ["enrich", str(inputs), "--dry-run", "--simulate", "--json",
                                 "--max-cost", "1"])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["success"] is True and body["dryRun"] is True
    assert body["contacts"] == 5
    assert body["inputTokens"]["source"] == SOURCE_SIMULATOR
    assert body["inputTokens"]["counted"] == 5
    assert set(body["costUsd"]) == {"realtime", "batch", "realtimeWithCache", "batchWithCache"}
    assert body["models"][0]["model"] == MODEL and body["maxCost"] == 1.0
    assert not (tmp_path / "c.enriched.csv").exists()
    with SQLiteStore(intel_home / "intel.db") as store:
        assert batches(store) == 0


def test_cli_dry_run_without_a_key_estimates_offline(tmp_path: Path) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    result = runner.invoke(app, ["enrich", str(inputs), "--dry-run", "--route-roles", "DJ"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "nothing was sent" in out and "offline estimate" in out
    assert "Expected cost" in out and FAST in out and "all models" in out


def test_cli_dry_run_uses_the_api_key_and_base_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    with Simulator(SimulatorConfig.instant()) as sim:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-dry")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
        result = runner.invoke(app, ["enrich", str(inputs), "--dry-run", "--json"])
        assert sim.billed == [] and sim.stats.requests == 3
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["inputTokens"]["source"] == SOURCE_API
    assert "sk-ant-test-dry" not in result.output


def test_cli_dry_run_of_an_unreadable_list_is_exit_2(tmp_path: Path) -> None:
    empty = tmp_path / "none.csv"
    empty.write_text("Name,Email\n", encoding="utf-8")
    result = runner.invoke(app, ["enrich", str(empty), "--dry-run"])
    assert result.exit_code == ExitCode.USAGE
    assert "no enrichable rows" in result.stderr


def test_forecast_json_shape() -> None:
    result = Forecast(contacts=0, skipped=0, duplicates=0, token_source=SOURCE_OFFLINE,
                      counted=0)
    body = result.to_json()
    assert body["costUsd"]["realtime"] == 0.0 and body["models"] == []
