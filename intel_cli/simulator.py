"""The simulator: a local stand-in for the Anthropic Messages API (SPEC 6).

It owns everything the project's tests and benchmarks need from "Anthropic" without the
network: an HTTP server on 127.0.0.1 that the real SDK talks to, realistic latency, the
`anthropic-ratelimit-*` headers and 429s from token buckets, injectable faults (by rate and
by rule), token usage computed from the real request and answer, and plausible, clearly
labelled simulated intelligence. It records what it billed so tests can reconcile costs.

Rules the rest of the project can rely on (documented here because tests assert them):

- input_tokens = ceil(len(T) / 4) (at least 1), where T is the concatenation of `system`,
  `messages`, `tools` and the output-format schema, each a string as-is or else compact
  JSON (`separators=(",", ":")`, `ensure_ascii=False`, `sort_keys=True`). count_tokens
  returns the same number.
- output_tokens = ceil(len(A) / 4) (at least 1), where A is the text block's text, or the
  tool input in the same compact JSON. When that exceeds `max_tokens` the answer is cut,
  stop_reason is "max_tokens" and output_tokens = max_tokens.
- Rate limits: a request is admitted when every configured bucket holds what it needs:
  1 request, its input tokens, and min(max_tokens, OUTPUT_RESERVE_CAP) output tokens
  (Anthropic estimates output from max_tokens and settles on the real count; the answer is
  computed up front here, so the buckets are charged the real counts at once). Buckets
  hold a minute's worth and refill continuously. A request that does not fit gets 429
  with `retry-after` = whole seconds until it would fit (at least 1).
- Billing: a response is billed (appears in `Simulator.billed`) when a 200 answer is
  written to a client that is still connected. Errors are never billed; neither is an
  answer whose client already gave up (a timeout), since the client never sees its usage.
  Every billed entry has `"batch": false`, or `true` for a Message Batches result (billed
  when its batch ends, at half price).
- Prompt caching: the cacheable prefix is, in order, `tools`, the output-format schema and
  the `system` blocks, up to and including the last block (in `system`, else in `tools`)
  marked `cache_control`; markers inside `messages` are ignored. Its size P = ceil(len(X)/4)
  where X is the compact JSON of those parts (tools, schema, and the system blocks as a list,
  cut after the marked one). When P reaches `intel_cli.prompt.min_cacheable_tokens(model)`,
  the first request with that prefix writes it (`cache_creation_input_tokens` = P) and
  requests that arrive once it is written (after `ttft_s`) and within `cache_ttl_s` of its
  last use read it (`cache_read_input_tokens` = P, and the TTL restarts); requests in flight
  together before that write it again, as on the real API. input_tokens is then the
  uncached remainder: the request's total (the rule above) minus P. Cache reads do not count
  against the input-tokens bucket (Anthropic's ITPM excludes them); writes do.
- Message Batches (`/v1/messages/batches`): create, retrieve, results (JSONL at the
  batch's `results_url`, which points back here) and cancel, in the API's shapes. Request i
  of n finishes at created + batch_processing_s * (i+1)/n; the batch ends when the last one
  does, or at once after a cancel (requests not finished by then are `canceled`). Requests
  are answered as /v1/messages would answer them (params are validated only then: a bad
  request is `errored`), without rate limits or latency; rules with the faults
  `batch_errored` / `batch_expired` make a request `errored` (api_error) / `expired`, a
  status-code fault makes it `errored` with that error, and `timeout`/`429` do nothing to a
  batch request. Realtime requests ignore the batch_* rules. Results come out in a shuffled
  order (never the input order when there are two or more).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import random
import re
import select
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from intel_cli.errors import UsageError
from intel_cli.prompt import min_cacheable_tokens

# What `FaultRule.fault` and `SimulatorConfig.fault_rates` may name.
FAULTS: frozenset[str] = frozenset(
    {"timeout", "500", "502", "503", "529", "429", "invalid", "max_tokens",
     "400", "401", "402", "403", "404", "batch_errored", "batch_expired"}
)
# faults that only a Message Batches request can have
BATCH_FAULTS: frozenset[str] = frozenset({"batch_errored", "batch_expired"})
# what a batch request ignores: batches have no per-request timeout or rate limit
_NOT_IN_BATCHES: frozenset[str] = frozenset({"timeout", "429"})

# The Message Batches API's limits per batch
BATCH_MAX_REQUESTS = 100_000
BATCH_MAX_BYTES = 256 * 1024 * 1024
# custom_id: 1-64 letters, digits, _ and -
CUSTOM_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# how long results stay downloadable, and when an unfinished batch expires (the API's 29 d/24 h)
_BATCH_EXPIRES = timedelta(hours=24)

# Output tokens reserved against the output-tokens bucket per request at most: a request
# asking max_tokens=64000 for a 400-token answer should not be refused for it.
OUTPUT_RESERVE_CAP = 1024

# status -> (Anthropic error type, message) for injected errors
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "simulated invalid request"),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "simulated: not found"),
    429: ("rate_limit_error", "simulated: rate limit exceeded"),
    500: ("api_error", "Internal server error (simulated)"),
    502: ("api_error", "Bad gateway (simulated)"),
    503: ("api_error", "Service unavailable (simulated)"),
    529: ("overloaded_error", "Overloaded (simulated)"),
}


@dataclass(frozen=True)
class FaultRule:
    """A request whose JSON body contains `match` gets `fault`, for its first `times`
    matching requests (None: always). Rules are tried in order; an exhausted rule is
    skipped."""

    match: str
    fault: str
    times: int | None = None

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise UsageError(f"unknown simulator fault {self.fault!r}: use one of {_faults()}")
        if self.times is not None and self.times < 0:
            raise UsageError("FaultRule.times must be >= 0 or None")


def _faults() -> str:
    return ", ".join(sorted(FAULTS))


@dataclass
class SimulatorConfig:
    """How the simulated API behaves. Defaults are a realistic, fault-free API."""

    ttft_s: float = 0.4  # time to first token
    tokens_per_s: float = 60.0  # output speed; math.inf with ttft_s=0 means no latency
    jitter: float = 0.1  # latency is multiplied by 1 +/- jitter (uniform)
    rpm: int | None = None  # requests per minute; None = unlimited
    itpm: int | None = None  # input tokens per minute
    otpm: int | None = None  # output tokens per minute
    # fault kind -> probability per request, e.g. {"timeout": 0.05, "529": 0.02}
    fault_rates: dict[str, float] = field(default_factory=dict)
    hang_s: float = 60.0  # how long a "timeout" hangs (ends at once when the server stops)
    retry_after_s: int = 1  # retry-after of injected 429s
    api_keys: set[str] | None = None  # None: any non-empty key is accepted
    seed: int | None = None
    rules: list[FaultRule] = field(default_factory=list)
    cache_ttl_s: float = 300.0  # prompt cache lifetime after the last use (Anthropic: 5 min)
    batch_processing_s: float = 2.0  # how long a Message Batch takes to end
    batch_max_requests: int = BATCH_MAX_REQUESTS
    batch_max_bytes: int = BATCH_MAX_BYTES

    def __post_init__(self) -> None:
        if self.ttft_s < 0 or self.tokens_per_s <= 0 or not 0 <= self.jitter < 1:
            raise UsageError("simulator latency needs ttft >= 0, speed > 0, 0 <= jitter < 1")
        for name, limit in (("rpm", self.rpm), ("itpm", self.itpm), ("otpm", self.otpm)):
            if limit is not None and limit <= 0:
                raise UsageError(f"simulator {name} must be a positive number (or unset)")
        for kind, rate in self.fault_rates.items():
            if kind not in FAULTS:
                raise UsageError(f"unknown simulator fault {kind!r}: use one of {_faults()}")
            if not 0 <= rate <= 1:
                raise UsageError(f"simulator {kind} rate must be between 0 and 1")
        if sum(self.fault_rates.values()) > 1 + 1e-9:
            raise UsageError("simulator fault rates add up to more than 1")
        if self.hang_s < 0 or self.retry_after_s < 0:
            raise UsageError("simulator hang and retry-after must be >= 0")
        if self.cache_ttl_s < 0 or self.batch_processing_s < 0:
            raise UsageError("simulator cache TTL and batch processing time must be >= 0")
        if self.batch_max_requests < 1 or self.batch_max_bytes < 1:
            raise UsageError("simulator batch limits must be at least 1")

    @classmethod
    def instant(cls, **overrides: Any) -> SimulatorConfig:
        """No latency at all: for tests and throughput benchmarks."""
        values: dict[str, Any] = {"ttft_s": 0.0, "tokens_per_s": math.inf, "jitter": 0.0}
        values.update(overrides)
        return cls(**values)


# --- token counting -------------------------------------------------------------------------


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def tokens_for(text: str) -> int:
    """The simulator's tokenizer: one token per 4 characters, rounded up, at least 1."""
    return max(1, math.ceil(len(text) / 4))


def _output_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    config = body.get("output_config")
    if isinstance(config, dict):
        fmt = config.get("format")
        if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
            schema = fmt.get("schema")
            if isinstance(schema, dict):
                return schema
    return None


def request_text(body: dict[str, Any]) -> str:
    """What a request's input tokens are counted from (see the module docstring)."""
    parts = [body.get("system"), body.get("messages"), body.get("tools"), _output_schema(body)]
    return "".join(p if isinstance(p, str) else _compact(p) for p in parts if p is not None)


def count_input_tokens(body: dict[str, Any]) -> int:
    return tokens_for(request_text(body))


def _marked(blocks: Any) -> int | None:
    """Index of the last block carrying cache_control in a list of blocks, else None."""
    if not isinstance(blocks, list):
        return None
    found = None
    for i, block in enumerate(blocks):
        if isinstance(block, dict) and isinstance(block.get("cache_control"), dict):
            found = i
    return found


def cache_prefix(body: dict[str, Any]) -> str | None:
    """The text a request's cacheable prefix is counted from, or None when nothing is
    marked (see the module docstring)."""
    tools, system = body.get("tools"), body.get("system")
    in_system, in_tools = _marked(system), _marked(tools)
    if in_system is not None and isinstance(system, list):
        parts: list[Any] = [tools, _output_schema(body), system[: in_system + 1]]
    elif in_tools is not None and isinstance(tools, list):
        parts = [tools[: in_tools + 1]]
    else:
        return None
    return "".join(_compact(p) for p in parts if p is not None)


# --- rate limits ----------------------------------------------------------------------------


class TokenBucket:
    """A bucket of `capacity` (a minute's worth) refilling continuously at capacity/60 per
    second, as Anthropic describes its limits. `now` is a monotonic time in seconds."""

    def __init__(self, capacity: int, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / 60.0
        self.level = float(capacity)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self.level = min(self.capacity, self.level + (now - self._at) * self.rate)
            self._at = now

    def wait_for(self, amount: int, now: float) -> float:
        """Seconds until `amount` fits (0 when it fits now). More than the capacity is
        treated as the capacity, so a huge request fits once the bucket is full."""
        self._refill(now)
        need = min(amount, self.capacity)
        return max(0.0, (need - self.level) / self.rate)

    def take(self, amount: int, now: float) -> None:
        # may go below zero: a request larger than its reservation runs the bucket into debt
        self._refill(now)
        self.level -= amount

    def remaining(self, now: float) -> int:
        self._refill(now)
        return max(0, math.floor(self.level))

    def full_in(self, now: float) -> float:
        self._refill(now)
        return max(0.0, (self.capacity - self.level) / self.rate)


# --- simulated intelligence -----------------------------------------------------------------

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_LABELLED = re.compile(
    r"""^[\s\-*#>"']*(?P<key>[A-Za-z][A-Za-z /_-]{1,30}?)["']?\s*[:=]\s*"""
    r"""["']?(?P<value>[^\n]*?)["',]*\s*$""",
    re.MULTILINE,
)
_KEYS = {
    "company": {"company", "station", "outlet", "publication", "organisation", "organization",
                "platform", "agency", "label"},
    "name": {"name", "full name", "contact name", "contact"},
    "role": {"role", "title", "job title", "position", "contact type"},
    "genre": {"genre", "genres"},
    "region": {"region", "location", "country", "region / country"},
    "show": {"show", "programme", "program"},
}

_FREE_MAIL = {
    "gmail.com", "googlemail.com", "hotmail.com", "hotmail.co.uk", "outlook.com", "live.com",
    "live.co.uk", "yahoo.com", "yahoo.co.uk", "icloud.com", "me.com", "mac.com", "aol.com",
    "protonmail.com", "proton.me", "btinternet.com", "gmx.com", "gmx.de", "bigpond.com",
}


@dataclass(frozen=True)
class _Known:
    platform: str
    kind: str  # radio | press | playlist | label | agency | contact
    format: str
    coverage: str
    genres: tuple[str, ...]


_KNOWN: dict[str, _Known] = {
    "bbc.co.uk": _Known("BBC Radio", "radio", "Public service radio (BBC Radio 1, 2, 6 Music)",
                        "National (UK)", ("Indie", "Alternative", "Pop", "Electronic")),
    "bbc.com": _Known("BBC Radio", "radio", "Public service radio", "National (UK)",
                      ("Indie", "Pop", "Alternative")),
    "spotify.com": _Known("Spotify editorial playlists", "playlist",
                          "Editorial streaming playlists", "Global (streaming)",
                          ("Pop", "Indie", "Hip-Hop", "Electronic")),
    "apple.com": _Known("Apple Music editorial", "playlist", "Editorial playlists and radio",
                        "Global (streaming)", ("Pop", "Alternative", "Hip-Hop")),
    "amazon.com": _Known("Amazon Music editorial", "playlist", "Editorial streaming playlists",
                         "Global (streaming)", ("Pop", "Country", "Rock")),
    "deezer.com": _Known("Deezer editorial", "playlist", "Editorial streaming playlists",
                         "Global (streaming, France-based)", ("Pop", "Electronic", "French")),
    "soundcloud.com": _Known("SoundCloud editorial", "playlist", "Curated streaming playlists",
                             "Global (streaming)", ("Hip-Hop", "Electronic")),
    "abc.net.au": _Known("triple j (ABC)", "radio", "National youth broadcaster",
                         "National (Australia)", ("Indie", "Alternative", "Hip-Hop")),
    "kexp.org": _Known("KEXP 90.3 FM", "radio", "Listener-supported non-commercial radio",
                       "Regional (Seattle) and online worldwide", ("Indie", "Alternative")),
    "kcrw.com": _Known("KCRW", "radio", "Public radio, eclectic music programming",
                       "Regional (Los Angeles) and online", ("Eclectic", "Indie", "Electronic")),
    "npr.org": _Known("NPR Music", "radio", "Public radio and online music coverage",
                      "National (US)", ("Indie", "Folk", "Jazz")),
    "siriusxm.com": _Known("SiriusXM", "radio", "Satellite radio", "National (US and Canada)",
                           ("Pop", "Rock", "Country")),
    "iheartmedia.com": _Known("iHeartRadio", "radio", "Commercial radio network",
                              "National (US)", ("Pop", "Rock", "Hip-Hop")),
    "radiox.co.uk": _Known("Radio X", "radio", "Commercial alternative rock radio",
                           "National (UK)", ("Alternative", "Rock", "Indie")),
    "absoluteradio.co.uk": _Known("Absolute Radio", "radio", "Commercial rock radio",
                                  "National (UK)", ("Rock", "Classic Rock", "Indie")),
    "global.com": _Known("Global (Capital, Heart, Radio X)", "radio",
                         "Commercial radio network", "National (UK)", ("Pop", "Dance")),
    "rte.ie": _Known("RTÉ Radio", "radio", "Public service radio", "National (Ireland)",
                     ("Pop", "Indie", "Traditional")),
    "cbc.ca": _Known("CBC Music", "radio", "Public service radio and streaming",
                     "National (Canada)", ("Indie", "Pop", "Folk")),
    "rnz.co.nz": _Known("RNZ", "radio", "Public service radio", "National (New Zealand)",
                        ("Indie", "Pop")),
    "nme.com": _Known("NME", "press", "Online music magazine", "Global (UK-based)",
                      ("Indie", "Rock", "Pop")),
    "pitchfork.com": _Known("Pitchfork", "press", "Online music publication", "Global",
                            ("Indie", "Experimental", "Hip-Hop")),
    "rollingstone.com": _Known("Rolling Stone", "press", "Music and culture magazine",
                               "Global (US-based)", ("Rock", "Pop", "Hip-Hop")),
    "theguardian.com": _Known("The Guardian (music desk)", "press", "National newspaper",
                              "National (UK) and online", ("Pop", "Indie", "Rock")),
    "clashmusic.com": _Known("Clash Magazine", "press", "Music magazine", "National (UK)",
                             ("Indie", "Electronic", "Hip-Hop")),
}

_COUNTRIES: tuple[tuple[str, str], ...] = (
    (".co.uk", "UK"), (".org.uk", "UK"), (".uk", "UK"), (".com.au", "Australia"),
    (".net.au", "Australia"), (".au", "Australia"), (".co.nz", "New Zealand"),
    (".nz", "New Zealand"), (".ca", "Canada"), (".ie", "Ireland"), (".de", "Germany"),
    (".fr", "France"), (".nl", "Netherlands"), (".se", "Sweden"), (".es", "Spain"),
    (".it", "Italy"), (".us", "US"),
)

_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("playlist", ("playlist", "playlists", "curator", "curated")),
    ("radio", ("radio", "fm", "am", "dab", "station")),
    ("press", ("blog", "magazine", "mag", "press", "news", "zine", "journal", "review",
               "reviews")),
    ("agency", ("pr", "agency", "promo", "promotions", "plugging", "publicity")),
    ("label", ("records", "recordings", "label")),
)

_GENRES = ("Indie", "Alternative", "Pop", "Electronic", "Hip-Hop", "Rock", "Folk", "Jazz",
           "Soul", "Dance", "Singer-songwriter", "R&B")

_BY_KIND: dict[str, dict[str, tuple[str, ...]]] = {
    "radio": {
        "role": ("Producer", "Presenter / DJ", "Music programmer", "Head of Music"),
        "format": ("Alternative / indie radio", "Contemporary hit radio", "Specialist music radio",
                   "Community radio"),
        "method": ("Email the producer a private streaming link and a one-line hook",
                   "Email with a private link; follow up once after a week"),
        "guidelines": ("Radio edit (under 3:30), clean version, WAV or 320k MP3 on request",
                       "Private SoundCloud/Dropbox link, release date and one-paragraph bio"),
        "tips": ("Lead with local angle and upcoming live dates",
                 "Mention any existing airplay or playlist support",
                 "Keep the email under 100 words with the link in the first line",
                 "Offer a session or interview around the release",
                 "Send the radio edit, not the album version"),
    },
    "press": {
        "role": ("Music journalist", "Editor", "Reviews editor", "Features writer"),
        "format": ("Online music magazine", "Music blog", "Print and online music magazine"),
        "method": ("Email a short pitch with a private stream and press photos",
                   "Email; they prefer pitches with an exclusive angle"),
        "guidelines": ("Press release, private stream, hi-res photos; 4-6 weeks before release",
                       "Exclusive premieres considered; send embargoed links"),
        "tips": ("Offer a premiere or exclusive",
                 "Tie the pitch to a story, not just a release",
                 "Personalise with a reference to a recent piece they wrote",
                 "Include hi-res press shots and a short bio"),
    },
    "playlist": {
        "role": ("Playlist curator", "Editorial curator", "Playlist editor"),
        "format": ("Streaming playlists", "Editorial and user-curated playlists"),
        "method": ("Pitch through the platform's submission tool, then a short email",
                   "Email with a streaming link and the playlist you are pitching for"),
        "guidelines": ("Pitch unreleased tracks at least 7 days before release",
                       "One track per pitch, with mood, genre and release date"),
        "tips": ("Name the specific playlist that fits the track",
                 "Share streaming momentum and saves, not just follower counts",
                 "Pitch one track, not the whole record",
                 "Follow the playlist and engage before pitching"),
    },
    "agency": {
        "role": ("Publicist", "Radio plugger", "Campaign manager"),
        "format": ("Music PR and promotion agency",),
        "method": ("Email with campaign goals, budget and release timeline",),
        "guidelines": ("Release plan and a private stream; campaigns book 8-12 weeks out",),
        "tips": ("Be clear about budget and goals",
                 "Approach 2-3 months before release",
                 "Share previous press and radio support"),
    },
    "label": {
        "role": ("A&R", "Label manager", "Head of A&R"),
        "format": ("Independent record label",),
        "method": ("Email a private stream with streaming stats and live history",),
        "guidelines": ("Demos by private link only; no attachments",),
        "tips": ("Show an engaged fanbase", "Explain why this label fits your sound",
                 "Keep the demo to your best 3 tracks"),
    },
    "contact": {
        "role": ("Music industry contact", "Independent curator", "Music supervisor"),
        "format": ("Independent music outlet",),
        "method": ("Email with a short personalised pitch and a private streaming link",),
        "guidelines": ("Private streaming link, release date, short bio",),
        "tips": ("Research what they have supported recently",
                 "Keep it short and personal",
                 "Follow up once, politely, after a week"),
    },
}

_TIMING = (
    "Tuesday-Thursday mornings, 3-4 weeks before release",
    "Early in the week, at least 4 weeks before the release date",
    "Mid-week mornings; avoid Fridays and release days",
    "Monday or Tuesday, 2-6 weeks ahead of release",
)


@dataclass
class _Contact:
    """What the simulator could read about the contact from the user's message."""

    email: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def domain(self) -> str | None:
        return self.email.rsplit("@", 1)[1].lower() if self.email else None


def _user_text(body: dict[str, Any]) -> str:
    texts: list[str] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(
                str(block.get("text", ""))
                for block in content
                if isinstance(block, dict) and block.get("type") == "text"
            )
    return "\n".join(texts)


def read_contact(text: str) -> _Contact:
    """Find the contact's e-mail and labelled fields (`Company: X`, `"station": "X"`)."""
    contact = _Contact()
    found = _EMAIL.search(text)
    if found:
        contact.email = found.group(0).strip(".'")
    # JSON-ish prompts put each field on its own line too, so one pattern serves both
    for line_match in _LABELLED.finditer(text):
        key = line_match.group("key").strip().strip("\"'").lower()
        value = line_match.group("value").strip().strip("\"'")
        if not value or value.lower() in {"null", "none", "n/a", "-"}:
            continue
        for name, aliases in _KEYS.items():
            if key in aliases and name not in contact.fields:
                contact.fields[name] = value
    return contact


def _country(domain: str | None, region: str | None) -> str | None:
    if domain:
        for suffix, country in _COUNTRIES:
            if domain.endswith(suffix):
                return country
    return region


def _known(domain: str | None) -> _Known | None:
    if not domain:
        return None
    for key, known in _KNOWN.items():
        if domain == key or domain.endswith("." + key):
            return known
    return None


def _kind_from_words(*texts: str | None) -> str | None:
    words: set[str] = set()
    joined = " ".join(t.lower() for t in texts if t)
    words.update(re.split(r"[^a-z0-9]+", joined))
    for kind, keys in _KEYWORDS:
        for key in keys:
            # short keys must be whole words ("fm", "pr"); longer ones may be inside a label
            # ("amazingradio", "indieblog")
            if key in words or (len(key) > 3 and key in joined):
                return kind
    return None


def _site_name(domain: str) -> str:
    label = domain.split(".")[0].replace("-", " ")
    # "amazingradio" reads better as "Amazing Radio"
    label = re.sub(r"(?<=[a-z])(radio|fm|blog|magazine|mag|records|music|playlists?)$",
                   r" \1", label)
    return label.title().replace(" Fm", " FM")


def simulated_intelligence(text: str) -> dict[str, Any]:
    """Plausible intelligence for the contact in `text` (a user message), deterministic per
    contact. Values are the fields of intel_cli.schema.Intelligence."""
    contact = read_contact(text)
    key = (contact.email or text).strip().lower()
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    domain = contact.domain
    company = contact.fields.get("company")
    known = _known(domain)
    generic = domain in _FREE_MAIL if domain else False
    country = _country(None if generic else domain, contact.fields.get("region"))

    if known:
        kind, platform = known.kind, known.platform
        why = f"the e-mail domain {domain} ({known.platform})"
    else:
        kind = _kind_from_words(
            None if generic else domain, company, contact.fields.get("role"),
            contact.fields.get("show"),
        ) or "contact"
        if company:
            platform = company
        elif domain and not generic:
            platform = _site_name(domain) + (" Radio" if kind == "radio" and
                                             "radio" not in domain else "")
        else:
            platform = "Independent (no organisation found)"
        why = (f"keywords in the domain {domain}" if domain and not generic
               else "a personal e-mail address" if domain else "no e-mail address")
        if company:
            why += f" and the organisation '{company}'"
    pool = _BY_KIND[kind]

    if known:
        coverage, fmt = known.coverage, known.format
    else:
        scope = {"radio": "Regional", "press": "National", "playlist": "Online",
                 "label": "International", "agency": "National"}.get(kind, "Local")
        if country:
            coverage = (f"Online ({country} audience)" if kind == "playlist"
                        else f"{scope} ({country})")
        else:
            coverage = {"radio": "Local and online", "press": "Online, international readership",
                        "playlist": "Global (streaming)"}.get(kind, "Online")
        fmt = rng.choice(pool["format"])
        if country and kind in {"radio", "press"}:
            adjective = {"UK": "British", "Australia": "Australian", "Canada": "Canadian",
                         "Ireland": "Irish", "New Zealand": "New Zealand", "US": "American",
                         "Germany": "German", "France": "French"}.get(country, country)
            fmt = f"{adjective} {fmt[0].lower()}{fmt[1:]}"

    genre_text = contact.fields.get("genre")
    if genre_text:
        genres = [g.strip() for g in re.split(r"[;,/|]", genre_text) if g.strip()][:4]
    elif known:
        genres = list(known.genres)
    else:
        genres = rng.sample(_GENRES, 3)

    if contact.email is None:
        confidence = "Low"
    elif known:
        confidence = "High"
    else:
        confidence = "Medium"

    method = rng.choice(pool["method"])
    if known and known.kind == "playlist" and "spotify" in known.platform.lower():
        method = "Pitch through Spotify for Artists at least 7 days before release"
    if contact.email:
        method = f"{method} ({contact.email})"

    return {
        "platform": platform,
        "role": contact.fields.get("role") or rng.choice(pool["role"]),
        "format": fmt,
        "coverage": coverage,
        "genres": genres,
        "contactMethod": method,
        "bestTiming": rng.choice(_TIMING),
        "submissionGuidelines": rng.choice(pool["guidelines"]),
        "pitchTips": rng.sample(pool["tips"], min(3, len(pool["tips"]))),
        "confidence": confidence,
        "reasoning": f"[SIMULATED] Inferred from {why}; no real research was done.",
    }


def fill_schema(schema: dict[str, Any], hints: dict[str, Any], rng: random.Random,
                root: dict[str, Any] | None = None, name: str = "") -> Any:
    """A value valid against `schema` (the JSON-schema subset structured outputs use),
    taking the value for a property from `hints` when it fits."""
    root = root if root is not None else schema
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part, {}) if isinstance(target, dict) else {}
        return fill_schema(target, hints, rng, root, name)
    for combiner in ("anyOf", "oneOf", "allOf"):
        options = schema.get(combiner)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and o.get("type") != "null"]
            return fill_schema((usable or options)[0], hints, rng, root, name)
    if "const" in schema:
        return schema["const"]
    hint = hints.get(name) if name else None
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return hint if hint in enum else rng.choice(enum)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {key: fill_schema(sub, hints, rng, root, key) for key, sub in props.items()}
    if kind == "array":
        raw_items = schema.get("items")
        items: dict[str, Any] = raw_items if isinstance(raw_items, dict) else {}
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", 1_000_000))
        strings = items.get("type", "string") == "string" and "enum" not in items
        if (strings and isinstance(hint, list) and len(hint) >= low
                and all(isinstance(h, str) for h in hint)):
            return hint[:high]
        count = max(low, min(high, 2))
        return [fill_schema(items, {}, rng, root, f"{name}[{i}]") for i in range(count)]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return rng.randint(low, int(schema.get("maximum", low + 100)))
    if kind == "number":
        floor = float(schema.get("minimum", 0))
        return round(rng.uniform(floor, float(schema.get("maximum", floor + 100))), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    text = hint if isinstance(hint, str) else f"[SIMULATED] {name or 'value'}"
    min_length = int(schema.get("minLength", 0))
    if len(text) < min_length:
        text = text.ljust(min_length, ".")
    if "maxLength" in schema:
        text = text[: int(schema["maxLength"])]
    return text


@functools.cache
def _intel_schema() -> dict[str, Any]:
    # the schema of a plain request (no format, no forced tool); cached: pydantic builds it
    # afresh on every call and this runs per request. Callers never mutate it.
    from intel_cli.schema import json_schema

    return json_schema()


def _invalid_text(answer: dict[str, Any], required: list[str], rng: random.Random) -> str:
    """Output that fails the schema: prose, or the JSON answer without two required fields."""
    if not required or rng.random() < 0.5:
        return ("I'm sorry, I could not find reliable public information about this contact, "
                "so I can't provide structured intelligence for them.")
    return _compact_answer({k: v for k, v in answer.items() if k not in required[:2]})


def _compact_answer(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# --- the HTTP side --------------------------------------------------------------------------


class _Reply(Exception):
    """Raised inside request handling to answer with an error."""

    def __init__(self, status: int, error_type: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.headers = headers or {}


@dataclass
class SimulatorStats:
    """Counters since start (or the last reset)."""

    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0  # every 429, from the buckets or injected
    limiter_429: int = 0  # 429s from the rpm/itpm/otpm buckets only
    abandoned: int = 0  # answers not delivered: the client had gone (or the server stopped)
    in_flight: int = 0
    max_in_flight: int = 0
    internal_errors: list[str] = field(default_factory=list)  # simulator bugs; should be []
    batches_created: int = 0  # Message Batches accepted by POST /v1/messages/batches
    batch_requests: int = 0  # requests in those batches


class Simulator:
    """The simulated Messages API on 127.0.0.1. Use as a context manager, or start()/stop().

    `port=0` picks a free port; `.base_url` is what ANTHROPIC_BASE_URL should be.
    """

    def __init__(self, config: SimulatorConfig | None = None, *, port: int = 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SimulatorConfig()
        self._port = port
        self._clock = clock
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._rng = random.Random(self.config.seed)
        self._rule_uses = [0] * len(self.config.rules)
        self._billed: list[dict[str, Any]] = []
        self._stats = SimulatorStats()
        self._buckets: dict[str, TokenBucket] = {}
        # prompt cache: prefix key -> entry; Message Batches by id (their own lock: finishing
        # a batch composes answers, which takes self._lock)
        self._cache: dict[str, _CacheEntry] = {}
        self._batches: dict[str, _Batch] = {}
        self._batch_lock = threading.RLock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._reset_buckets()

    # lifecycle

    def start(self) -> Simulator:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        try:
            httpd = _Server(("127.0.0.1", self._port), _Handler, self)
        except OSError as exc:
            raise UsageError(
                f"cannot listen on 127.0.0.1:{self._port} ({exc.strerror or exc}); "
                "pick another port with --port (0 = any free port)"
            ) from exc
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"intel-simulator-{httpd.server_address[1]}", daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end hanging and sleeping requests, close every connection and join
        every thread. Safe to call twice."""
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        if thread is not None:
            thread.join()
        httpd.close_connections()
        httpd.server_close()  # joins the handler threads (block_on_close)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the simulator is not running: call start() first")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # what happened

    @property
    def billed(self) -> list[dict[str, Any]]:
        """A copy of the usage of every billed response, in billing order."""
        with self._lock:
            return [dict(b) for b in self._billed]

    @property
    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        with self._lock:
            s = self._stats
            return SimulatorStats(
                requests=s.requests, by_status=dict(s.by_status), rate_limited=s.rate_limited,
                limiter_429=s.limiter_429, abandoned=s.abandoned, in_flight=s.in_flight,
                max_in_flight=s.max_in_flight, internal_errors=list(s.internal_errors),
                batches_created=s.batches_created, batch_requests=s.batch_requests,
            )

    def reset(self) -> None:
        """Forget billed responses and counters, refill the buckets and restart the rules."""
        with self._lock:
            in_flight = self._stats.in_flight
            self._billed.clear()
            self._stats = SimulatorStats(in_flight=in_flight, max_in_flight=in_flight)
            self._rule_uses = [0] * len(self.config.rules)
            self._rng = random.Random(self.config.seed)
            self._cache.clear()
        self._reset_buckets()

    def _reset_buckets(self) -> None:
        now = self._clock()
        limits = {"requests": self.config.rpm, "input-tokens": self.config.itpm,
                  "output-tokens": self.config.otpm}
        with self._lock:
            self._buckets = {k: TokenBucket(v, now) for k, v in limits.items() if v is not None}

    # request handling (called from handler threads)

    def _enter(self) -> None:
        with self._lock:
            self._stats.requests += 1
            self._stats.in_flight += 1
            self._stats.max_in_flight = max(self._stats.max_in_flight, self._stats.in_flight)

    def _leave(self, status: int | None) -> None:
        with self._lock:
            self._stats.in_flight -= 1
            if status is None:
                self._stats.abandoned += 1
                return
            self._stats.by_status[status] = self._stats.by_status.get(status, 0) + 1
            if status == 429:
                self._stats.rate_limited += 1

    def _bug(self, exc: BaseException) -> None:
        with self._lock:
            self._stats.internal_errors.append(f"{type(exc).__name__}: {exc}")

    def _bill(self, usage: dict[str, Any]) -> None:
        with self._lock:
            self._billed.append(usage)

    def _unbill(self, request_id: str) -> None:
        with self._lock:
            self._billed = [b for b in self._billed if b["request_id"] != request_id]

    def _authenticate(self, headers: Any) -> None:
        key = headers.get("x-api-key")
        if not key:
            auth = headers.get("authorization") or ""
            if auth.lower().startswith("bearer "):
                key = auth[7:].strip()
        if not key:
            raise _Reply(401, "authentication_error", "x-api-key header is required")
        if self.config.api_keys is not None and key not in self.config.api_keys:
            raise _Reply(401, "authentication_error", "invalid x-api-key")

    def _choose_fault(self, raw: str, *, batch: bool = False) -> str | None:
        """The fault for one request: the first live matching rule, else a draw from the
        rates. A realtime request skips batch-only faults."""
        with self._lock:
            for i, rule in enumerate(self.config.rules):
                if not batch and rule.fault in BATCH_FAULTS:
                    continue
                if rule.match in raw and (rule.times is None or self._rule_uses[i] < rule.times):
                    self._rule_uses[i] += 1
                    return rule.fault
            if not self.config.fault_rates:
                return None
            draw = self._rng.random()
        edge = 0.0
        for kind, rate in self.config.fault_rates.items():
            edge += rate
            if draw < edge:
                return None if not batch and kind in BATCH_FAULTS else kind
        return None

    def _prompt_cache(
        self, body: dict[str, Any], total: int, *, at: float | None = None,
        write_s: float | None = None,
    ) -> tuple[int, int, str | None]:
        """(cache_write, cache_read, key of an entry this request created) for one request
        whose input totals `total` tokens (see the module docstring), processed at monotonic
        time `at` (default now); its write is readable `write_s` later (default ttft_s)."""
        prefix = cache_prefix(body)
        if prefix is None:
            return 0, 0, None
        size = tokens_for(prefix)
        model = str(body.get("model"))
        if size < min_cacheable_tokens(model) or size > total:
            return 0, 0, None
        key = hashlib.sha256(f"{model}\0{prefix}".encode()).hexdigest()
        delay = self.config.ttft_s if write_s is None else write_s
        with self._lock:
            now = self._clock() if at is None else at
            entry = self._cache.get(key)
            if entry is not None and entry.ready_at <= now < entry.expires_at:
                entry.expires_at = now + self.config.cache_ttl_s  # a read refreshes the TTL
                return 0, size, None
            if entry is not None and now < entry.expires_at:
                return size, 0, None  # still being written by a request in flight: write too
            self._cache[key] = _CacheEntry(
                ready_at=now + delay, expires_at=now + delay + self.config.cache_ttl_s
            )
            return size, 0, key

    def _forget_cache(self, key: str | None) -> None:
        if key is not None:
            with self._lock:
                self._cache.pop(key, None)

    def _uniform(self) -> float:
        with self._lock:
            return self._rng.random()

    def ratelimit_headers(self) -> dict[str, str]:
        with self._lock:
            return self._ratelimit_headers_locked(self._clock())

    def _ratelimit_headers_locked(self, now: float) -> dict[str, str]:
        headers: dict[str, str] = {}
        wall = datetime.now(UTC)
        for name, bucket in self._buckets.items():
            reset = wall + timedelta(seconds=bucket.full_in(now))
            prefix = f"anthropic-ratelimit-{name}"
            headers[f"{prefix}-limit"] = str(bucket.capacity)
            headers[f"{prefix}-remaining"] = str(bucket.remaining(now))
            headers[f"{prefix}-reset"] = reset.strftime("%Y-%m-%dT%H:%M:%SZ")
        return headers

    def _admit(self, input_tokens: int, reserve: int, output_tokens: int) -> dict[str, str]:
        """Charge the buckets or raise a 429 saying when the request would fit."""
        needs = {"requests": 1, "input-tokens": input_tokens, "output-tokens": reserve}
        with self._lock:
            now = self._clock()
            waits = {name: b.wait_for(needs[name], now) for name, b in self._buckets.items()}
            worst = max(waits.values(), default=0.0)
            if worst > 0:
                self._stats.limiter_429 += 1
                name = max(waits, key=lambda n: waits[n])
                headers = self._ratelimit_headers_locked(now)
                headers["retry-after"] = str(max(1, math.ceil(worst)))
                raise _Reply(
                    429, "rate_limit_error",
                    f"This request would exceed your organization's rate limit of "
                    f"{self._buckets[name].capacity} {name.replace('-', ' ')} per minute "
                    "(simulated). Please retry after the time in the retry-after header.",
                    headers,
                )
            charges = {"requests": 1, "input-tokens": input_tokens,
                       "output-tokens": output_tokens}
            for name, bucket in self._buckets.items():
                bucket.take(charges[name], now)
            return self._ratelimit_headers_locked(now)

    def _latency(self, output_tokens: int) -> float:
        cfg = self.config
        base = cfg.ttft_s + (0.0 if math.isinf(cfg.tokens_per_s)
                             else output_tokens / cfg.tokens_per_s)
        if base <= 0:
            return 0.0
        return base * (1 + cfg.jitter * (2 * self._uniform() - 1))

    # Message Batches

    def create_batch(self, body: dict[str, Any], size: int) -> dict[str, Any]:
        """POST /v1/messages/batches (may raise _Reply)."""
        cfg = self.config
        if size > cfg.batch_max_bytes:
            raise _Reply(413, "request_too_large",
                         f"Request exceeds the maximum size of {cfg.batch_max_bytes} bytes")
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise _Reply(400, "invalid_request_error", "requests: at least one is required")
        if len(requests) > cfg.batch_max_requests:
            raise _Reply(400, "invalid_request_error",
                         f"requests: a batch holds at most {cfg.batch_max_requests} requests")
        seen: set[str] = set()
        items: list[_BatchRequest] = []
        for i, request in enumerate(requests):
            custom_id = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise _Reply(400, "invalid_request_error",
                             f"requests.{i}.custom_id: 1-64 characters of a-z A-Z 0-9 _ -")
            if custom_id in seen:
                raise _Reply(400, "invalid_request_error",
                             f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            seen.add(custom_id)
            params = request.get("params")
            if not isinstance(params, dict):
                raise _Reply(400, "invalid_request_error", f"requests.{i}.params: Field required")
            items.append(_BatchRequest(custom_id, params, _compact(params)))
        batch = _Batch(
            id=f"msgbatch_sim_{uuid.uuid4().hex[:24]}",
            requests=items,
            created_at=datetime.now(UTC),
            started=self._clock(),
            processing_s=cfg.batch_processing_s,
        )
        order = list(range(len(items)))
        random.Random(batch.id).shuffle(order)
        if len(order) > 1 and order == sorted(order):
            order.reverse()
        batch.order = order
        with self._batch_lock:
            self._batches[batch.id] = batch
        with self._lock:
            self._stats.batches_created += 1
            self._stats.batch_requests += len(items)
        return self._batch_view(batch)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        return self._batch_view(self._batch(batch_id))

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._batch_lock:
            batch = self._batch(batch_id)
            if batch.ended_at is None and batch.cancel_at is None:
                batch.cancel_at = self._clock()
                batch.cancel_initiated_at = datetime.now(UTC)
                view = self._batch_view(batch, advance=False)
                view["processing_status"] = "canceling"
                return view
            return self._batch_view(batch)

    def batch_results(self, batch_id: str) -> list[dict[str, Any]]:
        """The result lines of an ended batch, in their shuffled order."""
        with self._batch_lock:
            batch = self._batch(batch_id)
            self._advance(batch)
            if batch.ended_at is None:
                raise _Reply(400, "invalid_request_error",
                             f"message batch {batch_id} is still processing: no results yet")
            return [
                {"custom_id": batch.requests[i].custom_id, "result": batch.requests[i].result}
                for i in batch.order
            ]

    def _batch(self, batch_id: str) -> _Batch:
        with self._batch_lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise _Reply(404, "not_found_error", f"message batch {batch_id!r} not found")
        return batch

    def _advance(self, batch: _Batch) -> None:
        """End the batch once its time has come: answer (and bill) every request."""
        with self._batch_lock:
            if batch.ended_at is not None or self._clock() < batch.ends_at():
                return
            for index, request in enumerate(batch.requests):
                cancelled = batch.cancel_at is not None and batch.finishes_at(index) > (
                    batch.cancel_at
                )
                request.result = {"type": "canceled"} if cancelled else self._batch_answer(
                    request, batch.finishes_at(index)
                )
            batch.ended_at = datetime.now(UTC)

    def _batch_answer(self, request: _BatchRequest, at: float) -> dict[str, Any]:
        """One batch request's result, answered like /v1/messages (billed at batch rates)."""
        body = request.params
        try:
            _validate(body)
        except _Reply as reply:
            return _errored(reply.error_type, reply.message)
        fault = self._choose_fault(request.raw + "\n" + request.custom_id, batch=True)
        if fault in _NOT_IN_BATCHES:
            fault = None
        if fault == "batch_expired":
            return {"type": "expired"}
        if fault == "batch_errored":
            return _errored("api_error", "Internal server error (simulated batch request)")
        if fault is not None and fault.isdigit():
            return _errored(*_ERRORS[int(fault)])
        total = count_input_tokens(body)
        content, stop_reason, output_tokens, status = _compose(
            body, fault, random.Random(self._uniform()), int(body["max_tokens"])
        )
        # processed one after another at their finishing times; a written prefix is there
        # for the next request at once (the API calls batch cache hits best-effort)
        cache_write, cache_read, _ = self._prompt_cache(body, total, at=at, write_s=0.0)
        message, usage = _message(
            body, content, stop_reason, _new_id("req"),
            input_tokens=total - cache_write - cache_read, output_tokens=output_tokens,
            cache_write=cache_write, cache_read=cache_read, status=status, batch=True,
        )
        self._bill(usage)
        return {"type": "succeeded", "message": message}

    def _batch_view(self, batch: _Batch, *, advance: bool = True) -> dict[str, Any]:
        """The MessageBatch JSON."""
        with self._batch_lock:
            if advance:
                self._advance(batch)
            ended = batch.ended_at is not None
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0,
                      "expired": 0}
            if ended:
                for request in batch.requests:
                    kind = (request.result or {}).get("type", "errored")
                    counts[kind] = counts.get(kind, 0) + 1
            else:
                counts["processing"] = len(batch.requests)
            if ended:
                status = "ended"
            elif batch.cancel_at is not None:
                status = "canceling"
            else:
                status = "in_progress"
            return {
                "id": batch.id,
                "type": "message_batch",
                "processing_status": status,
                "request_counts": counts,
                "created_at": _rfc3339(batch.created_at),
                "expires_at": _rfc3339(batch.created_at + _BATCH_EXPIRES),
                "ended_at": _rfc3339(batch.ended_at),
                "cancel_initiated_at": _rfc3339(batch.cancel_initiated_at),
                "archived_at": None,
                "results_url": (
                    f"{self.base_url}/v1/messages/batches/{batch.id}/results" if ended else None
                ),
            }

    def messages(self, body: dict[str, Any], raw: str) -> _Answer:
        """Work out the answer to one POST /v1/messages (may raise _Reply)."""
        _validate(body)
        fault = self._choose_fault(raw)
        if fault is not None and fault.isdigit():
            status = int(fault)
            error_type, error_message = _ERRORS[status]
            headers = self.ratelimit_headers()
            if status == 429:
                headers["retry-after"] = str(self.config.retry_after_s)
            raise _Reply(status, error_type, error_message, headers)

        total = count_input_tokens(body)
        max_tokens = int(body["max_tokens"])
        content, stop_reason, output_tokens, billed_status = _compose(
            body, fault, random.Random(self._uniform()), max_tokens
        )
        cache_write, cache_read, created = self._prompt_cache(body, total)
        reserve = min(max_tokens, OUTPUT_RESERVE_CAP)
        try:
            headers = self._admit(total - cache_read, reserve, output_tokens)
        except _Reply:
            self._forget_cache(created)  # refused: nothing was processed, nothing cached
            raise
        request_id = _new_id("req")
        message, usage = _message(
            body, content, stop_reason, request_id,
            input_tokens=total - cache_write - cache_read, output_tokens=output_tokens,
            cache_write=cache_write, cache_read=cache_read, status=billed_status, batch=False,
        )
        delay = self.config.hang_s if fault == "timeout" else self._latency(output_tokens)
        return _Answer(message, headers, request_id, usage, delay)


def _message(
    body: dict[str, Any], content: list[dict[str, Any]], stop_reason: str, request_id: str, *,
    input_tokens: int, output_tokens: int, cache_write: int, cache_read: int, status: str,
    batch: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Message JSON, the billed-usage record) of one answer."""
    message: dict[str, Any] = {
        "id": _new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read,
            "cache_creation": {"ephemeral_5m_input_tokens": cache_write,
                               "ephemeral_1h_input_tokens": 0},
            "service_tier": "batch" if batch else "standard",
        },
    }
    usage = {
        "request_id": request_id,
        "model": body["model"],
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "status": status,
        "batch": batch,
    }
    return message, usage


@dataclass
class _BatchRequest:
    custom_id: str
    params: Any
    raw: str  # the request's compact JSON, for fault rules
    result: dict[str, Any] | None = None


@dataclass
class _Batch:
    id: str
    requests: list[_BatchRequest]
    created_at: datetime  # wall clock, for the API's timestamps
    started: float  # monotonic
    processing_s: float
    cancel_at: float | None = None  # monotonic, when a cancel was asked for
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    order: list[int] = field(default_factory=list)  # the results' (shuffled) order

    def finishes_at(self, index: int) -> float:
        return self.started + self.processing_s * (index + 1) / len(self.requests)

    def ends_at(self) -> float:
        end = self.started + self.processing_s
        return end if self.cancel_at is None else min(end, self.cancel_at)


def _rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class _CacheEntry:
    ready_at: float  # monotonic: readable from then (once the writing request has started)
    expires_at: float


@dataclass
class _Answer:
    message: dict[str, Any]
    headers: dict[str, str]
    request_id: str
    usage: dict[str, Any]
    delay: float


def _new_id(prefix: str) -> str:
    return f"{prefix}_sim_{uuid.uuid4().hex[:24]}"


def _errored(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "errored", "error": {"type": "error", "request_id": _new_id("req"),
                                         "error": {"type": error_type, "message": message}}}


def _validate(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Reply(400, "invalid_request_error", "model: Field required")
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        raise _Reply(400, "invalid_request_error", "max_tokens: Field required")
    if max_tokens < 1:
        raise _Reply(400, "invalid_request_error", "max_tokens: must be greater than or equal to 1")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Reply(400, "invalid_request_error", "messages: at least one message is required")
    if not model.startswith("claude-"):
        raise _Reply(404, "not_found_error", f"model: {model}")
    if body.get("stream"):
        raise _Reply(400, "invalid_request_error",
                     "stream: streaming is not supported by the simulator")


def _forced_tool(body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    if not isinstance(tools, list) or not tools or not isinstance(choice, dict):
        return None
    if choice.get("type") == "tool":
        for tool in tools:
            if isinstance(tool, dict) and tool.get("name") == choice.get("name"):
                return tool
        raise _Reply(400, "invalid_request_error",
                     f"tool_choice: tool {choice.get('name')!r} is not in tools")
    if choice.get("type") == "any" and isinstance(tools[0], dict):
        return tools[0]
    return None


def _cut_object(value: dict[str, Any], budget_chars: int) -> dict[str, Any]:
    # a tool input cut by max_tokens: the fields that fit, so required ones go missing
    kept: dict[str, Any] = {}
    for key, item in value.items():
        trial = {**kept, key: item}
        if len(_compact_answer(trial)) > budget_chars:
            break
        kept = trial
    return kept


def _compose(
    body: dict[str, Any], fault: str | None, rng: random.Random, max_tokens: int
) -> tuple[list[dict[str, Any]], str, int, str]:
    """(content, stop_reason, output_tokens, billed status) for a 200 answer."""
    text = _user_text(body)
    intel = simulated_intelligence(text)
    tool = _forced_tool(body)
    schema: dict[str, Any] | None
    if tool is not None:
        schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
    else:
        schema = _output_schema(body) or _intel_schema()
    contact_rng = random.Random(hashlib.sha256(text.encode()).hexdigest())
    answer = fill_schema(schema or {"type": "object"}, intel, contact_rng)
    if not isinstance(answer, dict) and tool is not None:
        answer = {"value": answer}

    status = "ok"
    if fault == "invalid":
        status = "invalid"
        listed = schema.get("required") if isinstance(schema, dict) else None
        required = [str(k) for k in listed] if isinstance(listed, list) else []
        if tool is not None:
            # a tool input is always an object: leave out required fields (or everything)
            drop = required or list(answer)
            answer = {k: v for k, v in answer.items() if k not in drop[:2]}
        else:
            answer = _invalid_text(answer if isinstance(answer, dict) else {}, required, rng)

    full = answer if isinstance(answer, str) else _compact_answer(answer)
    output_tokens = tokens_for(full)
    limit = max_tokens
    if fault == "max_tokens":
        limit = min(max_tokens, max(1, output_tokens // 2))
    stop_reason = "tool_use" if tool is not None else "end_turn"
    if output_tokens > limit:
        status = "max_tokens" if status == "ok" else status
        stop_reason = "max_tokens"
        output_tokens = limit
        if tool is not None and isinstance(answer, dict):
            answer = _cut_object(answer, limit * 4)
        else:
            full = full[: limit * 4]
            answer = full

    if tool is not None:
        block: dict[str, Any] = {
            "type": "tool_use", "id": _new_id("toolu"), "name": tool.get("name"),
            "input": answer if isinstance(answer, dict) else {},
        }
    else:
        block = {"type": "text", "text": answer if isinstance(answer, str) else full}
    return [block], stop_reason, output_tokens, status


class _Server(ThreadingHTTPServer):
    """Tracks its connections so stop() can close idle keep-alive ones, and keeps handler
    threads joinable (daemon_threads off) so stop() leaves nothing running."""

    daemon_threads = False
    block_on_close = True
    allow_reuse_address = True
    # the default backlog of 5 drops connections when a benchmark opens dozens at once, and a
    # dropped SYN costs the client a 1 s retransmit
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 simulator: Simulator) -> None:
        self.simulator = simulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # client disconnects are normal; real bugs are recorded by the handler itself
        pass


def _peer_gone(conn: socket.socket) -> bool:
    """True when the client has closed its end (e.g. it timed out and gave up)."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms to
    # every response
    disable_nagle_algorithm = True
    server_version = "intel-simulator"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # no access log on stderr: the simulator runs inside tests and the CLI

    def handle(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().handle()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        parts = path.split("/")
        # /v1/messages/batches/{id} and /v1/messages/batches/{id}/results
        if parts[:4] == ["", "v1", "messages", "batches"] and len(parts) in (5, 6):
            if len(parts) == 5:
                self._run(functools.partial(self._batch_get, parts[4]))
                return
            if parts[5] == "results":
                self._run(functools.partial(self._batch_results, parts[4]))
                return
        self._run(self._not_found)

    def _other(self) -> None:
        self._run(self._not_found)

    # answered in the API's own error shape rather than http.server's HTML 501
    do_DELETE = do_PUT = do_PATCH = _other

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        routes: dict[str, Callable[[], None]] = {
            "/v1/messages": self._messages,
            "/v1/messages/count_tokens": self._count_tokens,
            "/v1/messages/batches": self._batch_create,
        }
        parts = path.split("/")
        if parts[:4] == ["", "v1", "messages", "batches"] and len(parts) == 6 and (
            parts[5] == "cancel"
        ):
            self._run(functools.partial(self._batch_cancel, parts[4]))
            return
        self._run(routes.get(path, self._not_found))

    def _run(self, route: Callable[[], None]) -> None:
        sim = self.server.simulator
        sim._enter()
        status: int | None = None
        try:
            try:
                status = self._dispatch(route)
            except _Reply as reply:
                status = self._send_error(reply)
        except OSError:
            status = None  # the client went away while we wrote
        except Exception as exc:  # a simulator bug: answer 500 and record it for the tests
            sim._bug(exc)
            with contextlib.suppress(Exception):
                status = self._send_error(_Reply(500, "api_error", f"simulator bug: {exc}"))
        finally:
            sim._leave(status)

    def _dispatch(self, route: Callable[[], None]) -> int | None:
        self._status: int | None = None
        route()
        return self._status

    def _not_found(self) -> None:
        self._read_body()
        raise _Reply(404, "not_found_error", f"Not found: {self.command} {self.path}")

    def _read_body(self) -> str:
        length = int(self.headers.get("content-length") or 0)
        data = self.rfile.read(length) if length > 0 else b""
        return data.decode("utf-8", errors="replace")

    def _json_body(self) -> tuple[dict[str, Any], str]:
        raw = self._read_body()
        self.server.simulator._authenticate(self.headers)
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise _Reply(400, "invalid_request_error", f"request body is not JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise _Reply(400, "invalid_request_error", "request body must be a JSON object")
        return body, raw

    def _messages(self) -> None:
        sim = self.server.simulator
        body, raw = self._json_body()
        # rules match the raw body and its canonical form (non-ASCII may arrive escaped)
        answer = sim.messages(body, raw + "\n" + _compact(body))
        if not self._wait(answer.delay):
            self.close_connection = True
            return  # not billed: nobody is there to read it
        # billed before the write, so a client that has its answer always finds it in
        # `billed`; taken back if the write fails
        sim._bill(answer.usage)
        try:
            self._send_json(200, answer.message, answer.headers, answer.request_id)
        except OSError:
            sim._unbill(answer.request_id)
            raise

    def _wait(self, seconds: float) -> bool:
        """Sleep `seconds` (latency or a hang) unless the server stops or the client leaves
        first, as a real server stops generating for a closed connection; True when the
        answer should still be sent."""
        stopping = self.server.simulator._stopping
        conn = self.connection
        deadline = time.monotonic() + seconds
        while not stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return not _peer_gone(conn)
            # wakes early when the client closes (the socket turns readable); short slices
            # keep an eye on `stopping` too
            try:
                readable, _, _ = select.select([conn], [], [], min(left, 0.1))
            except (OSError, ValueError):
                return False
            if readable:
                if _peer_gone(conn):
                    return False
                stopping.wait(min(left, 0.1))  # unread data, not a close: don't spin
        return False

    def _batch_create(self) -> None:
        body, raw = self._json_body()
        sim = self.server.simulator
        self._send_json(200, sim.create_batch(body, len(raw.encode())), {})

    def _batch_get(self, batch_id: str) -> None:
        self._read_body()
        self.server.simulator._authenticate(self.headers)
        self._send_json(200, self.server.simulator.retrieve_batch(batch_id), {})

    def _batch_cancel(self, batch_id: str) -> None:
        self._read_body()
        self.server.simulator._authenticate(self.headers)
        self._send_json(200, self.server.simulator.cancel_batch(batch_id), {})

    def _batch_results(self, batch_id: str) -> None:
        self._read_body()
        self.server.simulator._authenticate(self.headers)
        lines = self.server.simulator.batch_results(batch_id)
        data = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode()
        self.send_response(200)
        self.send_header("content-type", "application/binary")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", _new_id("req"))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self._status = 200

    def _count_tokens(self) -> None:
        body, _ = self._json_body()
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _Reply(400, "invalid_request_error", "model: Field required")
        if not model.startswith("claude-"):
            raise _Reply(404, "not_found_error", f"model: {model}")
        if not isinstance(body.get("messages"), list):
            raise _Reply(400, "invalid_request_error", "messages: Field required")
        self._send_json(200, {"input_tokens": count_input_tokens(body)},
                        self.server.simulator.ratelimit_headers())

    def _send_error(self, reply: _Reply) -> int:
        request_id = _new_id("req")
        payload = {"type": "error", "error": {"type": reply.error_type, "message": reply.message},
                   "request_id": request_id}
        self._send_json(reply.status, payload, reply.headers, request_id)
        return reply.status

    def _send_json(self, status: int, payload: Any, headers: dict[str, str],
                   request_id: str | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", request_id or _new_id("req"))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self._status = status
