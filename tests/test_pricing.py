"""Pricing against hand-computed figures from Anthropic's published per-MTok prices.

claude-sonnet-4-5: input $3, output $15, cache read $0.30, cache write (5 min) $3.75;
over 200k input tokens (cache included) $6 / $22.50 / $0.60.
claude-haiku-4-5: input $1, output $5, cache read $0.10, cache write $1.25.
Message Batches: half of every one of those.
"""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest

from intel_cli.pricing import Price, is_priced, price, worst_case_cost
from intel_cli.usage import Usage

CACHED = Usage(input=1000, output=500, cache_read=200, cache_write=300)


@pytest.mark.parametrize(
    ("model", "usage", "expected"),
    [
        # 1000*3 + 500*15 = 10_500 micro-dollars
        ("claude-sonnet-4-5", Usage(input=1000, output=500), "0.0105"),
        # 1000*3 + 200*0.30 + 300*3.75 + 500*15 = 3000 + 60 + 1125 + 7500
        ("claude-sonnet-4-5", CACHED, "0.011685"),
        # 1000*1 + 200*0.10 + 300*1.25 + 500*5 = 1000 + 20 + 375 + 2500
        ("claude-haiku-4-5", CACHED, "0.003895"),
        # the dated id is the same model
        ("claude-sonnet-4-5-20250929", Usage(input=1000, output=500), "0.0105"),
        # cache reads only: 10_000*0.30 + 100*15
        ("claude-sonnet-4-5", Usage(cache_read=10_000, output=100), "0.0045"),
    ],
)
def test_price_matches_hand_computed(model: str, usage: Usage, expected: str) -> None:
    assert price(model, usage) == Price(cost=Decimal(expected), priced=True)


def test_cache_tokens_count_toward_the_long_context_tier() -> None:
    # 150k uncached + 100k cache read = 250k input > 200k: every token at the premium rate.
    # If cache reads were left out of genai-prices' input_tokens this would be standard-rate.
    usage = Usage(input=150_000, cache_read=100_000, output=1000)
    # 150_000*6 + 100_000*0.60 + 1000*22.50 = 900_000 + 60_000 + 22_500 micro-dollars
    assert price("claude-sonnet-4-5", usage).cost == Decimal("0.9825")
    # below the tier: 150_000*3 + 1000*15
    assert price("claude-sonnet-4-5", Usage(input=150_000, output=1000)).cost == Decimal("0.465")


@pytest.mark.parametrize(
    ("model", "expected"),
    [("claude-sonnet-4-5", "0.0058425"), ("claude-haiku-4-5", "0.0019475")],
)
def test_batch_is_half_price(model: str, expected: str) -> None:
    assert price(model, CACHED, batch=True) == Price(cost=Decimal(expected), priced=True)
    assert price(model, CACHED, batch=True).cost * 2 == price(model, CACHED).cost


def test_batch_discount_applies_to_a_model_without_a_batch_price_in_the_snapshot() -> None:
    # claude-opus-4-1 ($15 / $75) has no batch variant in the snapshot: still 50% off.
    usage = Usage(input=1000, output=500)  # 1000*15 + 500*75 = 52_500 micro-dollars
    assert price("claude-opus-4-1", usage).cost == Decimal("0.0525")
    assert price("claude-opus-4-1", usage, batch=True).cost == Decimal("0.02625")


@pytest.mark.parametrize("model", ["claude-imaginary-9", "gpt-4o", ""])
def test_unknown_model_is_free_and_flagged(model: str) -> None:
    result = price(model, CACHED)
    assert result == Price(cost=Decimal(0), priced=False)
    assert price(model, CACHED, batch=True).priced is False
    assert not is_priced(model)


def test_costs_are_decimals_quantised_to_ten_places() -> None:
    cost = price("claude-haiku-4-5", Usage(input=1, output=1)).cost  # 1*1 + 1*5 micro-dollars
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.000006")
    assert cost.as_tuple().exponent == -10
    assert price("claude-haiku-4-5", Usage()).cost == 0


def test_worst_case_cost_is_all_input_uncached_plus_max_tokens() -> None:
    # 2000*1 + 1024*5 = 7120 micro-dollars
    assert worst_case_cost("claude-haiku-4-5", 2000, 1024) == Decimal("0.00712")
    assert worst_case_cost("claude-haiku-4-5", 2000, 1024, batch=True) == Decimal("0.00356")
    assert worst_case_cost("claude-nope", 2000, 1024) == 0


def test_importing_pricing_does_not_import_genai_prices() -> None:
    code = "import sys, intel_cli.pricing; print('genai_prices' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
