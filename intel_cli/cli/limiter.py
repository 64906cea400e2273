"""`intel limiter status|reset`: the store's global Anthropic rate limiter (SPEC 2.4)."""

from __future__ import annotations

from typing import Annotated

import typer

from intel_cli import timeparse
from intel_cli.cli.common import open_store
from intel_cli.stores.base import LIMITER_NAME

limiter_app = typer.Typer(
    help="Show or clear the global rate limiter shared by every run using this store.",
)


@limiter_app.callback(invoke_without_command=True)
def limiter_group(ctx: typer.Context) -> None:
    # help, exit 0, like `intel` alone (no_args_is_help would make it a usage error, exit 2)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@limiter_app.command("status")
def status_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print the state as JSON.")] = False,
) -> None:
    """Whether the limiter is active, until when, why, and which batch set it."""
    from intel_cli.render import reports

    with open_store(ctx) as store:
        state = store.get_limiter(LIMITER_NAME)
        store_name = store.display_name
    now = timeparse.now()
    if as_json:
        reports.print_json(reports.limiter_json(state, now=now))
    else:
        reports.render_limiter_status(state, name=LIMITER_NAME, now=now, store_name=store_name)


@limiter_app.command("reset")
def reset_command(ctx: typer.Context) -> None:
    """Clear the limiter so runs may send again at once; says what it cleared."""
    from intel_cli.render import reports

    with open_store(ctx) as store:
        # reset unconditionally and report what the store says it cleared: checking first
        # would race with a run that sets the limiter in between
        cleared = store.reset_limiter(LIMITER_NAME)
    reports.render_limiter_reset(cleared, name=LIMITER_NAME, now=timeparse.now())


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.add_typer(limiter_app, name="limiter")
