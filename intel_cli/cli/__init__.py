"""The `intel` command-line app: global options, command registration, and the one place
where errors become exit codes (SPEC 2.6).

Commands live one group per module and stay thin: parse options, call the
core, render.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer import _click as click
from typer.core import TyperGroup
from typer.exceptions import Abort

from intel_cli import __version__
from intel_cli.cli import batches, enrich, limiter, metrics, migrate, simulate
from intel_cli.cli.common import AppState
from intel_cli.errors import ExitCode, IntelError
from intel_cli.secrets import redact

# options that belong to `intel` itself but may be written after the command too
_GLOBAL_FLAGS = {"--debug"}
_GLOBAL_VALUED = {"--store"}


def hoist_global_options(args: list[str]) -> list[str]:
    """Move `--debug` and `--store X` found after the command name to the front,
    so `intel enrich f.csv --debug` means `intel --debug enrich f.csv`."""
    front: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            rest.extend(args[i:])
            break
        if arg in _GLOBAL_FLAGS:
            front.append(arg)
        elif arg in _GLOBAL_VALUED and i + 1 < len(args):
            front.extend(args[i : i + 2])
            i += 1
        elif any(arg.startswith(f"{name}=") for name in _GLOBAL_VALUED):
            front.append(arg)
        else:
            rest.append(arg)
        i += 1
    return front + rest


def _debug_requested(args: Sequence[str]) -> bool:
    if "--debug" in args:
        return True
    return os.environ.get("INTEL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}


def _error_line(message: str) -> None:
    sys.stderr.write(redact(f"Error: {message}").rstrip() + "\n")
    sys.stderr.flush()


def _print_traceback(exc: BaseException) -> None:
    text = "".join(traceback.format_exception(exc))
    sys.stderr.write(redact(text))


class IntelGroup(TyperGroup):
    """The root command: hoists global options and maps every failure to one line and
    one exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        debug = _debug_requested(argv)
        code: int = ExitCode.OK
        try:
            rv = super().main(
                argv, prog_name=prog_name or "intel", complete_var=complete_var,
                standalone_mode=False, **extra,
            )
            code = rv if isinstance(rv, int) else ExitCode.OK
        except IntelError as exc:
            if debug:
                _print_traceback(exc)
            _error_line(exc.message)
            code = exc.exit_code
        except click.exceptions.NoArgsIsHelpError as exc:
            # a group given no subcommand: its help, like `intel` alone
            if exc.ctx is not None:
                sys.stdout.write(exc.ctx.get_help() + "\n")
            code = ExitCode.OK
        except click.exceptions.UsageError as exc:
            message = exc.format_message().rstrip()
            if not message.endswith((".", "?", "!")):
                message += "."
            if exc.ctx is not None:
                message += f" Try '{exc.ctx.command_path} --help'."
            _error_line(message)
            code = ExitCode.USAGE
        except click.exceptions.ClickException as exc:
            _error_line(exc.format_message())
            code = exc.exit_code
        except Abort:
            _error_line("aborted.")
            code = ExitCode.INTERRUPTED
        except KeyboardInterrupt:
            _error_line("interrupted.")
            code = ExitCode.INTERRUPTED
        except Exception as exc:  # a bug: one line, the traceback only with --debug
            if debug:
                _print_traceback(exc)
            detail = str(exc).splitlines()[0] if str(exc) else ""
            _error_line(
                f"internal error: {type(exc).__name__}{': ' + detail if detail else ''}"
                " (rerun with --debug for the traceback)"
            )
            code = ExitCode.INTERNAL
        if standalone_mode:
            sys.exit(int(code))
        return int(code)


app = typer.Typer(
    cls=IntelGroup,
    name="intel",
    help="Enrich music-industry contact lists with Claude, and account for every token and cent.",
    add_completion=False,
    pretty_exceptions_enable=False,  # never print locals: they hold API keys
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"intel {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def root(
    ctx: typer.Context,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            envvar="INTEL_STORE",
            help="Store: a SQLite path or sqlite:PATH, postgresql://..., or supabase.",
            show_envvar=True,
        ),
    ] = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="INTEL_DEBUG", help="Show tracebacks on errors."),
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    ctx.obj = AppState(store=store, debug=debug)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


enrich.register(app)
metrics.register(app)
batches.register(app)
limiter.register(app)
migrate.register(app)
simulate.register(app)


def main() -> None:
    """Console-script entry point."""
    typer.main.get_command(app).main(prog_name="intel")
