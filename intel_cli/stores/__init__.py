"""Choosing a store from `--store` (SPEC 2.1) and opening it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from intel_cli.config import default_store_path
from intel_cli.stores.base import Store

if TYPE_CHECKING:
    from intel_cli.stores.postgres import PostgresStore
    from intel_cli.stores.supabase import SupabaseStore


def open_store(url: str | None, *, auto_migrate: bool = True) -> Store:
    """Open the store `url` names: None -> the default SQLite file; a path or sqlite:PATH;
    postgresql:// or postgres://; `supabase`."""
    if url is None or url == "":
        return _sqlite(default_store_path(), auto_migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from intel_cli.stores.postgres import PostgresStore

        return _checked(PostgresStore(url), auto_migrate)
    if url == "supabase":
        from intel_cli.stores.supabase import SupabaseStore

        return _checked(SupabaseStore.from_env(), auto_migrate)
    if url.startswith("sqlite:"):
        url = url.removeprefix("sqlite:").removeprefix("//")
    return _sqlite(Path(url).expanduser(), auto_migrate)


def _checked(store: PostgresStore | SupabaseStore, auto_migrate: bool) -> Store:
    """A shared database is never migrated behind its owner's back (SPEC 2.1): where SQLite
    would migrate itself, stop with exit 4 pointing at `intel migrate`. auto_migrate=False is
    `intel migrate` itself, which must open a store that is not migrated yet."""
    if auto_migrate:
        try:
            store.require_migrated()
        except BaseException:
            store.close()
            raise
    return store


def _sqlite(path: Path, auto_migrate: bool) -> Store:
    from intel_cli.stores.sqlite import SQLiteStore

    store = SQLiteStore(path)
    if auto_migrate:
        store.migrate()
    return store
