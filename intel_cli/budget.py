"""The money limits of a run (SPEC 4.2): `--max-cost` for one run, and `INTEL_DAILY_BUDGET`
for a UTC day shared by every process and machine using the same store.

Both work by reservation. Before a request goes out, its worst case (its input tokens, over-
estimated, plus `max_tokens` of output, at the dearer of the plain and the cache-write input
price) is held against each limit; when it comes back, the hold is replaced by the real cost.
A request whose hold does not fit is not sent. Since a real cost never exceeds its hold, the
sum of real costs never exceeds the cap, however many requests are in flight.

- The run cap is an in-memory ledger: the pipeline's event loop is one thread, so checking and
  holding happen without an await in between and cannot interleave.
- The daily cap lives in the store (`intel_budget`, `intel_budget_holds`, migration 0002):
  `Store.budget_reserve` checks and holds atomically (SQLite: BEGIN IMMEDIATE; PostgreSQL and
  Supabase: one SQL function that takes the day's row lock), so concurrent processes queue on
  it instead of overshooting. Only runs with INTEL_DAILY_BUDGET set take part: set it in the
  environment of every process (cron jobs included) that should share the cap.
- Crashed processes: each daily hold carries the batch id and expires (the attempt's timeout
  plus `HOLD_SLACK_S`, more than a request can last or wait), so a killed run's holds stop counting
  shortly after it died. A run that ends normally settles or releases all of its holds; a
  request cancelled in flight (Ctrl-C) may still have been billed, so it is settled at its
  worst case: the day is over-counted, never under-counted.

When a hold does not fit while this run still has requests in flight, the run waits for them
to settle (their real costs free part of what they held) and tries again; when it does not fit
while only other processes hold the day, it polls until their holds settle or expire. Only when
nothing is in flight anywhere and it still does not fit is the contact `over_budget`.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from intel_cli.contacts import Contact
from intel_cli.errors import UsageError
from intel_cli.pricing import price
from intel_cli.prompt import RunContext, build_prompt
from intel_cli.schema import json_schema
from intel_cli.stores.base import Store
from intel_cli.usage import Usage

Db = Callable[..., Awaitable[Any]]

DAILY_BUDGET_VAR = "INTEL_DAILY_BUDGET"
# a daily hold outlives its request's timeout by this much. The hold is taken before the
# request waits for a pacing slot (intel_cli.pacing), which can take a while under an
# account's token limits; the attempt itself ends within its timeout + 1 s. Five minutes
# covers both with room to spare, and is how long a killed process's holds linger.
HOLD_SLACK_S = 300.0
# how often a run waiting on other processes' holds looks at the day again
POLL_S = 0.2
# the re-ask note (intel_cli.prompt._REASK_NOTE) adds about this many tokens, over-estimated
REASK_EXTRA_TOKENS = 120


def parse_usd(text: str, what: str) -> Decimal:
    """A positive amount of USD (`5`, `0.25`, `$10`); UsageError naming `what` otherwise."""
    raw = text.strip().lstrip("$").strip()
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        raise UsageError(f"bad {what} {text!r}: give an amount of USD, e.g. 5 or 0.50") from None
    if not amount.is_finite() or amount <= 0:
        raise UsageError(f"bad {what} {text!r}: give an amount of USD above 0, e.g. 5 or 0.50")
    return amount


def daily_budget_from_env(environ: dict[str, str] | None = None) -> Decimal | None:
    """INTEL_DAILY_BUDGET as USD, None when unset or empty."""
    env = os.environ if environ is None else environ
    raw = env.get(DAILY_BUDGET_VAR, "")
    return parse_usd(raw, DAILY_BUDGET_VAR) if raw.strip() else None


def worst_case(model: str, input_tokens: int, max_tokens: int) -> Decimal:
    """The most one request can cost: `input_tokens` at the dearer of the plain and the
    prompt-cache-write price (a write costs 1.25x input), plus `max_tokens` of output.
    0 for a model without a price (SPEC 3.2: unpriced models cost 0 and are flagged)."""
    plain = price(model, Usage(input=input_tokens, output=max_tokens)).cost
    written = price(model, Usage(cache_write=input_tokens, output=max_tokens)).cost
    return max(plain, written)


def offline_input_tokens(contact: Contact, context: RunContext) -> int:
    """An over-estimate of a request's input tokens without a client: the prompt and the
    schema at ~3 characters per token, plus the structured-output overhead (what
    AnthropicClient.estimate_input_tokens does from the full request)."""
    system, user = build_prompt(contact, context)
    size = len(system) + len(user) + len(json.dumps(json_schema()))
    return math.ceil(size / 3) + 400


def non_ascii_margin(contact: Contact) -> int:
    """Tokens to add to a size-based estimate for the contact's non-ASCII text.

    The estimates count ~3 characters per token, which holds for English and JSON but not
    for other scripts: a CJK character or an emoji can be a token or more on its own. A
    byte-level tokenizer never makes more tokens than UTF-8 bytes, so each non-ASCII
    character is counted at its byte length (on top of the third already counted), which
    keeps the reservation an upper bound for any contact data.
    """
    values = [contact.name, contact.email, contact.company, contact.role,
              *contact.context.values()]
    return sum(
        len(ch.encode("utf-8")) for value in values if value for ch in value if ord(ch) > 127
    )


def usd(amount: Decimal) -> str:
    """$1.50, $0.0042: enough places to be meaningful for per-request amounts."""
    if amount >= 1:
        return f"${amount:,.2f}"
    return f"${amount.normalize():f}" if amount else "$0"


@dataclass
class Hold:
    """What one request holds: `amount` against the run cap and, with a daily cap, the
    store's hold `hold_id` on `day`."""

    amount: Decimal
    day: date | None = None
    hold_id: int | None = None
    settled: bool = False


# the hold of a run without limits: nothing to reserve or settle
FREE = Hold(Decimal(0), settled=True)


class Budget:
    """The run's limits. `reserve()` before each request, `settle()` after it, `close()`
    (on the store thread) when the run ends."""

    def __init__(
        self,
        *,
        store: Store,
        batch_id: str,
        max_cost: Decimal | None,
        daily: Decimal | None,
        hold_ttl_s: float,
        now: Callable[[], datetime],
    ) -> None:
        self.store = store
        self.batch_id = batch_id
        self.max_cost = max_cost
        self.daily = daily
        self.hold_ttl_s = hold_ttl_s
        self.now = now
        self.spent = Decimal(0)  # real costs of this run's settled requests
        self.reserved = Decimal(0)  # held by this run's requests in flight
        self.in_flight = 0
        self.open: list[Hold] = []
        self.reason: str | None = None  # why the last reservation failed
        self._settled: asyncio.Event | None = None

    @property
    def active(self) -> bool:
        return self.max_cost is not None or self.daily is not None

    def _event(self) -> asyncio.Event:
        if self._settled is None:
            self._settled = asyncio.Event()
        return self._settled

    def _fits_run(self, amount: Decimal) -> bool:
        return self.max_cost is None or self.spent + self.reserved + amount <= self.max_cost

    async def reserve(self, amount: Decimal, db: Db) -> Hold | None:
        """Hold `amount` against every limit; None when it cannot fit (then `reason` says
        which limit). `db` runs a store call on the pipeline's store thread."""
        if not self.active:
            return FREE
        while True:
            if not self._fits_run(amount):
                if self.in_flight:
                    await self._wait_for_settle()
                    continue
                assert self.max_cost is not None
                self.reason = (
                    f"--max-cost {usd(self.max_cost)} reached ({usd(self.spent)} spent; the "
                    f"next request could cost up to {usd(amount)})"
                )
                return None
            # held in memory before the first await: concurrent workers see it at once
            hold = Hold(amount)
            self.reserved += amount
            self.in_flight += 1
            if self.daily is None:
                self.open.append(hold)
                return hold
            now = self.now()
            hold.day = now.astimezone(UTC).date()  # the UTC day, whatever clock is injected
            try:
                hold.hold_id = await db(
                    self.store.budget_reserve,
                    hold.day,
                    amount,
                    self.daily,
                    batch_id=self.batch_id,
                    now=now,
                    expires_at=now + timedelta(seconds=self.hold_ttl_s),
                )
            except BaseException:
                self._drop(hold)
                raise
            if hold.hold_id is not None:
                self.open.append(hold)
                return hold
            self._drop(hold)
            if self.in_flight:
                await self._wait_for_settle()
                continue
            status = await db(self.store.budget_status, hold.day, now=now)
            if status.holds and status.spent + amount <= self.daily:
                # only other processes' requests hold the day: theirs settle (or expire)
                await asyncio.sleep(POLL_S)
                continue
            self.reason = (
                f"{DAILY_BUDGET_VAR} {usd(self.daily)} for {hold.day.isoformat()} reached "
                f"({usd(status.spent)} spent today; the next request could cost up to "
                f"{usd(amount)})"
            )
            return None

    def _drop(self, hold: Hold) -> None:
        """A hold ends (settled, or refused by the store): whoever waits on it looks again."""
        self.reserved -= hold.amount
        self.in_flight -= 1
        self._event().set()

    async def _wait_for_settle(self) -> None:
        """Until one of this run's holds ends. Called right after seeing `in_flight > 0`
        with no await in between, so the end it waits for cannot have happened already."""
        event = self._event()
        event.clear()
        await event.wait()

    async def settle(self, hold: Hold, cost: Decimal, db: Db) -> None:
        """Replace `hold` by the request's real `cost` (0 when it was not billed)."""
        if hold.settled:
            return
        hold.settled = True
        self.open.remove(hold)
        self.spent += cost
        try:
            if hold.hold_id is not None and hold.day is not None:
                await db(self.store.budget_settle, hold.hold_id, hold.day, cost, now=self.now())
        finally:
            # after the store has it, so a waiter's next try sees the hold gone there too
            self._drop(hold)

    def close(self) -> None:
        """At the end of the run, on the store thread: a request still open was cancelled in
        flight and may have been billed, so it is settled at its worst case; then any hold of
        this batch left in the store is released."""
        for hold in list(self.open):
            hold.settled = True
            self.spent += hold.amount
            if hold.hold_id is not None and hold.day is not None:
                self.store.budget_settle(hold.hold_id, hold.day, hold.amount, now=self.now())
        self.open.clear()
        self.reserved = Decimal(0)
        self.in_flight = 0
        if self.daily is not None:
            self.store.budget_release(self.batch_id)


def validate(max_cost: Decimal | None, daily: Decimal | None) -> None:
    for value, what in ((max_cost, "--max-cost"), (daily, DAILY_BUDGET_VAR)):
        if value is not None and (not value.is_finite() or value <= 0):
            raise UsageError(f"{what} must be an amount of USD above 0, e.g. 5 or 0.50")
