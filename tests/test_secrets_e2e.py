"""Secrets end to end (issue 5, item 7; SPEC 5): failing commands run with recognisable fake
API keys, service-role keys and database passwords, and none of them may appear anywhere:
stdout, stderr, `--debug` tracebacks, the output files, the SQLite file's bytes, or what the
PostgreSQL store keeps (intel_logs.metadata, intel_results).

Every secret carries two markers (FAKEKEY, 9876, Pa55, XYZ, ...) and every check looks for the
markers, so a secret that is cut in two and half printed is caught as well as a whole one.
The servers that fail are real: the simulator refusing a key (401), a verbose gateway that
echoes the key it was sent in its error bodies (the worst case for redaction), an unreachable
PostgreSQL port, and the test PostgreSQL server (trust auth accepts any password, so the
variants are a role and a database that do not exist, and a schema not migrated yet).

Found and fixed with these tests:
- a key set with a trailing newline (`export KEY=$(cat file)` keeps none, but .env files and
  CI secrets do) was sent stripped, echoed stripped, and not redacted: it was stored in
  intel_results.error and written to the output file;
- a raw '@' in a store password made libpq connect to a host named after the rest of the
  password, and print it; such a URL is now refused before connecting.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from intel_cli import secrets
from intel_cli.cli import app
from intel_cli.simulator import Simulator, SimulatorConfig
from tests.conftest import postgres_url

runner = CliRunner()

# each secret holds at least two of the markers
MARKERS = ("FAKEKEY", "f00d", "Pa55", "XYZ", "9876", "FAKEsig", "QueryPw")
ANTHROPIC_KEY = "sk-ant-api03-FAKEKEY-f00d-0123456789abcdef"
PLAIN_KEY = "FAKEKEY-plain-f00d-5a3c"  # no known key shape: only the env lookup can catch it
SERVICE_JWT = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.FAKEsig-9876543210"
SERVICE_PLAIN = "service-role-FAKEKEY-9876543210"
PASSWORD = "Pa55wordXYZ"

UNREACHABLE = {
    "plain": f"postgresql://intel:{PASSWORD}@127.0.0.1:1/intel",
    "percent-encoded": "postgresql://intel:Pa55%40w%3Ard%2FXYZ@127.0.0.1:1/intel",
    "raw-at-sign": "postgresql://intel:Pa55@XYZ@127.0.0.1:1/intel",
    "postgres-scheme": f"postgres://:{PASSWORD}@127.0.0.1:1/intel",
    "query-password": "postgresql://intel@127.0.0.1:1/intel?password=QueryPwXYZ",
}
STORE_COMMANDS = [
    ["metrics"],
    ["metrics", "--json"],
    ["migrate"],
    ["migrate", "--status"],
    ["migrate", "--print-sql"],
    ["batches", "show", "b_missing"],
    ["limiter", "status"],
    ["limiter", "reset"],
]


def leaks(text: str | bytes) -> list[str]:
    data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
    return [m for m in MARKERS if m.encode() in data]


def file_leaks(*roots: Path) -> dict[str, list[str]]:
    """Every file under `roots` (outputs, the SQLite file and its WAL) that holds a marker."""
    found: dict[str, list[str]] = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and (hit := leaks(path.read_bytes())):
                found[str(path)] = hit
    return found


@pytest.fixture(autouse=True)
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets registered by an earlier in-process test must not redact this one's for it."""
    monkeypatch.setattr(secrets, "_extra", set())


@pytest.fixture
def contacts(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "contacts.csv"
    path.parent.mkdir()
    path.write_text(
        "Name,Email,Station\nAnn Lee,ann@radio.example,Radio One\nBo Chen,bo@fm.example,FM2\n"
    )
    return path


def cli(
    args: list[str], env: dict[str, str], home: Path, *, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m intel_cli ARGS` in a clean environment with `env` added."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("INTEL_", "ANTHROPIC_", "SUPABASE_", "PG", "DATABASE_URL"))
    }
    full = {
        **base,
        "INTEL_HOME": str(home),
        "INTEL_SIMULATE_TTFT": "0",
        "INTEL_SIMULATE_SPEED": "inf",
        "PYTHONDONTWRITEBYTECODE": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "intel_cli", *args],
        capture_output=True, text=True, env=full, timeout=timeout,
    )


def assert_clean_failure(done: Any, code: int, *roots: Path) -> None:
    stdout, stderr = done.stdout, done.stderr
    rc = getattr(done, "returncode", getattr(done, "exit_code", None))
    assert rc == code, (rc, stdout, stderr)
    assert not leaks(stdout), stdout
    assert not leaks(stderr), stderr
    assert not file_leaks(*roots)


# --- a verbose gateway: errors that echo the key they were sent ------------------------------


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers every request with `server.status` and a body that quotes the credentials it
    received, in the shapes of the Messages API and of PostgREST."""

    def _reply(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        sent = {k: v for k, v in self.headers.items()
                if k.lower() in ("x-api-key", "apikey", "authorization")}
        text = f"credentials {sent} are not valid here"
        body = json.dumps(
            {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": text},
                "message": text, "code": "PGRST301", "details": text, "hint": None,
            }
        ).encode()
        self.send_response(self.server.status)  # type: ignore[attr-defined]
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _reply

    def log_message(self, *_args: object) -> None:
        return None


@pytest.fixture
def echo() -> Iterator[Any]:
    def start(status: int) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        server.status = status  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    servers: list[http.server.ThreadingHTTPServer] = []
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


# --- the Messages API ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "debug"),
    [(ANTHROPIC_KEY, []), (PLAIN_KEY + "\n", ["--debug"])],
    ids=["shaped", "newline-debug"],
)
def test_a_wrong_key_against_the_simulator(
    tmp_path: Path, contacts: Path, key: str, debug: list[str]
) -> None:
    home = tmp_path / "home"
    config = SimulatorConfig(ttft_s=0, tokens_per_s=float("inf"), api_keys={"the-right-key"})
    with Simulator(config) as simulator:
        done = cli(
            ["enrich", str(contacts), "--json", *debug],
            {"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": simulator.base_url},
            home,
        )
    assert_clean_failure(done, 4, home, contacts.parent)
    assert "Anthropic rejected the API key" in done.stderr
    assert json.loads(done.stdout)["success"] is False
    if debug:
        assert "Traceback" in done.stderr  # the traceback was printed, and is clean
    assert (contacts.parent / "contacts.enriched.csv").exists()
    assert (home / "intel.db").exists()


@pytest.mark.parametrize(
    ("key", "output"),
    [(PLAIN_KEY, "out.csv"), (PLAIN_KEY + "\n", "out.json"), (" " + ANTHROPIC_KEY, "out.jsonl")],
    ids=["plain", "newline", "space-shaped"],
)
@pytest.mark.parametrize("status", [400, 401])
def test_a_gateway_that_echoes_the_key(
    tmp_path: Path, intel_home: Path, contacts: Path, echo: Any, key: str, output: str,
    status: int,
) -> None:
    """400: each contact fails with the gateway's message (stored and written per contact);
    401: the run stops at once. Either way the echoed key is nowhere."""
    out = tmp_path / "in" / output
    result = runner.invoke(
        app,
        ["enrich", str(contacts), "-o", str(out), "--debug", "--json"],
        env={"ANTHROPIC_API_KEY": key, "ANTHROPIC_BASE_URL": echo(status)},
    )
    assert_clean_failure(result, 0 if status == 400 else 4, intel_home, contacts.parent)
    text = out.read_text()
    if status == 400:
        assert "credentials" in text  # the gateway's message reached the output, redacted
        assert "***" in text


# --- PostgreSQL ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", UNREACHABLE.values(), ids=UNREACHABLE.keys())
@pytest.mark.parametrize("command", STORE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_unreachable_postgres_store(
    tmp_path: Path, intel_home: Path, url: str, command: list[str], debug: list[str]
) -> None:
    # in-process (CliRunner) so the whole matrix stays fast; real processes below
    result = runner.invoke(app, ["--store", url, *command, *debug])
    assert_clean_failure(result, 4, intel_home, tmp_path)
    assert result.stderr.strip().splitlines()[-1].startswith("Error: ")
    if debug:
        assert "Traceback" in result.stderr


@pytest.mark.parametrize("url", UNREACHABLE.values(), ids=UNREACHABLE.keys())
def test_unreachable_postgres_store_from_the_environment(
    intel_home: Path, contacts: Path, url: str
) -> None:
    result = runner.invoke(
        app, ["enrich", str(contacts), "--simulate", "--debug"], env={"INTEL_STORE": url}
    )
    assert_clean_failure(result, 4, intel_home, contacts.parent)
    assert "Traceback" in result.stderr


def test_unreachable_postgres_store_in_a_real_process(tmp_path: Path, contacts: Path) -> None:
    home = tmp_path / "home"
    done = cli(
        ["enrich", str(contacts), "--simulate", "--debug"],
        {"INTEL_STORE": UNREACHABLE["plain"], "PGPASSWORD": "Pa55-PGPASSWORD-XYZ"},
        home,
    )
    assert_clean_failure(done, 4, home, contacts.parent)
    assert "Traceback" in done.stderr and "postgresql://intel:***@127.0.0.1:1" in done.stderr


def test_a_raw_at_sign_in_the_password_is_refused_before_connecting(intel_home: Path) -> None:
    result = runner.invoke(app, ["metrics", "--store", UNREACHABLE["raw-at-sign"]])
    assert result.exit_code == 4
    assert result.stderr == (
        "Error: the store URL postgresql://intel:***@127.0.0.1:1/intel has a raw '@' in its "
        "user name or password: write it as %40\n"
    )


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A blank schema on the test server, its URL carrying a password (trust auth ignores it)."""
    url = postgres_url()
    assert url is not None
    from tests.pg import blank_schema_url

    with blank_schema_url(url) as schema_url:
        scheme, rest = schema_url.split("://", 1)
        userinfo, hostpart = rest.split("@", 1)
        yield f"{scheme}://{userinfo.split(':')[0]}:{PASSWORD}@{hostpart}"


@pytest.mark.postgres
def test_real_postgres_server(
    tmp_path: Path, intel_home: Path, contacts: Path, echo: Any, pg_schema_url: str
) -> None:
    scheme, rest = pg_schema_url.split("://", 1)
    host_db = rest.split("@", 1)[1].split("?", 1)[0]
    variants = {
        "no such role": f"{scheme}://nobody_at_all:{PASSWORD}@{host_db}",
        "no such database": f"{scheme}://postgres:{PASSWORD}@{host_db}_missing",
    }
    for what, url in variants.items():
        result = runner.invoke(app, ["metrics", "--debug"], env={"INTEL_STORE": url})
        assert_clean_failure(result, 4, intel_home)
        assert "does not exist" in result.stderr, what

    # not migrated yet: the message shows the URL (and the command to run)
    result = runner.invoke(app, ["enrich", str(contacts), "--simulate", "--store", pg_schema_url])
    assert_clean_failure(result, 4, intel_home, contacts.parent)
    assert "has not been migrated" in result.stderr and ":***@" in result.stderr
    result = runner.invoke(app, ["migrate", "--store", pg_schema_url])
    assert result.exit_code == 0, result.stderr
    assert not leaks(result.stdout + result.stderr)

    # a run whose every contact fails with a message that quotes the key, into PostgreSQL
    result = runner.invoke(
        app,
        ["enrich", str(contacts), "--store", pg_schema_url, "--json", "--debug"],
        env={"ANTHROPIC_API_KEY": PLAIN_KEY + "\n", "ANTHROPIC_BASE_URL": echo(400)},
    )
    assert_clean_failure(result, 0, intel_home, contacts.parent)
    batch_id = json.loads(result.stdout)["batchId"]
    for command in (["metrics", "--json"], ["batches", "show", batch_id]):
        shown = runner.invoke(app, [*command, "--store", pg_schema_url])
        assert shown.exit_code == 0, shown.stderr
        assert not leaks(shown.stdout + shown.stderr)

    # what the store keeps, read back raw
    admin = postgres_url()
    assert admin is not None
    schema = pg_schema_url.split("search_path%3D", 1)[1].split("%20", 1)[0]
    with psycopg.connect(admin) as conn:
        rows = conn.execute(
            f'SELECT row_to_json(l)::text FROM "{schema}".intel_logs l '
            f'UNION ALL SELECT row_to_json(r)::text FROM "{schema}".intel_results r'
        ).fetchall()
    stored = "\n".join(row[0] for row in rows)
    assert "credentials" in stored and "***" in stored
    assert not leaks(stored), stored


# --- Supabase ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [SERVICE_JWT, SERVICE_PLAIN, SERVICE_PLAIN + " \n"], ids=repr)
@pytest.mark.parametrize("status", [401, 500])
def test_supabase_service_role_key_echoed(
    intel_home: Path, contacts: Path, echo: Any, key: str, status: int
) -> None:
    env = {"SUPABASE_URL": echo(status), "SUPABASE_SERVICE_ROLE_KEY": key}
    for command in (["metrics"], ["enrich", str(contacts), "--simulate"], ["limiter", "reset"]):
        for debug in ([], ["--debug"]):
            result = runner.invoke(app, ["--store", "supabase", *command, *debug], env=env)
            assert_clean_failure(result, 4, intel_home, contacts.parent)
            assert ("Traceback" in result.stderr) == bool(debug)


@pytest.mark.slow
def test_supabase_unreachable(intel_home: Path) -> None:
    # one command: the REST client retries a refused connection for a few seconds
    env = {"SUPABASE_URL": "http://127.0.0.1:1", "SUPABASE_SERVICE_ROLE_KEY": SERVICE_JWT}
    result = runner.invoke(app, ["--store", "supabase", "metrics", "--debug"], env=env)
    assert_clean_failure(result, 4, intel_home)
    assert "Traceback" in result.stderr


def test_supabase_migrate_with_a_database_password(intel_home: Path) -> None:
    env = {
        "SUPABASE_URL": "http://127.0.0.1:1",
        "SUPABASE_SERVICE_ROLE_KEY": SERVICE_PLAIN,
        "SUPABASE_DB_URL": f"postgresql://postgres.abcdef:{PASSWORD}@127.0.0.1:1/postgres",
    }
    for debug in ([], ["--debug"]):
        result = runner.invoke(app, ["--store", "supabase", "migrate", *debug], env=env)
        assert_clean_failure(result, 4, intel_home)
