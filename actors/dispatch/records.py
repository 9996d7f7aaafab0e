"""What a pool's placement keeps: waiting and granted requests, agents, nodes, classes of requests.

Plain records (``__slots__`` classes; ``Request`` and ``Grant`` are untracked
structs), read and changed only by ``Placement`` (``placement.py``), the
pure core of a pool. A node also knows how many
agents a resize asked for (``want``): those past it retire once free.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Any

import msgspec

__all__ = ["Agent", "Grant", "JobKey", "Node", "Request", "RequestClass", "RequestQueue", "constraint_key"]

JobKey = tuple[str, str]  # (pipeline id, job id)


class Request(msgspec.Struct, gc=False):
    """One job attempt waiting for (or holding) an agent.

    Untracked by the collector, like the ``JobRequest`` it keeps in ``data``: a request that waits
    survives the collector's young passes, and thousands of tracked ones in its old generation
    triggered a full pass over every object of the process every few thousand builds. Neither leads
    back to an actor (the request names its pipeline's actor: ``actors/names.py``), so neither can be
    part of a cycle. ``data`` must hold only such data (the pool's ``JobRequest``), never a ``Ref``.
    A struct also costs two thirds of a class's ``__init__`` (measured).
    """

    token: Hashable
    build_id: str
    key: JobKey
    node_pin: str | None = None
    labels: frozenset[str] = frozenset()
    agent_pin: str | None = None
    lock: bool = False  # lock the agent for the build (lock-resource-with chain)
    per_node: int | None = None
    total: int | None = None
    since: float = 0.0  # when it began to wait (the pool reads the clock only for a request that waits)
    deadline: float = 0.0  # when it stops waiting: its queue timeout (``expiry.py``), set with ``since``
    data: Any = None
    seq: int = 0
    # The key of its class (``constraints()``): the pool passes one tuple for every unpinned attempt of a
    # job (``remote.JobLabels``), ``Placement.request`` makes it otherwise. Made here for every attempt,
    # in a ``__post_init__``, it cost 0.08 µs per build (measured).
    class_key: tuple[Any, ...] = ()

    def constraints(self) -> tuple[Any, ...]:
        """What it asks for, as the key of its class of waiting requests."""
        return constraint_key(self.key, self.node_pin, self.labels, self.agent_pin, self.per_node, self.total)


def constraint_key(key: Any, node_pin: str | None, labels: frozenset[str], agent_pin: str | None, per_node: int | None,
              total: int | None) -> tuple[Any, ...]:  # fmt: skip
    """The key of a class of waiting requests: the one layout ``Request.constraints`` and the pool's
    per-job cache (``remote.JobLabels``) both make, so that their requests share a class."""
    return (key, node_pin, labels, agent_pin, per_node, total)


class Grant(msgspec.Struct, gc=False):
    """A request given its agent (and so its node slot and total slot). A struct, made for every
    grant: a class's ``__init__`` cost 2.4 times as much (measured). Untracked by the collector: the
    pool drops it once it has told the agent, so it is never part of a cycle."""

    request: Request
    node: str
    agent: str


class Agent:
    """One agent: the request it runs, and the build whose lock chain holds it."""

    __slots__ = ("name", "node", "held", "locked_by")

    def __init__(self, name: str, node: Node) -> None:
        self.name = name
        self.node = node
        self.held: Request | None = None
        self.locked_by: str | None = None


class Node:
    """One node: its labels, agents (idle ones in order), running jobs per key, drain and wanted count."""

    __slots__ = ("name", "labels", "agents", "idle", "draining", "running", "want")

    def __init__(self, name: str, labels: frozenset[str]) -> None:
        self.name = name
        self.labels = labels
        self.agents: dict[str, Agent] = {}
        self.idle: dict[str, None] = {}  # idle and unlocked, in order
        self.draining = False
        self.running: dict[JobKey, int] = {}  # a key with none running is absent (``Placement.total``)
        self.want: int | None = None  # agents asked for by a resize; those past it retire once free

    @property
    def surplus(self) -> bool:
        return self.want is not None and len(self.agents) > self.want


class RequestQueue:
    """The requests of one class in arrival order, by token: ``Fifo``'s lazy removal, without a
    (key, value) pair per entry (a request carries its token), so a waiting request costs the
    garbage collector no tuple of its own."""

    __slots__ = ("_items", "_order")

    def __init__(self) -> None:
        self._items: dict[Hashable, Request] = {}
        self._order: deque[Request] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, request: Request) -> None:
        self._items[request.token] = request
        self._order.append(request)

    def pop(self, token: Hashable) -> Request | None:
        """Remove the request of ``token`` wherever it waits; None if it is not queued."""
        request = self._items.pop(token, None)
        if request is None:
            return None
        order = self._order
        if order[0] is request:
            order.popleft()  # the head left (the usual case): no stale entry to skip later
        elif len(order) > 2 * len(self._items) + 32:
            self._order = deque(entry for entry in order if self._items.get(entry.token) is entry)
        return request

    def pop_head(self, head: Request) -> Request | None:
        """Remove ``head`` (the oldest request); returns the new oldest, or None when empty.
        ``pop`` then ``head`` in one call: a waiting request leaves this way on every grant under load."""
        order, items = self._order, self._items
        del items[head.token]
        while order:
            request = order[0]
            if items.get(request.token) is request:
                return request
            order.popleft()  # removed earlier: skip it for good
        return None

    def head(self) -> Request | None:
        """The oldest request, or None when empty."""
        order, items = self._order, self._items
        while order:
            request = order[0]
            if items.get(request.token) is request:
                return request
            order.popleft()  # removed earlier: skip it for good
        return None

    def values(self) -> Iterator[Request]:
        """The requests, oldest first."""
        items = self._items
        return (request for request in self._order if items.get(request.token) is request)


class RequestClass:
    """The waiting requests of one set of constraints, oldest first."""

    __slots__ = ("key", "requests", "head", "any_node", "ready")

    def __init__(self, key: tuple[Any, ...], first: Request) -> None:
        self.key = key
        self.ready = False  # in the placement's ready indexes (``Placement._make_ready``)
        self.requests = RequestQueue()
        self.requests.append(first)
        self.head = first  # the oldest request, kept at hand: read on every dispatch
        # No node pin, no labels, no agent pin, no per-node limit: any free agent will do.
        self.any_node = (first.node_pin is None and not first.labels and first.agent_pin is None
                         and first.per_node is None)  # fmt: skip
