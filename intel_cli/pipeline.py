"""The enrichment run (SPEC 2.2, 3.1, 4.1): scheduling, retries, the global limiter, adaptive
retry and the accounting of every token and cent. No printing: progress goes to a callback,
the result is a `RunSummary` that the CLI renders.

A run reads the contacts twice. The first pass keeps only the unique enrichable contacts
(without their raw rows); skipped rows and duplicates are reconstructed from the second pass,
which streams the input again into the output file. In between, an asyncio loop sends the
contacts with at most `concurrency` requests in flight (`intel_cli.pacing.Pacer`). Every store
call goes through one dedicated thread, so the event loop never blocks on the database, and
each contact's result is committed as soon as it is final.

Where a run ends early (a 429 outlasting --max-wait, an API key the API rejects, Ctrl-C) the
batch is still finalised and the output still written, every unfinished contact carrying its
status; `RunSummary.error` then holds the domain error the caller raises after rendering.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import random
import re
import secrets
import string
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TextIO, TypeVar

from intel_cli import budget as budgeting
from intel_cli import resume as resuming
from intel_cli import routing
from intel_cli.anthropic_client import Attempt, Outcome
from intel_cli.config import DEFAULT_MODEL
from intel_cli.contacts import Contact, ContactSource, default_output_path, read_contacts
from intel_cli.errors import (
    ConfigError,
    IntelError,
    Interrupted,
    RateLimitedError,
    StoreUnavailable,
    ThresholdError,
    UsageError,
)
from intel_cli.pacing import DEFAULT_CAP, InputSizer, Pacer
from intel_cli.prompt import CAMPAIGNS, RunContext
from intel_cli.schema import PROMPT_VERSION
from intel_cli.secrets import redact
from intel_cli.stores.base import BatchTotals, ContactResult, LimiterState, Store
from intel_cli.timeparse import format_utc
from intel_cli.usage import Usage

T = TypeVar("T")

NO_KEY_MESSAGE = "No API key: set ANTHROPIC_API_KEY, or try --simulate"
# a 429 without retry-after blocks for this long (SPEC 4.1)
DEFAULT_RETRY_AFTER_S = 60.0
# a retry-after of 0 would let every worker hammer the API at once
MIN_RETRY_AFTER_S = 0.1
# how stale a worker's view of the global limiter may be: another process's 429 is seen
# within this, at one small read per interval per run
LIMITER_CACHE_S = 0.5
# Ctrl-C lets in-flight requests finish for this long, then cancels them (SPEC 4.3)
INTERRUPT_GRACE_S = 2.0
# skipped rows recorded per store call (one transaction each): bounded memory, few commits
SKIPPED_CHUNK = 5000
_BATCH_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_ID_ALPHABET = string.ascii_lowercase + string.digits


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_batch_id(now: datetime) -> str:
    """`b_YYYYMMDDTHHMMSS_xxxxxx`: UTC start time plus 6 random lowercase letters/digits."""
    suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(6))
    return f"b_{now.astimezone(UTC):%Y%m%dT%H%M%S}_{suffix}"


@dataclass
class RunOptions:
    """Everything that shapes a run (secrets never go here: this is stored as metadata)."""

    inputs: list[str]
    output: str | None = None  # None: `<stem>.enriched.csv` next to the first input
    model: str = DEFAULT_MODEL
    concurrency: int = DEFAULT_CAP  # a cap: the pacer adapts under it (SPEC 4.1)
    timeout: float = 10.0  # seconds per attempt
    retries: int = 1  # retries of a 5xx/529/connection error (never of a timeout)
    adaptive_threshold: float = 0.8
    adaptive_retry: bool = True
    batch_id: str | None = None  # None: generated
    wait: bool = False  # wait for an active limiter at start instead of exiting 3
    max_wait: float = 300.0  # seconds of waiting on the limiter per run
    genre: str | None = None
    region: str | None = None
    campaign: str = "all"
    simulate: bool = False
    max_tokens: int = 1024
    # first retry delay; doubled per retry and after a rate limit. Tests make it small.
    backoff_base: float = 1.0
    resume: str | None = None  # continue this batch (SPEC 2.2 --resume)
    cache: bool = True  # reuse earlier results (SPEC 3.3); --no-cache sends everything
    cache_ttl_s: float = 7 * 86400.0  # --cache-ttl
    # a store write that fails (locked, unreachable) is retried this many times, with
    # exponential backoff from store_backoff seconds, before the run stops with exit 4
    store_retries: int = 3
    store_backoff: float = 0.5
    # money limits (SPEC 4.2, intel_cli.budget) and model routing (intel_cli.routing)
    max_cost: Decimal | None = None  # --max-cost: USD for this run
    daily_budget: Decimal | None = None  # INTEL_DAILY_BUDGET: USD per UTC day, every process
    fast_model: str | None = None  # --fast-model, for contacts whose role matches route_roles
    route_roles: list[str] = field(default_factory=list)  # --route-roles
    # --mode batch: the Message Batches API (intel_cli.batch_mode); how often it polls
    mode: str = "realtime"
    batch_poll_s: float = 15.0

    def validate(self) -> None:
        if self.concurrency < 1:
            raise UsageError("--concurrency must be at least 1")
        if not self.timeout > 0:
            raise UsageError("--timeout must be more than 0 seconds")
        if self.retries < 0:
            raise UsageError("--retries must be 0 or more")
        if not 0 <= self.adaptive_threshold <= 1:
            raise UsageError("--adaptive-threshold must be between 0 and 1 (e.g. 0.8)")
        if self.max_wait < 0:
            raise UsageError("--max-wait must be 0 or more seconds")
        if self.campaign not in CAMPAIGNS:
            raise UsageError(f"--campaign must be one of {', '.join(CAMPAIGNS)}")
        if self.batch_id is not None and not _BATCH_ID.match(self.batch_id):
            raise UsageError(
                f"bad --batch-id {self.batch_id!r}: use letters, digits, _ . : - "
                "(up to 128 characters)"
            )
        if not self.model.strip():
            raise UsageError("--model must not be empty")
        if self.resume is not None:
            if not _BATCH_ID.match(self.resume):
                raise UsageError(f"bad --resume {self.resume!r}: give the id of a batch")
            if self.batch_id is not None and self.batch_id != self.resume:
                raise UsageError("give --resume BATCH_ID or --batch-id, not both")
        if self.cache_ttl_s < 0:
            raise UsageError("--cache-ttl must not be negative")
        if self.store_retries < 0 or self.store_backoff < 0:
            raise UsageError("store retries and backoff must be 0 or more")
        budgeting.validate(self.max_cost, self.daily_budget)
        routing.validate(self.fast_model, self.route_roles, self.model)
        if self.mode not in ("realtime", "batch"):
            raise UsageError("--mode must be realtime or batch")
        if not self.batch_poll_s > 0:
            raise UsageError("the batch poll interval must be more than 0 seconds")
        if self.mode == "batch" and (self.max_cost is not None or self.daily_budget is not None):
            raise UsageError(
                "--mode batch cannot hold a budget yet (--max-cost, INTEL_DAILY_BUDGET): "
                "use --mode realtime for a capped run"
            )


@dataclass(frozen=True)
class Progress:
    """A snapshot for the progress display, sent each time a contact finishes."""

    done: int
    total: int
    enriched: int
    failed: int
    cost: Decimal
    elapsed_s: float
    phase: str = "enrich"  # "enrich" | "adaptive retry"


@dataclass
class ModelRow:
    model: str
    contacts: int = 0
    enriched: int = 0
    cost: Decimal = Decimal(0)
    usage: Usage = field(default_factory=Usage)


@dataclass
class RunSummary:
    """What a run did; `error` is set when it ended early (the caller raises it)."""

    batch_id: str
    status: str  # completed | failed | rate_limited | interrupted
    mode: str
    model: str
    output: str
    total: int = 0
    enriched: int = 0
    cached: int = 0
    failed: int = 0
    timed_out: int = 0
    retried: int = 0
    skipped: int = 0
    duplicates: int = 0
    finished: int = 0  # contacts taken to a final outcome (all of them, unless it ended early)
    adaptive_retried: int = 0
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    avg_time_ms: int | None = None
    wall_time_ms: int = 0
    models: list[ModelRow] = field(default_factory=list)
    unpriced: bool = False
    error: IntelError | None = None

    @property
    def success_rate(self) -> float:
        """Percent enriched of total, 2 places (0 when there were no contacts)."""
        if not self.total:
            return 0.0
        rate = Decimal(100 * self.enriched) / Decimal(self.total)
        return float(rate.quantize(Decimal("0.01"), ROUND_HALF_UP))

    @property
    def contacts_per_s(self) -> float:
        """Throughput: contacts finished per second of wall time."""
        return self.finished / (self.wall_time_ms / 1000) if self.wall_time_ms else 0.0

    @property
    def cost_per_enriched(self) -> Decimal | None:
        return self.cost / self.enriched if self.enriched else None

    def to_json(self) -> dict[str, Any]:
        """The `--json` body of SPEC 2.2."""
        body: dict[str, Any] = {
            "success": self.error is None,
            "batchId": self.batch_id,
            "status": self.status,
            "total": self.total,
            "enriched": self.enriched,
            "cached": self.cached,
            "failed": self.failed,
            "timedOut": self.timed_out,
            "retried": self.retried,
            "skipped": self.skipped,
            "successRate": self.success_rate,
            "tokens": {
                "input": self.usage.input,
                "output": self.usage.output,
                "cacheRead": self.usage.cache_read,
                "cacheWrite": self.usage.cache_write,
            },
            "costUsd": float(self.cost),
            "wallTimeMs": self.wall_time_ms,
            "output": self.output,
        }
        if self.error is not None:
            body["error"] = redact(str(self.error))
        return body


class AttemptClient(Protocol):
    """What the pipeline needs from `intel_cli.anthropic_client.AnthropicClient`."""

    async def attempt(
        self, contact: Contact, *, model: str, context: RunContext, reask: bool = False
    ) -> Attempt: ...

    async def aclose(self) -> None: ...


class CancelHook(Protocol):
    """How the CLI's signal handlers stop a run (intel_cli.signals.StopSignals): the run arms
    it with a callback that cancels it (safe to call from a signal handler), and disarms it
    once it stops sending."""

    def arm(self, cancel: Callable[[], None]) -> None: ...

    def disarm(self) -> None: ...


_NO_USAGE = Usage()
_ZERO = Decimal(0)
_NO_VALUES: dict[str, Any] = {}


@dataclass(slots=True)  # no per-instance dict: a run holds one per contact
class _Item:
    """One unique enrichable contact and everything its attempts cost so far."""

    contact: Contact
    status: str | None = None  # None while unfinished
    error: str | None = None
    # the intelligence as compressed JSON (see the `intel` property): a dict is ~5x larger.
    # Held only until the store has it: the output pass reads it back (issue 6)
    packed_intel: bytes | None = None
    attempts: int = 0  # requests sent, including one cancelled in flight
    answered: int = 0  # attempts that came back (with a measured latency)
    latency_ms: int = 0
    # immutable defaults, shared by every item until its first billed attempt: a fresh
    # Usage, Decimal and list each were ~200 bytes a contact (issue 6)
    usage: Usage = _NO_USAGE
    cost: Decimal = _ZERO
    raw_usage: Sequence[dict[str, Any]] = ()
    # batch mode: the batch answer was invalid, so the realtime follow-up is the re-ask
    reask_first: bool = False

    @property
    def intel(self) -> dict[str, Any] | None:
        if self.packed_intel is None:
            return None
        value: dict[str, Any] = json.loads(zlib.decompress(self.packed_intel))
        return value

    @intel.setter
    def intel(self, value: dict[str, Any] | None) -> None:
        # zlib: ~780 bytes of JSON become ~480, for ~10 us
        self.packed_intel = None if value is None else zlib.compress(
            json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode(), 1
        )

    def add(self, attempt: Attempt) -> None:
        self.answered += 1
        self.latency_ms += attempt.latency_ms
        if attempt.billed:
            self.usage += attempt.usage
            self.cost += attempt.cost
            if attempt.raw_usage is not None:
                self.raw_usage = [*self.raw_usage, attempt.raw_usage]


@dataclass
class _Plan:
    """The first pass over the input: what to send, what to skip."""

    items: list[_Item]
    skipped: list[tuple[int, str]]  # (row_index, reason): small enough for big files
    duplicates: int
    rows: int
    # first occurrence's row_index -> how many later rows repeat it: the output pass keeps a
    # first row's result only until its last duplicate is written
    repeats: dict[int, int] = field(default_factory=dict)


def _ignore(_: str) -> None:
    return None


def _slim(contact: Contact) -> Contact:
    """The contact as the run keeps it until the output pass: without its raw row (that pass
    re-reads it) and sharing what repeats. Every byte here is paid once per contact."""
    key = contact.key
    if key is not None and key == contact.email:
        key = contact.email  # a lower-case address is its own key: one string, not two
    return replace(
        contact,
        values=_NO_VALUES,  # one shared, never written empty dict (a fresh one is 64 bytes)
        context=contact.context or _NO_VALUES,
        role=None if contact.role is None else sys.intern(contact.role),  # "Producer", "DJ"
        key=key,
    )


def plan_contacts(source: ContactSource) -> _Plan:
    """Collect the unique enrichable contacts, without their raw rows (the output pass
    re-reads those), and the skipped rows' reasons."""
    items: list[_Item] = []
    skipped: list[tuple[int, str]] = []
    repeats: dict[int, int] = {}
    duplicates = rows = 0
    for contact in source:
        rows += 1
        if contact.skip_reason:
            skipped.append((contact.row_index, contact.skip_reason))
        elif contact.duplicate_of is not None:
            duplicates += 1
            repeats[contact.duplicate_of] = repeats.get(contact.duplicate_of, 0) + 1
        elif contact.key is None:
            skipped.append((contact.row_index, "missing email"))
        else:
            items.append(_Item(_slim(contact)))
    return _Plan(items, skipped, duplicates, rows, repeats)


def _no_rows_message(inputs: Sequence[str], plan: _Plan) -> str:
    names = ", ".join(Path(name).name if name != "-" else "stdin" for name in inputs)
    if not plan.rows:
        return f"no enrichable rows in {names}: it has no contact rows"
    reasons: dict[str, int] = {}
    for _, reason in plan.skipped:
        reasons[reason] = reasons.get(reason, 0) + 1
    detail = ", ".join(f"{reason}: {n}" for reason, n in sorted(reasons.items()))
    return (
        f"no enrichable rows in {names}: {plan.rows} rows, all skipped ({detail}); "
        "each row needs an e-mail address, or a name and a company"
    )


def file_sha256(path: str) -> str | None:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(functools.partial(handle.read, 1 << 20), b""):
                digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _metadata(options: RunOptions, now: datetime) -> dict[str, Any]:
    inputs = [
        {"name": name, "sha256": None if name == "-" else file_sha256(name)}
        for name in options.inputs
    ]
    meta = {
        "options": asdict(options),
        "inputs": inputs,
        "promptVersion": PROMPT_VERSION,
        "runner": resuming.runner_info(now),
    }
    # options hold no secrets by design; this is the belt to those braces
    redacted: dict[str, Any] = json.loads(redact(json.dumps(meta, default=str)))
    return redacted


def check_output(output: str, inputs: Sequence[str]) -> None:
    """Fail before anything is sent (or paid for) when the output cannot be written."""
    if output == "-":
        return
    target = Path(output).expanduser()
    if target.is_dir():
        raise UsageError(f"{output} is a directory: give -o a file name")
    parent = target.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write {output}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {output}: no permission to write in {parent}")
    for name in inputs:
        if name != "-" and Path(name).expanduser().resolve() == target.resolve():
            raise UsageError(f"-o {output} would overwrite the input: choose another output")


def _round_ms(values: list[int]) -> int | None:
    if not values:
        return None
    mean = Decimal(sum(values)) / Decimal(len(values))
    return int(mean.quantize(Decimal(1), ROUND_HALF_UP))


class _Run:
    """One run's asyncio part: the batch row, the workers, adaptive retry, finalising."""

    def __init__(
        self,
        options: RunOptions,
        store: Store,
        plan: _Plan,
        *,
        batch_id: str,
        client_factory: Callable[[], AttemptClient],
        progress: Callable[[Progress], None] | None,
        warn: Callable[[str], None],
        now: Callable[[], datetime],
        monotonic: Callable[[], float],
        previous: dict[int, dict[str, Any]] | None = None,
        cancel_hook: CancelHook | None = None,
    ) -> None:
        self.options = options
        self.store = store
        self.plan = plan
        self.items = plan.items
        self.batch_id = batch_id
        self.client_factory = client_factory
        self.on_progress = progress
        self.warn = warn
        self.now = now
        self.monotonic = monotonic
        self.context = RunContext(
            genre=options.genre, region=options.region, campaign=options.campaign
        )
        self.mode = "simulated" if options.simulate else options.mode
        self.started = monotonic()
        self.pacer = Pacer(
            options.concurrency, output_reserve=options.max_tokens, warm_up=True
        )
        self.budget = budgeting.Budget(
            store=store, batch_id=batch_id, max_cost=options.max_cost,
            daily=options.daily_budget, hold_ttl_s=options.timeout + budgeting.HOLD_SLACK_S,
            now=now,
        )
        self.router = routing.Router(options.model, options.fast_model, options.route_roles)
        self._sizer: InputSizer | None = None
        self._db_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="intel-store")
        self.client: AttemptClient | None = None
        self.phase = "enrich"
        # why the run stops sending: None, "rate_limited", "aborted", "interrupted"
        self.stop_reason: str | None = None
        self.abort_cause: str | None = None
        self.limiter_seen: LimiterState | None = None  # the block that stopped the run
        self.rate_limit_hit = False
        self.unpriced = False
        self.adaptive_retried = 0
        self.status = "running"
        # running counts for the progress display (recounting per contact would be O(n^2))
        self.done = 0
        self.n_enriched = 0
        self.spent = Decimal(0)
        # the global limiter as last read, and when (monotonic)
        self._limiter: LimiterState | None = None
        self._limiter_read_at: float | None = None
        self._limiter_lock = asyncio.Lock()
        # wall-clock time during which at least one worker waited on the limiter
        self._waiters = 0
        self._wait_started = 0.0
        self._waited = 0.0
        # --resume: the batch's stored results by row index (None: a new batch)
        self.previous = previous
        self.cancel_hook = cancel_hook
        self.store_error: StoreUnavailable | None = None
        # the contacts this session sends (a resumed batch's finished ones are not among them)
        self.pending: list[_Item] = list(self.items)
        self.unfinished: list[_Item] = []  # given an unfinished status by mark_unfinished
        self.done_before = 0  # contacts a resumed batch had finished before this session

    # -- the store, on its own thread ------------------------------------------------------

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, functools.partial(fn, *args, **kwargs))

    async def db_write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A store write with bounded retries: a store that is locked or away for a moment
        does not end the run; one that stays away raises StoreUnavailable (exit 4)."""
        for retry in range(self.options.store_retries + 1):
            try:
                return await self.db(fn, *args, **kwargs)
            except StoreUnavailable:
                if retry == self.options.store_retries:
                    raise
            await asyncio.sleep(self.options.store_backoff * 2**retry)
        raise AssertionError("unreachable")

    def store_failed(self, exc: StoreUnavailable) -> None:
        """The store stayed away past the retries: stop sending (what is sent is billed and
        could not be recorded); the output file still gets every contact."""
        if self.store_error is None:
            self.store_error = exc
        self.stop("store", str(exc))

    def close(self) -> None:
        self._db_thread.shutdown(wait=True)

    # -- the global limiter ----------------------------------------------------------------

    async def limiter(self) -> LimiterState | None:
        async with self._limiter_lock:
            read_at = self._limiter_read_at
            if read_at is None or self.monotonic() - read_at > LIMITER_CACHE_S:
                self._limiter = await self.db(self.store.get_limiter)
                self._limiter_read_at = self.monotonic()
            return self._limiter

    def waited(self) -> float:
        current = self.monotonic() - self._wait_started if self._waiters else 0.0
        return self._waited + current

    def _begin_wait(self) -> None:
        if self._waiters == 0:
            self._wait_started = self.monotonic()
        self._waiters += 1

    def _end_wait(self) -> None:
        self._waiters -= 1
        if self._waiters == 0:
            self._waited += self.monotonic() - self._wait_started

    async def clear_to_send(self) -> bool:
        """Wait while the global limiter is active. False when the run must stop instead:
        it is stopping already, or the block outlasts what is left of --max-wait."""
        while True:
            if self.stop_reason is not None:
                return False
            state = await self.limiter()
            now = self.now()
            if state is None or not state.active(now) or state.blocked_until is None:
                return True
            remaining = (state.blocked_until - now).total_seconds()
            if self.waited() + remaining > self.options.max_wait:
                self.stop("rate_limited")
                self.limiter_seen = state
                return False
            self._begin_wait()
            try:
                # short naps: a `intel limiter reset` elsewhere is noticed within a second
                await asyncio.sleep(min(remaining, LIMITER_CACHE_S))
            finally:
                self._end_wait()

    async def block(self, attempt: Attempt) -> None:
        """A 429: block every worker of every process until retry-after (SPEC 4.1)."""
        self.rate_limit_hit = True
        seconds = attempt.retry_after
        if seconds is None:
            seconds = DEFAULT_RETRY_AFTER_S
        now = self.now()
        until = now + timedelta(seconds=max(seconds, MIN_RETRY_AFTER_S))
        state = await self.db(
            self.store.block_limiter,
            until,
            reason=attempt.error or "429 rate limited",
            set_by=self.batch_id,
            now=now,
        )
        async with self._limiter_lock:
            self._limiter, self._limiter_read_at = state, self.monotonic()

    async def check_limiter_at_start(self) -> None:
        """A run never starts sending into an active limiter: exit 3, or wait with --wait."""
        while True:
            state = await self.limiter()
            now = self.now()
            if state is None or not state.active(now) or state.blocked_until is None:
                return
            until = format_utc(state.blocked_until)
            set_by = state.set_by or "another run"
            if not self.options.wait:
                raise RateLimitedError(
                    f"rate limited until {until} (set by {set_by}): rerun later, "
                    "use --wait, or `intel limiter reset`"
                )
            remaining = (state.blocked_until - now).total_seconds()
            if self.waited() + remaining > self.options.max_wait:
                raise RateLimitedError(
                    f"rate limited until {until} (set by {set_by}), beyond --max-wait "
                    f"{self.options.max_wait:g} s: rerun later, raise --max-wait, "
                    "or `intel limiter reset`"
                )
            self._begin_wait()
            try:
                await asyncio.sleep(min(remaining, LIMITER_CACHE_S))
            finally:
                self._end_wait()

    # -- sending ---------------------------------------------------------------------------

    def stop(self, reason: str, cause: str | None = None) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
            self.abort_cause = cause

    def backoff(self, retry: int) -> float:
        """Exponential: base, 2*base, 4*base...; doubled after a rate limit; with jitter."""
        delay = self.options.backoff_base * 2 ** (retry - 1)
        if self.rate_limit_hit:
            delay *= 2
        return delay * random.uniform(0.75, 1.25)

    def estimate_input(self, contact: Contact) -> int | None:
        """The request's input tokens from its size, for the pacer (None: a client that
        cannot say; the pacer then uses the mean so far)."""
        if self._sizer is None:
            full = getattr(self.client, "estimate_input_tokens", None)
            self._sizer = InputSizer(
                None if full is None
                else functools.partial(full, model=self.options.model, context=self.context)
            )
        return self._sizer(contact)

    def model_for(self, item: _Item) -> str:
        """The model of the contact's next attempt (--fast-model for a routed role)."""
        return self.router.model_for(item.contact.row_index, item.contact.role)

    async def reserve_budget(self, item: _Item, *, reask: bool) -> budgeting.Hold | None:
        """SPEC 4.2: hold the attempt's worst case against --max-cost and the daily budget.
        None when it cannot fit: the contact ends over_budget and the run stops sending."""
        if not self.budget.active:
            return budgeting.FREE
        model = self.model_for(item)
        estimate = getattr(self.client, "estimate_input_tokens", None)
        tokens = (
            estimate(item.contact, model=model, context=self.context)
            if estimate is not None
            else budgeting.offline_input_tokens(item.contact, self.context)
        )
        tokens += budgeting.non_ascii_margin(item.contact)
        if reask:
            tokens += budgeting.REASK_EXTRA_TOKENS
        worst = budgeting.worst_case(model, tokens, self.options.max_tokens)
        hold = await self.budget.reserve(worst, self.db)
        if hold is None:
            reason = self.budget.reason or "over budget"
            self.stop("over_budget", reason)
            prefix = "not sent" if item.attempts == 0 else "unfinished"
            await self.finish(item, "over_budget", error=f"{prefix}: {reason}")
        return hold

    async def send(self, item: _Item, *, reask: bool) -> Attempt:
        assert self.client is not None
        ticket = await self.pacer.acquire(self.estimate_input(item.contact))
        try:
            # counted before the request goes: one cancelled by Ctrl-C was still sent
            item.attempts += 1
            attempt = await self.client.attempt(
                item.contact, model=self.model_for(item), context=self.context, reask=reask
            )
        finally:
            self.pacer.release(ticket)
        self.pacer.observe(
            attempt.limits, attempt.outcome, ticket=ticket, status_code=attempt.status_code,
            input_tokens=attempt.usage.input + attempt.usage.cache_write
            if attempt.billed else None,
            output_tokens=attempt.usage.output if attempt.billed else None,
            retry_after=attempt.retry_after,
        )
        item.add(attempt)
        self.router.record(item.contact.row_index, attempt.model, attempt.usage, attempt.cost)
        if attempt.billed:
            self.spent += attempt.cost
        if attempt.billed and not attempt.priced and not self.unpriced:
            self.unpriced = True
            self.warn(
                f"no price is known for model {attempt.model}: its cost is counted as 0 "
                "(marked unpriced in the batch)"
            )
        return attempt

    async def process(self, item: _Item) -> None:
        """Take one contact to a final status, or leave it unfinished when the run stops."""
        reask = item.reask_first
        retries = 0
        while True:
            if not await self.clear_to_send():
                return
            hold = await self.reserve_budget(item, reask=reask)
            if hold is None:
                return
            attempt = await self.send(item, reask=reask)
            await self.budget.settle(hold, attempt.cost if attempt.billed else Decimal(0), self.db)
            outcome = attempt.outcome
            if outcome is Outcome.OK:
                if self.router.escalate(item.contact.row_index, attempt.intel):
                    reask = False  # the fast model was not sure: ask the main model
                    continue
                await self.finish(item, "enriched", intel=attempt.intel)
                return
            if outcome is Outcome.INVALID_OUTPUT and not reask:
                reask = True  # one re-ask, telling the model its answer was not valid
                continue
            if outcome is Outcome.INVALID_OUTPUT:
                await self.finish(item, "failed", error="invalid output")
                return
            if outcome is Outcome.MAX_TOKENS:
                await self.finish(item, "failed", error="max_tokens")
                return
            if outcome is Outcome.TIMEOUT:
                await self.finish(item, "timed_out", error=attempt.error or "timeout")
                return
            if outcome is Outcome.RATE_LIMITED:
                await self.block(attempt)
                continue  # the contact goes again once the limiter clears
            if outcome is Outcome.RETRYABLE and retries < self.options.retries:
                retries += 1
                await asyncio.sleep(self.backoff(retries))
                continue
            if outcome is Outcome.FATAL:
                cause = attempt.error or "the API refused the request"
                self.stop("aborted", cause)
                await self.finish(item, "failed", error=cause)
                return
            # RETRYABLE out of retries, BAD_REQUEST
            await self.finish(item, "failed", error=attempt.error or str(outcome))
            return

    async def finish(
        self,
        item: _Item,
        status: str,
        *,
        error: str | None = None,
        intel: dict[str, Any] | None = None,
    ) -> None:
        # a routed contact whose second opinion failed keeps the fast model's answer
        status, error, intel = self.router.outcome(item.contact.row_index, status, error, intel)
        item.status, item.error, item.intel = status, error, intel
        await self.db_write(self.store.record_result, self.result(item))
        if status in ("enriched", "cached"):
            # final and stored: the raw usage is not needed again (nor rewritten), and the
            # output pass reads the intelligence back from the store
            item.raw_usage = ()
            item.packed_intel = None
        # counted once committed: progress never shows a contact a crash could lose
        self.done += 1
        self.n_enriched += status in ("enriched", "cached")
        self.report()

    def result(self, item: _Item) -> ContactResult:
        sent = item.attempts > 0
        return ContactResult(
            batch_id=self.batch_id,
            row_index=item.contact.row_index,
            contact_key=item.contact.key,
            status=item.status or "failed",
            model=(self.router.kept_model(item.contact.row_index) or self.options.model)
            if sent or item.status == "cached" else None,
            usage=item.usage,
            cost=item.cost,
            latency_ms=item.latency_ms if sent else None,
            attempts=item.attempts,
            error=item.error,
            intel=item.intel if item.status in ("enriched", "cached") else None,
            raw_usage=list(item.raw_usage),
            prompt_version=PROMPT_VERSION,
        )

    def report(self) -> None:
        if self.on_progress is None:
            return
        self.on_progress(
            Progress(
                done=self.done,
                total=len(self.items),
                enriched=self.n_enriched,
                failed=self.done - self.n_enriched,
                cost=self.spent,
                elapsed_s=self.monotonic() - self.started,
                phase=self.phase,
            )
        )

    async def worker(self, queue: deque[_Item]) -> None:
        while queue and self.stop_reason is None:
            try:
                await self.process(queue.popleft())
            except StoreUnavailable as exc:
                self.store_failed(exc)

    async def send_all(self, items: list[_Item]) -> None:
        """Run `items` through `concurrency` workers. On Ctrl-C: stop sending, give in-flight
        requests INTERRUPT_GRACE_S to finish, cancel the rest, then re-raise."""
        if not items:  # everything was cached, or finished before a resume
            return
        queue = deque(items)
        workers = [
            asyncio.create_task(self.worker(queue))
            for _ in range(min(self.pacer.cap, len(items)))
        ]
        try:
            done, _ = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
        except asyncio.CancelledError:
            self.stop("interrupted")
            if workers:
                _, pending = await asyncio.wait(workers, timeout=INTERRUPT_GRACE_S)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            raise
        failed = [task for task in done if task.exception() is not None]
        if failed:
            # a store failure or a bug: stop the others, then surface it
            self.stop("aborted", "internal error")
            await asyncio.gather(*workers, return_exceptions=True)
            failed[0].result()

    # -- the run ---------------------------------------------------------------------------

    async def main(self) -> None:
        task = asyncio.current_task()
        if self.cancel_hook is not None and task is not None:
            loop = asyncio.get_running_loop()

            def cancel() -> None:  # called from a signal handler: hand over to the loop
                loop.call_soon_threadsafe(task.cancel)

            self.cancel_hook.arm(cancel)
        try:
            await self._main()
        finally:
            if self.cancel_hook is not None:
                self.cancel_hook.disarm()

    async def open_batch(self) -> None:
        """Create the batch, or reopen the one being resumed (its runner is now us)."""
        if self.previous is None:
            await self.db(
                self.store.create_batch,
                self.batch_id,
                model_used=self.options.model,
                mode=self.mode,
                metadata=_metadata(self.options, self.now()),
                total=len(self.items),
                skipped=len(self.plan.skipped),
                now=self.now(),
            )
            return
        batch = await self.db(self.store.get_batch, self.batch_id)
        resumes = int(((batch or {}).get("metadata") or {}).get("resumes") or 0)
        await self.db(
            self.store.update_batch,
            self.batch_id,
            metadata={"runner": resuming.runner_info(self.now()), "resumes": resumes + 1},
            status="running",
            now=self.now(),
        )

    async def heartbeat(self) -> None:
        """Keep `metadata.runner.heartbeatAt` fresh, so --resume elsewhere sees we live."""
        while True:
            await asyncio.sleep(resuming.HEARTBEAT_S)
            with contextlib.suppress(StoreUnavailable):  # the writes report a lost store
                await self.db(
                    self.store.update_batch,
                    self.batch_id,
                    metadata={"runner": resuming.runner_info(self.now())},
                    now=self.now(),
                )

    async def use_cache(self) -> None:
        """SPEC 3.3: a contact with a fresh enough result for the same key, prompt version
        and model is `cached` (cost 0, no request); the rest stay pending."""
        if not self.options.cache or not self.pending:
            return
        since = self.now() - timedelta(seconds=self.options.cache_ttl_s)
        keys = [item.contact.key for item in self.pending if item.contact.key]
        found = await self.db(
            self.store.find_cached_many,
            keys,
            prompt_version=PROMPT_VERSION,
            model=self.options.model,
            since=since,
        )
        if self.router.active:  # a routed contact's last answer may be the fast model's
            found.update(await self.db(
                self.store.find_cached_many,
                [i.contact.key for i in self.pending if i.contact.key not in found
                 and i.contact.key and self.model_for(i) != self.options.model],
                prompt_version=PROMPT_VERSION,
                model=self.router.fast_model,
                since=since,
            ))
        still: list[_Item] = []
        for item in self.pending:
            row = found.get(item.contact.key or "")
            if row is None or self.stop_reason is not None:
                still.append(item)
                continue
            self.router.keep(item.contact.row_index, row.get("model"))
            await self.finish(item, "cached", intel=row.get("intel"))
        self.pending = still

    async def _main(self) -> None:
        await self.check_limiter_at_start()
        await self.open_batch()
        beat = asyncio.create_task(self.heartbeat())
        try:
            skipped = self.plan.skipped
            for at in range(0, len(skipped), SKIPPED_CHUNK):
                await self.db_write(
                    self.store.record_results,
                    [
                        ContactResult(self.batch_id, row_index, None, "skipped", error=reason)
                        for row_index, reason in skipped[at:at + SKIPPED_CHUNK]
                    ],
                )
            await self.use_cache()
            self.client = self.client_factory()
            try:
                self.report()
                if self.options.mode == "batch" or self.previous is not None:
                    # Message Batches, and collecting those a resumed batch submitted
                    from intel_cli import batch_mode

                    await batch_mode.send(self)
                else:
                    await self.send_all(self.pending)
                await self.adaptive_retry()
            finally:
                await self.client.aclose()
        except asyncio.CancelledError:
            if task := asyncio.current_task():
                task.uncancel()  # Ctrl-C is handled here: the cleanup below must run
            self.stop("interrupted")
        except StoreUnavailable as exc:
            self.store_failed(exc)
        except BaseException:
            # a bug or a broken store: leave no batch `running` if the store still answers
            self.stop("aborted", "internal error")
            with contextlib.suppress(Exception):  # the original error is the one to report
                await self.db(self.finalise)
            raise
        finally:
            beat.cancel()
            await asyncio.gather(beat, return_exceptions=True)
        if self.cancel_hook is not None:
            self.cancel_hook.disarm()  # from here on a signal cannot cut the bookkeeping
        if self.stop_reason == "store":
            # one try, no retries: the store has been away for a while already
            self.mark_unfinished()
            with contextlib.suppress(StoreUnavailable):
                await self.db(self.finalise)
            return
        try:
            await self.db_write(self.finalise)
        except StoreUnavailable as exc:
            self.store_failed(exc)

    async def adaptive_retry(self) -> None:
        """SPEC 4.1: under the threshold, give each timed-out contact one more go."""
        if self.stop_reason is not None or not self.options.adaptive_retry or not self.items:
            return
        # a resumed batch's earlier timeouts are final: only this session's get the retry
        timed_out = [item for item in self.pending if item.status == "timed_out"]
        enriched = sum(item.status in ("enriched", "cached") for item in self.items)
        if not timed_out or enriched / len(self.items) >= self.options.adaptive_threshold:
            return
        self.phase = "adaptive retry"
        self.adaptive_retried = len(timed_out)
        for item in timed_out:
            # keep what was spent; the new outcome replaces the status (the store upserts)
            item.status = item.error = None
        self.done -= len(timed_out)
        await self.send_all(timed_out)

    def unfinished_status(self, item: _Item) -> tuple[str, str]:
        prefix = "not sent" if item.attempts == 0 else "unfinished"
        if self.stop_reason == "rate_limited":
            state = self.limiter_seen
            until = (
                f" until {format_utc(state.blocked_until)}"
                if state and state.blocked_until else ""
            )
            return "rate_limited", f"{prefix}: rate limited{until}"
        if self.stop_reason == "aborted":
            return "failed", f"{prefix}: run aborted ({self.abort_cause})"
        if self.stop_reason == "store":
            return "failed", f"{prefix}: the store became unavailable"
        if self.stop_reason == "over_budget":
            return "over_budget", f"{prefix}: {self.abort_cause or 'over budget'}"
        return "failed", f"{prefix}: run interrupted"

    def finalise(self) -> None:
        """Record unfinished contacts and write the batch totals (on the store thread).
        Safe to call again after a store failure: it rewrites the same rows."""
        self.mark_unfinished()
        for item in self.unfinished:
            self.store.record_result(self.result(item))
        totals = self.totals()
        self.store.finalise_batch(self.batch_id, totals, now=self.now())
        self.budget.close()  # nothing is in flight any more: no hold of ours may linger

    def mark_unfinished(self) -> None:
        """Give every contact without an outcome its unfinished status, in memory first, so
        the output has it even when the store cannot take it."""
        self.status = {
            None: "completed",
            "rate_limited": "rate_limited",
            "aborted": "failed",
            "interrupted": "interrupted",
            "store": "failed",
            "over_budget": "over_budget",
        }[self.stop_reason]
        for item in self.items:
            if item.status is None:
                item.status, item.error, item.intel = self.router.outcome(
                    item.contact.row_index, *self.unfinished_status(item), None
                )
                self.unfinished.append(item)

    def model_rows(self) -> dict[str, ModelRow]:
        """Per model, the contacts that were sent to it and what they cost there (a routed
        contact asked twice counts under both models; enriched under the one it kept)."""
        rows: dict[str, ModelRow] = {}
        for item in self.items:
            if item.attempts == 0:
                continue
            spent = self.router.spend(item.contact.row_index, item.usage, item.cost)
            for model, usage, cost, kept in spent:
                row = rows.setdefault(model, ModelRow(model))
                row.contacts += 1
                row.enriched += kept and item.status == "enriched"
                row.cost += cost
                row.usage += usage
        return rows

    def totals(self) -> BatchTotals:
        models = self.model_rows()
        usage = sum((item.usage for item in self.items), Usage())
        cost = sum((item.cost for item in self.items), Decimal(0))
        enriched = sum(item.status in ("enriched", "cached") for item in self.items)
        metadata: dict[str, Any] = {
            "models": {
                name: {
                    "contacts": row.contacts,
                    "enriched": row.enriched,
                    "cost": float(row.cost),
                    "input_tokens": row.usage.input,
                    "output_tokens": row.usage.output,
                }
                for name, row in models.items()
            },
            "unpriced": self.unpriced,
            "adaptiveRetried": self.adaptive_retried,
            "duplicates": self.plan.duplicates,
            "limiterWaitS": round(self.waited(), 3),
        }
        if self.abort_cause:
            metadata["stopCause"] = redact(self.abort_cause)
        return BatchTotals(
            status=self.status,
            total=len(self.items),
            enriched=enriched,
            failed=len(self.items) - enriched,
            retried=sum(item.attempts > 1 for item in self.items),
            timed_out=sum(item.status == "timed_out" for item in self.items),
            cached=sum(item.status == "cached" for item in self.items),
            skipped=len(self.plan.skipped),
            cost=cost,
            # a request cancelled by Ctrl-C has no latency: it would drag the mean down
            avg_time_ms=_round_ms([i.latency_ms for i in self.items if i.answered > 0]),
            usage=usage,
            metadata=metadata,
        )

    def error(self) -> IntelError | None:
        hint = resuming.resume_hint(self.options.inputs, self.batch_id)
        if self.stop_reason == "rate_limited":
            state = self.limiter_seen
            until = format_utc(state.blocked_until) if state and state.blocked_until else "?"
            set_by = (state.set_by if state else None) or "another run"
            return RateLimitedError(
                f"rate limited until {until} (set by {set_by}), beyond --max-wait "
                f"{self.options.max_wait:g} s: progress saved in batch {self.batch_id}; "
                f"after that time, {hint}"
            )
        if self.stop_reason == "aborted":
            return ConfigError(self.abort_cause or "the run was aborted")
        if self.stop_reason == "store" and self.store_error is not None:
            return StoreUnavailable(
                f"{self.store_error}; the output has every contact, results committed so far "
                f"are kept: {hint} once the store is back"
            )
        if self.stop_reason == "interrupted":
            return Interrupted(f"interrupted: progress saved in batch {self.batch_id}; {hint}")
        if self.stop_reason == "over_budget":
            return ThresholdError(
                f"{self.abort_cause or 'over budget'}: the contacts not sent are over_budget "
                f"in the output; raise the limit and {hint}"
            )
        return None

    def summary(self, output: str) -> RunSummary:
        totals = self.totals()
        return RunSummary(
            batch_id=self.batch_id,
            status=self.status,
            mode=self.mode,
            model=self.options.model,
            output=output,
            total=totals.total,
            enriched=totals.enriched,
            cached=totals.cached,
            failed=totals.failed,
            timed_out=totals.timed_out,
            retried=totals.retried,
            skipped=totals.skipped,
            duplicates=self.plan.duplicates,
            finished=self.done - self.done_before,  # this session's, for contacts/s
            adaptive_retried=self.adaptive_retried,
            usage=totals.usage,
            cost=totals.cost,
            avg_time_ms=totals.avg_time_ms,
            wall_time_ms=round((self.monotonic() - self.started) * 1000),
            models=list(self.model_rows().values()),
            unpriced=self.unpriced,
            error=self.error(),
        )


def run(
    options: RunOptions,
    store: Store,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    client_factory: Callable[[], AttemptClient] | None = None,
    progress: Callable[[Progress], None] | None = None,
    warn: Callable[[str], None] = _ignore,
    stdin: BinaryIO | None = None,
    stdout: TextIO | None = None,
    now: Callable[[], datetime] = utcnow,
    monotonic: Callable[[], float] = time.monotonic,
    cancel: CancelHook | None = None,
) -> RunSummary:
    """Enrich `options.inputs` into `options.output`, recording everything in `store`.

    Raises before creating a batch: UsageError (bad options, no enrichable rows),
    RateLimitedError (the global limiter is active), ConfigError (no API key). Once the
    batch exists, the run always finalises it and writes the output; when it ended early
    the returned summary's `error` is the domain error to raise after rendering.
    The client comes from `client_factory` (tests), else an AnthropicClient with
    `api_key` and `base_url` (None: the SDK reads ANTHROPIC_BASE_URL).
    With `options.resume`, the batch is continued (UsageError when it does not exist, is
    running in a live process, or was started on other input files). `cancel` lets the
    caller's signal handlers stop the run (SIGINT/SIGTERM, SPEC 4.3).
    """
    from intel_cli.contacts import write_output

    options.validate()
    previous = _resumed_batch(options, store, now()) if options.resume else None
    if client_factory is None:
        if not api_key:
            raise ConfigError(NO_KEY_MESSAGE)
        client_factory = _anthropic_factory(options, api_key, base_url)
    output = options.output or default_output_path(options.inputs)
    check_output(output, options.inputs)
    with read_contacts(options.inputs, stdin=stdin, warn=warn) as source:
        plan = plan_contacts(source)
        if not plan.items:
            raise UsageError(_no_rows_message(options.inputs, plan))
        batch_id = options.batch_id or new_batch_id(now())
        state = _Run(
            options,
            store,
            plan,
            batch_id=batch_id,
            client_factory=client_factory,
            progress=progress,
            warn=warn,
            now=now,
            monotonic=monotonic,
            previous=previous,
            cancel_hook=cancel,
        )
        if previous is not None:
            state.pending = _restore(plan.items, previous)
            finished = [item for item in plan.items if item.status is not None]
            state.done = state.done_before = len(finished)
            state.n_enriched = sum(i.status in ("enriched", "cached") for i in finished)
        try:
            asyncio.run(state.main())
        finally:
            state.close()
        summary = state.summary(output)
        write_output(output, source, _result_for(state, plan), stdout=stdout)
    return summary


def _resumed_batch(
    options: RunOptions, store: Store, now: datetime
) -> dict[int, dict[str, Any]]:
    """Check that `options.resume` may be continued, take the batch's id, model and output
    into `options`, and return its stored results by row index."""
    assert options.resume is not None
    batch = store.get_batch(options.resume)
    resuming.check_resumable(batch, options.resume, options.inputs, now)
    assert batch is not None
    stored = (batch.get("metadata") or {}).get("options") or {}
    options.batch_id = options.resume
    # one batch, one model: the per-model counts and the cache key stay true
    options.model = batch.get("model_used") or options.model
    if options.output is None and isinstance(stored.get("output"), str):
        options.output = stored["output"]
    previous: dict[int, dict[str, Any]] = {}
    for row in store.iter_results(options.resume):
        row.pop("intel", None)  # the output pass reads it back: not held for the whole run
        previous[int(row["row_index"])] = row
    return previous


def _restore(items: list[_Item], previous: dict[int, dict[str, Any]]) -> list[_Item]:
    """Put a resumed batch's stored results back on its contacts: final ones keep their
    outcome, the others keep what their attempts cost and go again. Returns the latter."""
    pending: list[_Item] = []
    for item in items:
        row = previous.get(item.contact.row_index)
        if row is not None and row.get("contact_key") == item.contact.key:
            item.attempts = int(row.get("attempts") or 0)
            item.usage = Usage(
                int(row.get("input_tokens") or 0),
                int(row.get("output_tokens") or 0),
                int(row.get("cache_read_tokens") or 0),
                int(row.get("cache_write_tokens") or 0),
            )
            item.cost = Decimal(row.get("cost") or 0)
            if row.get("latency_ms") is not None:
                item.latency_ms, item.answered = int(row["latency_ms"]), 1
            item.raw_usage = list(row.get("usage") or [])
            if resuming.is_final(row):
                # its intelligence stays in the store: the output pass reads it back
                item.status, item.error = row["status"], row.get("error")
                continue
        pending.append(item)
    return pending


def _anthropic_factory(
    options: RunOptions, api_key: str, base_url: str | None
) -> Callable[[], AttemptClient]:
    def make() -> AttemptClient:
        from intel_cli.anthropic_client import AnthropicClient

        return AnthropicClient(
            api_key=api_key, base_url=base_url, timeout=options.timeout,
            max_tokens=options.max_tokens,
        )

    return make


class _Outcomes:
    """The output pass's results, asked for in row order: each contact's outcome from memory
    (status, error, what it cost) with its intelligence read back from the store a page at a
    time, so no run holds every contact's intelligence at once (issue 6)."""

    def __init__(self, state: _Run, plan: _Plan) -> None:
        self._state = state
        self._items = iter(plan.items)  # in row order, as the output asks
        self._item: _Item | None = next(self._items, None)
        self._stored: Iterator[dict[str, Any]] | None = None
        self._row: dict[str, Any] | None = None
        self._unread: str | None = None  # why the store could not be read back
        self._repeats = dict(plan.repeats)
        self._firsts: dict[int, ContactResult] = {}  # kept until their last duplicate

    def own(self, row_index: int) -> ContactResult | None:
        """A first occurrence's result, None when the plan has no such contact."""
        while self._item is not None and self._item.contact.row_index < row_index:
            self._item = next(self._items, None)
        item = self._item
        if item is None or item.contact.row_index != row_index:
            return None
        result = self._state.result(item)
        if result.status in ("enriched", "cached") and result.intel is None:
            result.intel = self._stored_intel(row_index)
            if result.intel is None and self._unread is not None:
                result.error = self._unread
        if self._repeats.get(row_index):
            self._firsts[row_index] = result
        return result

    def first(self, row_index: int) -> ContactResult | None:
        """The result of the first occurrence a duplicate copies (forgotten after its last)."""
        result = self._firsts.get(row_index)
        left = self._repeats.get(row_index, 0) - 1
        if left > 0:
            self._repeats[row_index] = left
        else:
            self._repeats.pop(row_index, None)
            self._firsts.pop(row_index, None)
        return result

    def _stored_intel(self, row_index: int) -> dict[str, Any] | None:
        if self._unread is not None:
            return None
        try:
            if self._stored is None:
                self._stored = self._state.store.iter_results(self._state.batch_id)
                self._row = next(self._stored, None)
            while self._row is not None and int(self._row["row_index"]) < row_index:
                self._row = next(self._stored, None)
        except StoreUnavailable:
            # the store went away: the status stands, the intelligence waits in the store
            self._unread = (
                "the intelligence is in the store but could not be read back: "
                f"{resuming.resume_hint(self._state.options.inputs, self._state.batch_id)}"
            )
            return None
        if self._row is None or int(self._row["row_index"]) != row_index:
            return None
        intel: dict[str, Any] | None = self._row.get("intel")
        return intel


def _result_for(state: _Run, plan: _Plan) -> Callable[[Contact], ContactResult]:
    """The output row's result: its own, a duplicate's copy of the first occurrence's
    (status and intelligence, zero tokens and cost), or skipped. Asked in row order."""
    batch_id = state.batch_id
    outcomes = _Outcomes(state, plan)

    def result_for(contact: Contact) -> ContactResult:
        if contact.skip_reason:
            return ContactResult(
                batch_id, contact.row_index, None, "skipped", error=contact.skip_reason
            )
        if contact.duplicate_of is None:
            first = outcomes.own(contact.row_index)
        else:
            first = outcomes.first(contact.duplicate_of)
        if first is None:  # the file changed between the two passes
            return ContactResult(
                batch_id, contact.row_index, contact.key, "failed",
                error="not sent: the input changed during the run",
            )
        if contact.duplicate_of is None:
            return first
        return replace(
            first,
            row_index=contact.row_index,
            usage=Usage(),
            cost=Decimal(0),
            latency_ms=None,
            attempts=0,
            raw_usage=None,
        )

    return result_for
