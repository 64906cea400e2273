"""Token usage of one or more API attempts, as Anthropic reports it.

`input` is the uncached input only (Anthropic's `usage.input_tokens`); cache
writes and reads are counted apart. Integers only: never accumulate floats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write + other.cache_write,
        )

    @classmethod
    def from_api(cls, usage: Any) -> Usage:
        """From an Anthropic `usage` object or dict (missing cache fields are 0)."""

        def get(name: str) -> int:
            value = usage.get(name) if isinstance(usage, dict) else getattr(usage, name, None)
            return int(value or 0)

        return cls(
            input=get("input_tokens"),
            output=get("output_tokens"),
            cache_read=get("cache_read_input_tokens"),
            cache_write=get("cache_creation_input_tokens"),
        )

    def to_api(self) -> dict[str, int]:
        return {
            "input_tokens": self.input,
            "output_tokens": self.output,
            "cache_read_input_tokens": self.cache_read,
            "cache_creation_input_tokens": self.cache_write,
        }
