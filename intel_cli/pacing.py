"""How many requests may be in flight now: the pipeline's concurrency gate.

For now a fixed cap (`--concurrency`, default 5). The interface is the one the
speed issue grows into an adaptive pacer: workers `await acquire()` before each
request and `release()` after it, and report what the API said with
`observe(limits, outcome)` (the `anthropic-ratelimit-*` headers and the attempt's
outcome), from which a later version widens or narrows the gate.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Pacer:
    """A concurrency gate with at most `cap` holders at a time."""

    def __init__(self, cap: int) -> None:
        if cap < 1:
            raise ValueError("concurrency must be at least 1")
        self.cap = cap
        self._slots = asyncio.Semaphore(cap)
        self._in_flight = 0
        self.peak_in_flight = 0

    @property
    def limit(self) -> int:
        """How many requests may be in flight right now (fixed at `cap` for now)."""
        return self.cap

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        await self._slots.acquire()
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def release(self) -> None:
        self._in_flight -= 1
        self._slots.release()

    def observe(self, limits: Any, outcome: str) -> None:
        """What one attempt's response said (rate-limit headers, outcome).

        The fixed gate ignores it; the adaptive pacer of the speed issue uses it
        to grow while there is headroom and shrink on 429/529.
        """
