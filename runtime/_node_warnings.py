"""Warnings for a ``runs-on`` that no node matches, when a pipeline is registered or validated.

Such a pipeline is valid (a node may be added later, and then its jobs
run), so this is a warning, not an error: without it a misspelled pool or
label would only show as a job waiting out its whole queue timeout. The
words are the ones the pool gives the waiting job (``no_node_reason``),
followed by what is there instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from actors.dispatch.matching import no_node_reason
from actors.model.spec import RunsOn

from ._validate import suggest

__all__ = ["NodeMap", "node_warnings"]

NodeMap = Mapping[str, Mapping[str, Set[str]]]  # pool name -> node name -> its labels
_LISTED = 20  # names shown in a hint, at most


def node_warnings(placements: Iterable[tuple[str, RunsOn]], nodes: NodeMap) -> list[dict[str, str]]:
    """One ``{"path", "message"}`` per ``(path of runs-on, RunsOn)`` that no node of ``nodes`` matches."""
    warnings = []
    for path, runs_on in placements:
        pool = nodes.get(runs_on.pool_name, {})
        reason = no_node_reason(runs_on.pool_name, runs_on.node_name, frozenset(runs_on.labels), pool)
        if reason is not None:
            warnings.append({"path": path, "message": reason + _hint(runs_on, nodes)})
    return warnings


def _hint(runs_on: RunsOn, nodes: NodeMap) -> str:
    """What there is instead: the pools with nodes, the pool's nodes, or its labels."""
    pool = nodes.get(runs_on.pool_name)
    if not pool:
        pools = sorted(name for name, members in nodes.items() if members)
        if not pools:
            return "; no pool has a node yet"
        return f"; pools with nodes: {_listed(pools)}{suggest(runs_on.pool_name, pools)}"
    if runs_on.node_name is not None and runs_on.node_name not in pool:
        return f"; its nodes: {_listed(sorted(pool))}{suggest(runs_on.node_name, list(pool))}"
    labels = sorted(set().union(*pool.values()))
    return f"; labels of its nodes: {_listed(labels)}" if labels else "; its nodes have no labels"


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more
