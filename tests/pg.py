"""PostgreSQL test helpers: every test gets its own schema in the shared test database.

Other helpers and CI run tests against the same server at the same time, so a test never
touches an object it did not create: it works in a fresh schema `intel_test_<random>`,
selected with `search_path` on the connection (libpq's `options` in the URL), and drops it
afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from intel_cli.stores.postgres import PostgresStore


def with_search_path(url: str, schema: str) -> str:
    """`url` with the session's search_path set to `schema`. Commits do not wait for the WAL
    flush (synchronous_commit=off): a crash of the test server may lose the last commits of a
    throwaway schema, and the suite runs several times faster."""
    parts = urlsplit(url)
    option = "options=" + quote(f"-csearch_path={schema} -csynchronous_commit=off", safe="")
    query = f"{parts.query}&{option}" if parts.query else option
    return urlunsplit(parts._replace(query=query))


def create_schema(url: str) -> str:
    schema = f"intel_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    return schema


def drop_schema(url: str, schema: str) -> None:
    assert schema.startswith("intel_test_")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def blank_schema_url(url: str) -> Iterator[str]:
    """A URL whose search_path is a new, empty schema, dropped on exit."""
    schema = create_schema(url)
    try:
        yield with_search_path(url, schema)
    finally:
        drop_schema(url, schema)


class TempSchemaStore(PostgresStore):
    """A PostgresStore in its own schema, dropped when the store is closed."""

    def __init__(self, admin_url: str, schema: str) -> None:
        self.admin_url = admin_url
        self.schema = schema
        self.schema_url = with_search_path(admin_url, schema)
        super().__init__(self.schema_url)

    def close(self) -> None:
        super().close()
        drop_schema(self.admin_url, self.schema)


def fresh_postgres_store(url: str, *, migrate: bool = True) -> TempSchemaStore:
    """A migrated (or, with migrate=False, blank) store in a fresh schema of `url`'s database."""
    schema = create_schema(url)
    try:
        store = TempSchemaStore(url, schema)
    except BaseException:
        drop_schema(url, schema)
        raise
    if migrate:
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
    return store
