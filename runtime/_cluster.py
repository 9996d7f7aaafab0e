"""The runtime's build machines and gates as its users see them: nodes, groups, waiting jobs, counters.

``Cluster`` is the part of the ``Runtime`` facade (``_runtime.py``) that
asks the pools, groups and mutexes: nodes are added, changed and drained
through the pool that holds them (and, with durable state, written to the
store), groups and waiting jobs are snapshots of their actors, and
``stats`` sums what the event hub and the pools count.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

import msgspec

from actors.admission.group import GroupSnapshot
from actors.admission.mutex import ListMutexWaiters
from actors.core import ActorStopped, Ref
from actors.directory import Directory
from actors.dispatch.pool import AddNode, HasNode, InjectFault, ListNodes, ListWaiting, PoolStats, RemoveNode, UpdateNode
from actors.events import Counters
from actors.model.errors import Conflict, InvalidRequest, NotFound
from actors.model.info import GroupInfo, NodeInfo, Stats, WaitingJob
from actors.model.vocab import BUILD_FINAL, Blocker, BuildStatus, FaultKind, values
from actors.state.store import NodeRow

from ._state import State
from .config import RuntimeConfig

__all__ = ["Cluster", "ask_running", "blocked_by", "word"]

W = TypeVar("W", bound=StrEnum)


class Cluster:
    """Nodes, groups, waiting jobs and counters (a part of ``Runtime``; see the module docstring)."""

    config: RuntimeConfig
    _hub: Ref
    _pools: Directory
    _groups: Directory
    _mutexes: Directory
    _state: State | None
    _adding_nodes: set[str]
    _node_names: set[str]

    async def groups(self) -> list[GroupInfo]:
        """A snapshot of every running group; one idle for five minutes has retired and is not listed."""
        result: list[GroupInfo] = await ask_running(self._groups.all(), GroupSnapshot())
        return result

    async def add_node(self, name: str, pool: str = "default", agents: int = 1,
                       labels: list[str] | tuple[str, ...] = (), *, persist: bool = True) -> NodeInfo:  # fmt: skip
        """Add a build node with ``agents`` agents; creates the pool if needed.

        With durable state the node comes back after a restart (``persist``; nodes of the config need not).
        """
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidRequest(f"node name must be a non-empty string without '/', got {name!r}")
        limit = self.config.max_agents_per_node
        if isinstance(agents, bool) or not isinstance(agents, int) or not 1 <= agents <= limit:
            message = f"must be an integer from 1 to {limit} (max-agents-per-node), got {agents!r}"
            raise InvalidRequest(f"agents: {message}", details=[{"path": "$.agents", "message": message}])
        # Reserved before the first await: two concurrent adds of one name
        # (to different pools) cannot both pass the check below.
        if name in self._adding_nodes:
            raise Conflict(f"node {name!r} is being added")
        self._adding_nodes.add(name)
        try:
            for ref in self._pools.all():  # one cheap ask per pool, not a listing of every node
                if await ref.ask(HasNode(name)):
                    raise Conflict(f"node {name!r} already exists")
            if len(self._node_names) + len(self._adding_nodes) > self.config.max_nodes:
                raise Conflict(f"there are {len(self._node_names)} nodes already (max-nodes "
                               f"{self.config.max_nodes}); remove one first")  # fmt: skip
            result: NodeInfo = await self._pools.get(pool).ask(AddNode(name, pool, agents, tuple(labels)))
            self._node_names.add(name)
        finally:
            self._adding_nodes.discard(name)
        if persist and self._state is not None:
            await self._state.write(self._state.node_batch(name, NodeRow(name, pool, agents, tuple(labels))))
        return result

    async def update_node(self, name: str, *, agents: int | None = None, labels: list[str] | tuple[str, ...] | None = None,
                          pool: str | None = None) -> NodeInfo:  # fmt: skip
        """Change a node's agents and/or labels (None keeps them). More agents start at once; with fewer,
        idle ones leave at once and busy ones after their job (or lock chain): no running job is stopped.
        New labels place waiting jobs at once. ``pool``, if given, must be the node's own (``Conflict``)."""
        limit = self.config.max_agents_per_node
        if agents is not None and (isinstance(agents, bool) or not isinstance(agents, int) or not 1 <= agents <= limit):
            message = f"must be an integer from 1 to {limit} (max-agents-per-node), got {agents!r}"
            raise InvalidRequest(f"agents: {message}", details=[{"path": "$.agents", "message": message}])
        if labels is not None and (isinstance(labels, str) or not all(isinstance(x, str) and x for x in labels)):
            raise InvalidRequest(f"labels must be a list of non-empty strings, got {labels!r}")
        change = UpdateNode(name, agents, None if labels is None else tuple(labels), pool)
        for ref in self._pools.all():
            if await ref.ask(HasNode(name)):
                result: NodeInfo = await ref.ask(change)
                if self._state is not None:
                    row = NodeRow(name, result.pool, result.agents_wanted or len(result.agents), tuple(result.labels))
                    await self._state.write(self._state.node_batch(name, row))
                return result
        raise NotFound(f"no node {name!r}")

    async def remove_node(self, name: str) -> NodeInfo:
        """Drain a node: running jobs finish, no new ones start, then it goes."""
        for ref in self._pools.all():
            if await ref.ask(HasNode(name)):
                result: NodeInfo = await ref.ask(RemoveNode(name))
                self._node_names.discard(name)
                if self._state is not None:
                    await self._state.write(self._state.node_batch(name, None))
                return result
        raise NotFound(f"no node {name!r}")

    async def nodes(self) -> list[NodeInfo]:
        found: list[NodeInfo] = []
        for ref in self._pools.all():
            found.extend(await ref.ask(ListNodes()))
        return found

    async def waiting_jobs(self) -> list[WaitingJob]:
        """Job attempts waiting for a slot, an agent or a mutex, each with its reason and deadline.

        ``position`` is the place in line where the job waits (its pool, or
        its mutex), 1 first, in the order the pool or mutex serves them;
        ``blocked_by`` names what holds it, read from the reason's words
        (docs/design.md §3.1): ``total``, ``per-node``, ``no-node``,
        ``no-free-agent``, ``agent`` (lock-resource-with) or ``mutex``.
        """
        lines: list[list[WaitingJob]] = [await ref.ask(ListWaiting()) for ref in self._pools.all()]
        lines.extend(await ask_running(self._mutexes.all(), ListMutexWaiters()))
        return [msgspec.structs.replace(job, position=place, blocked_by=blocked_by(job.reason))
                for line in lines for place, job in enumerate(line, 1)]  # fmt: skip

    def inject_fault(self, agent: str, kind: FaultKind | str) -> None:
        """Make an agent ``crash``, ``hang`` or go silent (``silence``): tests, benchmarks, drills (``FaultKind``)."""
        fault = word(FaultKind, kind, "fault", "kind")
        for ref in self._pools.all():
            ref.tell(InjectFault(agent, fault))

    async def stats(self) -> Stats:
        counters = await self._hub.ask(Counters())
        pools = [await ref.ask(PoolStats()) for ref in self._pools.all()]
        builds = {status: count for status, count in counters["builds"].items() if count}
        mutex_waiters = [len(waiters) for waiters in await ask_running(self._mutexes.all(), ListMutexWaiters())]

        def total(field: str) -> int:
            return sum(pool[field] for pool in pools)

        return Stats(
            builds_running=builds.get(BuildStatus.RUNNING, 0),
            builds_queued=builds.get(BuildStatus.QUEUE, 0),
            builds_finished=sum(count for status, count in builds.items() if status in BUILD_FINAL),
            jobs_running=total("jobs_running"),
            jobs_queued=total("jobs_queued") + sum(mutex_waiters),
            slots_held=total("slots_held"),
            agents=total("agents"),
            agents_busy=total("agents_busy"),
            agents_locked=total("agents_locked"),
            agents_lost=total("agents_lost"),
            builds_by_status=builds,
        )



# The reasons start with these words (pool: placement.why_waiting and matching.no_node_reason; mutex: its waiters).
_BLOCKERS = (("mutex ", Blocker.MUTEX), ("concurrency-limit-per-node", Blocker.PER_NODE),
             ("concurrency-limit-total", Blocker.TOTAL), ("no node", Blocker.NO_NODE), ("node ", Blocker.NO_NODE),
             ("no free agent", Blocker.NO_FREE_AGENT), ("agent ", Blocker.AGENT))  # fmt: skip
_BLOCKER_WORDS = (("per-node", Blocker.PER_NODE), ("total", Blocker.TOTAL), ("no node", Blocker.NO_NODE),
                  ("no free agent", Blocker.NO_FREE_AGENT), ("lock-resource-with", Blocker.AGENT),
                  ("mutex", Blocker.MUTEX))  # fmt: skip


def blocked_by(reason: str) -> Blocker | None:
    """What a waiting job's reason says holds it (see ``Runtime.waiting_jobs``); None if none of the words."""
    for words, kind in _BLOCKERS:
        if reason.startswith(words):
            return kind
    for words, kind in _BLOCKER_WORDS:
        if words in reason:
            return kind
    return None


def word(words: type[W], value: str, what: str, argument: str) -> W:
    """``value`` as a member of the vocabulary ``words``, or ``InvalidRequest`` naming every allowed value."""
    try:
        return words(value)
    except ValueError:
        raise InvalidRequest(f"{argument}: unknown {what} {value!r} (expected one of "
                             f"{', '.join(values(words))})") from None  # fmt: skip


async def ask_running(refs: list[Ref], message: Any) -> list[Any]:
    """Ask each actor in turn, skipping those that stopped since they were listed.

    A group or mutex may stop between the listing and its ask; it is left
    out rather than failing the whole call.
    """
    replies = []
    for ref in refs:
        try:
            replies.append(await ref.ask(message))
        except ActorStopped:
            continue
    return replies
