"""Reading contacts from any spreadsheet export, and writing the enriched output (SPEC 2.2).

Interface (implemented below):
- `Contact`: one input row, mapped to email/name/company/role/context.
- `read_contacts(inputs, warn=...)` -> `ContactSource`: streams Contacts; knows the columns.
- `write_output(dest, columns, rows, fmt=None)`: CSV/JSON/JSONL, atomically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
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
