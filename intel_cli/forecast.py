"""`intel enrich --dry-run` (issue 7): what a run would cost, per model and per mode, before
anything is sent. No message is sent and no batch is created; the store is only read.

- Input tokens: the Messages API's free `count_tokens` endpoint when there is an API key (or
  the simulator's, with --simulate), otherwise an offline estimate from the request's size
  (AnthropicClient.estimate_input_tokens: ~3 characters per token, so it errs high). Counting
  every contact of a 50,000-row file would be 50,000 requests, so at most `SAMPLE` contacts,
  spread evenly over the list, are counted; the rest are scaled from their offline estimates
  by the ratio the sample measured. The forecast says which source it used and how many
  contacts it counted.
- Output tokens: the mean output of the model's recent single-attempt enriched results in
  the store (`Store.output_history`), else `DEFAULT_OUTPUT_TOKENS`; said which.
- Cost: genai-prices (intel_cli.pricing) for realtime, and with the Message Batches discount
  for batch; each with and without the contacts whose earlier results would be reused
  (SPEC 3.3: same key, prompt version and model within --cache-ttl; `--no-cache` disables).
- Routing (`--fast-model`, `--route-roles`): each contact is forecast on the model it would
  go to first. A second opinion on the main model after a Low-confidence fast answer cannot
  be known in advance and is not included (the notes say so).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, BinaryIO

from intel_cli.contacts import Contact, read_contacts
from intel_cli.pricing import price
from intel_cli.prompt import RunContext
from intel_cli.routing import Router
from intel_cli.schema import PROMPT_VERSION
from intel_cli.stores.base import Store
from intel_cli.usage import Usage

if TYPE_CHECKING:
    from intel_cli.pipeline import RunOptions

# what a request is expected to generate when the store has no history for the model: a
# full record of this schema runs 300-600 tokens
DEFAULT_OUTPUT_TOKENS = 500
# count_tokens requests per dry run at most (the endpoint is free but rate limited)
SAMPLE = 50
COUNT_CONCURRENCY = 8
# single-attempt enriched results the output estimate is the mean of
HISTORY = 1000

SOURCE_API = "count_tokens API"
SOURCE_SIMULATOR = "simulator count_tokens"
SOURCE_OFFLINE = "offline estimate (about 3 characters per token: errs high)"


@dataclass
class ModelForecast:
    model: str
    contacts: int = 0  # unique contacts that would go to this model
    cached: int = 0  # of which an earlier result would be reused (not sent)
    input_tokens: int = 0  # for all `contacts`
    sent_input_tokens: int = 0  # for the contacts that would be sent (not cached)
    output_per_request: Decimal = Decimal(DEFAULT_OUTPUT_TOKENS)
    output_source: str = "default"
    priced: bool = True
    # the fixed prefix (schema + system prompt) each request marks for prompt caching; 0 when
    # the client does not cache for this model. Realtime: the first request writes it, the
    # others read it (a run keeps the 5-minute cache warm). Batch: counted uncached, since the
    # API caches inside a batch only on a best-effort basis.
    prefix_tokens: int = 0

    def _output(self, contacts: int) -> int:
        return int((self.output_per_request * contacts).to_integral_value())

    @property
    def output_tokens(self) -> int:
        return self._output(self.contacts)

    def cost(self, *, batch: bool, cache: bool) -> Decimal:
        sent = self.contacts - self.cached if cache else self.contacts
        tokens = self.sent_input_tokens if cache else self.input_tokens
        usage = Usage(input=tokens, output=self._output(sent))
        if self.prefix_tokens and not batch and sent:
            prefix = min(self.prefix_tokens, tokens // sent)
            usage = Usage(
                input=tokens - sent * prefix,
                output=usage.output,
                cache_write=prefix,
                cache_read=(sent - 1) * prefix,
            )
        return price(self.model, usage, batch=batch).cost

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "contacts": self.contacts,
            "cached": self.cached,
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "outputTokensPerRequest": float(round(self.output_per_request, 1)),
            "outputSource": self.output_source,
            "promptCachePrefixTokens": self.prefix_tokens,
            "priced": self.priced,
            "costUsd": _costs(self),
        }


def _costs(row: ModelForecast | Forecast) -> dict[str, float]:
    return {
        "realtime": float(row.cost(batch=False, cache=False)),
        "batch": float(row.cost(batch=True, cache=False)),
        "realtimeWithCache": float(row.cost(batch=False, cache=True)),
        "batchWithCache": float(row.cost(batch=True, cache=True)),
    }


@dataclass
class Forecast:
    contacts: int  # unique enrichable contacts
    skipped: int
    duplicates: int
    token_source: str
    counted: int  # contacts whose input tokens were counted by count_tokens
    models: list[ModelForecast] = field(default_factory=list)
    cache_used: bool = True
    max_cost: Decimal | None = None
    notes: list[str] = field(default_factory=list)

    def cost(self, *, batch: bool, cache: bool) -> Decimal:
        return sum((m.cost(batch=batch, cache=cache) for m in self.models), Decimal(0))

    @property
    def input_tokens(self) -> int:
        return sum(m.input_tokens for m in self.models)

    @property
    def output_tokens(self) -> int:
        return sum(m.output_tokens for m in self.models)

    @property
    def cached(self) -> int:
        return sum(m.cached for m in self.models)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "success": True,
            "dryRun": True,
            "contacts": self.contacts,
            "cached": self.cached,
            "skipped": self.skipped,
            "duplicates": self.duplicates,
            "inputTokens": {
                "total": self.input_tokens,
                "source": self.token_source,
                "counted": self.counted,
            },
            "outputTokens": self.output_tokens,
            "models": [m.to_json() for m in self.models],
            "costUsd": _costs(self),
            "maxCost": None if self.max_cost is None else float(self.max_cost),
            "notes": list(self.notes),
        }
        return body


def sample_indexes(n: int, k: int) -> list[int]:
    """`k` indexes spread evenly over range(n) (all of them when n <= k)."""
    if n <= k:
        return list(range(n))
    return sorted({(i * n) // k for i in range(k)})


async def _count(
    client: Any, contacts: list[tuple[Contact, str]], context: RunContext
) -> list[int]:
    gate = asyncio.Semaphore(COUNT_CONCURRENCY)

    async def one(contact: Contact, model: str) -> int:
        async with gate:
            return int(await client.count_tokens(contact, model=model, context=context))

    return list(await asyncio.gather(*(one(c, m) for c, m in contacts)))


def forecast(
    options: RunOptions,
    store: Store,
    *,
    api_key: str | None,
    base_url: str | None,
    simulated: bool = False,
    stdin: BinaryIO | None = None,
    warn: Callable[[str], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Forecast:
    """The forecast for `options` (intel_cli.pipeline.RunOptions). With `api_key`, input
    tokens are counted through `base_url` (None: the SDK's ANTHROPIC_BASE_URL); without, they
    are estimated offline. Raises what counting raises (ConfigError, RateLimitedError)."""
    from intel_cli.errors import UsageError
    from intel_cli.pipeline import _no_rows_message, plan_contacts

    options.validate()
    context = RunContext(genre=options.genre, region=options.region, campaign=options.campaign)
    router = Router(options.model, options.fast_model, options.route_roles)
    with read_contacts(options.inputs, stdin=stdin, warn=warn or (lambda _: None)) as source:
        plan = plan_contacts(source)
    if not plan.items:  # as a real run would: exit 2, saying why
        raise UsageError(_no_rows_message(options.inputs, plan))
    contacts = [item.contact for item in plan.items]
    routed = [(c, router.model_for(c.row_index, c.role)) for c in contacts]
    if api_key:
        source_name = SOURCE_SIMULATOR if simulated else SOURCE_API
    else:
        source_name = SOURCE_OFFLINE
    offline, counted, prefixes = asyncio.run(
        _input_tokens(routed, context, api_key=api_key, base_url=base_url, options=options)
    )
    result = Forecast(
        contacts=len(contacts),
        skipped=len(plan.skipped),
        duplicates=plan.duplicates,
        token_source=source_name,
        counted=len(counted),
        max_cost=options.max_cost,
    )
    scale = Decimal(1)
    if counted:
        measured = sum(counted.values())
        estimated = sum(offline[i] for i in counted)
        scale = Decimal(measured) / Decimal(estimated) if estimated else Decimal(1)
    rows: dict[str, ModelForecast] = {}
    per_contact: list[int] = []
    for i, (_contact, model) in enumerate(routed):
        tokens = counted.get(i)
        if tokens is None:
            tokens = math.ceil(Decimal(offline[i]) * scale)
        per_contact.append(tokens)
        row = rows.setdefault(
            model, ModelForecast(model, prefix_tokens=math.ceil(prefixes[model] * scale))
        )
        row.contacts += 1
        row.input_tokens += tokens
    cached_keys = _cached(options, store, routed, now())
    for i, (contact, model) in enumerate(routed):
        row = rows[model]
        if contact.key and contact.key in cached_keys.get(model, set()):
            row.cached += 1
        else:
            row.sent_input_tokens += per_contact[i]
    for row in rows.values():
        n, mean = store.output_history(row.model, limit=HISTORY)
        if n and mean is not None:
            row.output_per_request = mean
            row.output_source = f"history ({n} results)"
        row.priced = price(row.model, Usage(input=1)).priced
        if not row.priced:
            result.notes.append(f"no price is known for model {row.model}: counted as 0")
    # the main model first, then the fast one
    result.models = sorted(rows.values(), key=lambda r: (r.model != options.model, r.model))
    result.cache_used = options.cache
    if router.active:
        result.notes.append(
            "routed contacts are forecast on --fast-model; a second opinion on the main "
            "model after a Low-confidence answer is not included"
        )
    if result.counted and result.counted < result.contacts:
        result.notes.append(
            f"input tokens of {result.counted} of {result.contacts} contacts counted with "
            f"{source_name}; the others scaled from their offline estimates"
        )
    return result


async def _input_tokens(
    routed: list[tuple[Contact, str]],
    context: RunContext,
    *,
    api_key: str | None,
    base_url: str | None,
    options: RunOptions,
) -> tuple[list[int], dict[int, int], dict[str, int]]:
    """(offline estimate per contact, {index: counted tokens} for the counted sample,
    {model: the prompt-cached prefix's offline estimate, 0 when not cached})."""
    from intel_cli.anthropic_client import AnthropicClient

    # no request is made without a key: the client only builds and measures requests then
    client = AnthropicClient(
        api_key=api_key or "offline-estimate", base_url=base_url, timeout=options.timeout,
        max_tokens=options.max_tokens,
    )
    try:
        offline = [
            client.estimate_input_tokens(c, model=m, context=context) for c, m in routed
        ]
        prefixes = {model: _prefix_tokens(client, model) for _, model in routed}
        if not api_key:
            return offline, {}, prefixes
        picks = sample_indexes(len(routed), SAMPLE)
        counts = await _count(client, [routed[i] for i in picks], context)
        return offline, dict(zip(picks, counts, strict=True)), prefixes
    finally:
        await client.aclose()


def _prefix_tokens(client: Any, model: str) -> int:
    """The prompt-cached prefix of `model`'s requests on the offline estimate's scale (~3
    characters per token, as `estimate_input_tokens`), 0 when the client does not cache."""
    caches = getattr(client, "caches_prompt", None)
    if caches is None or not caches(model):
        return 0
    from intel_cli.prompt import SYSTEM_PROMPT
    from intel_cli.schema import json_schema

    size = len(SYSTEM_PROMPT) + len(json.dumps(json_schema(), separators=(",", ":")))
    return math.ceil(size / 3)


def _cached(
    options: RunOptions, store: Store, routed: list[tuple[Contact, str]], now: datetime
) -> dict[str, set[str]]:
    """Per model, the contact keys whose earlier result would be reused (SPEC 3.3). As the
    pipeline does: results of the run's --model, and for a routed contact also those of
    --fast-model."""
    if not options.cache:
        return {}
    since = now - timedelta(seconds=options.cache_ttl_s)
    keys = [contact.key for contact, _ in routed if contact.key]
    found = set(
        store.find_cached_many(keys, prompt_version=PROMPT_VERSION, model=options.model,
                               since=since)
    )
    fast = [c.key for c, m in routed if c.key and c.key not in found and m != options.model]
    if fast and options.fast_model:
        found |= set(
            store.find_cached_many(fast, prompt_version=PROMPT_VERSION,
                                   model=options.fast_model, since=since)
        )
    reused: dict[str, set[str]] = {}
    for contact, model in routed:
        if contact.key in found:
            reused.setdefault(model, set()).add(contact.key)
    return reused
