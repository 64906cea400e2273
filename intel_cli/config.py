"""Where state lives and which store a command uses.

All state lives under one directory: `INTEL_HOME` when set, else the platform's
user data dir. The store is `--store` / `INTEL_STORE`, else `intel.db` there.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL = "claude-sonnet-4-5"
DEFAULT_FAST_MODEL = "claude-haiku-4-5"


def intel_home() -> Path:
    home = os.environ.get("INTEL_HOME")
    if home:
        return Path(home).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("intel", appauthor=False))


def default_store_path() -> Path:
    return intel_home() / "intel.db"


def debug_enabled() -> bool:
    return os.environ.get("INTEL_DEBUG", "").strip().lower() in {"1", "true", "yes", "on"}
