"""`intel metrics`, `intel limiter`, `intel batches show` and `intel migrate` end to end:
through the root app (exit codes, one-line errors) against real stores (a SQLite file, and
PostgreSQL when INTEL_TEST_POSTGRES_URL is set) seeded through the Store interface."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from intel_cli import render, timeparse
from intel_cli.cli import app
from intel_cli.errors import ExitCode
from intel_cli.stores import open_store
from intel_cli.stores.base import BatchTotals, ContactResult, Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage
from tests.conftest import postgres_url

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]

NOW = datetime(2025, 11, 12, 12, 0, tzinfo=UTC)
SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"
OLD, B1, B2 = "b_20251105T080000_old000", "b_20251111T100000_aaa111", "b_20251112T090000_bbb222"

runner = CliRunner()


@pytest.fixture(autouse=True)
def frozen_clock_and_fresh_consoles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(timeparse, "now", lambda: NOW)
    # wide enough that batch ids and timestamps never wrap in table assertions
    monkeypatch.setenv("COLUMNS", "160")
    render.use_consoles(None, None)  # consoles bind to CliRunner's streams when first used
    yield
    render.use_consoles(None, None)


def add_batch(
    store: Store,
    batch_id: str,
    *,
    created: datetime,
    model: str,
    mode: str,
    outcomes: list[tuple[str, str | None, Decimal, int]],  # status, model, cost, latency
    avg_time_ms: int,
    usage: Usage,
) -> None:
    store.create_batch(
        batch_id, model_used=model, mode=mode, metadata={"input": "contacts.csv"},
        total=len(outcomes), now=created,
    )
    for i, (status, row_model, cost, latency) in enumerate(outcomes):
        store.record_result(
            ContactResult(
                batch_id=batch_id, row_index=i, contact_key=f"c{i}@example.com", status=status,
                model=row_model, usage=Usage(input=100, output=50) if row_model else Usage(),
                cost=cost, latency_ms=latency, attempts=1 if row_model else 0,
                error=None if status == "enriched" else f"{status} here",
                created_at=created + timedelta(seconds=i),
            )
        )
    total = sum(1 for status, *_ in outcomes if status != "skipped")
    enriched = sum(1 for status, *_ in outcomes if status == "enriched")
    store.finalise_batch(
        batch_id,
        BatchTotals(
            status="completed", total=total, enriched=enriched, failed=total - enriched,
            skipped=len(outcomes) - total, cost=sum((c for *_, c, _ in outcomes), Decimal(0)),
            avg_time_ms=avg_time_ms, usage=usage,
        ),
        now=created + timedelta(minutes=2),
    )


def seed(store: Store) -> None:
    """B1 (yesterday, sonnet, 9/10), B2 (today, haiku, 2/4 plus one skipped row), and an
    old batch outside every window the tests use except --since 4w / 8d."""
    add_batch(
        store, OLD, created=datetime(2025, 11, 5, 8, 0, tzinfo=UTC), model=SONNET, mode="realtime",
        outcomes=[("enriched", SONNET, Decimal("1"), 500)], avg_time_ms=500,
        usage=Usage(input=100, output=50),
    )
    add_batch(
        store, B1, created=datetime(2025, 11, 11, 10, 0, tzinfo=UTC), model=SONNET,
        mode="realtime",
        outcomes=[("enriched", SONNET, Decimal("0.005"), 600)] * 9
        + [("failed", SONNET, Decimal("0.005"), 600)],
        avg_time_ms=600, usage=Usage(input=1000, output=2000),
    )
    add_batch(
        store, B2, created=datetime(2025, 11, 12, 9, 0, tzinfo=UTC), model=HAIKU, mode="batch",
        outcomes=[
            ("enriched", HAIKU, Decimal("0.0025"), 400),
            ("enriched", HAIKU, Decimal("0.0025"), 400),
            ("failed", HAIKU, Decimal("0.0025"), 400),
            ("timed_out", HAIKU, Decimal("0.0025"), 400),
            ("skipped", None, Decimal(0), 0),
        ],
        avg_time_ms=400, usage=Usage(input=300, output=200, cache_read=7),
    )


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The `--store` value of a seeded store."""
    if request.param == "sqlite":
        path = tmp_path / "seeded.db"
        with SQLiteStore(path) as sqlite_store:
            sqlite_store.migrate()
            seed(sqlite_store)
        yield str(path)
        return
    from tests.pg import fresh_postgres_store

    url = postgres_url()
    assert url is not None
    pg_store = fresh_postgres_store(url)  # its schema is dropped on close
    try:
        seed(pg_store)
        yield pg_store.schema_url
    finally:
        pg_store.close()


@pytest.fixture(params=BACKENDS)
def blank(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(`--store` value, backend) of a store nobody has migrated yet."""
    if request.param == "sqlite":
        yield str(tmp_path / "fresh.db"), "sqlite"
        return
    from tests.pg import blank_schema_url

    url = postgres_url()
    assert url is not None
    with blank_schema_url(url) as schema_url:
        yield schema_url, "postgres"


def shown(url: str) -> str:
    """How the commands name this store (passwords redacted)."""
    with open_store(url, auto_migrate=False) as store:
        return store.display_name


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return runner.invoke(app, list(args), env=env)


def as_json(result: Result) -> Any:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout)


def one_error_line(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("Error: ")
    return lines[0]


# --- intel metrics ---------------------------------------------------------------------------


def test_metrics_json_is_exactly_the_spec_shape(db: str) -> None:
    result = invoke("metrics", "--store", db, "--since", "2025-11-11", "--until", "now",
                    "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    data = as_json(result)
    assert list(data)[:6] == [
        "success", "timeframe", "summary", "tokens", "modelBreakdown", "recentBatches"
    ]
    assert data["success"] is True
    assert data["timeframe"] == {"since": "2025-11-11T00:00:00Z", "until": "2025-11-12T12:00:00Z"}
    # 14 contacts (the skipped row is not one), 11 enriched: 78.57 %;
    # time (600*10 + 400*4) / 14 = 542.86 -> 543 ms; cost 0.05 + 0.01
    assert data["summary"] == {
        "totalBatches": 2, "totalContacts": 14, "totalEnriched": 11, "totalFailed": 3,
        "totalCost": 0.06, "avgSuccessRate": 78.57, "avgTimePerContact": 543,
    }
    assert data["tokens"]["totalInput"] == 1300
    assert data["tokens"]["totalOutput"] == 2200
    assert data["tokens"]["total"] == 3500
    assert data["modelBreakdown"] == {SONNET: 10, HAIKU: 4}
    recent = data["recentBatches"]
    assert [b["batch_id"] for b in recent] == [B2, B1]
    assert recent[0]["created_at"] == "2025-11-12T09:00:00Z"
    assert {"batch_id", "created_at", "total", "enriched", "failed", "cost", "success_rate",
            "retried", "timed_out", "mode", "status"} <= set(recent[0])
    assert recent[0]["mode"] == "batch" and recent[0]["status"] == "completed"
    assert recent[0]["cost"] == 0.01 and recent[0]["success_rate"] == 50.0
    assert "byDay" not in data and "byModel" not in data


def test_metrics_defaults_to_the_last_24_hours(db: str) -> None:
    data = as_json(invoke("metrics", "--json", "--store", db))
    assert data["timeframe"] == {"since": "2025-11-11T12:00:00Z", "until": "2025-11-12T12:00:00Z"}
    assert [b["batch_id"] for b in data["recentBatches"]] == [B2]
    assert data["summary"]["totalContacts"] == 4


def test_metrics_window_ends_on_a_whole_second(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeparse, "now", lambda: NOW.replace(microsecond=250_000))
    data = as_json(invoke("metrics", "--json", "--store", db))
    assert data["timeframe"] == {"since": "2025-11-11T12:00:01Z", "until": "2025-11-12T12:00:01Z"}


def test_metrics_relative_since_and_recent(db: str) -> None:
    data = as_json(invoke("metrics", "--json", "--since", "4w", "--recent", "2", "--store",
                          db))
    assert data["summary"]["totalBatches"] == 3
    assert [b["batch_id"] for b in data["recentBatches"]] == [B2, B1]


def test_metrics_by_day_and_by_model(db: str) -> None:
    data = as_json(invoke("metrics", "--json", "--since", "8d", "--by", "day", "--store",
                          db))
    assert [(d["day"], d["batches"], d["contacts"]) for d in data["byDay"]] == [
        ("2025-11-05", 1, 1), ("2025-11-11", 1, 10), ("2025-11-12", 1, 4)
    ]
    assert data["byDay"][1]["cost"] == 0.05
    data = as_json(invoke("metrics", "--json", "--since", "2025-11-11", "--by", "model",
                          "--store", db))
    by_model = {m["model"]: m for m in data["byModel"]}
    assert by_model[SONNET]["contacts"] == 10 and by_model[SONNET]["enriched"] == 9
    assert by_model[HAIKU]["cost"] == 0.01
    assert "byDay" not in data


def test_metrics_tables(db: str) -> None:
    result = invoke("metrics", "--since", "2025-11-11", "--by", "day", "--store", db)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert shown(db) in out
    assert "Metrics from 2025-11-11T00:00:00Z to 2025-11-12T12:00:00Z" in out
    for expected in ("78.57%", "$0.0600", "543 ms", B1, B2, "2025-11-12 09:00", "Per day",
                     "2025-11-11", SONNET, HAIKU, "50.00%", "90.00%"):
        assert expected in out, expected
    assert not out.lstrip().startswith("{")


def test_metrics_empty_window_is_not_an_error(db: str) -> None:
    result = invoke("metrics", "--json", "--since", "2020-01-01", "--until", "2020-01-02",
                    "--store", db)
    assert result.exit_code == 0
    data = as_json(result)
    assert data["summary"]["totalBatches"] == 0 and data["summary"]["avgSuccessRate"] == 0
    assert data["recentBatches"] == [] and data["modelBreakdown"] == {}
    text = invoke("metrics", "--since", "2020-01-01", "--until", "2020-01-02", "--store", db)
    assert text.exit_code == 0 and "No batches in this window." in text.stdout
    # nothing was rated, so a cron alert on the success rate has nothing to fire on
    alert = invoke("metrics", "--since", "2020-01-01", "--until", "2020-01-02",
                   "--fail-under", "90", "--budget", "0", "--store", db)
    assert alert.exit_code == 0, alert.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "xyz"], "Error: bad --since value 'xyz': use an ISO date (2025-11-12), a "
                             "duration (24h, 7d), today, yesterday or now"),
        (["--until", "tomorrowish"], "Error: bad --until value 'tomorrowish'"),
        (["--since", "today", "--until", "yesterday"], "Error: --since (2025-11-12T00:00:00Z) "
                                                       "must be before --until"),
        (["--since", "now"], "Error: --since (2025-11-12T12:00:00Z) must be before --until"),
        (["--budget", "lots"], "Error: bad --budget value 'lots'"),
        (["--by", "week"], "Error: Invalid value for '--by'"),
        (["--fail-under", "120"], "Error: Invalid value for '--fail-under'"),
        (["--bogus"], "Error: No such option: --bogus"),
    ],
)
def test_metrics_usage_errors_exit_2(db: str, args: list[str], message: str) -> None:
    result = invoke("metrics", "--json", *args, "--store", db)
    assert result.exit_code == ExitCode.USAGE
    assert one_error_line(result).startswith(message)
    assert result.stdout == ""


def test_fail_under_exits_5_after_printing_the_json(db: str) -> None:
    result = invoke("metrics", "--json", "--since", "2025-11-11", "--fail-under", "80",
                    "--store", db)
    assert result.exit_code == ExitCode.THRESHOLD
    data = as_json(result)
    assert data["success"] is False
    assert data["error"] == "success rate 78.57% is under --fail-under 80%"
    assert data["summary"]["avgSuccessRate"] == 78.57
    assert one_error_line(result) == "Error: success rate 78.57% is under --fail-under 80%"

    ok = invoke("metrics", "--json", "--since", "2025-11-11", "--fail-under", "78.5",
                "--store", db)
    assert ok.exit_code == 0 and as_json(ok)["success"] is True and "error" not in as_json(ok)


def test_budget_exits_5_and_tables_still_print(db: str) -> None:
    result = invoke("metrics", "--since", "2025-11-11", "--budget", "0.05", "--store", db)
    assert result.exit_code == ExitCode.THRESHOLD
    assert "$0.0600" in result.stdout  # the report is printed before the alert
    assert one_error_line(result) == "Error: cost $0.0600 is over --budget $0.05"
    assert invoke("metrics", "--since", "2025-11-11", "--budget", "0.06", "--store",
                  db).exit_code == 0


def test_both_thresholds_in_one_line(db: str) -> None:
    result = invoke("metrics", "--json", "--since", "2025-11-11", "--budget", "$0.01",
                    "--fail-under", "99", "--store", db)
    assert result.exit_code == ExitCode.THRESHOLD
    line = one_error_line(result)
    assert "--fail-under 99%" in line and "--budget $0.01" in line
    assert as_json(result)["error"] == line.removeprefix("Error: ")


def test_store_from_env_and_before_the_command(db: str) -> None:
    env_run = invoke("metrics", "--json", "--since", "2025-11-11", env={"INTEL_STORE": db})
    spelled = db if db.startswith("postgresql://") else f"sqlite:{db}"
    before = invoke("--store", spelled, "metrics", "--json", "--since", "2025-11-11")
    assert env_run.exit_code == before.exit_code == 0
    assert as_json(env_run)["summary"]["totalBatches"] == 2
    assert as_json(before) == as_json(env_run)


def test_default_store_is_created_under_intel_home(intel_home: Path) -> None:
    result = invoke("metrics", "--json")
    assert result.exit_code == 0, result.stderr
    assert as_json(result)["summary"]["totalBatches"] == 0
    assert (intel_home / "intel.db").exists()


# --- intel limiter ---------------------------------------------------------------------------


def test_limiter_status_reset_cycle(db: str) -> None:
    inactive = {"active": False, "blockedUntil": None, "reason": None, "setBy": None}
    assert as_json(invoke("limiter", "status", "--json", "--store", db)) == inactive
    text = invoke("limiter", "status", "--store", db)
    assert text.exit_code == 0
    assert text.stdout.strip() == f"The anthropic limiter is not active in {shown(db)}."

    with open_store(db) as store:
        store.block_limiter(NOW + timedelta(seconds=90), reason="429 from the API",
                            set_by=B2, now=NOW)

    assert as_json(invoke("limiter", "status", "--json", "--store", db)) == {
        "active": True, "blockedUntil": "2025-11-12T12:01:30Z", "reason": "429 from the API",
        "setBy": B2,
    }
    text = invoke("limiter", "status", "--store", db)
    assert "active for 90 more s (blocked until 2025-11-12T12:01:30Z" in text.stdout
    assert B2 in text.stdout

    reset = invoke("limiter", "reset", "--store", db)
    assert reset.exit_code == 0
    assert reset.stdout.strip() == (
        f"Cleared the anthropic limiter (blocked until 2025-11-12T12:01:30Z, set by {B2}, "
        "reason 429 from the API)."
    )
    assert as_json(invoke("limiter", "status", "--json", "--store", db)) == inactive
    again = invoke("limiter", "reset", "--store", db)
    assert again.stdout.strip() == "The limiter was not active; nothing to clear."


def test_expired_block_is_inactive(db: str) -> None:
    with open_store(db) as store:
        store.block_limiter(NOW - timedelta(seconds=1), reason="old", set_by=B1,
                            now=NOW - timedelta(minutes=1))
    assert as_json(invoke("limiter", "status", "--json", "--store", db))["active"] is False
    text = invoke("limiter", "status", "--store", db).stdout
    assert "not active (its last block ended at 2025-11-12T11:59:59Z)" in text
    assert invoke("limiter", "reset", "--store", db).stdout.strip() == (
        "The limiter was not active; nothing to clear."
    )


@pytest.mark.parametrize("group", ["limiter", "batches"])
def test_group_without_subcommand_shows_help_exit_0(group: str) -> None:
    result = invoke(group)
    assert result.exit_code == 0, result.stderr
    assert "Usage: intel " + group in result.stdout
    assert ("reset" if group == "limiter" else "show") in result.stdout
    assert result.stderr == ""


# --- intel batches show ----------------------------------------------------------------------


def test_batches_show_json(db: str) -> None:
    result = invoke("batches", "show", B2, "--json", "--store", db)
    assert result.exit_code == 0, result.stderr
    data = as_json(result)
    assert data["success"] is True
    batch = data["batch"]
    assert batch["batch_id"] == B2 and batch["status"] == "completed" and batch["mode"] == "batch"
    assert (batch["total"], batch["enriched"], batch["failed"], batch["skipped"]) == (4, 2, 2, 1)
    assert batch["cost"] == 0.01  # a number, not a string
    assert batch["created_at"] == "2025-11-12T09:00:00Z"
    assert batch["finished_at"] == "2025-11-12T09:02:00Z"
    assert batch["metadata"]["input"] == "contacts.csv"
    results = data["results"]
    assert [r["row_index"] for r in results] == [0, 1, 2, 3, 4]
    assert [r["status"] for r in results] == ["enriched", "enriched", "failed", "timed_out",
                                              "skipped"]
    assert results[0]["cost"] == 0.0025 and results[0]["model"] == HAIKU
    assert results[4]["model"] is None and results[4]["cost"] == 0
    assert results[0]["created_at"] == "2025-11-12T09:00:00Z"
    assert results[1]["created_at"] == "2025-11-12T09:00:01Z"


def test_batches_show_tables(db: str) -> None:
    result = invoke("batches", "show", B1, "--store", db)
    assert result.exit_code == 0, result.stderr
    for expected in (f"Batch {B1}", shown(db), "realtime", SONNET, "2025-11-11T10:00:00Z",
                     "90.00%", "$0.0500", "600 ms", "c9@example.com", "failed here",
                     "100/50", "$0.0050"):
        assert expected in result.stdout, expected


def test_batches_show_unknown_id_exits_2(db: str) -> None:
    result = invoke("batches", "show", "b_nope", "--store", db)
    assert result.exit_code == ExitCode.USAGE
    assert one_error_line(result).startswith(f"Error: no batch 'b_nope' in the store {shown(db)}")
    assert result.stdout == ""


def test_batches_show_needs_an_id(db: str) -> None:
    result = invoke("batches", "show", "--store", db)
    assert result.exit_code == ExitCode.USAGE
    assert "BATCH_ID" in one_error_line(result)


# --- intel migrate ---------------------------------------------------------------------------


def migration_names(backend: str) -> list[str]:
    root = Path(__file__).parent.parent / "migrations" / backend
    return sorted(p.stem for p in root.glob("*.sql"))


def test_migrate_applies_then_says_nothing_to_do(blank: tuple[str, str]) -> None:
    url, backend = blank
    names = migration_names(backend)
    assert names
    first = invoke("migrate", "--store", url)
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[: len(names)] == [f"Applied {name}" for name in names]
    second = invoke("migrate", "--store", url)
    assert second.exit_code == 0
    assert second.stdout.strip() == (
        f"Nothing to migrate: {len(names)} migrations already applied ({shown(url)})."
    )


def test_migrate_status_and_print_sql_apply_nothing(blank: tuple[str, str]) -> None:
    url, backend = blank
    names = migration_names(backend)
    status = invoke("migrate", "--status", "--store", url)
    assert status.exit_code == 0, status.stderr
    assert all(name in status.stdout for name in names)
    assert "pending" in status.stdout and f"{len(names)} pending" in status.stdout

    sql = invoke("migrate", "--print-sql", "--store", url)
    assert sql.exit_code == 0
    assert sql.stdout.startswith(f"-- {names[0]}\n")
    assert "CREATE TABLE" in sql.stdout.upper()
    with open_store(url, auto_migrate=False) as store:
        assert store.migrations()[0] == []  # still nothing applied

    assert invoke("migrate", "--store", url).exit_code == 0
    status = invoke("migrate", "--status", "--store", url)
    assert "Up to date" in status.stdout and "pending" not in status.stdout
    sql = invoke("migrate", "--print-sql", "--store", url)
    assert sql.stdout.strip() == f"-- Nothing to migrate: {len(names)} migrations already applied."


def test_migrate_status_and_print_sql_together_exit_2(tmp_path: Path) -> None:
    result = invoke("migrate", "--status", "--print-sql", "--store", str(tmp_path / "x.db"))
    assert result.exit_code == ExitCode.USAGE
    assert "--status and --print-sql" in one_error_line(result)
    assert not (tmp_path / "x.db").exists()  # rejected before the store was opened


def test_metrics_until_alone_gives_the_24_hours_before_it(db: str) -> None:
    data = as_json(invoke("metrics", "--json", "--until", "2025-11-12T00:00", "--store", db))
    assert data["timeframe"] == {"since": "2025-11-11T00:00:00Z", "until": "2025-11-12T00:00:00Z"}
    assert [b["batch_id"] for b in data["recentBatches"]] == [B1]


@pytest.mark.postgres
def test_store_password_never_printed() -> None:
    from tests.pg import fresh_postgres_store

    url = postgres_url()
    assert url is not None
    with fresh_postgres_store(url) as store:
        seed(store)
        # the test server trusts local connections, so any password is accepted and ignored
        secret_url = store.schema_url.replace(
            "postgresql://postgres@", "postgresql://postgres:hunter2pw@"
        )
        assert "hunter2pw" in secret_url
        outputs = [
            invoke("metrics", "--since", "4w", "--store", secret_url),
            invoke("batches", "show", B1, "--store", secret_url),
            invoke("batches", "show", "b_nope", "--store", secret_url),
            invoke("limiter", "status", "--store", secret_url),
            invoke("migrate", "--status", "--store", secret_url),
        ]
    for result in outputs:
        assert "hunter2pw" not in result.stdout + result.stderr
        assert "postgres:***@" in result.stdout + result.stderr
