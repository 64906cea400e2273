"""`intel migrate`: apply, list or print the store backend's pending migrations (SPEC 2.5)."""

from __future__ import annotations

from typing import Annotated

import typer

from intel_cli.cli.common import open_store
from intel_cli.errors import UsageError


def migrate_command(
    ctx: typer.Context,
    status: Annotated[
        bool, typer.Option("--status", help="List applied and pending migrations; apply nothing.")
    ] = False,
    print_sql: Annotated[
        bool,
        typer.Option(
            "--print-sql",
            help="Print the SQL of pending migrations (e.g. for the Supabase SQL editor); "
            "apply nothing.",
        ),
    ] = False,
) -> None:
    """Apply the pending migrations of the store, each in a transaction."""
    from intel_cli.render import reports

    if status and print_sql:
        raise UsageError("--status and --print-sql do not go together: use one of them")
    # never auto-migrate here: --status and --print-sql must see the store as it is
    with open_store(ctx, migrate=False) as store:
        store_name = store.display_name
        if status or print_sql:
            applied, pending = store.migrations()
            if status:
                reports.render_migrate_status(applied, pending, store_name=store_name)
            else:
                reports.render_migrate_sql(pending, applied=len(applied))
            return
        applied_now = store.migrate()
        applied, _pending = store.migrations()
    reports.render_migrate_applied(applied_now, total=len(applied), store_name=store_name)


def register(app: typer.Typer) -> None:
    """Add this module's command(s) to the root app."""
    app.command("migrate")(migrate_command)
