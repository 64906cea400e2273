"""The Supabase store over a fake HTTP transport: the exact requests supabase-py sends, and
PostgREST's documented error bodies turned into exit-4 lines.

The hosted REST API cannot run here, so `FakeRest` (an httpx transport) records every request
and answers with canned PostgREST responses. For `rpc(...)` it can also act as PostgREST's
function endpoint over the real test PostgreSQL: the JSON body's keys become named
arguments of the SQL function, so a parameter name that does not match the migration fails
here, not in a user's project. No external service is ever called.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.errors import BatchExists, ConfigError, ExitCode, StoreUnavailable, UsageError
from intel_cli.stores import open_store
from intel_cli.stores.base import BatchTotals, ContactResult
from intel_cli.stores.postgres import PostgresStore, load_postgres_migrations
from intel_cli.stores.supabase import SupabaseStore
from intel_cli.usage import Usage
from tests.conftest import postgres_url
from tests.pg import TempSchemaStore, blank_schema_url, fresh_postgres_store

URL = "https://abcdefgh.supabase.co"
KEY = "sb_secret_Zq81testkey_do_not_print_4f9a2c"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
REST = "/rest/v1"
runner = CliRunner()

Reply = httpx.Response | Callable[[httpx.Request], httpx.Response]

# PostgREST's documented error bodies (docs.postgrest.org, references/errors; Supabase's API
# gateway for a wrong key)
PGRST202 = {
    "code": "PGRST202",
    "details": "Searched for the function public.intel_metrics with parameters recent, since, "
    "until or with a single unnamed json/jsonb parameter, but no matches were found in the "
    "schema cache.",
    "hint": None,
    "message": "Could not find the function public.intel_metrics(recent, since, until) in the "
    "schema cache",
}
PGRST205 = {
    "code": "PGRST205",
    "details": None,
    "hint": None,
    "message": "Could not find the table 'public.intel_schema_migrations' in the schema cache",
}
E42P01 = {
    "code": "42P01",
    "details": None,
    "hint": None,
    "message": 'relation "public.intel_logs" does not exist',
}
INVALID_KEY = {
    "message": "Invalid API key",
    "hint": "Double check your Supabase `anon` or `service_role` API key.",
}
PGRST301 = {
    "code": "PGRST301",
    "details": None,
    "hint": None,
    "message": "JWSError (CompactDecodeError Invalid number of parts: Expected 3 parts; got 1)",
}
E42501 = {
    "code": "42501",
    "details": None,
    "hint": None,
    "message": "permission denied for table intel_logs",
}
E23505 = {
    "code": "23505",
    "details": "Key (batch_id)=(b_1) already exists.",
    "hint": None,
    "message": 'duplicate key value violates unique constraint "intel_logs_batch_id_key"',
}


class FakeRest(httpx.BaseTransport):
    """Records requests; answers from canned replies per (method, path), else from the
    real PostgreSQL for rpc when `pg_url` is set."""

    def __init__(self, pg_url: str | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.replies: dict[tuple[str, str], list[Reply]] = {}
        self.pg_url = pg_url

    def reply(self, method: str, path: str, *replies: Reply) -> None:
        """Queue replies for `method path` (relative to /rest/v1); the last one repeats."""
        self.replies.setdefault((method, REST + path), []).extend(replies)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        queue = self.replies.get((request.method, request.url.path))
        if queue:
            reply = queue.pop(0) if len(queue) > 1 else queue[0]
            return reply(request) if callable(reply) else reply
        if self.pg_url and request.url.path.startswith(f"{REST}/rpc/"):
            return self.rpc(request)
        return httpx.Response(500, json={"message": f"unexpected {request.method} {request.url}"})

    def rpc(self, request: httpx.Request) -> httpx.Response:
        """PostgREST's POST /rpc/fn: the body's keys are the function's named arguments."""
        assert self.pg_url is not None
        function = request.url.path.rsplit("/", 1)[1]
        body = json.loads(request.content)
        args = sql.SQL(", ").join(
            sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in body
        )
        returns_rows = function.startswith("intel_limiter_")
        query = (
            sql.SQL("SELECT * FROM {}({})") if returns_rows else sql.SQL("SELECT {}({}) AS v")
        ).format(sql.Identifier(function), args)
        try:
            with psycopg.connect(self.pg_url, autocommit=True, row_factory=dict_row) as conn:
                rows = conn.execute(query, list(body.values())).fetchall()
        except psycopg.errors.UndefinedFunction as exc:
            return httpx.Response(404, json={**PGRST202, "message": str(exc).splitlines()[0]})
        if returns_rows:
            data: Any = [
                {k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()}
                for r in rows
            ]
        else:
            data = rows[0]["v"]
        return httpx.Response(200, json=data)

    def only(self) -> httpx.Request:
        assert len(self.requests) == 1, [f"{r.method} {r.url}" for r in self.requests]
        return self.requests[0]


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def params(request: httpx.Request) -> list[tuple[str, str]]:
    return list(request.url.params.multi_items())


@pytest.fixture
def fake() -> FakeRest:
    return FakeRest()


@pytest.fixture
def store(fake: FakeRest) -> Iterator[SupabaseStore]:
    s = SupabaseStore(URL, KEY, transport=fake, retry=False)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, fake: FakeRest) -> FakeRest:
    """`--store supabase` from the environment, over the fake transport."""
    monkeypatch.setenv("SUPABASE_URL", URL)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    monkeypatch.setattr(SupabaseStore, "default_transport", fake)
    return fake


def migrated(fake: FakeRest) -> None:
    applied = [{"name": m.name} for m in load_postgres_migrations()]
    fake.reply("GET", "/intel_schema_migrations", httpx.Response(200, json=applied))


# --- configuration --------------------------------------------------------------------------


def test_missing_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    with pytest.raises(ConfigError) as caught:
        SupabaseStore.from_env()
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "SUPABASE_URL" in str(caught.value)


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPABASE_URL", URL)
    with pytest.raises(ConfigError) as caught:
        SupabaseStore.from_env()
    assert caught.value.exit_code == ExitCode.CONFIG
    assert "SUPABASE_SERVICE_ROLE_KEY" in str(caught.value)


def test_next_public_supabase_url_is_accepted(
    monkeypatch: pytest.MonkeyPatch, fake: FakeRest
) -> None:
    monkeypatch.setenv("NEXT_PUBLIC_SUPABASE_URL", URL + "/")
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", KEY)
    monkeypatch.setattr(SupabaseStore, "default_transport", fake)
    fake.reply("GET", "/intel_limiter", httpx.Response(200, json=[]))
    with SupabaseStore.from_env() as store:
        assert store.display_name == f"supabase ({URL})"
        assert store.get_limiter() is None
    assert str(fake.only().url).startswith(f"{URL}/rest/v1/intel_limiter?")


def test_a_url_supabase_cannot_use_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SUPABASE_URL"):
        SupabaseStore("abcdefgh.supabase.co", KEY)


def test_the_cli_says_which_variable_is_missing() -> None:
    result = runner.invoke(app, ["limiter", "status", "--store", "supabase"])
    assert result.exit_code == ExitCode.CONFIG
    assert "SUPABASE_URL" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- the exact requests ---------------------------------------------------------------------


def test_every_request_carries_the_key_as_apikey_and_bearer(
    store: SupabaseStore, fake: FakeRest
) -> None:
    fake.reply("GET", "/intel_limiter", httpx.Response(200, json=[]))
    assert store.get_limiter() is None
    request = fake.only()
    assert request.method == "GET"
    assert request.url.path == "/rest/v1/intel_limiter"
    assert params(request) == [("select", "*"), ("name", "eq.anthropic")]
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept-profile"] == "public"


def test_create_batch_inserts_one_row(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("POST", "/intel_logs", httpx.Response(201))
    store.create_batch(
        "b_1",
        model_used="claude-sonnet-4-5",
        mode="realtime",
        metadata={"input": "contacts.csv", "hash": "abc"},
        total=12,
        skipped=3,
        now=T0 + timedelta(microseconds=5),
    )
    request = fake.only()
    assert (request.method, request.url.path, request.url.query) == (
        "POST",
        "/rest/v1/intel_logs",
        b"",
    )
    assert request.headers["prefer"] == "return=minimal"
    assert request.headers["content-profile"] == "public"
    assert body(request) == {
        "created_at": "2026-03-01T12:00:00.000005Z",
        "batch_id": "b_1",
        "total": 12,
        "skipped": 3,
        "model_used": "claude-sonnet-4-5",
        "mode": "realtime",
        "status": "running",
        "metadata": {"input": "contacts.csv", "hash": "abc"},
    }


def test_a_duplicate_batch_id_is_batch_exists(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("POST", "/intel_logs", httpx.Response(409, json=E23505))
    with pytest.raises(BatchExists, match="--resume b_1"):
        store.create_batch("b_1", model_used="m", mode="simulated", metadata={}, now=T0)


def test_record_result_upserts_on_batch_and_row(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("POST", "/intel_results", httpx.Response(201))
    store.record_result(
        ContactResult(
            batch_id="b_1",
            row_index=4,
            contact_key="dj@example.com",
            status="enriched",
            model="claude-haiku-4-5",
            usage=Usage(input=1200, output=350, cache_read=40, cache_write=7),
            cost=Decimal("0.00891234565"),
            latency_ms=812,
            attempts=2,
            intel={"platform": "BBC 6 Music"},
            raw_usage=[{"input_tokens": 1200, "output_tokens": 350}],
            prompt_version="p1",
            created_at=T0,
        )
    )
    request = fake.only()
    assert (request.method, request.url.path) == ("POST", "/rest/v1/intel_results")
    assert request.url.query == b"on_conflict=batch_id%2Crow_index"
    assert request.headers["prefer"] == "return=minimal,resolution=merge-duplicates"
    assert body(request) == {
        "batch_id": "b_1",
        "row_index": 4,
        "contact_key": "dj@example.com",
        "status": "enriched",
        "model": "claude-haiku-4-5",
        "input_tokens": 1200,
        "output_tokens": 350,
        "cache_read_tokens": 40,
        "cache_write_tokens": 7,
        "cost": "0.0089123457",  # 10 places, half up, as text: no float on the way
        "latency_ms": 812,
        "attempts": 2,
        "error": None,
        "intel": {"platform": "BBC 6 Music"},
        "usage": [{"input_tokens": 1200, "output_tokens": 350}],
        "prompt_version": "p1",
        "created_at": "2026-03-01T12:00:00.000000Z",
    }


def test_finalise_reads_metadata_then_patches_the_batch(
    store: SupabaseStore, fake: FakeRest
) -> None:
    fake.reply("GET", "/intel_logs", httpx.Response(200, json=[{"metadata": {"input": "a.csv"}}]))
    fake.reply("PATCH", "/intel_logs", httpx.Response(204))
    totals = BatchTotals(
        status="completed",
        total=10,
        enriched=9,
        failed=1,
        retried=2,
        timed_out=1,
        cached=3,
        skipped=1,
        cost=Decimal("0.135"),
        avg_time_ms=640,
        usage=Usage(input=1000, output=2000, cache_read=30, cache_write=4),
        metadata={"unpriced": False},
    )
    store.finalise_batch("b_1", totals, now=T0)

    read, write = fake.requests
    assert (read.method, read.url.path) == ("GET", "/rest/v1/intel_logs")
    assert params(read) == [("select", "metadata"), ("batch_id", "eq.b_1"), ("limit", "1")]
    assert (write.method, write.url.path) == ("PATCH", "/rest/v1/intel_logs")
    assert params(write) == [("batch_id", "eq.b_1")]
    assert write.headers["prefer"] == "return=minimal"
    assert body(write) == {
        "status": "completed",
        "total": 10,
        "enriched": 9,
        "failed": 1,
        "retried": 2,
        "timed_out": 1,
        "cached": 3,
        "skipped": 1,
        "cost": "0.1350000000",
        "avg_time_ms": 640,
        "input_tokens": 1000,
        "output_tokens": 2000,
        "cache_read_tokens": 30,
        "cache_write_tokens": 4,
        "finished_at": "2026-03-01T12:00:00.000000Z",
        "metadata": {"input": "a.csv", "unpriced": False},
    }


def test_finalising_an_unknown_batch_is_a_usage_error(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("GET", "/intel_logs", httpx.Response(200, json=[]))
    with pytest.raises(UsageError, match="no batch 'b_x'"):
        store.finalise_batch("b_x", BatchTotals(status="completed"), now=T0)
    assert [r.method for r in fake.requests] == ["GET"]


def test_get_batch_parses_types(store: SupabaseStore, fake: FakeRest) -> None:
    row = {
        "id": 7,
        "created_at": "2026-03-01T12:00:00.000005+00:00",
        "batch_id": "b_1",
        "total": 3,
        "enriched": 2,
        "cost": 0.1350000001,
        "success_rate": 66.6666666666666667,
        "finished_at": None,
        "metadata": {"input": "a.csv"},
    }
    fake.reply("GET", "/intel_logs", httpx.Response(200, json=[row]))
    got = store.get_batch("b_1")
    assert params(fake.only()) == [("select", "*"), ("batch_id", "eq.b_1")]
    assert got is not None
    assert got["created_at"] == T0 + timedelta(microseconds=5)
    assert got["cost"] == Decimal("0.1350000001")
    assert got["finished_at"] is None
    assert got["metadata"] == {"input": "a.csv"}


def test_batch_results_page_past_postgrest_row_cap(store: SupabaseStore, fake: FakeRest) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        rows = [
            {"row_index": i, "cost": "0.0000000001", "created_at": "2026-03-01T12:00:00+00:00"}
            for i in range(offset, min(offset + limit, 1003))
        ]
        return httpx.Response(200, json=rows)

    fake.reply("GET", "/intel_results", page)
    rows = store.batch_results("b_1")
    assert [r["row_index"] for r in rows] == list(range(1003))
    assert rows[0]["cost"] == Decimal("0.0000000001")
    assert [params(r) for r in fake.requests] == [
        [("select", "*"), ("batch_id", "eq.b_1"), ("order", "row_index.asc"),
         ("offset", "0"), ("limit", "1000")],
        [("select", "*"), ("batch_id", "eq.b_1"), ("order", "row_index.asc"),
         ("offset", "1000"), ("limit", "1000")],
    ]


def test_find_cached_filters_in_the_query(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("GET", "/intel_results", httpx.Response(200, json=[]))
    assert (
        store.find_cached("dj@example.com", prompt_version="p1", model="m", since=T0) is None
    )
    assert params(fake.only()) == [
        ("select", "*"),
        ("contact_key", "eq.dj@example.com"),
        ("prompt_version", "eq.p1"),
        ("model", "eq.m"),
        ("status", "eq.enriched"),
        ("intel", "not.is.null"),
        ("created_at", "gte.2026-03-01T12:00:00.000000Z"),
        ("order", "created_at.desc,id.desc"),
        ("limit", "1"),
    ]


def test_metrics_is_one_rpc_and_never_fetches_rows(store: SupabaseStore, fake: FakeRest) -> None:
    # what intel_metrics returns, in jsonb's own key order
    answer = {
        "tokens": {"total": 30, "cacheRead": 0, "cacheWrite": 0, "totalInput": 10,
                   "totalOutput": 20},
        "summary": {"totalCost": 0.1235, "totalFailed": 1, "totalBatches": 2,
                    "totalContacts": 3, "totalEnriched": 2, "avgSuccessRate": 66.67,
                    "avgTimePerContact": 100},
        "recentBatches": [],
        "modelBreakdown": {"a-model": 1, "z-model": 5},
    }
    fake.reply("POST", "/rpc/intel_metrics", httpx.Response(200, json=answer))

    got = store.metrics(T0, T0 + timedelta(days=1), recent=5)

    request = fake.only()
    assert (request.method, request.url.path, request.url.query) == (
        "POST",
        "/rest/v1/rpc/intel_metrics",
        b"",
    )
    assert body(request) == {
        "since": "2026-03-01T12:00:00.000000Z",
        "until": "2026-03-02T12:00:00.000000Z",
        "recent": 5,
    }
    assert list(got) == ["summary", "tokens", "modelBreakdown", "recentBatches"]
    assert list(got["summary"])[:3] == ["totalBatches", "totalContacts", "totalEnriched"]
    assert list(got["tokens"]) == ["totalInput", "totalOutput", "total", "cacheRead", "cacheWrite"]
    assert list(got["modelBreakdown"]) == ["z-model", "a-model"]


def test_by_day_and_by_model_are_rpcs(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("POST", "/rpc/intel_metrics_by_day", httpx.Response(200, json=[]))
    fake.reply("POST", "/rpc/intel_metrics_by_model", httpx.Response(200, json=[]))
    assert store.metrics_by_day(T0, T0 + timedelta(days=1)) == []
    assert store.metrics_by_model(T0, T0 + timedelta(days=1)) == []
    window = {"since": "2026-03-01T12:00:00.000000Z", "until": "2026-03-02T12:00:00.000000Z"}
    assert [(r.url.path, body(r)) for r in fake.requests] == [
        ("/rest/v1/rpc/intel_metrics_by_day", window),
        ("/rest/v1/rpc/intel_metrics_by_model", window),
    ]


def test_limiter_block_and_reset_are_rpcs(store: SupabaseStore, fake: FakeRest) -> None:
    row = {
        "name": "anthropic",
        "blocked_until": "2026-03-01T12:01:00+00:00",
        "reason": "429 retry-after 60",
        "set_by": "b_1",
        "updated_at": "2026-03-01T12:00:00+00:00",
    }
    fake.reply("POST", "/rpc/intel_limiter_block", httpx.Response(200, json=[row]))
    fake.reply("POST", "/rpc/intel_limiter_reset", httpx.Response(200, json=[row]),
               httpx.Response(200, json=[]))

    state = store.block_limiter(
        T0 + timedelta(minutes=1), reason="429 retry-after 60", set_by="b_1", now=T0
    )
    cleared = store.reset_limiter()
    nothing = store.reset_limiter()

    assert state.blocked_until == T0 + timedelta(minutes=1)
    assert (state.reason, state.set_by) == ("429 retry-after 60", "b_1")
    assert cleared is not None and cleared.blocked_until == T0 + timedelta(minutes=1)
    assert nothing is None
    assert [(r.url.path, body(r)) for r in fake.requests] == [
        (
            "/rest/v1/rpc/intel_limiter_block",
            {
                "name": "anthropic",
                "until": "2026-03-01T12:01:00.000000Z",
                "reason": "429 retry-after 60",
                "set_by": "b_1",
                "now": "2026-03-01T12:00:00.000000Z",
            },
        ),
        ("/rest/v1/rpc/intel_limiter_reset", {"name": "anthropic"}),
        ("/rest/v1/rpc/intel_limiter_reset", {"name": "anthropic"}),
    ]


# --- PostgREST's errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, PGRST202), (404, E42P01), (404, PGRST205)],
    ids=["PGRST202", "42P01", "PGRST205"],
)
def test_a_database_that_is_not_migrated_points_at_intel_migrate(
    store: SupabaseStore, fake: FakeRest, status: int, error: dict[str, Any]
) -> None:
    fake.reply("POST", "/rpc/intel_metrics", httpx.Response(status, json=error))
    with pytest.raises(StoreUnavailable) as caught:
        store.metrics(T0, T0 + timedelta(days=1))
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert message.startswith(f"the store supabase ({URL}) has not been migrated ({error['code']}")
    assert "intel migrate --store supabase" in message
    assert "SUPABASE_DB_URL" in message and "--print-sql" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, INVALID_KEY), (401, PGRST301), (403, E42501)],
    ids=["gateway-invalid-key", "PGRST301-jwt", "42501-anon-key"],
)
def test_a_rejected_key_is_exit_4_without_the_key(
    store: SupabaseStore, fake: FakeRest, status: int, error: dict[str, Any]
) -> None:
    fake.reply("GET", "/intel_limiter", httpx.Response(status, json=error))
    with pytest.raises(StoreUnavailable) as caught:
        store.get_limiter()
    message = str(caught.value)
    assert caught.value.exit_code == ExitCode.CONFIG
    assert f"rejected SUPABASE_SERVICE_ROLE_KEY (HTTP {status}: {error['message']}" in message
    assert "service_role key" in message
    assert KEY not in message


def test_a_gateway_error_page_is_exit_4(store: SupabaseStore, fake: FakeRest) -> None:
    fake.reply("POST", "/rpc/intel_metrics", httpx.Response(503, text="<html>upstream</html>"))
    with pytest.raises(StoreUnavailable, match=r"answered HTTP 503 \(503: Service Unavailable"):
        store.metrics(T0, T0 + timedelta(days=1))


def test_an_unreachable_project_is_exit_4(store: SupabaseStore, fake: FakeRest) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"[Errno 111] Connection refused (apikey {KEY})", request=request)

    fake.reply("POST", "/rpc/intel_limiter_reset", refuse)
    with pytest.raises(StoreUnavailable) as caught:
        store.reset_limiter()
    message = str(caught.value)
    assert message.startswith(f"cannot reach the store supabase ({URL}): [Errno 111]")
    assert KEY not in message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# --- through open_store and the CLI ----------------------------------------------------------


def test_open_store_stops_when_the_migrations_table_is_missing(env: FakeRest) -> None:
    env.reply("GET", "/intel_schema_migrations", httpx.Response(404, json=PGRST205))
    with pytest.raises(StoreUnavailable) as caught:
        open_store("supabase")
    pending = ", ".join(m.name for m in load_postgres_migrations())
    assert f"has not been migrated ({pending} pending)" in str(caught.value)
    request = env.only()
    assert params(request) == [("select", "name"), ("order", "name.asc")]


def test_the_cli_reads_the_limiter_of_a_migrated_project(env: FakeRest) -> None:
    migrated(env)
    env.reply("GET", "/intel_limiter", httpx.Response(200, json=[]))
    result = runner.invoke(app, ["limiter", "status", "--json", "--store", "supabase"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["active"] is False
    assert [r.url.path for r in env.requests] == [
        "/rest/v1/intel_schema_migrations",
        "/rest/v1/intel_limiter",
    ]


def test_the_cli_exit_4_for_a_project_that_is_not_migrated(env: FakeRest) -> None:
    env.reply("GET", "/intel_schema_migrations", httpx.Response(404, json=PGRST205))
    result = runner.invoke(app, ["metrics", "--json", "--store", "supabase"])
    assert result.exit_code == ExitCode.CONFIG
    assert "has not been migrated" in result.stderr
    assert "intel migrate --store supabase" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_cli_exit_4_for_a_rejected_key_never_shows_it(env: FakeRest) -> None:
    env.reply("GET", "/intel_schema_migrations", httpx.Response(401, json=INVALID_KEY))
    result = runner.invoke(app, ["--debug", "metrics", "--store", "supabase"])
    assert result.exit_code == ExitCode.CONFIG
    assert "rejected SUPABASE_SERVICE_ROLE_KEY" in result.stderr
    assert KEY not in result.stdout + result.stderr


def test_migrate_without_a_direct_connection_points_at_print_sql(env: FakeRest) -> None:
    env.reply("GET", "/intel_schema_migrations", httpx.Response(404, json=PGRST205))
    result = runner.invoke(app, ["migrate", "--store", "supabase"])
    assert result.exit_code == ExitCode.CONFIG
    assert "SUPABASE_DB_URL" in result.stderr
    assert "intel migrate --store supabase --print-sql" in result.stderr


def test_print_sql_needs_only_the_rest_keys(env: FakeRest) -> None:
    env.reply("GET", "/intel_schema_migrations", httpx.Response(404, json=PGRST205))
    result = runner.invoke(app, ["migrate", "--store", "supabase", "--print-sql"])
    assert result.exit_code == 0, result.stderr
    assert "CREATE TABLE intel_logs" in result.stdout
    assert "CREATE FUNCTION intel_metrics" in result.stdout
    # the script records itself, so the SQL editor route leaves the project migrated
    assert "INSERT INTO intel_schema_migrations" in result.stdout
    assert all(r.method == "GET" for r in env.requests)


def test_print_sql_of_a_migrated_project_prints_nothing_pending(env: FakeRest) -> None:
    migrated(env)
    result = runner.invoke(app, ["migrate", "--store", "supabase", "--print-sql"])
    assert result.exit_code == 0, result.stderr
    assert "CREATE TABLE" not in result.stdout


# --- against the real functions (PostgreSQL behind a fake PostgREST) -------------------------


@pytest.mark.postgres
def test_migrate_with_supabase_db_url_uses_a_direct_connection(
    env: FakeRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_url()
    assert url is not None
    with blank_schema_url(url) as db_url:
        monkeypatch.setenv("SUPABASE_DB_URL", db_url)
        applied = runner.invoke(app, ["migrate", "--store", "supabase"])
        assert applied.exit_code == 0, applied.stderr
        with PostgresStore(db_url) as db:
            assert db.migrations() == ([m.name for m in load_postgres_migrations()], [])
        status = runner.invoke(app, ["migrate", "--status", "--store", "supabase"])
        assert status.exit_code == 0, status.stderr
        assert "0001_initial" in status.stdout
    assert env.requests == []  # all of it went over the direct connection


@pytest.fixture
def bridged() -> Iterator[tuple[TempSchemaStore, SupabaseStore, FakeRest]]:
    url = postgres_url()
    assert url is not None
    pg = fresh_postgres_store(url)
    fake = FakeRest(pg_url=pg.schema_url)
    supa = SupabaseStore(URL, KEY, transport=fake, retry=False)
    try:
        yield pg, supa, fake
    finally:
        supa.close()
        pg.close()


@pytest.mark.postgres
def test_rpc_bodies_match_the_sql_functions_and_give_postgres_figures(
    bridged: tuple[TempSchemaStore, SupabaseStore, FakeRest],
) -> None:
    pg, supa, _ = bridged
    for i, (total, enriched, cost) in enumerate([(3, 2, "0.1234565"), (0, 0, "0"), (7, 7, "1.5")]):
        at = T0 + timedelta(hours=i)
        pg.create_batch(f"b_{i}", model_used="m", mode="simulated", metadata={}, now=at)
        for row in range(total):
            pg.record_result(
                ContactResult(f"b_{i}", row, f"c{row}", "enriched", model=f"model-{row % 2}",
                              created_at=at)
            )
        pg.finalise_batch(
            f"b_{i}",
            BatchTotals("completed", total=total, enriched=enriched, failed=total - enriched,
                        cost=Decimal(cost), avg_time_ms=100 + i),
            now=at,
        )
    since, until = T0, T0 + timedelta(days=1)

    assert json.dumps(supa.metrics(since, until, 2)) == json.dumps(pg.metrics(since, until, 2))
    assert json.dumps(supa.metrics_by_day(since, until)) == json.dumps(
        pg.metrics_by_day(since, until)
    )
    assert json.dumps(supa.metrics_by_model(since, until)) == json.dumps(
        pg.metrics_by_model(since, until)
    )


@pytest.mark.postgres
def test_limiter_rpcs_run_the_real_functions(
    bridged: tuple[TempSchemaStore, SupabaseStore, FakeRest],
) -> None:
    pg, supa, _ = bridged
    later = supa.block_limiter(T0 + timedelta(minutes=2), reason="429", set_by="b_2", now=T0)
    kept = supa.block_limiter(T0 + timedelta(minutes=1), reason="429", set_by="b_1", now=T0)

    assert later.blocked_until == kept.blocked_until == T0 + timedelta(minutes=2)
    assert kept.set_by == "b_2"
    assert pg.get_limiter() == kept
    cleared = supa.reset_limiter()
    assert cleared is not None and cleared.set_by == "b_2"
    assert pg.get_limiter() is None
    assert supa.reset_limiter() is None


def test_commands_check_migrations_over_rest_even_with_a_db_url(
    env: FakeRest, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a direct connection that cannot be reached must not stop commands that use REST
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: connections are refused
    db_url = f"postgresql://postgres:pw-9f8e7d@127.0.0.1:{port}/postgres"
    monkeypatch.setenv("SUPABASE_DB_URL", db_url)
    migrated(env)
    env.reply("GET", "/intel_limiter", httpx.Response(200, json=[]))
    result = runner.invoke(app, ["limiter", "status", "--json", "--store", "supabase"])
    assert result.exit_code == 0, result.stderr
    unreachable = runner.invoke(app, ["migrate", "--status", "--store", "supabase"])
    assert unreachable.exit_code == ExitCode.CONFIG
    shown = f"postgresql://postgres:***@127.0.0.1:{port}/postgres"
    assert f"cannot reach the store {shown}" in unreachable.stderr
    assert "pw-9f8e7d" not in unreachable.stderr + unreachable.stdout


def test_iter_results_pages_by_row_index_not_offset(store: SupabaseStore, fake: FakeRest) -> None:
    def page(request: httpx.Request) -> httpx.Response:
        after = int(request.url.params["row_index"].removeprefix("gt."))
        limit = int(request.url.params["limit"])
        rows = [
            {"row_index": i, "cost": "0.0000000001", "created_at": "2026-03-01T12:00:00+00:00"}
            for i in range(after + 1, min(after + 1 + limit, 1003))
        ]
        return httpx.Response(200, json=rows)

    fake.reply("GET", "/intel_results", page)
    rows = store.iter_results("b_1")
    assert fake.requests == []  # nothing is fetched until the rows are asked for
    assert [r["row_index"] for r in rows] == list(range(1003))
    assert [params(r) for r in fake.requests] == [
        [("select", "*"), ("batch_id", "eq.b_1"), ("row_index", "gt.-1"),
         ("order", "row_index.asc"), ("offset", "0"), ("limit", "1000")],
        [("select", "*"), ("batch_id", "eq.b_1"), ("row_index", "gt.999"),
         ("order", "row_index.asc"), ("offset", "0"), ("limit", "1000")],
    ]
