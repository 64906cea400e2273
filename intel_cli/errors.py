"""User-facing errors. The core raises these; only the CLI turns them into exit codes.

Each message says what happened and what to do, in one line.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2
    RATE_LIMITED = 3
    CONFIG = 4
    THRESHOLD = 5
    INTERRUPTED = 130
    TERMINATED = 143


class IntelError(Exception):
    """An error the user can act on. `exit_code` is the process exit status."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(IntelError):
    """Bad options or bad input: unknown option, unreadable file, no enrichable rows, bad date."""

    exit_code = ExitCode.USAGE


class InputError(UsageError):
    """An input file that cannot be read as contacts. The message names the file."""


class RateLimitedError(IntelError):
    """The global limiter is active (or the run stopped on it); the run is resumable."""

    exit_code = ExitCode.RATE_LIMITED


class ConfigError(IntelError):
    """Configuration or authentication: no key, 401/403/402, unknown model, store not usable."""

    exit_code = ExitCode.CONFIG


class StoreUnavailable(ConfigError):
    """The store cannot be reached, or has not been migrated."""


class ThresholdError(IntelError):
    """A threshold was crossed: --fail-under, --budget, --max-cost."""

    exit_code = ExitCode.THRESHOLD


class BatchExists(UsageError):
    """A batch id that is already in the store."""


class Interrupted(IntelError):
    """Ctrl-C (SIGINT) or SIGTERM stopped the run; progress is saved."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM stopped the run (exit 143, the shell's 128 + 15); progress is saved."""

    exit_code = ExitCode.TERMINATED
