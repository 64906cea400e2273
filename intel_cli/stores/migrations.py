"""Finding the numbered migration files of a backend (SPEC 2.5, STYLE 7).

Migrations are `migrations/<backend>/NNNN_name.sql`, applied in number order
and never edited after release. An installed wheel carries them as
`intel_cli/migrations/<backend>/` (pyproject's hatch force-include); a source
checkout or an editable install reads the repository's top-level
`migrations/<backend>/`. Applying them is each backend's job, since only the
backend knows how to run a script inside one transaction.
"""

from __future__ import annotations

import re
from pathlib import Path

import intel_cli
from intel_cli.errors import ConfigError
from intel_cli.stores.base import Migration

_NAME = re.compile(r"^(?P<number>\d{4})_[A-Za-z0-9_]+\.sql$")


def migrations_dir(backend: str) -> Path:
    """The directory holding `backend`'s migrations: the packaged copy first, then the checkout."""
    package = Path(intel_cli.__file__).resolve().parent
    for candidate in (package / "migrations" / backend, package.parent / "migrations" / backend):
        if candidate.is_dir():
            return candidate
    raise ConfigError(
        f"no migrations for the {backend} store were found next to intel_cli: reinstall intel-cli"
    )


def load_migrations(backend: str) -> list[Migration]:
    """Every migration of `backend`, in number order. Two files with one number are a bug."""
    found: dict[int, Migration] = {}
    for path in migrations_dir(backend).iterdir():
        match = _NAME.match(path.name)
        if not match or not path.is_file():
            continue
        number = int(match["number"])
        if number in found:
            raise ConfigError(
                f"two {backend} migrations are numbered {number:04d} "
                f"({found[number].name}, {path.stem}): renumber one"
            )
        found[number] = Migration(name=path.stem, sql=path.read_text(encoding="utf-8"))
    return [found[number] for number in sorted(found)]
