"""Secrets: named values that steps may use and nobody may read back (docs/design.md §12).

A ``Secrets`` holds the values the configuration resolved (``secrets:`` in
the runtime config). Pipelines refer to them as ``${{ secrets.NAME }}`` in
``env:``, ``with:`` and ``run:``; the agent substitutes them there as data
(``run:`` scripts see an environment variable, never pasted text) and
passes everything it reports through :meth:`Secrets.mask`, so a value
never reaches a log, an event, a build's JSON or an error message: it reads
``***`` instead.

Masking is textual and line by line: each value is replaced wherever it
occurs in a line, and a value of several lines is also masked line by line
(a step that prints a multi-line key prints it on several log lines). A step
that deliberately transforms a value (base64, reversed, one character per
line) defeats any masker; masking protects against accidents, the token
design against the rest. Values shorter than :data:`MIN_MASKED` characters
are not masked on their own (masking every ``1`` would destroy the logs),
which the configuration loader refuses anyway.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..model.spec import Job
from ..model.templates import references

__all__ = ["MASK", "MIN_MASKED", "Secrets", "referenced"]

MASK = "***"
MIN_MASKED = 3
"""Shorter pieces (the lines of a multi-line value) are not masked on their own."""


class Secrets:
    """Named secret values, with a masker for every text that leaves the agent.

    The values never appear in ``repr``; two ``Secrets`` are equal when they
    hold the same names and values.
    """

    __slots__ = ("_values", "_pattern", "masks")

    def __init__(self, values: Mapping[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(values or {})
        pieces: set[str] = set()
        for value in self._values.values():
            pieces.add(value)
            pieces.update(line for line in value.splitlines() if len(line.strip()) >= MIN_MASKED)
            # A line printed with `echo` loses the value's trailing newline: mask without it too.
            pieces.add(value.rstrip("\r\n"))
        pieces = {piece for piece in pieces if len(piece) >= MIN_MASKED}
        # Longest first, so a value that contains another is masked whole.
        ordered = sorted(pieces, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self.masks = self._pattern is not None
        """Whether ``mask`` can change a text: read per step by an agent, to skip masking when it cannot."""

    def names(self) -> frozenset[str]:
        """The names ``${{ secrets.NAME }}`` may use."""
        return frozenset(self._values)

    def values(self) -> dict[str, str]:
        """The values by name (for rendering a step; never for display)."""
        return dict(self._values)

    def get(self, name: str) -> str:
        return self._values[name]

    def __bool__(self) -> bool:
        return bool(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def only(self, names: Iterable[str]) -> Secrets:
        """The secrets among ``names`` (unknown names are left out): what one job may see."""
        return Secrets({name: self._values[name] for name in names if name in self._values})

    def mask(self, text: str) -> str:
        """``text`` with every secret value (and every line of a multi-line one) replaced by ``***``."""
        if self._pattern is None or not text:
            return text
        return self._pattern.sub(MASK, text)

    def mask_all(self, texts: Iterable[str]) -> list[str]:
        return [self.mask(text) for text in texts]

    def mask_values(self, mapping: Mapping[str, str]) -> dict[str, str]:
        """A copy of ``mapping`` with its values masked (step outputs shown in a build's JSON)."""
        if self._pattern is None:
            return dict(mapping)
        return {key: self.mask(value) for key, value in mapping.items()}

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secrets) and other._values == self._values

    def __hash__(self) -> int:
        return hash(frozenset(self._values))


def referenced(job: Job) -> frozenset[str]:
    """The names of the secrets ``job`` uses (``${{ secrets.NAME }}`` in its ``env:`` and its
    steps' ``env:``, ``with:`` and ``run:``): all a remote agent is sent for it (docs/design.md §11)."""
    names: set[str] = set()

    def scan(value: Any) -> None:
        if isinstance(value, str):
            names.update(name for namespace, name in references(value) if namespace == "secrets")
        elif isinstance(value, dict):
            for item in value.values():
                scan(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                scan(item)

    scan(job.env)
    for step in job.steps:
        scan(step.run)
        scan(step.env)
        scan(step.with_)
    return frozenset(names)
