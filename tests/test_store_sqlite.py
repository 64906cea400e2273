"""What only the SQLite store promises: the file format, WAL and busy timeout, migrations,
several writers on one file, and store errors that say what to do."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from intel_cli.errors import ConfigError, StoreUnavailable
from intel_cli.stores import open_store
from intel_cli.stores import sqlite as sqlite_module
from intel_cli.stores.base import BatchTotals, ContactResult, Migration
from intel_cli.stores.migrations import load_migrations, migrations_dir
from intel_cli.stores.sqlite import BUSY_TIMEOUT_MS, SQLiteStore, split_statements
from intel_cli.timefmt import from_text, to_text

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
STAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
TABLES = {"intel_logs", "intel_results", "intel_limiter", "intel_schema_migrations"}


def tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    conn.close()
    return {name for (name,) in rows}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "intel.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SQLiteStore]:  # replaces conftest's parametrised one
    s = SQLiteStore(db_path)
    s.migrate()
    yield s
    s.close()


def seeded(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)
    store.record_result(
        ContactResult("b_1", 0, "a@b.example", "enriched", model="m", created_at=T0)
    )
    store.finalise_batch("b_1", BatchTotals(status="completed", total=1, enriched=1), now=T0)
    store.block_limiter(T0 + timedelta(seconds=60), reason="429", set_by="b_1", now=T0)


# --- the file ----------------------------------------------------------------------------------


def test_timestamps_are_utc_text_with_six_fractional_digits(store: SQLiteStore) -> None:
    seeded(store)
    # an aware non-UTC time is converted, not stored in its own zone
    plus_two = datetime(2026, 3, 1, 14, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    store.create_batch("b_2", model_used="m", mode="batch", metadata={}, now=plus_two)

    with sqlite3.connect(store.path) as conn:
        logs = conn.execute("SELECT created_at, finished_at FROM intel_logs").fetchall()
        results = conn.execute("SELECT created_at FROM intel_results").fetchall()
        limiter = conn.execute("SELECT blocked_until, updated_at FROM intel_limiter").fetchall()
        applied = conn.execute("SELECT applied_at FROM intel_schema_migrations").fetchall()
        b2 = conn.execute("SELECT created_at FROM intel_logs WHERE batch_id = 'b_2'").fetchone()
    conn.close()

    stamps = [v for row in logs + results + limiter + applied for v in row if v is not None]
    assert len(stamps) == 6 + len(applied)  # one applied_at per shipped migration
    assert all(STAMP.match(v) for v in stamps), stamps
    assert logs[0][0] == "2026-03-01T12:00:00.000000Z"
    assert b2 == ("2026-03-01T12:00:00.000005Z",)


def test_naive_datetimes_are_refused(store: SQLiteStore) -> None:
    with pytest.raises(ValueError, match="naive"):
        store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=datetime.now())


def test_timefmt_round_trip_keeps_order() -> None:
    moments = [T0 + timedelta(microseconds=n) for n in (0, 1, 999_999, 10**6, 86_400 * 10**6)]
    texts = [to_text(m) for m in moments]

    assert [from_text(t) for t in texts] == moments
    assert sorted(texts) == texts
    assert from_text(None) is None


def test_cost_is_stored_as_a_number_and_read_back_exactly(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)
    store.finalise_batch(
        "b_1", BatchTotals(status="completed", cost=Decimal("12.34567890126")), now=T0
    )

    with sqlite3.connect(store.path) as conn:
        (stored, kind) = conn.execute("SELECT cost, typeof(cost) FROM intel_logs").fetchone()
    conn.close()
    row = store.get_batch("b_1")

    assert kind == "real"
    assert stored == pytest.approx(12.3456789013)
    assert row is not None and row["cost"] == Decimal("12.3456789013")  # 10 places, half-up


def test_wal_mode_and_busy_timeout(store: SQLiteStore) -> None:
    with sqlite3.connect(store.path) as other:
        journal = other.execute("PRAGMA journal_mode").fetchone()[0]
    other.close()

    assert journal == "wal"
    assert store.db.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS
    assert BUSY_TIMEOUT_MS >= 5_000


def test_success_rate_is_a_generated_column(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)
    store.finalise_batch(
        "b_1", BatchTotals(status="completed", total=3, enriched=2, failed=1), now=T0
    )

    with sqlite3.connect(store.path) as conn:
        rate = conn.execute("SELECT success_rate FROM intel_logs").fetchone()[0]
        with pytest.raises(sqlite3.OperationalError):
            conn.execute("UPDATE intel_logs SET success_rate = 1")
    conn.close()

    assert rate == pytest.approx(66.666666, abs=1e-5)


def test_check_constraints_guard_status_and_mode(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)

    with sqlite3.connect(store.path) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE intel_logs SET status = 'done'")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("UPDATE intel_logs SET mode = 'turbo'")
    conn.close()
    with pytest.raises(ValueError):
        store.create_batch("b_2", model_used="m", mode="turbo", metadata={}, now=T0)


# --- migrations --------------------------------------------------------------------------------


def test_migrate_on_a_blank_database_then_again_is_a_no_op(db_path: Path) -> None:
    names = [m.name for m in load_migrations("sqlite")]
    with SQLiteStore(db_path) as store:
        assert store.migrations() == ([], load_migrations("sqlite"))
        assert tables(db_path) == set()  # asking for the status changes nothing

        assert store.migrate() == names
        assert store.migrate() == []
        assert store.migrations() == (names, [])

    assert tables(db_path) >= TABLES
    with sqlite3.connect(db_path) as conn:
        recorded = conn.execute("SELECT name, applied_at FROM intel_schema_migrations").fetchall()
    conn.close()
    assert [name for name, _ in recorded] == names
    assert all(STAMP.match(at) for _, at in recorded)


def test_a_second_process_sees_the_migrations_as_applied(db_path: Path) -> None:
    with SQLiteStore(db_path) as first:
        first.migrate()
    with SQLiteStore(db_path) as second:
        assert second.migrate() == []


def test_an_upgrade_applies_only_the_new_migration(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SQLiteStore(db_path) as store:
        store.migrate()
    shipped = load_migrations("sqlite")
    upgrade = Migration("9001_notes", "CREATE TABLE intel_notes (id INTEGER PRIMARY KEY);")
    monkeypatch.setattr(sqlite_module, "load_migrations", lambda backend: [*shipped, upgrade])

    with SQLiteStore(db_path) as store:
        applied, pending = store.migrations()
        assert pending == [upgrade]
        assert store.migrate() == ["9001_notes"]

    assert "intel_notes" in tables(db_path)


def test_a_failing_migration_leaves_nothing_behind(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = load_migrations("sqlite")
    broken = Migration(
        "9002_broken",
        "CREATE TABLE intel_half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n",
    )
    monkeypatch.setattr(sqlite_module, "load_migrations", lambda backend: [*shipped, broken])

    with SQLiteStore(db_path) as store:
        with pytest.raises(StoreUnavailable, match="9002_broken .*rolled back"):
            store.migrate()
        applied, pending = store.migrations()

    assert applied == [m.name for m in shipped]
    assert pending == [broken]
    assert "intel_half" not in tables(db_path)


def test_load_migrations_finds_the_numbered_files_in_order() -> None:
    found = load_migrations("sqlite")
    files = sorted(p.stem for p in migrations_dir("sqlite").glob("[0-9][0-9][0-9][0-9]_*.sql"))

    assert [m.name for m in found] == files
    assert found[0].name == "0001_initial"
    assert "CREATE TABLE intel_logs" in found[0].sql


def test_load_migrations_of_an_unknown_backend_says_so() -> None:
    with pytest.raises(ConfigError, match="no migrations for the oracle store"):
        load_migrations("oracle")


def test_split_statements_respects_strings_comments_and_triggers() -> None:
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (a TEXT DEFAULT 'x;y'); CREATE TABLE u (b);
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        INSERT INTO u VALUES (1);
        INSERT INTO u VALUES (2);
    END;
    /* trailing */
    """

    statements = split_statements(script)

    assert len(statements) == 3
    assert statements[0].endswith("CREATE TABLE t (a TEXT DEFAULT 'x;y');")
    assert statements[1] == "CREATE TABLE u (b);"
    assert statements[2].startswith("CREATE TRIGGER tr") and statements[2].endswith("END;")
    conn = sqlite3.connect(":memory:")
    for statement in statements:
        conn.execute(statement)
    conn.execute("INSERT INTO t DEFAULT VALUES")
    assert conn.execute("SELECT count(*) FROM u").fetchone()[0] == 2
    conn.close()


# --- opening stores ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{path}", "sqlite:{path}"])
def test_a_fresh_path_is_created_and_migrated_on_open(tmp_path: Path, form: str) -> None:
    path = tmp_path / "new" / "dir" / "store.db"

    with open_store(form.format(path=path)) as store:
        assert store.metrics(T0, T0 + timedelta(days=1))["summary"]["totalBatches"] == 0
        assert store.display_name == str(path)

    assert tables(path) >= TABLES


def test_the_default_store_lives_under_intel_home(intel_home: Path) -> None:
    with open_store(None) as store:
        assert store.migrations()[1] == []

    assert (intel_home / "intel.db").is_file()


def test_an_unmigrated_store_says_to_run_migrate(db_path: Path) -> None:
    with open_store(str(db_path), auto_migrate=False) as store:
        with pytest.raises(StoreUnavailable, match="intel migrate"):
            store.metrics(T0, T0 + timedelta(days=1))


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match=str(tmp_path)):
        SQLiteStore(tmp_path)


def test_a_file_that_is_not_sqlite_is_not_a_store(tmp_path: Path) -> None:
    path = tmp_path / "contacts.csv"
    path.write_text("email,name\n" * 200)

    with pytest.raises(StoreUnavailable, match="contacts.csv"):
        SQLiteStore(path).migrate()


# --- several writers ---------------------------------------------------------------------------


def test_a_writer_waits_for_another_process_lock_instead_of_failing(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)
    blocker = sqlite3.connect(store.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")
    released = threading.Event()

    def release_soon() -> None:
        time.sleep(0.3)
        blocker.execute("COMMIT")
        released.set()

    threading.Thread(target=release_soon).start()
    store.record_result(ContactResult("b_1", 0, "k", "failed", created_at=T0))
    blocker.close()

    assert released.is_set()
    assert len(store.batch_results("b_1")) == 1


def test_several_connections_write_one_file(store: SQLiteStore) -> None:
    store.create_batch("b_1", model_used="m", mode="realtime", metadata={}, now=T0)
    errors: list[BaseException] = []
    latest = [T0 + timedelta(seconds=10 * n) for n in range(1, 5)]

    def writer(n: int) -> None:
        try:
            with SQLiteStore(store.path) as own:  # a separate connection, like another process
                for i in range(25):
                    own.record_result(ContactResult("b_1", n * 100 + i, "k", "failed"))
                own.block_limiter(latest[n], reason=f"w{n}", set_by=None, now=T0)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(store.batch_results("b_1")) == 100
    limiter = store.get_limiter()
    assert limiter is not None
    assert (limiter.blocked_until, limiter.reason) == (max(latest), "w3")
