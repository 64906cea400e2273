"""SIGINT and SIGTERM during `intel enrich` (SPEC 4.3): the CLI installs `StopSignals`, the
pipeline arms it with a callback that cancels the run.

Before the run is armed nothing has been sent, so a signal stops the command at once (as
Ctrl-C always does). While armed, the first signal asks the run to stop (it finishes or
cancels in-flight requests within its grace, finalises the batch and writes the output);
later signals are ignored, so a second Ctrl-C cannot tear the output file in half. After
the run is disarmed the signal is only remembered: the output is being written.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from intel_cli.errors import Interrupted, Terminated

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: SIGINT/SIGTERM handlers for the length of a run (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._cancel: Callable[[], None] | None = None
        self._disarmed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in HANDLED:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    # the pipeline's side (intel_cli.pipeline.CancelHook)
    def arm(self, cancel: Callable[[], None]) -> None:
        self._cancel = cancel
        if self.received is not None:  # arrived between the checks and the start
            cancel()

    def disarm(self) -> None:
        self._cancel = None
        self._disarmed = True

    @property
    def terminated(self) -> bool:
        return self.received == signal.SIGTERM

    def error(self, message: str) -> Interrupted:
        """The error to exit with: 143 after SIGTERM, 130 after SIGINT."""
        return Terminated(message) if self.terminated else Interrupted(message)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.received is None
        if first:
            self.received = signum
        if self._disarmed or not first:
            return
        if self._cancel is None:
            raise self.error("interrupted before anything was sent: nothing to resume")
        self._cancel()
