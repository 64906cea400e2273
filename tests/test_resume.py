"""`--resume` (SPEC 2.2, 4.3; issue 5 item 1): a batch killed with SIGKILL, stopped by the
limiter or the store is continued under its id; finished contacts are not sent again, the
output ends complete and the batch row is finalised over every contact of every session.
A batch running in a live process is refused (exit 2), and so is a changed input file."""

from __future__ import annotations

import csv
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.errors import ExitCode, UsageError
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.pricing import price
from intel_cli.resume import is_final, live_runner
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.timefmt import to_text
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "test-key"
runner = CliRunner()


def email(i: int) -> str:
    return f"dj{i:03d}@station{i:03d}.example"


def write_contacts(path: Path, n: int) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station", "Role"])
        for i in range(n):
            writer.writerow([f"DJ {i}", email(i), f"Station {i} FM", "Producer"])
    return str(path)


def read_output(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


class CountingSimulator(Simulator):
    """The simulator, counting the /v1/messages requests that name each contact's e-mail."""

    def __init__(self, config: SimulatorConfig, emails: list[str]) -> None:
        super().__init__(config)
        self.emails = emails
        self.sent: Counter[str] = Counter()
        self._count_lock = threading.Lock()

    def messages(self, body: dict[str, Any], raw: str) -> Any:  # type: ignore[override]
        with self._count_lock:
            for address in self.emails:
                if address in raw:
                    self.sent[address] += 1
        return super().messages(body, raw)


def billed(sim: Simulator) -> tuple[Usage, Decimal]:
    usage, cost = Usage(), Decimal(0)
    for entry in sim.billed:
        one = Usage.from_api(entry)
        usage += one
        cost += price(MODEL, one).cost
    return usage, cost


def enrich(sim: Simulator, store: Store, inputs: str, **options: Any) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    return run(
        RunOptions(inputs=[inputs], model=MODEL, **options), store, api_key=KEY,
        base_url=sim.base_url,
    )


def child_env(sim: Simulator, home: Path) -> dict[str, str]:
    return {
        **os.environ, "ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": sim.base_url,
        "INTEL_HOME": str(home),
    }


def stored_rows(db: Path) -> int:
    conn = sqlite3.connect(db, timeout=5)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM intel_results").fetchone()[0])
    except sqlite3.OperationalError:  # not created or not migrated yet
        return 0
    finally:
        conn.close()


def test_a_batch_killed_with_sigkill_is_finished_by_resume_resending_only_what_was_in_flight(
    tmp_path: Path, intel_home: Path
) -> None:
    n, cap = 40, 4
    inputs = write_contacts(tmp_path / "list.csv", n)
    db, out = tmp_path / "store.db", tmp_path / "out.csv"
    config = SimulatorConfig(ttft_s=0.15, tokens_per_s=math.inf, jitter=0.0)
    with CountingSimulator(config, [email(i) for i in range(n)]) as sim:
        command = [
            sys.executable, "-m", "intel_cli", "enrich", inputs, "--store", str(db),
            "-o", str(out), "--concurrency", str(cap), "--quiet",
        ]
        child = subprocess.Popen(
            [*command, "--batch-id", "b_killed"], env=child_env(sim, intel_home),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 30
        while stored_rows(db) < n // 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        _, stderr = child.communicate(timeout=10)
        assert b"Traceback" not in stderr
        assert child.returncode == -signal.SIGKILL
        with SQLiteStore(db) as store:
            batch = store.get_batch("b_killed")
            done_before = {r["contact_key"] for r in store.batch_results("b_killed")}
        assert batch is not None and batch["status"] == "running"
        assert n // 3 <= len(done_before) < n
        sent_before = set(sim.sent)
        in_flight = sent_before - done_before  # requested, never recorded
        assert len(in_flight) <= cap
        assert not out.exists()  # a killed run writes nothing more

        resumed = subprocess.run(
            [*command, "--resume", "b_killed"], env=child_env(sim, intel_home),
            capture_output=True, text=True, timeout=60,
        )
        assert resumed.returncode == 0, resumed.stderr
        usage, cost = billed(sim)
    sent_twice = {address for address, times in sim.sent.items() if times > 1}
    assert sent_twice <= in_flight  # nothing finished was paid for twice
    assert set(sim.sent) == {email(i) for i in range(n)}
    assert all(times <= 2 for times in sim.sent.values())
    rows = read_output(out)
    assert [r["Email"] for r in rows] == [email(i) for i in range(n)]
    assert {r["intel_status"] for r in rows} == {"enriched"}
    assert all(r["intel_platform"] and r["intel_batch_id"] == "b_killed" for r in rows)
    with SQLiteStore(db) as store:
        batch = store.get_batch("b_killed")
        results = store.batch_results("b_killed")
    assert batch is not None and batch["status"] == "completed"
    assert (batch["total"], batch["enriched"], batch["failed"]) == (n, n, 0)
    assert batch["metadata"]["resumes"] == 1
    assert len(results) == n
    # the batch's money is every recorded attempt of both sessions, recomputed from the rows
    assert batch["cost"] == sum((r["cost"] for r in results), Decimal(0))
    assert batch["input_tokens"] == sum(r["input_tokens"] for r in results)
    # what the simulator billed but nobody recorded: at most the answers cut by the kill
    assert batch["cost"] <= cost and batch["output_tokens"] <= usage.output


def test_resume_sends_only_the_unfinished_and_totals_cover_both_sessions(
    tmp_path: Path, store: Store
) -> None:
    """A run stopped by the limiter (--max-wait 0) leaves rate_limited contacts: resume sends
    exactly those, and the batch's tokens and cost are everything billed in both runs."""
    n = 10
    inputs = write_contacts(tmp_path / "c.csv", n)
    rules = [FaultRule(email(4), "429", times=1), FaultRule(email(2), "invalid", times=1)]
    config = SimulatorConfig.instant(rules=rules, retry_after_s=60)
    with CountingSimulator(config, [email(i) for i in range(n)]) as sim:
        first = enrich(sim, store, inputs, concurrency=1, max_wait=0, cache=False)
        assert first.status == "rate_limited"
        assert first.error is not None and first.error.exit_code == ExitCode.RATE_LIMITED
        before = dict(sim.sent)
        assert set(before) == {email(i) for i in range(5)}
        stored = {r["row_index"]: r for r in store.batch_results(first.batch_id)}
        assert [stored[i]["status"] for i in range(n)] == ["enriched"] * 4 + ["rate_limited"] * 6
        store.reset_limiter()
        second = enrich(sim, store, inputs, resume=first.batch_id, concurrency=2)
        usage, cost = billed(sim)
    assert second.batch_id == first.batch_id and second.status == "completed"
    assert second.finished == n - 4
    assert second.error is None
    after = {address: times - before.get(address, 0) for address, times in sim.sent.items()}
    assert {a for a, t in after.items() if t} == {email(i) for i in range(4, n)}
    batch = store.get_batch(first.batch_id)
    assert batch is not None and batch["status"] == "completed"
    assert (batch["total"], batch["enriched"], batch["failed"]) == (n, n, 0)
    assert batch["retried"] == 2  # the re-asked contact 2 (first session), the 429'd 4
    assert (batch["input_tokens"], batch["output_tokens"]) == (usage.input, usage.output)
    assert batch["cost"] == cost
    assert (second.usage, second.cost) == (usage, cost)
    results = store.batch_results(first.batch_id)
    assert sum(len(r["usage"]) for r in results) == len(sim.billed)
    rows = read_output(tmp_path / "c.enriched.csv")
    assert [r["intel_status"] for r in rows] == ["enriched"] * n


def test_resume_of_a_completed_batch_sends_nothing_and_rewrites_the_output(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    with CountingSimulator(SimulatorConfig.instant(), [email(i) for i in range(3)]) as sim:
        first = enrich(sim, store, inputs)
        (tmp_path / "c.enriched.csv").unlink()
        again = enrich(sim, store, inputs, resume=first.batch_id)
    assert sum(sim.sent.values()) == 3
    assert (again.total, again.enriched, again.cost) == (3, 3, first.cost)
    assert again.finished == 0  # contacts/s counts only what this session did
    rows = read_output(tmp_path / "c.enriched.csv")
    assert [r["intel_status"] for r in rows] == ["enriched"] * 3


def _running_batch(store: Store, batch_id: str, inputs: str, runner_info: dict[str, Any]) -> None:
    from intel_cli.pipeline import file_sha256

    store.create_batch(
        batch_id, model_used=MODEL, mode="realtime", now=datetime.now(UTC),
        metadata={"inputs": [{"name": inputs, "sha256": file_sha256(inputs)}],
                  "runner": runner_info},
    )


def test_a_batch_running_in_a_live_process_is_refused_with_exit_2(
    tmp_path: Path, store: Store
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 2)
    host = socket.gethostname()
    now = datetime.now(UTC)
    live = {"pid": os.getppid(), "host": host, "heartbeatAt": to_text(now)}
    _running_batch(store, "b_live", inputs, live)
    with Simulator(SimulatorConfig.instant()) as sim, pytest.raises(UsageError) as caught:
        enrich(sim, store, inputs, resume="b_live")
    assert caught.value.exit_code == ExitCode.USAGE
    assert "batch b_live is running in another process" in str(caught.value)
    batch = store.get_batch("b_live")
    assert batch is not None and store.batch_results("b_live") == []
    # the same batch once its heartbeat is stale, or its pid dead, is resumable
    assert live_runner(batch, now + timedelta(seconds=31)) is None
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    batch["metadata"]["runner"]["pid"] = dead.pid
    assert live_runner(batch, now) is None
    batch["metadata"]["runner"]["host"] = "another-host"  # its pid is not ours to check
    assert live_runner(batch, now) is not None


def test_a_killed_batch_with_a_dead_pid_resumes_at_once(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    info = {"pid": dead.pid, "host": socket.gethostname(),
            "heartbeatAt": to_text(datetime.now(UTC))}
    _running_batch(store, "b_dead", inputs, info)
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, resume="b_dead")
    assert (summary.status, summary.enriched) == ("completed", 3)
    batch = store.get_batch("b_dead")
    assert batch is not None and batch["status"] == "completed"
    assert batch["metadata"]["runner"]["pid"] == os.getpid()


def test_resume_refuses_an_unknown_batch_and_a_changed_input(
    tmp_path: Path, intel_home: Path
) -> None:
    inputs = write_contacts(tmp_path / "c.csv", 3)
    env = {"INTEL_SIMULATE_TTFT": "0", "INTEL_SIMULATE_SPEED": "inf"}
    result = runner.invoke(app, ["enrich", inputs, "--simulate", "--resume", "b_nope"], env=env)
    assert result.exit_code == ExitCode.USAGE
    assert "no batch b_nope in the store" in result.stderr
    first = runner.invoke(
        app, ["enrich", inputs, "--simulate", "--batch-id", "b_one", "--quiet"], env=env
    )
    assert first.exit_code == 0, first.stderr
    # a plain reuse of the id is refused too, pointing at --resume
    again = runner.invoke(app, ["enrich", inputs, "--simulate", "--batch-id", "b_one"], env=env)
    assert again.exit_code == ExitCode.USAGE and "--resume b_one" in again.stderr
    with open(inputs, "a", encoding="utf-8") as f:
        f.write("DJ X,x@y.example,X FM,DJ\n")
    changed = runner.invoke(app, ["enrich", inputs, "--simulate", "--resume", "b_one"], env=env)
    assert changed.exit_code == ExitCode.USAGE
    assert f"{inputs} is not the file batch b_one was started with" in changed.stderr
    assert "Traceback" not in changed.stderr


def test_which_stored_results_are_final() -> None:
    assert is_final({"status": "enriched"}) and is_final({"status": "cached"})
    assert is_final({"status": "timed_out", "error": "timeout"})
    assert is_final({"status": "failed", "error": "invalid output"})
    assert is_final({"status": "skipped", "error": "opted out"})
    assert not is_final({"status": "failed", "error": "not sent: run interrupted"})
    assert not is_final({"status": "failed", "error": "unfinished: run interrupted"})
    assert not is_final({"status": "rate_limited", "error": "not sent: rate limited"})
    assert not is_final({"status": "over_budget", "error": "over budget"})
