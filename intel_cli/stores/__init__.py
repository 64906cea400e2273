"""Choosing a store from `--store` (SPEC 2.1) and opening it."""

from __future__ import annotations

from pathlib import Path

from intel_cli.config import default_store_path
from intel_cli.stores.base import Store


def open_store(url: str | None, *, auto_migrate: bool = True) -> Store:
    """Open the store `url` names: None -> the default SQLite file; a path or sqlite:PATH;
    postgresql:// or postgres://; `supabase`."""
    if url is None or url == "":
        return _sqlite(default_store_path(), auto_migrate)
    if url.startswith(("postgresql://", "postgres://")):
        from intel_cli.stores.postgres import PostgresStore

        return PostgresStore(url)
    if url == "supabase":
        from intel_cli.stores.supabase import SupabaseStore

        return SupabaseStore.from_env()
    if url.startswith("sqlite:"):
        url = url.removeprefix("sqlite:").removeprefix("//")
    return _sqlite(Path(url).expanduser(), auto_migrate)


def _sqlite(path: Path, auto_migrate: bool) -> Store:
    from intel_cli.stores.sqlite import SQLiteStore

    store = SQLiteStore(path)
    if auto_migrate:
        store.migrate()
    return store
