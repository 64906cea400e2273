"""Turning exact sums into the published figures of SPEC 2.3, identically on every store.

The database sums integers (tokens, counts, and money as integer units of
1e-10 USD); this module does the only rounding, half away from zero with
Decimal, so that SQLite and PostgreSQL print the same digits for the same data.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

MONEY_PLACES = 10  # costs are stored quantised to 1e-10 USD
_MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)


def quantise_money(amount: Decimal) -> Decimal:
    """A cost as it is stored: exactly 10 decimal places."""
    return Decimal(amount).quantize(_MONEY_QUANTUM, rounding=ROUND_HALF_UP)


def money_from_units(units: int | None) -> Decimal:
    """An integer count of 1e-10 USD (what the SQL sums return) as Decimal USD."""
    return Decimal(int(units or 0)).scaleb(-MONEY_PLACES).quantize(_MONEY_QUANTUM)


def half_up(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def rate(enriched: int | None, total: int | None) -> float:
    """100 * enriched / total rounded half-up to 2 places; 0 when there is nothing to count."""
    if not total:
        return 0.0
    return float(half_up(Decimal(100 * int(enriched or 0)) / Decimal(int(total)), 2))


def summary(
    *,
    batches: int | None,
    contacts: int | None,
    enriched: int | None,
    failed: int | None,
    cost_units: int | None,
    time_weighted_ms: int | None,
) -> dict[str, Any]:
    """SPEC 2.3 `summary` from the window's sums (time_weighted_ms = Σ avg_time_ms · total)."""
    contacts = int(contacts or 0)
    avg_time = 0
    if contacts:
        avg_time = int(half_up(Decimal(int(time_weighted_ms or 0)) / Decimal(contacts), 0))
    return {
        "totalBatches": int(batches or 0),
        "totalContacts": contacts,
        "totalEnriched": int(enriched or 0),
        "totalFailed": int(failed or 0),
        "totalCost": float(half_up(money_from_units(cost_units), 4)),
        "avgSuccessRate": rate(enriched, contacts),
        "avgTimePerContact": avg_time,
    }


def tokens(
    *, input: int | None, output: int | None, cache_read: int | None, cache_write: int | None
) -> dict[str, int]:
    """SPEC 2.3 `tokens`: `total` is input + output, as in the contract's example."""
    totals = [int(v or 0) for v in (input, output, cache_read, cache_write)]
    return {
        "totalInput": totals[0],
        "totalOutput": totals[1],
        "total": totals[0] + totals[1],
        "cacheRead": totals[2],
        "cacheWrite": totals[3],
    }


def money_figure(units: int | None, places: int = 6) -> float:
    """A per-batch / per-day / per-model cost for display and JSON."""
    return float(half_up(money_from_units(units), places))


def recent_batch(row: dict[str, Any], created_at: str) -> dict[str, Any]:
    """One `recentBatches` entry from an intel_logs row carrying `cost_units` (integer)."""
    return {
        "batch_id": row["batch_id"],
        "created_at": created_at,
        "total": int(row["total"]),
        "enriched": int(row["enriched"]),
        "failed": int(row["failed"]),
        "cost": money_figure(row["cost_units"], 6),
        "success_rate": rate(row["enriched"], row["total"]),
        "retried": int(row["retried"]),
        "timed_out": int(row["timed_out"]),
        "cached": int(row["cached"]),
        "skipped": int(row["skipped"]),
        "mode": row["mode"],
        "status": row["status"],
        "model_used": row["model_used"],
    }
