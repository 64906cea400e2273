"""The store interface: one small API that every backend (SQLite, PostgreSQL, Supabase) serves.

The pipeline and the commands talk only to `Store`. Backends differ in how
they talk to their database, never in what a figure means: the metrics
definitions of SPEC 2.3 are computed by the database on every backend.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from intel_cli.usage import Usage

LIMITER_NAME = "anthropic"

BATCH_MODES = ("realtime", "batch", "simulated")
BATCH_STATUSES = ("running", "completed", "interrupted", "rate_limited", "over_budget", "failed")
RESULT_STATUSES = (
    "enriched",
    "cached",
    "failed",
    "timed_out",
    "skipped",
    "rate_limited",
    "over_budget",
)


@dataclass
class ContactResult:
    """One row of `intel_results`: the outcome for one contact (one input row) in one batch."""

    batch_id: str
    row_index: int
    contact_key: str | None
    status: str
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    latency_ms: int | None = None
    attempts: int = 0
    error: str | None = None
    intel: dict[str, Any] | None = None
    # the raw usage JSON of every billed attempt, so cost can be recomputed
    raw_usage: list[dict[str, Any]] | None = None
    prompt_version: str | None = None
    created_at: datetime | None = None  # set by the store when None


@dataclass
class BatchTotals:
    """What `finalise_batch` writes to the batch's `intel_logs` row (SPEC 3.1 counting rules)."""

    status: str
    total: int = 0
    enriched: int = 0
    failed: int = 0
    retried: int = 0
    timed_out: int = 0
    cached: int = 0
    skipped: int = 0
    cost: Decimal = Decimal(0)
    avg_time_ms: int | None = None
    usage: Usage = field(default_factory=Usage)
    metadata: dict[str, Any] | None = None  # merged into the stored metadata when given


@dataclass
class LimiterState:
    name: str
    blocked_until: datetime | None  # aware UTC
    reason: str | None
    set_by: str | None
    updated_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.blocked_until is not None and self.blocked_until > now


@dataclass(frozen=True)
class BudgetDay:
    """One UTC day of the shared daily budget: settled spend and what is held in flight."""

    day: date
    spent: Decimal
    reserved: Decimal
    holds: int


@dataclass
class Migration:
    name: str  # file name without .sql, e.g. "0001_initial"
    sql: str


class Store(ABC):
    """A batch log, per-contact results, the global limiter and the schema migrations."""

    #: the URL shown to users, passwords redacted
    display_name: str = ""

    # --- batches -----------------------------------------------------------------
    @abstractmethod
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
        """Insert the batch's `intel_logs` row with status `running`. Raises BatchExists."""

    @abstractmethod
    def record_result(self, result: ContactResult) -> None:
        """Upsert one `intel_results` row on (batch_id, row_index), committed at once."""

    @abstractmethod
    def finalise_batch(self, batch_id: str, totals: BatchTotals, *, now: datetime) -> None:
        """Write the final counters, cost, tokens, status and `finished_at`."""

    @abstractmethod
    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        """The batch's `intel_logs` row as a dict (timestamps as aware datetimes), or None."""

    @abstractmethod
    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        """The batch's `intel_results` rows, ordered by row_index."""

    # --- metrics (SPEC 2.3), aggregated by the database ----------------------------
    @abstractmethod
    def metrics(self, since: datetime, until: datetime, recent: int = 10) -> dict[str, Any]:
        """`summary`, `tokens`, `modelBreakdown`, `recentBatches` of SPEC 2.3 for the window."""

    @abstractmethod
    def metrics_by_day(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Per UTC day: day (YYYY-MM-DD), batches, contacts, enriched, failed, cost,
        success_rate."""

    @abstractmethod
    def metrics_by_model(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Per model of intel_results rows: model, contacts, enriched, input/output tokens, cost."""

    # --- the global limiter (SPEC 2.4) ---------------------------------------------
    @abstractmethod
    def get_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None: ...

    @abstractmethod
    def block_limiter(
        self, until: datetime, *, reason: str, set_by: str | None, now: datetime,
        name: str = LIMITER_NAME,
    ) -> LimiterState:
        """Atomically keep the later of the stored and the new `blocked_until`; return the row."""

    @abstractmethod
    def reset_limiter(self, name: str = LIMITER_NAME) -> LimiterState | None:
        """Clear the limiter; return what was cleared (None when nothing was set)."""

    # --- reuse of earlier results (SPEC 3.3) ----------------------------------------
    @abstractmethod
    def find_cached(
        self, contact_key: str, *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, Any] | None:
        """The newest enriched result for this key, prompt version and model since `since`."""

    # --- migrations (SPEC 2.5) ------------------------------------------------------
    @abstractmethod
    def migrations(self) -> tuple[list[str], list[Migration]]:
        """(applied names, pending migrations) in order."""

    @abstractmethod
    def migrate(self) -> list[str]:
        """Apply the pending migrations, each in a transaction; return the names applied."""

    def find_cached_many(
        self, contact_keys: Sequence[str], *, prompt_version: str, model: str, since: datetime
    ) -> dict[str, dict[str, Any]]:
        """`find_cached` for many keys: key -> its newest reusable result (keys without one
        are absent). Backends override this with one query per chunk of keys."""
        found: dict[str, dict[str, Any]] = {}
        for key in dict.fromkeys(contact_keys):
            row = self.find_cached(key, prompt_version=prompt_version, model=model, since=since)
            if row is not None:
                found[key] = row
        return found

    # --- resume and heartbeats (SPEC 4.3) ---------------------------------------------
    @abstractmethod
    def update_batch(
        self,
        batch_id: str,
        *,
        metadata: dict[str, Any],
        status: str | None = None,
        now: datetime,
    ) -> None:
        """Merge `metadata` into the batch's metadata (top-level keys replace); with `status`,
        set it too (`running` also clears finished_at: a resumed batch). Raises UsageError
        when there is no such batch."""

    # --- the daily budget (SPEC 4.2, INTEL_DAILY_BUDGET; intel_cli.budget) -------------
    @abstractmethod
    def budget_reserve(
        self, day: date, amount: Decimal, cap: Decimal, *, batch_id: str, now: datetime,
        expires_at: datetime,
    ) -> int | None:
        """Atomically, across every process sharing the store: hold `amount` of the UTC `day`
        when its spent + unexpired holds + `amount` <= `cap` (expired holds are dropped).
        The hold's id, or None when it does not fit (the request must not be sent)."""

    @abstractmethod
    def budget_settle(self, hold_id: int, day: date, cost: Decimal, *, now: datetime) -> None:
        """Add a finished request's real `cost` to `day` and drop its hold, in one
        transaction (the cost counts even when the hold had expired)."""

    @abstractmethod
    def budget_release(self, batch_id: str) -> int:
        """Drop every hold of `batch_id` (its run has ended); how many were dropped."""

    @abstractmethod
    def budget_status(self, day: date, *, now: datetime) -> BudgetDay:
        """The day's spent and unexpired holds."""

    @abstractmethod
    def output_history(self, model: str, *, limit: int = 1000) -> tuple[int, Decimal | None]:
        """(n, mean output tokens) of the newest `limit` single-attempt enriched results of
        `model`; (0, None) without history. What --dry-run expects a request to generate."""

    # --- streaming a big batch (issue 6: flat memory as the input grows) ---------------
    def record_results(self, results: Sequence[ContactResult]) -> None:
        """`record_result` for many rows. Backends override this with one transaction, so a
        file's skipped rows cost one commit, not one each."""
        for result in results:
            self.record_result(result)

    def iter_results(self, batch_id: str) -> Iterator[dict[str, Any]]:
        """The rows of `batch_results`, in row_index order, read a page at a time so a
        100,000-contact batch is never all in memory. Backends override this with keyset
        pages; this default reads them all at once."""
        yield from self.batch_results(batch_id)

    # --- lifecycle --------------------------------------------------------------------
    def close(self) -> None:  # noqa: B027 - backends without resources need not override
        """Release connections."""

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
