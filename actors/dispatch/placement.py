"""Where a job attempt may run now: the pure core of a pool. No I/O.

A pool's waiting requests are grouped into *classes* of identical
constraints (job key, node pin, labels, agent pin): FIFO within a class, and
across classes the oldest head wins, so no class starves another and a head
that cannot be placed never blocks other classes. What makes dispatch cheap:

- a free-node index per label set (nodes with an idle, unlocked agent);
- classes whose job key is at its total limit are parked, not scanned, until
  that key's count drops;
- a node saturated for a key (per-node limit) is skipped; there are at most
  (running jobs of the key / per-node limit) of those.

So placing a job costs O(distinct waiting classes + saturated nodes), never
O(nodes) or O(waiting jobs). A grant takes the total slot, the node slot and
the agent together, in one step; ``release`` gives all three back.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterator
from typing import Any

from .matching import Matches, constraints, no_node_reason
from .records import Agent as _Agent
from .records import Grant, JobKey, Request
from .records import Node as _Node
from .records import RequestClass as _Class

__all__ = ["Placement", "Request", "Grant", "JobKey"]

class Placement:
    """The state of one pool: nodes, agents, slots held, requests waiting."""

    def __init__(self, pool: str = "default") -> None:
        self.pool = pool  # its name, for the reasons it gives
        self.nodes: dict[str, _Node] = {}
        self.agents: dict[str, _Agent] = {}
        # Slot counts (a key with none is absent) in plain dicts: a Counter's get and set cost twice a
        # dict's (92 vs 42 ns, measured), four times per build.
        self.total: dict[JobKey, int] = {}
        self.granted: dict[Hashable, _Agent] = {}
        self.waiting: dict[Hashable, Request] = {}
        self._classes: dict[tuple[Any, ...], _Class] = {}
        # Ready classes (unpinned, free of their total limit; each also says so, ``ready``), in two indexes:
        # those that fit any node are a heap of (head seq, class: hashing its key cost 40 ns, measured),
        # checked lazily; only the constrained ones (node pin, labels, per-node limit) are scanned.
        self._ready: dict[tuple[Any, ...], None] = {}
        self._ready_any: list[tuple[int, _Class]] = []
        self._ready_constrained: dict[tuple[Any, ...], None] = {}
        self._pinned: dict[str, dict[tuple[Any, ...], None]] = {}  # agent -> classes pinned to it
        self._parked: dict[JobKey, dict[tuple[Any, ...], None]] = {}  # key -> classes at its total
        self._free: dict[frozenset[str], dict[str, None]] = {frozenset(): {}}
        self._matches = Matches()  # is there a node for a node pin and labels at all
        self._seq = itertools.count(1)

    # -- nodes and agents ---------------------------------------------------------------

    def add_node(self, name: str, labels: frozenset[str]) -> None:
        self.nodes[name] = _Node(name, labels)
        self._matches.added(name, labels)

    def add_agent(self, node_name: str, agent_name: str) -> list[Grant]:
        node = self.nodes[node_name]
        agent = _Agent(agent_name, node)
        node.agents[agent_name] = agent
        self.agents[agent_name] = agent
        self._set_idle(agent)
        grants: list[Grant] = []
        self._serve_node(node, grants)
        return grants

    def adopt(self, node_name: str, agent_name: str, request: Request) -> Grant:
        """A new agent of ``node_name`` that already runs ``request`` (a remote one, after a restart):
        it joins busy, holding its slots (beyond the limits, as a running build's group slot is)."""
        node = self.nodes[node_name]
        agent = self.agents[agent_name] = node.agents[agent_name] = _Agent(agent_name, node)
        request.seq = next(self._seq)
        return self._grant(request, agent)

    def set_labels(self, name: str, labels: frozenset[str]) -> list[Grant]:
        """New labels for ``name``: waiting jobs that fit now get its idle agents; running ones go on."""
        node = self.nodes[name]
        self._matches.removed(name, node.labels)
        node.labels = labels
        self._matches.added(name, labels)
        for wanted, index in self._free.items():
            index.pop(name, None)
            if node.idle and not node.draining and wanted <= labels:
                index[name] = None
        grants: list[Grant] = []
        self._serve_node(node, grants)
        return grants

    def resize(self, name: str, count: int) -> list[str]:
        """Ask for ``count`` agents; returns idle ones to retire now. Busy ones past it (or held by a lock
        chain) retire once free (``retirable``); the caller adds agents while ``wants_agent``."""
        node = self.nodes[name]
        node.want = count
        return list(reversed(node.idle))[: max(0, len(node.agents) - count)]

    def retirable(self, agent_name: str) -> bool:
        """Free (no job, no lock) on a node that has more agents than it wants."""
        agent = self.agents.get(agent_name)
        return agent is not None and agent.held is None and agent.locked_by is None and agent.node.surplus

    def wants_agent(self, name: str) -> bool:
        node = self.nodes[name]
        return not node.draining and (node.want is None or len(node.agents) < node.want)

    def drain_node(self, name: str) -> list[str]:
        """Stop placing on ``name``; returns its agents that are idle now (to retire)."""
        node = self.nodes[name]
        node.draining = True
        self._matches.removed(name, node.labels)
        for index in self._free.values():
            index.pop(name, None)
        return [a.name for a in node.agents.values() if a.held is None]

    def remove_agent(self, agent_name: str) -> tuple[Request | None, list[Grant]]:
        """Forget an agent (lost, crashed or retired); returns what it held and new grants."""
        agent = self.agents.pop(agent_name)
        node = agent.node
        del node.agents[agent_name]
        node.idle.pop(agent_name, None)
        if not node.idle:
            for index in self._free.values():
                index.pop(node.name, None)
        held = agent.held
        grants: list[Grant] = []
        if held is not None:
            self._release_slots(agent, held, grants)
        return held, grants

    def remove_node_if_empty(self, name: str) -> bool:
        node = self.nodes.get(name)
        if node is not None and not node.agents:
            del self.nodes[name]
            return True
        return False

    # -- requests -----------------------------------------------------------------------

    def request(self, request: Request) -> Grant | None:
        """Grant at once if possible (and nobody with the same constraints waits)."""
        request.seq = next(self._seq)
        class_key = request.class_key or request.constraints()
        cls = self._classes.get(class_key)
        if cls is None:
            agent = self._find(request)
            if agent is not None:
                return self._grant(request, agent)
            request.class_key = class_key
            cls = self._classes[class_key] = _Class(class_key, request)
            self._register_labels(request.labels)
            self._enlist(cls)
        else:
            # Share the class's key tuples: a waiting request then keeps no tuples of its own for the
            # garbage collector to scan (thousands wait in a busy pool).
            request.class_key = cls.key
            request.key = cls.key[0]
            cls.requests.append(request)
        self.waiting[request.token] = request
        return None

    def _enlist(self, cls: _Class) -> None:
        """File a class under the index that will wake it: its key's total, its agent, or ready."""
        head = cls.head
        if head.total is not None and self.total.get(head.key, 0) >= head.total:
            self._parked.setdefault(head.key, {})[cls.key] = None
        elif head.agent_pin is not None:
            self._pinned.setdefault(head.agent_pin, {})[cls.key] = None
        else:
            self._make_ready(cls)

    def _make_ready(self, cls: _Class) -> None:
        self._ready[cls.key] = None
        cls.ready = True
        if cls.any_node:
            heapq.heappush(self._ready_any, (cls.head.seq, cls))
        else:
            self._ready_constrained[cls.key] = None

    def _unready(self, cls: _Class) -> None:
        self._ready.pop(cls.key, None)  # a heap entry left behind is skipped when it surfaces
        cls.ready = False
        self._ready_constrained.pop(cls.key, None)

    def withdraw(self, token: Hashable) -> Request | None:
        """Remove a waiting request (cancel, timeout); None if it is not waiting."""
        request = self.waiting.get(token)
        if request is None:
            return None
        self._take(self._classes[request.class_key], request)
        return request

    def release(self, token: Hashable) -> tuple[Request | None, list[Grant]]:
        """The attempt ended: free its agent and slots; returns what it held and new grants."""
        agent = self.granted.get(token)
        return (None, []) if agent is None else (agent.held, self.release_agent(agent))

    def release_agent(self, agent: _Agent) -> list[Grant]:
        """``release`` for the agent (in ``granted``) of the attempt that ended: the pool has it at hand."""
        held = agent.held
        assert held is not None
        grants: list[Grant] = []
        self._release_slots(agent, held, grants)
        if self._pinned:
            self._serve_pinned(agent, grants)  # a lock chain's next job first
        node = agent.node
        if agent.held is None and agent.locked_by is None and not node.draining and (node.want is None
                                                                                    or not node.surplus):
            self._freed(agent, grants)
        return grants

    def relock(self, build_id: str, agent_name: str) -> bool:
        """After a restart: ``build_id``'s lock chain holds ``agent_name`` again, so no other build's job
        takes it while it is idle. False when the agent is gone or another build's chain holds it."""
        agent = self.agents.get(agent_name)
        if agent is None or agent.locked_by not in (None, build_id):
            return False
        agent.locked_by = build_id
        node = agent.node
        if agent_name in node.idle:  # no longer free for others
            del node.idle[agent_name]
            if not node.idle:
                for index in self._free.values():
                    index.pop(node.name, None)
        return True

    def unlock(self, build_id: str, agent_name: str) -> list[Grant]:
        """The build's lock chain on this agent is over: others may use it."""
        agent = self.agents.get(agent_name)
        if agent is None or agent.locked_by != build_id:
            return []
        agent.locked_by = None
        grants: list[Grant] = []
        if agent.held is None and not agent.node.draining:
            self._serve_pinned(agent, grants)
            if agent.held is None and not agent.node.surplus:
                self._freed(agent, grants)
        return grants

    # -- introspection -----------------------------------------------------------------------

    def has_match(self, request: Request) -> bool:
        """Whether any node that is not draining could ever run ``request`` (node pin
        and labels); always True for one pinned to an agent. O(1) between node changes."""
        return request.agent_pin is not None or self._matches.exists(
            (request.node_pin, request.labels), self.nodes.values())

    def unmatched(self) -> set[tuple[Any, ...]]:
        """The classes of waiting requests that no node could run now (see ``has_match``)."""
        return {key for key, cls in self._classes.items() if not self.has_match(cls.head)}

    def waiting_in(self, class_key: tuple[Any, ...]) -> list[Request]:
        """The requests waiting in one class (none if it has gone), oldest first."""
        cls = self._classes.get(class_key)
        return list(cls.requests.values()) if cls is not None else []

    def why_waiting(self, request: Request) -> str:
        """What holds ``request``: no node matches, or the words `total`, `per-node`, `no free agent`, `agent`."""
        if not self.has_match(request):
            nodes = {node.name: node.labels for node in self.nodes.values() if not node.draining}
            return no_node_reason(self.pool, request.node_pin, request.labels, nodes) or "no node matches"
        job = f"{request.key[0]}/{request.key[1]}"
        if request.total is not None and self.total.get(request.key, 0) >= request.total:
            return f"concurrency-limit-total {request.total} reached for {job} ({self.total[request.key]} running)"
        if request.agent_pin is not None:
            agent = self.agents.get(request.agent_pin)
            if agent is None:
                return f"agent {request.agent_pin} (lock-resource-with) is gone"
            if agent.locked_by not in (None, request.build_id):
                return f"agent {request.agent_pin} (lock-resource-with) is locked by build {agent.locked_by}"
            return f"agent {request.agent_pin} (lock-resource-with) is busy"
        matching = [node for node in self.nodes.values() if self._node_fits(node, request)]
        if request.per_node is not None and all(n.running.get(request.key, 0) >= request.per_node for n in matching):
            return f"concurrency-limit-per-node {request.per_node} reached for {job} on every matching node"
        return f"no free agent on {len(matching)} matching node(s)" + constraints(request.node_pin, request.labels)

    def pinned_to(self, agent_name: str) -> list[Request]:
        """Waiting requests that can only run on ``agent_name``."""
        # Rare (an agent was lost): scanning the classes is fine; parked ones count too.
        return [r for cls in self._classes.values() if cls.key[3] == agent_name for r in cls.requests.values()]

    def agents_locked(self) -> int:
        return sum(1 for agent in self.agents.values() if agent.locked_by is not None)

    def iter_agents(self, node: str) -> Iterator[tuple[str, Request | None, str | None]]:
        for agent in self.nodes[node].agents.values():
            yield agent.name, agent.held, agent.locked_by

    # -- internals ---------------------------------------------------------------------------

    def _node_fits(self, node: _Node, request: Request) -> bool:
        if node.draining or (request.node_pin is not None and node.name != request.node_pin):
            return False
        return request.labels <= node.labels

    def _find(self, request: Request) -> _Agent | None:
        if request.total is not None and self.total.get(request.key, 0) >= request.total:
            return None
        if request.agent_pin is not None:
            agent = self.agents.get(request.agent_pin)
            if agent is None or agent.held is not None or agent.node.draining:
                return None
            if agent.locked_by not in (None, request.build_id):
                return None
            if request.per_node is not None and agent.node.running.get(request.key, 0) >= request.per_node:
                return None
            return agent
        if request.node_pin is not None:
            node = self.nodes.get(request.node_pin)
            candidates: Any = (request.node_pin,) if node is not None and node.idle else ()
        else:
            candidates = self._free.get(request.labels)
            if candidates is None:
                self._register_labels(request.labels)
                candidates = self._free[request.labels]
        for name in candidates:
            node = self.nodes[name]
            if not self._node_fits(node, request) or not node.idle:
                continue
            if request.per_node is not None and node.running.get(request.key, 0) >= request.per_node:
                continue  # saturated for this key: at most running/per_node such nodes
            return node.agents[next(iter(node.idle))]
        return None

    def _grant(self, request: Request, agent: _Agent) -> Grant:
        node = agent.node
        idle = node.idle
        # Popped (a value None, not the default 0) and the node's last idle agent: the node is no longer free.
        if idle and idle.pop(agent.name, 0) is None and not idle:
            for index in self._free.values():
                index.pop(node.name, None)
        agent.held = request
        if request.lock:
            agent.locked_by = request.build_id
        key = request.key
        node.running[key] = node.running.get(key, 0) + 1
        self.total[key] = self.total.get(key, 0) + 1
        self.granted[request.token] = agent
        return Grant(request, node.name, agent.name)

    def _release_slots(self, agent: _Agent, held: Request, grants: list[Grant]) -> None:
        """Give back what ``held`` took; classes parked at its key's total may go again (into ``grants``)."""
        del self.granted[held.token]
        agent.held = None
        key = held.key
        running = agent.node.running
        count = running[key] - 1
        if count:
            running[key] = count
        else:
            running.pop(key)
        count = self.total[key] - 1
        if count:
            self.total[key] = count
        else:
            self.total.pop(key)
        if key in self._parked:
            self._unpark(key, grants)

    def _set_idle(self, agent: _Agent) -> None:
        node = agent.node
        node.idle[agent.name] = None
        if len(node.idle) == 1 and not node.draining:
            for labels, index in self._free.items():
                if labels <= node.labels:
                    index[node.name] = None

    def _register_labels(self, labels: frozenset[str]) -> None:
        if labels not in self._free:
            self._free[labels] = {
                n.name: None for n in self.nodes.values() if n.idle and not n.draining and labels <= n.labels
            }

    def _unpark(self, key: JobKey, grants: list[Grant]) -> None:
        """A slot of ``key`` freed: its parked classes may go again."""
        parked = self._parked.pop(key)
        for class_key in parked:
            cls = self._classes.get(class_key)
            if cls is None:
                continue
            while cls.key in self._classes:
                agent = self._find(cls.head)
                if agent is None:
                    break
                head = cls.head
                self._take(cls, head)
                grants.append(self._grant(head, agent))
            if cls.key in self._classes:
                self._enlist(cls)

    def _freed(self, agent: _Agent, grants: list[Grant]) -> None:
        """``agent`` (not draining, unlocked, wanted) is free: to the oldest waiting head that fits, else idle."""
        node = agent.node
        if node.idle:
            self._set_idle(agent)
            if self._ready:  # else nothing waits that could go (the usual release with one client)
                self._serve_node(node, grants)
            return
        # Its node's only idle agent: what ``_set_idle`` then ``_serve_node`` would do, without putting it
        # in the idle indexes to take it out again (the usual release under load).
        best = self._best_for(node)
        if best is None:
            self._set_idle(agent)
            return
        head = best.head
        self._take(best, head)
        grants.append(self._grant(head, agent))

    def _serve_node(self, node: _Node, grants: list[Grant]) -> None:
        """Give ``node``'s idle agents to the oldest waiting heads that fit there."""
        while node.idle and not node.draining:
            best = self._best_for(node)
            if best is None:
                break
            head = best.head
            self._take(best, head)
            grants.append(self._grant(head, node.agents[next(iter(node.idle))]))

    def _best_for(self, node: _Node) -> _Class | None:
        """The ready class with the oldest head that may run on ``node`` now; those found at their key's
        total on the way are parked."""
        heap, ready = self._ready_any, self._ready
        while ready:
            best = None
            while heap:  # the ready any-node class with the oldest head, dropping stale entries
                seq, cls = heap[0]
                if cls.ready and cls.head.seq == seq:  # a class dropped or parked is not ready
                    best = cls
                    break
                heapq.heappop(heap)
            for class_key in self._ready_constrained:
                cls = self._classes[class_key]
                head = cls.head
                if not self._node_fits(node, head):
                    continue
                if head.per_node is not None and node.running.get(head.key, 0) >= head.per_node:
                    continue
                if best is None or head.seq < best.head.seq:
                    best = cls
            if best is None:
                return None
            head = best.head
            if head.total is not None and self.total.get(head.key, 0) >= head.total:
                self._unready(best)
                self._parked.setdefault(head.key, {})[best.key] = None
                continue
            return best
        return None

    def _serve_pinned(self, agent: _Agent, grants: list[Grant]) -> None:
        """The oldest request pinned to ``agent`` (lock-resource-with) that can go now."""
        pinned = self._pinned.get(agent.name)
        if not pinned or agent.held is not None:
            return
        best: _Class | None = None
        for class_key in pinned:
            cls = self._classes[class_key]
            if (best is None or cls.head.seq < best.head.seq) and self._find(cls.head) is agent:
                best = cls
        if best is None:
            return
        head = best.head
        self._take(best, head)
        grants.append(self._grant(head, agent))

    def _take(self, cls: _Class, request: Request) -> None:
        del self.waiting[request.token]
        if cls.head is not request:
            cls.requests.pop(request.token)
            return  # the head still waits: the class is not empty and keeps its place
        head = cls.requests.pop_head(request)
        if head is None:
            self._drop_class(cls)
            return
        cls.head = head
        if cls.any_node and cls.ready:
            heap = self._ready_any
            if heap and heap[0][0] == request.seq:
                # The old head's entry is on top (it was just served): replace it rather than leave it
                # to be popped as stale by ``_best_for``.
                heapq.heapreplace(heap, (cls.head.seq, cls))
            else:
                heapq.heappush(heap, (cls.head.seq, cls))

    def _drop_class(self, cls: _Class) -> None:
        del self._classes[cls.key]
        self._unready(cls)
        key, agent_pin = cls.key[0], cls.key[3]
        for index, name in ((self._parked, key), (self._pinned, agent_pin)):
            members = index.get(name)
            if members is not None:
                members.pop(cls.key, None)
                if not members:
                    del index[name]
