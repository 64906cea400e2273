"""One request to the Messages API for one contact -> one `Attempt` (SPEC 4.1).

This module owns the SDK call: the prompt and structured-output options that go out, and
the mapping of everything that can come back (a valid record, invalid output, a cut answer,
a timeout, a 429, a 5xx, a bad request, a bad key) to an `Outcome`, with the usage, cost,
latency and rate-limit headers of that attempt. It never raises for an API outcome and
never retries: the pipeline owns retries, so the SDK's are off (`max_retries=0`) and every
attempt is seen, counted and paced.

`anthropic` is imported inside the functions that need it, so `intel --help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from intel_cli.contacts import Contact
from intel_cli.errors import ConfigError, RateLimitedError, UsageError
from intel_cli.pricing import price
from intel_cli.prompt import (
    CACHE_CONTROL,
    SYSTEM_PROMPT,
    RunContext,
    build_prompt,
    estimate_prefix_tokens,
    min_cacheable_tokens,
)
from intel_cli.schema import Intelligence, json_schema
from intel_cli.secrets import redact
from intel_cli.usage import Usage

if TYPE_CHECKING:
    import anthropic

STRUCTURED_MODES = ("output_config", "tool")
TOOL_NAME = "record_intelligence"
_TOOL_DESCRIPTION = "Record the intelligence about the contact, in the required fields."
# A guard around the SDK's own timeout: the SDK's is per read, so a server that trickles
# bytes could outlast it; this bounds the whole attempt.
_GUARD_SLACK_S = 1.0
_RETRYABLE_STATUS = frozenset({408, 409, 500, 502, 503, 504, 529})
_MAX_ERROR_CHARS = 300
# estimate_input_tokens: conservative on purpose (real English runs ~4 chars per token)
_CHARS_PER_TOKEN_LOW = 3
_STRUCTURED_OVERHEAD_TOKENS = 400
# Message Batches: creating (uploading) and downloading results may take minutes
_BATCH_UPLOAD_TIMEOUT_S = 600.0


class Outcome(StrEnum):
    OK = "ok"
    INVALID_OUTPUT = "invalid_output"  # 200, billed, not valid against the schema
    MAX_TOKENS = "max_tokens"  # 200, billed, answer cut at max_tokens
    TIMEOUT = "timeout"
    RATE_LIMITED = "rate_limited"  # 429
    RETRYABLE = "retryable"  # 5xx, 529 overloaded, connection errors
    BAD_REQUEST = "bad_request"  # 400/413/422: this contact's request will not work
    FATAL = "fatal"  # 401/402/403, unknown model: every request would fail the same way


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class RateLimits:
    """The `anthropic-ratelimit-*` headers of one response; None where a header is absent."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: datetime | None = None
    input_tokens_limit: int | None = None
    input_tokens_remaining: int | None = None
    input_tokens_reset: datetime | None = None
    output_tokens_limit: int | None = None
    output_tokens_remaining: int | None = None
    output_tokens_reset: datetime | None = None
    # the combined (most restrictive) token limit the API also reports
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: datetime | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> RateLimits | None:
        """Parse the headers (any case); None when the response carried none of them."""
        lower = {k.lower(): v for k, v in headers.items()}
        prefix = "anthropic-ratelimit-"
        if not any(k.startswith(prefix) for k in lower):
            return None
        values: dict[str, Any] = {}
        for bucket in ("requests", "input-tokens", "output-tokens", "tokens"):
            name = bucket.replace("-", "_")
            values[f"{name}_limit"] = _int(lower.get(f"{prefix}{bucket}-limit"))
            values[f"{name}_remaining"] = _int(lower.get(f"{prefix}{bucket}-remaining"))
            values[f"{name}_reset"] = _time(lower.get(f"{prefix}{bucket}-reset"))
        return cls(**values)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """`retry-after` as seconds from `now`: delta-seconds or an HTTP date; None if unusable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def _retry_after(headers: Mapping[str, str], now: datetime) -> float | None:
    # the API also sends a precise millisecond form; prefer it when present
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            value = float(ms) / 1000
        except ValueError:
            pass
        else:
            if math.isfinite(value):
                return max(0.0, value)
    return parse_retry_after(headers.get("retry-after"), now)


@dataclass
class Attempt:
    """What one request did: its outcome and everything it cost."""

    outcome: Outcome
    model: str
    intel: dict[str, Any] | None = None  # the validated Intelligence, model_dump()
    usage: Usage = field(default_factory=Usage)  # what this attempt billed; zero if not billed
    raw_usage: dict[str, Any] | None = None  # the API's usage JSON, when billed
    cost: Decimal = Decimal(0)
    priced: bool = True
    latency_ms: int = 0
    error: str | None = None  # one line, secrets redacted
    status_code: int | None = None
    request_id: str | None = None
    limits: RateLimits | None = None
    retry_after: float | None = None  # seconds, from a 429's retry-after

    @property
    def billed(self) -> bool:
        """True when the API answered 200 and charged for it (even if the output was unusable)."""
        return self.raw_usage is not None


def _one_line(text: str) -> str:
    line = " ".join(redact(text).split())
    if len(line) > _MAX_ERROR_CHARS:
        line = line[: _MAX_ERROR_CHARS - 1] + "…"
    return line


def _is_message(message: Any) -> bool:
    from anthropic.types import Message
    from anthropic.types import Usage as ApiUsage

    return (
        isinstance(message, Message)
        and isinstance(message.usage, ApiUsage)
        and isinstance(message.content, list)
    )


def _strip_fences(text: str) -> str:
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


class AnthropicClient:
    """The Messages API for the pipeline: `attempt()` one contact, `count_tokens()` one prompt."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 10.0,
        max_tokens: int = 1024,
        structured: str = "output_config",
        clock: Callable[[], datetime] | None = None,
        prompt_cache: bool = True,
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise UsageError(
                f"unknown structured output mode {structured!r}: use one of "
                + ", ".join(STRUCTURED_MODES)
            )
        import anthropic

        self.timeout = timeout
        self.max_tokens = max_tokens
        self.structured = structured
        self.prompt_cache = prompt_cache
        self._clock = clock or (lambda: datetime.now(UTC))
        # max_retries=0: the pipeline owns retries (SPEC 4.1). base_url None lets the SDK
        # read ANTHROPIC_BASE_URL.
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )
        self._schema = json_schema()
        self._schema_json = json.dumps(self._schema, separators=(",", ":"))

    @property
    def base_url(self) -> str:
        return str(self._client.base_url)

    async def __aenter__(self) -> AnthropicClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.close()

    # -- the request -------------------------------------------------------------------

    def request_params(
        self, contact: Contact, *, model: str, context: RunContext, reask: bool = False
    ) -> dict[str, Any]:
        """The Messages API parameters for one contact (also what count_tokens measures)."""
        system, user = build_prompt(contact, context, reask=reask)
        params: dict[str, Any] = {
            "model": model,
            "system": self._system(system, model),
            "messages": [{"role": "user", "content": user}],
        }
        if self.structured == "tool":
            params["tools"] = [
                {
                    "name": TOOL_NAME,
                    "description": _TOOL_DESCRIPTION,
                    "input_schema": self._schema,
                }
            ]
            params["tool_choice"] = {"type": "tool", "name": TOOL_NAME}
        else:
            params["output_config"] = {"format": {"type": "json_schema", "schema": self._schema}}
        return params

    def caches_prompt(self, model: str) -> bool:
        """Whether requests to `model` mark the fixed prefix for prompt caching: it must reach
        the model's minimum cacheable length (the schema or tool comes before the system
        prompt in the cached prefix, so it counts)."""
        if not self.prompt_cache:
            return False
        fixed = estimate_prefix_tokens(SYSTEM_PROMPT, self._schema_json)
        return fixed >= min_cacheable_tokens(model)

    def _system(self, system: str, model: str) -> str | list[dict[str, Any]]:
        if not self.caches_prompt(model):
            return system
        # one text block with a breakpoint: tools/schema + system become the cached prefix,
        # the contact (the user message) is the uncached remainder
        return [{"type": "text", "text": system, "cache_control": dict(CACHE_CONTROL)}]

    async def attempt(
        self, contact: Contact, *, model: str, context: RunContext, reask: bool = False
    ) -> Attempt:
        """Send one request for `contact`; map whatever happens to an Attempt. Never raises
        for an API outcome (bugs and cancellation still propagate)."""
        import anthropic

        params = self.request_params(contact, model=model, context=context, reask=reask)

        raw: Any = None

        async def call() -> Any:
            nonlocal raw
            raw = await self._client.messages.with_raw_response.create(
                max_tokens=self.max_tokens, timeout=self.timeout, **params
            )
            return await raw.parse()

        started = time.perf_counter()

        def elapsed_ms() -> int:
            return round((time.perf_counter() - started) * 1000)

        try:
            message: Any = await asyncio.wait_for(call(), self.timeout + _GUARD_SLACK_S)
        except (TimeoutError, anthropic.APITimeoutError):
            return Attempt(
                Outcome.TIMEOUT,
                model,
                latency_ms=elapsed_ms(),
                error=f"timed out after {self.timeout:g} s",
            )
        except anthropic.APIStatusError as exc:
            return self._status_error(exc, model, elapsed_ms())
        except anthropic.APIConnectionError as exc:
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
            return Attempt(
                Outcome.RETRYABLE,
                model,
                latency_ms=elapsed_ms(),
                error=_one_line(f"connection error ({detail})"),
            )
        except anthropic.APIError as exc:  # e.g. a response the SDK could not parse
            return Attempt(
                Outcome.RETRYABLE,
                model,
                latency_ms=elapsed_ms(),
                error=_one_line(f"API error: {exc.message}"),
            )
        except ValueError:  # a 200 whose body is not JSON at all
            if raw is None:  # raised before any response: our bug, not the API's answer
                raise
            message = None
        if not _is_message(message):
            # A 200 that is not a Message: a proxy or a wrong ANTHROPIC_BASE_URL answering.
            # Not billed as far as we can know; retryable, since a proxy may recover.
            return Attempt(
                Outcome.RETRYABLE,
                model,
                latency_ms=elapsed_ms(),
                status_code=raw.status_code,
                request_id=raw.request_id,
                error=_one_line(
                    f"unexpected answer from {self.base_url} (200, not a Messages API "
                    "response): check ANTHROPIC_BASE_URL"
                ),
            )
        return self._answer(raw, message, model, elapsed_ms())

    def _answer(
        self, raw: Any, message: Any, model: str, latency_ms: int, *, batch: bool = False
    ) -> Attempt:
        usage = Usage.from_api(message.usage)
        cost = price(model, usage, batch=batch)
        attempt = Attempt(
            Outcome.OK,
            model,
            usage=usage,
            # what the API sent, key for key: enough to recompute the cost later
            raw_usage=message.usage.to_dict(mode="json"),
            cost=cost.cost,
            priced=cost.priced,
            latency_ms=latency_ms,
            status_code=raw.status_code if raw is not None else None,
            request_id=raw.request_id if raw is not None else None,
            limits=RateLimits.from_headers(raw.headers) if raw is not None else None,
        )
        if message.stop_reason == "max_tokens":
            attempt.outcome = Outcome.MAX_TOKENS
            attempt.error = "max_tokens"
            return attempt
        intel = self._extract(message)
        if intel is None:
            attempt.outcome = Outcome.INVALID_OUTPUT
            attempt.error = "invalid output"
        else:
            attempt.intel = intel
        return attempt

    def _extract(self, message: Any) -> dict[str, Any] | None:
        """The validated record from the answer, or None when it is not valid."""
        from pydantic import ValidationError

        data: Any = None
        if self.structured == "tool":
            for block in message.content:
                if getattr(block, "type", None) == "tool_use" and block.name == TOOL_NAME:
                    data = block.input
                    break
        else:
            text = "".join(
                block.text for block in message.content if getattr(block, "type", None) == "text"
            )
            try:
                data = json.loads(_strip_fences(text))
            except ValueError:
                return None
        if not isinstance(data, dict):
            return None
        try:
            return Intelligence.model_validate(data).model_dump()
        except ValidationError:
            return None

    def _status_error(self, exc: anthropic.APIStatusError, model: str, latency_ms: int) -> Attempt:
        status = exc.status_code
        headers = exc.response.headers
        kind = exc.type or "error"
        api_message = exc.api_message or exc.message
        attempt = Attempt(
            Outcome.RETRYABLE,
            model,
            latency_ms=latency_ms,
            status_code=status,
            request_id=exc.request_id,
            limits=RateLimits.from_headers(headers),
        )
        if status == 429:
            attempt.outcome = Outcome.RATE_LIMITED
            attempt.retry_after = _retry_after(headers, self._clock())
            attempt.error = f"rate limited (429 {kind}): {api_message}"
        elif status in _RETRYABLE_STATUS or status >= 500:
            attempt.outcome = Outcome.RETRYABLE
            attempt.error = f"{status} {kind}: {api_message}"
        elif status == 401:
            attempt.outcome = Outcome.FATAL
            attempt.error = f"Anthropic rejected the API key (401 {kind}): check ANTHROPIC_API_KEY"
        elif status == 402:
            attempt.outcome = Outcome.FATAL
            attempt.error = (
                f"billing problem on the Anthropic account (402 {kind}): "
                "check the plan and credit balance in the Anthropic Console"
            )
        elif status == 403:
            attempt.outcome = Outcome.FATAL
            attempt.error = (
                f"Anthropic denied access (403 {kind}): the API key may not be allowed to use "
                f"model '{model}'; check ANTHROPIC_API_KEY and the key's workspace"
            )
        elif status == 404:
            attempt.outcome = Outcome.FATAL
            if "model" in api_message.lower():
                attempt.error = f"unknown model '{model}' (404): check --model / INTEL_MODEL"
            else:
                # not a model problem: the URL itself is wrong (a proxy or ANTHROPIC_BASE_URL)
                attempt.error = (
                    f"the Messages API was not found at {self.base_url} (404): "
                    "check ANTHROPIC_BASE_URL"
                )
        else:  # 400, 413, 422 and any other 4xx: this request, not the run
            attempt.outcome = Outcome.BAD_REQUEST
            attempt.error = f"{status} {kind}: {api_message}"
        attempt.error = _one_line(attempt.error)
        return attempt

    # -- Message Batches (intel_cli.batch_mode) -----------------------------------------

    def batch_request(
        self, custom_id: str, contact: Contact, *, model: str, context: RunContext
    ) -> dict[str, Any]:
        """One entry of a Message Batch: the same parameters a realtime request sends."""
        params = self.request_params(contact, model=model, context=context)
        return {"custom_id": custom_id, "params": {"max_tokens": self.max_tokens, **params}}

    async def create_batch(self, requests: list[dict[str, Any]]) -> str:
        """Submit a Message Batch; its id. SDK errors propagate (see `failure`)."""
        # uploading up to 256 MB takes longer than one answer's --timeout
        batch = await self._client.messages.batches.create(
            requests=requests,  # type: ignore[arg-type]
            timeout=max(self.timeout, _BATCH_UPLOAD_TIMEOUT_S),
        )
        return str(batch.id)

    async def retrieve_batch(self, batch_id: str) -> Any:
        """The MessageBatch (processing_status, request_counts, ...)."""
        return await self._client.messages.batches.retrieve(batch_id, timeout=self.timeout)

    async def cancel_batch(self, batch_id: str) -> Any:
        return await self._client.messages.batches.cancel(batch_id, timeout=self.timeout)

    async def batch_results(self, batch_id: str) -> AsyncIterator[Any]:
        """The result lines of an ended batch (custom_id, result), streamed."""
        decoder = await self._client.messages.batches.results(
            batch_id, timeout=max(self.timeout, _BATCH_UPLOAD_TIMEOUT_S)
        )
        async for line in decoder:
            yield line

    def batch_attempt(self, message: Any, model: str) -> Attempt:
        """A succeeded batch result as an Attempt: validated as a realtime answer is, priced
        at the Message Batches discount. No latency: a batch has none per request."""
        if not _is_message(message):
            return Attempt(Outcome.RETRYABLE, model, error="batch result is not a Message")
        return self._answer(None, message, model, 0, batch=True)

    def failure(self, exc: Exception, model: str) -> Attempt:
        """An SDK exception from a batch call mapped as a realtime attempt's would be."""
        import anthropic

        if isinstance(exc, anthropic.APIStatusError):
            return self._status_error(exc, model, 0)
        if isinstance(exc, anthropic.APITimeoutError):
            return Attempt(Outcome.RETRYABLE, model, error=f"timed out after {self.timeout:g} s")
        if isinstance(exc, anthropic.APIConnectionError):
            cause = exc.__cause__
            detail = f"{type(cause).__name__}: {cause}" if cause else exc.message
            error = _one_line(f"connection error ({detail})")
            return Attempt(Outcome.RETRYABLE, model, error=error)
        return Attempt(Outcome.RETRYABLE, model, error=_one_line(f"API error: {exc}"))

    # -- token counting ----------------------------------------------------------------

    async def count_tokens(self, contact: Contact, *, model: str, context: RunContext) -> int:
        """Input tokens of the request for `contact` (free endpoint; nothing is generated).

        Raises ConfigError for what would stop a run (bad key, billing, unknown model, the API
        unreachable) and RateLimitedError on 429.
        """
        import anthropic

        params = self.request_params(contact, model=model, context=context)
        try:
            result = await asyncio.wait_for(
                self._client.messages.count_tokens(timeout=self.timeout, **params),
                self.timeout + _GUARD_SLACK_S,
            )
        except (TimeoutError, anthropic.APITimeoutError) as exc:
            raise ConfigError(
                f"counting tokens timed out after {self.timeout:g} s: check the network "
                "or ANTHROPIC_BASE_URL, or raise --timeout"
            ) from exc
        except anthropic.APIStatusError as exc:
            attempt = self._status_error(exc, model, 0)
            if attempt.outcome is Outcome.RATE_LIMITED:
                raise RateLimitedError(f"{attempt.error}: rerun later") from exc
            if attempt.outcome is Outcome.FATAL:
                raise ConfigError(attempt.error or "counting tokens failed") from exc
            raise ConfigError(f"counting tokens failed ({attempt.error}): try again later") from exc
        except anthropic.APIError as exc:
            message = f"counting tokens failed ({exc.message}): check ANTHROPIC_BASE_URL"
            raise ConfigError(_one_line(message)) from exc
        return int(result.input_tokens)

    def estimate_input_tokens(self, contact: Contact, *, model: str, context: RunContext) -> int:
        """An offline over-estimate of the input tokens of `contact`'s request (no request).

        About 3 characters per token over the whole request JSON, plus the structured-output
        overhead the API adds; real counts come out lower for English text, which is what a
        budget reservation (--max-cost) wants.
        """
        params = self.request_params(contact, model=model, context=context)
        size = len(json.dumps(params, ensure_ascii=False))
        return math.ceil(size / _CHARS_PER_TOKEN_LOW) + _STRUCTURED_OVERHEAD_TOKENS
