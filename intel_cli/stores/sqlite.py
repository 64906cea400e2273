"""The SQLite store: one file, shared safely by several processes (SPEC 2.1, 3.1, 4.3).

The file runs in WAL mode with a busy timeout, and every write is its own short
transaction (`BEGIN IMMEDIATE` for read-modify-write), so cron runs that
overlap can write one store and a killed run leaves nothing half-written.
Timestamps are UTC text (intel_cli.timefmt); costs are REAL quantised to 1e-10
USD and summed exactly as integers; rounding happens in intel_cli.stores.figures.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlite_utils

from intel_cli.errors import BatchExists, StoreUnavailable, UsageError
from intel_cli.secrets import redact
from intel_cli.stores import figures
from intel_cli.stores.base import (
    BATCH_MODES,
    BATCH_STATUSES,
    LIMITER_NAME,
    RESULT_STATUSES,
    BatchTotals,
    BudgetDay,
    ContactResult,
    LimiterState,
    Migration,
    Store,
)
from intel_cli.stores.jsonvalues import to_json
from intel_cli.stores.migrations import load_migrations
from intel_cli.timefmt import from_text, now_utc, to_text

BACKEND = "sqlite"
BUSY_TIMEOUT_MS = 15_000

# exact money: integer units of 1e-10 USD, summed without float error
_UNITS = "CAST(ROUND({col} * 1e10) AS INTEGER)"
_COST_UNITS = _UNITS.format(col="cost")

_COMMENTS = re.compile(r"/\*.*?\*/|--[^\n]*", re.DOTALL)

_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS intel_schema_migrations (
    name TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
)
"""


# a resumed or adaptive retry replaces the contact's row, never duplicates it
_UPSERT_RESULT = """
    INSERT INTO intel_results (
        batch_id, row_index, contact_key, status, model, input_tokens,
        output_tokens, cache_read_tokens, cache_write_tokens, cost, latency_ms,
        attempts, error, intel, usage, prompt_version, created_at
    ) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (batch_id, row_index) DO UPDATE SET
        contact_key = excluded.contact_key, status = excluded.status,
        model = excluded.model, input_tokens = excluded.input_tokens,
        output_tokens = excluded.output_tokens,
        cache_read_tokens = excluded.cache_read_tokens,
        cache_write_tokens = excluded.cache_write_tokens, cost = excluded.cost,
        latency_ms = excluded.latency_ms, attempts = excluded.attempts,
        error = excluded.error, intel = excluded.intel, usage = excluded.usage,
        prompt_version = excluded.prompt_version, created_at = excluded.created_at
"""

RESULTS_PAGE = 1000  # rows per query when streaming a batch's results (iter_results)


def _result_params(result: ContactResult) -> tuple[Any, ...]:
    if result.status not in RESULT_STATUSES:
        raise ValueError(f"unknown result status {result.status!r}")
    created_at = result.created_at or now_utc()
    usage = result.usage
    return (
        result.batch_id,
        result.row_index,
        result.contact_key,
        result.status,
        result.model,
        usage.input,
        usage.output,
        usage.cache_read,
        usage.cache_write,
        _money(result.cost),
        result.latency_ms,
        result.attempts,
        None if result.error is None else redact(result.error),
        None if result.intel is None else to_json(result.intel),
        None if result.raw_usage is None else to_json(result.raw_usage),
        result.prompt_version,
        to_text(created_at),
    )


class SQLiteStore(Store):
    """A store in one SQLite file. Safe to call from a thread other than the creating one."""

    def __init__(self, path: Path, *, busy_timeout_ms: int | None = None) -> None:
        self.path = Path(path)
        self.display_name = str(self.path)
        # INTEL_SQLITE_BUSY_TIMEOUT_MS: tests of a store locked past the timeout make it short
        self.busy_timeout_ms = busy_timeout_ms or _env_busy_timeout()
        # one connection, guarded: the pipeline calls from its own store thread
        self._lock = threading.RLock()
        with self._translate():
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreUnavailable(
                    f"cannot create the directory for the SQLite store {self.path}: "
                    f"{exc.strerror or exc}; choose another --store or set INTEL_HOME"
                ) from exc
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so no statement is
            # ever left in an implicit transaction that someone forgets to commit
            conn = sqlite3.connect(
                str(self.path),
                timeout=self.busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
                conn.execute("PRAGMA journal_mode = WAL")
                # WAL + NORMAL never corrupts and survives process crashes; only a power
                # cut may lose the last commits, and each commit stays fast for cron overlap
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
            self.db = sqlite_utils.Database(conn, execute_plugins=False)

    # --- plumbing ---------------------------------------------------------------------
    @contextmanager
    def _translate(self) -> Iterator[None]:
        """sqlite3's operational errors -> StoreUnavailable (exit 4) saying what to do."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if "no such table" in message:
                raise StoreUnavailable(
                    f"the SQLite store {self.path} has not been migrated ({message}): "
                    f"run `intel migrate --store {self.path}`"
                ) from exc
            if "locked" in message or "busy" in message:
                raise StoreUnavailable(
                    f"the SQLite store {self.path} stayed locked for "
                    f"{self.busy_timeout_ms / 1000:g} s: another process holds it; retry shortly"
                ) from exc
            raise StoreUnavailable(
                f"cannot use the SQLite store {self.path}: {message}; "
                "check the path, its permissions and free disk space"
            ) from exc
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
                raise  # a bug in our SQL or our data, not a store the user can fix
            raise StoreUnavailable(
                f"cannot use the SQLite store {self.path}: {exc}; "
                "is it an intel store? choose another --store"
            ) from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction, taking the write lock up front (BEGIN IMMEDIATE)
        so a read-modify-write cannot interleave with another process."""
        with self._lock, self._translate():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        with self._lock, self._translate():
            return list(self.db.query(sql, params))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- batches ------------------------------------------------------------------------
    def create_batch(
        self,
        batch_id: str,
        *,
        model_used: str,
        mode: str,
        metadata: dict[str, Any],
        total: int = 0,
        skipped: int = 0,
        now: datetime,
    ) -> None:
        if mode not in BATCH_MODES:
            raise ValueError(f"unknown batch mode {mode!r}")
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO intel_logs (created_at, batch_id, total, skipped, model_used,"
                    " mode, status, metadata) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
                    (to_text(now), batch_id, total, skipped, model_used, mode, to_json(metadata)),
                )
        except sqlite3.IntegrityError as exc:
            if "intel_logs.batch_id" not in str(exc):
                raise
            raise BatchExists(
                f"batch id {batch_id} is already in the store: choose another --batch-id, "
                f"or --resume {batch_id}"
            ) from exc

    def record_result(self, result: ContactResult) -> None:
        with self._write() as conn:
            conn.execute(_UPSERT_RESULT, _result_params(result))

    def record_results(self, results: Sequence[ContactResult]) -> None:
        if not results:
            return
        params = [_result_params(result) for result in results]
        with self._write() as conn:  # one transaction, one commit
            conn.executemany(_UPSERT_RESULT, params)

    def finalise_batch(self, batch_id: str, totals: BatchTotals, *, now: datetime) -> None:
        if totals.status not in BATCH_STATUSES:
            raise ValueError(f"unknown batch status {totals.status!r}")
        with self._write() as conn:
            row = conn.execute(
                "SELECT metadata FROM intel_logs WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")
            metadata = json.loads(row[0]) if row[0] else {}
            if totals.metadata:
                metadata.update(totals.metadata)
            usage = totals.usage
            conn.execute(
                """
                UPDATE intel_logs SET total = ?, enriched = ?, failed = ?, retried = ?,
                    timed_out = ?, cached = ?, skipped = ?, cost = ?, avg_time_ms = ?,
                    input_tokens = ?, output_tokens = ?, cache_read_tokens = ?,
                    cache_write_tokens = ?, status = ?, finished_at = ?, metadata = ?
                WHERE batch_id = ?
                """,
                (
                    totals.total,
                    totals.enriched,
                    totals.failed,
                    totals.retried,
                    totals.timed_out,
                    totals.cached,
                    totals.skipped,
                    _money(totals.cost),
                    totals.avg_time_ms,
                    usage.input,
                    usage.output,
                    usage.cache_read,
                    usage.cache_write,
                    totals.status,
                    to_text(now),
                    to_json(metadata),
                    batch_id,
                ),
            )

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        rows = self._query(
            f"SELECT *, {_COST_UNITS} AS cost_units FROM intel_logs WHERE batch_id = ?",
            (batch_id,),
        )
        if not rows:
            return None
        row = rows[0]
        row["cost"] = figures.money_from_units(row.pop("cost_units"))
        row["created_at"] = from_text(row["created_at"])
        row["finished_at"] = from_text(row["finished_at"])
        row["metadata"] = json.loads(row["metadata"]) if row["metadata"] else {}
        return row

    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        rows = self._query(
            f"SELECT *, {_COST_UNITS} AS cost_units FROM intel_results WHERE batch_id = ?"
            " ORDER BY row_index",
            (batch_id,),
        )
        return [_result_row(row) for row in rows]

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        # keyset pages, not one open cursor: no lock or read transaction is held between
        # pages, so the caller may take its time with each row
        after = -1
        while True:
            rows = self._query(
                f"SELECT *, {_COST_UNITS} AS cost_units FROM intel_results"
                " WHERE batch_id = ? AND row_index > ? ORDER BY row_index LIMIT ?",
                (batch_id, after, RESULTS_PAGE),
            )
            for row in rows:
                yield _result_row(row)
            if len(rows) < RESULTS_PAGE:
                return
            after = int(rows[-1]["row_index"])

    # --- metrics (SPEC 2.3) -------------------------------------------------------------
    def metrics(self, since: datetime, until: datetime, recent: int = 10) -> dict[str, Any]:
        window = (to_text(since), to_text(until))
        sums = self._query(
            f"""
            SELECT COUNT(*) AS batches, SUM(total) AS contacts, SUM(enriched) AS enriched,
                SUM(failed) AS failed, SUM({_COST_UNITS}) AS cost_units,
                SUM(COALESCE(avg_time_ms, 0) * total) AS time_weighted_ms,
                SUM(input_tokens) AS input, SUM(output_tokens) AS output,
                SUM(cache_read_tokens) AS cache_read, SUM(cache_write_tokens) AS cache_write
            FROM intel_logs WHERE created_at >= ? AND created_at < ?
            """,
            window,
        )[0]
        models = self._query(
            """
            SELECT r.model AS model, COUNT(*) AS n
            FROM intel_results r JOIN intel_logs l ON l.batch_id = r.batch_id
            WHERE l.created_at >= ? AND l.created_at < ? AND r.model IS NOT NULL
            GROUP BY r.model ORDER BY n DESC, r.model
            """,
            window,
        )
        latest = self._query(
            f"""
            SELECT batch_id, created_at, total, enriched, failed, {_COST_UNITS} AS cost_units,
                retried, timed_out, cached, skipped, mode, status, model_used
            FROM intel_logs WHERE created_at >= ? AND created_at < ?
            ORDER BY created_at DESC, id DESC LIMIT ?
            """,
            (*window, max(int(recent), 0)),
        )
        return {
            "summary": figures.summary(
                batches=sums["batches"],
                contacts=sums["contacts"],
                enriched=sums["enriched"],
                failed=sums["failed"],
                cost_units=sums["cost_units"],
                time_weighted_ms=sums["time_weighted_ms"],
            ),
            "tokens": figures.tokens(
                input=sums["input"],
                output=sums["output"],
                cache_read=sums["cache_read"],
                cache_write=sums["cache_write"],
            ),
            "modelBreakdown": {row["model"]: int(row["n"]) for row in models},
            "recentBatches": [
                figures.recent_batch(row, created_at=row["created_at"]) for row in latest
            ],
        }

    def metrics_by_day(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        rows = self._query(
            f"""
            SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS batches,
                SUM(total) AS contacts, SUM(enriched) AS enriched, SUM(failed) AS failed,
                SUM({_COST_UNITS}) AS cost_units
            FROM intel_logs WHERE created_at >= ? AND created_at < ?
            GROUP BY day ORDER BY day
            """,
            (to_text(since), to_text(until)),
        )
        return [
            {
                "day": row["day"],
                "batches": int(row["batches"]),
                "contacts": int(row["contacts"] or 0),
                "enriched": int(row["enriched"] or 0),
                "failed": int(row["failed"] or 0),
                "cost": figures.money_figure(row["cost_units"], 6),
                "success_rate": figures.rate(row["enriched"], row["contacts"]),
            }
            for row in rows
        ]

    def metrics_by_model(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        rows = self._query(
            f"""
            SELECT r.model AS model, COUNT(*) AS contacts,
                SUM(CASE WHEN r.status IN ('enriched', 'cached') THEN 1 ELSE 0 END) AS enriched,
                SUM(r.input_tokens) AS input_tokens, SUM(r.output_tokens) AS output_tokens,
                SUM(r.cache_read_tokens) AS cache_read_tokens,
                SUM(r.cache_write_tokens) AS cache_write_tokens,
                SUM({_UNITS.format(col="r.cost")}) AS cost_units
            FROM intel_results r JOIN intel_logs l ON l.batch_id = r.batch_id
            WHERE l.created_at >= ? AND l.created_at < ? AND r.model IS NOT NULL
            GROUP BY r.model ORDER BY contacts DESC, r.model
            """,
            (to_text(since), to_text(until)),
        )
        return [
            {
                "model": row["model"],
                "contacts": int(row["contacts"]),
                "enriched": int(row["enriched"] or 0),
                "input_tokens": int(row["input_tokens"] or 0),
                "output_tokens": int(row["output_tokens"] or 0),
                "cache_read_tokens": int(row["cache_read_tokens"] or 0),
                "cache_write_tokens": int(row["cache_write_tokens"] or 0),
                "cost": figures.money_figure(row["cost_units"], 6),
            }
            for row in rows
        ]

    # --- the global limiter (SPEC 2.4) ---------------------------------------------------
    def get_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        rows = self._query("SELECT * FROM intel_limiter WHERE name = ?", (name,))
        return _limiter(rows[0]) if rows else None

    def block_limiter(
        self,
        until: datetime,
        *,
        reason: str,
        set_by: str | None,
        now: datetime,
        name: str = LIMITER_NAME,
    ) -> LimiterState:
        new_until = to_text(until)
        with self._write() as conn:
            # text order is time order, so the later block wins by string comparison;
            # reason/set_by change only with the winning value
            conn.execute(
                """
                INSERT INTO intel_limiter (name, blocked_until, reason, set_by, updated_at)
                VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET
                    blocked_until = excluded.blocked_until, reason = excluded.reason,
                    set_by = excluded.set_by, updated_at = excluded.updated_at
                WHERE intel_limiter.blocked_until IS NULL
                    OR excluded.blocked_until > intel_limiter.blocked_until
                """,
                (name, new_until, redact(reason), set_by, to_text(now)),
            )
            cursor = conn.execute("SELECT * FROM intel_limiter WHERE name = ?", (name,))
            columns = [d[0] for d in cursor.description]
            row = dict(zip(columns, cursor.fetchone(), strict=True))
        return _limiter(row)

    def reset_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        with self._write() as conn:
            cursor = conn.execute("DELETE FROM intel_limiter WHERE name = ? RETURNING *", (name,))
            columns = [d[0] for d in cursor.description]
            found = cursor.fetchone()
        if found is None:
            return None
        state = _limiter(dict(zip(columns, found, strict=True)))
        return state if state.blocked_until is not None else None

    # --- reuse of earlier results (SPEC 3.3) ----------------------------------------------
    def find_cached(
        self, contact_key: str, *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, Any] | None:
        # only fresh `enriched` rows count: reusing `cached` copies would let a result
        # outlive --cache-ttl by being re-cached forever
        rows = self._query(
            f"""
            SELECT *, {_COST_UNITS} AS cost_units FROM intel_results
            WHERE contact_key = ? AND prompt_version = ? AND model = ?
                AND status = 'enriched' AND intel IS NOT NULL AND created_at >= ?
            ORDER BY created_at DESC, id DESC LIMIT 1
            """,
            (contact_key, prompt_version, model, to_text(since)),
        )
        return _result_row(rows[0]) if rows else None

    def find_cached_many(
        self, contact_keys: Sequence[str], *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(contact_keys))
        found: dict[str, dict[str, Any]] = {}
        # chunks stay under SQLite's bound-parameter limit
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self._query(
                f"""
                SELECT * FROM (
                    SELECT *, {_COST_UNITS} AS cost_units, ROW_NUMBER() OVER (
                        PARTITION BY contact_key ORDER BY created_at DESC, id DESC
                    ) AS cache_rank
                    FROM intel_results
                    WHERE contact_key IN ({marks}) AND prompt_version = ? AND model = ?
                        AND status = 'enriched' AND intel IS NOT NULL AND created_at >= ?
                ) WHERE cache_rank = 1
                """,
                (*chunk, prompt_version, model, to_text(since)),
            )
            for row in rows:
                row.pop("cache_rank", None)
                found[row["contact_key"]] = _result_row(row)
        return found

    # --- resume and heartbeats (SPEC 4.3) ---------------------------------------------------
    def update_batch(
        self,
        batch_id: str,
        *,
        metadata: dict[str, Any],
        status: str | None = None,
        now: datetime,
    ) -> None:
        if status is not None and status not in BATCH_STATUSES:
            raise ValueError(f"unknown batch status {status!r}")
        with self._write() as conn:
            row = conn.execute(
                "SELECT metadata FROM intel_logs WHERE batch_id = ?", (batch_id,)
            ).fetchone()
            if row is None:
                raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")
            merged = json.loads(row[0]) if row[0] else {}
            merged.update(metadata)
            if status is None:
                conn.execute(
                    "UPDATE intel_logs SET metadata = ? WHERE batch_id = ?",
                    (to_json(merged), batch_id),
                )
            else:
                conn.execute(
                    "UPDATE intel_logs SET metadata = ?, status = ?, finished_at = CASE"
                    " WHEN ? = 'running' THEN NULL ELSE finished_at END WHERE batch_id = ?",
                    (to_json(merged), status, status, batch_id),
                )

    # --- migrations (SPEC 2.5) ------------------------------------------------------------
    def _applied(self) -> list[str]:
        exists = self._query(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'intel_schema_migrations'"
        )
        if not exists:
            return []
        rows = self._query("SELECT name FROM intel_schema_migrations ORDER BY name")
        return [row["name"] for row in rows]

    def migrations(self) -> tuple[list[str], list[Migration]]:
        applied = self._applied()
        done = set(applied)
        return applied, [m for m in load_migrations(BACKEND) if m.name not in done]

    def migrate(self) -> list[str]:
        _, pending = self.migrations()
        applied_now: list[str] = []
        for migration in pending:
            with self._write() as conn:
                conn.execute(_MIGRATIONS_TABLE)
                # another process may have applied it while we waited for the write lock
                already = conn.execute(
                    "SELECT 1 FROM intel_schema_migrations WHERE name = ?", (migration.name,)
                ).fetchone()
                if already:
                    continue
                # statement by statement inside our transaction: executescript() would
                # commit on its own and could leave a migration half-applied
                try:
                    for statement in split_statements(migration.sql):
                        conn.execute(statement)
                except sqlite3.Error as exc:
                    raise StoreUnavailable(
                        f"migration {migration.name} failed on {self.path} and was rolled "
                        f"back: {exc}; the store is unchanged, report this as a bug"
                    ) from exc
                conn.execute(
                    "INSERT INTO intel_schema_migrations (name, applied_at) VALUES (?, ?)",
                    (migration.name, to_text(now_utc())),
                )
            applied_now.append(migration.name)
        return applied_now


    # --- the daily budget (SPEC 4.2; intel_cli.budget) ---------------------------------------
    def budget_reserve(
        self, day: date, amount: Decimal, cap: Decimal, *, batch_id: str, now: datetime,
        expires_at: datetime,
    ) -> int | None:
        key, at = day.isoformat(), to_text(now)
        # BEGIN IMMEDIATE takes the file's write lock first: no other process can add a hold
        # or a spend between our sum and our insert
        with self._write() as conn:
            conn.execute(
                "DELETE FROM intel_budget_holds WHERE day = ? AND expires_at <= ?", (key, at)
            )
            spent_units, held_units = conn.execute(
                f"""
                SELECT
                    (SELECT COALESCE(SUM({_UNITS.format(col="spent")}), 0) FROM intel_budget
                     WHERE day = :day),
                    (SELECT COALESCE(SUM({_UNITS.format(col="amount")}), 0)
                     FROM intel_budget_holds WHERE day = :day)
                """,
                {"day": key},
            ).fetchone()
            used = figures.money_from_units(spent_units) + figures.money_from_units(held_units)
            if used + amount > cap:
                return None
            cursor = conn.execute(
                "INSERT INTO intel_budget_holds (day, batch_id, amount, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (key, batch_id, _money(amount), at, to_text(expires_at)),
            )
            hold = cursor.lastrowid
        assert hold is not None
        return int(hold)

    def budget_settle(self, hold_id: int, day: date, cost: Decimal, *, now: datetime) -> None:
        key = day.isoformat()
        with self._write() as conn:
            row = conn.execute(
                f"SELECT {_UNITS.format(col='spent')} FROM intel_budget WHERE day = ?", (key,)
            ).fetchone()
            # Decimal arithmetic, written back quantised: REAL never accumulates float error
            spent = (figures.money_from_units(row[0]) if row else Decimal(0)) + cost
            conn.execute(
                "INSERT INTO intel_budget (day, spent, updated_at) VALUES (?, ?, ?)"
                " ON CONFLICT (day) DO UPDATE SET spent = excluded.spent,"
                " updated_at = excluded.updated_at",
                (key, _money(spent), to_text(now)),
            )
            conn.execute("DELETE FROM intel_budget_holds WHERE id = ?", (hold_id,))

    def budget_release(self, batch_id: str) -> int:
        with self._write() as conn:
            return conn.execute(
                "DELETE FROM intel_budget_holds WHERE batch_id = ?", (batch_id,)
            ).rowcount

    def budget_status(self, day: date, *, now: datetime) -> BudgetDay:
        row = self._query(
            f"""
            SELECT
                (SELECT COALESCE(SUM({_UNITS.format(col="spent")}), 0) FROM intel_budget
                 WHERE day = :day) AS spent_units,
                (SELECT COALESCE(SUM({_UNITS.format(col="amount")}), 0) FROM intel_budget_holds
                 WHERE day = :day AND expires_at > :now) AS held_units,
                (SELECT COUNT(*) FROM intel_budget_holds
                 WHERE day = :day AND expires_at > :now) AS holds
            """,
            {"day": day.isoformat(), "now": to_text(now)},
        )[0]
        return BudgetDay(
            day=day,
            spent=figures.money_from_units(row["spent_units"]),
            reserved=figures.money_from_units(row["held_units"]),
            holds=int(row["holds"]),
        )

    def output_history(self, model: str, *, limit: int = 1000) -> tuple[int, Decimal | None]:
        row = self._query(
            """
            SELECT COUNT(*) AS n, SUM(output_tokens) AS total FROM (
                SELECT output_tokens FROM intel_results
                WHERE model = ? AND status = 'enriched' AND attempts = 1
                ORDER BY id DESC LIMIT ?
            )
            """,
            (model, max(int(limit), 0)),
        )[0]
        n = int(row["n"])
        # 2 places, as PostgreSQL's (a JSON float there): a token count needs no more
        return (n, (Decimal(int(row["total"])) / n).quantize(Decimal("0.01"))) if n else (0, None)

def _env_busy_timeout() -> int:
    raw = os.environ.get("INTEL_SQLITE_BUSY_TIMEOUT_MS", "").strip()
    try:
        return max(1, int(raw)) if raw else BUSY_TIMEOUT_MS
    except ValueError:
        return BUSY_TIMEOUT_MS


def split_statements(sql: str) -> list[str]:
    """Split a script into statements at the semicolons SQLite itself sees as ends.

    sqlite3.complete_statement understands strings, comments and trigger bodies,
    so a `;` inside any of them does not split.
    """
    statements: list[str] = []
    pending = ""
    pieces = sql.split(";")
    for piece in pieces[:-1]:
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if _has_code(pending):
                statements.append(pending.strip())
            pending = ""
    pending += pieces[-1]
    if _has_code(pending):
        statements.append(pending.strip())
    return statements


def _has_code(sql: str) -> bool:
    """Whether `sql` holds more than whitespace, comments and semicolons (a `--` or `/*`
    inside a string literal can only make this answer yes, which is harmless)."""
    return bool(_COMMENTS.sub("", sql).replace(";", "").strip())


def _money(amount: Decimal) -> float:
    return float(figures.quantise_money(amount))


def _result_row(row: dict[str, Any]) -> dict[str, Any]:
    row["cost"] = figures.money_from_units(row.pop("cost_units"))
    row["created_at"] = from_text(row["created_at"])
    row["intel"] = json.loads(row["intel"]) if row["intel"] is not None else None
    row["usage"] = json.loads(row["usage"]) if row["usage"] is not None else None
    return row


def _limiter(row: dict[str, Any]) -> LimiterState:
    return LimiterState(
        name=row["name"],
        blocked_until=from_text(row["blocked_until"]),
        reason=row["reason"],
        set_by=row["set_by"],
        updated_at=from_text(row["updated_at"]),
    )
