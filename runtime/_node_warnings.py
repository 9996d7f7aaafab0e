"""Warnings for a ``runs-on`` that no node matches, when a pipeline is registered or validated.

Such a pipeline is valid (a node may be added later, and then its jobs
run), so this is a warning, not an error: without it a misspelled pool or
label would only show as a job waiting out its whole queue timeout. The
words are the ones the pool gives the waiting job (``no_node_reason``),
followed by what is there instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Set

from actors.dispatch.matching import no_node_reason, user_labels
from actors.model.spec import Job, RunsOn

from ._validate import suggest

__all__ = ["NodeMap", "node_warnings"]

NodeMap = Mapping[str, Mapping[str, Set[str]]]  # pool name -> node name -> its labels
_LISTED = 20  # names shown in a hint, at most


def node_warnings(placements: Iterable[tuple[str, Job]], nodes: NodeMap,
                  needs: Callable[[Job], frozenset[str]] | None = None) -> list[dict[str, str]]:  # fmt: skip
    """One ``{"path", "message"}`` per ``(path of runs-on, job)`` that no node of ``nodes`` matches;
    with ``needs``, also one per job whose runs-on some node matches but none that can run its actions
    (the labels of ``matching.action_label``, which ``nodes`` then hold too)."""
    warnings = []
    for path, job in placements:
        runs_on = job.runs_on
        pool = nodes.get(runs_on.pool_name, {})
        labels = frozenset(runs_on.labels)
        reason = no_node_reason(runs_on.pool_name, runs_on.node_name, labels, pool)
        if reason is not None:
            warnings.append({"path": path, "message": reason + _hint(runs_on, nodes)})
            continue
        extra = needs(job) if needs is not None else frozenset()
        reason = no_node_reason(runs_on.pool_name, runs_on.node_name, labels | extra, pool) if extra else None
        if reason is not None:  # the action is the server's: a local node added later runs it
            warnings.append({"path": path, "message": reason})
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
    labels = user_labels(set().union(*pool.values()))
    return f"; labels of its nodes: {_listed(labels)}" if labels else "; its nodes have no labels"


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more
