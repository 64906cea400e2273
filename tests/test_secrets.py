"""Secrets never printed (SPEC 5): redaction of keys, URL passwords and key-shaped strings."""

from __future__ import annotations

import pytest

from intel_cli.secrets import redact, redact_url, register


def test_env_keys_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "plain-looking-key-123")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", "service-role-xyz")
    text = redact("a plain-looking-key-123 b service-role-xyz c")
    assert "plain-looking-key-123" not in text
    assert "service-role-xyz" not in text
    assert text == "a *** b *** c"


def test_url_passwords_are_redacted() -> None:
    assert redact_url("postgresql://alice:s3cret@db.example/intel") == (
        "postgresql://alice:***@db.example/intel"
    )
    assert redact("connect to postgres://bob:hunter2@h:5432/x failed") == (
        "connect to postgres://bob:***@h:5432/x failed"
    )
    assert "pw1234" not in redact("host=h password=pw1234 dbname=x")


def test_registered_secret_is_redacted_anywhere() -> None:
    register("run-time-secret-value")
    assert redact("oops run-time-secret-value") == "oops ***"


def test_key_shapes_are_redacted_even_when_unknown() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.abcdefghijklmnop"
    assert redact(f"key {jwt}") == "key ***"
    assert redact("sk-ant-api03-abcdefgh") == "***"


def test_url_without_password_is_unchanged() -> None:
    assert redact_url("postgresql://postgres@127.0.0.1:5432/test") == (
        "postgresql://postgres@127.0.0.1:5432/test"
    )
