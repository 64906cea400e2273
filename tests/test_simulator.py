"""The simulator, driven through the real anthropic SDK over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Literal

import anthropic
import pydantic
import pytest

from intel_cli.errors import UsageError
from intel_cli.schema import Intelligence, json_schema
from intel_cli.simulator import (
    FaultRule,
    Simulator,
    SimulatorConfig,
    TokenBucket,
    fill_schema,
    simulated_intelligence,
)

MODEL = "claude-sonnet-4-5"
SYSTEM = "You research music-industry contacts and answer with structured intelligence."


def prompt(email: str | None = "jane.doe@bbc.co.uk", **fields: str) -> str:
    lines = ["Research this contact."]
    if email:
        lines.append(f"Email: {email}")
    lines.extend(f"{key.title()}: {value}" for key, value in fields.items())
    return "\n".join(lines)


def structured(content: str, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for messages.create with JSON-schema output."""
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "system": SYSTEM,
        "messages": [{"role": "user", "content": content}],
        "output_config": {"format": {"type": "json_schema", "schema": json_schema()}},
        **extra,
    }


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(SimulatorConfig.instant()) as s:
        yield s
        assert s.stats.internal_errors == []


def client(sim: Simulator, **kwargs: Any) -> anthropic.Anthropic:
    options: dict[str, Any] = {"base_url": sim.base_url, "api_key": "test-key", "max_retries": 0}
    options.update(kwargs)
    return anthropic.Anthropic(**options)


def post(
    url: str, body: dict[str, Any], headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method=method,
        headers={"content-type": "application/json", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


# --- answers ---------------------------------------------------------------------------------


def test_structured_answer_validates_and_is_labelled(sim: Simulator) -> None:
    with client(sim) as c:
        message = c.messages.create(**structured(prompt(company="BBC Radio 1")))
        again = c.messages.create(**structured(prompt(company="BBC Radio 1")))
    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "end_turn" and message.model == MODEL
    assert len(message.content) == 1 and message.content[0].type == "text"
    intel = Intelligence.model_validate_json(message.content[0].text)
    assert intel.reasoning.startswith("[SIMULATED]")
    assert "BBC" in intel.platform
    assert intel.coverage == "National (UK)"
    assert intel.confidence == "High"
    assert again.content == message.content  # deterministic per contact


@pytest.mark.parametrize(
    ("text", "platform", "coverage", "confidence"),
    [
        (prompt("ed@spotify.com"), "Spotify editorial playlists", "Global", "High"),
        (prompt("music@triplej.abc.net.au"), "triple j", "Australia", "High"),
        (prompt("dj@amazingradio.com.au"), "Amazing Radio", "Australia", "Medium"),
        (prompt("hello@indiepopblog.co.uk"), "Indiepop Blog", "UK", "Medium"),
        (prompt("sam@gmail.com"), "Independent", "", "Medium"),
        (prompt(None, name="Sam Smith", company="Kiss FM"), "Kiss FM", "", "Low"),
    ],
    ids=["spotify", "abc-au", "radio-au", "blog-uk", "freemail", "no-email"],
)
def test_intelligence_is_derived_from_the_contact(
    text: str, platform: str, coverage: str, confidence: str
) -> None:
    intel = Intelligence.model_validate(simulated_intelligence(text))
    assert platform in intel.platform
    assert coverage in intel.coverage
    assert intel.confidence == confidence
    assert intel.reasoning.startswith("[SIMULATED]")
    assert simulated_intelligence(text) == intel.model_dump()  # same contact, same answer


def test_reads_the_projects_own_prompt() -> None:
    from intel_cli.contacts import Contact
    from intel_cli.prompt import RunContext, build_prompt

    contact = Contact(
        row_index=0, values={}, email="Jo.Bloggs@bbc.co.uk", name="Jo Bloggs",
        company="BBC Radio 6 Music", role="Producer", context={"genre": "Post-punk, Indie"},
    )
    _, user = build_prompt(contact, RunContext(campaign="radio", region="Scotland"))
    intel = simulated_intelligence(user)
    assert intel["platform"] == "BBC Radio" and intel["confidence"] == "High"
    assert intel["role"] == "Producer"
    assert intel["genres"] == ["Post-punk", "Indie"]
    assert "Jo.Bloggs@bbc.co.uk" in intel["contactMethod"]

    no_email = Contact(row_index=1, values={}, name="Al", company="Kiss FM", role="DJ")
    _, user = build_prompt(no_email, RunContext())
    intel = simulated_intelligence(user)
    assert intel["platform"] == "Kiss FM" and intel["confidence"] == "Low"
    assert "radio" in intel["format"].lower()


def test_kinds_follow_domain_words() -> None:
    radio = simulated_intelligence(prompt("pd@wxyz-fm.com"))
    press = simulated_intelligence(prompt("ed@loudmagazine.com"))
    playlist = simulated_intelligence(prompt("me@chillplaylists.net"))
    assert "radio" in radio["format"].lower() or "radio" in radio["platform"].lower()
    assert "magazine" in press["format"].lower() or "blog" in press["format"].lower()
    assert "playlist" in playlist["format"].lower()
    genres = simulated_intelligence(prompt("a@b.com", genre="Shoegaze; Dream Pop"))["genres"]
    assert genres == ["Shoegaze", "Dream Pop"]


def test_forced_tool_use(sim: Simulator) -> None:
    tool = {"name": "record_intel", "description": "Record it", "input_schema": json_schema()}
    with client(sim) as c:
        message = c.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt()}],
            tools=[{"name": "other", "input_schema": {"type": "object"}}, tool],
            tool_choice={"type": "tool", "name": "record_intel"},
        )
    assert message.stop_reason == "tool_use"
    tools = [{"name": "other", "input_schema": {"type": "object"}}, tool]
    sent = _compact([{"role": "user", "content": prompt()}]) + _compact(tools)
    assert message.usage.input_tokens == math.ceil(len(sent) / 4)
    (block,) = message.content
    answer = json.dumps(block.input, separators=(",", ":"), ensure_ascii=False)
    assert message.usage.output_tokens == math.ceil(len(answer) / 4)
    assert block.type == "tool_use" and block.name == "record_intel"
    assert Intelligence.model_validate(block.input).reasoning.startswith("[SIMULATED]")


def test_any_schema_is_filled() -> None:
    class Nested(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        score: int = pydantic.Field(ge=1, le=5)
        ratio: float
        live: bool

    class Foreign(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(extra="forbid")
        kind: Literal["a", "b"]
        tags: list[Literal["x", "y"]]
        platform: str
        nested: Nested
        maybe: str | None

    import random

    value = fill_schema(Foreign.model_json_schema(), {"platform": "BBC"}, random.Random(1))
    parsed = Foreign.model_validate(value)
    assert parsed.platform == "BBC"


def test_plain_request_gets_json_text(sim: Simulator) -> None:
    with client(sim) as c:
        message = c.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt()}]
        )
    assert Intelligence.model_validate_json(message.content[0].text).confidence == "High"


# --- auth, models, request errors -----------------------------------------------------------


def test_bearer_and_x_api_key_are_accepted_and_wrong_keys_are_not() -> None:
    with Simulator(SimulatorConfig.instant(api_keys={"good"})) as sim:
        with client(sim, api_key="good") as c:  # the SDK sends Authorization: Bearer
            assert c.messages.create(**structured(prompt())).stop_reason == "end_turn"
        with client(
            sim, api_key="ignored",
            default_headers={"x-api-key": "good", "Authorization": anthropic.Omit()},
        ) as c:
            assert c.messages.create(**structured(prompt())).stop_reason == "end_turn"
        with client(sim, api_key="bad") as c, pytest.raises(anthropic.AuthenticationError):
            c.messages.create(**structured(prompt()))
        status, body = post(f"{sim.base_url}/v1/messages", structured(prompt()), {})
        assert status == 401 and body["error"]["type"] == "authentication_error"
        assert body["type"] == "error" and body["request_id"].startswith("req_")
        assert sim.billed and len(sim.billed) == 2


def test_unknown_model_is_not_found(sim: Simulator) -> None:
    with client(sim) as c, pytest.raises(anthropic.NotFoundError) as caught:
        c.messages.create(**{**structured(prompt()), "model": "gpt-4o"})
    assert "model: gpt-4o" in str(caught.value)
    assert caught.value.request_id and caught.value.request_id.startswith("req_")
    assert sim.billed == []


def test_streaming_and_malformed_requests_are_400(sim: Simulator) -> None:
    status, body = post(
        f"{sim.base_url}/v1/messages", {**structured(prompt()), "stream": True}, {"x-api-key": "k"}
    )
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = post(
        f"{sim.base_url}/v1/messages", {"model": MODEL, "messages": []}, {"x-api-key": "k"}
    )
    assert status == 400 and "max_tokens" in body["error"]["message"]
    status, _ = post(f"{sim.base_url}/v1/nope", {}, {"x-api-key": "k"})
    assert status == 404
    status, body = post(f"{sim.base_url}/v1/messages", {}, {"x-api-key": "k"}, method="DELETE")
    assert status == 404 and body["error"]["type"] == "not_found_error"


# --- usage and billing -----------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def test_usage_follows_the_size_rule(sim: Simulator) -> None:
    kwargs = structured(prompt("zoë@radio-ça.fr", company="Radio Ça"))
    with client(sim) as c:
        message = c.messages.create(**kwargs)
        counted = c.messages.count_tokens(
            model=MODEL, system=SYSTEM, messages=kwargs["messages"],
            output_config=kwargs["output_config"],
        )
    text = SYSTEM + _compact(kwargs["messages"]) + _compact(json_schema())
    assert message.usage.input_tokens == math.ceil(len(text) / 4)
    assert counted.input_tokens == message.usage.input_tokens
    assert message.usage.output_tokens == math.ceil(len(message.content[0].text) / 4)
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.cache_creation_input_tokens == 0


def test_answer_cut_at_max_tokens(sim: Simulator) -> None:
    with client(sim) as c:
        message = c.messages.create(**{**structured(prompt()), "max_tokens": 20})
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 20
    with pytest.raises(pydantic.ValidationError):
        Intelligence.model_validate_json(message.content[0].text)
    assert sim.billed[0]["status"] == "max_tokens" and sim.billed[0]["output_tokens"] == 20


def test_billed_holds_exactly_the_billed_responses() -> None:
    rules = [
        FaultRule("e500@x.com", "500"),
        FaultRule("bad@x.com", "invalid"),
        FaultRule("cut@x.com", "max_tokens"),
        FaultRule("hang@x.com", "timeout"),
    ]
    with Simulator(SimulatorConfig.instant(rules=rules)) as sim:
        request_ids: dict[str, str | None] = {}
        with client(sim, timeout=0.5) as c:
            for email in ("ok@x.com", "e500@x.com", "bad@x.com", "cut@x.com", "hang@x.com"):
                try:
                    message = c.messages.create(**structured(prompt(email)))
                    request_ids[email] = message._request_id
                except (anthropic.InternalServerError, anthropic.APITimeoutError):
                    request_ids[email] = None
            # the hang ends once the client has given up: give the server a moment to notice
            deadline = time.monotonic() + 5
            while sim.stats.in_flight and time.monotonic() < deadline:
                time.sleep(0.02)
        billed = sim.billed
        assert [b["request_id"] for b in billed] == [
            request_ids[e] for e in ("ok@x.com", "bad@x.com", "cut@x.com")
        ]
        assert [b["status"] for b in billed] == ["ok", "invalid", "max_tokens"]
        assert all(b["model"] == MODEL and b["input_tokens"] > 0 for b in billed)
        assert set(billed[0]) == {
            "request_id", "model", "input_tokens", "output_tokens",
            "cache_creation_input_tokens", "cache_read_input_tokens", "status", "batch",
        }
        assert not any(b["batch"] for b in billed)
        stats = sim.stats
        assert stats.requests == 5 and stats.by_status == {200: 3, 500: 1}
        assert stats.abandoned == 1 and stats.in_flight == 0
        sim.reset()
        assert sim.billed == [] and sim.stats.requests == 0


# --- faults ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", anthropic.InternalServerError),
        ("502", anthropic.InternalServerError),
        ("503", anthropic.ServiceUnavailableError),
        ("529", anthropic.OverloadedError),
        ("429", anthropic.RateLimitError),
        ("400", anthropic.BadRequestError),
        ("401", anthropic.AuthenticationError),
        ("402", anthropic.PaymentRequiredError),
        ("403", anthropic.PermissionDeniedError),
        ("404", anthropic.NotFoundError),
    ],
)
def test_error_faults_by_rule(fault: str, error: type[anthropic.APIStatusError]) -> None:
    config = SimulatorConfig.instant(rules=[FaultRule("victim@", fault, times=1)], retry_after_s=7)
    with Simulator(config) as sim, client(sim) as c:
        with pytest.raises(error) as caught:
            c.messages.create(**structured(prompt("victim@x.com")))
        assert caught.value.status_code == int(fault)
        assert caught.value.response.headers["request-id"].startswith("req_")
        if fault == "429":
            assert caught.value.response.headers["retry-after"] == "7"
        # times=1: the next matching request is answered
        assert c.messages.create(**structured(prompt("victim@x.com"))).stop_reason == "end_turn"
        assert len(sim.billed) == 1


def test_invalid_fault_fails_validation_but_is_billed() -> None:
    config = SimulatorConfig.instant(rules=[FaultRule("@", "invalid")], seed=3)
    with Simulator(config) as sim, client(sim) as c:
        for i in range(6):  # both kinds of invalid answer: prose and JSON missing fields
            message = c.messages.create(**structured(prompt(f"p{i}@x.com")))
            with pytest.raises(pydantic.ValidationError):
                Intelligence.model_validate_json(message.content[0].text)
        tool_message = c.messages.create(
            model=MODEL, max_tokens=1024, messages=[{"role": "user", "content": prompt()}],
            tools=[{"name": "t", "input_schema": json_schema()}],
            tool_choice={"type": "tool", "name": "t"},
        )
        with pytest.raises(pydantic.ValidationError):
            Intelligence.model_validate(tool_message.content[0].input)
        assert [b["status"] for b in sim.billed] == ["invalid"] * 7


def test_timeout_fault_hangs_until_the_client_gives_up_and_ends_at_stop() -> None:
    before = set(threading.enumerate())
    sim = Simulator(SimulatorConfig.instant(rules=[FaultRule("hang@", "timeout")], hang_s=60))
    sim.start()
    try:
        with client(sim, timeout=0.3) as c, pytest.raises(anthropic.APITimeoutError):
            c.messages.create(**structured(prompt("hang@x.com")))
        # a second client is still waiting when the server stops
        still_waiting: list[BaseException] = []

        def wait() -> None:
            with client(sim, timeout=30) as slow:
                try:
                    slow.messages.create(**structured(prompt("hang@y.com")))
                except anthropic.APIConnectionError as exc:
                    still_waiting.append(exc)

        waiter = threading.Thread(target=wait)
        waiter.start()
        deadline = time.monotonic() + 5
        while sim.stats.in_flight < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        started = time.monotonic()
        sim.stop()
        stop_took = time.monotonic() - started
    waiter.join(5)
    assert stop_took < 3, "stop() must end a hanging request promptly"
    assert not waiter.is_alive() and len(still_waiting) == 1
    assert set(threading.enumerate()) <= before, "stop() must join every server thread"
    assert sim.billed == []
    assert sim.stats.internal_errors == []


def test_fault_rates_are_seeded() -> None:
    def outcomes(seed: int) -> list[int]:
        config = SimulatorConfig.instant(fault_rates={"500": 0.3, "529": 0.3}, seed=seed)
        codes = []
        with Simulator(config) as sim, client(sim) as c:
            for i in range(20):
                try:
                    c.messages.create(**structured(prompt(f"c{i}@x.com")))
                    codes.append(200)
                except anthropic.APIStatusError as exc:
                    codes.append(exc.status_code)
        return codes

    first = outcomes(42)
    assert first == outcomes(42)
    assert {200, 500, 529} <= set(first)


def test_bad_config_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        SimulatorConfig(fault_rates={"500": 0.7, "529": 0.7})
    with pytest.raises(UsageError):
        SimulatorConfig(fault_rates={"teapot": 0.1})
    with pytest.raises(UsageError):
        FaultRule("x", "418")
    with pytest.raises(UsageError):
        SimulatorConfig(tokens_per_s=0)


# --- rate limits -----------------------------------------------------------------------------


def test_ratelimit_headers_are_present_and_decrease() -> None:
    config = SimulatorConfig.instant(rpm=50, itpm=100_000, otpm=20_000)
    with Simulator(config) as sim, client(sim) as c:
        remaining: list[dict[str, int]] = []
        for i in range(3):
            raw = c.messages.with_raw_response.create(**structured(prompt(f"r{i}@x.com")))
            remaining.append({
                kind: int(raw.headers[f"anthropic-ratelimit-{kind}-remaining"])
                for kind in ("requests", "input-tokens", "output-tokens")
            })
            assert raw.headers["anthropic-ratelimit-requests-limit"] == "50"
            assert raw.headers["anthropic-ratelimit-input-tokens-limit"] == "100000"
            assert raw.headers["anthropic-ratelimit-output-tokens-limit"] == "20000"
            reset = datetime.fromisoformat(raw.headers["anthropic-ratelimit-requests-reset"])
            assert reset.tzinfo is not None and reset >= datetime.now(UTC).replace(microsecond=0)
        for kind in ("requests", "input-tokens", "output-tokens"):
            assert remaining[0][kind] > remaining[1][kind] > remaining[2][kind]
        assert remaining[0]["requests"] == 49


def test_rpm_burst_gets_429_with_retry_after() -> None:
    with Simulator(SimulatorConfig.instant(rpm=3)) as sim, client(sim) as c:
        for i in range(3):
            c.messages.create(**structured(prompt(f"b{i}@x.com")))
        with pytest.raises(anthropic.RateLimitError) as caught:
            c.messages.create(**structured(prompt("b3@x.com")))
        retry_after = int(caught.value.response.headers["retry-after"])
        assert 1 <= retry_after <= 20  # 3/min refills one request every 20 s
        assert caught.value.body["error"]["type"] == "rate_limit_error"
        # the handler counts a reply once it is written: the client may read it first
        deadline = time.monotonic() + 5
        while sim.stats.in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = sim.stats
        assert stats.rate_limited == 1 and stats.limiter_429 == 1 and len(sim.billed) == 3


def test_output_tokens_reservation_uses_capped_max_tokens() -> None:
    # otpm 1000: a request asking max_tokens=16000 still fits (the reservation is capped at
    # 1024, which is more than the bucket holds, so it needs a full bucket); the real output is
    # what is charged
    with Simulator(SimulatorConfig.instant(otpm=1000)) as sim, client(sim) as c:
        raw = c.messages.with_raw_response.create(**{**structured(prompt()), "max_tokens": 16000})
        used = raw.parse().usage.output_tokens
        assert int(raw.headers["anthropic-ratelimit-output-tokens-remaining"]) == 1000 - used
        with pytest.raises(anthropic.RateLimitError):
            c.messages.create(**{**structured(prompt()), "max_tokens": 1000})


def test_token_bucket_refills_continuously() -> None:
    bucket = TokenBucket(60, now=0.0)  # one per second
    assert bucket.wait_for(60, 0.0) == 0
    bucket.take(60, 0.0)
    assert bucket.remaining(0.0) == 0
    assert bucket.wait_for(1, 0.0) == pytest.approx(1.0)
    assert bucket.remaining(10.0) == 10
    assert bucket.full_in(10.0) == pytest.approx(50.0)
    assert bucket.wait_for(1000, 10.0) == pytest.approx(50.0)  # capped at the capacity
    assert bucket.remaining(1000.0) == 60


# --- latency and concurrency -----------------------------------------------------------------


def test_latency_is_ttft_plus_tokens_over_speed() -> None:
    config = SimulatorConfig(ttft_s=0.15, tokens_per_s=2000, jitter=0.0)
    with Simulator(config) as sim, client(sim) as c:
        started = time.monotonic()
        message = c.messages.create(**structured(prompt()))
        elapsed = time.monotonic() - started
    expected = 0.15 + message.usage.output_tokens / 2000
    assert expected * 0.95 <= elapsed < expected + 2.0


def test_concurrent_requests_are_served_in_parallel() -> None:
    config = SimulatorConfig(ttft_s=0.2, tokens_per_s=math.inf, jitter=0.0)

    async def burst(sim: Simulator) -> list[anthropic.types.Message]:
        async with anthropic.AsyncAnthropic(
            base_url=sim.base_url, api_key="test-key", max_retries=0
        ) as c:
            return await asyncio.gather(
                *(c.messages.create(**structured(prompt(f"p{i}@x.com"))) for i in range(10))
            )

    with Simulator(config) as sim:
        messages = asyncio.run(burst(sim))
        assert len(messages) == 10 and len(sim.billed) == 10
        # overlap, not wall time, is the proof: timing asserts are flaky on a busy machine
        assert sim.stats.max_in_flight >= 5


# --- the command -----------------------------------------------------------------------------


def test_intel_simulate_serves_until_interrupted() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "intel_cli", "simulate", "--port", "0", "--ttft", "0",
         "--speed", "inf", "--rpm", "100", "--batch-seconds", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Simulated Anthropic Messages API on http://127.0.0.1:")
        base_url = first.split(" on ", 1)[1].strip()
        hint = proc.stdout.readline() + proc.stdout.readline()
        assert f"ANTHROPIC_BASE_URL={base_url}" in hint
        status, body = post(f"{base_url}/v1/messages", structured(prompt()), {"x-api-key": "k"})
        assert status == 200 and body["usage"]["input_tokens"] > 0
        with anthropic.Anthropic(base_url=base_url, api_key="k", max_retries=0) as c:
            created = c.messages.batches.create(requests=[batch_request("one", "a@x.com")])  # type: ignore[list-item]
            assert c.messages.batches.retrieve(created.id).processing_status == "ended"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Stopped. 3 requests, 2 billed, 0 rate-limited, 1 Message Batches." in out
    assert err == ""


# --- Message Batches ------------------------------------------------------------------------


def batch_request(custom_id: str, email: str, **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "params": structured(prompt(email), **extra)}


def wait_ended(c: anthropic.Anthropic, batch_id: str, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = c.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended" or time.monotonic() > deadline:
            return batch
        time.sleep(0.02)


def test_batch_lifecycle_through_the_real_sdk() -> None:
    config = SimulatorConfig.instant(
        batch_processing_s=0.3,
        rules=[FaultRule("err@x.com", "batch_errored"), FaultRule("old@x.com", "batch_expired"),
               FaultRule("bad@x.com", "invalid"), FaultRule("ok1@x.com", "timeout")],
    )
    emails = ["ok1@x.com", "ok2@x.com", "err@x.com", "old@x.com", "bad@x.com", "ok3@x.com"]
    with Simulator(config) as sim, client(sim) as c:
        created = c.messages.batches.create(
            requests=[batch_request(f"r-{i}", e) for i, e in enumerate(emails)]  # type: ignore[misc]
        )
        assert created.processing_status == "in_progress"
        assert created.request_counts.processing == len(emails)
        assert created.results_url is None and created.ended_at is None
        assert created.expires_at - created.created_at == __import__("datetime").timedelta(
            hours=24
        )
        assert sim.billed == []  # nothing is billed before the batch ends
        ended = wait_ended(c, created.id)
        assert ended.processing_status == "ended"
        assert ended.ended_at is not None
        assert ended.results_url == f"{sim.base_url}/v1/messages/batches/{created.id}/results"
        counts = ended.request_counts
        assert (counts.succeeded, counts.errored, counts.expired, counts.canceled,
                counts.processing) == (4, 1, 1, 0, 0)
        results = list(c.messages.batches.results(created.id))
        ids = [r.custom_id for r in results]
        assert sorted(ids) == sorted(f"r-{i}" for i in range(len(emails)))
        assert ids != [f"r-{i}" for i in range(len(emails))]  # out of order, as the API warns
        by_id = {r.custom_id: r.result for r in results}
        assert by_id["r-2"].type == "errored"
        assert by_id["r-2"].error.error.type == "api_error"  # type: ignore[union-attr]
        assert by_id["r-3"].type == "expired"
        ok = by_id["r-0"]
        assert ok.type == "succeeded"  # a timeout rule does nothing to a batch request
        data = json.loads(ok.message.content[0].text)  # type: ignore[union-attr]
        Intelligence.model_validate(data)
        bad = by_id["r-4"]
        assert bad.type == "succeeded"
        with pytest.raises(pydantic.ValidationError):
            Intelligence.model_validate_json(bad.message.content[0].text)  # type: ignore[union-attr]
        billed = sim.billed
        # every succeeded request is billed once, as a batch request, with its real usage
        assert len(billed) == 4 and all(b["batch"] for b in billed)
        messages = {r.result.message.id: r.result.message for r in results  # type: ignore[union-attr]
                    if r.result.type == "succeeded"}
        assert sorted(m.usage.output_tokens for m in messages.values()) == sorted(
            b["output_tokens"] for b in billed
        )
        assert all(m.usage.service_tier == "batch" for m in messages.values())
        assert sim.stats.batches_created == 1 and sim.stats.batch_requests == len(emails)
        # results stay available, the same each time
        again = [r.custom_id for r in c.messages.batches.results(created.id)]
        assert again == ids
        assert len(sim.billed) == 4
        assert sim.stats.internal_errors == []


def test_batch_errors_are_api_errors() -> None:
    config = SimulatorConfig.instant(batch_processing_s=0.0, batch_max_requests=3,
                                     batch_max_bytes=20_000, api_keys={"test-key"})
    with Simulator(config) as sim, client(sim) as c:
        with pytest.raises(anthropic.NotFoundError):
            c.messages.batches.retrieve("msgbatch_nope")
        with pytest.raises(anthropic.BadRequestError, match="at most 3"):
            c.messages.batches.create(
                requests=[batch_request(f"r{i}", "a@x.com") for i in range(4)]  # type: ignore[misc]
            )
        with pytest.raises(anthropic.BadRequestError, match="custom_id"):
            c.messages.batches.create(requests=[batch_request("has space", "a@x.com")])  # type: ignore[list-item]
        with pytest.raises(anthropic.BadRequestError, match="custom_id"):
            c.messages.batches.create(requests=[batch_request("x" * 65, "a@x.com")])  # type: ignore[list-item]
        with pytest.raises(anthropic.BadRequestError, match="duplicate"):
            c.messages.batches.create(
                requests=[batch_request("same", "a@x.com"), batch_request("same", "b@x.com")]  # type: ignore[list-item]
            )
        with pytest.raises(anthropic.APIStatusError) as too_big:
            c.messages.batches.create(
                requests=[batch_request("big", "a@x.com", metadata={"user_id": "u" * 30_000})]  # type: ignore[list-item]
            )
        assert too_big.value.status_code == 413
        with pytest.raises(anthropic.AuthenticationError):
            client(sim, api_key="wrong").messages.batches.retrieve("msgbatch_nope")
        assert sim.stats.batches_created == 0
        # a bad request inside a batch is validated when it is processed: errored, not 400
        created = c.messages.batches.create(
            requests=[{"custom_id": "nomodel", "params": {"max_tokens": 10, "messages": []}}]  # type: ignore[typeddict-item]
        )
        ended = wait_ended(c, created.id)
        assert ended.request_counts.errored == 1
        (line,) = list(c.messages.batches.results(created.id))
        assert line.result.type == "errored"
        assert line.result.error.error.type == "invalid_request_error"  # type: ignore[union-attr]
        assert sim.billed == []


def test_batch_results_before_the_end_and_cancel() -> None:
    config = SimulatorConfig.instant(batch_processing_s=30.0)
    with Simulator(config) as sim, client(sim) as c:
        created = c.messages.batches.create(
            requests=[batch_request(f"r{i}", f"p{i}@x.com") for i in range(3)]  # type: ignore[misc]
        )
        with pytest.raises(anthropic.AnthropicError, match="results_url"):
            list(c.messages.batches.results(created.id))
        status, body = post(f"{sim.base_url}/v1/messages/batches/{created.id}/results", {},
                            {"x-api-key": "k"}, method="GET")
        assert status == 400 and "still processing" in body["error"]["message"]
        cancelling = c.messages.batches.cancel(created.id)
        assert cancelling.processing_status == "canceling"
        assert cancelling.cancel_initiated_at is not None
        ended = wait_ended(c, created.id)
        assert ended.processing_status == "ended"
        assert ended.request_counts.canceled == 3
        assert {r.result.type for r in c.messages.batches.results(created.id)} == {"canceled"}
        assert sim.billed == []


def test_batch_requests_finish_over_the_processing_time_and_cancel_keeps_the_done_ones() -> None:
    now = [100.0]
    config = SimulatorConfig.instant(batch_processing_s=10.0)
    with Simulator(config, clock=lambda: now[0]) as sim, client(sim) as c:
        created = c.messages.batches.create(
            requests=[batch_request(f"r{i}", f"p{i}@x.com") for i in range(4)]  # type: ignore[misc]
        )
        now[0] += 5.0  # requests 0 and 1 are done (at 2.5 s and 5 s)
        assert c.messages.batches.retrieve(created.id).processing_status == "in_progress"
        c.messages.batches.cancel(created.id)
        ended = c.messages.batches.retrieve(created.id)
        assert ended.processing_status == "ended"
        assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (2, 2)
        assert len(sim.billed) == 2


def test_realtime_requests_ignore_batch_faults() -> None:
    config = SimulatorConfig.instant(rules=[FaultRule("a@x.com", "batch_errored")])
    with Simulator(config) as sim, client(sim) as c:
        message = c.messages.create(**structured(prompt("a@x.com")))
        assert message.stop_reason == "end_turn"
        assert sim.billed[0]["batch"] is False
