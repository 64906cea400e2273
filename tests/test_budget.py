"""Money limits (SPEC 4.2, issue 7): `--max-cost` for a run and INTEL_DAILY_BUDGET for a UTC day
shared through the store. Store-level reserve/settle on every backend, concurrent holders that
must not overshoot, runs through the real SDK and simulator, and four real processes sharing a
daily cap on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intel_cli import budget as budgeting
from intel_cli.cli import app
from intel_cli.errors import ExitCode, ThresholdError, UsageError
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.pricing import price
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage
from tests.conftest import make_store, postgres_url

MODEL = "claude-sonnet-4-5"
DAY = date(2026, 12, 4)
T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=10)

runner = CliRunner()


def write_contacts(path: Path, n: int, prefix: str = "dj") -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            writer.writerow(
                [f"{prefix} {i}", f"{prefix}{i:03d}@station{i:03d}.example", f"Station {i} FM",
                 "Producer"]
            )
    return path


def read_output(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def enrich(sim: Simulator, store: Store, inputs: Path, **options: Any) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    return run(
        RunOptions(inputs=[str(inputs)], model=MODEL, **options),
        store,
        api_key="test-key",
        base_url=sim.base_url,
    )


def results_cost(store: Store, batch_id: str) -> Decimal:
    return sum((r["cost"] for r in store.batch_results(batch_id)), Decimal(0))


# --- amounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,amount", [("5", "5"), ("0.25", "0.25"), ("$10", "10")])
def test_parse_usd(text: str, amount: str) -> None:
    assert budgeting.parse_usd(text, "--max-cost") == Decimal(amount)


@pytest.mark.parametrize("text", ["", "abc", "0", "-1", "nan", "inf"])
def test_parse_usd_refuses_what_is_not_a_positive_amount(text: str) -> None:
    with pytest.raises(UsageError, match="--max-cost"):
        budgeting.parse_usd(text, "--max-cost")


def test_daily_budget_from_env() -> None:
    assert budgeting.daily_budget_from_env({}) is None
    assert budgeting.daily_budget_from_env({"INTEL_DAILY_BUDGET": " "}) is None
    assert budgeting.daily_budget_from_env({"INTEL_DAILY_BUDGET": "2.5"}) == Decimal("2.5")
    with pytest.raises(UsageError, match="INTEL_DAILY_BUDGET"):
        budgeting.daily_budget_from_env({"INTEL_DAILY_BUDGET": "lots"})


def test_worst_case_is_at_least_any_real_cost_of_that_request() -> None:
    worst = budgeting.worst_case(MODEL, 2000, 1024)
    for usage in (
        Usage(input=2000, output=1024),
        Usage(cache_write=2000, output=1024),  # a cache write costs 1.25x input
        Usage(input=500, cache_read=1500, output=1024),
    ):
        assert price(MODEL, usage).cost <= worst
    assert worst == price(MODEL, Usage(cache_write=2000, output=1024)).cost
    assert budgeting.worst_case("no-such-model", 2000, 1024) == 0


def test_non_ascii_contact_text_is_reserved_at_its_byte_length() -> None:
    from intel_cli.contacts import Contact

    plain = Contact(row_index=0, values={}, name="Ann", email="ann@x.example",
                    company="KEXP", role="DJ")
    assert budgeting.non_ascii_margin(plain) == 0
    cjk = Contact(row_index=1, values={}, name="山田太郎", email="t@x.example", company="東京FM",
                  role="DJ 🎧", context={"notes": "ラジオ"})
    # 4 + 2 + 3 CJK characters at 3 bytes, one emoji at 4
    assert budgeting.non_ascii_margin(cjk) == 9 * 3 + 4


# --- the store's daily ledger, on every backend --------------------------------------------------


def test_reserve_settle_release_and_status(store: Store) -> None:
    cap = Decimal("1.00")
    expires = T0 + timedelta(minutes=5)
    a = store.budget_reserve(DAY, Decimal("0.40"), cap, batch_id="b_1", now=T0, expires_at=expires)
    b = store.budget_reserve(DAY, Decimal("0.40"), cap, batch_id="b_2", now=T0, expires_at=expires)
    assert a is not None and b is not None and a != b
    # 0.80 held: another 0.40 would pass the cap, 0.20 fits exactly
    assert store.budget_reserve(
        DAY, Decimal("0.40"), cap, batch_id="b_3", now=T0, expires_at=expires
    ) is None
    c = store.budget_reserve(DAY, Decimal("0.20"), cap, batch_id="b_3", now=T0, expires_at=expires)
    assert c is not None
    status = store.budget_status(DAY, now=T0)
    assert (status.spent, status.reserved, status.holds) == (0, Decimal("1.00"), 3)

    store.budget_settle(a, DAY, Decimal("0.1234567891"), now=T0)  # cheaper than its hold
    status = store.budget_status(DAY, now=T0)
    assert status.spent == Decimal("0.1234567891")
    assert status.reserved == Decimal("0.60") and status.holds == 2
    # what a settled hold freed can be held again
    assert store.budget_reserve(
        DAY, Decimal("0.25"), cap, batch_id="b_1", now=T0, expires_at=expires
    ) is not None

    assert store.budget_release("b_2") == 1
    assert store.budget_release("b_2") == 0
    # another day is another budget
    other = store.budget_status(DAY + timedelta(days=1), now=T0)
    assert (other.spent, other.reserved, other.holds) == (0, 0, 0)


def test_expired_holds_of_a_dead_process_stop_counting(store: Store) -> None:
    cap = Decimal("1")
    dead = store.budget_reserve(
        DAY, Decimal("0.9"), cap, batch_id="b_dead", now=T0, expires_at=T0 + timedelta(minutes=5)
    )
    assert dead is not None
    expires = LATER + timedelta(minutes=5)
    assert store.budget_reserve(
        DAY, Decimal("0.5"), cap, batch_id="b_new", now=T0, expires_at=expires
    ) is None
    # ten minutes on, the dead process's hold has expired
    assert store.budget_status(DAY, now=LATER).holds == 0
    assert store.budget_reserve(
        DAY, Decimal("0.5"), cap, batch_id="b_new", now=LATER, expires_at=expires
    ) is not None
    # a late settle of the expired hold still counts what was really spent
    store.budget_settle(dead, DAY, Decimal("0.3"), now=LATER)
    assert store.budget_status(DAY, now=LATER).spent == Decimal("0.3")


def test_output_history_is_the_mean_of_recent_single_attempt_answers(store: Store) -> None:
    from intel_cli.stores.base import ContactResult

    assert store.output_history(MODEL) == (0, None)
    store.create_batch("b_h", model_used=MODEL, mode="simulated", metadata={}, now=T0)
    rows = [("enriched", 1, 400), ("enriched", 1, 500), ("enriched", 2, 9000), ("failed", 1, 7)]
    for i, (status, attempts, output) in enumerate(rows):
        store.record_result(
            ContactResult("b_h", i, f"k{i}", status, model=MODEL, attempts=attempts,
                          usage=Usage(input=10, output=output))
        )
    assert store.output_history(MODEL) == (2, Decimal(450))
    assert store.output_history("claude-haiku-4-5") == (0, None)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_holders_never_hold_more_than_the_cap(backend: str, tmp_path: Path) -> None:
    """Eight threads, each with its own connection (as separate processes have), race to hold
    0.07 each against a cap of 1.00: exactly 14 fit, never more."""
    first = make_store(backend, tmp_path)
    url = getattr(first, "schema_url", None)

    def connect() -> Store:
        if backend == "sqlite":
            return SQLiteStore(tmp_path / "store.db")
        from intel_cli.stores.postgres import PostgresStore

        assert url is not None
        return PostgresStore(url)

    cap, amount = Decimal("1.00"), Decimal("0.07")
    got: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def hold(n: int) -> None:
        try:
            with connect() as mine:
                barrier.wait()
                for _ in range(5):
                    hold_id = mine.budget_reserve(
                        DAY, amount, cap, batch_id=f"b_{n}", now=T0,
                        expires_at=T0 + timedelta(minutes=5),
                    )
                    if hold_id is not None:
                        with lock:
                            got.append(hold_id)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=hold, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        assert len(got) == 14 and len(set(got)) == 14
        status = first.budget_status(DAY, now=T0)
        assert status.reserved == amount * 14 <= cap
    finally:
        first.close()


# --- --max-cost through the pipeline -------------------------------------------------------------


def _one_request_cost(sim: Simulator, store: Store, tmp_path: Path) -> Decimal:
    """The real cost of one contact's request, from a run of one."""
    inputs = write_contacts(tmp_path / "one.csv", 1, prefix="solo")
    summary = enrich(sim, store, inputs, output=str(tmp_path / "one.out.csv"), cache=False)
    sim.reset()
    return summary.cost


def test_max_cost_stops_before_the_cap_and_marks_the_rest_over_budget(
    tmp_path: Path, store: Store
) -> None:
    with Simulator(SimulatorConfig.instant()) as sim:
        one = _one_request_cost(sim, store, tmp_path)
        inputs = write_contacts(tmp_path / "c.csv", 20)
        cap = one * 6  # room for a few requests, nowhere near 20
        out = tmp_path / "c.out.csv"
        summary = enrich(sim, store, inputs, output=str(out), max_cost=cap, concurrency=4,
                         cache=False)
        billed = list(sim.billed)

    assert summary.status == "over_budget"
    assert isinstance(summary.error, ThresholdError)
    assert summary.error.exit_code == ExitCode.THRESHOLD
    assert "--max-cost" in str(summary.error)
    results = store.batch_results(summary.batch_id)
    spent = results_cost(store, summary.batch_id)
    # the invariant: what was really spent never exceeds the cap
    assert 0 < spent <= cap
    assert spent == summary.cost
    billed_cost = sum((price(MODEL, Usage.from_api(b)).cost for b in billed), Decimal(0))
    assert billed_cost == spent
    statuses = [r["status"] for r in results]
    assert statuses.count("enriched") == len(billed) >= 1
    assert statuses.count("over_budget") == 20 - len(billed)
    over = [r for r in results if r["status"] == "over_budget"]
    assert all(r["attempts"] == 0 and r["cost"] == 0 for r in over)
    assert all("--max-cost" in (r["error"] or "") for r in over)
    batch = store.get_batch(summary.batch_id)
    assert batch is not None and batch["status"] == "over_budget"
    assert batch["enriched"] == len(billed) and batch["failed"] == 20 - len(billed)
    rows = read_output(out)
    assert len(rows) == 20
    assert sum(r["intel_status"] == "over_budget" for r in rows) == 20 - len(billed)


def test_a_cap_that_holds_everything_changes_nothing(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 5)
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, output=str(tmp_path / "o.csv"),
                         max_cost=Decimal("100"), cache=False)
    assert summary.status == "completed" and summary.error is None
    assert summary.enriched == 5


def test_a_cap_below_one_request_sends_nothing(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, output=str(tmp_path / "o.csv"),
                         max_cost=Decimal("0.0001"), cache=False)
        assert sim.billed == [] and sim.stats.requests == 0
    assert summary.status == "over_budget" and isinstance(summary.error, ThresholdError)
    assert [r["status"] for r in store.batch_results(summary.batch_id)] == ["over_budget"] * 3


# --- the daily budget through the pipeline --------------------------------------------------------


def test_a_daily_budget_carries_over_from_one_run_to_the_next(
    tmp_path: Path, store: Store
) -> None:
    with Simulator(SimulatorConfig.instant()) as sim:
        one = _one_request_cost(sim, store, tmp_path)
        daily = one * 7
        first = enrich(sim, store, write_contacts(tmp_path / "a.csv", 4, "a"),
                       output=str(tmp_path / "a.out.csv"), daily_budget=daily, cache=False)
        second = enrich(sim, store, write_contacts(tmp_path / "b.csv", 10, "b"),
                        output=str(tmp_path / "b.out.csv"), daily_budget=daily, cache=False)
    assert first.status == "completed" and first.enriched == 4
    assert second.status == "over_budget" and isinstance(second.error, ThresholdError)
    assert "INTEL_DAILY_BUDGET" in str(second.error)
    assert 0 < second.enriched < 10
    spent = results_cost(store, first.batch_id) + results_cost(store, second.batch_id)
    assert spent <= daily
    today = datetime.now(UTC).date()
    status = store.budget_status(today, now=datetime.now(UTC))
    # the ledger holds exactly what the two runs spent, and no hold is left behind
    assert status.spent == spent and status.holds == 0


# --- the CLI ------------------------------------------------------------------------------------


@pytest.fixture
def instant_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_SIMULATE_TTFT", "0")
    monkeypatch.setenv("INTEL_SIMULATE_SPEED", "inf")


def test_cli_max_cost_is_exit_5_with_the_output_written(
    tmp_path: Path, instant_simulate: None
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 6)
    out = tmp_path / "c.out.csv"
    result = runner.invoke(
        app, ["enrich", str(inputs), "-o", str(out), "--simulate", "--max-cost", "0.03",
              "--json", "--no-cache"]
    )
    assert result.exit_code == ExitCode.THRESHOLD, result.output
    assert '"status": "over_budget"' in result.stdout
    assert "--max-cost $0.03 reached" in result.stdout
    rows = read_output(out)
    assert len(rows) == 6 and any(r["intel_status"] == "over_budget" for r in rows)


@pytest.mark.parametrize("value", ["0", "-2", "ten"])
def test_cli_bad_max_cost_is_exit_2(tmp_path: Path, value: str) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 1)
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "--max-cost", value])
    assert result.exit_code == ExitCode.USAGE
    assert "--max-cost" in result.stderr


def test_cli_bad_daily_budget_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_DAILY_BUDGET", "plenty")
    inputs = write_contacts(tmp_path / "c.csv", 1)
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate"])
    assert result.exit_code == ExitCode.USAGE
    assert "INTEL_DAILY_BUDGET" in result.stderr


# --- four processes, one daily cap ----------------------------------------------------------------


def _four_processes(tmp_path: Path, store_arg: str, open_store: Callable[[], Store]) -> None:
    """Four real `intel enrich --simulate` processes share INTEL_DAILY_BUDGET through one store;
    the sum of every intel_results cost never exceeds it."""
    daily = Decimal("0.12")  # about 11 requests of ~$0.011 for 4 x 8 contacts
    env = {
        **os.environ,
        "INTEL_DAILY_BUDGET": str(daily),
        "INTEL_SIMULATE_TTFT": "0.05",
        "INTEL_SIMULATE_SPEED": "inf",
    }
    procs = []
    for n in range(4):
        inputs = write_contacts(tmp_path / f"p{n}.csv", 8, prefix=f"p{n}x")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "intel_cli", "enrich", str(inputs), "--simulate",
                 "--store", store_arg, "--quiet", "--no-cache", "--batch-id", f"b_four_{n}",
                 "--concurrency", "4"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            )
        )
    outcomes = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        outcomes.append((proc.returncode, stderr))
    codes = [code for code, _ in outcomes]
    assert set(codes) <= {0, 5}, outcomes
    assert 5 in codes, outcomes  # the cap was reached: somebody was stopped
    assert all("INTEL_DAILY_BUDGET" in err for code, err in outcomes if code == 5)
    with open_store() as store:
        spent = sum((results_cost(store, f"b_four_{n}") for n in range(4)), Decimal(0))
        enriched = sum(
            r["status"] == "enriched"
            for n in range(4)
            for r in store.batch_results(f"b_four_{n}")
        )
        now = datetime.now(UTC)
        status = store.budget_status(now.date(), now=now)
    assert 0 < spent <= daily
    assert status.spent == spent and status.holds == 0
    # the cap was used, not abandoned early: at most a couple of requests' worth is left
    assert enriched >= 6
    worst = budgeting.worst_case(MODEL, 3000, 1024)
    assert daily - spent < 2 * worst


def test_four_processes_share_a_daily_cap_on_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with SQLiteStore(path) as store:
        store.migrate()
    _four_processes(tmp_path, str(path), lambda: SQLiteStore(path))


@pytest.mark.postgres
def test_four_processes_share_a_daily_cap_on_postgres(tmp_path: Path) -> None:
    url = postgres_url()
    assert url is not None
    from intel_cli.stores.postgres import PostgresStore
    from tests.pg import fresh_postgres_store

    first = fresh_postgres_store(url)
    try:
        _four_processes(tmp_path, first.schema_url, lambda: PostgresStore(first.schema_url))
    finally:
        first.close()


# --- Supabase: the same SQL functions over its REST rpc -------------------------------------------


@pytest.mark.postgres
def test_supabase_budget_goes_through_the_sql_functions() -> None:
    """The rpc calls reach the 0002 functions with their named arguments (the fake PostgREST
    of test_supabase runs each rpc on a real PostgreSQL), and their answers parse."""
    from intel_cli.stores.supabase import SupabaseStore
    from tests.pg import fresh_postgres_store
    from tests.test_supabase import KEY, URL, FakeRest

    url = postgres_url()
    assert url is not None
    pg = fresh_postgres_store(url)
    fake = FakeRest(pg_url=pg.schema_url)
    try:
        with SupabaseStore(URL, KEY, transport=fake, retry=False) as store:
            cap, expires = Decimal("1"), T0 + timedelta(minutes=5)
            a = store.budget_reserve(DAY, Decimal("0.6"), cap, batch_id="b_s", now=T0,
                                     expires_at=expires)
            assert isinstance(a, int)
            assert store.budget_reserve(DAY, Decimal("0.6"), cap, batch_id="b_s", now=T0,
                                        expires_at=expires) is None
            store.budget_settle(a, DAY, Decimal("0.25"), now=T0)
            status = store.budget_status(DAY, now=T0)
            assert (status.spent, status.reserved, status.holds) == (Decimal("0.25"), 0, 0)
            assert store.budget_reserve(DAY, Decimal("0.6"), cap, batch_id="b_s", now=T0,
                                        expires_at=expires) is not None
            assert store.budget_release("b_s") == 1
            assert store.output_history(MODEL) == (0, None)
        paths = [r.url.path for r in fake.requests]
        assert paths[0] == "/rest/v1/rpc/intel_budget_reserve"
        assert "/rest/v1/rpc/intel_budget_settle" in paths
        first = json.loads(fake.requests[0].content)
        assert first == {
            "p_day": "2026-12-04", "p_amount": "0.6", "p_cap": "1", "p_batch_id": "b_s",
            "p_now": "2026-12-04T12:00:00.000000Z", "p_expires_at": "2026-12-04T12:05:00.000000Z",
        }
        # the day in PostgreSQL holds what the REST calls did
        assert pg.budget_status(DAY, now=T0).spent == Decimal("0.25")
    finally:
        pg.close()
