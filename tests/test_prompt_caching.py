"""Prompt caching (issue 7 item 4): the client marks the fixed prefix, the simulator writes and
reads the cache as Anthropic does, and cache tokens are priced at their own rates."""

from __future__ import annotations

import asyncio
import json
import math
from decimal import Decimal
from typing import Any

import anthropic
import pytest

from intel_cli.anthropic_client import AnthropicClient, Attempt
from intel_cli.contacts import Contact
from intel_cli.pricing import price
from intel_cli.prompt import (
    SYSTEM_PROMPT,
    RunContext,
    estimate_prefix_tokens,
    min_cacheable_tokens,
)
from intel_cli.schema import json_schema
from intel_cli.simulator import (
    Simulator,
    SimulatorConfig,
    cache_prefix,
    count_input_tokens,
    tokens_for,
)
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "test-key"
CTX = RunContext(campaign="radio")


def contact(i: int) -> Contact:
    return Contact(
        row_index=i, values={}, email=f"dj{i:03d}@station{i:03d}.example", name=f"DJ {i}",
        company=f"Station {i} FM", role="Producer", key=f"dj{i:03d}@station{i:03d}.example",
    )


def params(client: AnthropicClient, i: int, model: str = MODEL) -> dict[str, Any]:
    return {"max_tokens": 1024, **client.request_params(contact(i), model=model, context=CTX)}


def test_minimum_cacheable_lengths() -> None:
    assert min_cacheable_tokens("claude-sonnet-4-5") == 1024
    assert min_cacheable_tokens("claude-sonnet-4-5-20250929") == 1024
    assert min_cacheable_tokens("claude-opus-4-1") == 1024
    assert min_cacheable_tokens("claude-haiku-4-5") == 4096
    assert min_cacheable_tokens("claude-opus-4-5-20251101") == 4096
    assert min_cacheable_tokens("claude-3-5-haiku-latest") == 2048


def test_the_fixed_prefix_reaches_sonnets_minimum_with_room_to_spare() -> None:
    schema = json.dumps(json_schema(), separators=(",", ":"))
    # the system prompt alone crosses 1,024 tokens, so the real tokenizer (which may count a
    # little differently from 4 characters a token) still caches it
    assert estimate_prefix_tokens(SYSTEM_PROMPT) > 1.3 * 1024
    assert estimate_prefix_tokens(SYSTEM_PROMPT, schema) < 4096  # Haiku 4.5 is not reached


def test_the_client_marks_the_system_prompt_only_where_it_is_cached() -> None:
    client = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9")
    sonnet = client.request_params(contact(1), model=MODEL, context=CTX)
    assert sonnet["system"] == [
        {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
    ]
    # the contact is after the breakpoint: it is never part of the cached prefix
    assert "dj001" in json.dumps(sonnet["messages"]) and "dj001" not in json.dumps(
        sonnet["system"]
    )
    haiku = client.request_params(contact(1), model="claude-haiku-4-5", context=CTX)
    assert haiku["system"] == SYSTEM_PROMPT
    off = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9", prompt_cache=False)
    assert off.request_params(contact(1), model=MODEL, context=CTX)["system"] == SYSTEM_PROMPT
    tool = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9", structured="tool")
    assert tool.request_params(contact(1), model=MODEL, context=CTX)["system"][0][
        "cache_control"
    ] == {"type": "ephemeral"}


def test_simulator_writes_then_reads_then_expires() -> None:
    now = [1000.0]
    config = SimulatorConfig.instant(cache_ttl_s=300.0)
    client = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9")
    sim = Simulator(config, clock=lambda: now[0])
    first, second, third = params(client, 1), params(client, 2), params(client, 3)
    prefix = cache_prefix(first)
    assert prefix is not None and prefix == cache_prefix(second)
    size = tokens_for(prefix)
    assert size == math.ceil(len(prefix) / 4) >= 1024

    def usage(body: dict[str, Any]) -> dict[str, Any]:
        answer = sim.messages(body, json.dumps(body))
        return dict(answer.message["usage"])

    one = usage(first)
    assert one["cache_creation_input_tokens"] == size and one["cache_read_input_tokens"] == 0
    assert one["input_tokens"] == count_input_tokens(first) - size > 0
    assert one["cache_creation"]["ephemeral_5m_input_tokens"] == size
    now[0] += 299.0
    two = usage(second)
    assert (two["cache_creation_input_tokens"], two["cache_read_input_tokens"]) == (0, size)
    assert two["input_tokens"] == count_input_tokens(second) - size
    now[0] += 299.0  # the read restarted the 5 minutes
    assert usage(third)["cache_read_input_tokens"] == size
    now[0] += 301.0  # expired
    assert usage(first)["cache_creation_input_tokens"] == size
    # another model has its own cache
    assert usage(params(client, 4, "claude-opus-4-1"))["cache_creation_input_tokens"] == size


def test_requests_in_flight_together_all_write_until_the_first_has_started() -> None:
    now = [0.0]
    sim = Simulator(SimulatorConfig(ttft_s=0.5, jitter=0.0), clock=lambda: now[0])
    client = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9")
    writes = [
        sim.messages(params(client, i), "")
        .message["usage"]["cache_creation_input_tokens"] for i in range(3)
    ]
    assert all(w > 0 for w in writes)
    now[0] += 0.5
    assert sim.messages(params(client, 9), "").message["usage"]["cache_read_input_tokens"] > 0


def test_a_prefix_under_the_minimum_or_unmarked_is_not_cached() -> None:
    sim = Simulator(SimulatorConfig.instant())
    client = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9")
    body = params(client, 1)
    # the same marked prefix on Haiku 4.5 is under its 4,096 minimum
    body["model"] = "claude-haiku-4-5"
    for _ in range(2):
        usage = sim.messages(body, "").message["usage"]
        assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
        assert usage["input_tokens"] == count_input_tokens(body)
    short = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}],
             "system": [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]}
    assert sim.messages(short, "").message["usage"]["cache_creation_input_tokens"] == 0
    unmarked = params(AnthropicClient(api_key=KEY, base_url="http://x", prompt_cache=False), 1)
    assert cache_prefix(unmarked) is None


def test_cache_reads_do_not_count_against_the_input_tokens_limit() -> None:
    client = AnthropicClient(api_key=KEY, base_url="http://127.0.0.1:9")
    body = params(client, 1)
    total = count_input_tokens(body)
    # room for one full request and then only the uncached remainder of a second
    prefix = cache_prefix(body)
    assert prefix is not None
    sim = Simulator(SimulatorConfig.instant(itpm=total + (total - tokens_for(prefix)) + 50))
    sim.messages(body, "")
    sim.messages(params(client, 2), "")  # would be a 429 if the cached read counted


def test_cache_tokens_are_priced_at_their_own_rates_through_the_sdk() -> None:
    with Simulator(SimulatorConfig.instant()) as sim:

        async def go() -> list[Attempt]:
            async with AnthropicClient(api_key=KEY, base_url=sim.base_url) as c:
                return [await c.attempt(contact(i), model=MODEL, context=CTX) for i in range(2)]

        first, second = asyncio.run(go())
        billed = sim.billed
    assert first.usage.cache_write > 0 and first.usage.cache_read == 0
    assert second.usage.cache_read == first.usage.cache_write and second.usage.cache_write == 0
    assert [Usage.from_api(b) for b in billed] == [first.usage, second.usage]
    assert first.raw_usage is not None and first.raw_usage["cache_creation_input_tokens"] > 0
    # Sonnet 4.5 per million tokens: input $3, cache write $3.75, cache read $0.30, output $15
    for attempt in (first, second):
        u = attempt.usage
        expected = (Decimal(u.input) * 3 + Decimal(u.cache_write) * Decimal("3.75")
                    + Decimal(u.cache_read) * Decimal("0.3") + Decimal(u.output) * 15)
        assert attempt.cost == (expected / 1_000_000).quantize(Decimal("1E-10"))
    assert second.cost < first.cost
    uncached = price(MODEL, Usage(input=second.usage.input + second.usage.cache_read,
                                  output=second.usage.output)).cost
    assert second.cost < Decimal("0.75") * uncached  # the read saves over a quarter


def test_count_tokens_counts_the_whole_input_including_the_cached_prefix() -> None:
    with Simulator(SimulatorConfig.instant()) as sim:
        client = AnthropicClient(api_key=KEY, base_url=sim.base_url)
        body = params(client, 1)
        with anthropic.Anthropic(api_key=KEY, base_url=sim.base_url, max_retries=0) as sdk:
            sdk.messages.create(**body)
            counted = sdk.messages.count_tokens(
                **{k: v for k, v in body.items() if k != "max_tokens"}
            )
            second = sdk.messages.create(**body)
        assert second.usage.cache_read_input_tokens
        assert counted.input_tokens == (
            second.usage.input_tokens + second.usage.cache_read_input_tokens
        )


@pytest.mark.parametrize("structured", ["output_config", "tool"])
def test_pipeline_pays_less_with_the_cache(structured: str) -> None:
    """Ten contacts one after another: the cached run costs well under the uncached one."""
    costs: dict[bool, Decimal] = {}
    for cache in (False, True):
        with Simulator(SimulatorConfig.instant()) as sim:

            async def go(url: str, cache: bool = cache) -> Decimal:
                async with AnthropicClient(
                    api_key=KEY, base_url=url, prompt_cache=cache, structured=structured
                ) as c:
                    total = Decimal(0)
                    for i in range(10):
                        total += (await c.attempt(contact(i), model=MODEL, context=CTX)).cost
                    return total

            costs[cache] = asyncio.run(go(sim.base_url))
            usage = sum((Usage.from_api(b) for b in sim.billed), Usage())
        assert (usage.cache_read > 0) is cache
    assert costs[True] < Decimal("0.8") * costs[False]
