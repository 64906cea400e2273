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
