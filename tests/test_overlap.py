"""Overlapping cron runs (issue 5, item 4; SPEC 4.3): several `intel enrich` processes write
one store at once. Real subprocesses (`python -m intel_cli enrich ... --simulate`), each with
its own in-process simulator, on a fresh SQLite file (so they also migrate it at the same
time) and on PostgreSQL.

Making them really overlap: each process is given its contact file and then `-` (stdin).
The file is read first and holds a cp1252 byte, so the process prints the "not UTF-8" warning
and then blocks reading stdin, with its store already open. Once every process has printed
the warning, the test closes all their stdins at once: they all create their batch and start
writing within milliseconds of each other, whatever the machine's load did to their start-up.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

from intel_cli.stores import open_store
from intel_cli.stores.base import Store
from tests.conftest import postgres_url

N_CONTACTS = 12  # unique contacts per file; each file also has a duplicate and a skipped row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A store nobody has used: a SQLite path that does not exist yet (the processes migrate
    it together), or a fresh, migrated PostgreSQL schema."""
    if request.param == "sqlite":
        yield str(tmp_path / "shared.db")
        return
    url = postgres_url()
    assert url is not None
    from tests.pg import blank_schema_url

    with blank_schema_url(url) as schema_url:
        store = open_store(schema_url, auto_migrate=False)
        try:
            store.migrate()
        finally:
            store.close()
        yield schema_url


def contact_file(directory: Path, tag: str, n: int = N_CONTACTS) -> Path:
    """n unique contacts, then a duplicate of the first and a row with no address. The cp1252
    byte in the first name makes the reader warn before it moves on to stdin."""
    path = directory / f"list-{tag}.csv"
    with path.open("w", encoding="cp1252", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station"])
        for i in range(n):
            name = "Ren\u00e9 Caf\u00e9" if i == 0 else f"DJ {tag}{i}"
            writer.writerow([name, f"dj{i}@{tag}.radio.example", f"Radio {tag} {i}"])
        writer.writerow(["Again", f"DJ0@{tag}.radio.example ", ""])  # same key as row 0
        writer.writerow(["Nobody", "", ""])
    return path


@dataclass
class Run:
    """One `intel enrich` subprocess, held at its stdin until released."""

    name: str
    process: subprocess.Popen[str]
    output: Path
    stderr_lines: list[str] = field(default_factory=list)
    warned: threading.Event = field(default_factory=threading.Event)
    stdout: str = ""

    def pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            if "read it as cp1252" in line:
                self.warned.set()
        self.warned.set()  # the process ended: nothing more to wait for

    @property
    def stderr(self) -> str:
        return "".join(self.stderr_lines)

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()

    def finish(self, timeout: float = 90) -> int:
        assert self.process.stdout is not None
        self.stdout = self.process.stdout.read()
        return self.process.wait(timeout=timeout)


def start(
    input_file: Path, store_url: str, *extra: str, ttft: float = 0.02, concurrency: int = 3
) -> Run:
    output = input_file.with_suffix(".out.csv")
    env = {
        **os.environ,
        "INTEL_SIMULATE_TTFT": str(ttft),
        "INTEL_SIMULATE_SPEED": "inf",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "intel_cli", "enrich", str(input_file), "-",
            "--simulate", "--store", store_url, "-o", str(output), "--json",
            "--concurrency", str(concurrency), *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    run = Run(input_file.stem, process, output)
    threading.Thread(target=run.pump_stderr, daemon=True).start()
    return run


def hold_at_stdin(runs: list[Run], timeout: float = 30) -> None:
    """Wait until every run has read its file (and opened the store) and waits on stdin."""
    end = time.monotonic() + timeout
    for run in runs:
        assert run.warned.wait(max(0.0, end - time.monotonic())), f"{run.name}: no warning"
        assert run.process.poll() is None, f"{run.name} ended early: {run.stderr}"


@pytest.fixture
def runs() -> Iterator[list[Run]]:
    """Every process a test starts; any still alive at the end is killed (by its own pid)."""
    started: list[Run] = []
    yield started
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait(timeout=10)
        for stream in (run.process.stdin, run.process.stdout, run.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def check_batch(store: Store, batch_id: str, output: Path) -> dict[str, object]:
    """The batch is finalised, every contact of its file has its result, and the batch's
    totals are the sums of its results."""
    batch = store.get_batch(batch_id)
    assert batch is not None, batch_id
    results = store.batch_results(batch_id)
    by_row = {r["row_index"]: r for r in results}
    assert len(by_row) == len(results), "a row recorded twice"
    # rows 0..N-1 enriched; row N (the duplicate) shares row 0's result; row N+1 skipped
    assert sorted(by_row) == [*range(N_CONTACTS), N_CONTACTS + 1]
    assert {by_row[i]["status"] for i in range(N_CONTACTS)} == {"enriched"}
    assert by_row[N_CONTACTS + 1]["status"] == "skipped"
    assert batch["status"] == "completed"
    assert batch["finished_at"] is not None
    assert (batch["total"], batch["enriched"], batch["failed"], batch["skipped"]) == (
        N_CONTACTS, N_CONTACTS, 0, 1,
    )
    assert batch["cost"] == sum((r["cost"] for r in results), Decimal(0)) > 0
    for column in ("input_tokens", "output_tokens"):
        assert batch[column] == sum(r[column] or 0 for r in results) > 0, column

    with output.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_CONTACTS + 2
    assert [r["intel_status"] for r in rows] == ["enriched"] * (N_CONTACTS + 1) + ["skipped"]
    assert {r["intel_batch_id"] for r in rows} == {batch_id}
    return batch


def test_four_processes_write_one_store_at_once(
    tmp_path: Path, store_url: str, runs: list[Run]
) -> None:
    tags = ["a", "b", "c", "d"]
    for tag in tags:
        runs.append(start(contact_file(tmp_path, tag), store_url, "--batch-id", f"cron-{tag}"))
    hold_at_stdin(runs)
    for run in runs:
        run.release()
    codes = [run.finish() for run in runs]

    for run, code in zip(runs, codes, strict=True):
        assert code == 0, (run.name, run.stderr)
        assert "locked" not in run.stderr.lower(), run.stderr
        assert "Traceback" not in run.stderr
    store = open_store(store_url)
    try:
        batches = [
            check_batch(store, f"cron-{tag}", run.output)
            for tag, run in zip(tags, runs, strict=True)
        ]
    finally:
        store.close()
    # they really ran at the same time: every batch started before any one finished
    assert max(b["created_at"] for b in batches) < min(b["finished_at"] for b in batches)


def test_a_batch_id_already_running_is_refused(tmp_path: Path, runs: list[Run]) -> None:
    # SQLite only: on PostgreSQL the refusal is the same unique insert the race below covers
    store_url = str(tmp_path / "shared.db")
    # the first run is slow (one request at a time, 0.2 s each: over 2 s in all) so it is
    # still running when the second, already started and waiting on stdin, is released
    first = start(
        contact_file(tmp_path, "first"), store_url, "--batch-id", "nightly",
        ttft=0.2, concurrency=1,
    )
    second = start(contact_file(tmp_path, "second"), store_url, "--batch-id", "nightly")
    runs.extend([first, second])
    hold_at_stdin(runs)
    first.release()
    store = open_store(store_url)
    try:
        end = time.monotonic() + 60
        while (batch := store.get_batch("nightly")) is None or not store.batch_results("nightly"):
            assert time.monotonic() < end and first.process.poll() is None, first.stderr
            time.sleep(0.02)
        assert batch["status"] == "running"

        second.release()
        assert second.finish() == 2, second.stderr
        assert first.process.poll() is None, "the first run should still be running"
        assert second.stderr.strip().splitlines()[-1] == (
            "Error: batch id nightly is already in the store: choose another --batch-id, "
            "or --resume nightly"
        )
        assert "Traceback" not in second.stderr
        assert not second.output.exists()

        assert first.finish() == 0, first.stderr
        # the refused run changed nothing in the first one's batch
        batch = check_batch(store, "nightly", first.output)
        inputs = batch["metadata"]["inputs"]  # type: ignore[index]
        assert [i["name"] for i in inputs] == [str(tmp_path / "list-first.csv"), "-"]
    finally:
        store.close()


def test_two_runs_racing_for_one_batch_id(
    tmp_path: Path, store_url: str, runs: list[Run]
) -> None:
    """Two cron entries with the same fixed batch id fire together: exactly one runs."""
    for tag in ("x", "y"):
        runs.append(start(contact_file(tmp_path, tag), store_url, "--batch-id", "daily"))
    hold_at_stdin(runs)
    for run in runs:
        run.release()
    codes = sorted(run.finish() for run in runs)
    assert codes == [0, 2], [run.stderr for run in runs]
    winner = next(run for run in runs if run.process.returncode == 0)
    loser = next(run for run in runs if run.process.returncode == 2)
    assert "batch id daily is already in the store" in loser.stderr
    assert "locked" not in (winner.stderr + loser.stderr).lower()
    store = open_store(store_url)
    try:
        check_batch(store, "daily", winner.output)
    finally:
        store.close()
