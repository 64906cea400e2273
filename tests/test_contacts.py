"""Reading contacts (every format, encoding and header the users bring) and writing the output."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from intel_cli.contacts import (
    Contact,
    ContactSource,
    clean_email,
    default_output_path,
    normalise_header,
    plausible_email,
    read_contacts,
    write_output,
)
from intel_cli.errors import InputError, UsageError
from intel_cli.schema import OUTPUT_COLUMNS
from intel_cli.stores.base import ContactResult
from intel_cli.usage import Usage
from tests.conftest import REAL_WORLD

# --- helpers ---------------------------------------------------------------------------------


def write(tmp_path: Path, name: str, text: str | bytes, encoding: str = "utf-8") -> str:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_bytes(text.encode(encoding))
    else:
        path.write_bytes(text)
    return str(path)


def read_all(inputs: list[str], **kwargs: Any) -> tuple[list[Contact], list[str], list[str]]:
    """(contacts, columns, warnings) of `inputs`."""
    warnings: list[str] = []
    with read_contacts(inputs, warn=warnings.append, **kwargs) as source:
        return list(source), source.columns, warnings


def one(tmp_path: Path, text: str, name: str = "c.csv") -> Contact:
    contacts, _, _ = read_all([write(tmp_path, name, text)])
    assert len(contacts) == 1
    return contacts[0]


def result_for_all(**kwargs: Any) -> Callable[[Contact], ContactResult]:
    def result_for(contact: Contact) -> ContactResult:
        if contact.skip_reason:
            return ContactResult(
                "b_test", contact.row_index, None, "skipped", error=contact.skip_reason
            )
        return ContactResult("b_test", contact.row_index, contact.key, **kwargs)

    return result_for


INTEL = {
    "platform": "Northern Skies FM",
    "role": "Music Producer",
    "format": "Indie, evenings",
    "coverage": "Regional, North West England",
    "genres": ["Indie", "Alternative"],
    "contactMethod": "Email",
    "bestTiming": "Tuesday mornings",
    "submissionGuidelines": "Private streaming links",
    "pitchTips": ["Keep it short", "Mention local shows"],
    "confidence": "High",
    "reasoning": 'Based on the show name, station and the "notes", one line,\nanother',
}

ENRICHED = {
    "status": "enriched",
    "model": "claude-sonnet-4-5",
    "usage": Usage(input=1200, output=350, cache_read=100, cache_write=20),
    "cost": Decimal("0.0000123"),
    "latency_ms": 1834,
    "attempts": 2,
    "intel": INTEL,
}


# --- header aliases ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "email",
        "Email",
        "E-mail",
        "EMAIL ADDRESS",
        "email_address",
        "Mail",
        "Contact Email",
        " e-mail ",
        '"Email"',
        "\ufeffEmail",
        "emailAddress",
        "'Email'",
    ],
)
def test_email_aliases(tmp_path: Path, header: str) -> None:
    contact = one(tmp_path, f"{header},Name\nA@Example.com,A\n")
    assert contact.email == "A@Example.com"
    assert contact.key == "a@example.com"


@pytest.mark.parametrize(
    "flag",
    [
        "Valid Email",
        "Email Valid",
        "Email Status",
        "Email Verified",
        "Email Opt In",
        "email_valid",
        "Email Opt-In",
    ],
)
def test_email_flag_columns_are_never_the_address(tmp_path: Path, flag: str) -> None:
    # the flag column comes first, so a substring match would take it
    contact = one(tmp_path, f"{flag},Name,Email,Station\nYes,Ann,ann@radio.example.com,R1\n")
    assert contact.email == "ann@radio.example.com"
    alone = one(tmp_path, f"{flag},Name\nYes,Ann\n", name="flag-only.csv")
    assert alone.email is None and alone.skip_reason == "missing email"


@pytest.mark.parametrize(
    ("header", "row", "name"),
    [
        ("Name", "Ann Lee", "Ann Lee"),
        ("Full Name", "Ann Lee", "Ann Lee"),
        ("contact_name", "Ann Lee", "Ann Lee"),
        ("Contact", "Ann Lee", "Ann Lee"),
        ("First Name,Last Name", "Ann,Lee", "Ann Lee"),
        ("First Name,Last Name", "Ann,", "Ann"),
        ("First Name,Last Name", " ,Lee", "Lee"),
        ("Curator", "Ann Lee", "Ann Lee"),
        ("writer", "Ann Lee", "Ann Lee"),
    ],
)
def test_name_aliases(tmp_path: Path, header: str, row: str, name: str) -> None:
    contact = one(tmp_path, f"Email,{header}\nann@x.example.com,{row}\n")
    assert contact.name == name


def test_contact_column_holding_addresses_is_the_email(tmp_path: Path) -> None:
    text = "curator,contact,platform\nAnn,ann@x.example.com,Spotify\nBo,bo@y.example.com,Deezer\n"
    contacts, _, _ = read_all([write(tmp_path, "p.csv", text)])
    assert [c.email for c in contacts] == ["ann@x.example.com", "bo@y.example.com"]
    assert [c.name for c in contacts] == ["Ann", "Bo"]  # from curator, not from contact


def test_contact_column_holding_a_person_is_the_name(tmp_path: Path) -> None:
    text = "agency,contact,email\nListen Up,Rowan Lomax,\nPIAS,Harper,h@pias.example.com\n"
    contacts, _, _ = read_all([write(tmp_path, "a.csv", text)])
    assert [c.name for c in contacts] == ["Rowan Lomax", "Harper"]
    assert [c.email for c in contacts] == [None, "h@pias.example.com"]
    assert contacts[0].key == "rowan lomax|listen up"


def test_a_column_of_addresses_serves_when_no_header_names_one(tmp_path: Path) -> None:
    contact = one(tmp_path, "Who,Inbox,Station\nAnn,ann@x.example.com,R1\n")
    assert contact.email == "ann@x.example.com" and contact.company == "R1"


def test_company_priority_and_fallback(tmp_path: Path) -> None:
    text = "Email,Label,Station\na@x.example.com,Ninja Tune,KEXP\nb@x.example.com,Warp,\n"
    contacts, _, _ = read_all([write(tmp_path, "c.csv", text)])
    assert [c.company for c in contacts] == ["KEXP", "Warp"]  # station first; label when blank


@pytest.mark.parametrize("header", ["Role", "Title", "Job Title", "position", "Contact Type"])
def test_role_aliases(tmp_path: Path, header: str) -> None:
    assert one(tmp_path, f"Email,{header}\na@x.example.com,Producer\n").role == "Producer"


def test_context_aliases(tmp_path: Path) -> None:
    text = (
        "Email,Programme,Speciality,Region / Country,Notes,Other\n"
        "a@x.example.com,Late Show,Jazz,UK,Likes vinyl,x\n"
    )
    contact = one(tmp_path, text)
    assert contact.context == {
        "show": "Late Show",
        "genre": "Jazz",
        "region": "UK",
        "notes": "Likes vinyl",
    }


def test_normalise_header() -> None:
    assert normalise_header(' "\ufeffE-Mail_Address" ') == "e mail address"
    assert normalise_header("jobTitle") == "job title"
    assert normalise_header("Region  /  Country") == "region / country"


@pytest.mark.parametrize(
    ("email", "ok"),
    [
        ("a@b.co", True),
        (" A@B.CO ", True),
        ("emma@", False),
        ("reviews@", False),
        ("c937f01b7@goldflake", False),
        ("@b.com", False),
        ("a@b.", False),
        ("a@@b.com", False),
        ("a@.com", False),
        ("", False),
    ],
)
def test_plausible_email(email: str, ok: bool) -> None:
    assert plausible_email(email) is ok


@pytest.mark.parametrize(
    ("cell", "email"),
    [
        ("  a@x.example.com ", "a@x.example.com"),
        ("Ann Lee <Ann@X.example.com>", "Ann@X.example.com"),
        ("mailto:a@x.example.com", "a@x.example.com"),
        ("a@x.example.com; b@y.example.com", "a@x.example.com"),
        ("emma@, b@y.example.com", "b@y.example.com"),
        ("emma@", "emma@"),
        ("", ""),
    ],
)
def test_clean_email(cell: str, email: str) -> None:
    assert clean_email(cell) == email


def test_cleaned_addresses_share_a_key(tmp_path: Path) -> None:
    text = 'Email\nann@x.example.com\n"Ann <ANN@x.example.com>"\nmailto:ann@x.example.com\n'
    contacts, _, _ = read_all([write(tmp_path, "c.csv", text)])
    assert [c.duplicate_of for c in contacts] == [None, 0, 0]
    assert contacts[1].values["Email"] == "Ann <ANN@x.example.com>"


# --- row rules: skip reasons, keys, dedupe ----------------------------------------------------


def test_skip_reasons_and_keys(tmp_path: Path) -> None:
    text = (
        "Name,Email,Station,Subscription Status\n"
        "Ann,ann@x.example.com,R1,Unsubscribed\n"  # 0 opted out, even with a good address
        "Bo,,,active\n"  # 1 missing email, no company
        "Cy,cy@,,\n"  # 2 invalid email, no company
        "Di,,KEXP,opted-out\n"  # 3 opted out
        "Ed,ed@,KEXP,\n"  # 4 invalid address, but name + company: enrichable
        "Fi,  FI@X.Example.COM ,,OPT-OUT\n"  # 5 opted out
        "Gus,gus@x.example.com,,Opted Out\n"  # 6
        "Hal, Hal @ x.example.com,,\n"  # 7 spaces removed from the key
    )
    contacts, _, _ = read_all([write(tmp_path, "c.csv", text)])
    assert [c.skip_reason for c in contacts] == [
        "opted out",
        "missing email",
        "invalid email",
        "opted out",
        None,
        "opted out",
        "opted out",
        None,
    ]
    assert [c.key for c in contacts] == [
        None,
        None,
        None,
        None,
        "ed|kexp",
        None,
        None,
        "hal@x.example.com",
    ]
    assert contacts[4].email_issue == "invalid email"
    assert contacts[4].email == "ed@"


def test_status_column_must_be_named_status_or_subscription(tmp_path: Path) -> None:
    contact = one(tmp_path, "Email,Reply Status\na@x.example.com,Unsubscribed\n")
    assert contact.skip_reason is None


def test_dedupe_marks_later_rows_and_keeps_order(tmp_path: Path) -> None:
    text = (
        "Email,Name,Station\n"
        "a@x.example.com,A,R\n"
        "b@x.example.com,B,R\n"
        " A@X.Example.com ,A2,R\n"
        ",Cy,KEXP\n"
        ",  cy , kexp \n"
        "b@x.example.com,B3,R\n"
        ",Nobody,\n"
        ",Nobody,\n"
    )
    path = write(tmp_path, "c.csv", text)
    contacts, _, _ = read_all([path])
    assert [c.row_index for c in contacts] == list(range(8))
    assert [c.duplicate_of for c in contacts] == [None, None, 0, None, 3, 1, None, None]
    assert contacts[2].values["Email"] == " A@X.Example.com "  # the original is kept
    undeduped, _, _ = read_all([path], dedupe=False)
    assert all(c.duplicate_of is None for c in undeduped)


def test_dedupe_index_matches_a_dict_through_growth() -> None:
    import random

    from intel_cli.contacts import _FirstRows

    rng = random.Random(7)
    # few distinct low bits, so slots collide and probing wraps; far more keys than slots
    digests = [rng.randrange(1, 2**64) & ~0xFF | 0x10 for _ in range(3000)]
    table, expected = _FirstRows(capacity=8), {}
    for row_index in range(20_000):
        digest = rng.choice(digests)
        assert table.setdefault(digest, row_index) == expected.setdefault(digest, row_index)


def test_dedupe_over_many_rows(tmp_path: Path) -> None:
    rows = [f"p{(i * 7919) % 2500}@x.example.com" for i in range(6000)]
    path = write(tmp_path, "c.csv", "Email\n" + "\n".join(rows) + "\n")
    contacts, _, _ = read_all([path])
    first: dict[str, int] = {}
    expected = [first.setdefault(e, i) for i, e in enumerate(rows)]
    assert [c.duplicate_of for c in contacts] == [
        None if e == i else e for i, e in enumerate(expected)
    ]


def test_row_index_and_dedupe_span_inputs(tmp_path: Path) -> None:
    first = write(tmp_path, "a.csv", "Email,Name\na@x.example.com,A\nb@x.example.com,B\n")
    second = write(
        tmp_path, "b.tsv", "Name\tEmail\tStation\nC\tc@x.example.com\tR\nA\tA@x.example.com\tR\n"
    )
    contacts, columns, _ = read_all([first, second])
    assert columns == ["Email", "Name", "Station"]
    assert [c.row_index for c in contacts] == [0, 1, 2, 3]
    assert [c.source for c in contacts] == [first, first, second, second]
    assert contacts[3].duplicate_of == 0


def test_source_can_be_iterated_again(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "Email\na@x.example.com\na@x.example.com\nb@x.example.com\n")
    with read_contacts([path]) as source:
        first = [(c.row_index, c.key, c.duplicate_of) for c in source]
        second = [(c.row_index, c.key, c.duplicate_of) for c in source]
    assert (
        first
        == second
        == [(0, "a@x.example.com", None), (1, "a@x.example.com", 0), (2, "b@x.example.com", None)]
    )


def test_a_file_changed_between_passes_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "c.csv", "Email\na@x.example.com\n")
    with read_contacts([path]) as source:
        assert len(list(source)) == 1
        Path(path).write_text("Email\na@x.example.com\nb@x.example.com\n")
        with pytest.raises(InputError, match="changed"):
            list(source)


def test_reading_streams_rows(tmp_path: Path) -> None:
    # ~6 MB of rows with one address: if rows were kept, the peak would be tens of MB
    path = tmp_path / "big.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["Name", "Email", "Station", "Notes"])
        for i in range(40_000):
            w.writerow([f"Person {i}", "same@x.example.com", "Radio", "n" * 120])
    with read_contacts([str(path)]) as source:
        tracemalloc.start()
        try:
            count = sum(1 for _ in source)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 40_000
    assert peak < 2_000_000, peak


# --- the real-world exports -------------------------------------------------------------------

REAL_FILES = sorted(p.name for p in REAL_WORLD.glob("*.csv"))


def test_real_world_fixtures_are_there() -> None:
    assert len(REAL_FILES) == 8


@pytest.mark.parametrize("name", REAL_FILES)
def test_every_real_world_file_reads(name: str) -> None:
    contacts, columns, warnings = read_all([str(REAL_WORLD / name)])
    assert contacts and warnings == []
    assert [c.row_index for c in contacts] == list(range(len(contacts)))
    assert len(set(columns)) == len(columns)
    assert not any("\ufeff" in c or c != c.strip() for c in columns)
    for c in contacts:
        assert set(c.values) <= set(columns)
        assert (c.key is None) == (c.skip_reason is not None)
        assert c.skip_reason in (None, "missing email", "invalid email", "opted out")


def test_airtable_export() -> None:
    contacts, columns, _ = read_all([str(REAL_WORLD / "airtable-contacts-everything.csv")])
    assert len(contacts) == 517
    assert len(columns) == 24 and columns[0] == "Email"  # the BOM does not leak into it
    assert sum(1 for c in contacts if c.skip_reason == "opted out") == 231
    assert sum(1 for c in contacts if c.skip_reason == "missing email") == 1
    multi = [c for c in contacts if any("\n" in str(v) for v in c.values.values())]
    assert len(multi) == 14  # multi-line fields kept whole, not split into rows
    first = contacts[0]
    assert first.email == "c21ba254c@xrpradio.co.uk"
    assert first.company == "Radio Station" and first.name == "Alex" and first.role == "Radio"
    # Email, Station, First Name + Last Name, Show, Region / Country, Genres...
    last = contacts[-1]
    assert last.context["genre"] == "Electronic,Alternative,Hip-Hop,R&B / Soul,Jazz / Funk"
    mixed = [c for c in contacts if c.email and c.email != c.email.lower() and c.key]
    assert mixed and all(c.key == c.email.strip().lower() for c in mixed)


def test_demo_radio() -> None:
    contacts, _, _ = read_all([str(REAL_WORLD / "demo-radio-contacts.csv")])
    assert len(contacts) == 7  # the last row has no final newline
    by_name = {c.name: c for c in contacts}
    emma = by_name["Alex Norwood"]
    assert emma.email == "emma@" and emma.email_issue == "invalid email"
    # SPEC 2.2: a name plus a company is enough to enrich, so the row is not skipped
    assert emma.skip_reason is None and emma.key == "alex norwood|commercial radio group"
    blank = by_name["Noel Ingram"]
    assert blank.email is None and blank.email_issue == "missing email"
    assert blank.key == "noel ingram|bbc radio 6 music"
    assert by_name["Regional Radio"].values["location"] == "Cardiff"
    assert by_name["Noel Ashdown"].context == {"region": "Birmingham"}


def test_blank_address_without_company_is_missing_email(tmp_path: Path) -> None:
    # demo-radio's columns, with the station blanked
    path = write(
        tmp_path, "d.csv", "name,email,station,role,location\nNoel,,,Producer,\nAl,emma@,,,\n"
    )
    contacts, _, _ = read_all([path])
    assert [c.skip_reason for c in contacts] == ["missing email", "invalid email"]


def test_no_header_file() -> None:
    contacts, columns, _ = read_all([str(REAL_WORLD / "no-header-contacts.csv")])
    assert columns == ["column_1", "column_2"]
    assert len(contacts) == 10
    assert all(c.email and plausible_email(c.email) for c in contacts)
    assert contacts[0].name == "Avery Kettering"
    assert contacts[0].email == "c28567cce@bbc.co.uk"
    assert contacts[-1].email == "c255006fb@k-pop-blog.com"


def test_valid_email_column() -> None:
    contacts, _, _ = read_all([str(REAL_WORLD / "valid-email-column.csv")])
    assert [c.email for c in contacts] == ["c2a671d97@bbcradio1.com", "ce6fb0fb7@spotify.com"]
    assert contacts[1].name == "Jamie Fairley" and contacts[1].company == "Spotify"


def test_playlist_curators() -> None:
    contacts, _, _ = read_all([str(REAL_WORLD / "playlist-curators.csv")])
    assert [c.name for c in contacts] == [
        "Frankie Norwood",
        "Chris",
        None,
        "Noel Holloway",
        "BBC Team",
    ]
    assert contacts[1].email == "c51c521e9@playlists"  # `contact` holds the address
    assert contacts[1].email_issue == "invalid email"
    assert contacts[2].skip_reason == "missing email"


def test_au_fully_quoted() -> None:
    contacts, _, _ = read_all([str(REAL_WORLD / "au-radio-fully-quoted.csv")])
    assert len(contacts) == 4
    assert contacts[0].values["Genres"] == "Alternative; Rock; Indie; Electronic"
    assert contacts[0].name == "Triple R" and contacts[0].company == "Au"


def test_music_blogs_and_pr_agencies() -> None:
    blogs, _, _ = read_all([str(REAL_WORLD / "music-blogs.csv")])
    assert [c.company for c in blogs][:2] == ["The Line of Best Fit", "DIY Magazine"]
    assert blogs[1].name == "Quinn Thorne" and blogs[1].context["genre"] == "Indie/Alternative"
    assert blogs[2].skip_reason == "missing email"  # Clash Magazine: no writer, no address
    agencies, _, _ = read_all([str(REAL_WORLD / "pr-agencies.csv")])
    assert agencies[0].name == "Rowan Lomax" and agencies[0].company == "Listen Up PR"


# --- formats and encodings --------------------------------------------------------------------


def test_utf8_bom(tmp_path: Path) -> None:
    path = write(tmp_path, "b.csv", "\ufeffEmail,Name\na@x.example.com,Zoë\n")
    contacts, columns, warnings = read_all([path])
    assert columns == ["Email", "Name"] and warnings == []
    assert contacts[0].email == "a@x.example.com" and contacts[0].name == "Zoë"


def test_semicolon_delimiter(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", 'Name;Email;Notes\nAnn;a@x.example.com;"one, two"\n')
    contacts, columns, _ = read_all([path])
    assert columns == ["Name", "Email", "Notes"]
    assert contacts[0].context["notes"] == "one, two"


@pytest.mark.parametrize("name", ["t.tsv", "t.csv", "t.txt"])
def test_tab_delimiter(tmp_path: Path, name: str) -> None:
    path = write(tmp_path, name, "Name\tEmail\tStation\nAnn, Jr\ta@x.example.com\tR1\n")
    contacts, columns, _ = read_all([path])
    assert columns == ["Name", "Email", "Station"]
    assert contacts[0].name == "Ann, Jr" and contacts[0].company == "R1"


def test_cp1252_falls_back_with_one_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "w.csv",
        "Name,Email,Notes\nBeyoncé,b@x.example.com,“quoted” – €5\n",
        encoding="cp1252",
    )
    warnings: list[str] = []
    with read_contacts([path], warn=warnings.append) as source:
        assert len(warnings) == 1  # before the first row, not halfway through a run
        contacts = list(source)
        list(source)
    assert contacts[0].name == "Beyoncé"
    assert contacts[0].values["Notes"] == "“quoted” – €5"
    assert warnings == [f"{path} is not UTF-8; read it as cp1252"]


def test_non_utf8_byte_far_into_the_file(tmp_path: Path) -> None:
    rows = "".join(f"P{i},p{i}@x.example.com\n" for i in range(20_000))
    path = write(
        tmp_path, "late.csv", ("Name,Email\n" + rows + "Ren\xe9,r@x.example.com\n").encode("cp1252")
    )
    contacts, _, warnings = read_all([path])
    assert contacts[-1].name == "René" and len(warnings) == 1


def test_utf8_text_survives_a_stray_cp1252_byte(tmp_path: Path) -> None:
    # a UTF-8 export edited in a Windows tool: only the foreign byte is read as cp1252
    data = "Name,Email\nZoë,z@x.example.com\n".encode() + b"Ren\xe9,r@x.example.com\n"
    contacts, _, warnings = read_all([write(tmp_path, "mixed.csv", data)])
    assert [c.name for c in contacts] == ["Zoë", "René"] and len(warnings) == 1


def test_bytes_cp1252_does_not_define_fall_back_to_latin1(tmp_path: Path) -> None:
    path = write(tmp_path, "l.csv", b"Name,Email\nA\x81b,a@x.example.com\n")
    contacts, _, warnings = read_all([path])
    assert contacts[0].name == "A\x81b" and len(warnings) == 1


def test_utf16_with_bom(tmp_path: Path) -> None:
    # Excel's "Unicode text" export
    path = write(tmp_path, "u.txt", "Name\tEmail\nZoë\tz@x.example.com\n", encoding="utf-16")
    contacts, _, _ = read_all([path])
    assert contacts[0].name == "Zoë" and contacts[0].email == "z@x.example.com"


def test_multiline_quoted_fields_crlf_and_no_final_newline(tmp_path: Path) -> None:
    text = (
        'Email,Notes\r\n"a@x.example.com","line one\r\nline two, ""quoted"""\r\n'
        "b@x.example.com,last"
    )
    contacts, _, _ = read_all([write(tmp_path, "m.csv", text)])
    assert [c.email for c in contacts] == ["a@x.example.com", "b@x.example.com"]
    assert contacts[0].values["Notes"] == 'line one\r\nline two, "quoted"'
    assert contacts[1].values["Notes"] == "last"


@pytest.mark.parametrize("size", [200_000, 300_000])
def test_fields_over_128_kb(tmp_path: Path, size: int) -> None:
    big = "x" * size
    contacts, _, _ = read_all(
        [write(tmp_path, "big.csv", f'Email,Notes\na@x.example.com,"{big}"\n')]
    )
    assert contacts[0].values["Notes"] == big


@pytest.mark.parametrize("text", ["", "\n\n", "Email,Name,Station\n", "Email,Name\n,\n , \n"])
def test_empty_and_header_only_files_have_no_contacts(tmp_path: Path, text: str) -> None:
    contacts, _, _ = read_all([write(tmp_path, "e.csv", text)])
    assert contacts == []


def test_ragged_rows(tmp_path: Path) -> None:
    text = (
        "Email,Name,Station\na@x.example.com,Ann\n"
        "b@x.example.com,Bo,R1,,\nc@x.example.com,Cy,R2,extra\n"
    )
    contacts, _, warnings = read_all([write(tmp_path, "r.csv", text)])
    assert contacts[0].values == {"Email": "a@x.example.com", "Name": "Ann", "Station": ""}
    assert contacts[1].values["Station"] == "R1"
    assert len(warnings) == 1 and "more fields than the header" in warnings[0]


def test_duplicate_and_blank_header_names_stay_distinct(tmp_path: Path) -> None:
    _, columns, _ = read_all(
        [write(tmp_path, "d.csv", "Email,Notes,Notes,\na@x.example.com,1,2,3\n")]
    )
    assert columns == ["Email", "Notes", "Notes_2", "column_4"]


def test_binary_file_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "data.bin", bytes(range(256)) * 8)
    with pytest.raises(InputError) as err:
        read_contacts([path])
    assert str(err.value) == f"{path}: not a text file (CSV, TSV, JSON or JSONL expected)"


def test_control_character_junk_is_an_input_error(tmp_path: Path) -> None:
    path = write(tmp_path, "junk.csv", bytes([1, 2, 3, 4, 5, 6, 7, 8, 65, 66, 14, 15, 16]) * 100)
    with pytest.raises(InputError, match="not a text file"):
        read_contacts([path])


def test_workbook_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, "contacts.xlsx", b"PK\x03\x04\x00\x00")
    with pytest.raises(InputError, match="export it as CSV"):
        read_contacts([path])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "nope.csv", "no such file"),
        (lambda p: p, "is a directory"),
    ],
)
def test_unopenable_files(tmp_path: Path, make: Callable[[Path], Path], message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        read_contacts([str(make(tmp_path))])
    assert "\n" not in str(err.value) and str(make(tmp_path)) in str(err.value)


def test_json_array(tmp_path: Path) -> None:
    items = [
        {
            "email": "a@x.example.com",
            "firstName": "Ann",
            "lastName": "Lee",
            "station": "R1",
            "genres": ["Indie", "Pop"],
            "followers": 1200,
        },
        {"email": "b@x.example.com", "name": "Bo", "extra": None, "nested": {"k": 1}},
    ]
    path = write(tmp_path, "c.json", json.dumps(items, indent=2))
    contacts, columns, _ = read_all([path])
    assert columns == [
        "email",
        "firstName",
        "lastName",
        "station",
        "genres",
        "followers",
        "name",
        "extra",
        "nested",
    ]
    assert contacts[0].name == "Ann Lee" and contacts[0].context["genre"] == "Indie, Pop"
    assert contacts[0].values == items[0] and contacts[1].values == items[1]
    assert contacts[1].name == "Bo"


def test_big_json_array_items_span_read_buffers(tmp_path: Path) -> None:
    items = [{"email": f"p{i}@x.example.com", "notes": "n" * (i * 5000)} for i in range(40)]
    contacts, _, _ = read_all([write(tmp_path, "c.json", json.dumps(items))])
    assert [c.values for c in contacts] == items


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"email": "a@x.example.com"}', "JSON must be an array of objects"),
        ('[{"email": "a@x.example.com"}, "b@x.example.com"]', "JSON must be an array of objects"),
        ('[{"email": "a@x.example.com"},\n{"email": oops}]', "not valid JSON in item 2 (line 2)"),
        ('[{"email": "a@x.example.com"}', "not valid JSON"),
        ('[{"email": "a@x.example.com"}] []', "extra data"),
    ],
)
def test_bad_json(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "c.json", text)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        read_contacts([path])
    assert str(err.value).startswith(f"{path}: ")


def test_empty_json_array(tmp_path: Path) -> None:
    assert read_all([write(tmp_path, "c.json", "[ ]")])[0] == []


def test_jsonl(tmp_path: Path) -> None:
    text = (
        '{"email": "a@x.example.com", "name": "A"}\n\n'
        '{"email": "b@x.example.com", "company": "R"}\n'
    )
    for name in ("c.jsonl", "c.ndjson"):
        contacts, columns, _ = read_all([write(tmp_path, name, text)])
        assert columns == ["email", "name", "company"]
        assert [c.email for c in contacts] == ["a@x.example.com", "b@x.example.com"]


def test_jsonl_broken_line_names_the_line(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.jsonl",
        '{"email": "a@x.example.com"}\n{"email": "b@x.example.com"}\n{"email": \n',
    )
    with pytest.raises(InputError) as err:
        read_contacts([path])
    assert str(err.value).startswith(f"{path}: line 3: not valid JSON")


def test_jsonl_line_that_is_not_an_object(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="line 2: not a JSON object"):
        read_contacts([write(tmp_path, "c.jsonl", '{"email": "a@x.example.com"}\n[1]\n')])


def test_stdin_is_spooled_and_cleaned_up(tmp_path: Path) -> None:
    data = b"Email,Name\na@x.example.com,Ann\nb@x.example.com,Bo\n"
    with read_contacts(["-"], stdin=io.BytesIO(data)) as source:
        first = [c.email for c in source]
        second = [c.email for c in source]  # stdin can be read only once: the spool is re-read
        spool = source._spool
        assert spool is not None and os.path.exists(spool)
        assert {c.source for c in source} == {"-"}
    assert first == second == ["a@x.example.com", "b@x.example.com"]
    assert not os.path.exists(spool)


@pytest.mark.parametrize(
    ("data", "emails"),
    [
        (b'[{"email": "a@x.example.com"}]', ["a@x.example.com"]),
        (
            b'{"email": "a@x.example.com"}\n{"email": "b@x.example.com"}\n',
            ["a@x.example.com", "b@x.example.com"],
        ),
        (b"Name\tEmail\nA\ta@x.example.com\n", ["a@x.example.com"]),
    ],
)
def test_stdin_format_by_content(data: bytes, emails: list[str]) -> None:
    with read_contacts(["-"], stdin=io.BytesIO(data)) as source:
        assert [c.email for c in source] == emails


def test_stdin_spool_removed_when_construction_fails() -> None:
    before = set(os.listdir(tempfile.gettempdir()))
    with pytest.raises(InputError, match="^stdin: JSON must be an array"):
        read_contacts(["-"], stdin=io.BytesIO(b'{\n"email": "a@x.example.com"\n}'))
    leaked = {
        n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("intel-stdin-")
    }
    assert leaked == set()


def test_no_inputs_and_stdin_twice_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        read_contacts([])
    with pytest.raises(UsageError, match="only once"):
        read_contacts(["-", "-"], stdin=io.BytesIO(b""))


# --- property: any CSV the csv module writes comes back row for row ---------------------------

_cell = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs", "Cc")),
        st.sampled_from([",", '"', ";", "\t", "\n", "\r", "'", " "]),
    ),
    max_size=30,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.lists(_cell, min_size=3, max_size=3).filter(lambda r: any(c.strip() for c in r)),
        max_size=25,
    )
)
def test_csv_rows_round_trip(rows: list[list[str]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "p.csv")
        with open(path, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["Name", "Email", "Notes"])
            writer.writerows(rows)
        with read_contacts([path]) as source:
            got = [[c.values["Name"], c.values["Email"], c.values["Notes"]] for c in source]
    assert got == rows


# --- output -----------------------------------------------------------------------------------


def test_default_output_path() -> None:
    assert default_output_path(["data/contacts.csv", "b.csv"]) == os.path.join(
        "data", "contacts.enriched.csv"
    )
    assert default_output_path(["list.json"]) == "list.enriched.csv"
    assert default_output_path(["-"]) == "-"


@pytest.fixture
def wd(tmp_path: Path) -> Path:
    """A directory of its own, so a leftover temp file shows."""
    work = tmp_path / "work"
    work.mkdir()
    return work


def csv_rows(path: Path | str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def csv_dicts(path: Path | str) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _source(wd: Path, text: str, name: str = "in.csv") -> ContactSource:
    return read_contacts([write(wd, name, text)])


INPUT = (
    "Name,Email,Station,Status,Notes\n"
    'Ann,ann@x.example.com,R1,,"multi\nline, ""quoted"""\n'
    "Bo,,,Unsubscribed,\n"
    "Cy,ANN@x.example.com,R1,,\n"
)


def test_write_csv(wd: Path) -> None:
    out = wd / "out.csv"
    with _source(wd, INPUT) as source:
        write_output(str(out), source, result_for_all(**ENRICHED))
    rows = csv_rows(out)
    assert rows[0] == ["Name", "Email", "Station", "Status", "Notes", *OUTPUT_COLUMNS]
    assert len(rows) == 4
    got = [dict(zip(rows[0], r, strict=True)) for r in rows[1:]]
    assert got[0]["Notes"] == 'multi\nline, "quoted"'
    assert got[0]["intel_status"] == "enriched"
    assert got[0]["intel_genres"] == "Indie; Alternative"
    assert got[0]["intel_pitch_tips"] == "Keep it short; Mention local shows"
    assert got[0]["intel_reasoning"] == INTEL["reasoning"]
    assert got[0]["intel_cost_usd"] == "0.0000123"
    assert got[0]["intel_input_tokens"] == "1200" and got[0]["intel_output_tokens"] == "350"
    assert got[0]["intel_latency_ms"] == "1834" and got[0]["intel_attempts"] == "2"
    assert got[0]["intel_batch_id"] == "b_test" and got[0]["intel_model"] == "claude-sonnet-4-5"
    assert got[1]["intel_status"] == "skipped" and got[1]["intel_error"] == "opted out"
    assert got[1]["intel_platform"] == "" and got[1]["intel_latency_ms"] == ""
    assert got[1]["intel_cost_usd"] == "0"
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_write_csv_without_intel_leaves_the_fields_blank(wd: Path) -> None:
    out = wd / "out.csv"
    with _source(wd, "Email\na@x.example.com\n") as source:
        write_output(
            str(out),
            source,
            result_for_all(
                status="failed", error="invalid output", cost=Decimal("0.00315000"), attempts=2
            ),
        )
    row = csv_dicts(out)[0]
    assert row["intel_status"] == "failed" and row["intel_error"] == "invalid output"
    assert row["intel_cost_usd"] == "0.00315"
    assert all(
        row[c] == ""
        for c in OUTPUT_COLUMNS
        if c.startswith("intel_")
        and c
        not in (
            "intel_status",
            "intel_error",
            "intel_cost_usd",
            "intel_attempts",
            "intel_input_tokens",
            "intel_output_tokens",
            "intel_batch_id",
        )
    )


def test_re_enriching_drops_the_old_output_columns(wd: Path) -> None:
    first = wd / "once.csv"
    with _source(wd, INPUT) as source:
        write_output(str(first), source, result_for_all(**ENRICHED))
    second = wd / "twice.csv"
    with read_contacts([str(first)]) as source:
        write_output(str(second), source, result_for_all(status="cached", intel=INTEL))
    header = csv_rows(second)[0]
    assert header == ["Name", "Email", "Station", "Status", "Notes", *OUTPUT_COLUMNS]
    assert csv_dicts(second)[0]["intel_status"] == "cached"


def test_header_less_input_gets_generated_column_names(wd: Path) -> None:
    out = wd / "out.csv"
    with _source(wd, "Ann,a@x.example.com\nBo,b@x.example.com\n") as source:
        write_output(str(out), source, result_for_all(status="enriched", intel=INTEL))
    rows = csv_rows(out)
    assert rows[0][:2] == ["column_1", "column_2"] and rows[1][:2] == ["Ann", "a@x.example.com"]


def test_write_csv_from_json_input_encodes_non_strings(wd: Path) -> None:
    items = [
        {"email": "a@x.example.com", "genres": ["Indie", "Pop"], "n": 3, "ok": True, "x": None},
        {"email": "b@x.example.com", "only": "here"},
    ]
    out = wd / "out.csv"
    with _source(wd, json.dumps(items), name="in.json") as source:
        write_output(str(out), source, result_for_all(status="enriched", intel=INTEL))
    rows = csv_dicts(out)
    assert rows[0]["genres"] == '["Indie", "Pop"]' and rows[0]["n"] == "3"
    assert rows[0]["ok"] == "true" and rows[0]["x"] == "" and rows[0]["only"] == ""
    assert rows[1]["only"] == "here"


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_write_json_and_jsonl(wd: Path, suffix: str) -> None:
    out = wd / f"out{suffix}"
    with _source(wd, INPUT) as source:
        write_output(str(out), source, result_for_all(**ENRICHED))
    text = out.read_text(encoding="utf-8")
    items = (
        json.loads(text) if suffix == ".json" else [json.loads(line) for line in text.splitlines()]
    )
    assert len(items) == 3
    assert items[0]["Name"] == "Ann" and items[0]["Notes"] == 'multi\nline, "quoted"'
    assert items[0]["intel"] == INTEL
    assert items[0]["enrichment"] == {
        "status": "enriched",
        "error": None,
        "model": "claude-sonnet-4-5",
        "inputTokens": 1200,
        "outputTokens": 350,
        "cacheReadTokens": 100,
        "cacheWriteTokens": 20,
        "costUsd": 0.0000123,
        "latencyMs": 1834,
        "attempts": 2,
        "batchId": "b_test",
    }
    assert items[1]["intel"] is None and items[1]["enrichment"]["status"] == "skipped"
    assert items[1]["enrichment"]["error"] == "opted out"


def test_write_json_keeps_json_values(wd: Path) -> None:
    items = [{"email": "a@x.example.com", "genres": ["Indie"], "n": 3}]
    out = wd / "out.json"
    with _source(wd, json.dumps(items), name="in.json") as source:
        write_output(str(out), source, result_for_all(status="enriched", intel=INTEL))
    (item,) = json.loads(out.read_text())
    assert item["genres"] == ["Indie"] and item["n"] == 3


def test_write_json_of_no_rows_is_an_empty_array(wd: Path) -> None:
    out = wd / "out.json"
    with _source(wd, "Email\n") as source:
        write_output(str(out), source, result_for_all(status="enriched"))
    assert json.loads(out.read_text()) == []


def test_write_to_stdout(wd: Path) -> None:
    buffer = io.StringIO()
    with _source(wd, INPUT) as source:
        write_output("-", source, result_for_all(**ENRICHED), stdout=buffer)
    rows = list(csv.reader(io.StringIO(buffer.getvalue(), newline="")))
    assert rows[0][-1] == "intel_batch_id" and len(rows) == 4
    assert os.listdir(wd) == ["in.csv"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
@pytest.mark.parametrize("suffix", [".csv", ".json", ".jsonl"])
def test_write_is_atomic(wd: Path, exc: BaseException, suffix: str) -> None:
    out = wd / f"out{suffix}"
    out.write_text("the previous output\n")
    calls = 0

    def failing(contact: Contact) -> ContactResult:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise exc
        return result_for_all(**ENRICHED)(contact)

    with _source(wd, INPUT) as source, pytest.raises(type(exc)):
        write_output(str(out), source, failing)
    assert out.read_text() == "the previous output\n"
    assert sorted(os.listdir(wd)) == ["in.csv", f"out{suffix}"]  # no temp file left


def test_write_into_a_missing_directory_is_a_usage_error(wd: Path) -> None:
    with _source(wd, INPUT) as source, pytest.raises(UsageError, match="cannot write"):
        write_output(str(wd / "no" / "out.csv"), source, result_for_all(**ENRICHED))


def test_write_over_the_input_file(wd: Path) -> None:
    path = write(wd, "in.csv", INPUT)
    with read_contacts([path]) as source:
        write_output(path, source, result_for_all(**ENRICHED))
    assert len(csv_dicts(path)) == 3
