"""Hostile input (issue 5, item 5): whatever a file holds, `intel enrich` either returns every
input row exactly once, in order, or exits 2 with one line naming the file and the problem.
Never a traceback, never a hang.

Two levels: the reader (`read_contacts` + `write_output`), property-tested with hypothesis and
with the cases that once broke it, each under a deadline; and the CLI end to end (CliRunner
and real subprocesses) against the in-process simulator with no latency.

Cases that broke the reader before this file existed, each pinned below:
- csv.Sniffer's regexes are quadratic: 64 KB of `",` took 43 s, of `"\\n` 90 s;
- a header of 30,000 identical names took minutes to make unique (quadratic suffixing);
- a UTF-16 file (it has the BOM) with an odd byte count or a torn pair: UnicodeDecodeError;
- JSON nested 100,000 deep: RecursionError; a 5,000-digit number: ValueError;
- a `\\ud83d` escape (half an emoji) in JSON: UnicodeEncodeError writing the output;
- a NUL past the first 8 KB of a CSV, or `\\u0000` in JSON: exit 1 on PostgreSQL, which
  refuses NUL in text;
- JSONL on stdin whose first line is longer than 64 KB was taken for a JSON object.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from intel_cli.cli import app
from intel_cli.contacts import Contact, read_contacts, write_output
from intel_cli.errors import InputError
from intel_cli.schema import OUTPUT_COLUMNS
from intel_cli.stores.base import ContactResult

runner = CliRunner()

# modest and reproducible: the same examples on every run, nothing written to .hypothesis
_SETTINGS: dict[str, Any] = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
}

HEADER = ["Name", "Email", "Notes"]


@pytest.fixture(autouse=True)
def instant_simulate(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEL_SIMULATE_TTFT", "0")
    monkeypatch.setenv("INTEL_SIMULATE_SPEED", "inf")


# --- helpers ---------------------------------------------------------------------------------


class Hang(BaseException):
    """Raised in the main thread when a case runs past its deadline (a BaseException, so the
    CLI's catch-all for bugs does not turn it into an exit 1)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail a case that runs too long instead of letting it hang the suite. SIGALRM reaches
    Python code and the regex engine alike (both check for signals)."""

    def on_alarm(_signum: int, _frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _skipped(contact: Contact) -> ContactResult:
    return ContactResult("b_hostile", contact.row_index, contact.key, "skipped", error="test")


def read_or_refuse(path: Path, seconds: float = 10.0) -> list[Contact] | str:
    """The contacts of `path` (read twice, and written in all three output formats), or the
    one-line message of the InputError that refused it. Anything else fails the test."""
    with deadline(seconds):
        try:
            with read_contacts([str(path)]) as source:
                contacts = list(source)
                assert [c.values for c in source] == [c.values for c in contacts]
                for name in ("out.csv", "out.json", "out.jsonl"):
                    write_output(str(path.parent / name), source, _skipped)
        except InputError as exc:
            message = str(exc)
            assert "\n" not in message and "\r" not in message, message
            assert message.startswith(f"{path}: "), message
            return message
    return contacts


def encode_rows(
    rows: list[list[str]], delimiter: str, quoting: int, terminator: str
) -> str:
    """CSV text with any line terminator. csv.writer quotes a field holding \\r or \\n only
    when that character is in its own terminator, so each row is written with \\r\\n (which
    quotes both) and joined with the terminator wanted."""
    lines = []
    for row in rows:
        buffer = io.StringIO()
        csv.writer(buffer, delimiter=delimiter, quoting=quoting, lineterminator="\r\n").writerow(
            row
        )
        lines.append(buffer.getvalue()[:-2])
    return terminator.join(lines) + terminator


_cell = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),
        st.sampled_from([",", ";", "\t", "|", '"', "'", "\n", "\r", " ", "@", "."]),
    ),
    max_size=24,
)
dialects = st.fixed_dictionaries(
    {
        "delimiter": st.sampled_from([",", ";", "\t", "|"]),
        "quoting": st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
        "terminator": st.sampled_from(["\n", "\r\n", "\r"]),
        "bom": st.booleans(),
        "suffix": st.sampled_from([".csv", ".txt", ""]),
    }
)


def write_dialect(directory: str, rows: list[list[str]], dialect: dict[str, Any]) -> Path:
    suffix = dialect["suffix"]
    if dialect["delimiter"] == "\t" and suffix == ".csv":
        suffix = ".tsv"  # a .csv file is read as CSV: tab-separated ones are named .tsv
    path = Path(directory) / f"list{suffix}"
    text = encode_rows(rows, dialect["delimiter"], dialect["quoting"], dialect["terminator"])
    path.write_bytes((b"\xef\xbb\xbf" if dialect["bom"] else b"") + text.encode("utf-8"))
    return path


# --- the reader: any dialect, every row once, in order ------------------------------------------


@settings(max_examples=80, **_SETTINGS)
@given(
    rows=st.lists(
        st.lists(_cell, min_size=3, max_size=3).filter(lambda r: any(c.strip() for c in r)),
        min_size=1,
        max_size=12,
    ),
    dialect=dialects,
)
def test_any_dialect_gives_every_row_once_in_order(
    rows: list[list[str]], dialect: dict[str, Any]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dialect(tmp, [HEADER, *rows], dialect)
        got = read_or_refuse(path)
    assert not isinstance(got, str), got
    assert [[c.values[h] for h in HEADER] for c in got] == rows
    assert [c.row_index for c in got] == list(range(len(rows)))


@settings(max_examples=40, **_SETTINGS)
@given(
    names=st.lists(_cell.filter(lambda c: "@" not in c), min_size=1, max_size=10),
    dialect=dialects,
)
def test_header_less_files_keep_their_first_row(names: list[str], dialect: dict[str, Any]) -> None:
    # a first row with an address and no header name is data; its columns get column_N names
    rows = [[f"~{name}", f"dj{i}@radio{i}.example", str(i)] for i, name in enumerate(names)]
    with tempfile.TemporaryDirectory() as tmp:
        got = read_or_refuse(write_dialect(tmp, rows, dialect))
    assert not isinstance(got, str), got
    assert [list(c.values.values()) for c in got] == rows
    assert list(got[0].values) == ["column_1", "column_2", "column_3"]
    assert [c.email for c in got] == [r[1] for r in rows]


# --- the reader: bytes of any kind --------------------------------------------------------------

_pieces = st.sampled_from(
    [
        b",", b";", b"\t", b"|", b'"', b"'", b"\n", b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3",
        b"\xe2\x82", b"\xed\xa0\x80", b"[", b"]", b"{", b"}", b":", b'"email"', b"a@b.co",
        b"Name", b"Email", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b" ", b"x", b"null",
        b"1", b"\\u0000", b"\\ud83d",
    ]
)
hostile_bytes = st.one_of(st.binary(max_size=400), st.lists(_pieces, max_size=80).map(b"".join))


@settings(max_examples=250, **_SETTINGS)
@given(data=hostile_bytes, suffix=st.sampled_from([".csv", ".tsv", ".json", ".jsonl", ""]))
def test_any_bytes_read_or_fail_in_one_line(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"in{suffix}"
        path.write_bytes(data)
        read_or_refuse(path, seconds=5)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16")


# Files that once raised a traceback or hung. Each must now read or be refused in one line,
# well inside the deadline (the hangs took 40 s to minutes).
BROKE_ONCE: dict[str, bytes] = {
    "sniffer-quotes-commas": b'",' * 35_000,
    "sniffer-quotes-newlines": b'"\n' * 40_000,
    "sniffer-comma-space-quote": b', "a' * 20_000,
    "same-header-30000-times": b"a;" * 30_000 + b"\nx@y.co;" + b"\n",
    "same-blank-quoted-header": b'"b",' * 30_000 + b"\n",
    "utf16-odd-length": _utf16("Name,Email\nAnn,ann@x.co\n") + b"\x00",
    "utf16-torn-pair": _utf16("Name,Email\n") + "\ud83d".encode("utf-16-le", "surrogatepass"),
    "random-bytes": random.Random(5).randbytes(20_000),
    "nul-at-start": b"Name,Email\nAnn,a\x00@x.co\n",
}


@pytest.mark.parametrize("data", BROKE_ONCE.values(), ids=BROKE_ONCE.keys())
@pytest.mark.parametrize("suffix", [".csv", ""])
def test_cases_that_once_broke_the_reader(tmp_path: Path, data: bytes, suffix: str) -> None:
    path = tmp_path / f"hostile{suffix}"
    path.write_bytes(data)
    read_or_refuse(path, seconds=5)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("deep.json", '[{"a": ' + "[" * 100_000 + "]" * 100_000 + "}]", "nested too deeply"),
        ("deep.jsonl", '{"a": ' * 100_000 + "1" + "}" * 100_000 + "\n", "line 1: JSON nested"),
        ("deep.txt", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "nested too deeply"),
        ("big.json", '[{"email": "a@b.co", "n": ' + "7" * 5000 + "}]", "longer than"),
        ("big.jsonl", '{"email": "a@b.co"}\n{"n": ' + "7" * 5000 + "}\n", "line 2: a number"),
    ],
)
def test_json_past_the_parsers_limits_is_refused(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    got = read_or_refuse(path)
    assert isinstance(got, str) and message in got


# --- the reader: each named kind of hostile file -----------------------------------------------


def test_nul_bytes_past_the_probe_are_left_out_with_one_warning(tmp_path: Path) -> None:
    # PostgreSQL refuses NUL in text: a key like this one was an exit 1 on that store
    path = tmp_path / "nul.csv"
    good = "".join(f"DJ {i},dj{i}@radio.example,ok\n" for i in range(1000))
    path.write_bytes(
        f"Name,Email,Notes\n{good}".encode() + b"Late,la\x00te@radio.example,a\x00b\x00\n"
    )
    warnings: list[str] = []
    with read_contacts([str(path)], warn=warnings.append) as source:
        contacts = list(source)
    assert len(contacts) == 1001
    assert contacts[-1].values == {"Name": "Late", "Email": "late@radio.example", "Notes": "ab"}
    assert contacts[-1].key == "late@radio.example"
    assert warnings == [f"{path} holds NUL characters; they are left out of the values"]


def test_nul_early_in_a_csv_is_not_a_text_file(tmp_path: Path) -> None:
    path = tmp_path / "nul.csv"
    path.write_bytes(b"Name,Email\nAnn,a\x00@x.co\n")
    assert read_or_refuse(path) == (
        f"{path}: not a text file (CSV, TSV, JSON or JSONL expected)"
    )


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_json_nul_and_half_surrogate_escapes_are_cleaned(tmp_path: Path, suffix: str) -> None:
    items = [
        {"email": "a\u0000nn@x.example", "notes": "cut emoji \ud83d", "name": "Ann"},
        {"email": "bob@x.example", "notes": "whole emoji \U0001f600"},
    ]
    # json.dumps writes lone surrogates and NUL as \\u escapes, as JavaScript does
    if suffix == ".json":
        text = json.dumps(items)
    else:
        text = "".join(json.dumps(item) + "\n" for item in items)
    path = tmp_path / f"in{suffix}"
    path.write_text(text)
    warnings: list[str] = []
    with read_contacts([str(path)], warn=warnings.append) as source:
        contacts = list(source)
        write_output(str(tmp_path / "out.json"), source, _skipped)
    assert contacts[0].values["email"] == "ann@x.example"
    assert contacts[0].values["notes"] == "cut emoji \ufffd"
    assert contacts[1].values["notes"] == "whole emoji \U0001f600"
    assert len(warnings) == 1 and "U+FFFD" in warnings[0]
    written = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert [item["notes"] for item in written] == ["cut emoji \ufffd", "whole emoji \U0001f600"]


def test_invalid_utf8_mid_file_reads_every_row(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    head = "".join(f"Zoë {i},z{i}@x.example,Café\n" for i in range(3000))  # ~90 KB of UTF-8
    path.write_bytes(b"Name,Email,Notes\n" + head.encode() + b"Ren\xe9,rene@x.example,\x93hi\x94\n")
    warnings: list[str] = []
    with read_contacts([str(path)], warn=warnings.append) as source:
        contacts = list(source)
    assert len(contacts) == 3001
    assert contacts[0].values["Name"] == "Zoë 0"  # the UTF-8 text is not turned to mojibake
    assert contacts[-1].values == {"Name": "René", "Email": "rene@x.example", "Notes": "“hi”"}
    assert warnings == [f"{path} is not UTF-8; read it as cp1252"]


@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl", "-stdin.jsonl"])
def test_300_kb_fields(tmp_path: Path, suffix: str) -> None:
    notes = "n" * 300_000
    rows = [{"Name": "Ann", "Email": "ann@x.example", "Notes": notes},
            {"Name": "Bob", "Email": "bob@x.example", "Notes": "short"}]
    if suffix == ".csv":
        data = encode_rows([HEADER] + [list(r.values()) for r in rows], ",", 0, "\n")
    elif suffix == ".json":
        data = json.dumps(rows)
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows)
    path = tmp_path / f"big{suffix}"
    path.write_text(data)
    if suffix.startswith("-stdin"):
        # with no file name the format is judged by content, and the first line is 300 KB
        source = read_contacts(["-"], stdin=io.BytesIO(data.encode()))
    else:
        source = read_contacts([str(path)])
    with source:
        assert [c.values for c in source] == rows


def test_10000_columns(tmp_path: Path) -> None:
    header = ["Name", "Email", *(f"extra {i}" for i in range(9_998))]
    rows = [[f"DJ {r}", f"dj{r}@x.example", *(f"{r}.{i}" for i in range(9_998))] for r in range(3)]
    path = tmp_path / "wide.csv"
    path.write_text(encode_rows([header, *rows], ",", 0, "\n"))
    got = read_or_refuse(path)
    assert not isinstance(got, str), got
    assert [list(c.values.values()) for c in got] == rows
    with (tmp_path / "out.csv").open(newline="") as f:
        out = list(csv.reader(f))
    assert out[0] == [*header, *OUTPUT_COLUMNS]
    assert [r[: len(header)] for r in out[1:]] == rows


def test_json_object_instead_of_an_array(tmp_path: Path) -> None:
    path = tmp_path / "contacts.json"
    path.write_text('{"contacts": [{"email": "ann@x.example"}]}')
    assert read_or_refuse(path) == (
        f"{path}: JSON must be an array of objects ([{{...}}, ...]), not an object"
    )


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_bare_carriage_return_in_a_cell_survives_the_output(
    tmp_path: Path, suffix: str
) -> None:
    # csv.writer with "\n" line ends left a bare CR unquoted: the output row broke in two
    rows = [["Ann\rLee", "ann@x.example", "line one\rline two\r"], ["Bob", "bob@x.example", ""]]
    path = tmp_path / f"cr{suffix}"
    if suffix == ".csv":
        path.write_text(encode_rows([HEADER, *rows], ",", csv.QUOTE_MINIMAL, "\n"))
    else:
        path.write_text(json.dumps([dict(zip(HEADER, row, strict=True)) for row in rows]))
    got = read_or_refuse(path)
    assert not isinstance(got, str), got
    with (tmp_path / "out.csv").open(newline="", encoding="utf-8") as f:
        out = list(csv.reader(f))
    assert [r[:3] for r in out[1:]] == rows


def test_jsonl_broken_line_reports_its_number(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    path.write_text('{"email": "a@x.example"}\n\n{"email": "b@x.example"}\n{"email": b@x}\n')
    assert read_or_refuse(path) == f"{path}: line 4: not valid JSON (Expecting value)"


# --- end to end: `intel enrich FILE --simulate` ------------------------------------------------


def enrich(path: Path, output: Path) -> Any:
    with deadline(60):
        return runner.invoke(
            app, ["enrich", str(path), "--simulate", "--quiet", "-o", str(output)]
        )


def assert_refused_in_one_line(result: Any, path: Path) -> None:
    """Exit 2, one `Error:` line naming the file (warnings may come before it), no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.rstrip("\n").endswith(errors[0])
    assert path.name in errors[0]


def output_rows(output: Path) -> tuple[list[str], list[list[str]]]:
    with output.open(newline="", encoding="utf-8") as f:
        header, *rows = list(csv.reader(f))
    return header, rows


_name = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),
        st.sampled_from([",", ";", "\t", "|", '"', "'", "\n", "\r", " "]),
    ),
    max_size=16,
)


@settings(max_examples=25, **_SETTINGS)
@given(
    cells=st.lists(st.tuples(_name, st.booleans(), _name), min_size=1, max_size=8),
    dialect=dialects,
)
def test_enrich_returns_every_row_once_in_order(
    cells: list[tuple[str, bool, str]], dialect: dict[str, Any]
) -> None:
    # the first row always has an address, so the file is never without enrichable rows;
    # rows of blank cells are no rows (spreadsheets' trailing rows), so none is made
    rows = [
        [name, f"dj{i}@radio{i}.example" if has_email or i == 0 else "", notes]
        for i, (name, has_email, notes) in enumerate(cells)
    ]
    rows = [row for row in rows if any(cell.strip() for cell in row)]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_dialect(tmp, [HEADER, *rows], dialect)
        output = Path(tmp) / "out.csv"
        result = enrich(path, output)
        assert result.exit_code == 0, result.stderr
        header, got = output_rows(output)
    assert header == [*HEADER, *OUTPUT_COLUMNS]
    assert [r[:3] for r in got] == rows
    status = [r[header.index("intel_status")] for r in got]
    assert [s == "skipped" for s in status] == [not r[1] for r in rows]
    assert set(status) <= {"enriched", "cached", "skipped"}


@settings(max_examples=40, **_SETTINGS)
@given(data=hostile_bytes, suffix=st.sampled_from([".csv", ".json", ".jsonl", ""]))
def test_enrich_on_any_bytes_exits_0_or_2_in_one_line(data: bytes, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"junk{suffix}"
        path.write_bytes(data)
        result = enrich(path, Path(tmp) / "out.csv")
        if result.exit_code == 0:
            assert (Path(tmp) / "out.csv").exists()
        else:
            assert_refused_in_one_line(result, path)


E2E_REFUSED: dict[str, tuple[str, bytes, str]] = {
    "random-bytes": ("junk.csv", random.Random(7).randbytes(5000), "not a text file"),
    "json-object": ("c.json", b'{"email": "a@x.example"}', "not an object"),
    "jsonl-broken-line": (
        "c.jsonl", b'{"email": "a@x.example"}\n{"email": \n', "line 2: not valid JSON"
    ),
    "utf16-torn": ("c.csv", _utf16("Name,Email\n") + b"\x00", "not valid UTF-16"),
    "deep-json": ("c.json", b'[{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}]", "nested"),
    "no-contacts": ("c.csv", b'",' * 35_000, "no enrichable rows"),
}


@pytest.mark.parametrize(
    ("name", "data", "message"), E2E_REFUSED.values(), ids=E2E_REFUSED.keys()
)
def test_enrich_refuses_in_one_line(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = enrich(path, tmp_path / "out.csv")
    assert_refused_in_one_line(result, path)
    assert message in result.stderr
    assert not (tmp_path / "out.csv").exists()


E2E_READ: dict[str, tuple[str, bytes, list[str], int]] = {
    "nul-late": (  # past the 8 KB binary probe: long notes, few contacts (each one is sent)
        "c.csv",
        b"Name,Email,Notes\n"
        + b"".join(b"DJ %d,dj%d@x.example,%s\n" % (i, i, b"n" * 1000) for i in range(10))
        + b"Late,la\x00te@x.example,a\x00b\n",
        ["Late", "late@x.example", "ab"],
        11,
    ),
    "invalid-utf8-mid-file": (
        "c.csv",
        b"Name,Email\n" + "Zoë,zoe@x.example\n".encode() * 4000
        + b"Ren\xe9,rene@x.example\n",
        ["René", "rene@x.example"],
        4001,
    ),
    "json-escapes": (
        "c.json",
        b'[{"email": "a\\u0000@x.example", "n": "\\ud83d"}]',
        ["a@x.example", "\ufffd"],
        1,
    ),
    "300kb-field": (
        "c.csv",
        b"Name,Email,Notes\nAnn,ann@x.example," + b"n" * 300_000 + b"\n",
        ["Ann", "ann@x.example", "n" * 300_000],
        1,
    ),
    "header-less": (
        "c.csv", b"Ann,ann@x.example\nBob,bob@y.example\n", ["Bob", "bob@y.example"], 2
    ),
    "semicolons-crlf": (
        "c.txt", b'Name;Email\r\n"A; b";a@x.example\r\n', ["A; b", "a@x.example"], 1
    ),
}


@pytest.mark.parametrize(
    ("name", "data", "last", "count"), E2E_READ.values(), ids=E2E_READ.keys()
)
def test_enrich_reads_hostile_files(
    tmp_path: Path, name: str, data: bytes, last: list[str], count: int
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    output = tmp_path / "out.csv"
    result = enrich(path, output)
    assert result.exit_code == 0, result.stderr
    header, got = output_rows(output)
    assert len(got) == count
    assert got[-1][: len(last)] == last
    assert {r[header.index("intel_status")] for r in got} == {"enriched"}


def test_enrich_in_a_real_process_never_hangs_or_tracebacks(tmp_path: Path) -> None:
    """The worst files through `python -m intel_cli`, bounded by a timeout: the sniffer bomb
    used to hang for minutes, the torn UTF-16 file to print a traceback."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    cases = {
        "bomb.csv": b'"\n' * 40_000,
        "torn.txt": _utf16("Name,Email\nAnn,ann@x.example\n")[:-1],
        "wide.csv": b"a;" * 30_000 + b"\n",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        done = subprocess.run(
            [sys.executable, "-m", "intel_cli", "enrich", str(path), "--simulate", "--quiet"],
            capture_output=True, text=True, env=env, timeout=60,
        )
        assert done.returncode == 2, (name, done.stderr)
        assert "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and name in done.stderr, done.stderr


def test_a_warning_is_one_line_in_a_pipe(tmp_path: Path) -> None:
    """Rich wrapped warnings at 80 columns when stderr was a pipe (cron), splitting the
    cp1252 warning of a file with a long path over two lines of the log."""
    path = tmp_path / ("a-long-directory-name-" * 3) / "contacts.csv"
    path.parent.mkdir()
    path.write_bytes(b"Name,Email\nRen\xe9,rene@x.example\n")
    env = {**os.environ, "INTEL_SIMULATE_TTFT": "0", "INTEL_SIMULATE_SPEED": "inf"}
    done = subprocess.run(
        [sys.executable, "-m", "intel_cli", "enrich", str(path), "--simulate", "--quiet"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"Warning: {path} is not UTF-8; read it as cp1252"]


def test_the_bad_file_among_several_is_the_one_named(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("Name,Email\nAnn,ann@x.example\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"email": "bob@x.example"}\n{"email": "cy@x.example",}\n')
    with deadline(60):
        result = runner.invoke(
            app, ["enrich", str(good), str(bad), "--simulate", "-o", str(tmp_path / "o.csv")]
        )
    assert_refused_in_one_line(result, bad)
    assert f"{bad}: line 2: not valid JSON" in result.stderr
    assert "good.csv" not in result.stderr
    assert not (tmp_path / "o.csv").exists()
