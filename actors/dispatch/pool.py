"""A pool: its nodes, their agents, and the jobs waiting for them.

The pool actor is the single place where a job attempt gets its total slot,
its node slot and its agent — together, in one handler, from the pure
``Placement`` index — so a grant is all or nothing by construction. It then
tells the agent to run; the agent reports to the pipeline and, when done,
tells the pool it is idle, which frees all three. If the agent is lost
instead (crash, heartbeat timeout), the pool ends the attempt with a reason
and gives everything back; late messages of the old attempt are dropped by
token, here and in the pipeline. An attempt the pool ends itself (lost
agent, withdrawn or timed out while waiting) is told to the pipeline as an
``EndJob``, never dressed up as a report from an agent.

The queue timeouts of the waiting attempts share one timer (``expiry.py``).
Heartbeats take one timer per pool: every ``heartbeat_interval`` the pool
ends what the agents silent past the timeout held (``heartbeat.py``).

Nodes joining, draining and leaving, and agents lost and replaced, are
published to the event hub as ``node`` events (``NodeChange``), each
handled message's in one ``Publish``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec

from ..execution.actions import ActionRegistry
from ..execution.secrets import Secrets
from ..execution.agent import AgentActor
from ..core import Actor, Ref, Supervision
from ..events import Publish, Record
from ..names import Names
from ..model.errors import Conflict, InvalidRequest, NotFound
from ..model.messages import (
    AgentIdle,
    AgentLost,
    CancelJob,
    EndJob,
    Fault,
    JobRequest,
    JobToken,
    JobWaiting,
    Retire,
    RunJob,
    Relock,
    Unlock,
    Withdraw,
)
from ..model.info import AgentInfo, NodeInfo, WaitingJob, rfc3339
from ..model.vocab import AgentStatus, EventKind, FaultKind, JobStatus, NodeChange
from .expiry import QueueTimeouts
from .heartbeat import HeartbeatWatch
from .node import NodeActor
from . import remote
from .placement import Grant, Placement, Request

__all__ = ["PoolActor", "AddNode", "UpdateNode", "RemoveNode", "HasNode", "ListNodes", "PoolStats", "ListWaiting",
           "InjectFault"]

# An agent crash is reported and the agent replaced under a new name (its
# workspace and context cannot be trusted), never restarted in place.
_AGENT_SUPERVISION = Supervision(max_restarts=0, escalate=False)


class AddNode(msgspec.Struct, frozen=True):
    name: str
    pool: str = "default"
    agents: int = 1
    labels: tuple[str, ...] = ()
    remote: bool = False  # a ``shunter agent`` process brings the agents; its actions are in labels (``remote.py``)


class UpdateNode(msgspec.Struct, frozen=True):
    """Change a node's agent count and/or labels (None keeps them); ``pool``, if given, must be its own."""

    name: str
    agents: int | None = None
    labels: tuple[str, ...] | None = None
    pool: str | None = None


class RemoveNode(msgspec.Struct, frozen=True):
    name: str


class ListNodes(msgspec.Struct, frozen=True):
    pass


class PoolStats(msgspec.Struct, frozen=True):
    pass


class ListWaiting(msgspec.Struct, frozen=True):
    pass


class HasNode(msgspec.Struct, frozen=True):
    name: str


class InjectFault(msgspec.Struct, frozen=True):
    agent: str
    kind: FaultKind


class _QueueTimeouts(msgspec.Struct, frozen=True):
    pass


_QUEUE_TIMEOUTS = _QueueTimeouts()


class _CheckHeartbeats(msgspec.Struct, frozen=True):
    pass


_CHECK_HEARTBEATS = _CheckHeartbeats()


class PoolActor(Actor):
    """See the module docstring."""

    def __init__(
        self,
        *,
        pool: str,
        workdir: Path,
        actions: ActionRegistry,
        heartbeat_interval: float = 5.0,
        heartbeat_timeout: float = 30.0,
        kill_grace: float = 5.0,
        secrets: Secrets | None = None,
        hub: Ref | None = None,
    ) -> None:
        self.pool = pool
        self.workdir = workdir
        self.actions = actions
        self.secrets = secrets if secrets is not None else Secrets()  # handed to each agent
        self.heartbeat_interval = heartbeat_interval
        self.heartbeats = HeartbeatWatch(heartbeat_timeout)
        self.kill_grace = kill_grace
        self.placement = Placement(pool)
        self.job_labels = remote.JobLabels(actions)
        self.nodes: dict[str, Ref] = {}
        self.agents: dict[str, Ref] = {}
        self.next_agent: dict[str, int] = {}
        self.timeouts = QueueTimeouts(self.placement.waiting, lambda deadline: self.send_at(deadline, _QUEUE_TIMEOUTS))
        self.lost = 0
        self.hub = hub  # where its node events go (none: not published)
        self.outbox: list[Record] = []  # the events of the message being handled
        self.remote: dict[str, remote.RemoteState] = {}  # remote nodes' connection state
        self.names = Names(self)  # a job names its pipeline's actor (``actors/names.py``)

    async def started(self) -> None:
        self.send_after(self.heartbeat_interval, _CHECK_HEARTBEATS)

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is JobRequest:
            self._request(message)
        elif kind is AgentIdle:
            self._idle(message)
        elif kind is Withdraw:
            self._withdraw(message)
        elif kind is _QueueTimeouts:
            for request in self.timeouts.due(self.now()):
                self._queue_timeout(request)
        elif kind is Relock:
            self.placement.relock(message.build_id, message.agent)
        elif kind is Unlock:
            self._run_all(self.placement.unlock(message.build_id, message.agent))
            if self.placement.retirable(message.agent):
                self._retire(message.agent)
        elif kind is AgentLost:
            self._lost(message)
        elif kind is _CheckHeartbeats:
            self._check_heartbeats()
            self.send_after(self.heartbeat_interval, _CHECK_HEARTBEATS)
        elif kind is AddNode:
            return self._add_node(message)
        elif kind is UpdateNode:
            return self._update_node(message)
        elif kind is RemoveNode:
            return self._remove_node(message.name)
        elif kind is HasNode:
            return message.name in self.nodes
        elif kind is ListNodes:
            return [self._node_info(name) for name in self.placement.nodes]
        elif kind is PoolStats:
            return self._stats()
        elif kind is ListWaiting:
            return self._waiting()
        elif kind is InjectFault:
            self._inject(message)
        elif kind in remote.MESSAGES:
            remote.handle(self, message)
        else:
            raise TypeError(f"pool {self.pool!r} got an unexpected {kind.__name__}")
        if self.outbox:
            self._publish()
        return None

    # -- requests -----------------------------------------------------------------------

    def _request(self, message: JobRequest) -> None:
        token, runs_on, agent = message.token, message.runs_on, message.agent
        key = (message.payload.pipeline_id, token.job_id)
        labels, class_key = self.job_labels.of(key, message.payload.job, runs_on)  # its actions' too (matching.py)
        if agent is not None and (problem := remote.pin_problem(self, agent, labels)):
            self._end(message, JobStatus.FAILED, problem)  # the lock chain's agent is gone, or cannot run an action
            return
        # Positional: this runs for every attempt (the order of ``Request``'s parameters). ``since`` and
        # ``deadline`` are set only if it waits: only a waiting request uses them (no clock read otherwise).
        request = Request(token, token.build_id, class_key[0], runs_on.node_name, labels, agent, message.lock,
                          runs_on.concurrency_limit_per_node, runs_on.concurrency_limit_total, 0.0, 0.0, message, 0,
                          class_key if agent is None else ())  # fmt: skip
        grant = self.placement.request(request)
        if grant is not None:  # ``_run`` without its ``timeouts.left``: this request never waited
            self.agents[grant.agent].tell(RunJob(token, message.pipeline, message.payload))
            return
        request.since = since = self.now()
        request.deadline = since + runs_on.queue_timeout_minutes * 60
        self.timeouts.add(request)
        if not self.placement.has_match(request):  # say so now, not only at the timeout
            self.names.tell(message.pipeline, JobWaiting(token, self.placement.why_waiting(request)))

    def _run(self, grant: Grant) -> None:
        message: JobRequest = grant.request.data
        self.timeouts.left(grant.request)
        self.agents[grant.agent].tell(RunJob(message.token, message.pipeline, message.payload))

    def _run_all(self, grants: list[Grant]) -> None:
        for grant in grants:
            self._run(grant)

    def _idle(self, message: AgentIdle) -> None:
        agent = self.placement.granted.get(message.token)
        if agent is None or agent.name != message.agent:
            return  # stale: that attempt was already handed back (agent lost)
        node = agent.node
        agents, timeouts = self.agents, self.timeouts
        for grant in self.placement.release_agent(agent):  # ``_run``, inline: once per build under load
            request: JobRequest = grant.request.data
            timeouts.left(grant.request)
            agents[grant.agent].tell(RunJob(request.token, request.pipeline, request.payload))
        # Only a resized node (``want`` set) has agents to spare: most releases skip the question.
        if node.draining or (node.want is not None and self.placement.retirable(message.agent)):
            self._retire(message.agent)

    def _withdraw(self, message: Withdraw) -> None:
        request = self.placement.withdraw(message.token)
        if request is not None:
            self.timeouts.left(request)
            self._end(request.data, JobStatus.CANCELED, message.reason)
            return
        agent = self.placement.granted.get(message.token)
        if agent is not None:
            self.agents[agent.name].tell(CancelJob(message.token, message.reason))

    def _queue_timeout(self, request: Request) -> None:
        reason = self.placement.why_waiting(request)
        self.placement.withdraw(request.token)
        self.timeouts.left(request)
        waited = (self.now() - request.since) / 60
        self._end(request.data, JobStatus.QUEUE_TIMEOUT, f"waited {waited:g} minute(s) in pool {self.pool!r}: {reason}")

    # -- nodes and agents -------------------------------------------------------------------

    def _add_node(self, spec: AddNode) -> NodeInfo:
        if spec.name in self.nodes:
            raise Conflict(f"node {spec.name!r} already exists in pool {self.pool!r}")
        if spec.agents < 1:
            raise InvalidRequest(f"node {spec.name!r}: agents must be >= 1, got {spec.agents}")
        node_ref = remote.spawn_node(self, spec.name) if spec.remote else self.spawn(
            lambda: NodeActor(node=spec.name, pool=self.ref), name=f"node:{spec.name}")
        self.nodes[spec.name] = node_ref
        unmatched = self.placement.unmatched()
        self.placement.add_node(spec.name, remote.node_labels(self, spec.labels, spec.remote))
        self.next_agent[spec.name] = 0
        agents = [self._spawn_agent(spec.name) for _ in range(0 if spec.remote else spec.agents)]  # remote: later
        self._tell_match_changes(unmatched)
        self._event(NodeChange.ADDED, spec.name, agents=agents, labels=remote.user_labels(spec.labels),
                    kind="remote" if spec.remote else "local")  # fmt: skip
        self._publish()
        return self._node_info(spec.name)

    def _update_node(self, change: UpdateNode) -> NodeInfo:
        """New labels place waiting jobs at once; fewer agents retire idle ones now and busy ones when free."""
        name = change.name
        if name not in self.nodes:
            raise NotFound(f"no node {name!r} in pool {self.pool!r}")
        if change.pool is not None and change.pool != self.pool:
            raise Conflict(f"node {name!r} is in pool {self.pool!r}, not {change.pool!r}: a node cannot move "
                           "between pools (delete it, then add it to the other pool)")  # fmt: skip
        if self.placement.nodes[name].draining:
            raise Conflict(f"node {name!r} is draining (it was deleted); add it again once it has left")
        remote.check_update(self, name, change.agents, change.labels)
        if change.agents is not None and change.agents < 1:
            raise InvalidRequest(f"node {name!r}: agents must be >= 1, got {change.agents}")
        if change.labels is not None:
            unmatched = self.placement.unmatched()
            self._run_all(self.placement.set_labels(name, remote.node_labels(self, change.labels, False)))
            self._tell_match_changes(unmatched)
        if change.agents is not None:
            for agent in self.placement.resize(name, change.agents):
                self._retire(agent)
            while self.placement.wants_agent(name):
                self._spawn_agent(name)
        info = self._node_info(name)
        self._event(NodeChange.CHANGED, name, labels=info.labels, agents=[agent.name for agent in info.agents],
                    agents_wanted=info.agents_wanted)  # fmt: skip
        self._publish()
        return info

    def _spawn_agent(self, node: str) -> str:
        """Start a new agent on ``node``; returns its name."""
        index = self.next_agent[node]
        self.next_agent[node] = index + 1
        name = f"{node}/{index}"
        node_ref = self.nodes[node]
        workspace = self.workdir / node / str(index)

        def factory() -> AgentActor:
            return AgentActor(node=node, agent=name, workspace=workspace, pool=self.ref, actions=self.actions,
                              kill_grace=self.kill_grace, secrets=self.secrets)  # fmt: skip

        self.agents[name] = self.system.spawn(factory, name=f"agent:{name}", parent=node_ref,
                                              supervision=_AGENT_SUPERVISION)  # fmt: skip
        self._run_all(self.placement.add_agent(node, name))
        return name

    def _remove_node(self, name: str) -> NodeInfo:
        if name not in self.nodes:
            raise NotFound(f"no node {name!r} in pool {self.pool!r}")
        unmatched = self.placement.unmatched()
        node = self.placement.nodes[name]
        already = node.draining
        agents = len(node.agents)
        remote.draining(self, name)
        idle = self.placement.drain_node(name)
        if not already:
            self._event(NodeChange.DRAINING, name, busy=agents - len(idle))
        for agent in idle:
            self._retire(agent)
        if self.placement.remove_node_if_empty(name):  # a remote node whose agents are gone
            self._forget_node(name)
        self._tell_match_changes(unmatched)
        info = self._node_info(name) if name in self.placement.nodes else NodeInfo(
            name=name, pool=self.pool, labels=[], draining=True, agents=[], running={})
        self._publish()
        return info

    def _tell_match_changes(self, before: set[Any]) -> None:
        """Nodes came or went: tell the waiting jobs no node can run now why,
        and clear the reason of those that had none and now have one."""
        for class_key in before ^ self.placement.unmatched():
            for request in self.placement.waiting_in(class_key):
                reason = None if self.placement.has_match(request) else self.placement.why_waiting(request)
                self.names.tell(request.data.pipeline, JobWaiting(request.data.token, reason))

    def _retire(self, agent: str) -> None:
        """An idle agent of a draining node, or one past a resized node's count, leaves; the node goes with
        its last agent."""
        _, node = self._detach(agent)
        if not self.placement.nodes[node].draining:
            self._event(NodeChange.AGENT_RETIRED, node, agent=agent)
        if self.placement.remove_node_if_empty(node):
            self._forget_node(node)

    def _forget_node(self, node: str) -> None:
        """The node is gone: stop its actor."""
        self.system.stop_nowait(self.nodes.pop(node))
        del self.next_agent[node]
        self.remote.pop(node, None)
        self._event(NodeChange.REMOVED, node)

    def _lost(self, message: AgentLost, tell_node: bool = True) -> None:
        """End what a lost agent held, give its slots back, put a fresh agent in its place
        (a remote node's agents come back with its process instead)."""
        if message.agent not in self.placement.agents:
            return  # already retired or reported lost
        self.lost += 1
        held, node = self._detach(message.agent)
        if held is not None:
            self._end(held.data, message.status, message.reason)
        self._event(NodeChange.AGENT_LOST, node, message.reason, agent=message.agent,
                    job=str(held.token) if held is not None else None)  # fmt: skip
        if node in self.remote:  # its agents come back with its process
            remote.lost(self, node, message.agent, held.token if held is not None else None, tell_node)
        elif self.placement.wants_agent(node):
            fresh = self._spawn_agent(node)  # a fresh agent, under a new name
            self._event(NodeChange.AGENT_REPLACED, node, agent=fresh, replaces=message.agent)
        elif self.placement.remove_node_if_empty(node):
            self._forget_node(node)

    def _detach(self, agent: str) -> tuple[Request | None, str]:
        """Take an agent out of the pool; what it held is released (and returned)."""
        node = self.placement.agents[agent].node.name
        held, grants = self.placement.remove_agent(agent)
        self.heartbeats.forget(agent)
        self.agents.pop(agent).tell(Retire())
        self._fail_pinned(agent)
        self._run_all(grants)
        return held, node

    def _check_heartbeats(self) -> None:
        timeout = self.heartbeats.timeout
        for agent, silent in self.heartbeats.lost(self.now()):
            self._lost(AgentLost(agent, JobStatus.HEARTBEAT_TIMEOUT,
                                 f"agent {agent} sent no heartbeat for {silent:g}s (heartbeat-timeout {timeout:g}s)"))  # fmt: skip

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        """A node crashed: the kernel stopped its agents, so they are lost; the
        restarted node gets fresh ones (past its restart limit the pool escalates)."""
        node = child.name.split(":", 1)[1]
        if node not in self.placement.nodes:
            return
        for agent in list(self.placement.nodes[node].agents):
            self._lost(AgentLost(agent, JobStatus.FAILED, f"node {node} crashed: {error!r}"))
        self._publish()

    def _fail_pinned(self, agent: str) -> None:
        for request in self.placement.pinned_to(agent):
            self.placement.withdraw(request.token)
            self.timeouts.left(request)
            self._end(request.data, JobStatus.FAILED, f"agent {agent} (lock-resource-with) is gone")

    def _inject(self, message: InjectFault) -> None:
        # Told to every pool: an agent of another pool, or one lost meanwhile,
        # is simply not ours. Raising here would crash the pool.
        ref = self.agents.get(message.agent)
        if ref is None:
            return
        if message.kind == FaultKind.SILENCE or message.kind == FaultKind.HANG:
            self.heartbeats.stop(message.agent, self.now())
        if message.kind != FaultKind.SILENCE:
            ref.tell(Fault(message.kind))

    # -- events --------------------------------------------------------------------------

    def _event(self, change: NodeChange, node: str, reason: str | None = None, **data: Any) -> None:
        """Note a node event (see ``NodeChange``); sent with the others of this message."""
        if self.hub is not None:
            self.outbox.append(Record(EventKind.NODE, change, reason, node=node,
                                      data={"pool": self.pool, **data}))  # fmt: skip

    def _publish(self) -> None:
        if self.outbox:
            assert self.hub is not None
            self.hub.tell(Publish(tuple(self.outbox)))
            self.outbox.clear()

    # -- introspection ---------------------------------------------------------------------

    def _node_info(self, name: str) -> NodeInfo:
        node = self.placement.nodes[name]
        agents = [
            AgentInfo(name=agent, status=AgentStatus.BUSY if held is not None else AgentStatus.IDLE,
                      job=str(held.token) if held is not None else None, locked_by=locked_by)  # fmt: skip
            for agent, held, locked_by in self.placement.iter_agents(name)
        ]
        running = {f"{pipeline}/{job}": count for (pipeline, job), count in node.running.items()}
        return remote.with_state(self, NodeInfo(name=name, pool=self.pool, labels=remote.user_labels(node.labels),
                                                draining=node.draining, agents=agents, running=running,
                                                agents_wanted=node.want))  # fmt: skip

    def _stats(self) -> dict[str, int]:
        placement = self.placement
        return {
            "agents": len(placement.agents),
            "agents_busy": len(placement.granted),
            "agents_locked": placement.agents_locked(),
            "agents_lost": self.lost,
            "jobs_running": len(placement.granted),
            "jobs_queued": len(placement.waiting),
            "slots_held": sum(placement.total.values()),
        }

    def _waiting(self) -> list[WaitingJob]:
        now, wall = self.now(), time.time()
        waiting = []
        for request in self.placement.waiting.values():
            token: JobToken = request.data.token
            waiting.append(WaitingJob(
                build_id=token.build_id, job_id=token.job_id, attempt=token.attempt, pool=self.pool,
                reason=self.placement.why_waiting(request), since=rfc3339(wall - (now - request.since)) or "",
                deadline=rfc3339(wall + (request.deadline - now)) or "",
            ))  # fmt: skip
        return waiting

    def _end(self, request: JobRequest, status: JobStatus, reason: str) -> None:
        """End the attempt here: its agent never ran it, or can no longer report."""
        self.names.tell(request.pipeline, EndJob(request.token, status, reason, time.time()))
