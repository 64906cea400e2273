"""The PostgreSQL store (SPEC 2.1 `postgresql://...`): psycopg 3 over one direct connection.

Owns the connection, the translation of psycopg errors into exit-4 `StoreUnavailable` lines
with the password redacted, and the PostgreSQL migration runner. The figures themselves are
defined once, in SQL (migrations/postgres/0001_initial.sql: `intel_metrics`,
`intel_limiter_block`, ...); this module only calls those functions, and so does the Supabase
store over REST. `canonical_*` helpers below put the database's jsonb answers back into the
key order the SQLite store prints, so `metrics --json` reads the same on every backend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from intel_cli.errors import BatchExists, ConfigError, StoreUnavailable, UsageError
from intel_cli.secrets import redact, redact_url
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

if TYPE_CHECKING:
    import psycopg

BACKEND = "postgres"

# Key order of the metrics dict, as the SQLite store builds it (jsonb sorts keys its own way).
SUMMARY_KEYS = (
    "totalBatches",
    "totalContacts",
    "totalEnriched",
    "totalFailed",
    "totalCost",
    "avgSuccessRate",
    "avgTimePerContact",
)
TOKEN_KEYS = ("totalInput", "totalOutput", "total", "cacheRead", "cacheWrite")
RECENT_KEYS = (
    "batch_id",
    "created_at",
    "total",
    "enriched",
    "failed",
    "cost",
    "success_rate",
    "retried",
    "timed_out",
    "cached",
    "skipped",
    "mode",
    "status",
    "model_used",
)
BY_DAY_KEYS = ("day", "batches", "contacts", "enriched", "failed", "cost", "success_rate")
BY_MODEL_KEYS = (
    "model",
    "contacts",
    "enriched",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "cost",
)


def _ordered(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`d` with `keys` first, in that order, then any keys a newer schema added."""
    out = {k: d[k] for k in keys if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def canonical_metrics(raw: dict[str, Any]) -> dict[str, Any]:
    """`intel_metrics(...)` jsonb in the SQLite store's key order (models: most rows first)."""
    models = raw.get("modelBreakdown") or {}
    return {
        "summary": _ordered(raw["summary"], SUMMARY_KEYS),
        "tokens": _ordered(raw["tokens"], TOKEN_KEYS),
        "modelBreakdown": dict(sorted(models.items(), key=lambda kv: (-kv[1], kv[0]))),
        "recentBatches": [_ordered(b, RECENT_KEYS) for b in raw.get("recentBatches") or []],
    }


def canonical_by_day(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_ordered(r, BY_DAY_KEYS) for r in rows]


def canonical_by_model(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_ordered(r, BY_MODEL_KEYS) for r in rows]


def stored_money(value: Any) -> Decimal:
    """A stored cost (Decimal from psycopg, a JSON number or string from REST), 10 places."""
    if value is None:
        return figures.quantise_money(Decimal(0))
    amount = value if isinstance(value, Decimal) else Decimal(str(value))
    return figures.quantise_money(amount)


def utc(dt: datetime) -> datetime:
    """Aware UTC. Naive datetimes are refused, as the SQLite store does: guessing their zone
    is how an hour of metrics silently moves between windows."""
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(f"naive datetime {dt.isoformat()}: pass an aware UTC datetime")
    return dt.astimezone(UTC)


def _utc_or_none(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return utc(value)


def limiter_state(row: dict[str, Any] | None) -> LimiterState | None:
    if row is None:
        return None
    return LimiterState(
        name=row["name"],
        blocked_until=_utc_or_none(row.get("blocked_until")),
        reason=row.get("reason"),
        set_by=row.get("set_by"),
        updated_at=_utc_or_none(row.get("updated_at")),
    )


def batch_row(row: dict[str, Any]) -> dict[str, Any]:
    """An `intel_logs` row as get_batch returns it on every backend."""
    out = dict(row)
    for key in ("created_at", "finished_at"):
        out[key] = _utc_or_none(out.get(key))
    out["cost"] = stored_money(out.get("cost"))
    if out.get("success_rate") is not None:
        out["success_rate"] = float(out["success_rate"])
    if out.get("metadata") is None:
        out["metadata"] = {}
    return out


def result_row(row: dict[str, Any]) -> dict[str, Any]:
    """An `intel_results` row as batch_results/find_cached return it on every backend."""
    out = dict(row)
    out["created_at"] = _utc_or_none(out.get("created_at"))
    out["cost"] = stored_money(out.get("cost"))
    return out


def with_record(migration: Migration) -> Migration:
    """The migration's SQL followed by the statement that records it, so that the script
    `intel migrate --print-sql` prints (for the Supabase SQL editor) is complete as well."""
    name = migration.name.replace("'", "''")
    sql = (
        migration.sql.rstrip()
        + "\n\nINSERT INTO intel_schema_migrations (name, applied_at)"
        + f" VALUES ('{name}', now());\n"
    )
    return Migration(name=migration.name, sql=sql)


def load_postgres_migrations() -> list[Migration]:
    from intel_cli.stores.migrations import load_migrations

    return [with_record(m) for m in load_migrations(BACKEND)]


def not_migrated_message(display_name: str) -> str:
    return (
        f"the store at {display_name} has not been migrated: "
        f"run `intel migrate --store {display_name}`"
    )


# a resumed or adaptive retry replaces the contact's row, never duplicates it
_UPSERT_RESULT = """
    INSERT INTO intel_results
        (batch_id, row_index, contact_key, status, model, input_tokens,
         output_tokens, cache_read_tokens, cache_write_tokens, cost, latency_ms,
         attempts, error, intel, usage, prompt_version, created_at)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
            %s::jsonb, %s::jsonb, %s, %s)
    ON CONFLICT (batch_id, row_index) DO UPDATE SET
        contact_key = excluded.contact_key,
        status = excluded.status,
        model = excluded.model,
        input_tokens = excluded.input_tokens,
        output_tokens = excluded.output_tokens,
        cache_read_tokens = excluded.cache_read_tokens,
        cache_write_tokens = excluded.cache_write_tokens,
        cost = excluded.cost,
        latency_ms = excluded.latency_ms,
        attempts = excluded.attempts,
        error = excluded.error,
        intel = excluded.intel,
        usage = excluded.usage,
        prompt_version = excluded.prompt_version,
        created_at = excluded.created_at
"""

RESULTS_PAGE = 1000  # rows per query when streaming a batch's results (iter_results)


def _result_params(result: ContactResult) -> tuple[Any, ...]:
    if result.status not in RESULT_STATUSES:
        raise ValueError(f"unknown result status {result.status!r}")
    created_at = utc(result.created_at) if result.created_at else datetime.now(UTC)
    u = result.usage
    return (
        result.batch_id,
        result.row_index,
        result.contact_key,
        result.status,
        result.model,
        u.input,
        u.output,
        u.cache_read,
        u.cache_write,
        figures.quantise_money(result.cost),
        result.latency_ms,
        result.attempts,
        redact(result.error) if result.error else None,
        to_json(result.intel),
        to_json(result.raw_usage),
        result.prompt_version,
        created_at,
    )


class PostgresStore(Store):
    """A store in a PostgreSQL database reached with a `postgresql://` URL."""

    def __init__(self, url: str, *, connect_timeout: int = 10) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self.display_name = redact_url(url)
        if urlsplit(url).netloc.count("@") > 1:
            # libpq splits at the first '@': it would connect to a host named after the rest of
            # the password, and print that host name in its error
            raise ConfigError(
                f"the store URL {self.display_name} has a raw '@' in its user name or "
                "password: write it as %40"
            )
        # one connection, used by one thread at a time (the pipeline's store thread, the CLI)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[dict[str, Any]] | None = None
        with self._lock:
            self._connection()

    # --- connection and errors -------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[dict[str, Any]]:
        import psycopg
        from psycopg.rows import dict_row

        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        try:
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=self._connect_timeout,
                row_factory=dict_row,
                # transaction poolers (Supabase's port 6543, pgbouncer) break server-side
                # prepared statements, so never prepare
                prepare_threshold=None,
                application_name="intel",
            )
        except psycopg.Error as exc:
            raise self._unreachable(exc) from None
        return self._conn

    def _unreachable(self, exc: BaseException) -> StoreUnavailable:
        reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        reason = redact(reason) or type(exc).__name__
        return StoreUnavailable(f"cannot reach the store {self.display_name}: {reason}")

    def _not_migrated(self) -> StoreUnavailable:
        return StoreUnavailable(not_migrated_message(self.display_name))

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """A cursor on the connection (autocommit: each statement commits on its own), with
        psycopg's errors turned into the user-facing ones. `from None`: psycopg's messages
        and their chained causes may quote the connection string."""
        import psycopg
        from psycopg import errors

        with self._lock:
            conn = self._connection()
            try:
                with conn.cursor() as cur:
                    yield cur
            except (errors.UndefinedTable, errors.UndefinedFunction) as exc:
                if "intel_" in str(exc):
                    raise self._not_migrated() from None
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if conn.closed or conn.broken:
                    raise self._unreachable(exc) from None
                # the server is there but refused this statement (timeout, lock, conflict)
                reason = redact(" ".join(str(exc).split())) or type(exc).__name__
                raise StoreUnavailable(
                    f"the store {self.display_name} could not run a statement ({reason}): "
                    "retry shortly"
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- batches -----------------------------------------------------------------------------
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
        with self._cursor() as cur:
            cur.execute(
                """
                INSERT INTO intel_logs
                    (created_at, batch_id, total, skipped, model_used, mode, status, metadata)
                VALUES (%s, %s, %s, %s, %s, %s, 'running', %s::jsonb)
                ON CONFLICT (batch_id) DO NOTHING
                RETURNING id
                """,
                (utc(now), batch_id, total, skipped, model_used, mode, to_json(metadata or {})),
            )
            inserted = cur.fetchone()
        if inserted is None:
            raise BatchExists(
                f"batch id {batch_id} is already in the store: choose another --batch-id, "
                f"or --resume {batch_id}"
            )

    def record_result(self, result: ContactResult) -> None:
        with self._cursor() as cur:
            cur.execute(_UPSERT_RESULT, _result_params(result))

    def record_results(self, results: Sequence[ContactResult]) -> None:
        if not results:
            return
        params = [_result_params(result) for result in results]
        with self._cursor() as cur, cur.connection.transaction():  # one commit for them all
            cur.executemany(_UPSERT_RESULT, params)

    def finalise_batch(self, batch_id: str, totals: BatchTotals, *, now: datetime) -> None:
        if totals.status not in BATCH_STATUSES:
            raise ValueError(f"unknown batch status {totals.status!r}")
        u = totals.usage
        with self._cursor() as cur:
            cur.execute(
                """
                UPDATE intel_logs SET
                    status = %s, total = %s, enriched = %s, failed = %s, retried = %s,
                    timed_out = %s, cached = %s, skipped = %s, cost = %s, avg_time_ms = %s,
                    input_tokens = %s, output_tokens = %s, cache_read_tokens = %s,
                    cache_write_tokens = %s, finished_at = %s,
                    metadata = coalesce(metadata, '{}'::jsonb) || coalesce(%s::jsonb, '{}'::jsonb)
                WHERE batch_id = %s
                """,
                (
                    totals.status,
                    totals.total,
                    totals.enriched,
                    totals.failed,
                    totals.retried,
                    totals.timed_out,
                    totals.cached,
                    totals.skipped,
                    figures.quantise_money(totals.cost),
                    totals.avg_time_ms,
                    u.input,
                    u.output,
                    u.cache_read,
                    u.cache_write,
                    utc(now),
                    to_json(totals.metadata),
                    batch_id,
                ),
            )
            updated = cur.rowcount
        if updated == 0:
            raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        with self._cursor() as cur:
            cur.execute("SELECT * FROM intel_logs WHERE batch_id = %s", (batch_id,))
            row = cur.fetchone()
        return None if row is None else batch_row(row)

    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT * FROM intel_results WHERE batch_id = %s ORDER BY row_index", (batch_id,)
            )
            rows = cur.fetchall()
        return [result_row(r) for r in rows]

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        # keyset pages, not a server-side cursor: transaction poolers (Supabase's port 6543,
        # pgbouncer) do not keep one open between statements
        after = -1
        while True:
            with self._cursor() as cur:
                cur.execute(
                    "SELECT * FROM intel_results WHERE batch_id = %s AND row_index > %s"
                    " ORDER BY row_index LIMIT %s",
                    (batch_id, after, RESULTS_PAGE),
                )
                rows = cur.fetchall()
            for row in rows:
                yield result_row(row)
            if len(rows) < RESULTS_PAGE:
                return
            after = int(rows[-1]["row_index"])

    # --- metrics: computed by the database functions ----------------------------------------
    def metrics(self, since: datetime, until: datetime, recent: int = 10) -> dict[str, Any]:
        with self._cursor() as cur:
            cur.execute(
                "SELECT intel_metrics(%s::timestamptz, %s::timestamptz, %s::integer) AS m",
                (utc(since), utc(until), recent),
            )
            row = cur.fetchone()
        assert row is not None
        return canonical_metrics(row["m"])

    def metrics_by_day(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return canonical_by_day(self._json_function("intel_metrics_by_day", since, until))

    def metrics_by_model(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return canonical_by_model(self._json_function("intel_metrics_by_model", since, until))

    def _json_function(self, name: str, since: datetime, until: datetime) -> Any:
        from psycopg import sql

        query = sql.SQL("SELECT {}(%s::timestamptz, %s::timestamptz) AS j").format(
            sql.Identifier(name)
        )
        with self._cursor() as cur:
            cur.execute(query, (utc(since), utc(until)))
            row = cur.fetchone()
        assert row is not None
        return row["j"]

    # --- the global limiter --------------------------------------------------------------------
    def get_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        with self._cursor() as cur:
            cur.execute("SELECT * FROM intel_limiter WHERE name = %s", (name,))
            return limiter_state(cur.fetchone())

    def block_limiter(
        self,
        until: datetime,
        *,
        reason: str,
        set_by: str | None,
        now: datetime,
        name: str = LIMITER_NAME,
    ) -> LimiterState:
        with self._cursor() as cur:
            cur.execute(
                "SELECT * FROM intel_limiter_block(%s::text, %s::timestamptz, %s::text, %s::text,"
                " %s::timestamptz)",
                (name, utc(until), redact(reason), set_by, utc(now)),
            )
            state = limiter_state(cur.fetchone())
        assert state is not None
        return state

    def reset_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        with self._cursor() as cur:
            cur.execute("SELECT * FROM intel_limiter_reset(%s::text)", (name,))
            state = limiter_state(cur.fetchone())
        if state is None or state.blocked_until is None:
            return None
        return state

    # --- reuse of earlier results --------------------------------------------------------------
    def find_cached(
        self, contact_key: str, *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, Any] | None:
        with self._cursor() as cur:
            cur.execute(
                """
                SELECT * FROM intel_results
                WHERE contact_key = %s AND prompt_version = %s AND model = %s
                  AND status = 'enriched' AND intel IS NOT NULL AND created_at >= %s
                ORDER BY created_at DESC, id DESC
                LIMIT 1
                """,
                (contact_key, prompt_version, model, utc(since)),
            )
            row = cur.fetchone()
        return None if row is None else result_row(row)

    def find_cached_many(
        self, contact_keys: Sequence[str], *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, dict[str, Any]]:
        keys = list(dict.fromkeys(contact_keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(keys), 1000):
            with self._cursor() as cur:
                cur.execute(
                    """
                    SELECT DISTINCT ON (contact_key) * FROM intel_results
                    WHERE contact_key = ANY(%s) AND prompt_version = %s AND model = %s
                      AND status = 'enriched' AND intel IS NOT NULL AND created_at >= %s
                    ORDER BY contact_key, created_at DESC, id DESC
                    """,
                    (keys[start : start + 1000], prompt_version, model, utc(since)),
                )
                rows = cur.fetchall()
            for row in rows:
                found[row["contact_key"]] = result_row(row)
        return found

    # --- resume and heartbeats -------------------------------------------------------------------
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
        with self._cursor() as cur:
            cur.execute(
                """
                UPDATE intel_logs SET
                    metadata = coalesce(metadata, '{}'::jsonb) || %s::jsonb,
                    status = coalesce(%s, status),
                    finished_at = CASE WHEN %s = 'running' THEN NULL ELSE finished_at END
                WHERE batch_id = %s
                """,
                (to_json(metadata), status, status, batch_id),
            )
            updated = cur.rowcount
        if updated == 0:
            raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")

    # --- migrations ------------------------------------------------------------------------------
    def applied_migrations(self) -> list[str]:
        with self._cursor() as cur:
            cur.execute("SELECT to_regclass('intel_schema_migrations') IS NOT NULL AS present")
            row = cur.fetchone()
            if row is None or not row["present"]:
                return []
            cur.execute("SELECT name FROM intel_schema_migrations ORDER BY name")
            return [r["name"] for r in cur.fetchall()]

    def migrations(self) -> tuple[list[str], list[Migration]]:
        applied = self.applied_migrations()
        done = set(applied)
        return applied, [m for m in load_postgres_migrations() if m.name not in done]

    def require_migrated(self) -> None:
        """Raise the exit-4 'not migrated' error when a migration is pending (SPEC 2.1: only
        SQLite migrates itself; a shared database is migrated on purpose, by `intel migrate`)."""
        _, pending = self.migrations()
        if pending:
            raise self._not_migrated()

    def migrate(self) -> list[str]:
        """Apply each pending migration in its own transaction, under an advisory lock so that
        two `intel migrate` runs against one database cannot apply the same file twice."""
        import psycopg

        done: list[str] = []
        for migration in load_postgres_migrations():
            with self._lock:
                conn = self._connection()
                try:
                    with conn.transaction(), conn.cursor() as cur:
                        cur.execute(
                            "SELECT pg_advisory_xact_lock(hashtext('intel_migrate:' "
                            "|| current_schema()))"
                        )
                        cur.execute(
                            "SELECT to_regclass('intel_schema_migrations') IS NOT NULL AS present"
                        )
                        row = cur.fetchone()
                        if row is not None and row["present"]:
                            cur.execute(
                                "SELECT 1 FROM intel_schema_migrations WHERE name = %s",
                                (migration.name,),
                            )
                            if cur.fetchone() is not None:
                                continue
                        # no parameters: psycopg sends the whole file as one simple query
                        cur.execute(migration.sql.encode())
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    raise self._unreachable(exc) from None
                except psycopg.Error as exc:
                    # e.g. a role that may not CREATE in the schema; the transaction is gone
                    reason = redact(" ".join(str(exc).split()))
                    raise StoreUnavailable(
                        f"migration {migration.name} failed on {self.display_name} and was "
                        f"rolled back ({reason}): the store is unchanged; check that this user "
                        "may create tables and functions there, then run `intel migrate` again"
                    ) from None
            done.append(migration.name)
        return done

    # --- the daily budget (SPEC 4.2; intel_cli.budget) -------------------------------------------
    def budget_reserve(
        self, day: date, amount: Decimal, cap: Decimal, *, batch_id: str, now: datetime,
        expires_at: datetime,
    ) -> int | None:
        # one function call: the day's row lock inside it makes check-then-hold atomic
        with self._cursor() as cur:
            cur.execute(
                "SELECT intel_budget_reserve(%s::date, %s::numeric, %s::numeric, %s::text,"
                " %s::timestamptz, %s::timestamptz) AS hold",
                (day, amount, cap, batch_id, utc(now), utc(expires_at)),
            )
            row = cur.fetchone()
        return None if row is None or row["hold"] is None else int(row["hold"])

    def budget_settle(self, hold_id: int, day: date, cost: Decimal, *, now: datetime) -> None:
        with self._cursor() as cur:
            cur.execute(
                "SELECT intel_budget_settle(%s::bigint, %s::date, %s::numeric, %s::timestamptz)",
                (hold_id, day, cost, utc(now)),
            )

    def budget_release(self, batch_id: str) -> int:
        with self._cursor() as cur:
            cur.execute("SELECT intel_budget_release(%s::text) AS n", (batch_id,))
            row = cur.fetchone()
        return int(row["n"]) if row else 0

    def budget_status(self, day: date, *, now: datetime) -> BudgetDay:
        with self._cursor() as cur:
            cur.execute(
                "SELECT intel_budget_status(%s::date, %s::timestamptz) AS j", (day, utc(now))
            )
            row = cur.fetchone()
        assert row is not None
        return budget_day(day, row["j"])

    def output_history(self, model: str, *, limit: int = 1000) -> tuple[int, Decimal | None]:
        with self._cursor() as cur:
            cur.execute("SELECT intel_output_history(%s::text, %s::integer) AS j", (model, limit))
            row = cur.fetchone()
        assert row is not None
        return output_history(row["j"])


def budget_day(day: date, raw: Any) -> BudgetDay:
    """intel_budget_status's JSON (a direct connection or Supabase's rpc) as a BudgetDay."""
    body = json.loads(raw) if isinstance(raw, str) else (raw or {})
    return BudgetDay(
        day=day,
        spent=stored_money(body.get("spent")),
        reserved=stored_money(body.get("reserved")),
        holds=int(body.get("holds") or 0),
    )


def output_history(raw: Any) -> tuple[int, Decimal | None]:
    """intel_output_history's JSON as (n, mean output tokens)."""
    body = json.loads(raw) if isinstance(raw, str) else (raw or {})
    n = int(body.get("n") or 0)
    mean = body.get("mean")
    if not n or mean is None:
        return 0, None
    # 2 places: the JSON number arrives as a float, and a token count needs no more
    return n, Decimal(str(mean)).quantize(Decimal("0.01"))
