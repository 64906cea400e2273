"""Keeping secrets out of everything we print or store (SPEC 5).

API keys, service-role keys and database passwords are collected from the
environment and from store URLs, and `redact()` replaces them wherever they
appear: error lines, `--debug` tracebacks, stored metadata.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlsplit, urlunsplit

SECRET_ENV_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_KEY",
    "PGPASSWORD",
)
URL_ENV_VARS = ("INTEL_STORE", "SUPABASE_DB_URL", "DATABASE_URL", "INTEL_TEST_POSTGRES_URL")

# user:password@ in any URL-like text
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@")
# key=value pairs in libpq connection strings
_KV_PASSWORD = re.compile(r"(?P<k>\bpassword\s*=\s*)(?P<v>'[^']*'|\S+)", re.IGNORECASE)
# things shaped like Anthropic keys or JWTs, even when we were never told about them
_KEY_SHAPES = re.compile(
    r"sk-ant-[A-Za-z0-9_\-]{6,}"
    r"|eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]+"
)

_extra: set[str] = set()


def register(secret: str | None) -> None:
    """Remember a secret learned at run time (a password from a --store URL, say)."""
    if secret and len(secret) >= 4:
        _extra.add(secret)


def _known() -> list[str]:
    values = set(_extra)
    for name in SECRET_ENV_VARS:
        value = os.environ.get(name)
        # stripped too: a key pasted with a newline or a space is sent (and echoed) without it
        for candidate in (value, value.strip() if value else None):
            if candidate and len(candidate) >= 4:
                values.add(candidate)
    for name in URL_ENV_VARS:
        password = url_password(os.environ.get(name))
        if password:
            values.update(p for p in (password, unquote(password)) if len(p) >= 4)
    # longest first, so a secret that contains another is replaced whole
    return sorted(values, key=len, reverse=True)


def url_password(url: str | None) -> str | None:
    if not url or "://" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def redact(text: str) -> str:
    """Return `text` with every known secret replaced by ***."""
    for secret in _known():
        text = text.replace(secret, "***")
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _KV_PASSWORD.sub(lambda m: f"{m['k']}***", text)
    return _KEY_SHAPES.sub("***", text)


def redact_url(url: str) -> str:
    """`postgresql://user:secret@host/db` -> `postgresql://user:***@host/db`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if parts.password is None:
        return redact(url)
    register(parts.password)
    register(unquote(parts.password))  # the password libpq actually sends
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
