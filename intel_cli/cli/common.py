"""What every command shares: the global options and opening the store."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from intel_cli.stores.base import Store


@dataclass
class AppState:
    store: str | None = None
    debug: bool = False


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    obj = root.obj
    return obj if isinstance(obj, AppState) else AppState()


def open_store(ctx: typer.Context, *, migrate: bool = True) -> Store:
    """The store named by --store / INTEL_STORE (default: intel.db under INTEL_HOME).

    SQLite stores are migrated on first use when `migrate`; PostgreSQL and
    Supabase stores raise StoreUnavailable (exit 4) when not migrated.
    """
    from intel_cli.stores import open_store as _open

    return _open(state(ctx).store, auto_migrate=migrate)
