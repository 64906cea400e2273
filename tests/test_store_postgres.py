"""PostgreSQL-specific behaviour: migrations, exit-4 errors, limiter atomicity, RLS.

Runs against the real server of INTEL_TEST_POSTGRES_URL, each test in its own schema
(tests/pg.py). The backend-agnostic contract lives in tests/test_store.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.errors import ExitCode, StoreUnavailable
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores import open_store
from intel_cli.stores import postgres as pg_module
from intel_cli.stores.base import Migration
from intel_cli.stores.migrations import load_migrations
from intel_cli.stores.postgres import PostgresStore
from tests.conftest import postgres_url
from tests.pg import blank_schema_url, fresh_postgres_store

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
TABLES = (
    "intel_schema_migrations", "intel_logs", "intel_results", "intel_limiter",
    "intel_budget", "intel_budget_holds",
)
SHIPPED = [m.name for m in load_migrations("postgres")]
EXAMPLES = Path(__file__).parents[1] / "examples" / "contacts.csv"
runner = CliRunner()


@pytest.fixture
def admin_url() -> str:
    url = postgres_url()
    assert url is not None
    return url


@pytest.fixture
def blank_url(admin_url: str) -> Iterator[str]:
    """A URL whose search_path is an empty schema of its own."""
    with blank_schema_url(admin_url) as url:
        yield url


def with_password(url: str, password: str) -> str:
    """The same server with a password in the URL (trust auth ignores it; we must hide it)."""
    parts = urlsplit(url)
    user = parts.username or "postgres"
    host = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def schema_of(store: PostgresStore) -> str:
    with store._cursor() as cur:
        cur.execute("SELECT current_schema() AS s")
        row = cur.fetchone()
    assert row is not None
    return str(row["s"])


# --- migrations -----------------------------------------------------------------------------


def test_migrate_on_a_blank_schema_then_rerun_applies_nothing(blank_url: str) -> None:
    names = [m.name for m in load_migrations("postgres")]
    assert names and names[0] == "0001_initial"
    with PostgresStore(blank_url) as store:
        assert store.migrations() == ([], store.migrations()[1])
        assert [m.name for m in store.migrations()[1]] == names

        assert store.migrate() == names

        applied, pending = store.migrations()
        assert applied == names
        assert pending == []
        assert store.migrate() == []
        with store._cursor() as cur:
            cur.execute("SELECT name, applied_at FROM intel_schema_migrations ORDER BY name")
            rows = cur.fetchall()
            cur.execute(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = current_schema() AND c.relkind = 'r' ORDER BY 1"
            )
            tables = {r["relname"] for r in cur.fetchall()}
    assert [r["name"] for r in rows] == names
    assert all(r["applied_at"].tzinfo is not None for r in rows)
    assert tables == set(TABLES)


def test_pending_sql_records_itself_so_the_sql_editor_route_counts_as_migrated(
    blank_url: str,
) -> None:
    # what `intel migrate --print-sql` prints for the Supabase SQL editor, run by hand
    with PostgresStore(blank_url) as store:
        _, pending = store.migrations()
        with store._cursor() as cur:
            for migration in pending:
                cur.execute(migration.sql.encode())
        assert store.migrations()[1] == []
        store.require_migrated()


def test_an_upgrade_applies_only_the_new_migration(
    blank_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresStore(blank_url) as store:
        assert store.migrate() == SHIPPED
        extra = Migration("9999_note", "ALTER TABLE intel_logs ADD COLUMN note text;")
        shipped = pg_module.load_postgres_migrations()
        monkeypatch.setattr(
            pg_module, "load_postgres_migrations", lambda: [*shipped, pg_module.with_record(extra)]
        )

        assert [m.name for m in store.migrations()[1]] == ["9999_note"]
        assert store.migrate() == ["9999_note"]
        assert store.migrations() == ([*SHIPPED, "9999_note"], [])


def test_a_failing_migration_leaves_nothing_behind(
    blank_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with PostgresStore(blank_url) as store:
        store.migrate()
        broken = Migration(
            "9999_broken", "CREATE TABLE intel_half (x int);\nSELECT * FROM no_such_table;"
        )
        shipped = pg_module.load_postgres_migrations()
        monkeypatch.setattr(
            pg_module, "load_postgres_migrations", lambda: [*shipped, pg_module.with_record(broken)]
        )

        with pytest.raises(StoreUnavailable) as caught:
            store.migrate()

        assert str(caught.value).startswith(
            f"migration 9999_broken failed on {store.display_name} and was rolled back "
            '(relation "no_such_table" does not exist'
        )

        assert store.migrations()[0] == SHIPPED
        with store._cursor() as cur:
            cur.execute("SELECT to_regclass('intel_half') IS NULL AS gone")
            row = cur.fetchone()
        assert row is not None and row["gone"]


def test_two_concurrent_migrate_runs_apply_each_migration_once(blank_url: str) -> None:
    stores = [PostgresStore(blank_url) for _ in range(3)]
    applied: list[list[str]] = []
    barrier = threading.Barrier(len(stores))

    def run(store: PostgresStore) -> None:
        barrier.wait()
        applied.append(store.migrate())

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    try:
        # each migration applied by exactly one of them (with several migrations, not
        # necessarily all by the same one: each takes the lock in its own transaction)
        assert sorted(name for names in applied for name in names) == SHIPPED
        assert stores[0].migrations() == (SHIPPED, [])
    finally:
        for s in stores:
            s.close()


# --- exit-4 errors ----------------------------------------------------------------------------


def test_open_store_refuses_a_store_that_is_not_migrated(blank_url: str) -> None:
    url = with_password(blank_url, "pg-s3cret-pw")

    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)

    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "has not been migrated" in message
    assert "run `intel migrate --store postgresql://postgres:***@" in message
    assert "pg-s3cret-pw" not in message
    # `intel migrate` itself opens it without the check, and nothing was created meanwhile
    with open_store(url, auto_migrate=False) as store:
        assert store.migrations()[0] == []


def test_cli_exits_4_on_a_store_that_is_not_migrated_then_migrate_fixes_it(
    blank_url: str,
) -> None:
    url = with_password(blank_url, "pg-s3cret-pw")

    refused = runner.invoke(app, ["metrics", "--json", "--store", url])
    assert refused.exit_code == ExitCode.CONFIG
    assert "has not been migrated" in refused.stderr
    assert "intel migrate" in refused.stderr
    assert "pg-s3cret-pw" not in refused.stderr + refused.stdout
    assert len(refused.stderr.strip().splitlines()) == 1

    migrated = runner.invoke(app, ["migrate", "--store", url])
    assert migrated.exit_code == 0, migrated.stderr
    assert "0001_initial" in migrated.stdout + migrated.stderr
    assert "pg-s3cret-pw" not in migrated.stdout + migrated.stderr

    again = runner.invoke(app, ["migrate", "--store", url])
    assert again.exit_code == 0
    assert "0001_initial" not in again.stdout.replace("Nothing to migrate", "")

    metrics = runner.invoke(app, ["metrics", "--json", "--store", url])
    assert metrics.exit_code == 0, metrics.stderr
    assert '"totalBatches": 0' in metrics.stdout


def test_an_unreachable_server_is_exit_4_with_the_password_redacted() -> None:
    port = closed_port()
    url = f"postgresql://bob:pg-s3cret-pw@127.0.0.1:{port}/intel"

    with pytest.raises(StoreUnavailable) as caught:
        open_store(url)

    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    shown = f"postgresql://bob:***@127.0.0.1:{port}/intel"
    assert message.startswith(f"cannot reach the store {shown}: ")
    assert "refused" in message.lower()
    assert "pg-s3cret-pw" not in message
    assert "\n" not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__

    result = runner.invoke(app, ["--debug", "limiter", "status", "--store", url])
    assert result.exit_code == ExitCode.CONFIG
    assert "pg-s3cret-pw" not in result.stdout + result.stderr


def test_a_dropped_connection_is_exit_4_and_the_next_call_reconnects(admin_url: str) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        with store._cursor() as cur:
            cur.execute("SELECT pg_backend_pid() AS pid")
            row = cur.fetchone()
        assert row is not None
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))

        with pytest.raises(StoreUnavailable, match="cannot reach the store"):
            store.get_limiter()
        assert store.get_limiter() is None
    finally:
        store.close()


def test_tables_dropped_behind_our_back_read_as_not_migrated(admin_url: str) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        with store._cursor() as cur:
            cur.execute("DROP FUNCTION intel_metrics(timestamptz, timestamptz, integer)")
            cur.execute("DROP TABLE intel_limiter CASCADE")
        with pytest.raises(StoreUnavailable, match="has not been migrated"):
            store.metrics(T0, T0 + timedelta(days=1))
        with pytest.raises(StoreUnavailable, match="has not been migrated"):
            store.get_limiter()
    finally:
        store.close()


# --- the limiter under concurrency --------------------------------------------------------------


def test_concurrent_blocks_from_many_connections_keep_the_latest(admin_url: str) -> None:
    first = fresh_postgres_store(admin_url)
    stores = [first] + [PostgresStore(first.schema_url) for _ in range(7)]
    rounds = 15
    offsets = [[(i * 37 + r * 11) % 97 for r in range(rounds)] for i in range(len(stores))]
    barrier = threading.Barrier(len(stores))
    seen: list[tuple[datetime, datetime]] = []
    errors: list[BaseException] = []

    def hammer(i: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                until = T0 + timedelta(seconds=offsets[i][r], microseconds=i)
                state = stores[i].block_limiter(
                    until, reason=f"429 from worker {i}", set_by=f"b_{i}", now=T0
                )
                assert state.blocked_until is not None
                seen.append((until, state.blocked_until))
        except BaseException as exc:  # surfaced below: a thread's assert would be lost
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(len(stores))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors
        latest = max(
            T0 + timedelta(seconds=offsets[i][r], microseconds=i)
            for i in range(len(stores))
            for r in range(rounds)
        )
        state = first.get_limiter()
        assert state is not None
        assert state.blocked_until == latest
        # reason and set_by travel with the winning time, never with a losing one
        winner = latest.microsecond
        assert (state.reason, state.set_by) == (f"429 from worker {winner}", f"b_{winner}")
        # nobody ever saw the limiter earlier than their own block
        assert all(returned >= asked for asked, returned in seen)
        assert len(seen) == len(stores) * rounds
    finally:
        for s in stores[1:]:
            s.close()
        first.close()


# --- row-level security -----------------------------------------------------------------------


def test_row_level_security_is_on_for_every_table_with_no_policies(admin_url: str) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        schema = schema_of(store)
        with store._cursor() as cur:
            cur.execute(
                "SELECT c.relname, c.relrowsecurity FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND c.relkind = 'r'",
                (schema,),
            )
            rls = {r["relname"]: r["relrowsecurity"] for r in cur.fetchall()}
            cur.execute("SELECT count(*) AS n FROM pg_policies WHERE schemaname = %s", (schema,))
            policies = cur.fetchone()
        assert rls == dict.fromkeys(TABLES, True)
        assert policies is not None and policies["n"] == 0
    finally:
        store.close()


def test_a_role_without_bypassrls_sees_no_rows_even_with_table_grants(admin_url: str) -> None:
    # what Supabase's anon/authenticated keys would get if someone granted them the tables
    store = fresh_postgres_store(admin_url)
    role = f"intel_test_role_{uuid.uuid4().hex[:8]}"
    try:
        store.create_batch("b_1", model_used="m", mode="simulated", metadata={}, now=T0)
        store.block_limiter(T0, reason="x", set_by="b_1", now=T0)
        schema = schema_of(store)
        with psycopg.connect(store.schema_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                    sql.Identifier(schema), sql.Identifier(role)
                )
            )
            conn.execute(
                sql.SQL("GRANT SELECT ON intel_logs, intel_limiter TO {}").format(
                    sql.Identifier(role)
                )
            )
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
                logs = conn.execute("SELECT count(*) FROM intel_logs").fetchone()
                limiter = conn.execute("SELECT count(*) FROM intel_limiter").fetchone()
                # functions are not executable by PUBLIC either
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute("SELECT intel_metrics(now(), now(), 1)")
        assert logs == (0,) and limiter == (0,)
        assert store.get_batch("b_1") is not None  # the owner still sees it
    finally:
        store.close()
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --- the PostgreSQL types behind the contract ---------------------------------------------------


def test_money_and_time_columns_have_exact_types(admin_url: str) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        schema = schema_of(store)
        with store._cursor() as cur:
            cur.execute(
                "SELECT table_name, column_name, data_type, numeric_scale, is_generated"
                " FROM information_schema.columns WHERE table_schema = %s",
                (schema,),
            )
            cols = {(r["table_name"], r["column_name"]): r for r in cur.fetchall()}
        for table in ("intel_logs", "intel_results"):
            assert cols[(table, "cost")]["data_type"] == "numeric"
            assert cols[(table, "cost")]["numeric_scale"] == 10
            assert cols[(table, "created_at")]["data_type"] == "timestamp with time zone"
        assert cols[("intel_logs", "metadata")]["data_type"] == "jsonb"
        assert cols[("intel_results", "intel")]["data_type"] == "jsonb"
        assert cols[("intel_logs", "success_rate")]["is_generated"] == "ALWAYS"
        assert cols[("intel_limiter", "blocked_until")]["data_type"] == "timestamp with time zone"
    finally:
        store.close()


# --- `intel enrich --store postgresql://...` end to end (issue 4, item 6) ------------------------


def contacts_csv(tmp_path: Path, n: int = 3) -> Path:
    path = tmp_path / "list.csv"
    lines = ["Name,Email,Station"] + [
        f"DJ {i},dj{i:02d}@radio{i:02d}.example,Radio {i}" for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def instant_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_SIMULATE_TTFT", "0")
    monkeypatch.setenv("INTEL_SIMULATE_SPEED", "inf")


@pytest.mark.usefixtures("instant_simulate")
def test_enrich_simulate_into_postgres_then_metrics(admin_url: str, tmp_path: Path) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        inputs = tmp_path / "contacts.csv"
        shutil.copy(EXAMPLES, inputs)
        result = runner.invoke(
            app, ["enrich", str(inputs), "--simulate", "--json", "--store", store.schema_url]
        )
        assert result.exit_code == 0, result.stderr
        body = json.loads(result.stdout)
        assert body["enriched"] == body["total"] > 0

        batch = store.get_batch(body["batchId"])
        assert batch is not None
        assert (batch["status"], batch["mode"], batch["total"]) == (
            "completed",
            "simulated",
            body["total"],
        )
        assert batch["cost"] == Decimal(str(body["costUsd"]))
        enriched = [r for r in store.batch_results(body["batchId"]) if r["status"] == "enriched"]
        assert len(enriched) == body["enriched"]

        metrics = runner.invoke(app, ["metrics", "--json", "--store", store.schema_url])
        assert metrics.exit_code == 0, metrics.stderr
        figures = json.loads(metrics.stdout)
        assert figures["summary"]["totalContacts"] == body["total"]
        assert [b["batch_id"] for b in figures["recentBatches"]] == [body["batchId"]]
    finally:
        store.close()


@pytest.mark.usefixtures("instant_simulate")
def test_a_429_in_one_process_stops_another_through_the_postgres_limiter(
    admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = fresh_postgres_store(admin_url)
    inputs = contacts_csv(tmp_path)
    config = SimulatorConfig.instant(retry_after_s=60, rules=[FaultRule("dj00@", "429", times=1)])
    try:
        with Simulator(config) as sim:
            monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
            monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
            monkeypatch.setenv("INTEL_STORE", store.schema_url)
            first = runner.invoke(app, ["enrich", str(inputs), "--max-wait", "1", "--json"])
            assert first.exit_code == ExitCode.RATE_LIMITED, first.stderr
            batch_id = json.loads(first.stdout)["batchId"]
            state = store.get_limiter()
            assert state is not None and state.set_by == batch_id
            assert state.blocked_until is not None
            assert state.blocked_until > datetime.now(UTC) + timedelta(seconds=30)

            # another process, same database: it sees the limiter and sends nothing
            sent = sim.stats.requests
            second = subprocess.run(
                [sys.executable, "-m", "intel_cli", "enrich", str(inputs), "--quiet"],
                capture_output=True, text=True, env=os.environ.copy(), timeout=60,
            )
            assert second.returncode == ExitCode.RATE_LIMITED, second.stderr
            assert f"(set by {batch_id})" in second.stderr
            assert sim.stats.requests == sent

            reset = runner.invoke(app, ["limiter", "reset"])
            assert reset.exit_code == 0, reset.stderr
            assert store.get_limiter() is None
            third = runner.invoke(app, ["enrich", str(inputs), "--json"])
            assert third.exit_code == 0, third.stderr
            assert json.loads(third.stdout)["enriched"] == 3
    finally:
        store.close()


def test_a_statement_the_server_refuses_is_exit_4_and_the_connection_stays(
    admin_url: str,
) -> None:
    store = fresh_postgres_store(admin_url)
    try:
        with store._cursor() as cur:
            cur.execute("SET statement_timeout = '50ms'")
        with pytest.raises(StoreUnavailable, match="could not run a statement .*statement timeout"):
            with store._cursor() as cur:
                cur.execute("SELECT pg_sleep(1)")
        with store._cursor() as cur:
            cur.execute("RESET statement_timeout")
        assert store.get_limiter() is None
    finally:
        store.close()
