"""Whether any node of a pool could run a job: the words for when none can.

A job's ``runs-on`` names a pool, maybe a node (``node-name``) and labels
the node must all have. When no node of the pool has them, the job would
wait out its whole queue timeout; the pool says so in the waiting job's
reason at once, and registering or validating a pipeline warns about it.
Both use ``no_node_reason`` so they say the same.

A job must also go to a node that can run its actions (docs/design.md §11):
every node can run the built-ins, a local node every action registered on
the server, a remote node those its ``shunter agent`` offers. Placement
sees this as labels no user can write (``action_label``): a job that uses
``deploy`` needs the label of ``deploy``, and a node that can run it has
that label. ``user_labels`` leaves them out of what is shown, and the
reasons name the action instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from typing import Protocol

__all__ = ["Matches", "constraints", "no_node_reason", "action_label", "user_labels", "ACTION_PREFIX", "actions_of",
           "server_actions"]  # fmt: skip

ACTION_PREFIX = "\x00uses:"
"""What starts a label that stands for an action (a control character: no label a user writes)."""


def action_label(name: str) -> str:
    """The label of a node that can run the action ``name`` (and of a job that uses it)."""
    return ACTION_PREFIX + name


def user_labels(labels: Iterable[str]) -> list[str]:
    """The labels a user gave, sorted: what is shown of a node or a job."""
    return sorted(label for label in labels if not label.startswith(ACTION_PREFIX))


def actions_of(labels: Iterable[str]) -> list[str]:
    """The actions among ``labels`` (``action_label``), sorted."""
    return sorted(label[len(ACTION_PREFIX):] for label in labels if label.startswith(ACTION_PREFIX))


def server_actions(actions: list[str]) -> str:
    """``action 'deploy' (registered on the server only)``: the words every reason uses."""
    words = ", ".join(repr(name) for name in actions)
    return f"action{'s' if len(actions) > 1 else ''} {words} (registered on the server only)"

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
    wanted = frozenset(user_labels(labels))
    if node_pin is not None:
        have = nodes.get(node_pin)
        if have is None:
            return f"no node {node_pin!r} in pool {pool!r}"
        missing = ", ".join(sorted(wanted - have))
        if missing:
            return f"node {node_pin!r} in pool {pool!r} does not have labels [{missing}]"
        lacking = actions_of(labels - have)
        if lacking:
            return f"node {node_pin!r} cannot run {server_actions(lacking)}: its agent does not offer it"
        return None
    if not nodes:
        return f"no node in pool {pool!r} matches (the pool has no nodes)"
    if any(labels <= have for have in nodes.values()):
        return None
    fitting = sorted(name for name, have in nodes.items() if wanted <= have)
    if not fitting:
        return f"no node in pool {pool!r} has labels [{', '.join(sorted(wanted))}]"
    # Nodes with the labels are there, but none of them can run every action the job uses.
    lacking = actions_of(labels - frozenset().union(*(nodes[name] for name in fitting)))
    lacking = lacking or actions_of(labels)
    with_labels = f" with labels [{', '.join(sorted(wanted))}]" if wanted else ""
    listed = ", ".join(fitting[:5]) + (f" and {len(fitting) - 5} more" if len(fitting) > 5 else "")
    return (f"no node in pool {pool!r}{with_labels} can run {server_actions(lacking)}: "
            f"node{'s' if len(fitting) > 1 else ''} {listed} cannot (a remote node's agent offers only "
            "the built-ins and its --actions)")  # fmt: skip


def constraints(node_pin: str | None, labels: frozenset[str]) -> str:
    """`` (node-name N; labels a, b; uses deploy)``: what a waiting job asks of a node, for its reason."""
    parts = []
    if node_pin:
        parts.append(f"node-name {node_pin}")
    shown = user_labels(labels)
    if shown:
        parts.append(f"labels {', '.join(shown)}")
    actions = actions_of(labels)
    if actions:  # actions only some nodes can run (docs/design.md §11)
        parts.append(f"uses {', '.join(actions)}")
    return f" ({'; '.join(parts)})" if parts else ""
