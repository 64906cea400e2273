"""The Supabase store (SPEC 2.1 `--store supabase`): supabase-py over the project's REST API.

Owns the HTTP side: rows go in and out through PostgREST's table API (inserts, an upsert on
(batch_id, row_index), updates, filtered reads), while every figure and the limiter come from
the SQL functions of migrations/postgres/ through `rpc(...)`, so nothing is ever aggregated
from fetched rows (PostgREST silently caps how many rows a request returns). PostgREST's
error bodies become one-line exit-4 errors: a rejected key, a database that has not been
migrated, a project that cannot be reached.

Migrations need SQL that PostgREST cannot run: `migrate()` uses a direct connection from
SUPABASE_DB_URL (through PostgresStore). `migrations()` works without one: it reads
`intel_schema_migrations` over REST (all pending when the table does not exist yet), so
`intel migrate --status` and `--print-sql` (for the SQL editor) need only the REST keys.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from intel_cli.errors import BatchExists, ConfigError, StoreUnavailable, UsageError
from intel_cli.secrets import redact, register
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
from intel_cli.stores.jsonvalues import redacted
from intel_cli.stores.postgres import (
    PostgresStore,
    batch_row,
    budget_day,
    canonical_by_day,
    canonical_by_model,
    canonical_metrics,
    limiter_state,
    load_postgres_migrations,
    output_history,
    result_row,
    utc,
)
from intel_cli.timefmt import to_text

if TYPE_CHECKING:
    import httpx

URL_VARS = ("SUPABASE_URL", "NEXT_PUBLIC_SUPABASE_URL")
KEY_VAR = "SUPABASE_SERVICE_ROLE_KEY"
DB_URL_VAR = "SUPABASE_DB_URL"

# PostgREST's answers for "that table / function / column is not there": the schema is older
# than this version of intel, or was never created
NOT_MIGRATED_CODES = frozenset({"PGRST202", "PGRST204", "PGRST205", "42P01", "42883", "42703"})
# the key is not accepted, or is a key (anon) that may not touch the intel tables
REJECTED_KEY_CODES = frozenset({"PGRST300", "PGRST301", "PGRST302", "PGRST303", "42501"})
PAGE = 1000  # rows per request when listing: PostgREST caps responses (Supabase: 1000)

MIGRATE_HINT = (
    f"run `intel migrate --store supabase` with {DB_URL_VAR} set (Project Settings → Database "
    "→ connection string), or paste the output of `intel migrate --store supabase --print-sql` "
    "into the Supabase SQL editor"
)


class NotMigrated(StoreUnavailable):
    """The REST API does not know the intel tables or functions."""


class SupabaseStore(Store):
    """A store in a Supabase project, reached over its REST API with the service-role key."""

    #: the HTTP transport when none is passed: None is httpx's real one. Tests set a fake here
    #: (the hosted REST API cannot run in them) to drive `--store supabase` end to end.
    default_transport: httpx.BaseTransport | None = None

    def __init__(
        self,
        url: str,
        key: str,
        *,
        db_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 30.0,
        retry: bool = True,
    ) -> None:
        import httpx
        from supabase import ClientOptions, create_client
        from supabase.lib.client_options import SyncClientOptions

        register(key)
        self.url = url.rstrip("/")
        self.display_name = f"supabase ({redact(self.url)})"
        self._db_url = db_url
        self._status = threading.local()  # the HTTP status behind the last APIError
        self._http = httpx.Client(
            transport=transport or self.default_transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            follow_redirects=True,
            event_hooks={"response": [self._remember_status]},
        )
        options: SyncClientOptions = ClientOptions(
            httpx_client=self._http,
            # no sign-in here: the service-role key is the credential, nothing to refresh
            auto_refresh_token=False,
            persist_session=False,
            postgrest_client_retry=retry,
        )
        try:
            self._client = create_client(self.url, key, options=options)
        except Exception as exc:  # supabase's SupabaseException: a URL it cannot use
            self._http.close()
            raise ConfigError(
                f"cannot use {redact(self.url)} as the Supabase URL ({redact(str(exc))}): set "
                "SUPABASE_URL to the project URL, https://<project-ref>.supabase.co"
            ) from None

    @classmethod
    def from_env(cls) -> SupabaseStore:
        """SUPABASE_URL (or NEXT_PUBLIC_SUPABASE_URL), SUPABASE_SERVICE_ROLE_KEY and, for
        `intel migrate`, SUPABASE_DB_URL."""
        url = next((os.environ[v] for v in URL_VARS if os.environ.get(v, "").strip()), "")
        if not url:
            raise ConfigError(
                "the supabase store needs SUPABASE_URL (or NEXT_PUBLIC_SUPABASE_URL): set it to "
                "the project URL, https://<project-ref>.supabase.co"
            )
        key = os.environ.get(KEY_VAR, "").strip()
        if not key:
            raise ConfigError(
                f"the supabase store needs {KEY_VAR}: set it to the project's service_role key "
                "(Project Settings → API); the anon key cannot see the intel tables"
            )
        db_url = os.environ.get(DB_URL_VAR, "").strip() or None
        return cls(url.strip(), key, db_url=db_url)

    def close(self) -> None:
        self._http.close()

    # --- HTTP and errors ---------------------------------------------------------------------
    def _remember_status(self, response: httpx.Response) -> None:
        self._status.code = response.status_code

    def _execute(self, request: Any) -> Any:
        """Send a built supabase-py request; its `.data`, or the user-facing error.
        `from None`: the chained httpx/postgrest errors add nothing the user can act on."""
        import httpx
        from postgrest.exceptions import APIError

        self._status.code = None
        try:
            return request.execute().data
        except APIError as exc:
            raise self._api_error(exc) from None
        except httpx.HTTPError as exc:
            reason = redact(" ".join(str(exc).split())) or type(exc).__name__
            message = f"cannot reach the store {self.display_name}: {reason}"
            raise StoreUnavailable(message) from None

    def _api_error(self, exc: Any) -> Exception:
        status: int | None = getattr(self._status, "code", None)
        code = str(exc.code or "")
        said = redact(" ".join(str(exc.message or "").split())) or "no message"
        if code in NOT_MIGRATED_CODES:
            return NotMigrated(
                f"the store {self.display_name} has not been migrated ({code}: {said}): "
                + MIGRATE_HINT
            )
        if status in (401, 403) or code in REJECTED_KEY_CODES:
            return StoreUnavailable(
                f"the store {self.display_name} rejected {KEY_VAR} (HTTP {status}: {said}): set "
                "it to the project's service_role key (Project Settings → API), not the anon key"
            )
        if code == "23505":
            return _Duplicate(said)
        if status is None or status >= 500 or status in (404, 408, 429):
            return StoreUnavailable(
                f"the store {self.display_name} answered HTTP {status} ({code or 'no code'}: "
                f"{said}): check that the project is up (not paused), then retry"
            )
        return exc  # a request we built wrong: a bug, exit 1 with --debug for details

    def _table(self, name: str) -> Any:
        return self._client.table(name)

    def _rpc(self, name: str, params: dict[str, Any]) -> Any:
        return self._execute(self._client.rpc(name, params))

    # --- batches -------------------------------------------------------------------------------
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
        row = {
            "created_at": to_text(utc(now)),
            "batch_id": batch_id,
            "total": total,
            "skipped": skipped,
            "model_used": model_used,
            "mode": mode,
            "status": "running",
            "metadata": redacted(metadata or {}),
        }
        try:
            self._execute(self._table("intel_logs").insert(row, returning="minimal"))
        except _Duplicate:
            raise BatchExists(
                f"batch id {batch_id} is already in the store: choose another --batch-id, "
                f"or --resume {batch_id}"
            ) from None

    def record_result(self, result: ContactResult) -> None:
        if result.status not in RESULT_STATUSES:
            raise ValueError(f"unknown result status {result.status!r}")
        u = result.usage
        row = {
            "batch_id": result.batch_id,
            "row_index": result.row_index,
            "contact_key": result.contact_key,
            "status": result.status,
            "model": result.model,
            "input_tokens": u.input,
            "output_tokens": u.output,
            "cache_read_tokens": u.cache_read,
            "cache_write_tokens": u.cache_write,
            # a string: PostgREST reads it into numeric(20,10) without a float in between
            "cost": str(figures.quantise_money(result.cost)),
            "latency_ms": result.latency_ms,
            "attempts": result.attempts,
            "error": None if result.error is None else redact(result.error),
            "intel": None if result.intel is None else redacted(result.intel),
            "usage": None if result.raw_usage is None else redacted(result.raw_usage),
            "prompt_version": result.prompt_version,
            "created_at": to_text(utc(result.created_at or datetime.now(UTC))),
        }
        # a resumed or adaptive retry replaces the contact's row, never duplicates it
        self._execute(
            self._table("intel_results").upsert(
                row, on_conflict="batch_id,row_index", returning="minimal"
            )
        )

    def finalise_batch(self, batch_id: str, totals: BatchTotals, *, now: datetime) -> None:
        if totals.status not in BATCH_STATUSES:
            raise ValueError(f"unknown batch status {totals.status!r}")
        # PostgREST cannot merge jsonb in an update: read the metadata, merge, write it back
        # (only the process running a batch finalises it)
        found = self._execute(
            self._table("intel_logs").select("metadata").eq("batch_id", batch_id).limit(1)
        )
        if not found:
            raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")
        metadata = dict(found[0].get("metadata") or {})
        metadata.update(totals.metadata or {})
        u = totals.usage
        values = {
            "status": totals.status,
            "total": totals.total,
            "enriched": totals.enriched,
            "failed": totals.failed,
            "retried": totals.retried,
            "timed_out": totals.timed_out,
            "cached": totals.cached,
            "skipped": totals.skipped,
            "cost": str(figures.quantise_money(totals.cost)),
            "avg_time_ms": totals.avg_time_ms,
            "input_tokens": u.input,
            "output_tokens": u.output,
            "cache_read_tokens": u.cache_read,
            "cache_write_tokens": u.cache_write,
            "finished_at": to_text(utc(now)),
            "metadata": redacted(metadata),
        }
        self._execute(
            self._table("intel_logs").update(values, returning="minimal").eq("batch_id", batch_id)
        )

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        rows = self._execute(self._table("intel_logs").select("*").eq("batch_id", batch_id))
        return batch_row(rows[0]) if rows else None

    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        # page through: one request returns at most PostgREST's max-rows
        out: list[dict[str, Any]] = []
        while True:
            query = (
                self._table("intel_results")
                .select("*")
                .eq("batch_id", batch_id)
                .order("row_index")
                .range(len(out), len(out) + PAGE - 1)
            )
            rows = self._execute(query)
            out.extend(result_row(r) for r in rows)
            if len(rows) < PAGE:
                return out

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        # keyset pages (row_index > the last seen): a page at a time, never the whole batch
        after = -1
        while True:
            query = (
                self._table("intel_results")
                .select("*")
                .eq("batch_id", batch_id)
                .gt("row_index", after)
                .order("row_index")
                .range(0, PAGE - 1)
            )
            rows = self._execute(query)
            for row in rows:
                yield result_row(row)
            if len(rows) < PAGE:
                return
            after = int(rows[-1]["row_index"])

    # --- metrics: the database functions, over rpc ---------------------------------------------
    def metrics(self, since: datetime, until: datetime, recent: int = 10) -> dict[str, Any]:
        data = self._rpc("intel_metrics", {**_window(since, until), "recent": int(recent)})
        return canonical_metrics(data)

    def metrics_by_day(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return canonical_by_day(self._rpc("intel_metrics_by_day", _window(since, until)))

    def metrics_by_model(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        return canonical_by_model(self._rpc("intel_metrics_by_model", _window(since, until)))

    # --- the global limiter ----------------------------------------------------------------------
    def get_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        rows = self._execute(self._table("intel_limiter").select("*").eq("name", name))
        return limiter_state(rows[0]) if rows else None

    def block_limiter(
        self,
        until: datetime,
        *,
        reason: str,
        set_by: str | None,
        now: datetime,
        name: str = LIMITER_NAME,
    ) -> LimiterState:
        rows = self._rpc(
            "intel_limiter_block",
            {
                "name": name,
                "until": to_text(utc(until)),
                "reason": redact(reason),
                "set_by": set_by,
                "now": to_text(utc(now)),
            },
        )
        state = limiter_state(_first(rows))
        if state is None:
            raise StoreUnavailable(
                f"the store {self.display_name} did not return the limiter row: " + MIGRATE_HINT
            )
        return state

    def reset_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        state = limiter_state(_first(self._rpc("intel_limiter_reset", {"name": name})))
        if state is None or state.blocked_until is None:
            return None
        return state

    # --- reuse of earlier results ----------------------------------------------------------------
    def find_cached(
        self, contact_key: str, *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, Any] | None:
        query = (
            self._table("intel_results")
            .select("*")
            .eq("contact_key", contact_key)
            .eq("prompt_version", prompt_version)
            .eq("model", model)
            .eq("status", "enriched")
            .not_.is_("intel", "null")
            .gte("created_at", to_text(utc(since)))
            .order("created_at", desc=True)
            .order("id", desc=True)
            .limit(1)
        )
        rows = self._execute(query)
        return result_row(rows[0]) if rows else None

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
        # PostgREST cannot merge jsonb in an update: read, merge, write back (only the
        # process running a batch updates it)
        found = self._execute(
            self._table("intel_logs").select("metadata").eq("batch_id", batch_id).limit(1)
        )
        if not found:
            raise UsageError(f"no batch {batch_id!r} in the store {self.display_name}")
        merged = dict(found[0].get("metadata") or {})
        merged.update(metadata)
        values: dict[str, Any] = {"metadata": redacted(merged)}
        if status is not None:
            values["status"] = status
            if status == "running":
                values["finished_at"] = None
        self._execute(
            self._table("intel_logs").update(values, returning="minimal").eq("batch_id", batch_id)
        )

    # --- migrations ------------------------------------------------------------------------------
    def _direct(self, purpose: str) -> PostgresStore:
        if not self._db_url:
            raise ConfigError(
                f"{purpose} on Supabase needs a direct database connection: set {DB_URL_VAR} "
                "(Project Settings → Database → connection string), or paste the output of "
                "`intel migrate --store supabase --print-sql` into the Supabase SQL editor"
            )
        return PostgresStore(self._db_url)

    def migrations(self) -> tuple[list[str], list[Migration]]:
        if self._db_url:
            with self._direct("reading the migrations") as db:
                return db.migrations()
        return self._rest_migrations()

    def _rest_migrations(self) -> tuple[list[str], list[Migration]]:
        """Applied and pending, read over REST (the service role bypasses RLS)."""
        try:
            rows = self._execute(
                self._table("intel_schema_migrations").select("name").order("name")
            )
            applied = [str(r["name"]) for r in rows]
        except NotMigrated:
            applied = []  # no migrations table yet: everything is pending
        done = set(applied)
        return applied, [m for m in load_postgres_migrations() if m.name not in done]

    def migrate(self) -> list[str]:
        with self._direct("applying migrations") as db:
            return db.migrate()

    def require_migrated(self) -> None:
        """Raise the exit-4 'not migrated' error when a migration is pending (SPEC 2.1).
        Over REST even when SUPABASE_DB_URL is set: every command but `intel migrate` works
        through REST, and a direct connection may not be reachable from here (Supabase's
        direct host is IPv6-only without the pooler)."""
        _, pending = self._rest_migrations()
        if pending:
            names = ", ".join(m.name for m in pending)
            raise NotMigrated(
                f"the store {self.display_name} has not been migrated ({names} pending): "
                + MIGRATE_HINT
            )


    # --- the daily budget (SPEC 4.2; intel_cli.budget): the SQL functions of 0002_budget ---------
    def budget_reserve(
        self, day: date, amount: Decimal, cap: Decimal, *, batch_id: str, now: datetime,
        expires_at: datetime,
    ) -> int | None:
        hold = self._rpc(
            "intel_budget_reserve",
            {
                "p_day": day.isoformat(),
                "p_amount": str(amount),
                "p_cap": str(cap),
                "p_batch_id": batch_id,
                "p_now": to_text(utc(now)),
                "p_expires_at": to_text(utc(expires_at)),
            },
        )
        # NULL (does not fit) arrives as null, or as an empty body that supabase-py reads as []
        return int(hold) if isinstance(hold, int | str) and str(hold).strip() else None

    def budget_settle(self, hold_id: int, day: date, cost: Decimal, *, now: datetime) -> None:
        self._rpc(
            "intel_budget_settle",
            {"p_hold": hold_id, "p_day": day.isoformat(), "p_cost": str(cost),
             "p_now": to_text(utc(now))},
        )

    def budget_release(self, batch_id: str) -> int:
        return int(self._rpc("intel_budget_release", {"p_batch_id": batch_id}) or 0)

    def budget_status(self, day: date, *, now: datetime) -> BudgetDay:
        raw = self._rpc(
            "intel_budget_status", {"p_day": day.isoformat(), "p_now": to_text(utc(now))}
        )
        return budget_day(day, raw)

    def output_history(self, model: str, *, limit: int = 1000) -> tuple[int, Decimal | None]:
        return output_history(
            self._rpc("intel_output_history", {"p_model": model, "p_limit": limit})
        )

class _Duplicate(Exception):
    """PostgREST's 23505 (unique violation), for create_batch to turn into BatchExists."""


def _window(since: datetime, until: datetime) -> dict[str, str]:
    return {"since": to_text(utc(since)), "until": to_text(utc(until))}


def _first(rows: Any) -> dict[str, Any] | None:
    """The first row of a SETOF function's answer (a list), or the row itself."""
    if isinstance(rows, list):
        return rows[0] if rows else None
    return rows if isinstance(rows, dict) and rows else None
