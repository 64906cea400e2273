"""How many requests may be in flight, and when the next may go: the pipeline's pacer (SPEC 4.1).

An account is limited three ways at once: requests, input tokens and output tokens per minute,
each a token bucket that holds a minute's worth and refills continuously. Every response says
how much is left (`anthropic-ratelimit-*-limit/remaining`). The pacer owns two gates:

- the budgets: a local model of each of the three buckets. Each request is deducted when it
  is sent (1 request, its input tokens estimated from its size and calibrated by what the API
  counted, its output tokens from the running mean), and each response's headers correct the
  model: remaining then, plus the refill since, minus what was sent after it. A request waits
  until every known bucket holds what it needs (the API admits a request only when its output
  bucket could cover `max_tokens`) plus a small margin, so none of them runs dry;
- the window: how many requests may be in flight, which matters when latency is the limit.
  It starts small (no headers are known before the first answer), grows while the window and
  not a budget is what holds requests back (+1 per answer, and straight to the headroom the
  headers show while no 429/529 was seen lately), and halves on 429/529 (at most once per
  round trip), growing back by 1/window per answer, with a fresh start RECOVER_S after the last
  cut. `--concurrency` caps it.

A 429's `retry-after` also holds the pacer until then. Everything is deterministic given the
clock, which tests inject; `try_acquire` is the synchronous core that `acquire` awaits on.
"""

from __future__ import annotations

import asyncio
import bisect
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intel_cli.contacts import Contact

# the default cap: enough for a large account (4,000 requests/min at ~4 s a request needs
# ~270 in flight); the budgets, not the cap, keep smaller accounts under their limits
DEFAULT_CAP = 256
# the window before any headers are known: small enough for the smallest account
DEFAULT_START = 8
# after this long without a 429/529, the window may jump to the headroom again
RECOVER_S = 30.0
# kept in every bucket: covers estimate errors and other clients of the same account
MARGIN_FRACTION = 0.02
# requests sent this close together may reach the API in either order (connection set-up,
# the network): a header's remaining is only known to within what was sent that close
REORDER_S = 0.5
# how long the record of recent sends is kept (longer than most requests' latency; an older
# ticket's header just gets wider bounds)
HISTORY_S = 60.0
_CONGESTION_STATUS = frozenset({429, 529})
_BUDGETS = ("requests", "input_tokens", "output_tokens")


@dataclass
class Ticket:
    """One request's place in the pacer, from acquire() to release()/observe()."""

    sent_at: float
    input_tokens: float  # what was deducted from the input budget
    input_estimate: int | None  # the size-based estimate it came from
    output_tokens: float  # what was deducted from the output budget
    deducted: tuple[float, float, float]  # cumulative deductions per budget, this one included
    released: bool = False


class _Budget:
    """The local model of one per-minute bucket; unknown (no limit) until a header says."""

    def __init__(self) -> None:
        self.limit: int | None = None
        self.level = 0.0
        self.at = 0.0
        self.deducted = 0.0  # everything ever deducted here (to find what was sent since)

    @property
    def rate(self) -> float:
        return (self.limit or 0) / 60.0

    @property
    def margin(self) -> float:
        return (self.limit or 0) * MARGIN_FRACTION

    def level_at(self, now: float) -> float:
        if self.limit is None:
            return math.inf
        return min(float(self.limit), self.level + max(0.0, now - self.at) * self.rate)

    def take(self, amount: float, now: float) -> None:
        self.deducted += amount
        if self.limit is not None:
            self.level, self.at = self.level_at(now) - amount, now

    def correct(self, limit: int, remaining: int, ticket: Ticket | None, index: int,
                now: float, unsure: tuple[float, float] = (0.0, 0.0)) -> None:
        """What the API said when it admitted `ticket`'s request, carried forward to now:
        remaining then, plus the refill since, minus what was sent after it.

        Requests sent close together may reach the API in another order: `unsure` is what
        was sent just before the ticket (maybe admitted after it: the header is high by up
        to that) and just after it (maybe admitted before it: counted twice, low by up to
        that). The model moves only as far as it must to fall within those bounds; the
        first header, with no model yet, takes the cautious bound."""
        known = self.limit is not None
        self.limit = limit
        if ticket is None:  # no idea what was sent since: take the header as now
            self.level, self.at = float(min(remaining, limit)), now
            return
        refilled = min(float(limit), remaining + max(0.0, now - ticket.sent_at) * self.rate)
        told = refilled - (self.deducted - ticket.deducted[index])
        low, high = told - unsure[0], told + unsure[1]
        self.level = min(max(self.level_at(now), low), high) if known else low
        self.at = now

    def wait(self, need: float, now: float) -> float:
        """Seconds until `need` plus the margin fits (a need over the limit waits for a full
        bucket, as the API admits it then)."""
        if self.limit is None:
            return 0.0
        want = min(need + self.margin, float(self.limit))
        short = want - self.level_at(now)
        return short / self.rate if short > 0 else 0.0

    def room(self, need: float, each: float, now: float) -> float:
        """How many more requests fit now."""
        if self.limit is None:
            return math.inf
        spare = self.level_at(now) - self.margin - need
        return 0.0 if spare < 0 else math.floor(spare / max(each, 1e-9)) + 1


class InputSizer:
    """A request's input tokens from its size, cheaply: the client's full estimate (which
    builds and measures the whole request, ~0.2 ms) once, then the first request's figure
    plus the difference in the contact's text at the same ~3 characters per token."""

    def __init__(self, full: Callable[[Contact], int] | None) -> None:
        self._full = full
        self._base: int | None = None

    @staticmethod
    def _chars(contact: Contact) -> int:
        fields = (contact.email, contact.name, contact.company, contact.role)
        size = sum(len(value) for value in fields if value)
        return size + sum(len(k) + len(v) for k, v in contact.context.items())

    def __call__(self, contact: Contact) -> int | None:
        if self._full is None:
            return None
        if self._base is None:
            self._base = self._full(contact) - math.ceil(self._chars(contact) / 3)
        return max(1, self._base + math.ceil(self._chars(contact) / 3))


class Pacer:
    """The concurrency window and the three budgets (see the module docstring).

    `cap`: at most this many in flight. `start`: the window before anything is known.
    `output_reserve`: output tokens the API wants free before it admits a request (its
    `max_tokens`). `clock`: monotonic seconds (tests inject one). `warm_up`: send one request
    alone before opening the window: its answer writes the prompt cache that every later
    request then reads (requests in flight together would each pay the cache write), and a
    rejected key or unknown model costs one request, not a window of them.
    """

    def __init__(
        self,
        cap: int = DEFAULT_CAP,
        *,
        start: int = DEFAULT_START,
        output_reserve: int = 1024,
        clock: Callable[[], float] = time.monotonic,
        warm_up: bool = False,
    ) -> None:
        if cap < 1:
            raise ValueError("concurrency must be at least 1")
        self.cap = cap
        self.clock = clock
        self.output_reserve = output_reserve
        self.window = float(max(1, min(start, cap)))
        self.ssthresh = float(cap)  # jumps and +1 growth below this, +1/window above
        self._budgets = {name: _Budget() for name in _BUDGETS}
        self._in_flight = 0
        self.peak_in_flight = 0
        self._hold_until = -math.inf  # a 429's retry-after
        self._last_cut = -math.inf
        self._window_bound = False  # the window (not a budget) held a request back last time
        # running sums for the estimates (ints: token counts)
        self._out_total = self._out_count = 0
        self._in_actual = self._in_estimated = 0
        self._in_total = self._in_count = 0
        # statistics for benchmarks and tests
        self.congestion_events = 0
        self.cuts = 0
        # waiters: (future, input estimate), served first come first served
        self._queue: deque[tuple[asyncio.Future[Ticket], int | None]] = deque()
        # recent sends: when, and the cumulative deductions before each (see correct())
        self._sent_times: list[float] = []
        self._sent_before: list[tuple[float, float, float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._warming = warm_up  # until the first request is over

    # -- state -------------------------------------------------------------------------

    @property
    def limit(self) -> int:
        """How many requests may be in flight right now."""
        if self._warming:
            return 1
        return max(1, min(self.cap, math.floor(self.window)))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def budget(self, name: str) -> tuple[int | None, float]:
        """(limit per minute, estimated level now) of `requests`, `input_tokens` or
        `output_tokens`; the limit is None until a response said it."""
        bucket = self._budgets[name]
        return bucket.limit, bucket.level_at(self.clock())

    def mean_output(self) -> float:
        """The output tokens a request is expected to use (max_tokens until one answered)."""
        if not self._out_count:
            return float(self.output_reserve)
        return self._out_total / self._out_count

    def estimate_input(self, estimate: int | None) -> float:
        """A request's input tokens: its size-based estimate calibrated by what the API
        counted so far; without one, the mean so far."""
        if estimate is not None:
            if self._in_estimated:
                return estimate * self._in_actual / self._in_estimated
            return float(estimate)
        return self._in_total / self._in_count if self._in_count else 0.0

    # -- the synchronous core ----------------------------------------------------------

    def delay(self, input_estimate: int | None = None) -> float:
        """Seconds until a request may be sent: 0 now, math.inf while the window is full
        (a release opens it)."""
        now = self.clock()
        if now < self._hold_until:
            return self._hold_until - now
        if self._in_flight >= self.limit:
            return math.inf
        inputs = self.estimate_input(input_estimate)
        needs = (1.0, inputs, max(float(self.output_reserve), self.mean_output()))
        buckets = self._budgets.values()
        return max(bucket.wait(need, now) for bucket, need in zip(buckets, needs, strict=True))

    def try_acquire(self, input_estimate: int | None = None) -> Ticket | None:
        """Take a slot and deduct the request from the budgets if it may go now."""
        wait = self.delay(input_estimate)
        if wait > 0:
            # what held it back decides whether a wider window would help
            self._window_bound = wait == math.inf
            return None
        return self._take(input_estimate)

    def _take(self, input_estimate: int | None) -> Ticket:
        now = self.clock()
        inputs = self.estimate_input(input_estimate)
        outputs = self.mean_output()
        requests, input_tokens, output_tokens = self._budgets.values()
        requests.take(1.0, now)
        input_tokens.take(inputs, now)
        output_tokens.take(outputs, now)
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)
        deducted = (requests.deducted, input_tokens.deducted, output_tokens.deducted)
        self._sent_times.append(now)
        self._sent_before.append((deducted[0] - 1.0, deducted[1] - inputs, deducted[2] - outputs))
        if len(self._sent_times) > 1024 and now - self._sent_times[512] > HISTORY_S:
            del self._sent_times[:512], self._sent_before[:512]
        return Ticket(now, inputs, input_estimate, outputs, deducted)

    def _deducted_by(self, when: float) -> tuple[float, float, float]:
        """Cumulative deductions of the sends at or before `when` (as far as kept)."""
        index = bisect.bisect_right(self._sent_times, when)
        if index < len(self._sent_before):
            return self._sent_before[index]
        return tuple(b.deducted for b in self._budgets.values())  # type: ignore[return-value]

    def _unsure(self, ticket: Ticket) -> tuple[tuple[float, float], ...]:
        """Per budget, what was sent within REORDER_S before and after `ticket`."""
        before = self._deducted_by(ticket.sent_at - REORDER_S)
        after = self._deducted_by(ticket.sent_at + REORDER_S)
        own = (1.0, ticket.input_tokens, ticket.output_tokens)
        return tuple(
            (max(0.0, mine - own_amount - b), max(0.0, a - mine))
            for mine, own_amount, b, a in zip(ticket.deducted, own, before, after, strict=True)
        )

    def release(self, ticket: Ticket | None = None) -> None:
        """The request is over (answered, failed or cancelled): its slot is free."""
        if ticket is not None:
            if ticket.released:
                return
            ticket.released = True
        self._in_flight -= 1
        self._warming = False
        self._pump()

    def observe(
        self,
        limits: Any,
        outcome: str,
        *,
        ticket: Ticket | None = None,
        status_code: int | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        """What one attempt's response said: its `RateLimits` headers (or None), its outcome
        (`ok`, `rate_limited`, `retryable`... as in anthropic_client.Outcome), the HTTP
        status, the tokens the API counted (when billed) and a 429's retry-after."""
        now = self.clock()
        if limits is not None:
            unsure = self._unsure(ticket) if ticket is not None else ((0.0, 0.0),) * 3
            for index, name in enumerate(_BUDGETS):
                limit = getattr(limits, f"{name}_limit", None)
                remaining = getattr(limits, f"{name}_remaining", None)
                if limit and remaining is not None:
                    self._budgets[name].correct(
                        limit, remaining, ticket, index, now, unsure[index]
                    )
        if output_tokens is not None:
            self._out_total += output_tokens
            self._out_count += 1
        if input_tokens is not None:
            self._in_total += input_tokens
            self._in_count += 1
            if ticket is not None and ticket.input_estimate:
                self._in_actual += input_tokens
                self._in_estimated += ticket.input_estimate
        if now - self._last_cut > RECOVER_S:
            self.ssthresh = float(self.cap)
        outcome = str(outcome)
        if outcome == "rate_limited" or status_code in _CONGESTION_STATUS:
            self._congested(now, ticket, retry_after)
        elif outcome in ("ok", "invalid_output", "max_tokens", "bad_request"):
            self._answered(now)
        self._pump()

    def _congested(self, now: float, ticket: Ticket | None, retry_after: float | None) -> None:
        self.congestion_events += 1
        if retry_after is not None:
            self._hold_until = max(self._hold_until, now + retry_after)
        # once per round trip: requests sent before the last cut saw the old window
        if ticket is not None and ticket.sent_at <= self._last_cut:
            return
        self.cuts += 1
        self.window = max(1.0, math.floor(self.window / 2))
        self.ssthresh = self.window
        self._last_cut = now

    def _answered(self, now: float) -> None:
        if not self._window_bound or self.window >= self.cap:
            return  # a budget (or nothing) held requests back: a wider window would not help
        if self.window < self.ssthresh:
            grown = self.window + 1
            room = min(
                bucket.room(need, each, now)
                for bucket, need, each in zip(
                    self._budgets.values(),
                    (1.0, self.estimate_input(None), float(self.output_reserve)),
                    (1.0, self.estimate_input(None), self.mean_output()),
                    strict=True,
                )
            )
            if room > 0 and any(b.limit is not None for b in self._budgets.values()):
                grown = max(grown, min(self.ssthresh, self._in_flight + room))
            self.window = min(grown, float(self.cap))
        else:
            self.window = min(self.window + 1 / self.window, float(self.cap))

    # -- the asyncio side --------------------------------------------------------------

    async def acquire(self, input_estimate: int | None = None) -> Ticket:
        """Wait for a slot and the budgets, first come first served; the ticket goes back
        to release() and observe()."""
        if not self._queue:
            ticket = self.try_acquire(input_estimate)
            if ticket is not None:
                return ticket
        future: asyncio.Future[Ticket] = asyncio.get_running_loop().create_future()
        self._queue.append((future, input_estimate))
        self._pump()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release(future.result())  # granted just as it was cancelled: give it back
            raise

    def _pump(self) -> None:
        """Hand out what may go now, in order; wake again when the budgets will allow."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._queue:
            return  # nobody waits: what held the last one back still stands
        while self._queue:
            future, estimate = self._queue[0]
            if future.done():  # cancelled while waiting
                self._queue.popleft()
                continue
            wait = self.delay(estimate)
            if wait == math.inf:
                self._window_bound = True
                return
            self._window_bound = False
            if wait > 0:
                self._timer = asyncio.get_running_loop().call_later(wait, self._pump)
                return
            self._queue.popleft()
            future.set_result(self._take(estimate))
        self._window_bound = False
