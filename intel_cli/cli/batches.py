"""`intel batches show BATCH_ID`: one batch's log row and its per-contact results."""

from __future__ import annotations

from typing import Annotated

import typer

from intel_cli.cli.common import open_store
from intel_cli.errors import UsageError

batches_app = typer.Typer(help="Drill into the batches recorded in the store.")


@batches_app.callback(invoke_without_command=True)
def batches_group(ctx: typer.Context) -> None:
    # help, exit 0, like `intel` alone (no_args_is_help would make it a usage error, exit 2)
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


@batches_app.command("show")
def show_command(
    ctx: typer.Context,
    batch_id: Annotated[
        str, typer.Argument(metavar="BATCH_ID", help="e.g. b_20251112T103000_ab12cd")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the batch and its results as JSON.")
    ] = False,
) -> None:
    """A batch's status, counters, cost and tokens, and one row per contact."""
    from intel_cli.render import reports

    with open_store(ctx) as store:
        batch = store.get_batch(batch_id)
        if batch is None:
            raise UsageError(
                f"no batch {batch_id!r} in the store {store.display_name}: "
                "`intel metrics --since 7d` lists recent batch ids"
            )
        results = store.batch_results(batch_id)
        store_name = store.display_name
    if as_json:
        reports.print_json({"success": True, "batch": batch, "results": results})
    else:
        reports.render_batch(batch, results, store_name=store_name)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.add_typer(batches_app, name="batches")
