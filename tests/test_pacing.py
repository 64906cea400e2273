"""The pacer (intel_cli.pacing): the window grows with headroom, never past the cap, halves on
429/529 and recovers; the three budgets are each respected against a real token-bucket model of
the API (the simulator's own TokenBucket), driven by an injected clock, so no test sleeps."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from intel_cli.anthropic_client import RateLimits
from intel_cli.contacts import Contact
from intel_cli.pacing import RECOVER_S, InputSizer, Pacer, Ticket
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def limits(
    requests: tuple[int, int] | None = None,
    input_tokens: tuple[int, int] | None = None,
    output_tokens: tuple[int, int] | None = None,
) -> RateLimits:
    """RateLimits from (limit, remaining) pairs."""
    values: dict[str, int] = {}
    for name, pair in (("requests", requests), ("input_tokens", input_tokens),
                       ("output_tokens", output_tokens)):
        if pair is not None:
            values[f"{name}_limit"], values[f"{name}_remaining"] = pair
    return RateLimits(**values)  # type: ignore[arg-type]


def fill(pacer: Pacer, estimate: int | None = None) -> list[Ticket]:
    """Take every slot that may go now."""
    taken = []
    while (ticket := pacer.try_acquire(estimate)) is not None:
        taken.append(ticket)
    return taken


# --- the window -----------------------------------------------------------------------------


def test_starts_small_and_grows_by_one_per_answer_while_the_window_is_what_holds_back() -> None:
    clock = Clock()
    pacer = Pacer(64, start=8, clock=clock)
    first = fill(pacer)
    assert len(first) == 8 and pacer.delay() == math.inf
    for ticket in first:  # no headers: slow start, +1 per answer (doubling per round trip)
        pacer.release(ticket)
        pacer.observe(None, "ok", ticket=ticket)
        fill(pacer)
    assert pacer.limit == 16 and pacer.in_flight == 16


def test_no_growth_when_the_window_is_not_full() -> None:
    clock = Clock()
    pacer = Pacer(64, start=8, clock=clock)
    ticket = pacer.try_acquire()
    assert ticket is not None
    pacer.release(ticket)
    pacer.observe(None, "ok", ticket=ticket)
    assert pacer.limit == 8  # one request in flight: latency is not the bottleneck


def test_jumps_to_the_headroom_the_headers_show_but_never_past_the_cap() -> None:
    clock = Clock()
    pacer = Pacer(100, start=8, clock=clock)
    tickets = fill(pacer)
    assert pacer.try_acquire() is None
    pacer.release(tickets[0])
    pacer.observe(limits(requests=(4000, 3990), output_tokens=(400_000, 398_000)), "ok",
                  ticket=tickets[0], output_tokens=200)
    assert pacer.limit == 100
    taken = fill(pacer)
    assert pacer.in_flight == 100 == pacer.peak_in_flight and len(taken) == 93
    # a small account: the jump stops at what its request bucket holds
    small = Pacer(256, start=8, clock=clock)
    tickets = fill(small)
    assert small.try_acquire() is None
    small.release(tickets[0])
    small.observe(limits(requests=(50, 42)), "ok", ticket=tickets[0])
    assert 40 <= small.limit <= 50


def test_the_cap_holds_under_any_number_of_good_answers() -> None:
    clock = Clock()
    pacer = Pacer(5, start=8, clock=clock)
    assert pacer.limit == 5  # the start never exceeds the cap
    for _ in range(200):
        tickets = fill(pacer)
        assert pacer.in_flight <= 5
        for ticket in tickets:
            pacer.release(ticket)
            pacer.observe(limits(requests=(10**6, 10**6)), "ok", ticket=ticket)
    assert pacer.limit == 5 and pacer.peak_in_flight == 5


@pytest.mark.parametrize(
    ("outcome", "status"), [("rate_limited", 429), ("retryable", 529)]
)
def test_halves_on_429_and_529_once_per_round_trip(outcome: str, status: int) -> None:
    clock = Clock()
    pacer = Pacer(64, start=32, clock=clock)
    tickets = fill(pacer)
    clock.t += 1
    for ticket in tickets[:10]:  # ten rejections of requests sent before the cut: one cut
        pacer.release(ticket)
        pacer.observe(None, outcome, ticket=ticket, status_code=status)
    assert pacer.limit == 16 and pacer.cuts == 1 and pacer.congestion_events == 10
    # a request sent after the cut that is refused again cuts again
    for ticket in tickets[10:]:
        pacer.release(ticket)
    clock.t += 1
    again = pacer.try_acquire()
    assert again is not None
    clock.t += 1
    pacer.release(again)
    pacer.observe(None, outcome, ticket=again, status_code=status)
    assert pacer.limit == 8 and pacer.cuts == 2


def test_a_500_or_a_timeout_does_not_shrink_the_window() -> None:
    clock = Clock()
    pacer = Pacer(64, start=16, clock=clock)
    for ticket in fill(pacer):
        pacer.release(ticket)
        pacer.observe(None, "retryable", ticket=ticket, status_code=500)
    for ticket in fill(pacer):
        pacer.release(ticket)
        pacer.observe(None, "timeout", ticket=ticket)
    assert pacer.limit == 16 and pacer.cuts == 0


def test_retry_after_holds_every_request_until_then() -> None:
    clock = Clock()
    pacer = Pacer(64, start=8, clock=clock)
    ticket = pacer.try_acquire()
    assert ticket is not None
    pacer.release(ticket)
    pacer.observe(None, "rate_limited", ticket=ticket, status_code=429, retry_after=2.0)
    assert pacer.delay() == pytest.approx(2.0)
    assert pacer.try_acquire() is None
    clock.t += 2.0
    assert pacer.try_acquire() is not None


def test_recovers_additively_then_with_a_fresh_start_after_a_quiet_spell() -> None:
    clock = Clock()
    pacer = Pacer(128, start=64, clock=clock)
    tickets = fill(pacer)
    clock.t += 0.5
    pacer.release(tickets[0])
    pacer.observe(limits(requests=(10_000, 9_000)), "rate_limited", ticket=tickets[0],
                  status_code=429)
    assert pacer.limit == 32
    for ticket in tickets[1:]:
        pacer.release(ticket)

    flight = fill(pacer)

    def answer_round() -> None:
        """Answer every request in flight, each freed slot refilled at once: the window
        stays the limit (pressure, not idleness)."""
        for ticket in list(flight):
            flight.remove(ticket)
            clock.t += 0.01
            pacer.release(ticket)
            pacer.observe(limits(requests=(10_000, 9_000)), "ok", ticket=ticket)
            flight.extend(fill(pacer))

    # congestion avoidance: about +1 per round trip, no jump to the headroom
    for _ in range(3):
        answer_round()
    assert 34 <= pacer.limit <= 36
    # after RECOVER_S without a 429, headroom lets it jump again
    clock.t += RECOVER_S + 1
    answer_round()
    assert pacer.limit == 128


# --- the budgets, against the API's token buckets -------------------------------------------


@dataclass
class FakeAccount:
    """The API's admission rule, as the simulator applies it: a request goes when every
    bucket holds 1 request, its input tokens and min(max_tokens, 1024) output tokens; it is
    charged its real output at once."""

    clock: Clock
    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None
    buckets: dict[str, TokenBucket] = field(default_factory=dict, init=False)
    rejected: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        for name, cap in (("requests", self.rpm), ("input_tokens", self.itpm),
                          ("output_tokens", self.otpm)):
            if cap:
                self.buckets[name] = TokenBucket(cap, self.clock())

    def headers(self) -> RateLimits:
        now = self.clock()
        return limits(**{
            name: (bucket.capacity, bucket.remaining(now)) for name, bucket in self.buckets.items()
        })

    def admit(self, input_tokens: int, output_tokens: int, reserve: int) -> bool:
        now = self.clock()
        needs = {"requests": 1, "input_tokens": input_tokens, "output_tokens": reserve}
        if any(b.wait_for(needs[n], now) > 0 for n, b in self.buckets.items()):
            self.rejected += 1
            return False
        charges = {"requests": 1, "input_tokens": input_tokens, "output_tokens": output_tokens}
        for name, bucket in self.buckets.items():
            bucket.take(charges[name], now)
        return True


def drive(account: FakeAccount, pacer: Pacer, n: int, *, latency: float,
          input_tokens: int, output_tokens: int, estimate: int,
          shuffle: random.Random | None = None) -> float:
    """Send n requests through the pacer as fast as it allows; returns the simulated seconds.
    With `shuffle`, requests sent at the same moment reach the API in a random order and
    latencies vary by +/-10%, so answers come back in another order again."""
    clock = account.clock
    began = clock.t
    sent = 0
    order = itertools.count()
    answers: list[tuple[float, int, Ticket, RateLimits]] = []
    while sent < n or answers:
        burst = []
        while sent + len(burst) < n and (ticket := pacer.try_acquire(estimate)) is not None:
            burst.append(ticket)
        if shuffle is not None:
            shuffle.shuffle(burst)
        for ticket in burst:
            if account.admit(input_tokens, output_tokens, min(pacer.output_reserve, 1024)):
                took = latency * (shuffle.uniform(0.9, 1.1) if shuffle else 1.0)
                heapq.heappush(answers, (clock.t + took, next(order), ticket,
                                         account.headers()))
                sent += 1
            else:  # a 429: answered at once, retry-after = 1 s
                pacer.release(ticket)
                pacer.observe(account.headers(), "rate_limited", ticket=ticket,
                              status_code=429, retry_after=1.0)
        wait = pacer.delay(estimate) if sent < n else math.inf
        due = answers[0][0] if answers else math.inf
        clock.t = min(clock.t + max(wait, 1e-6), due) if wait != math.inf else due
        while answers and answers[0][0] <= clock.t:
            _, _, ticket, headers = heapq.heappop(answers)
            pacer.release(ticket)
            pacer.observe(headers, "ok", ticket=ticket, input_tokens=input_tokens,
                          output_tokens=output_tokens)
    return clock.t - began


@pytest.mark.parametrize(
    ("budget", "account", "per_minute"),
    [
        ("requests", {"rpm": 50}, 50),
        ("input tokens", {"rpm": 10_000, "itpm": 40_000}, 40_000 / 2_000),
        ("output tokens", {"rpm": 10_000, "otpm": 8_000}, 8_000 / 200),
    ],
)
def test_each_budget_is_respected_at_close_to_its_rate(
    budget: str, account: dict[str, int], per_minute: float
) -> None:
    clock = Clock()
    api = FakeAccount(clock, **account)
    pacer = Pacer(256, start=8, output_reserve=1024, clock=clock)
    n = 400
    # the size-based estimate over-counts (3 chars a token); the pacer calibrates it
    seconds = drive(api, pacer, n, latency=3.5, input_tokens=2_000, output_tokens=200,
                    estimate=2_600)
    assert api.rejected == 0, f"the {budget} bucket ran dry"
    # the same when requests sent together reach the API in any order
    clock = Clock()
    shuffled = FakeAccount(clock, **account)
    drive(shuffled, Pacer(256, start=8, output_reserve=1024, clock=clock), n, latency=3.5,
          input_tokens=2_000, output_tokens=200, estimate=2_600, shuffle=random.Random(7))
    assert shuffled.rejected == 0, f"the {budget} bucket ran dry (requests reordered)"
    # the first minute's bucket is a burst; after it, the refill rate is the ceiling
    burst = {"requests": 50, "input tokens": 20, "output tokens": 40}[budget]
    steady_minutes = (seconds - 3.5) / 60
    assert (n - burst) / steady_minutes >= 0.9 * per_minute


def test_a_second_client_eating_the_budget_is_seen_in_the_headers() -> None:
    clock = Clock()
    api = FakeAccount(clock, rpm=60)
    pacer = Pacer(256, start=8, clock=clock)
    api.buckets["requests"].take(55, clock())  # someone else used most of the minute
    drive(api, pacer, 120, latency=1.0, input_tokens=100, output_tokens=100, estimate=100)
    assert api.rejected <= 3  # only the first blind requests can miss; then headers rule


def test_input_estimate_is_calibrated_by_what_the_api_counted() -> None:
    clock = Clock()
    pacer = Pacer(8, clock=clock)
    assert pacer.estimate_input(3_000) == 3_000
    ticket = pacer.try_acquire(3_000)
    assert ticket is not None
    pacer.release(ticket)
    pacer.observe(None, "ok", ticket=ticket, input_tokens=2_000, output_tokens=150)
    assert pacer.estimate_input(3_000) == pytest.approx(2_000)
    assert pacer.estimate_input(None) == 2_000 and pacer.mean_output() == 150


def test_input_sizer_measures_the_whole_request_once() -> None:
    calls: list[Contact] = []

    def full(contact: Contact) -> int:
        calls.append(contact)
        return 3_000

    sizer = InputSizer(full)
    short = Contact(row_index=1, values={}, email="a@b.fm", name="A", company="B")
    long = Contact(row_index=2, values={}, email="a@b.fm", name="A" * 301, company="B")
    assert sizer(short) == 3_000
    assert sizer(long) == 3_100
    assert len(calls) == 1
    assert InputSizer(None)(short) is None


# --- the asyncio side -----------------------------------------------------------------------


def test_acquire_waits_first_come_first_served_and_a_cancelled_waiter_leaks_nothing() -> None:
    async def main() -> None:
        pacer = Pacer(2, start=2)
        order: list[int] = []
        held = [await pacer.acquire(), await pacer.acquire()]

        async def worker(i: int) -> None:
            ticket = await pacer.acquire()
            order.append(i)
            await asyncio.sleep(0)
            pacer.release(ticket)

        tasks = [asyncio.create_task(worker(i)) for i in range(5)]
        await asyncio.sleep(0.01)
        assert order == [] and pacer.in_flight == 2
        tasks[1].cancel()
        for ticket in held:
            pacer.release(ticket)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert order == [0, 2, 3, 4] and pacer.in_flight == 0
        pacer.release(held[0])  # a second release of one ticket is ignored
        assert pacer.in_flight == 0

    asyncio.run(main())


def test_acquire_sleeps_until_the_budget_refills() -> None:
    async def main() -> None:
        pacer = Pacer(8, start=8)
        ticket = await pacer.acquire()
        pacer.release(ticket)
        # 6,000 requests a minute, 100 left, 120 kept as margin: the next waits ~(121-100)/100 s
        pacer.observe(limits(requests=(6_000, 100)), "ok", ticket=ticket)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await pacer.acquire()
        assert 0.15 < loop.time() - began < 1.0

    asyncio.run(main())


def test_the_cli_default_cap_is_the_pacers() -> None:
    import inspect

    from intel_cli.cli.enrich import enrich_command
    from intel_cli.pacing import DEFAULT_CAP
    from intel_cli.pipeline import RunOptions

    assert inspect.signature(enrich_command).parameters["concurrency"].default == DEFAULT_CAP
    assert RunOptions(inputs=[]).concurrency == DEFAULT_CAP


# --- in the pipeline: real SDK, real HTTP, the simulator's buckets ---------------------------


def test_a_single_429_under_adaptive_pacing_costs_about_its_retry_after(tmp_path: Path) -> None:
    from intel_cli.stores.sqlite import SQLiteStore
    from tests.test_pipeline import email, enrich, people, simulator, write_contacts

    inputs = write_contacts(tmp_path / "c.csv", people(60))
    with SQLiteStore(tmp_path / "s.db") as store, simulator(
        rules=[FaultRule(email(7), "429", times=1)], retry_after_s=1
    ) as sim:
        store.migrate()
        summary = enrich(sim, store, inputs)
        assert sim.stats.rate_limited == 1
        batch = store.get_batch(summary.batch_id)
    assert summary.enriched == 60 and summary.status == "completed"
    # every worker waits out the one retry-after (1 s), then the run goes on at full pace
    assert batch is not None
    assert 0.5 <= batch["metadata"]["limiterWaitS"] <= 2.0
    assert summary.wall_time_ms < 8000


def test_default_run_uses_the_headers_to_open_the_window(tmp_path: Path) -> None:
    from intel_cli.stores.sqlite import SQLiteStore
    from tests.test_pipeline import enrich, people, write_contacts

    inputs = write_contacts(tmp_path / "c.csv", people(120))
    # 0.3 s a request, a large account: the first answer's headers show room for all
    config = SimulatorConfig(ttft_s=0.3, tokens_per_s=math.inf, jitter=0.0, rpm=4000,
                             otpm=400_000)
    with SQLiteStore(tmp_path / "s.db") as store, Simulator(config) as sim:
        store.migrate()
        summary = enrich(sim, store, inputs)
        assert sim.stats.rate_limited == 0
        # past the start window of 8 at once (slow start alone would need 3 round trips)
        assert sim.stats.max_in_flight > 8 * 4
    assert summary.enriched == 120


def test_warm_up_sends_one_request_alone_then_opens_the_window() -> None:
    pacer = Pacer(16, start=8, warm_up=True, clock=Clock())
    first = pacer.try_acquire()
    assert first is not None
    assert pacer.try_acquire() is None  # the first answer (and its cache write) comes first
    pacer.release(first)
    tickets = [pacer.try_acquire() for _ in range(8)]
    assert all(t is not None for t in tickets)
    assert pacer.try_acquire() is None  # the start window, no more


def test_without_warm_up_the_start_window_opens_at_once() -> None:
    pacer = Pacer(16, start=8, clock=Clock())
    assert all(pacer.try_acquire() is not None for _ in range(8))
