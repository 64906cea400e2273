"""`--resume` (SPEC 2.2, 4.3): which batch may be continued, and what of it is already done.

A running batch carries its runner in `metadata.runner` (pid, host, heartbeat), refreshed
by the run every HEARTBEAT_S. A batch is resumable when it is not `running`, or when its
runner is gone: a heartbeat older than STALE_S, or a pid on this host that no longer
exists (a SIGKILL). A live one is refused: two processes must never send the same batch.

Stored results split in two: final ones (sent and answered, cached, skipped) are kept and
never sent again; the rest (rate limited, over budget, "not sent", "unfinished", or no row
at all because the process was killed) go again, keeping what their earlier attempts cost.
"""

from __future__ import annotations

import os
import shlex
import socket
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from intel_cli.errors import UsageError
from intel_cli.timefmt import from_text, to_text

# how often a run refreshes its heartbeat, and when a silent one counts as dead
HEARTBEAT_S = 10.0
STALE_S = 30.0

FINAL_STATUSES = frozenset({"enriched", "cached", "failed", "timed_out", "skipped"})
# the error prefixes of contacts a run left unfinished (pipeline._Run.unfinished_status)
UNFINISHED_PREFIXES = ("not sent", "unfinished")


def runner_info(now: datetime) -> dict[str, Any]:
    """Who runs the batch, for `metadata.runner`."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "heartbeatAt": to_text(now)}


def is_final(row: dict[str, Any]) -> bool:
    """Whether a stored result is a contact's final outcome (not to be sent again)."""
    if row.get("status") not in FINAL_STATUSES:
        return False
    error = row.get("error") or ""
    return not (row["status"] == "failed" and error.startswith(UNFINISHED_PREFIXES))


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this process is not running it: an earlier run in it ended badly
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    except OSError:
        return False
    # a killed child its parent has not reaped yet is a zombie: dead for our purpose
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def _heartbeat(runner: dict[str, Any]) -> datetime | None:
    raw = runner.get("heartbeatAt")
    if not isinstance(raw, str):
        return None
    try:
        return from_text(raw)
    except ValueError:  # a hand-edited row: treat as no heartbeat
        return None


def live_runner(batch: dict[str, Any], now: datetime) -> str | None:
    """A description of the live process running `batch`, or None when nobody is."""
    if batch.get("status") != "running":
        return None
    runner = (batch.get("metadata") or {}).get("runner")
    if not isinstance(runner, dict):
        return None  # a batch from before heartbeats: nothing says it is alive
    beat = _heartbeat(runner)
    if beat is None or (now - beat).total_seconds() > STALE_S:
        return None
    pid, host = runner.get("pid"), runner.get("host")
    if host == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        return None
    age = max(0, round((now - beat).total_seconds()))
    return f"pid {pid} on {host}, heartbeat {age} s ago"


def check_resumable(
    batch: dict[str, Any] | None, batch_id: str, inputs: Sequence[str], now: datetime
) -> None:
    """Raise UsageError (exit 2) unless `batch` may be continued with `inputs`."""
    if batch is None:
        raise UsageError(
            f"no batch {batch_id} in the store: check the id (`intel metrics` lists recent "
            "batches) and --store"
        )
    live = live_runner(batch, now)
    if live is not None:
        raise UsageError(
            f"batch {batch_id} is running in another process ({live}): wait for it to end, "
            "or stop it, then --resume"
        )
    if "-" in inputs:
        raise UsageError("--resume needs the input files; it cannot check stdin against the batch")
    stored = (batch.get("metadata") or {}).get("inputs") or []
    names = [str(entry.get("name")) for entry in stored if isinstance(entry, dict)]
    if len(stored) != len(inputs):
        raise UsageError(
            f"batch {batch_id} was started with {len(stored)} input file(s) "
            f"({', '.join(names)}), not {len(inputs)}: resume it with the same files"
        )
    from intel_cli.pipeline import file_sha256

    for name, entry in zip(inputs, stored, strict=True):
        digest = file_sha256(name)
        if digest is None:
            raise UsageError(f"cannot read {name}: --resume needs the batch's input file")
        if not isinstance(entry, dict) or entry.get("sha256") != digest:
            raise UsageError(
                f"{name} is not the file batch {batch_id} was started with (its sha256 "
                "differs): resume with the same, unchanged input"
            )


def resume_hint(inputs: Sequence[str], batch_id: str) -> str:
    """The command that continues the batch."""
    return f"resume with `intel enrich {shlex.join(inputs)} --resume {batch_id}`"
