"""The cost benchmark (issue 7): what 1,000 contacts of the same list cost, on the simulator,
four ways, every token billed and priced with genai-prices (intel_cli.pricing):

(a) the original Audio Intel approach: one long instruction prompt per contact, sent as the
    user message with the contact filled in, free-form JSON asked for in words (no schema, no
    structured output), no prompt caching, full price;
(b) `intel enrich` with its realtime defaults (fixed instructions + schema as a cached
    prefix, structured output, the contact as delimited data);
(c) (b) plus model routing: `--route-roles "DJ,Producer"` to claude-haiku-4-5, with a second
    opinion on the main model after a Low-confidence answer;
(d) `--mode batch`: the Message Batches API at half price.

All four ask for the same eleven fields of the original service (SPEC 2.2) on the same model
(claude-sonnet-4-5, the main model for b-d). Each runs against a fresh simulator, so every
one starts with a cold prompt cache. Reuse of earlier results (SPEC 3.3) is off in b-d: this
compares the price of enriching a list once, not of skipping it.

How the original is modelled. Its source is not part of this project; what is known is its
style: a long per-contact instruction prompt, free-form JSON, no schema. ORIGINAL_PROMPT below
is written in that style, with the same field list and a comparable amount of guidance to our
system prompt's essentials (about 3,100 characters before the contact). The simulator answers
it with the same compact JSON it gives a schema request, so the original's output is billed
at our size: a real free-form answer (pretty-printed, often fenced or with a sentence of
preamble) is longer. The comparison therefore flatters the original, not us. Answers that do
not parse as the eleven fields would have been failures (the original had no re-ask); they are
counted and shown.

    python benchmarks/cost.py [--contacts 200]

Prints one row per approach: requests, tokens (input, cache write, cache read, output),
enriched contacts, cost per 1,000 contacts and the ratio to (a); then the issue's targets:
(b) at most 80% of (a), (d) at most 40% of (a).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from intel_cli.contacts import Contact, read_contacts
from intel_cli.pipeline import RunOptions, run
from intel_cli.pricing import price
from intel_cli.schema import INTEL_FIELDS, Intelligence
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.sqlite import SQLiteStore
from intel_cli.usage import Usage

MODEL = "claude-sonnet-4-5"
FAST = "claude-haiku-4-5"
ROUTE_ROLES = ["DJ", "Producer"]

ORIGINAL_PROMPT = """\
You are an expert music industry researcher working for a music promotion agency. Our \
clients are independent artists and labels who want radio play, press coverage and \
playlist placements. Research the following music industry contact and provide detailed, \
actionable intelligence that will help us pitch new music to them.

Contact details:
Name: {name}
Email: {email}
Company/Station: {company}
Role: {role}
Additional notes: {notes}

Please analyse this contact carefully. Use the email domain to work out which station, \
publication, playlist or organisation they work for, and use the company and role to \
understand what they do there. Think about the kind of music they are likely to cover, the \
size and location of their audience, and the best way for an independent artist to approach \
them.

Provide the following information:
1. Platform: the radio station, publication, playlist brand or outlet they work for.
2. Role: their role or position at that outlet and what it involves.
3. Format: the format of the station, publication or playlist (for example national BBC \
radio, commercial radio, community radio, online magazine, print magazine, music blog, \
editorial streaming playlist, independent playlist).
4. Coverage: their reach and geography (national, regional, local or online) and which \
country or region.
5. Genres: the music genres they typically cover or play, most relevant first.
6. Contact method: the best way to contact them with a new release.
7. Best timing: when to pitch them (how long before release, and which days or times work \
best).
8. Submission guidelines: how they prefer to receive music (private streaming links, \
downloads, press releases, radio edits, clean versions) and any known requirements.
9. Pitch tips: specific, practical tips for pitching to this contact successfully.
10. Confidence: how confident you are in this intelligence (High, Medium or Low).
11. Reasoning: a short explanation of what this intelligence is based on.

Important guidelines:
- Be specific and practical. Our team will use this to write real pitches.
- If you are not sure about something, say so and lower the confidence rather than \
inventing details. Do not make up names of shows, playlists or submission portals.
- Consider the UK and international music industry, including BBC Radio, commercial and \
community radio, music press, blogs and streaming playlists.
- Tailor the advice to independent artists without a major label budget.

Respond with valid JSON only, no other text, in exactly this format:
{{
  "platform": "...",
  "role": "...",
  "format": "...",
  "coverage": "...",
  "genres": ["..."],
  "contactMethod": "...",
  "bestTiming": "...",
  "submissionGuidelines": "...",
  "pitchTips": ["..."],
  "confidence": "High|Medium|Low",
  "reasoning": "..."
}}"""

# a list like the ones operators bring: radio, press and playlist people, a third of them
# DJs or producers (what (c) routes), some on free mail or with no address at all
_DOMAINS = [
    ("bbc.co.uk", "BBC Radio 6 Music"), ("kexp.org", "KEXP"), ("nme.com", "NME"),
    ("radiox.co.uk", "Radio X"), ("clashmusic.com", "Clash"), ("amazingradio.com", "Amazing"),
    ("gmail.com", "Sunset Sessions Blog"), ("triplej.net.au", "triple j"),
    ("thelineofbestfit.com", "The Line of Best Fit"), ("spotify.com", "Spotify"),
]
_ROLES = ["DJ", "Producer", "Music Editor", "Playlist Curator", "Presenter",
          "Head of Music", "Journalist", "Club DJ", "Senior Producer"]


def write_list(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Company", "Role", "Notes"])
        for i in range(n):
            domain, outlet = _DOMAINS[i % len(_DOMAINS)]
            role = _ROLES[(i * 7) % len(_ROLES)]
            # one in twelve has no address (name + company only): the simulator answers Low
            email = "" if i % 12 == 5 else f"contact{i:04d}@{domain}"
            notes = "Met at The Great Escape" if i % 4 == 0 else ""
            writer.writerow([f"Contact {i}", email, outlet, role, notes])


@dataclass
class Figures:
    name: str
    requests: int
    usage: Usage
    cost: Decimal
    enriched: int
    contacts: int
    note: str = ""

    def per_1000(self) -> Decimal:
        return self.cost * 1000 / self.contacts


def billed_usage(sim: Simulator) -> tuple[int, Usage]:
    billed = sim.billed
    return len(billed), sum((Usage.from_api(b) for b in billed), Usage())


# --- (a) the original -------------------------------------------------------------------------


def _original_prompt(contact: Contact) -> str:
    return ORIGINAL_PROMPT.format(
        name=contact.name or "Unknown",
        email=contact.email or "Unknown",
        company=contact.company or "Unknown",
        role=contact.role or "Unknown",
        notes=contact.context.get("notes") or "None",
    )


def _parse_free_form(text: str) -> bool:
    """Whether a free-form answer holds the eleven fields (what the original could use)."""
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[-1].rsplit("```", 1)[0]
    start, end = body.find("{"), body.rfind("}")
    if start < 0 or end < start:
        return False
    try:
        Intelligence.model_validate(json.loads(body[start:end + 1]))
    except ValueError:
        return False
    return True


async def _original(base_url: str, contacts: list[Contact]) -> tuple[Decimal, int]:
    import anthropic

    client = anthropic.AsyncAnthropic(api_key="bench-key", base_url=base_url, max_retries=2)
    gate = asyncio.Semaphore(5)  # the original's waves of five
    cost, parsed = Decimal(0), 0

    async def one(contact: Contact) -> None:
        nonlocal cost, parsed
        async with gate:
            message = await client.messages.create(
                model=MODEL, max_tokens=1024,
                messages=[{"role": "user", "content": _original_prompt(contact)}],
            )
        cost += price(MODEL, Usage.from_api(message.usage)).cost
        text = "".join(b.text for b in message.content if getattr(b, "type", "") == "text")
        parsed += _parse_free_form(text)

    try:
        await asyncio.gather(*(one(c) for c in contacts))
    finally:
        await client.close()
    return cost, parsed


def original(list_path: Path, n: int) -> Figures:
    with read_contacts([str(list_path)]) as source:
        contacts = [c for c in source if c.key is not None and not c.skip_reason]
    with Simulator(SimulatorConfig.instant(seed=7)) as sim:
        cost, parsed = asyncio.run(_original(sim.base_url, contacts))
        requests, usage = billed_usage(sim)
    return Figures("(a) original: per-contact prompt, free-form JSON", requests, usage, cost,
                   parsed, n)


# --- (b)-(d) intel enrich ------------------------------------------------------------------


def ours(name: str, list_path: Path, tmp: Path, n: int, **overrides: Any) -> Figures:
    config = SimulatorConfig.instant(seed=7, batch_processing_s=0.2)
    tag = name.split(")")[0].strip("(")
    with Simulator(config) as sim, SQLiteStore(tmp / f"{tag}.db") as store:
        store.migrate()
        options = RunOptions(
            inputs=[str(list_path)], output=str(tmp / f"{tag}.out.csv"), model=MODEL,
            cache=False, backoff_base=0.05, batch_poll_s=0.05, **overrides,
        )
        summary = run(options, store, api_key="bench-key", base_url=sim.base_url)
        requests, usage = billed_usage(sim)
    assert usage == summary.usage, (usage, summary.usage)  # the store saw every billed token
    per_model = ", ".join(f"{m.model}: {m.contacts}" for m in summary.models)
    return Figures(name, requests, usage, summary.cost, summary.enriched, n,
                   note=f"contacts per model: {per_model}" if len(summary.models) > 1 else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=200)
    args = parser.parse_args()
    n = args.contacts
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        list_path = tmp / "contacts.csv"
        write_list(list_path, n)
        runs: list[Callable[[], Figures]] = [
            lambda: original(list_path, n),
            lambda: ours("(b) intel realtime defaults", list_path, tmp, n),
            lambda: ours("(c) + prompt caching + routing", list_path, tmp, n,
                         fast_model=FAST, route_roles=ROUTE_ROLES),
            lambda: ours("(d) --mode batch", list_path, tmp, n, mode="batch"),
        ]
        figures = [go() for go in runs]
    base = figures[0].per_1000()
    print(f"Cost per 1,000 contacts ({n} simulated contacts, {MODEL}; prices: genai-prices)")
    print()
    header = (f"{'approach':<52} {'requests':>8} {'input':>9} {'cache wr':>9} "
              f"{'cache rd':>9} {'output':>8} {'enriched':>8} {'$/1k':>8} {'vs (a)':>7}")
    print(header)
    print("-" * len(header))
    for f in figures:
        u = f.usage
        print(f"{f.name:<52} {f.requests:>8,} {u.input:>9,} {u.cache_write:>9,} "
              f"{u.cache_read:>9,} {u.output:>8,} {f.enriched:>8,} "
              f"{f.per_1000():>8.4f} {100 * f.per_1000() / base:>6.1f}%")
    for f in figures:
        if f.note:
            print(f"  {f.name.split(')')[0]}): {f.note}")
    print()
    b, d = figures[1].per_1000(), figures[3].per_1000()
    print(f"target (b) <= 80% of (a): {100 * b / base:.1f}% "
          f"{'met' if b <= base * Decimal('0.8') else 'NOT met'}")
    print(f"target (d) <= 40% of (a): {100 * d / base:.1f}% "
          f"{'met' if d <= base * Decimal('0.4') else 'NOT met'}")
    fields = ", ".join(INTEL_FIELDS)
    print(f"fields asked for in every approach: {fields}")


if __name__ == "__main__":
    main()
