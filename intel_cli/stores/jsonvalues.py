"""JSON columns as every backend stores them: every string redacted (SPEC 5), Decimals as
strings and datetimes as UTC text, so the same value reads back the same from SQLite, from
PostgreSQL's jsonb and through Supabase."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

from intel_cli.secrets import redact
from intel_cli.timefmt import to_text


def redacted(value: Any) -> Any:
    """`value` made JSON-ready for storage: strings redacted, Decimals and datetimes as text."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {str(k): redacted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redacted(v) for v in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return to_text(value)
    return value


def to_json(value: Any) -> str | None:
    """JSON text for a JSON/jsonb column (None stays NULL)."""
    if value is None:
        return None
    return json.dumps(redacted(value), ensure_ascii=False, default=str)
