"""The pool's side of remote nodes (docs/design.md §11): joining, silence, loss, leaving.

A remote node is placed like a local one; only its agents come and go with
its connection. These functions run inside the pool actor's ``receive``
(they are the pool's handlers, kept here so that ``pool.py`` stays about
placement): the node actor tells the pool when its agent process joins,
falls silent, is heard again or leaves, and the pool does what it does for
local agents — ``HeartbeatWatch`` for silence, ``_lost`` for loss, drain for
leaving. A lost remote agent is not replaced by a fresh one as a local agent
is: the node waits, ``connected: false``, until its process is back. A
process that registers again with other ``--agents`` or ``--labels``
changes the node: new agents join, those past the count leave (idle ones at
once; busy ones were lost with the old session), new labels place waiting
jobs at once. After a restart the attempts remote agents were running are
taken back (``adopt``): their agents join busy, holding the slots and lock
they held, until the node settles them.

Actions (docs/design.md §11): a remote node can run the built-ins and the
actions its process offers (which ``_remote.register`` passes as labels,
``matching.action_label``); a local node every action registered on the
server, so its labels gain one when the server registers one
(``ActionsChanged``). A job needs the label of each action it uses that is
not a built-in (``needs``), so placement never gives it to a node that
cannot run it, and ``matching.no_node_reason`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import msgspec

from ..core import Supervision
from ..execution.actions import ActionRegistry, action_name
from ..model.spec import Job
from ..model.messages import AdoptJob, AgentLost, EndJob
from ..model.errors import Conflict
from ..model.info import NodeInfo, rfc3339
from ..model.vocab import JobStatus, NodeChange
from .matching import action_label, actions_of, server_actions, user_labels
from .placement import Request
from .records import constraint_key
from ..remote.agent import RemoteAgentActor
from ..remote.node import (
    Adopt,
    Disconnected,
    Draining,
    RemoteHeard,
    RemoteJoin,
    RemoteLeave,
    RemoteLost,
    RemoteNodeActor,
    RemoteSeen,
    RemoteSilent,
)

# The pool is typed loosely here: importing its module back would make a cycle.
PoolActor = Any

__all__ = ["MESSAGES", "RemoteState", "ActionsChanged", "handle", "spawn_node", "lost", "draining", "with_state",
           "check_update", "adopt", "needs", "pin_problem", "node_labels", "user_labels"]  # fmt: skip


class ActionsChanged(msgspec.Struct, frozen=True):
    """Runtime → pools: an action was registered on the server; local nodes can run it."""


MESSAGES = frozenset({RemoteJoin, RemoteLost, RemoteSilent, RemoteHeard, RemoteSeen, RemoteLeave, AdoptJob,
                      ActionsChanged})  # fmt: skip
_AGENT_SUPERVISION = Supervision(max_restarts=0, escalate=False)


class RemoteState(msgspec.Struct):
    connected: bool = False
    last_seen: float | None = None  # wall clock


def spawn_node(pool: PoolActor, name: str) -> Any:
    """The node actor of a new remote node (its agents come when its process registers)."""
    pool.remote[name] = RemoteState()
    return pool.spawn(lambda: RemoteNodeActor(node=name, pool=pool.ref, heartbeat_interval=pool.heartbeat_interval,
                                              heartbeat_timeout=pool.heartbeats.timeout, secrets=pool.secrets),
                      name=f"remote-node:{name}")  # fmt: skip


def handle(pool: PoolActor, message: Any) -> None:
    kind = type(message)
    if kind is AdoptJob:
        adopt(pool, message)
        return
    if kind is ActionsChanged:
        _actions_changed(pool)
        return
    node = pool.placement.nodes.get(message.node)
    if node is None or message.node not in pool.remote:
        return  # the node left meanwhile
    if kind is RemoteSeen:
        state = pool.remote[message.node]
        if state.connected != message.connected:
            if message.connected:
                pool._event(NodeChange.CONNECTED, message.node, agents=sorted(node.agents))
            else:
                pool._event(NodeChange.DISCONNECTED, message.node, last_seen=rfc3339(message.last_seen))
        state.connected, state.last_seen = message.connected, message.last_seen
    elif kind is RemoteSilent:
        for agent in node.agents:
            pool.heartbeats.stop(agent, message.since)
    elif kind is RemoteHeard:
        for agent in node.agents:
            pool.heartbeats.forget(agent)
    elif kind is RemoteJoin:
        if not node.draining:
            _join(pool, message)
    elif kind is RemoteLost:
        for index in message.agents:
            agent = f"{message.node}/{index}"
            if agent in node.agents:
                pool._lost(AgentLost(agent, JobStatus.HEARTBEAT_TIMEOUT, message.reason), tell_node=False)
    elif kind is RemoteLeave:
        pool._remove_node(message.node)


def lost(pool: PoolActor, node: str, agent: str, token: Any, tell_node: bool) -> None:
    """A remote agent was declared lost: the node forgets its attempt and shows disconnected."""
    if tell_node:
        pool.nodes[node].tell(Disconnected(int(agent.rsplit("/", 1)[1]), token))
    if pool.placement.nodes[node].draining and pool.placement.remove_node_if_empty(node):
        pool._forget_node(node)  # a draining node goes with its last agent


def draining(pool: PoolActor, node: str) -> None:
    """The node is drained: its agent process is told so with its next lease, and exits once idle."""
    if node in pool.remote:
        pool.nodes[node].tell(Draining())


def with_state(pool: PoolActor, info: NodeInfo) -> NodeInfo:
    """A remote node's info says so, with its connection state."""
    state = pool.remote.get(info.name)
    if state is None:
        return info
    return msgspec.structs.replace(info, kind="remote", connected=state.connected, last_seen=rfc3339(state.last_seen),
                                   actions=actions_of(pool.placement.nodes[info.name].labels))  # fmt: skip


def check_update(pool: PoolActor, node: str, agents: int | None, labels: Any) -> None:
    """A remote node's agents and labels are its process's to say, not a PUT's."""
    if node in pool.remote and (agents is not None or labels is not None):
        raise Conflict(f"node {node!r} is a remote node: its agents and labels are set by its shunter agent "
                       "process (--agents, --labels); restart that with new ones")  # fmt: skip


def _join(pool: PoolActor, message: RemoteJoin) -> None:
    """The node's process (re)joined with ``agents`` agents and maybe new labels (see the module docstring)."""
    name = message.node
    node = pool.placement.nodes[name]
    changed = False
    if message.labels is not None and frozenset(message.labels) != node.labels:
        unmatched = pool.placement.unmatched()
        pool._run_all(pool.placement.set_labels(name, frozenset(message.labels)))
        pool._tell_match_changes(unmatched)
        changed = True
    for index in range(message.agents):
        if f"{name}/{index}" not in node.agents:
            _spawn_agent(pool, name, index)
    for agent in [agent for agent in node.agents if int(agent.rsplit("/", 1)[1]) >= message.agents]:
        changed = True
        if pool.placement.agents[agent].held is None:  # busy: it was lost with its session (RemoteLost)
            pool._retire(agent)
    if changed:
        pool._event(NodeChange.CHANGED, name, labels=user_labels(node.labels), agents=sorted(node.agents),
                    agents_wanted=message.agents)  # fmt: skip


def adopt(pool: PoolActor, message: AdoptJob) -> None:
    """An attempt a remote agent was running when the server stopped: its agent joins busy with it
    (the node ends it unless the agent says it still runs it); on any other agent it is lost."""
    request = message.request
    name = request.agent or ""
    node, _, index = name.rpartition("/")
    if node not in pool.remote or pool.placement.nodes[node].draining or name in pool.placement.agents:
        pool.names.tell(request.pipeline, EndJob(request.token, JobStatus.HEARTBEAT_TIMEOUT, message.reason,
                                                 time.time()))  # fmt: skip
        return
    _stand_in(pool, node, int(index))
    runs_on = request.runs_on
    pool.placement.adopt(node, name, Request(
        token=request.token, build_id=request.token.build_id, key=(request.payload.pipeline_id, request.token.job_id),
        node_pin=runs_on.node_name, labels=needs(pool.actions, request.payload.job, frozenset(runs_on.labels)),
        agent_pin=name, lock=request.lock,
        per_node=runs_on.concurrency_limit_per_node, total=runs_on.concurrency_limit_total, since=pool.now(),
        data=request))  # fmt: skip
    pool.nodes[node].tell(Adopt(int(index), request.token, request.pipeline, request.payload, message.logs))


def needs(actions: ActionRegistry, job: Job, labels: frozenset[str]) -> frozenset[str]:
    """A job's labels for placement: its ``runs-on`` ``labels`` and those of the actions it uses that are not
    built-ins (``labels`` itself, the same object, when there are none)."""
    extra = [action_label(action_name(step.uses)) for step in job.steps
             if step.uses is not None and not actions.builtin(step.uses)]  # fmt: skip
    return labels.union(extra) if extra else labels


_NO_LABELS: frozenset[str] = frozenset()  # most jobs name none: one shared set, not one per request


class JobLabels:
    """A job's placement labels (its ``runs-on`` ``labels`` and ``needs``), remembered per job key, with
    the class key (``Request.constraints()``) of its attempts that are not pinned to an agent.

    Asked for every ``JobRequest``; the attempts of one job bring the same
    ``Job`` and ``RunsOn`` objects, so the answer is kept with them and used
    again while they and the registry are unchanged. At most ``LIMIT`` jobs
    are kept (then all are forgotten): deleted pipelines leave nothing behind for long.
    """

    LIMIT = 1024
    __slots__ = ("_actions", "_known")

    def __init__(self, actions: ActionRegistry) -> None:
        self._actions = actions
        self._known: dict[tuple[str, str], tuple[Job, Any, int, tuple[frozenset[str], tuple[Any, ...]]]] = {}

    def of(self, key: tuple[str, str], job: Job, runs_on: Any) -> tuple[frozenset[str], tuple[Any, ...]]:
        """``(labels, class key)``: the class key's first item is the job key, to share."""
        known = self._known.get(key)
        changes = self._actions.changes
        if known is not None and known[0] is job and known[1] is runs_on and known[2] == changes:
            return known[3]
        labels = needs(self._actions, job, frozenset(runs_on.labels) if runs_on.labels else _NO_LABELS)
        placing = (labels, constraint_key(key, runs_on.node_name, labels, None, runs_on.concurrency_limit_per_node,
                                     runs_on.concurrency_limit_total))  # fmt: skip
        if len(self._known) >= self.LIMIT:
            self._known.clear()
        self._known[key] = (job, runs_on, changes, placing)
        return placing


def pin_problem(pool: PoolActor, agent: str, labels: frozenset[str]) -> str | None:
    """Why a job pinned to ``agent`` (lock-resource-with) can never run there, or None: the agent is
    gone, or its node cannot run an action the job uses (it runs where the chain's first job ran)."""
    held = pool.placement.agents.get(agent)
    if held is None:
        return f"agent {agent} (lock-resource-with) is gone"
    lacking = actions_of(labels - held.node.labels)
    if lacking:
        return (f"agent {agent} (lock-resource-with) cannot run {server_actions(lacking)}: its node's "
                "shunter agent does not offer it")  # fmt: skip
    return None


def node_labels(pool: PoolActor, labels: Iterable[str], is_remote: bool) -> frozenset[str]:
    """A node's labels for placement: a remote node's hold its actions' already, a local node has every action."""
    if is_remote:
        return frozenset(labels)
    return frozenset(labels).union(map(action_label, pool.actions.names()))


def _actions_changed(pool: PoolActor) -> None:
    """Local nodes gain the labels of actions registered since they were added (waiting jobs may go now)."""
    for name, node in pool.placement.nodes.items():
        if name in pool.remote or node.draining:
            continue
        labels = node_labels(pool, user_labels(node.labels), False)
        if labels != node.labels:
            unmatched = pool.placement.unmatched()
            pool._run_all(pool.placement.set_labels(name, labels))
            pool._tell_match_changes(unmatched)


def _spawn_agent(pool: PoolActor, node: str, index: int) -> None:
    _stand_in(pool, node, index)
    pool._run_all(pool.placement.add_agent(node, f"{node}/{index}"))


def _stand_in(pool: PoolActor, node: str, index: int) -> None:
    name = f"{node}/{index}"
    node_ref = pool.nodes[node]
    pool.next_agent[node] += 1  # actor names stay unique while a lost stand-in stops
    generation = pool.next_agent[node]
    pool.agents[name] = pool.system.spawn(lambda: RemoteAgentActor(agent=name, index=index, node=node_ref),
                                          name=f"agent:{name}@{generation}", parent=node_ref,
                                          supervision=_AGENT_SUPERVISION)  # fmt: skip
