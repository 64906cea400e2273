"""All terminal output that uses Rich lives in this package (STYLE 10): nothing else imports rich.

Two consoles: `stdout` for results (tables, JSON), `stderr` for progress,
warnings and errors, so `--json` on stdout stays machine-readable.
"""

from __future__ import annotations

import os

from rich.console import Console

_stdout: Console | None = None
_stderr: Console | None = None


# When stdout is not a terminal (cron mail, a pipe, a file) Rich would assume 80 columns and
# squeeze the wide tables into ellipses; nothing there needs to fit a screen.
PIPE_WIDTH = 120


def stdout() -> Console:
    global _stdout
    if _stdout is None:
        _stdout = Console(highlight=False, soft_wrap=False)
        if not _stdout.is_terminal and "COLUMNS" not in os.environ:
            _stdout.width = PIPE_WIDTH
    return _stdout


def stderr() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = Console(stderr=True, highlight=False)
    return _stderr


def use_consoles(out: Console | None, err: Console | None) -> None:
    """Swap the consoles (tests render into a fixed-width StringIO console)."""
    global _stdout, _stderr
    _stdout, _stderr = out, err


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    # soft_wrap: never broken at the console width (80 columns in a pipe), so cron logs and
    # grep see the whole warning on one line; a terminal still wraps it for display
    stderr().print(f"Warning: {message}", markup=False, highlight=False, soft_wrap=True)
