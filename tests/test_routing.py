"""Model routing (issue 7 item 5): --fast-model for roles matching --route-roles, a second
opinion on the main model after a Low-confidence answer, and per-model accounting, through the
real SDK and the simulator (which answers Low for a contact without an e-mail address)."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.errors import ExitCode, UsageError
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.pricing import price
from intel_cli.routing import Router, parse_roles, role_matcher
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.usage import Usage

MAIN = "claude-sonnet-4-5"
FAST = "claude-haiku-4-5"
runner = CliRunner()

ROWS = [
    # name, email, station, role
    ("Ann", "ann@kexp.example", "KEXP", "Club DJ"),  # fast model, Medium: kept
    ("Bob", "bob@fm.example", "Bob FM", "Producer"),  # main model
    ("Cy", "", "Cy Radio", "DJ"),  # fast model, Low (no e-mail): asked again on the main model
    ("Di", "di@mag.example", "Di Mag", "Editor"),  # main model
    ("Ed", "ed@wave.example", "Wave", "dj / presenter"),  # fast model, Medium: kept
]


def write_rows(path: Path, rows: list[tuple[str, str, str, str]] = ROWS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        writer.writerows(rows)
    return path


def enrich(sim: Simulator, store: Store, inputs: Path, **options: Any) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("cache", False)
    return run(
        RunOptions(inputs=[str(inputs)], model=MAIN, **options),
        store,
        api_key="test-key",
        base_url=sim.base_url,
    )


def billed_by_model(sim: Simulator) -> dict[str, tuple[int, Decimal]]:
    out: dict[str, tuple[int, Decimal]] = {}
    for billed in sim.billed:
        n, cost = out.get(billed["model"], (0, Decimal(0)))
        out[billed["model"]] = (n + 1, cost + price(billed["model"], Usage.from_api(billed)).cost)
    return out


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "role,matched",
    [
        ("DJ", True),
        ("Club DJ", True),
        ("DJs", True),
        ("dj / presenter", True),
        ("Adjunct lecturer", False),  # "dj" inside a word: short patterns match whole words
        ("Co-Producer", True),  # long patterns match anywhere
        ("Senior producers", True),
        ("PR Manager", True),
        ("Press officer", False),
        ("Head  of   Music", True),
        ("Music editor", False),
        (None, False),
        ("", False),
    ],
)
def test_role_matching(role: str | None, matched: bool) -> None:
    router = Router(MAIN, FAST, parse_roles("DJ, Producer;PR ,head of music"))
    assert router.matches(role) is matched


def test_parse_roles_and_an_empty_list() -> None:
    assert parse_roles(' DJ ,, "x" ;Producer ') == ["DJ", '"x"', "Producer"]
    assert parse_roles(None) == [] and role_matcher([]) is None
    assert role_matcher(["  "]) is None
    with pytest.raises(UsageError, match="--route-roles"):
        RunOptions(inputs=["x"], fast_model=FAST, route_roles=[" "]).validate()


def test_without_routing_everything_goes_to_the_main_model() -> None:
    router = Router(MAIN, None, ["DJ"])
    assert not router.active and router.model_for(0, "DJ") == MAIN


# --- through the pipeline -----------------------------------------------------------------------


def test_routed_roles_go_to_the_fast_model_and_low_confidence_is_asked_again(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_rows(tmp_path / "c.csv")
    out = tmp_path / "c.out.csv"
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, output=str(out), fast_model=FAST,
                         route_roles=["DJ"])
        billed = billed_by_model(sim)

    assert summary.status == "completed" and summary.enriched == 5
    # fast: Ann, Cy, Ed; main: Bob, Di and Cy's second opinion
    assert billed[FAST][0] == 3 and billed[MAIN][0] == 3
    results = {r["row_index"]: r for r in store.batch_results(summary.batch_id)}
    models = [results[i]["model"] for i in range(5)]
    assert models == [FAST, MAIN, MAIN, MAIN, FAST]
    cy = results[2]
    assert cy["attempts"] == 2 and cy["status"] == "enriched"
    assert len(cy["usage"]) == 2  # both attempts billed and kept
    assert cy["cost"] == sum(
        (price(u["model"] if "model" in u else m, Usage.from_api(u)).cost
         for u, m in zip(cy["usage"], (FAST, MAIN), strict=True)),
        Decimal(0),
    )
    # per-model counts show both models; money adds up to what was billed
    rows = {row.model: row for row in summary.models}
    assert (rows[FAST].contacts, rows[FAST].enriched) == (3, 2)
    assert (rows[MAIN].contacts, rows[MAIN].enriched) == (3, 3)
    assert rows[FAST].cost == billed[FAST][1] and rows[MAIN].cost == billed[MAIN][1]
    assert summary.cost == billed[FAST][1] + billed[MAIN][1]
    batch = store.get_batch(summary.batch_id)
    assert batch is not None
    assert batch["metadata"]["models"][FAST]["contacts"] == 3
    assert batch["metadata"]["models"][MAIN]["enriched"] == 3
    with out.open(newline="", encoding="utf-8") as f:
        written = list(csv.DictReader(f))
    assert [r["intel_model"] for r in written] == models
    assert written[2]["intel_attempts"] == "2"


def test_a_second_routed_run_reuses_both_models_results(tmp_path: Path, store: Store) -> None:
    from intel_cli.forecast import forecast

    inputs = write_rows(tmp_path / "c.csv")
    with Simulator(SimulatorConfig.instant()) as sim:
        first = enrich(sim, store, inputs, output=str(tmp_path / "1.csv"), fast_model=FAST,
                       route_roles=["DJ"], cache=True)
        dry = forecast(RunOptions(inputs=[str(inputs)], model=MAIN, fast_model=FAST,
                                  route_roles=["DJ"]), store, api_key=None, base_url=None)
        sim.reset()
        second = enrich(sim, store, inputs, output=str(tmp_path / "2.csv"), fast_model=FAST,
                        route_roles=["DJ"], cache=True)
        assert sim.billed == []
    assert dry.cached == 5 and dry.cost(batch=False, cache=True) == 0
    assert second.cached == 5 and second.cost == 0
    models = [r["model"] for r in store.batch_results(first.batch_id)]
    assert [r["model"] for r in store.batch_results(second.batch_id)] == models
    assert models == [FAST, MAIN, MAIN, MAIN, FAST]


def test_a_failed_second_opinion_keeps_the_fast_models_answer(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_rows(tmp_path / "c.csv", [ROWS[2]])
    # every main-model request comes back invalid (twice: the answer and its re-ask)
    rules = [FaultRule(f'"model":"{MAIN}"', "invalid")]
    with Simulator(SimulatorConfig.instant(rules=rules)) as sim:
        summary = enrich(sim, store, inputs, output=str(tmp_path / "o.csv"), fast_model=FAST,
                         route_roles=["DJ"])
        billed = billed_by_model(sim)
    assert billed[FAST][0] == 1 and billed[MAIN][0] == 2
    (result,) = store.batch_results(summary.batch_id)
    assert result["status"] == "enriched" and result["model"] == FAST
    assert result["intel"]["confidence"] == "Low" and result["error"] is None
    assert result["attempts"] == 3
    assert result["cost"] == billed[FAST][1] + billed[MAIN][1]
    rows = {row.model: row for row in summary.models}
    assert (rows[FAST].contacts, rows[FAST].enriched) == (1, 1)
    assert (rows[MAIN].contacts, rows[MAIN].enriched) == (1, 0)


def test_routing_under_a_budget_reserves_at_each_models_price(
    tmp_path: Path, store: Store
) -> None:
    # five DJs on the fast model fit a cap the main model's worst case would not
    djs = [(f"D{i}", f"d{i}@x{i}.example", "X FM", "DJ") for i in range(5)]
    inputs = write_rows(tmp_path / "c.csv", djs)
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, output=str(tmp_path / "o.csv"), fast_model=FAST,
                         route_roles=["DJ"], max_cost=Decimal("0.05"))
    assert summary.status == "completed" and summary.enriched == 5
    assert summary.cost <= Decimal("0.05")


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def instant_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_SIMULATE_TTFT", "0")
    monkeypatch.setenv("INTEL_SIMULATE_SPEED", "inf")


def test_cli_per_model_table_shows_where_the_money_went(
    tmp_path: Path, instant_simulate: None
) -> None:
    inputs = write_rows(tmp_path / "c.csv")
    result = runner.invoke(
        app, ["enrich", str(inputs), "-o", str(tmp_path / "o.csv"), "--simulate",
              "--route-roles", "DJ", "--no-cache"]
    )
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("Per model"):]
    assert "Share" in table and FAST in table and MAIN in table
    assert "%" in table


def test_cli_fast_model_without_route_roles_is_exit_2(tmp_path: Path) -> None:
    inputs = write_rows(tmp_path / "c.csv")
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "--fast-model", FAST])
    assert result.exit_code == ExitCode.USAGE
    assert "--route-roles" in result.stderr
