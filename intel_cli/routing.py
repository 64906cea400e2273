"""Model routing (issue 7): `--fast-model` for the contacts whose role matches `--route-roles`,
and a second opinion from the main model when the fast one is not sure.

- Matching is case-insensitive on the contact's role column. A pattern of four characters or
  more matches anywhere in the role ("producer" matches "Co-Producer", "Producers"); a
  shorter one must be a whole word, optionally plural, so that "DJ" matches "Club DJ" and
  "DJs" but "PR" does not match "Producer" and "MD" not "Mdina FM".
- A routed contact goes to the fast model first. When that answer is valid but its confidence
  is Low, the contact is asked again on the main model. Both attempts are billed and counted,
  each under its own model. The main model's answer is kept when it gives one; when it fails
  (invalid output, a timeout, the budget or the run stopping), the fast model's Low answer is
  kept instead, since it is still a valid record. A contact's `model` is the model whose
  answer was kept.

Without routing (`--route-roles` not given) a `Router` is inert: every contact goes to the
run's model and nothing is tracked per contact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from intel_cli.errors import UsageError
from intel_cli.usage import Usage

# patterns shorter than this match as whole words only (see the module docstring)
SUBSTRING_MIN_CHARS = 4


def parse_roles(text: str | None) -> list[str]:
    """`"DJ, Producer;Presenter"` -> ["DJ", "Producer", "Presenter"] (commas or semicolons)."""
    if not text:
        return []
    return [part.strip() for part in re.split(r"[,;]", text) if part.strip()]


def role_matcher(patterns: Sequence[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex for every pattern; None when there are none."""
    parts: list[str] = []
    for pattern in patterns:
        words = " ".join(pattern.split())
        if not words:
            continue
        escaped = re.escape(words).replace(r"\ ", r"\s+")
        if len(words) >= SUBSTRING_MIN_CHARS:
            parts.append(escaped)
        else:
            parts.append(rf"(?<![^\W_]){escaped}(?:s|es)?(?![^\W_])")
    return re.compile("|".join(parts), re.IGNORECASE) if parts else None


def validate(fast_model: str | None, route_roles: Sequence[str], model: str) -> None:
    if fast_model is not None and not fast_model.strip():
        raise UsageError("--fast-model must not be empty")
    if route_roles and role_matcher(route_roles) is None:
        raise UsageError('--route-roles needs at least one role, e.g. --route-roles "DJ,Producer"')


@dataclass
class _Spend:
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)


@dataclass
class _Route:
    """A routed contact: which model its next attempt goes to, what each model cost, and the
    fast model's Low answer to fall back on."""

    model: str
    spend: dict[str, _Spend] = field(default_factory=dict)
    fallback: dict[str, Any] | None = None
    kept: str | None = None


class Router:
    """Which model each contact goes to. Keys are the contacts' row indexes."""

    def __init__(self, model: str, fast_model: str | None, route_roles: Sequence[str]) -> None:
        self.model = model
        self.fast_model = fast_model
        self.matcher = role_matcher(route_roles) if fast_model else None
        self._routes: dict[int, _Route] = {}

    @property
    def active(self) -> bool:
        return self.matcher is not None

    def matches(self, role: str | None) -> bool:
        return bool(self.matcher is not None and role and self.matcher.search(role))

    def _route(self, row: int, role: str | None) -> _Route | None:
        route = self._routes.get(row)
        if route is None and self.fast_model is not None and self.matches(role):
            route = self._routes[row] = _Route(self.fast_model)
        return route

    def model_for(self, row: int, role: str | None) -> str:
        """The model the contact's next attempt goes to."""
        route = self._route(row, role) if self.active else None
        return route.model if route else self.model

    def record(self, row: int, model: str, usage: Usage, cost: Decimal) -> None:
        """A billed attempt of a routed contact, under the model that answered it."""
        route = self._routes.get(row)
        if route is None:
            return
        spend = route.spend.setdefault(model, _Spend())
        spend.usage += usage
        spend.cost += cost

    def escalate(self, row: int, intel: dict[str, Any] | None) -> bool:
        """After a valid answer: True when it came from the fast model with Low confidence,
        so the contact goes again, to the main model (the answer is kept as a fallback)."""
        route = self._routes.get(row)
        if (
            route is None
            or route.model == self.model
            or intel is None
            or intel.get("confidence") != "Low"
        ):
            return False
        route.fallback = intel
        route.model = self.model
        return True

    def outcome(
        self, row: int, status: str, error: str | None, intel: dict[str, Any] | None
    ) -> tuple[str, str | None, dict[str, Any] | None]:
        """The contact's final (status, error, intel): a failed second opinion keeps the fast
        model's valid Low answer."""
        route = self._routes.get(row)
        if route is None:
            return status, error, intel
        if status == "enriched" or route.fallback is None:
            route.kept = route.model
            return status, error, intel
        route.kept = self.fast_model
        return "enriched", None, route.fallback

    def keep(self, row: int, model: str | None) -> None:
        """A routed contact reuses an earlier result (SPEC 3.3): its model is that result's."""
        route = self._routes.get(row)
        if route is not None and model:
            route.kept = model

    def kept_model(self, row: int) -> str | None:
        """The model whose answer the contact kept (None: not routed, the run's model)."""
        route = self._routes.get(row)
        if route is None:
            return None
        return route.kept or route.model

    def spend(
        self, row: int, usage: Usage, cost: Decimal
    ) -> Iterator[tuple[str, Usage, Decimal, bool]]:
        """(model, usage, cost, kept) for each model the contact was sent to. `usage` and
        `cost` are the contact's totals, which is all there is for an unrouted contact."""
        route = self._routes.get(row)
        if route is None or not route.spend:
            yield self.kept_model(row) or self.model, usage, cost, True
            return
        kept = self.kept_model(row)
        for model, spent in route.spend.items():
            yield model, spent.usage, spent.cost, model == kept
        if kept is not None and kept not in route.spend:
            # the kept model was tried but never billed (e.g. it timed out): count the contact
            yield kept, Usage(), Decimal(0), True
