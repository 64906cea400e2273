"""Fast start (issue 6): the commands cron runs all day never import the API SDK, the
PostgreSQL/Supabase drivers or the price tables unless their path needs them. Each command
runs in a fresh interpreter on a SQLite store, which then reports the modules it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("anthropic", "httpx2", "httpx", "supabase", "postgrest", "psycopg", "genai_prices")

# runs the CLI as `intel ARGS`, then writes the top-level modules it loaded as JSON to the
# file named by PROBE_REPORT (stdout belongs to the command)
PROBE = """
import json, os, sys
sys.argv = ["intel", *sys.argv[1:]]
from intel_cli.cli import main
code = 0
try:
    main()
except SystemExit as exc:
    code = exc.code or 0
loaded = sorted({name.split(".")[0] for name in sys.modules})
with open(os.environ["PROBE_REPORT"], "w") as out:
    json.dump({"code": code, "modules": loaded}, out)
"""


def run_probe(args: list[str], tmp_path: Path) -> tuple[int, set[str], str]:
    """`intel ARGS` in a fresh interpreter: (exit code, top-level modules loaded, stderr)."""
    report = tmp_path / "modules.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PROBE_REPORT": str(report)},
    )
    data = json.loads(report.read_text())
    return int(data["code"]), set(data["modules"]), proc.stderr


@pytest.fixture
def migrated(tmp_path: Path) -> None:
    code, _, stderr = run_probe(["migrate"], tmp_path)
    assert code == 0, stderr


@pytest.mark.parametrize(
    "args",
    [["--help"], ["metrics"], ["metrics", "--json"], ["limiter", "status"],
     ["migrate", "--status"]],
    ids=" ".join,
)
def test_cron_commands_never_import_the_sdk_drivers_or_price_tables(
    args: list[str], tmp_path: Path, migrated: None
) -> None:
    code, modules, stderr = run_probe(args, tmp_path)
    assert code == 0, stderr
    assert "intel_cli" in modules and "typer" in modules  # the probe saw the real run
    assert not modules & set(HEAVY), f"intel {' '.join(args)} imported {modules & set(HEAVY)}"


def test_the_probe_sees_a_heavy_import_when_there_is_one(tmp_path: Path) -> None:
    # `enrich --simulate` needs the SDK: the probe must notice it (the test above can fail)
    inputs = tmp_path / "c.csv"
    inputs.write_text("Name,Email,Station\nAda,ada@radio.example,Radio X\n")
    code, modules, stderr = run_probe(
        ["enrich", str(inputs), "--simulate", "--quiet", "-o", str(tmp_path / "o.csv")],
        tmp_path,
    )
    assert code == 0, stderr
    assert "anthropic" in modules and "httpx2" in modules
