"""`--mode batch`: enrichment through the Message Batches API (SPEC 2.2, 3.2; issue 7).

This module owns the batch side of a run: one request per pending contact (custom_id = the
batch id + the row index), submitted in chunks within the API's limits (100,000 requests,
256 MB), each Anthropic batch id recorded in the batch's metadata (`anthropicBatches`)
before any waiting, polling with progress, mapping results back by custom_id (they come out
of order), and handing what a batch could not settle to the realtime path of the pipeline.

Decisions, so a reader need not reverse-engineer them:

- Answers are validated as realtime ones are. An invalid answer gets SPEC 4.1's one re-ask,
  in realtime (at the standard price): a second batch would mean a second wait of up to
  24 h for a handful of contacts. A Low-confidence answer of --fast-model escalates to the
  main model in realtime likewise.
- `errored` (a server-side error), `expired` and `canceled` requests are sent again in
  realtime when --retries is above 0, else they fail with that reason. An `errored` request
  that the API called invalid (invalid_request_error) fails at once: it would fail again.
- Cost: every batch answer is priced at the Message Batches rate (50%, pricing.price(...,
  batch=True)); its raw usage says `service_tier: batch`, so the cost can be recomputed.
- A batch has no per-request latency: batch answers do not count in avg_time_ms.
- A killed or interrupted run leaves its submitted batches running at Anthropic (they are
  paid for either way). `--resume` reads their ids from the metadata and collects them
  without submitting again; contacts not in any submitted batch are submitted then. A process
  killed between the create call returning and the metadata write (one store write) would
  submit that chunk again on resume: there is no idempotency key to prevent it.
- --max-cost and INTEL_DAILY_BUDGET are refused with --mode batch (RunOptions.validate): a
  budget hold must outlive a batch that may take hours, which the budget does not do yet.

The pipeline calls `send(run)` instead of sending in realtime when --mode batch is given or
a batch is resumed; `run` is its `_Run` (duck-typed here to keep the import one-way).
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from intel_cli.anthropic_client import Attempt, Outcome
from intel_cli.errors import UsageError
from intel_cli.timefmt import to_text

T = TypeVar("T")

# The API's limits per batch. Bytes are counted on each request's JSON; the margin covers
# the envelope ({"requests": [...]}, commas) and the SDK's own encoding.
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1000 * 1000 - 1_000_000
CUSTOM_ID_MAX = 64
_CUSTOM_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# room for "-" and a row index of up to 10 digits
_PREFIX_MAX = CUSTOM_ID_MAX - 11
# a batch call (create, retrieve, results) that fails this many times in a row stops the run
CALL_RETRIES = 5
METADATA_KEY = "anthropicBatches"


def custom_id_prefix(batch_id: str) -> str:
    """The batch id in the characters custom_id allows (letters, digits, _ and -), cut so
    that prefix + "-" + row index fits in 64. Uniqueness is per Anthropic batch, and every
    request of one carries a different row index, so a cut prefix never collides."""
    return _CUSTOM_ID_UNSAFE.sub("_", batch_id)[:_PREFIX_MAX] or "b"


def custom_id(prefix: str, row_index: int) -> str:
    return f"{prefix}-{row_index}"


def row_of(prefix: str, value: str) -> int | None:
    """The row index in one of our custom_ids; None for anything else."""
    head, _, tail = value.rpartition("-")
    if head != prefix or not tail.isdigit():
        return None
    return int(tail)


def to_ranges(rows: Iterable[int]) -> list[list[int]]:
    """Row indexes as [first, last] runs: 100,000 contiguous rows are one pair in metadata."""
    ranges: list[list[int]] = []
    for row in sorted(rows):
        if ranges and row == ranges[-1][1] + 1:
            ranges[-1][1] = row
        else:
            ranges.append([row, row])
    return ranges


def from_ranges(ranges: Any) -> set[int]:
    rows: set[int] = set()
    if isinstance(ranges, list):
        for pair in ranges:
            if isinstance(pair, list) and len(pair) == 2:
                rows.update(range(int(pair[0]), int(pair[1]) + 1))
    return rows


def chunks(
    requests: Iterable[tuple[T, dict[str, Any]]],
    *,
    max_requests: int | None = None,
    max_bytes: int | None = None,
) -> Iterator[list[tuple[T, dict[str, Any]]]]:
    """Group (key, request) pairs into batches within the API's limits, lazily: only one
    chunk's requests are held at a time. A single request over the byte limit is its own
    chunk (the API will refuse it; better one chunk than none)."""
    limit_n = max_requests if max_requests is not None else MAX_REQUESTS
    limit_b = max_bytes if max_bytes is not None else MAX_BYTES
    chunk: list[tuple[T, dict[str, Any]]] = []
    size = 0
    for key, request in requests:
        one = len(json.dumps(request, ensure_ascii=False).encode()) + 1
        if chunk and (len(chunk) >= limit_n or size + one > limit_b):
            yield chunk
            chunk, size = [], 0
        chunk.append((key, request))
        size += one
    if chunk:
        yield chunk


@dataclass
class Submitted:
    """One Anthropic Message Batch of this run, as kept in metadata.anthropicBatches."""

    id: str
    rows: set[int]
    submitted_at: str
    collected: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "rows": to_ranges(self.rows),
            "requests": len(self.rows),
            "submittedAt": self.submitted_at,
            "collected": self.collected,
        }

    @classmethod
    def from_json(cls, data: Any) -> Submitted | None:
        if not isinstance(data, dict) or not isinstance(data.get("id"), str):
            return None
        return cls(
            id=data["id"],
            rows=from_ranges(data.get("rows")),
            submitted_at=str(data.get("submittedAt") or ""),
            collected=bool(data.get("collected")),
        )


@dataclass
class _State:
    run: Any
    client: Any
    prefix: str
    by_row: dict[int, Any]  # pending items by row index
    submitted: list[Submitted] = field(default_factory=list)
    counted: set[int] = field(default_factory=set)  # rows whose batch attempt is counted
    followups: list[Any] = field(default_factory=list)


async def send(run: Any) -> None:
    """Take `run.pending` through Message Batches (collecting any submitted earlier), then
    send what is left in realtime."""
    client = run.client
    state = _State(
        run=run,
        client=client,
        prefix=custom_id_prefix(run.batch_id),
        by_row={item.contact.row_index: item for item in run.pending},
    )
    state.submitted = await _load(run)
    waiting = [
        s for s in state.submitted
        if not s.collected and any(row in state.by_row for row in s.rows)
    ]
    covered = set().union(*(s.rows for s in waiting)) if waiting else set()
    # a stored row of a submitted contact (an interrupted session finalised it "unfinished")
    # already counts its batch request; one killed before any row was written does not
    state.counted.update(row for row in covered if row in (run.previous or {}))
    rest = [item for item in run.pending if item.contact.row_index not in covered]
    if run.options.mode != "batch" and not waiting:
        await run.send_all(rest)  # a resumed realtime batch that never used Message Batches
        return
    if not hasattr(client, "create_batch"):
        raise UsageError("--mode batch needs the Anthropic client (it has no Message Batches)")
    realtime: list[Any] = []
    if run.options.mode == "batch":
        waiting += await _submit(state, rest)
    else:
        realtime = rest  # a resumed realtime run: only the batches it had are collected
    if realtime:
        await run.send_all(realtime)
    await _collect(state, waiting)
    if state.followups and run.stop_reason is None:
        run.phase = "realtime follow-up"
        await run.send_all(state.followups)


async def _load(run: Any) -> list[Submitted]:
    """The Anthropic batches a resumed run submitted before (none for a new batch)."""
    if run.previous is None:
        return []
    batch = await run.db(run.store.get_batch, run.batch_id)
    listed = ((batch or {}).get("metadata") or {}).get(METADATA_KEY) or []
    found = [Submitted.from_json(entry) for entry in listed]
    return [s for s in found if s is not None]


async def _save(state: _State) -> None:
    run = state.run
    await run.db_write(
        run.store.update_batch,
        run.batch_id,
        metadata={METADATA_KEY: [s.to_json() for s in state.submitted]},
        now=run.now(),
    )


async def _call(state: _State, what: str, fn: Callable[[], Awaitable[T]]) -> T | None:
    """A batch API call with retries for what may pass (5xx, 529, 429, connection); None
    when the run must stop (the cause is set on the run)."""
    run = state.run
    failures = 0
    while True:
        try:
            return await fn()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            import anthropic

            if not isinstance(exc, anthropic.APIError):
                raise
            attempt: Attempt = state.client.failure(exc, run.options.model)
        if attempt.outcome in (Outcome.FATAL, Outcome.BAD_REQUEST):
            run.stop("aborted", f"{what}: {attempt.error}")
            return None
        failures += 1
        if failures > max(CALL_RETRIES, run.options.retries):
            run.stop("aborted", f"{what} failed {failures} times: {attempt.error}")
            return None
        if attempt.outcome is Outcome.RATE_LIMITED and attempt.retry_after is not None:
            delay = attempt.retry_after
        else:
            delay = run.backoff(failures)
        await asyncio.sleep(delay)


def _requests(state: _State, items: list[Any]) -> Iterator[tuple[Any, dict[str, Any]]]:
    run = state.run
    for item in items:
        row = item.contact.row_index
        yield item, state.client.batch_request(
            custom_id(state.prefix, row), item.contact,
            model=run.model_for(item), context=run.context,
        )


async def _submit(state: _State, items: list[Any]) -> list[Submitted]:
    """Create a Message Batch per chunk of `items`, recording each id before going on."""
    run = state.run
    made: list[Submitted] = []
    for chunk in chunks(_requests(state, items)):
        if run.stop_reason is not None:
            break
        requests = [request for _, request in chunk]
        run.phase = f"submitting a Message Batch of {len(requests)}"
        run.report()
        create = functools.partial(state.client.create_batch, requests)
        batch_id: str | None = await _call(state, "creating a Message Batch", create)
        if batch_id is None:
            break
        rows = {item.contact.row_index for item, _ in chunk}
        submitted = Submitted(batch_id, rows, to_text(run.now()))
        state.submitted.append(submitted)
        made.append(submitted)
        # recorded before anything else happens: a run killed from here on is resumable
        # without submitting these requests again
        await _save(state)
        for item, _ in chunk:
            item.attempts += 1  # sent: an interrupted run reports it "unfinished"
            state.counted.add(item.contact.row_index)
    return made


async def _collect(state: _State, waiting: list[Submitted]) -> None:
    """Poll the submitted batches until each has ended, taking each one's results as it
    ends. Ctrl-C (a cancelled sleep) leaves them running for --resume."""
    run = state.run
    waiting = list(waiting)
    while waiting and run.stop_reason is None:
        for submitted in list(waiting):
            batch: Any = await _call(
                state, f"checking Message Batch {submitted.id}",
                functools.partial(state.client.retrieve_batch, submitted.id),
            )
            if batch is None:
                return
            if batch.processing_status != "ended":
                continue
            if not await _results(state, submitted):
                return
            submitted.collected = True
            waiting.remove(submitted)
            await _save(state)
        if waiting:
            rows = sum(len(s.rows) for s in waiting)
            run.phase = f"waiting on {len(waiting)} Message Batch(es), {rows} requests"
            run.report()
            await asyncio.sleep(run.options.batch_poll_s)


async def _results(state: _State, submitted: Submitted) -> bool:
    """Map one ended batch's results back to their contacts; False when the run stops."""
    seen: set[int] = set()

    async def take() -> bool:
        async for line in state.client.batch_results(submitted.id):
            row = row_of(state.prefix, line.custom_id)
            item = state.by_row.get(row) if row is not None else None
            if row is None or item is None or item.status is not None or row in seen:
                continue  # not ours, already final (an earlier session took it), or repeated
            seen.add(row)
            await _take(state, item, line.result)
        return True

    done = await _call(state, f"reading the results of Message Batch {submitted.id}", take)
    if done is None:
        return False
    # a request the results left out (never seen on the real API): settle it like an error
    for row in sorted(submitted.rows - seen):
        item = state.by_row.get(row)
        if item is not None and item.status is None and item not in state.followups:
            await _retry_or_fail(state, item, "no result in the Message Batch")
    return True


def _count(state: _State, item: Any) -> None:
    row = item.contact.row_index
    if row not in state.counted:  # submitted by an earlier session: counted now
        item.attempts += 1
        state.counted.add(row)


async def _take(state: _State, item: Any, result: Any) -> None:
    """One result line: finish the contact or queue its realtime follow-up."""
    run = state.run
    _count(state, item)
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        attempt = state.client.batch_attempt(result.message, run.model_for(item))
        _account(run, item, attempt)
        outcome = attempt.outcome
        if outcome is Outcome.OK:
            if run.router.escalate(item.contact.row_index, attempt.intel):
                state.followups.append(item)  # Low confidence from --fast-model
                return
            await run.finish(item, "enriched", intel=attempt.intel)
        elif outcome is Outcome.INVALID_OUTPUT:
            item.reask_first = True  # the realtime follow-up is SPEC 4.1's one re-ask
            state.followups.append(item)
        elif outcome is Outcome.MAX_TOKENS:
            await run.finish(item, "failed", error="max_tokens")
        else:
            await _retry_or_fail(state, item, attempt.error or "unusable batch result")
        return
    if kind == "errored":
        error = getattr(getattr(result, "error", None), "error", None)
        error_type = getattr(error, "type", None) or "error"
        message = getattr(error, "message", None) or ""
        reason = f"batch request errored ({error_type}: {message})".replace(": )", ")")
        if error_type == "invalid_request_error":
            await run.finish(item, "failed", error=reason)
            return
        await _retry_or_fail(state, item, reason)
        return
    if kind in ("expired", "canceled"):
        await _retry_or_fail(state, item, f"batch request {kind}")
        return
    await _retry_or_fail(state, item, f"unknown batch result type {kind!r}")


async def _retry_or_fail(state: _State, item: Any, reason: str) -> None:
    run = state.run
    if run.options.retries > 0:
        state.followups.append(item)
    else:
        await run.finish(item, "failed", error=f"{reason}; --retries 0: not retried")


def _account(run: Any, item: Any, attempt: Attempt) -> None:
    """What send() does for a realtime attempt, minus pacing and latency."""
    if not attempt.billed:
        return
    item.usage += attempt.usage
    item.cost += attempt.cost
    if attempt.raw_usage is not None:
        item.raw_usage = [*item.raw_usage, attempt.raw_usage]
    run.router.record(item.contact.row_index, attempt.model, attempt.usage, attempt.cost)
    run.spent += attempt.cost
    if not attempt.priced and not run.unpriced:
        run.unpriced = True
        run.warn(
            f"no price is known for model {attempt.model}: its cost is counted as 0 "
            "(marked unpriced in the batch)"
        )
