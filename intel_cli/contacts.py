"""Reading contacts from any spreadsheet export, and writing the enriched output (SPEC 2.2).

This module owns the boundary between users' files and the pipeline:

- `read_contacts(inputs, ...)` -> `ContactSource`: CSV (any delimiter the csv sniffer finds),
  TSV, JSON (an array of objects) and JSONL, from files or stdin, mapped to `Contact`s through
  the header aliases of SPEC 2.2. It streams: a source can be iterated again (the files are
  re-read) and never holds all rows.
- `default_output_path(inputs)`: where the output goes when `-o` is not given.
- `write_output(dest, source, result_for)`: the input rows plus the intel columns, as CSV, JSON
  or JSONL, written atomically and streamed.

Parsing is the stdlib's (csv, csv.Sniffer, json); what is ours is the encoding fallback, the
header mapping and the row rules (enrichable, skipped, duplicate).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from intel_cli.errors import InputError, UsageError
from intel_cli.schema import INTEL_COLUMNS, OUTPUT_COLUMNS

if TYPE_CHECKING:
    from intel_cli.stores.base import ContactResult

STDIN = "-"

# How much of a file is looked at to choose its format, delimiter and column mapping.
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_ROWS = 200
_BINARY_PROBE = 8 * 1024
_CHUNK = 1024 * 1024

# Airtable and Notion exports carry long notes and descriptions; the csv module's 128 KB
# default limit would reject them. The C long limit keeps this portable.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(slots=True)  # no per-instance dict: a run holds one per unique contact
class Contact:
    """One input row. `values` holds the row as read (column -> value), for the output."""

    row_index: int  # 0-based position across all inputs, the output order
    values: dict[str, Any]
    email: str | None = None
    name: str | None = None
    company: str | None = None
    role: str | None = None
    # optional context passed to the model: show, genre, region, notes
    context: dict[str, str] = field(default_factory=dict)
    # normalised email, else normalised name+company; None when not enrichable
    key: str | None = None
    skip_reason: str | None = None  # "missing email" | "invalid email" | "opted out"
    source: str = ""  # the input file name ("-" for stdin)
    # row_index of the first row with the same key (dedupe); None for first occurrences
    duplicate_of: int | None = None
    # "missing email" | "invalid email" when the address is unusable, even if the row is still
    # enrichable by name + company (then skip_reason is None): lets the output say why
    email_issue: str | None = None


# --- header aliases (SPEC 2.2) ---------------------------------------------------------------

EMAIL_ALIASES = ("email", "e mail", "email address", "e mail address", "mail", "contact email")
NAME_ALIASES = ("name", "full name", "contact name")
FIRST_NAME, LAST_NAME = "first name", "last name"
# after first/last name: `contact` may hold addresses (then it is the email column), and
# `curator`/`writer` name the person in playlist and blog lists
LATE_NAME_ALIASES = ("contact", "curator", "writer")
COMPANY_ALIASES = (
    "company",
    "company name",
    "station",
    "outlet",
    "publication",
    "organisation",
    "organization",
    "agency",
    "platform",
    "label",
)
ROLE_ALIASES = ("role", "title", "job title", "position", "contact type")
CONTEXT_ALIASES: dict[str, tuple[str, ...]] = {
    "show": ("show", "programme", "program", "show name", "playlist name", "playlist"),
    "genre": ("genre", "genres", "focus", "speciality", "specialty"),
    "region": ("region", "location", "country", "region / country"),
    "notes": ("notes",),
}
STATUS_HEADERS = ("status", "subscription", "subscription status")
OPTED_OUT_VALUES = frozenset({"unsubscribed", "opted out", "opt out"})

_KNOWN_HEADERS = frozenset(
    (
        *EMAIL_ALIASES,
        *NAME_ALIASES,
        FIRST_NAME,
        LAST_NAME,
        *LATE_NAME_ALIASES,
        *COMPANY_ALIASES,
        *ROLE_ALIASES,
        *(alias for aliases in CONTEXT_ALIASES.values() for alias in aliases),
        *STATUS_HEADERS,
    )
)

_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def normalise_header(name: str) -> str:
    """`" E-Mail_Address "` -> `"e mail address"`: how headers are compared with aliases."""
    text = name.replace("\ufeff", "").strip().strip("\"'").strip()
    text = _CAMEL.sub(" ", text)  # JSON keys: firstName, jobTitle
    text = text.replace("_", " ").replace("-", " ").lower()
    return " ".join(text.split())


# --- e-mail addresses --------------------------------------------------------------------------

# x@y.z: a local part, one @, a domain of non-empty dot-separated labels with a TLD
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def normalise_email(email: str) -> str:
    """The dedupe/cache key of an address: lower-case, all whitespace removed."""
    return "".join(email.split()).lower()


def plausible_email(email: str) -> bool:
    return _EMAIL.fullmatch(normalise_email(email)) is not None


_ANGLE_ADDRESS = re.compile(r"<([^<>@\s]+@[^<>\s]+)>")
_ADDRESS_SEPARATORS = re.compile(r"[;,\s]+")


def clean_email(cell: str) -> str:
    """The address in an email cell as exports write it: `Ann <ann@x.com>`, `mailto:ann@x.com`,
    or several addresses (`a@x.com; b@y.com`, the first plausible one is used). Other cells are
    only stripped, so an implausible address is reported as it was typed."""
    text = cell.strip()
    if "<" in text and (match := _ANGLE_ADDRESS.search(text)):
        text = match.group(1)
    if text[:7].lower() == "mailto:":
        text = text[7:].strip()
    if text.count("@") > 1:
        text = next((p for p in _ADDRESS_SEPARATORS.split(text) if plausible_email(p)), text)
    return text


def _normalise_text(text: str) -> str:
    return " ".join(text.split()).lower()


# --- encodings -----------------------------------------------------------------------------

# Files that are not UTF-8 are nearly always Windows exports (cp1252). Decoding only the bytes
# that are not UTF-8 as cp1252 (latin-1 for the five bytes cp1252 leaves undefined) reads a
# pure cp1252 file exactly as cp1252, and keeps the UTF-8 text of a file that was edited in
# two tools instead of turning all of it into mojibake.
_CP1252_FALLBACK = "intel-cp1252-fallback"


def _byte_as_cp1252(byte: int) -> str:
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)  # latin-1


_CP1252_TABLE = tuple(_byte_as_cp1252(b) for b in range(256))


def _cp1252_fallback(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    bad = exc.object[exc.start : exc.end]
    return "".join(_CP1252_TABLE[b] for b in bad), exc.end


codecs.register_error(_CP1252_FALLBACK, _cp1252_fallback)

_NOT_TEXT = "not a text file (CSV, TSV, JSON or JSONL expected)"
_WORKBOOKS = (".xlsx", ".xlsm", ".xls", ".ods", ".numbers")
_CONTROL = frozenset(chr(c) for c in (*range(9), 11, *range(14, 32), 127))


def _check_utf16(f: BinaryIO, head: bytes, label: str) -> bool:
    """Whether the UTF-16 file holds NUL characters; raises InputError when it is not UTF-16."""
    decoder = codecs.getincrementaldecoder("utf-16")()
    done = 0  # bytes decoded before the current chunk, for the message
    has_nul = False
    chunk = head
    try:
        while chunk:
            has_nul = "\x00" in decoder.decode(chunk) or has_nul
            done += len(chunk)
            chunk = f.read(_CHUNK)
        decoder.decode(b"", final=True)
        return has_nul
    except UnicodeDecodeError as exc:
        where = done + exc.start
        raise InputError(
            f"{label}: starts like UTF-16 text but is not valid UTF-16 ({exc.reason} near "
            f"byte {where}): save it again as CSV UTF-8"
        ) from None


def _detect_encoding(
    path: str, label: str, warn: Callable[[str], None]
) -> tuple[str, str, bool]:
    """(encoding, errors) to open `path` with, and whether it holds NUL characters past the
    binary probe; raises InputError for binary files.

    Reads the whole file once: a byte that is not UTF-8 (or a NUL) can be anywhere, and the
    warning must come before the first row, not halfway through a run.
    """
    with open(path, "rb") as f:
        head = f.read(_SAMPLE_BYTES)
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            # Excel's "Unicode text" export: UTF-16 with a BOM (and NUL bytes, so test first).
            # Checked whole now, as UTF-8 is: a torn or odd-length file would otherwise fail
            # with a UnicodeDecodeError traceback halfway through reading it.
            return "utf-16", "strict", _check_utf16(f, head, label)
        if b"\x00" in head[:_BINARY_PROBE]:
            raise InputError(f"{label}: {_NOT_TEXT}")
        decoder = codecs.getincrementaldecoder("utf-8")()
        utf8, has_nul = True, False
        chunk = head
        while chunk:
            has_nul = has_nul or b"\x00" in chunk
            if utf8:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError:
                    utf8 = False
            chunk = f.read(_CHUNK)
        if utf8:
            try:
                decoder.decode(b"", final=True)
            except UnicodeDecodeError:
                utf8 = False
        encoding, errors = "utf-8-sig", "strict" if utf8 else _CP1252_FALLBACK
    sample = head[:_BINARY_PROBE].decode(encoding, errors=_CP1252_FALLBACK)
    control = sum(1 for ch in sample if ch in _CONTROL)
    if control > 3 and control * 50 > len(sample):
        raise InputError(f"{label}: {_NOT_TEXT}")
    if errors == _CP1252_FALLBACK:
        warn(f"{label} is not UTF-8; read it as cp1252")
    return encoding, errors, has_nul


# --- the column mapping of one input -------------------------------------------------------


def _text(value: Any) -> str:
    """A value from any input format as text, for the model and the key (not for the output)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return ", ".join(t for t in (_text(v).strip() for v in value) if t)
    return json.dumps(value, ensure_ascii=False)


def _mostly(values: Iterable[str], test: Callable[[str], bool]) -> bool:
    """True when more than half of the non-blank values pass `test` (and there is one)."""
    nonblank = [v for v in values if v.strip()]
    return bool(nonblank) and sum(1 for v in nonblank if test(v)) * 2 > len(nonblank)


@dataclass
class _Mapping:
    """Which columns of one input feed which Contact field. Each field lists candidate column
    groups in priority order; a row takes the first group that is not blank on it."""

    email: str | None = None
    name: list[tuple[str, ...]] = field(default_factory=list)
    company: list[tuple[str, ...]] = field(default_factory=list)
    role: list[tuple[str, ...]] = field(default_factory=list)
    context: dict[str, list[tuple[str, ...]]] = field(default_factory=dict)
    status: list[str] = field(default_factory=list)


def _build_mapping(columns: Sequence[str], sample: Sequence[dict[str, Any]]) -> _Mapping:
    by_norm: dict[str, str] = {}
    for column in columns:
        by_norm.setdefault(normalise_header(column), column)

    def column_values(column: str) -> list[str]:
        return [_text(row.get(column)) for row in sample]

    def groups(aliases: Iterable[str]) -> list[tuple[str, ...]]:
        return [(by_norm[a],) for a in aliases if a in by_norm]

    mapping = _Mapping()
    contact_col = by_norm.get("contact")
    contact_is_email = contact_col is not None and _mostly(
        column_values(contact_col), lambda v: "@" in v
    )
    mapping.email = next((by_norm[a] for a in EMAIL_ALIASES if a in by_norm), None)
    if mapping.email is None and contact_is_email:
        mapping.email = contact_col
    if mapping.email is None:
        # no header says so: a column whose values are mostly addresses
        mapping.email = next(
            (c for c in columns if _mostly(column_values(c), plausible_email)), None
        )

    mapping.name = groups(NAME_ALIASES)
    first_last = tuple(by_norm[a] for a in (FIRST_NAME, LAST_NAME) if a in by_norm)
    if first_last:
        mapping.name.append(first_last)
    mapping.name += [
        g for g in groups(LATE_NAME_ALIASES) if not (contact_is_email and g == (contact_col,))
    ]
    mapping.company = groups(COMPANY_ALIASES)
    mapping.role = groups(ROLE_ALIASES)
    mapping.context = {
        key: found for key, aliases in CONTEXT_ALIASES.items() if (found := groups(aliases))
    }
    mapping.status = [by_norm[h] for h in STATUS_HEADERS if h in by_norm]
    # the address column never doubles as a name, company or context
    if mapping.email is not None:
        email_group = (mapping.email,)
        mapping.name = [g for g in mapping.name if g != email_group]
        mapping.company = [g for g in mapping.company if g != email_group]
    return mapping


def _headerless_mapping(columns: Sequence[str], sample: Sequence[dict[str, Any]]) -> _Mapping:
    """Header-less file: the address-looking column is the email, the first other text column
    (not mostly numbers) the name."""
    mapping = _Mapping()
    mapping.email = next(
        (c for c in columns if _mostly((_text(r.get(c)) for r in sample), plausible_email)),
        None,
    )
    for column in columns:
        if column == mapping.email:
            continue
        values = [_text(r.get(column)) for r in sample]
        if any(v.strip() for v in values) and not _mostly(values, _is_number):
            mapping.name = [(column,)]
            break
    return mapping


def _is_number(value: str) -> bool:
    try:
        float(value.replace(",", ""))
    except ValueError:
        return False
    return True


def _looks_like_data(row: Sequence[str]) -> bool:
    """A first row that holds an address and no known header name is data, not a header."""
    return any(plausible_email(cell) for cell in row) and not any(
        normalise_header(cell) in _KNOWN_HEADERS for cell in row
    )


def _unique_columns(header: Sequence[str]) -> list[str]:
    """Header names as read (BOM and surrounding blanks aside), made unique: values are keyed
    by column name, so a second `Notes` becomes `Notes_2` and a blank header `column_N`."""
    columns: list[str] = []
    seen: set[str] = set()
    # the last suffix tried per name: without it, a header of 10,000 identical names takes
    # 50 million probes (a file of repeated delimiters made this a minutes-long hang)
    last_suffix: dict[str, int] = {}
    for position, raw in enumerate(header, start=1):
        name = raw.replace("\ufeff", "").strip() or f"column_{position}"
        candidate, n = name, last_suffix.get(name, 1)
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        last_suffix[name] = n
        seen.add(candidate)
        columns.append(candidate)
    return columns


# --- one input file --------------------------------------------------------------------------

_WHITESPACE = re.compile(r"\s*")


class _JsonArrayReader:
    """Streams the objects of a JSON array with `JSONDecoder.raw_decode`, one item at a time,
    so a large array is never held in memory."""

    def __init__(self, f: TextIO, label: str, warn_once: Callable[[str], None]) -> None:
        self.f = f
        self.label = label
        self.warn_once = warn_once
        self.decoder = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.lines_before = 0  # newlines in the text already dropped from `buf`
        self.eof = False

    def _fill(self, size: int = _SAMPLE_BYTES) -> bool:
        if self.eof:
            return False
        chunk = self.f.read(size)
        if not chunk:
            self.eof = True
            return False
        if self.pos > _SAMPLE_BYTES:
            self.lines_before += self.buf.count("\n", 0, self.pos)
            self.buf = self.buf[self.pos :]
            self.pos = 0
        self.buf += chunk
        return True

    def _peek(self) -> str:
        """The next non-whitespace character ("" at the end of the file)."""
        while True:
            match = _WHITESPACE.match(self.buf, self.pos)
            self.pos = match.end() if match else self.pos
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._fill():
                return ""

    def _fail(self, what: str) -> InputError:
        return InputError(f"{self.label}: {what}")

    def __iter__(self) -> Iterator[dict[str, Any]]:
        char = self._peek()
        if char == "":
            return  # an empty file: no contacts
        if char != "[":
            found = {"{": "an object", '"': "a string"}.get(char, "not an array")
            raise self._fail(f"JSON must be an array of objects ([{{...}}, ...]), not {found}")
        self.pos += 1
        char = self._peek()
        if char == "]":
            self.pos += 1
        item = 0
        while char != "]":
            item += 1
            if char != "{":
                raise self._fail(f"JSON must be an array of objects (item {item} is not)")
            yield self._decode(item)
            char = self._peek()
            if char == ",":
                self.pos += 1
                char = self._peek()
            elif char == "]":
                self.pos += 1
            else:
                raise self._fail(f"not valid JSON after item {item}: expected ',' or ']'")
        if self._peek() != "":
            raise self._fail("not valid JSON: extra data after the array")

    def _decode(self, item: int) -> dict[str, Any]:
        size = _SAMPLE_BYTES
        while True:
            start = self.pos
            try:
                obj, self.pos = self.decoder.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                # the item may only be cut off by the buffer: read more and try again
                if not self._fill(size):
                    line = self.lines_before + exc.lineno
                    what = f"not valid JSON in item {item} (line {line}): {exc.msg}"
                    raise self._fail(what) from None
                size *= 2
                continue
            except (ValueError, RecursionError) as exc:
                line = self.lines_before + self.buf.count("\n", 0, start) + 1
                raise self._fail(f"item {item} (line {line}): {_json_limit(exc)}") from None
            return _clean_json(obj, self.buf[start : self.pos], self.label, self.warn_once)


def _json_limit(exc: ValueError | RecursionError) -> str:
    """What a JSON value past the parser's limits is, for the one-line message."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deeply to read"
    if "integer string conversion" in str(exc):
        return f"a number longer than {sys.get_int_max_str_digits()} digits: quote it"
    return f"not readable JSON ({str(exc).split(':', 1)[0]})"


# a \u0000 or \uD800-\uDFFF escape in JSON text: only then can a decoded string hold a NUL
# or a lone surrogate
_ODD_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _clean_json(
    obj: dict[str, Any], raw: str, label: str, warn_once: Callable[[str], None]
) -> dict[str, Any]:
    """JSON may escape half of a UTF-16 pair (`"\\ud83d"`, a JavaScript string cut mid-emoji)
    or a NUL (`"\\u0000"`). Neither can be stored (PostgreSQL refuses both, UTF-8 cannot
    encode the first) or written as UTF-8: a half pair is read as U+FFFD, a NUL is left out."""
    if not _ODD_ESCAPE.search(raw):
        return obj
    fixed: dict[str, Any] = _clean_strings(obj)
    if fixed != obj:
        warn_once(
            f"{label}: some text holds \\u0000 or half of a \\uD8xx-\\uDFxx pair; "
            "NULs are left out, half pairs read as U+FFFD"
        )
    return fixed


def _clean_strings(value: Any) -> Any:
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value).replace("\x00", "")
    if isinstance(value, dict):
        return {_clean_strings(k): _clean_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_strings(v) for v in value]
    return value


@dataclass
class _Input:
    """One input file: its format, encoding, columns and mapping, found at construction."""

    name: str  # as given ("-" for stdin)
    label: str  # for messages
    path: str  # the file read (the spooled copy for stdin)
    fmt: str = "csv"  # "csv" | "json" | "jsonl"
    encoding: str = "utf-8-sig"
    errors: str = "strict"
    delimiter: str = ","
    has_header: bool = True
    columns: list[str] = field(default_factory=list)
    mapping: _Mapping = field(default_factory=_Mapping)
    stamp: tuple[int, int] = (0, 0)  # (size, mtime_ns): re-reading a changed file is an error
    # NUL characters past the binary probe: dropped from CSV cells, since no store, API or
    # spreadsheet takes them (PostgreSQL text refuses them outright)
    has_nul: bool = False

    def open(self) -> TextIO:
        return open(self.path, encoding=self.encoding, errors=self.errors, newline="")

    # -- rows, as (values) dicts, in file order --------------------------------------------
    def rows(self, warn_once: Callable[[str], None]) -> Iterator[dict[str, Any]]:
        if self.fmt == "json":
            with self.open() as f:
                yield from _JsonArrayReader(f, self.label, warn_once)
        elif self.fmt == "jsonl":
            with self.open() as f:
                yield from self._jsonl(f, warn_once)
        else:
            yield from self._csv(warn_once)

    def _jsonl(self, f: TextIO, warn_once: Callable[[str], None]) -> Iterator[dict[str, Any]]:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                what = f"line {number}: not valid JSON ({exc.msg})"
                raise InputError(f"{self.label}: {what}") from None
            except (ValueError, RecursionError) as exc:
                raise InputError(f"{self.label}: line {number}: {_json_limit(exc)}") from None
            if not isinstance(obj, dict):
                raise InputError(f"{self.label}: line {number}: not a JSON object")
            yield _clean_json(obj, line, self.label, warn_once)

    def _csv_reader(self, f: TextIO) -> Iterator[list[str]]:
        # only the delimiter comes from the sniffer: its quotechar guess is often `'` on files
        # with apostrophes, and skipinitialspace would change values
        reader = csv.reader(f, delimiter=self.delimiter, quotechar='"', doublequote=True)
        try:
            if self.has_nul:
                for row in reader:
                    yield [cell.replace("\x00", "") for cell in row]
            else:
                yield from reader
        except csv.Error as exc:
            raise InputError(f"{self.label}: line {reader.line_num}: {exc}") from None

    def _csv(self, warn_once: Callable[[str], None]) -> Iterator[dict[str, Any]]:
        columns = self.columns
        width = len(columns)
        with self.open() as f:
            header_pending = self.has_header
            for row in self._csv_reader(f):
                # blank lines and rows of empty cells (spreadsheets' trailing rows) are no rows
                if not any(cell.strip() for cell in row):
                    continue
                if header_pending:
                    header_pending = False
                    continue
                if len(row) > width:
                    extra = row[width:]
                    if any(cell.strip() for cell in extra):
                        warn_once(
                            f"{self.label}: some rows have more fields than the header "
                            f"({width}); the extra fields are not in the output"
                        )
                    row = row[:width]
                elif len(row) < width:
                    row = row + [""] * (width - len(row))
                yield dict(zip(columns, row, strict=True))


def _open_error(label: str, exc: OSError) -> InputError:
    reason = {
        FileNotFoundError: "no such file",
        IsADirectoryError: "is a directory, not a file",
        PermissionError: "permission denied",
    }.get(type(exc), exc.strerror or type(exc).__name__)
    return InputError(f"{label}: cannot read it: {reason}")


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


# csv.Sniffer's quote-guessing regexes are quadratic in the sample: 64 KB of `",` or `"\n`
# took 40-90 s. A header and a few rows are all it needs; bounded like this, its worst case is
# about 0.1 s.
_SNIFF_LINES = 20
_SNIFF_CHARS = 4096


def _sniffer_sample(sample: str) -> str:
    """The first lines of `sample`, at most _SNIFF_LINES and _SNIFF_CHARS (whole lines, unless
    the first line alone is longer)."""
    text = sample[:_SNIFF_CHARS]
    lines = text.splitlines(keepends=True)
    if len(text) < len(sample) and len(lines) > 1:
        lines.pop()  # cut off mid-line
    return "".join(lines[:_SNIFF_LINES])


def _sniff_delimiter(sample: str) -> str:
    """The delimiter of a CSV sample: csv.Sniffer's, checked against the rows it produces."""
    candidates = (",", ";", "\t", "|")

    def shape(delimiter: str) -> tuple[float, int]:
        rows = [r for r in csv.reader(sample.splitlines()[:20], delimiter=delimiter) if r]
        if not rows:
            return 0.0, 0
        width = len(rows[0])
        return sum(1 for r in rows if len(r) == width) / len(rows), width

    try:
        sniffed: str | None = csv.Sniffer().sniff(
            _sniffer_sample(sample), delimiters="".join(candidates)
        ).delimiter
    except csv.Error:
        sniffed = None
    if sniffed is not None and shape(sniffed)[1] > 1:
        return sniffed
    # the sniffer gave up (one row, ragged rows): the candidate that splits the header into
    # the most fields, consistently
    best = max(candidates, key=lambda d: (shape(d)[1] > 1, shape(d)))
    return best if shape(best)[1] > 1 else ","


def _analyse(inp: _Input, warn: Callable[[str], None]) -> None:
    """Fill in format, encoding, delimiter, header and mapping: fail fast, before any row."""
    try:
        inp.stamp = _stamp(inp.path)
        if os.path.isdir(inp.path):
            raise IsADirectoryError(inp.path)
        suffix = Path(inp.name).suffix.lower() if inp.name != STDIN else ""
        if suffix in _WORKBOOKS:
            what = "a spreadsheet workbook, not a text file: export it as CSV"
            raise InputError(f"{inp.label}: {what}")
        inp.encoding, inp.errors, inp.has_nul = _detect_encoding(inp.path, inp.label, warn)
        with inp.open() as f:
            head = f.read(_SAMPLE_BYTES)
    except OSError as exc:
        raise _open_error(inp.label, exc) from None

    if suffix == ".json":
        inp.fmt = "json"
    elif suffix in (".jsonl", ".ndjson"):
        inp.fmt = "jsonl"
    elif suffix in (".tsv", ".tab"):
        inp.fmt, inp.delimiter = "csv", "\t"
    elif suffix == ".csv":
        inp.fmt = "csv"
    else:  # stdin, .txt, no extension: by content
        stripped = head.lstrip()
        if stripped.startswith("["):
            inp.fmt = "json"
        elif stripped.startswith("{"):
            first_line = stripped.split("\n", 1)[0]
            if "\n" not in stripped and len(head) >= _SAMPLE_BYTES:
                # the first line goes past the sample (a 300 KB notes field): judge all of it
                with inp.open() as f:
                    first_line = next((line for line in f if line.strip()), "")
            try:
                is_line = isinstance(json.loads(first_line), dict)
            except json.JSONDecodeError:
                is_line = False
            except (ValueError, RecursionError):
                # one line, past the parser's limits: read as JSONL, which names the line
                is_line = True
            # one object per line is JSONL; a pretty-printed object is JSON (and an error)
            inp.fmt = "jsonl" if is_line else "json"
        else:
            inp.fmt = "csv"

    if inp.fmt == "csv":
        _analyse_csv(inp, head, warn)
    else:
        _analyse_json(inp)


def _analyse_csv(inp: _Input, head: str, warn: Callable[[str], None]) -> None:
    if inp.has_nul:
        warn(f"{inp.label} holds NUL characters; they are left out of the values")
    if inp.delimiter != "\t":
        # the sniffer is given whole lines only, so it does not judge a torn last row
        text = head if len(head) < _SAMPLE_BYTES else head[: head.rfind("\n") + 1] or head
        inp.delimiter = _sniff_delimiter(text)
    rows: list[list[str]] = []
    with inp.open() as f:
        for row in inp._csv_reader(f):
            if any(cell.strip() for cell in row):
                rows.append(row)
            elif not rows:
                continue  # blank lines before the header
            if len(rows) > _SAMPLE_ROWS:
                break
    if not rows:
        return  # an empty file: no columns, no contacts
    first = rows[0]
    if _looks_like_data(first):
        # Header-less file: the columns get generated names (column_1, ...), and the output
        # CSV's header uses them, since the input has none to keep.
        inp.has_header = False
        inp.columns = [f"column_{i}" for i in range(1, max(len(r) for r in rows) + 1)]
        sample = [dict(zip(inp.columns, r, strict=False)) for r in rows]
        inp.mapping = _headerless_mapping(inp.columns, sample)
        return
    inp.columns = _unique_columns(first)
    sample = [dict(zip(inp.columns, r, strict=False)) for r in rows[1:]]
    inp.mapping = _build_mapping(inp.columns, sample)


def _analyse_json(inp: _Input) -> None:
    """Reads the whole file once: the columns are the keys of every object (in order of first
    appearance), and a broken line or item should stop the run before it starts."""
    keys: dict[str, None] = {}
    sample: list[dict[str, Any]] = []
    for obj in inp.rows(lambda _message: None):
        keys.update(dict.fromkeys(obj))
        if len(sample) < _SAMPLE_ROWS:
            sample.append(obj)
    inp.columns = list(keys)
    inp.mapping = _build_mapping(inp.columns, sample)


# --- rows -> contacts ------------------------------------------------------------------------


def _pick(values: dict[str, Any], groups: Sequence[tuple[str, ...]]) -> str | None:
    """The first candidate group that is not blank on this row, its parts joined by a space."""
    for group in groups:
        if len(group) == 1:  # the common case, kept cheap: this runs for every field of every row
            value = values.get(group[0])
            text = (value if type(value) is str else _text(value)).strip()
            if text:
                return text
            continue
        parts = [t for t in (_text(values.get(c)).strip() for c in group) if t]
        if parts:
            return " ".join(parts)
    return None


def _make_contact(row_index: int, values: dict[str, Any], inp: _Input) -> Contact:
    mapping = inp.mapping
    email = clean_email(_text(values.get(mapping.email))) if mapping.email else ""
    contact = Contact(
        row_index=row_index,
        values=values,
        email=email or None,
        name=_pick(values, mapping.name),
        company=_pick(values, mapping.company),
        role=_pick(values, mapping.role),
        source=inp.name,
    )
    for key, groups in mapping.context.items():
        text = _pick(values, groups)
        if text:
            contact.context[key] = text

    valid = bool(email) and plausible_email(email)
    if not valid:
        contact.email_issue = "invalid email" if email else "missing email"
    opted_out = any(
        _normalise_text(_text(values.get(c)).replace("-", " ")) in OPTED_OUT_VALUES
        for c in mapping.status
    )
    if opted_out:
        contact.skip_reason = "opted out"
    elif valid:
        contact.key = normalise_email(email)
    elif contact.name and contact.company:
        contact.key = f"{_normalise_text(contact.name)}|{_normalise_text(contact.company)}"
    else:
        contact.skip_reason = contact.email_issue
    return contact


def _digest(key: str) -> int:
    # 8 bytes: a collision among a million keys has odds of about 1 in 40 million
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") or 1


class _FirstRows:
    """Key digest -> row_index of its first row, for dedupe.

    Two flat arrays with open addressing (linear probing, at most half full): 16 bytes a slot,
    about 40 bytes per distinct contact, where a dict of int -> int takes about 135. With a
    million distinct addresses that is the difference between ~40 MB and ~115 MB.
    """

    def __init__(self, capacity: int = 1024) -> None:
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        self._mask = capacity - 1
        self._digests = array("Q", [0]) * capacity  # 0 marks an empty slot; digests are never 0
        self._rows = array("Q", [0]) * capacity
        self._count = 0

    def setdefault(self, digest: int, row_index: int) -> int:
        """The first row_index stored for `digest`, storing `row_index` when there is none."""
        digests, mask = self._digests, self._mask
        slot = digest & mask
        while True:
            found = digests[slot]
            if found == digest:
                return self._rows[slot]
            if found == 0:
                break
            slot = (slot + 1) & mask
        digests[slot] = digest
        self._rows[slot] = row_index
        self._count += 1
        if self._count * 2 > mask:
            self._grow()
        return row_index

    def _grow(self) -> None:
        old = zip(self._digests, self._rows, strict=True)
        self._allocate(2 * (self._mask + 1))
        for digest, row_index in old:
            if digest:
                self.setdefault(digest, row_index)


def _ignore(_message: str) -> None:
    return None


class ContactSource:
    """The contacts of one or more inputs, in order. Iterating re-reads the files (stdin is
    spooled to a temp file first), so it can be done more than once and never holds all rows.
    Close it (or use it as a context manager) to remove the stdin spool."""

    def __init__(
        self,
        inputs: Sequence[str],
        *,
        stdin: BinaryIO | None = None,
        warn: Callable[[str], None] = _ignore,
        dedupe: bool = True,
    ) -> None:
        if not inputs:
            raise UsageError("no input file given: name a file, or - for stdin")
        if list(inputs).count(STDIN) > 1:
            raise UsageError("stdin (-) can be read only once: give - a single time")
        self.inputs: list[str] = list(inputs)
        self.dedupe = dedupe
        self._warn = warn
        self._warned: set[str] = set()
        self._spool: str | None = None
        self._inputs: list[_Input] = []
        try:
            for name in self.inputs:
                if name == STDIN:
                    path = self._spool_stdin(stdin if stdin is not None else sys.stdin.buffer)
                    inp = _Input(name=name, label="stdin", path=path)
                else:
                    inp = _Input(name=name, label=name, path=name)
                _analyse(inp, warn)
                self._inputs.append(inp)
        except BaseException:
            self.close()
            raise
        union: dict[str, None] = {}
        for inp in self._inputs:
            union.update(dict.fromkeys(inp.columns))
        self.columns: list[str] = list(union)

    def _spool_stdin(self, stream: BinaryIO) -> str:
        fd, path = tempfile.mkstemp(prefix="intel-stdin-", suffix=".spool")
        self._spool = path
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(stream, f, _CHUNK)
        return path

    def _warn_once(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            self._warn(message)

    def __iter__(self) -> Iterator[Contact]:
        first_rows = _FirstRows()
        row_index = 0
        for inp in self._inputs:
            try:
                changed = _stamp(inp.path) != inp.stamp
            except OSError as exc:
                raise _open_error(inp.label, exc) from None
            if changed:
                raise InputError(f"{inp.label}: changed while being read: rerun on a stable copy")
            for values in inp.rows(self._warn_once):
                contact = _make_contact(row_index, values, inp)
                if self.dedupe and contact.key is not None:
                    first = first_rows.setdefault(_digest(contact.key), row_index)
                    if first != row_index:
                        contact.duplicate_of = first
                yield contact
                row_index += 1

    def close(self) -> None:
        if self._spool is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._spool)
            self._spool = None

    def __enter__(self) -> ContactSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_contacts(
    inputs: Sequence[str],
    *,
    stdin: BinaryIO | None = None,
    warn: Callable[[str], None] = _ignore,
    dedupe: bool = True,
) -> ContactSource:
    """Open `inputs` (paths, or "-" for stdin) as one stream of contacts; see ContactSource.

    Each file's format, encoding and header are read now, so a bad file fails here, before any
    row is used. Raises InputError (one line naming the file) for files that cannot be read.
    """
    return ContactSource(inputs, stdin=stdin, warn=warn, dedupe=dedupe)


# --- output ----------------------------------------------------------------------------------


def default_output_path(inputs: Sequence[str]) -> str:
    """`<stem>.enriched.csv` next to the first input; "-" (stdout) when that is stdin."""
    first = inputs[0] if inputs else STDIN
    if first == STDIN:
        return STDIN
    path = Path(first)
    return str(path.with_name(f"{path.stem}.enriched.csv"))


def _cell(value: Any) -> str:
    """An input value for the output CSV: strings exactly as read, other JSON values encoded."""
    if value is None:
        return ""  # a JSON null is an empty cell, not the text "null"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _plain_decimal(amount: Decimal) -> str:
    """0.000123, never 1.23E-4; no trailing zeros."""
    text = format(amount.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _int_cell(value: int | None) -> str:
    return "" if value is None else str(int(value))


def _intel_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def _csv_result_cells(result: ContactResult) -> list[str]:
    intel = result.intel
    cells = [result.status]
    cells += [_intel_cell(intel.get(k)) if intel else "" for k in INTEL_COLUMNS]
    cells += [
        result.error or "",
        result.model or "",
        _int_cell(result.usage.input),
        _int_cell(result.usage.output),
        _plain_decimal(result.cost),
        _int_cell(result.latency_ms),
        _int_cell(result.attempts),
        result.batch_id or "",
    ]
    return cells


def _json_item(contact: Contact, result: ContactResult) -> dict[str, Any]:
    intel = {k: result.intel.get(k) for k in INTEL_COLUMNS} if result.intel is not None else None
    item = dict(contact.values)
    item["intel"] = intel
    item["enrichment"] = {
        "status": result.status,
        "error": result.error,
        "model": result.model,
        "inputTokens": result.usage.input,
        "outputTokens": result.usage.output,
        "cacheReadTokens": result.usage.cache_read,
        "cacheWriteTokens": result.usage.cache_write,
        # a JSON number; float() of a Decimal of a price is exact to its last digit here,
        # and nothing is summed from it
        "costUsd": float(result.cost),
        "latencyMs": result.latency_ms,
        "attempts": result.attempts,
        "batchId": result.batch_id,
    }
    return item


def _output_format(dest: str) -> str:
    suffix = Path(dest).suffix.lower() if dest != STDIN else ""
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    return "csv"


def _write(
    out: TextIO,
    fmt: str,
    source: ContactSource,
    result_for: Callable[[Contact], ContactResult],
) -> None:
    if fmt == "csv":
        # re-enriching an enriched file: its old intel_* columns give way to the new ones
        input_columns = [c for c in source.columns if c not in OUTPUT_COLUMNS]
        writer = csv.writer(out, lineterminator="\n")
        # csv.writer quotes a field holding \r only when \r is in its line terminator: a cell
        # with a bare CR (old Mac line breaks in a note) would end the row early when read
        # back. Such rows are written fully quoted instead.
        quoted = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
        header = [*input_columns, *OUTPUT_COLUMNS]
        (quoted if any("\r" in c for c in header) else writer).writerow(header)
        for contact in source:
            values = contact.values
            cells = [_cell(values.get(c)) for c in input_columns]
            cells += _csv_result_cells(result_for(contact))
            (quoted if any("\r" in c for c in cells) else writer).writerow(cells)
    elif fmt == "jsonl":
        for contact in source:
            item = _json_item(contact, result_for(contact))
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
    else:
        out.write("[")
        separator = "\n  "
        for contact in source:
            item = _json_item(contact, result_for(contact))
            # json.dumps escapes newlines inside strings, so every raw newline is layout
            text = json.dumps(item, ensure_ascii=False, indent=2)
            out.write(separator + text.replace("\n", "\n  "))
            separator = ",\n  "
        out.write("\n]\n")


def write_output(
    dest: str,
    source: ContactSource,
    result_for: Callable[[Contact], ContactResult],
    *,
    stdout: TextIO | None = None,
) -> None:
    """Write every row of `source` with its result to `dest` (.csv, .json, .jsonl; "-" is CSV
    on `stdout`), streaming, in input order.

    A file is written atomically: a temp file in the destination's directory, fsynced, then
    renamed over `dest`; on any error the temp file is removed and `dest` is left as it was.
    """
    fmt = _output_format(dest)
    if dest == STDIN:
        _write(stdout if stdout is not None else sys.stdout, "csv", source, result_for)
        return
    directory = os.path.dirname(os.path.abspath(dest))
    try:
        prefix = f".{os.path.basename(dest)}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=directory)
    except OSError as exc:
        raise UsageError(f"{dest}: cannot write the output: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            _write(out, fmt, source, result_for)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes 0600 files; an output file should look like any other the user saved
        try:
            mode = os.stat(dest).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    # makes the rename itself durable; not every platform can open a directory
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
