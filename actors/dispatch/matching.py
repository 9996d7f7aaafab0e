"""Whether any node of a pool could run a job: the words for when none can.

A job's ``runs-on`` names a pool, maybe a node (``node-name``) and labels
the node must all have. When no node of the pool has them, the job would
wait out its whole queue timeout; the pool says so in the waiting job's
reason at once, and registering or validating a pipeline warns about it.
Both use ``no_node_reason`` so they say the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Protocol

__all__ = ["Matches", "no_node_reason"]

Key = tuple[str | None, frozenset[str]]  # (node pin, labels)


class _Node(Protocol):
    name: str
    labels: frozenset[str]
    draining: bool


class Matches:
    """Whether any node that is not draining has a node pin and labels.

    Asked for every request that waits, so each answer is remembered, and
    kept right as nodes come (which only adds matches) and drain or go
    (their matches are looked for again when next asked).
    """

    __slots__ = ("_found",)

    def __init__(self) -> None:
        self._found: dict[Key, bool] = {}

    def exists(self, key: Key, nodes: Iterable[_Node]) -> bool:
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = any(not node.draining and _fits(node.name, node.labels, key) for node in nodes)
        return found

    def added(self, name: str, labels: frozenset[str]) -> None:
        for key, found in self._found.items():
            if not found and _fits(name, labels, key):
                self._found[key] = True

    def removed(self, name: str, labels: frozenset[str]) -> None:
        for key in [key for key, found in self._found.items() if found and _fits(name, labels, key)]:
            del self._found[key]


def _fits(name: str, labels: frozenset[str], key: Key) -> bool:
    node_pin, needs = key
    return node_pin in (None, name) and needs <= labels


def no_node_reason(pool: str, node_pin: str | None, labels: frozenset[str],
                   nodes: Mapping[str, Set[str]]) -> str | None:  # fmt: skip
    """Why no node of ``pool`` can run a job with this ``node-name`` and these
    ``labels``, or None if one can. ``nodes`` maps the pool's node names to their labels.
    """
    if node_pin is not None:
        have = nodes.get(node_pin)
        if have is None:
            return f"no node {node_pin!r} in pool {pool!r}"
        missing = ", ".join(sorted(labels - have))
        return f"node {node_pin!r} in pool {pool!r} does not have labels [{missing}]" if missing else None
    if not nodes:
        return f"no node in pool {pool!r} matches (the pool has no nodes)"
    if any(labels <= have for have in nodes.values()):
        return None
    return f"no node in pool {pool!r} has labels [{', '.join(sorted(labels))}]"
