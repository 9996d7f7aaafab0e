"""The dispatcher: grants agents to job attempts, FIFO per pool.

It owns the nodes and their agent actors (as its children). A job request
names a pool and optionally a node and labels; the first idle agent that
matches gets it, or the request waits in its pool's FIFO queue until an
agent frees up or its ``queue-timeout-minutes`` runs out. An agent is granted
to exactly one attempt at a time, and is only free again when it says so
(``AgentIdle``) or when it crashed (the supervision hook hands its attempt
back as failed).

This is the simple dispatcher of the pipelines issue; per-node and total job
limits, heartbeats and agent reuse locks build on the same messages.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from .actions import ActionRegistry
from .agent import AgentActor
from .core import Actor, Ref, Supervision, TimerHandle
from .errors import Conflict, InvalidRequest, NotFound
from .messages import AgentIdle, AgentReport, CancelJob, JobEnded, JobRequest, JobToken, RunJob, Withdraw

__all__ = ["Dispatcher", "AddNode", "RemoveNode", "ListNodes", "DispatchStats", "NodeInfo", "AgentInfo"]


class AddNode(msgspec.Struct, frozen=True):
    name: str
    pool: str = "default"
    agents: int = 1
    labels: tuple[str, ...] = ()


class RemoveNode(msgspec.Struct, frozen=True):
    name: str


class ListNodes(msgspec.Struct, frozen=True):
    pass


class DispatchStats(msgspec.Struct, frozen=True):
    pass


class JobQueueTimeout(msgspec.Struct, frozen=True):
    token: JobToken


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    status: str  # idle | busy | draining
    job: str | None = None


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    pool: str
    labels: list[str]
    draining: bool
    agents: list[AgentInfo]


class _Node:
    __slots__ = ("name", "pool", "labels", "agents", "draining")

    def __init__(self, name: str, pool: str, labels: tuple[str, ...]) -> None:
        self.name = name
        self.pool = pool
        self.labels = frozenset(labels)
        self.agents: list[str] = []
        self.draining = False


class _Agent:
    __slots__ = ("name", "node", "ref", "token", "pipeline")

    def __init__(self, name: str, node: _Node, ref: Ref) -> None:
        self.name = name
        self.node = node
        self.ref = ref
        self.token: JobToken | None = None  # the attempt it is granted to
        self.pipeline: Ref | None = None  # whom that attempt reports to


class _Waiting:
    __slots__ = ("request", "timer", "since")

    def __init__(self, request: JobRequest, timer: TimerHandle, since: float) -> None:
        self.request = request
        self.timer = timer
        self.since = since


class Dispatcher(Actor):
    """See the module docstring."""

    def __init__(
        self,
        *,
        workdir: Path,
        actions: ActionRegistry,
        nodes: list[AddNode],
        kill_grace: float = 5.0,
    ) -> None:
        self.workdir = workdir
        self.actions = actions
        self.initial_nodes = nodes
        self.kill_grace = kill_grace
        self.nodes: dict[str, _Node] = {}
        self.agents: dict[str, _Agent] = {}
        self.by_ref: dict[str, _Agent] = {}  # agent actor name -> agent
        self.idle: dict[str, dict[str, None]] = {}  # pool -> idle agent names (ordered set)
        self.waiting: dict[str, dict[JobToken, _Waiting]] = {}  # pool -> FIFO of requests
        self.granted: dict[JobToken, _Agent] = {}

    async def started(self) -> None:
        for node in self.initial_nodes:
            self._add_node(node)

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is JobRequest:
            self._request(message)
        elif kind is AgentIdle:
            self._agent_idle(message)
        elif kind is Withdraw:
            self._withdraw(message)
        elif kind is JobQueueTimeout:
            self._queue_timeout(message.token)
        elif kind is AddNode:
            return self._add_node(message)
        elif kind is RemoveNode:
            return self._remove_node(message.name)
        elif kind is ListNodes:
            return [self._node_info(node) for node in self.nodes.values()]
        elif kind is DispatchStats:
            busy = sum(1 for agent in self.agents.values() if agent.token is not None)
            queued = sum(len(queue) for queue in self.waiting.values())
            return {"agents": len(self.agents), "agents_busy": busy, "jobs_queued": queued,
                    "jobs_running": len(self.granted), "slots_held": len(self.granted)}  # fmt: skip
        else:
            raise TypeError(f"dispatcher got an unexpected {kind.__name__}")
        return None

    # -- requests -----------------------------------------------------------------

    def _request(self, request: JobRequest) -> None:
        pool = request.runs_on.pool_name
        agent = self._idle_agent_for(request)
        if agent is not None:
            self._grant(request, agent)
            return
        timeout = request.runs_on.queue_timeout_minutes * 60
        timer = self.send_after(timeout, JobQueueTimeout(request.token))
        self.waiting.setdefault(pool, {})[request.token] = _Waiting(request, timer, self.now())

    def _idle_agent_for(self, request: JobRequest) -> _Agent | None:
        for name in self.idle.get(request.runs_on.pool_name, ()):
            agent = self.agents[name]
            if _matches(agent.node, request):
                return agent
        return None

    def _grant(self, request: JobRequest, agent: _Agent) -> None:
        del self.idle[agent.node.pool][agent.name]
        agent.token = request.token
        agent.pipeline = request.pipeline
        self.granted[request.token] = agent
        agent.ref.tell(RunJob(request.token, request.pipeline, request.payload))

    def _agent_idle(self, message: AgentIdle) -> None:
        agent = self.agents.get(message.agent)
        if agent is None or agent.token != message.token:
            return  # stale: the attempt was already handed back
        self._free(agent)

    def _free(self, agent: _Agent) -> None:
        if agent.token is not None:
            self.granted.pop(agent.token, None)
            agent.token = agent.pipeline = None
        node = agent.node
        if node.draining:
            self._retire(agent)
            return
        queue = self.waiting.get(node.pool)
        if queue:
            for token, waiting in queue.items():
                if _matches(node, waiting.request):
                    del queue[token]
                    waiting.timer.cancel()
                    self.idle[node.pool][agent.name] = None
                    self._grant(waiting.request, agent)
                    return
        self.idle.setdefault(node.pool, {})[agent.name] = None

    def _withdraw(self, message: Withdraw) -> None:
        for queue in self.waiting.values():
            waiting = queue.pop(message.token, None)
            if waiting is not None:
                waiting.timer.cancel()
                _report_end(waiting.request, "CANCELED", message.reason)
                return
        agent = self.granted.get(message.token)
        if agent is not None:
            agent.ref.tell(CancelJob(message.token, message.reason))

    def _queue_timeout(self, token: JobToken) -> None:
        for pool, queue in self.waiting.items():
            waiting = queue.pop(token, None)
            if waiting is None:
                continue
            request = waiting.request
            waited = (self.now() - waiting.since) / 60
            if not any(_matches(node, request) for node in self.nodes.values() if node.pool == pool):
                held = f"no node in pool {pool!r} matches{_constraints(request)}"
            else:
                held = f"no free agent in pool {pool!r}{_constraints(request)}"
            _report_end(request, "QUEUE_TIMEOUT", f"waited {waited:g} minute(s) for an agent: {held}")
            return

    # -- nodes --------------------------------------------------------------------

    def _add_node(self, spec: AddNode) -> NodeInfo:
        if spec.name in self.nodes:
            raise Conflict(f"node {spec.name!r} already exists")
        if spec.agents < 1:
            raise InvalidRequest(f"node {spec.name!r}: agents must be >= 1")
        node = _Node(spec.name, spec.pool, spec.labels)
        self.nodes[spec.name] = node
        self.idle.setdefault(spec.pool, {})
        for index in range(spec.agents):
            label = f"{spec.name}/{index}"
            ref = self.spawn(
                self._agent_factory(spec.name, label, self.workdir / spec.name / str(index)),
                name=f"agent:{label}",
                supervision=Supervision(max_restarts=10, within=60, escalate=False),
            )
            agent = _Agent(label, node, ref)
            node.agents.append(label)
            self.agents[label] = agent
            self.by_ref[ref.name] = agent
            self._free(agent)
        return self._node_info(node)

    def _agent_factory(self, node: str, label: str, workspace: Path) -> Any:
        def factory() -> AgentActor:
            return AgentActor(node=node, agent=label, workspace=workspace, dispatcher=self.ref,
                              actions=self.actions, kill_grace=self.kill_grace)  # fmt: skip

        return factory

    def _remove_node(self, name: str) -> NodeInfo:
        node = self.nodes.get(name)
        if node is None:
            raise NotFound(f"no node named {name!r}")
        node.draining = True
        for label in list(node.agents):
            agent = self.agents[label]
            if agent.token is None:
                self.idle[node.pool].pop(label, None)
                self._retire(agent)
        return self._node_info(node)

    def _retire(self, agent: _Agent) -> None:
        node = agent.node
        node.agents.remove(agent.name)
        del self.agents[agent.name]
        del self.by_ref[agent.ref.name]
        self.system.stop_nowait(agent.ref)
        if not node.agents:
            del self.nodes[node.name]

    def _node_info(self, node: _Node) -> NodeInfo:
        agents = []
        for label in node.agents:
            agent = self.agents[label]
            status = "busy" if agent.token is not None else ("draining" if node.draining else "idle")
            agents.append(AgentInfo(name=label, status=status, job=str(agent.token) if agent.token else None))
        return NodeInfo(name=node.name, pool=node.pool, labels=sorted(node.labels), draining=node.draining,
                        agents=agents)  # fmt: skip

    # -- supervision ------------------------------------------------------------------

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        """A crashed agent's attempt is over: report it failed, then free or retire the agent."""
        agent = self.by_ref.get(child.name)
        if agent is None:
            return
        if agent.token is not None and agent.pipeline is not None:
            reason = f"agent {agent.name} crashed: {error!r}"
            agent.pipeline.tell(AgentReport(agent.token, (JobEnded("FAILED", reason, time.time()),)))
        if restarting:
            self._free(agent)
        else:
            if agent.token is not None:
                self.granted.pop(agent.token, None)
                agent.token = None
            self._retire(agent)


def _matches(node: _Node, request: JobRequest) -> bool:
    runs_on = request.runs_on
    if node.draining:
        return False
    if runs_on.node_name is not None and node.name != runs_on.node_name:
        return False
    return not runs_on.labels or node.labels.issuperset(runs_on.labels)


def _constraints(request: JobRequest) -> str:
    parts = []
    if request.runs_on.node_name:
        parts.append(f"node-name {request.runs_on.node_name}")
    if request.runs_on.labels:
        parts.append(f"labels {', '.join(request.runs_on.labels)}")
    return f" ({'; '.join(parts)})" if parts else ""


def _report_end(request: JobRequest, status: str, reason: str) -> None:
    request.pipeline.tell(AgentReport(request.token, (JobEnded(status, reason, time.time()),)))
