"""Usage -> USD via genai-prices (SPEC 3.2).

Prices come from the genai-prices snapshot bundled with the installed package; nothing is
fetched or updated at run time. An unknown model is priced 0 and flagged (`priced=False`),
never a crash: the caller records `metadata.unpriced` and warns.

genai-prices counts cache reads and writes inside `input_tokens`, while Anthropic's
`usage.input_tokens` (our `Usage.input`) excludes them. Converting here, in one place, keeps
every caller on Anthropic's meaning.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from intel_cli.usage import Usage

PROVIDER = "anthropic"
# Stored costs keep 10 places: exact for per-token prices in $/MTok down to $0.0001/MTok.
_QUANTUM = Decimal("1E-10")
# The Message Batches API bills every token at half the standard rate.
BATCH_DISCOUNT = Decimal("0.5")
_BATCH_CONTEXT = {"processing": "batch"}


@dataclass(frozen=True)
class Price:
    cost: Decimal
    priced: bool


def _total(model: str, usage: Usage, *, batch: bool) -> Decimal:
    """The unrounded total; LookupError for a model the snapshot does not know."""
    # genai_prices takes ~0.3 s to import (its price tables): only pay for it when pricing.
    import genai_prices

    prices_usage = genai_prices.Usage(
        input_tokens=usage.input + usage.cache_read + usage.cache_write,
        cache_read_tokens=usage.cache_read,
        cache_write_tokens=usage.cache_write,
        output_tokens=usage.output,
    )
    standard = genai_prices.calc_price(prices_usage, model_ref=model, provider_id=PROVIDER)
    if not batch:
        return Decimal(standard.total_price)
    batched = genai_prices.calc_price(
        prices_usage, model_ref=model, provider_id=PROVIDER, price_context=_BATCH_CONTEXT
    )
    if batched.model_price == standard.model_price:
        # The snapshot has no batch variant for this model (older models): Anthropic's batch
        # discount is 50% of every token price, so apply it to the standard price.
        return Decimal(standard.total_price) * BATCH_DISCOUNT
    return Decimal(batched.total_price)


def price(model: str, usage: Usage, *, batch: bool = False) -> Price:
    """The USD cost of `usage` on `model`; `batch` applies the Message Batches discount."""
    try:
        total = _total(model, usage, batch=batch)
    except LookupError:
        return Price(cost=Decimal(0).quantize(_QUANTUM), priced=False)
    return Price(cost=total.quantize(_QUANTUM), priced=True)


def is_priced(model: str) -> bool:
    """Whether the snapshot knows `model` (so a run can warn before it starts)."""
    return price(model, Usage(input=1)).priced


def worst_case_cost(
    model: str, input_tokens: int, max_tokens: int, *, batch: bool = False
) -> Decimal:
    """The most one request can cost: all its input uncached, and `max_tokens` of output.

    Used by --max-cost to reserve budget before sending (SPEC 4.2). 0 for an unknown model.
    """
    return price(model, Usage(input=input_tokens, output=max_tokens), batch=batch).cost
