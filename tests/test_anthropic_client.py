"""The client through the real anthropic SDK over real HTTP against the local simulator.

Each test runs one attempt (or a few) and checks the Attempt against what the simulator says
it billed and received: outcome, tokens, exact cost, one HTTP request per attempt.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from intel_cli.anthropic_client import (
    AnthropicClient,
    Attempt,
    Outcome,
    RateLimits,
    parse_retry_after,
)
from intel_cli.contacts import Contact
from intel_cli.errors import ConfigError
from intel_cli.pricing import price
from intel_cli.prompt import RunContext
from intel_cli.schema import Intelligence
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
KEY = "sk-ant-test-key-0123456789abcdef"
CTX = RunContext(genre="indie", campaign="radio")


def make_contact(email: str = "jane@bbc.co.uk", **kwargs: Any) -> Contact:
    values: dict[str, Any] = {
        "row_index": 0,
        "values": {},
        "email": email,
        "name": "Jane Doe",
        "company": "BBC Radio 6 Music",
        "role": "Producer",
    }
    values.update(kwargs)
    return Contact(**values)


SimFactory = Callable[..., Simulator]


@pytest.fixture
def sim_factory() -> Iterator[SimFactory]:
    """Start instant simulators; every one is stopped (and its threads joined) afterwards."""
    started: list[Simulator] = []

    def make(**config: Any) -> Simulator:
        sim = Simulator(SimulatorConfig.instant(**config)).start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        assert sim.stats.internal_errors == []
        sim.stop()


def attempt(
    sim: Simulator,
    contact: Contact | None = None,
    *,
    model: str = MODEL,
    api_key: str = KEY,
    reask: bool = False,
    **client_kwargs: Any,
) -> Attempt:
    async def go() -> Attempt:
        async with AnthropicClient(api_key=api_key, base_url=sim.base_url, **client_kwargs) as c:
            return await c.attempt(contact or make_contact(), model=model, context=CTX, reask=reask)

    return asyncio.run(go())


def billed_usage(record: dict[str, Any]) -> Usage:
    return Usage.from_api(record)


# --- 200 answers ------------------------------------------------------------------------------


@pytest.mark.parametrize("structured", ["output_config", "tool"])
def test_ok_validates_and_prices_exactly_what_was_billed(
    sim_factory: SimFactory, structured: str
) -> None:
    sim = sim_factory()
    result = attempt(sim, structured=structured)

    assert result.outcome is Outcome.OK, result.error
    assert result.error is None
    assert result.intel is not None
    assert Intelligence.model_validate(result.intel).model_dump() == result.intel
    assert result.intel["reasoning"].startswith("[SIMULATED]")

    [billed] = sim.billed
    assert billed["status"] == "ok"
    assert result.usage == billed_usage(billed)
    assert result.usage.input > 0 and result.usage.output > 0
    assert result.raw_usage is not None
    assert result.raw_usage["input_tokens"] == billed["input_tokens"]
    assert result.raw_usage["output_tokens"] == billed["output_tokens"]
    assert Usage.from_api(result.raw_usage) == result.usage  # the cost can be recomputed
    assert result.cost == price(MODEL, result.usage).cost
    assert result.cost > 0 and result.priced
    assert result.billed
    assert result.status_code == 200
    assert result.request_id == billed["request_id"]
    assert result.model == MODEL
    assert result.latency_ms >= 0
    assert sim.stats.requests == 1


def test_unpriced_model_still_answers_with_zero_cost_flagged(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    result = attempt(sim, model="claude-imaginary-9")
    assert result.outcome is Outcome.OK
    assert result.billed and result.usage.output > 0
    assert result.cost == 0 and result.priced is False


def test_invalid_output_is_billed_and_flagged(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "invalid")])
    result = attempt(sim)
    assert result.outcome is Outcome.INVALID_OUTPUT
    assert result.error == "invalid output"
    assert result.intel is None
    [billed] = sim.billed
    assert billed["status"] == "invalid"
    assert result.billed and result.usage == billed_usage(billed)
    assert result.cost == price(MODEL, result.usage).cost > 0


def test_invalid_tool_input_is_invalid_output(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "invalid")])
    result = attempt(sim, structured="tool")
    assert result.outcome is Outcome.INVALID_OUTPUT
    assert result.billed


def test_max_tokens_is_billed_and_flagged(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "max_tokens")])
    result = attempt(sim)
    assert result.outcome is Outcome.MAX_TOKENS
    assert result.error == "max_tokens"
    assert result.intel is None
    [billed] = sim.billed
    assert billed["status"] == "max_tokens"
    assert result.usage == billed_usage(billed)
    assert result.cost == price(MODEL, result.usage).cost > 0


def test_a_small_max_tokens_cuts_the_answer(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    result = attempt(sim, max_tokens=20)
    assert result.outcome is Outcome.MAX_TOKENS
    assert result.usage.output == 20
    assert result.billed


def test_reask_sends_the_note(sim_factory: SimFactory) -> None:
    # the rule fires only on a body carrying the re-ask note
    sim = sim_factory(rules=[FaultRule("previous answer was not valid", "invalid")])
    assert attempt(sim).outcome is Outcome.OK
    assert attempt(sim, reask=True).outcome is Outcome.INVALID_OUTPUT


def test_contact_context_goes_out_in_the_request(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("Late Night Session", "500")])
    plain = attempt(sim)
    with_show = attempt(sim, make_contact(context={"show": "Late Night Session"}))
    assert plain.outcome is Outcome.OK
    assert with_show.outcome is Outcome.RETRYABLE


# --- errors -----------------------------------------------------------------------------------


def test_timeout_is_reported_within_about_the_timeout(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "timeout")], hang_s=30)
    started = time.perf_counter()
    result = attempt(sim, timeout=0.3)
    elapsed = time.perf_counter() - started
    assert result.outcome is Outcome.TIMEOUT
    assert result.error == "timed out after 0.3 s"
    assert 0.25 <= elapsed < 1.5
    assert 250 <= result.latency_ms < 1500
    assert not result.billed and result.usage == Usage() and result.cost == 0
    assert sim.billed == []
    assert sim.stats.requests == 1  # no SDK retry


def test_429_is_rate_limited_with_retry_after(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "429")], retry_after_s=7)
    result = attempt(sim)
    assert result.outcome is Outcome.RATE_LIMITED
    assert result.retry_after == 7.0
    assert result.status_code == 429
    assert result.error is not None and result.error.startswith("rate limited (429")
    assert not result.billed and result.cost == 0
    assert result.request_id  # the simulator sends request-id on errors too
    assert sim.stats.requests == 1


def test_rpm_limit_429_and_headers_are_parsed(sim_factory: SimFactory) -> None:
    sim = sim_factory(rpm=2)

    async def go() -> list[Attempt]:
        async with AnthropicClient(api_key=KEY, base_url=sim.base_url) as c:
            return [await c.attempt(make_contact(), model=MODEL, context=CTX) for _ in range(3)]

    first, second, third = asyncio.run(go())
    assert first.limits is not None and second.limits is not None
    assert first.limits.requests_limit == 2
    assert first.limits.requests_remaining is not None
    assert second.limits.requests_remaining is not None
    assert second.limits.requests_remaining < first.limits.requests_remaining
    reset = first.limits.requests_reset
    assert reset is not None and reset.tzinfo is not None
    assert (
        datetime.now(UTC) - timedelta(seconds=5) < reset < datetime.now(UTC) + timedelta(minutes=2)
    )
    assert third.outcome is Outcome.RATE_LIMITED
    assert third.retry_after is not None and third.retry_after >= 1
    assert third.limits is not None and third.limits.requests_remaining == 0
    assert sim.stats.requests == 3


@pytest.mark.parametrize("fault", ["500", "502", "503", "529"])
def test_server_errors_are_retryable_and_sent_once(sim_factory: SimFactory, fault: str) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", fault)])
    result = attempt(sim)
    assert result.outcome is Outcome.RETRYABLE
    assert result.status_code == int(fault)
    assert result.error is not None and result.error.startswith(fault)
    assert not result.billed and result.cost == 0
    assert sim.stats.requests == 1  # max_retries=0: the pipeline owns retries
    assert sim.stats.by_status == {int(fault): 1}


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # nothing listens on `port` now

    async def go() -> Attempt:
        base_url = f"http://127.0.0.1:{port}"
        async with AnthropicClient(api_key=KEY, base_url=base_url, timeout=2) as c:
            return await c.attempt(make_contact(), model=MODEL, context=CTX)

    result = asyncio.run(go())
    assert result.outcome is Outcome.RETRYABLE
    assert result.error is not None and result.error.startswith("connection error")
    assert result.status_code is None


def test_bad_request_carries_the_api_message(sim_factory: SimFactory) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", "400")])
    result = attempt(sim)
    assert result.outcome is Outcome.BAD_REQUEST
    assert result.error == "400 invalid_request_error: simulated invalid request"


def test_wrong_key_is_fatal_and_never_shows_the_key(
    sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory(api_keys={"the-right-key"})
    wrong = "sk-ant-api03-WRONGwrongWRONG-0123456789"
    monkeypatch.setenv("ANTHROPIC_API_KEY", wrong)
    result = attempt(sim, api_key=wrong)
    assert result.outcome is Outcome.FATAL
    assert result.status_code == 401
    assert result.error == (
        "Anthropic rejected the API key (401 authentication_error): check ANTHROPIC_API_KEY"
    )
    assert wrong not in repr(result)
    assert sim.stats.requests == 1


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("402", "billing problem on the Anthropic account (402 billing_error)"),
        ("403", "Anthropic denied access (403 permission_error)"),
    ],
)
def test_billing_and_permission_are_fatal(
    sim_factory: SimFactory, fault: str, expected: str
) -> None:
    sim = sim_factory(rules=[FaultRule("jane@bbc.co.uk", fault)])
    result = attempt(sim)
    assert result.outcome is Outcome.FATAL
    assert result.error is not None and result.error.startswith(expected)
    assert "\n" not in result.error


def test_unknown_model_is_fatal(sim_factory: SimFactory) -> None:
    sim = sim_factory()
    result = attempt(sim, model="gpt-4o")
    assert result.outcome is Outcome.FATAL
    assert result.status_code == 404
    assert result.error == "unknown model 'gpt-4o' (404): check --model / INTEL_MODEL"


def test_a_wrong_base_url_path_is_fatal_and_says_so(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def go() -> Attempt:
        async with AnthropicClient(api_key=KEY, base_url=sim.base_url + "/proxy") as c:
            return await c.attempt(make_contact(), model=MODEL, context=CTX)

    result = asyncio.run(go())
    assert result.outcome is Outcome.FATAL
    assert result.error is not None and "check ANTHROPIC_BASE_URL" in result.error


class _NotAnthropic(BaseHTTPRequestHandler):
    """A proxy that answers 200 with something that is not a Message."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        content_type, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "answer",
    [
        ("text/html", b"<html>captive portal</html>"),
        ("application/json", b'{"hello": "world"}'),
        ("application/json", b"not json"),
    ],
)
def test_a_200_that_is_not_a_message_is_retryable(answer: tuple[str, bytes]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NotAnthropic)
    server.answer = answer  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:

        async def go() -> Attempt:
            base_url = f"http://127.0.0.1:{server.server_address[1]}"
            async with AnthropicClient(api_key=KEY, base_url=base_url) as c:
                return await c.attempt(make_contact(), model=MODEL, context=CTX)

        result = asyncio.run(go())
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    assert result.outcome is Outcome.RETRYABLE
    assert result.error is not None and result.error.endswith("check ANTHROPIC_BASE_URL")
    assert not result.billed


def test_base_url_comes_from_the_environment(
    sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = sim_factory()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", sim.base_url)

    async def go() -> Attempt:
        async with AnthropicClient(api_key=KEY) as c:
            return await c.attempt(make_contact(), model=MODEL, context=CTX)

    assert asyncio.run(go()).outcome is Outcome.OK
    assert sim.stats.requests == 1


def test_concurrent_attempts_share_one_client(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def go() -> list[Attempt]:
        async with AnthropicClient(api_key=KEY, base_url=sim.base_url) as c:
            return await asyncio.gather(
                *(
                    c.attempt(make_contact(f"p{i}@example{i}.com"), model=MODEL, context=CTX)
                    for i in range(8)
                )
            )

    results = asyncio.run(go())
    assert [r.outcome for r in results] == [Outcome.OK] * 8
    total = sum((r.usage for r in results), Usage())
    assert total == sum((billed_usage(b) for b in sim.billed), Usage())
    assert sum(r.cost for r in results) == price(MODEL, total).cost


# --- count_tokens -----------------------------------------------------------------------------


def test_count_tokens_matches_what_the_request_is_billed(sim_factory: SimFactory) -> None:
    sim = sim_factory()

    async def go() -> tuple[int, Attempt, int]:
        async with AnthropicClient(api_key=KEY, base_url=sim.base_url) as c:
            counted = await c.count_tokens(make_contact(), model=MODEL, context=CTX)
            sent = await c.attempt(make_contact(), model=MODEL, context=CTX)
            estimate = c.estimate_input_tokens(make_contact(), model=MODEL, context=CTX)
            return counted, sent, estimate

    counted, sent, estimate = asyncio.run(go())
    # count_tokens counts the whole input; usage splits off the cached prefix (a write here)
    used = sent.usage
    assert counted == used.input + used.cache_write + used.cache_read
    assert used.input > 0 and used.cache_write > 0
    assert estimate >= counted  # the offline estimate errs high, as a budget wants


def test_count_tokens_with_a_wrong_key_is_a_config_error(sim_factory: SimFactory) -> None:
    sim = sim_factory(api_keys={"right"})

    async def go() -> int:
        async with AnthropicClient(api_key="wrong-key-xyz", base_url=sim.base_url) as c:
            return await c.count_tokens(make_contact(), model=MODEL, context=CTX)

    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        asyncio.run(go())


def test_unknown_structured_mode_is_refused() -> None:
    from intel_cli.errors import UsageError

    with pytest.raises(UsageError, match="output_config, tool"):
        AnthropicClient(api_key=KEY, structured="xml")


def test_importing_the_client_does_not_import_anthropic() -> None:
    code = "import sys, intel_cli.anthropic_client; print('anthropic' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- header parsing ---------------------------------------------------------------------------

NOW = datetime(2026, 12, 4, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 1.5 ", 1.5),
        ("0", 0.0),
        ("-3", 0.0),
        ("Fri, 04 Dec 2026 12:00:30 GMT", 30.0),
        ("Fri, 04 Dec 2026 11:59:00 GMT", 0.0),  # in the past: go now
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_rate_limits_from_headers() -> None:
    limits = RateLimits.from_headers(
        {
            "Anthropic-RateLimit-Requests-Limit": "50",
            "anthropic-ratelimit-requests-remaining": "49",
            "anthropic-ratelimit-requests-reset": "2026-12-04T12:00:01Z",
            "anthropic-ratelimit-input-tokens-limit": "30000",
            "anthropic-ratelimit-input-tokens-remaining": "29000",
            "anthropic-ratelimit-input-tokens-reset": "2026-12-04T12:00:02+00:00",
            "anthropic-ratelimit-output-tokens-limit": "8000",
            "anthropic-ratelimit-output-tokens-remaining": "garbage",
            "content-type": "application/json",
        }
    )
    assert limits == RateLimits(
        requests_limit=50,
        requests_remaining=49,
        requests_reset=datetime(2026, 12, 4, 12, 0, 1, tzinfo=UTC),
        input_tokens_limit=30000,
        input_tokens_remaining=29000,
        input_tokens_reset=datetime(2026, 12, 4, 12, 0, 2, tzinfo=UTC),
        output_tokens_limit=8000,
    )
    assert RateLimits.from_headers({"content-type": "application/json"}) is None


def test_attempt_billed_property() -> None:
    assert not Attempt(Outcome.TIMEOUT, MODEL).billed
    assert Attempt(Outcome.INVALID_OUTPUT, MODEL, raw_usage={"input_tokens": 1}).billed
    assert Attempt(Outcome.OK, MODEL).cost == Decimal(0)
