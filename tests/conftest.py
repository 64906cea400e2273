"""Shared fixtures: every test gets its own INTEL_HOME and a clean environment."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_WORLD = FIXTURES / "real-world"

_ENV_VARS = (
    "INTEL_HOME",
    "INTEL_STORE",
    "INTEL_DEBUG",
    "INTEL_MODEL",
    "INTEL_DAILY_BUDGET",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "SUPABASE_URL",
    "NEXT_PUBLIC_SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_DB_URL",
)


@pytest.fixture(autouse=True)
def intel_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """All state under a temp dir; no real keys or stores leak in from the environment."""
    for name in _ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "intel-home"
    home.mkdir()
    monkeypatch.setenv("INTEL_HOME", str(home))
    return home


# --- one store suite for every backend (STYLE 6) -------------------------------------------
# `store` is parametrised over the backends. PostgreSQL runs when INTEL_TEST_POSTGRES_URL is
# set (.ci/run sets it); without it the postgres cases skip, except under CI where that is a
# failure.

import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402

from intel_cli.stores.base import Store  # noqa: E402


def postgres_url() -> str | None:
    url = os.environ.get("INTEL_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set INTEL_TEST_POSTGRES_URL")
        pytest.skip("no PostgreSQL: set INTEL_TEST_POSTGRES_URL to run these")
    return url


def make_store(backend: str, tmp_path: Path) -> Store:
    if backend == "sqlite":
        from intel_cli.stores.sqlite import SQLiteStore

        sqlite_store = SQLiteStore(tmp_path / "store.db")
        sqlite_store.migrate()
        return sqlite_store
    if backend == "postgres":
        url = postgres_url()
        assert url is not None
        from tests.pg import fresh_postgres_store

        return fresh_postgres_store(url)
    raise ValueError(backend)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s = make_store(request.param, tmp_path)
    try:
        yield s
    finally:
        s.close()
