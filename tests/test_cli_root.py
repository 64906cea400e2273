"""The root app: global options anywhere, --version, help, and one-line errors (SPEC 2, 2.6)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from intel_cli import __version__
from intel_cli.cli import IntelGroup, app, hoist_global_options
from intel_cli.cli.common import state
from intel_cli.errors import ConfigError, ExitCode

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"intel {__version__}"


def test_no_command_prints_help_and_exits_0() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code == 0
    assert "Usage" in result.stdout
    for command in ("enrich", "metrics", "batches", "limiter", "migrate", "simulate"):
        assert command in result.stdout


def test_unknown_option_is_one_line_exit_2() -> None:
    result = runner.invoke(app, ["--no-such-option"])
    assert result.exit_code == ExitCode.USAGE
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: No such option: --no-such-option.")
    assert "Traceback" not in result.stderr


def test_unknown_command_exit_2() -> None:
    result = runner.invoke(app, ["enrichh"])
    assert result.exit_code == ExitCode.USAGE
    assert "No such command" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enrich", "a.csv", "--debug"], ["--debug", "enrich", "a.csv"]),
        (["enrich", "--store", "x.db", "a.csv"], ["--store", "x.db", "enrich", "a.csv"]),
        (["metrics", "--store=x.db", "--json"], ["--store=x.db", "metrics", "--json"]),
        (["--debug", "metrics"], ["--debug", "metrics"]),
        (["enrich", "--", "--debug"], ["enrich", "--", "--debug"]),
    ],
)
def test_global_options_are_accepted_after_the_command(
    args: list[str], expected: list[str]
) -> None:
    assert hoist_global_options(args) == expected


def _probe_app(exc: BaseException | None) -> typer.Typer:
    """A tiny app with the real root group, to drive error mapping without a real command."""
    probe = typer.Typer(cls=IntelGroup)

    @probe.callback()
    def _root(
        ctx: typer.Context,
        debug: bool = typer.Option(False, "--debug"),
        store: str | None = typer.Option(None, "--store"),
    ) -> None:
        from intel_cli.cli.common import AppState

        ctx.obj = AppState(store=store, debug=debug)

    @probe.command()
    def boom(ctx: typer.Context) -> None:
        assert state(ctx) is not None
        if exc is not None:
            raise exc
        typer.echo(f"store={state(ctx).store} debug={state(ctx).debug}")

    @probe.command()
    def other() -> None:
        pass

    return probe


def test_store_and_debug_after_the_command_reach_the_root() -> None:
    result = runner.invoke(_probe_app(None), ["boom", "--store", "s.db", "--debug"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "store=s.db debug=True"


def test_domain_error_is_one_line_with_its_exit_code() -> None:
    result = runner.invoke(_probe_app(ConfigError("No API key: set ANTHROPIC_API_KEY")), ["boom"])
    assert result.exit_code == ExitCode.CONFIG
    assert result.stderr == "Error: No API key: set ANTHROPIC_API_KEY\n"


def test_bug_is_exit_1_with_a_hint_and_no_traceback() -> None:
    result = runner.invoke(_probe_app(ZeroDivisionError("division by zero")), ["boom"])
    assert result.exit_code == ExitCode.INTERNAL
    assert "Traceback" not in result.stderr
    assert "rerun with --debug" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_debug_shows_the_traceback_with_secrets_redacted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-SECRETSECRETSECRET")
    exc = RuntimeError("key was sk-ant-api03-SECRETSECRETSECRET")
    result = runner.invoke(_probe_app(exc), ["boom", "--debug"])
    assert result.exit_code == ExitCode.INTERNAL
    assert "Traceback" in result.stderr
    assert "SECRETSECRET" not in result.stderr


def test_env_debug_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_DEBUG", "1")
    result = runner.invoke(_probe_app(RuntimeError("bug")), ["boom"])
    assert "Traceback" in result.stderr


def test_keyboard_interrupt_is_130() -> None:
    result = runner.invoke(_probe_app(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == ExitCode.INTERRUPTED


def test_python_dash_m_and_help_do_not_import_heavy_packages() -> None:
    code = (
        "import sys\n"
        "from intel_cli.cli import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help'])\n"
        "assert r.exit_code == 0, r.stderr\n"
        "heavy = ('anthropic', 'supabase', 'psycopg', 'genai_prices')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
    version = subprocess.run(
        [sys.executable, "-m", "intel_cli", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.strip() == f"intel {__version__}"


def test_group_without_subcommand_prints_its_help() -> None:
    probe = typer.Typer(cls=IntelGroup)
    sub = typer.Typer(no_args_is_help=True)

    @sub.command()
    def one() -> None:
        pass

    @sub.command()
    def two() -> None:
        pass

    probe.add_typer(sub, name="grp")

    @probe.command()
    def other() -> None:
        pass

    result = runner.invoke(probe, ["grp"])
    assert result.exit_code == 0, result.stderr
    assert "one" in result.stdout and "two" in result.stdout
    assert result.stderr == ""
