"""The store going away mid-run (SPEC 4.3; issue 5 item 6): bounded retries around store
writes, then the run ends with exit 4 (StoreUnavailable), the results already committed
stay, and the output file is still written with every contact. Never a traceback.

SQLite: another connection holds the write lock past the busy timeout. PostgreSQL: the run's
backend is killed with pg_terminate_backend (the retry reconnects and the run completes),
and a server that goes away for good (a TCP proxy in front of it is shut down)."""

from __future__ import annotations

import csv
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from intel_cli.errors import ExitCode, StoreUnavailable
from intel_cli.pipeline import Progress, RunOptions, RunSummary, run
from intel_cli.simulator import Simulator, SimulatorConfig
from intel_cli.stores.base import Store
from intel_cli.stores.sqlite import SQLiteStore

MODEL = "claude-sonnet-4-5"
KEY = "test-key"


def write_contacts(path: Path, n: int) -> str:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["Name", "Email", "Station"])
        for i in range(n):
            writer.writerow([f"DJ {i}", f"dj{i:03d}@fm{i:03d}.example", f"FM {i}"])
    return str(path)


def read_output(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def enrich(
    sim: Simulator, store: Store, inputs: str, progress: Callable[[Progress], None] | None,
    **options: Any,
) -> RunSummary:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("store_retries", 2)
    options.setdefault("store_backoff", 0.05)
    return run(
        RunOptions(inputs=[inputs], model=MODEL, **options), store, api_key=KEY,
        base_url=sim.base_url, progress=progress,
    )


def after(n: int, action: Callable[[], None]) -> Callable[[Progress], None]:
    """A progress callback that runs `action` once, when `n` contacts are committed."""
    fired: list[bool] = []

    def on_progress(p: Progress) -> None:
        if p.done >= n and not fired:
            fired.append(True)
            action()

    return on_progress


def slow_sim() -> Simulator:
    return Simulator(SimulatorConfig(ttft_s=0.02, tokens_per_s=float("inf"), jitter=0.0))


def test_sqlite_locked_past_the_busy_timeout_ends_the_run_with_exit_4_and_resume_finishes(
    tmp_path: Path,
) -> None:
    n = 20
    inputs = write_contacts(tmp_path / "c.csv", n)
    db = tmp_path / "store.db"
    store = SQLiteStore(db, busy_timeout_ms=100)
    store.migrate()
    locker = sqlite3.connect(db, isolation_level=None)

    def lock() -> None:
        locker.execute("BEGIN EXCLUSIVE")

    try:
        with slow_sim() as sim:
            began = time.monotonic()
            summary = enrich(sim, store, inputs, after(5, lock), concurrency=2, batch_id="b_l")
            elapsed = time.monotonic() - began
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert isinstance(summary.error, StoreUnavailable)
    assert summary.error.exit_code == ExitCode.CONFIG
    assert "stayed locked" in str(summary.error)
    message = str(summary.error)
    assert "resume with `intel enrich" in message and "--resume b_l" in message
    assert summary.status == "failed"
    assert elapsed < 10  # bounded: a few busy timeouts and backoffs, not forever
    # every contact is in the output, the ones the store did not take marked unfinished
    rows = read_output(tmp_path / "c.enriched.csv")
    assert len(rows) == n
    statuses = [r["intel_status"] for r in rows]
    assert statuses[:5] == ["enriched"] * 5
    assert any(r["intel_error"] == "not sent: the store became unavailable" for r in rows)
    # what was committed stays; the batch is left `running`, for --resume to finish
    committed = store.batch_results("b_l")
    assert len(committed) >= 5 and all(r["status"] == "enriched" for r in committed)
    batch = store.get_batch("b_l")
    assert batch is not None and batch["status"] == "running"
    with Simulator(SimulatorConfig.instant()) as sim:
        resumed = enrich(sim, store, inputs, None, resume="b_l")
    assert (resumed.status, resumed.enriched, resumed.error) == ("completed", n, None)
    store.close()


def test_cli_store_lost_mid_run_is_one_line_exit_4_with_the_output_written(
    tmp_path: Path, intel_home: Path
) -> None:
    n = 30
    inputs = write_contacts(tmp_path / "c.csv", n)
    db = tmp_path / "store.db"
    env = {
        **os.environ, "INTEL_SIMULATE_TTFT": "0.05", "INTEL_SIMULATE_SPEED": "inf",
        "INTEL_SQLITE_BUSY_TIMEOUT_MS": "150", "INTEL_STORE_RETRIES": "2",
        "INTEL_STORE_BACKOFF": "0.05",
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "intel_cli", "enrich", inputs, "--simulate", "--store", str(db),
         "--concurrency", "2", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    locker: sqlite3.Connection | None = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                probe = sqlite3.connect(db, timeout=1)
                done = probe.execute("SELECT COUNT(*) FROM intel_results").fetchone()[0]
                probe.close()
            except sqlite3.OperationalError:
                done = 0
            if done >= 4:
                break
            time.sleep(0.01)
        locker = sqlite3.connect(db, isolation_level=None, timeout=5)
        locker.execute("BEGIN EXCLUSIVE")
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        if locker is not None:
            locker.execute("ROLLBACK")
            locker.close()
    assert child.returncode == ExitCode.CONFIG, stderr
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "stayed locked" in errors[0] and "--resume b_" in errors[0]
    assert len(read_output(tmp_path / "c.enriched.csv")) == n


# --- PostgreSQL ---------------------------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL; `shut()` makes the server vanish."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []
        self.closed = False
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self.lock:
                if self.closed:
                    client.close()
                    server.close()
                    return
                self.sockets += [client, server]
            self._spawn(self._pump, client, server)
            self._spawn(self._pump, server, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def shut(self) -> None:
        with self.lock:
            self.closed = True
            sockets = list(self.sockets)
        self.listener.close()
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    from tests.conftest import postgres_url
    from tests.pg import create_schema, drop_schema

    url = postgres_url()
    assert url is not None
    schema = create_schema(url)
    try:
        yield url, schema
    finally:
        drop_schema(url, schema)


def _pg_store(url: str, schema: str) -> Store:
    from intel_cli.stores.postgres import PostgresStore
    from tests.pg import with_search_path

    store = PostgresStore(with_search_path(url, schema), connect_timeout=2)
    store.migrate()
    return store


@pytest.mark.postgres
def test_postgres_backend_terminated_mid_run_is_ridden_out(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    import psycopg

    url, schema = pg_schema
    n = 12
    inputs = write_contacts(tmp_path / "c.csv", n)
    store = _pg_store(url, schema)
    pid = store._connection().info.backend_pid  # type: ignore[attr-defined]

    def terminate() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))

    try:
        with slow_sim() as sim:
            summary = enrich(sim, store, inputs, after(3, terminate), concurrency=2)
        assert summary.error is None and summary.status == "completed"
        assert len(store.batch_results(summary.batch_id)) == n
        assert store._connection().info.backend_pid != pid  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_server_gone_mid_run_is_exit_4_with_results_kept_and_output_written(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    n = 20
    inputs = write_contacts(tmp_path / "c.csv", n)
    parts = urlsplit(url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2
                                        else host))
    store = _pg_store(proxied, schema)
    try:
        with slow_sim() as sim:
            began = time.monotonic()
            summary = enrich(sim, store, inputs, after(4, proxy.shut), concurrency=2,
                             batch_id="b_pg_gone")
            elapsed = time.monotonic() - began
    finally:
        proxy.shut()
        store.close()
    assert isinstance(summary.error, StoreUnavailable), summary.error
    assert summary.error.exit_code == ExitCode.CONFIG
    assert "cannot reach the store" in str(summary.error) and "--resume b_pg_gone" in str(
        summary.error
    )
    assert elapsed < 15
    rows = read_output(tmp_path / "c.enriched.csv")
    assert len(rows) == n and [r["intel_status"] for r in rows[:4]] == ["enriched"] * 4
    direct = _pg_store(url, schema)
    try:
        kept = direct.batch_results("b_pg_gone")
        assert len(kept) >= 4 and all(r["status"] == "enriched" for r in kept)
    finally:
        direct.close()
