"""The output pass reads each contact's intelligence back from the store a page at a time
(issue 6: flat memory) instead of holding it in memory: the written file must be exactly what
the batch's stored results say, row for row (order, duplicates, skipped rows, statuses), on
every backend, across many pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from intel_cli.contacts import Contact, read_contacts, write_output
from intel_cli.errors import StoreUnavailable
from intel_cli.pipeline import RunOptions, RunSummary, run
from intel_cli.simulator import FaultRule, Simulator, SimulatorConfig
from intel_cli.stores import postgres, sqlite
from intel_cli.stores.base import ContactResult, Store
from intel_cli.usage import Usage
from tests.test_pipeline import email, people, write_contacts

MODEL = "claude-sonnet-4-5"


@pytest.fixture(autouse=True)
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    # a few rows a page, so a small batch crosses many page boundaries
    monkeypatch.setattr(sqlite, "RESULTS_PAGE", 3)
    monkeypatch.setattr(postgres, "RESULTS_PAGE", 3)


def mixed_rows() -> list[dict[str, str]]:
    rows = people(12)
    rows.insert(2, {"Name": "No Address", "Email": "", "Station": "", "Role": "DJ"})
    rows.insert(5, {"Name": "Gone", "Email": "gone@away.example", "Status": "Unsubscribed"})
    rows.insert(7, {"Name": "Bad", "Email": "emma@"})
    rows.append({"Name": "Again", "Email": " " + email(1).upper()})  # enriched first row
    rows.append({"Name": "Twice", "Email": email(1)})  # a second copy of the same one
    rows.append({"Name": "Again", "Email": email(3)})  # its first row failed (invalid)
    rows.append({"Name": "Again", "Email": email(0)})  # its first row timed out
    rows.append({"Name": "Late", "Email": email(11).upper()})  # the last row's copy
    return rows


def enrich(sim: Simulator, store: Store, inputs: str, output: str, **kw: Any) -> RunSummary:
    return run(
        RunOptions(inputs=[inputs], output=output, model=MODEL, backoff_base=0.01, **kw),
        store,
        api_key="test-key",
        base_url=sim.base_url,
    )


def reference_result_for(store: Store, batch_id: str) -> Callable[[Contact], ContactResult]:
    """What the output held before issue 6, rebuilt from the batch's stored rows all at once:
    a row's own result, a duplicate's copy of its first (no cost), or skipped."""
    stored: dict[int, ContactResult] = {}
    for r in store.batch_results(batch_id):
        stored[r["row_index"]] = ContactResult(
            batch_id, r["row_index"], r["contact_key"], r["status"], model=r["model"],
            usage=Usage(r["input_tokens"], r["output_tokens"], r["cache_read_tokens"],
                        r["cache_write_tokens"]),
            cost=Decimal(r["cost"]), latency_ms=r["latency_ms"], attempts=r["attempts"],
            error=r["error"], intel=r["intel"],
        )

    def result_for(contact: Contact) -> ContactResult:
        if contact.skip_reason:
            return ContactResult(
                batch_id, contact.row_index, None, "skipped", error=contact.skip_reason
            )
        if contact.duplicate_of is None:
            return stored[contact.row_index]
        return replace(
            stored[contact.duplicate_of], row_index=contact.row_index, usage=Usage(),
            cost=Decimal(0), latency_ms=None, attempts=0,
        )

    return result_for


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_the_output_is_the_stored_results_row_for_row(
    tmp_path: Path, store: Store, fmt: str
) -> None:
    rows = mixed_rows()
    inputs = write_contacts(tmp_path / "c.csv", rows)
    output = tmp_path / f"c.enriched.{fmt}"
    rules = [
        FaultRule(email(0), "timeout"),
        FaultRule(email(3), "invalid"),
        FaultRule(email(5), "500"),
    ]
    with Simulator(SimulatorConfig.instant(rules=rules)) as sim:
        summary = enrich(sim, store, inputs, str(output), timeout=0.3, concurrency=4,
                         retries=0)
    expected = tmp_path / f"expected.{fmt}"
    with read_contacts([inputs]) as source:
        write_output(str(expected), source, reference_result_for(store, summary.batch_id))
    assert output.read_text(encoding="utf-8") == expected.read_text(encoding="utf-8")
    if fmt != "jsonl":
        return
    # and what that is, spelled out: order, statuses, skipped reasons, copied duplicates
    out = read_jsonl(output)
    assert [o["Email"] for o in out] == [r.get("Email", "") for r in rows]
    statuses = [o["enrichment"]["status"] for o in out]
    assert statuses == [
        "timed_out", "enriched", "skipped", "enriched", "failed", "skipped", "enriched",
        "skipped", "failed", *["enriched"] * 6, "enriched", "enriched", "failed",
        "timed_out", "enriched",
    ]
    assert [o["enrichment"]["error"] for o in out if o["enrichment"]["status"] == "skipped"] \
        == ["missing email", "opted out", "invalid email"]
    enriched = [o for o in out if o["enrichment"]["status"] == "enriched"]
    assert all(o["intel"] and o["intel"]["platform"] for o in enriched)
    assert out[-5]["intel"] == out[-4]["intel"] == out[1]["intel"]  # both copies of row 1
    assert out[-1]["intel"] == out[14]["intel"]
    assert out[-5]["enrichment"]["costUsd"] == 0 < out[1]["enrichment"]["costUsd"]
    assert out[-3]["enrichment"]["error"] == out[4]["enrichment"]["error"] == "invalid output"


def test_cached_and_resumed_rows_are_read_back_too(tmp_path: Path, store: Store) -> None:
    inputs = write_contacts(tmp_path / "c.csv", people(10))
    first, second = tmp_path / "a.enriched.jsonl", tmp_path / "b.enriched.jsonl"
    with Simulator(SimulatorConfig.instant()) as sim:
        enrich(sim, store, inputs, str(first))
        summary = enrich(sim, store, inputs, str(second))  # every contact from the cache
    assert summary.cached == 10
    a, b = read_jsonl(first), read_jsonl(second)
    assert [o["enrichment"]["status"] for o in b] == ["cached"] * 10
    assert [o["intel"] for o in b] == [o["intel"] for o in a]
    assert all(o["intel"]["platform"] for o in b)


def test_a_store_that_cannot_be_read_back_keeps_every_row_and_says_where_the_intel_is(
    tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(batch_id: str) -> Iterator[dict[str, Any]]:
        raise StoreUnavailable("cannot reach the store")  # it went away after the run

    monkeypatch.setattr(store, "iter_results", unreadable)
    rows = people(4) + [{"Name": "Skip", "Email": ""}]
    inputs = write_contacts(tmp_path / "c.csv", rows)
    output = tmp_path / "c.enriched.jsonl"
    with Simulator(SimulatorConfig.instant()) as sim:
        summary = enrich(sim, store, inputs, str(output))
    out = read_jsonl(output)
    assert [o["enrichment"]["status"] for o in out] == ["enriched"] * 4 + ["skipped"]
    assert all(o["intel"] is None for o in out)
    assert all(
        "could not be read back" in o["enrichment"]["error"]
        and f"--resume {summary.batch_id}" in o["enrichment"]["error"]
        for o in out[:4]
    )
    # the store has it all, for --resume to write
    assert all(r["intel"] for r in store.batch_results(summary.batch_id)[:4])
