"""`intel enrich` end to end: options, exit codes, --json, output placement, progress and
tables, through the real SDK against the simulator (in-process with --simulate, or pointed at
with ANTHROPIC_BASE_URL) and a real SQLite store under INTEL_HOME."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.errors import ExitCode
from intel_cli.pipeline import ModelRow, Progress, RunSummary
from intel_cli.render import enrich as view
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

EXAMPLES = Path(__file__).parents[1] / "examples" / "contacts.csv"
JSON_KEYS = {
    "success", "batchId", "status", "total", "enriched", "cached", "failed", "timedOut",
    "retried", "skipped", "successRate", "tokens", "costUsd", "wallTimeMs", "output",
}

runner = CliRunner()


@pytest.fixture(autouse=True)
def instant_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    """--simulate without latency, so the suite stays fast."""
    monkeypatch.setenv("INTEL_SIMULATE_TTFT", "0")
    monkeypatch.setenv("INTEL_SIMULATE_SPEED", "inf")


def contacts(tmp_path: Path, n: int = 3, name: str = "list.csv") -> Path:
    path = tmp_path / name
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station"])
        for i in range(n):
            writer.writerow([f"DJ {i}", f"dj{i:02d}@radio{i:02d}.example", f"Radio {i}"])
        writer.writerow(["Nobody", "", ""])
    return path


def store(intel_home: Path) -> SQLiteStore:
    return SQLiteStore(intel_home / "intel.db")


def test_no_api_key_is_exit_4_before_anything_is_read(tmp_path: Path, intel_home: Path) -> None:
    result = runner.invoke(app, ["enrich", str(tmp_path / "does-not-exist.csv")])
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr.strip() == (
        "Error: No API key: set ANTHROPIC_API_KEY, or try --simulate"
    )
    assert not (intel_home / "intel.db").exists()


def test_json_summary_shape(tmp_path: Path, intel_home: Path) -> None:
    inputs = contacts(tmp_path)
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "--json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert set(body) == JSON_KEYS
    assert body["success"] is True and body["status"] == "completed"
    assert (body["total"], body["enriched"], body["failed"], body["skipped"]) == (3, 3, 0, 1)
    assert body["successRate"] == 100.0
    assert set(body["tokens"]) == {"input", "output", "cacheRead", "cacheWrite"}
    assert body["tokens"]["input"] > 0 and body["costUsd"] > 0
    assert body["output"] == str(tmp_path / "list.enriched.csv")
    assert (tmp_path / "list.enriched.csv").exists()
    assert result.stderr == ""  # no progress with --json
    with store(intel_home) as s:
        batch = s.get_batch(body["batchId"])
    assert batch is not None and batch["mode"] == "simulated"
    assert Decimal(str(body["costUsd"])) == batch["cost"]


def test_csv_on_stdout_keeps_stdout_clean(tmp_path: Path) -> None:
    inputs = contacts(tmp_path)
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "-o", "-"])
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["intel_status"] for r in rows] == ["enriched"] * 3 + ["skipped"]
    assert "Output: stdout" in result.stderr and "Success rate" in result.stderr
    json_result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "-o", "-", "--json"])
    assert json_result.exit_code == 0
    assert len(list(csv.DictReader(io.StringIO(json_result.stdout)))) == 4
    assert json.loads(json_result.stderr)["success"] is True


def test_plain_progress_lines_and_tables_when_not_a_terminal(tmp_path: Path) -> None:
    inputs = contacts(tmp_path, n=4)
    out = str(tmp_path / "o.json")
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "-o", out])
    assert result.exit_code == 0, result.stderr
    assert "enrich: 4/4 (100%), 4 enriched, 0 failed" in result.stderr
    for label in ("Total", "Enriched", "Cached", "Timed out", "Retried", "Success rate",
                  "Input tokens", "Output tokens", "Cost per enriched contact", "Wall time",
                  "Contacts/s", "claude-sonnet-4-5"):
        assert label in result.stdout
    assert f"Output: {tmp_path / 'o.json'}" in result.stdout
    items = json.loads((tmp_path / "o.json").read_text())
    assert items[0]["enrichment"]["status"] == "enriched"
    quiet = runner.invoke(app, ["enrich", str(inputs), "--simulate", "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_a_401_is_exit_4_with_json_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intel_home: Path
) -> None:
    inputs = contacts(tmp_path, n=10)
    with Simulator(SimulatorConfig.instant(api_keys={"right-key-1234"})) as sim:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong-key-5678")
        result = runner.invoke(app, ["enrich", str(inputs), "--json", "--concurrency", "2"])
        assert sim.stats.requests <= 2
    assert result.exit_code == ExitCode.CONFIG
    body = json.loads(result.stdout)
    assert body["success"] is False and body["status"] == "failed"
    assert "401" in body["error"] and "wrong-key" not in result.stdout + result.stderr
    assert result.stderr.startswith("Error: Anthropic rejected the API key (401")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "list.enriched.csv").read_text())))
    assert len(rows) == 11


def test_429_blocks_the_next_process_until_limiter_reset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, intel_home: Path
) -> None:
    inputs = contacts(tmp_path)
    config = SimulatorConfig.instant(retry_after_s=60, rules=[FaultRule("dj00@", "429", times=1)])
    with Simulator(config) as sim:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        first = runner.invoke(app, ["enrich", str(inputs), "--max-wait", "1", "--json"])
        assert first.exit_code == ExitCode.RATE_LIMITED
        body = json.loads(first.stdout)
        assert body["status"] == "rate_limited" and body["success"] is False
        assert "rate limited until" in first.stderr

        # a second process sees the store's limiter and sends nothing
        sent = sim.stats.requests
        second = subprocess.run(
            [sys.executable, "-m", "intel_cli", "enrich", str(inputs), "--quiet"],
            capture_output=True, text=True, env=os.environ.copy(), timeout=60,
        )
        assert second.returncode == ExitCode.RATE_LIMITED, second.stderr
        assert f"(set by {body['batchId']})" in second.stderr
        assert "--wait" in second.stderr and "intel limiter reset" in second.stderr
        assert sim.stats.requests == sent

        reset = runner.invoke(app, ["limiter", "reset"])
        assert reset.exit_code == 0
        third = runner.invoke(app, ["enrich", str(inputs), "--json"])
        assert third.exit_code == 0, third.stderr
        assert json.loads(third.stdout)["enriched"] == 3


def test_examples_end_to_end_then_metrics_shows_the_batch(tmp_path: Path) -> None:
    inputs = tmp_path / "contacts.csv"
    shutil.copy(EXAMPLES, inputs)
    result = runner.invoke(app, ["enrich", str(inputs), "--simulate", "--json"])
    assert result.exit_code == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["enriched"] == body["total"] > 0 and body["skipped"] > 0
    out = list(csv.DictReader(io.StringIO((tmp_path / "contacts.enriched.csv").read_text())))
    assert len(out) == len(list(csv.DictReader(io.StringIO(inputs.read_text()))))
    metrics = runner.invoke(app, ["metrics", "--json"])
    assert metrics.exit_code == 0, metrics.stderr
    recent = json.loads(metrics.stdout)["recentBatches"]
    assert [b["batch_id"] for b in recent] == [body["batchId"]]
    assert recent[0]["mode"] == "simulated" and recent[0]["enriched"] == body["enriched"]


def test_no_enrichable_rows_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("Name,Email\nA,\n")
    result = runner.invoke(app, ["enrich", str(path), "--simulate", "--json"])
    assert result.exit_code == ExitCode.USAGE
    assert "no enrichable rows in empty.csv" in result.stderr
    assert json.loads(result.stdout) == {"success": False, "error": result.stderr[7:].strip()}


def test_bad_campaign_is_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["enrich", str(contacts(tmp_path)), "--simulate",
                                 "--campaign", "tv"])
    assert result.exit_code == ExitCode.USAGE and "--campaign" in result.stderr


def _summary(**overrides: object) -> RunSummary:
    values: dict[str, object] = {
        "batch_id": "b_x", "status": "completed", "mode": "realtime",
        "model": "claude-sonnet-4-5", "output": "out.csv", "total": 4, "enriched": 3,
        "failed": 1, "finished": 4, "usage": Usage(1000, 500), "cost": Decimal("0.0105"),
        "wall_time_ms": 2000,
        "models": [ModelRow("claude-sonnet-4-5", 4, 3, Decimal("0.0105"), Usage(1000, 500))],
    }
    values.update(overrides)
    return RunSummary(**values)  # type: ignore[arg-type]


def test_summary_tables_render_the_figures() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=100, color_system=None)
    view.render_summary(_summary(), console)
    text = buffer.getvalue()
    assert "Batch b_x: completed" in text
    assert "75.00%" in text and "$0.0105" in text and "$0.0035" in text  # per enriched
    assert "2.00" in text  # contacts/s
    assert "claude-sonnet-4-5" in text and "Output: out.csv" in text


def test_progress_lines_are_throttled() -> None:
    buffer = io.StringIO()
    clock = iter([0.0, 0.1, 0.2, 2.5, 2.6]).__next__
    lines = view.ProgressLines(Console(file=buffer, width=200, color_system=None), clock)
    for done in (0, 1, 2, 3, 100):
        lines.update(Progress(done, 100, done, 0, Decimal(0), 1.0))
    printed = buffer.getvalue().splitlines()
    # start, 10 % reached? no (1, 2 are under a step and within 2 s), 3 after 2 s, the end
    assert [line.split(":")[1].split()[0] for line in printed] == ["0/100", "3/100", "100/100"]


def test_an_unknown_model_is_exit_4(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["enrich", str(contacts(tmp_path)), "--simulate", "--model", "gpt-4o"]
    )
    assert result.exit_code == ExitCode.CONFIG
    assert "unknown model 'gpt-4o' (404)" in result.stderr


def test_stdin_in_csv_out_on_stdout(tmp_path: Path) -> None:
    text = contacts(tmp_path).read_text()
    result = runner.invoke(app, ["enrich", "-", "--simulate", "--quiet"], input=text)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["intel_status"] for r in rows] == ["enriched"] * 3 + ["skipped"]


def test_ctrl_c_exits_130_with_the_batch_interrupted_and_the_output_written(
    tmp_path: Path, intel_home: Path
) -> None:
    """A real SIGINT to a real process, while every request hangs in the simulator."""
    inputs = contacts(tmp_path, n=6)
    env = {**os.environ, "INTEL_SIMULATE_TTFT": "30"}
    child = subprocess.Popen(
        # 5 at once: the sixth contact is never sent (the adaptive pacer would send all 6)
        [sys.executable, "-m", "intel_cli", "enrich", str(inputs), "--simulate",
         "--concurrency", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert child.stderr is not None
        first = child.stderr.readline()  # the first progress line: the batch exists
        assert first.startswith("enrich: 0/6"), first
        child.send_signal(signal.SIGINT)
        began = time.monotonic()
        stdout, stderr = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert time.monotonic() - began < 5  # in-flight requests get 2 s, then are cancelled
    assert child.returncode == ExitCode.INTERRUPTED, stderr
    assert "Error: interrupted: progress saved in batch b_" in stderr
    assert "Traceback" not in stderr
    batch_id = stdout.split("Batch ", 1)[1].split(":", 1)[0]
    with store(intel_home) as s:
        batch = s.get_batch(batch_id)
        results = s.batch_results(batch_id)
    assert batch is not None and batch["status"] == "interrupted"
    assert len(results) == 7  # six contacts and the skipped row, none lost
    rows = list(csv.DictReader(io.StringIO((tmp_path / "list.enriched.csv").read_text())))
    assert [r["intel_status"] for r in rows] == ["failed"] * 6 + ["skipped"]
    assert rows[0]["intel_error"] == "unfinished: run interrupted"
    assert rows[5]["intel_error"] == "not sent: run interrupted"
