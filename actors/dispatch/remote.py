"""The pool's side of remote nodes (docs/design.md §11): joining, silence, loss, leaving.

A remote node is placed like a local one; only its agents come and go with
its connection. These functions run inside the pool actor's ``receive``
(they are the pool's handlers, kept here so that ``pool.py`` stays about
placement): the node actor tells the pool when its agent process joins,
falls silent, is heard again or leaves, and the pool does what it does for
local agents — ``HeartbeatWatch`` for silence, ``_lost`` for loss, drain for
leaving. A lost remote agent is not replaced by a fresh one as a local agent
is: the node waits, ``connected: false``, until its process is back.
"""

from __future__ import annotations

import msgspec

from typing import Any

from ..core import Supervision
from ..model.messages import AgentLost
from ..model.errors import Conflict
from ..model.info import NodeInfo, rfc3339
from ..model.vocab import JobStatus, NodeChange
from ..remote.agent import RemoteAgentActor
from ..remote.node import (
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

__all__ = ["MESSAGES", "RemoteState", "handle", "spawn_node", "lost", "draining", "with_state", "check_update"]

MESSAGES = frozenset({RemoteJoin, RemoteLost, RemoteSilent, RemoteHeard, RemoteSeen, RemoteLeave})
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
            for index in range(message.agents):
                if f"{message.node}/{index}" not in node.agents:
                    _spawn_agent(pool, message.node, index)
    elif kind is RemoteLost:
        for agent in list(node.agents):
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
    return msgspec.structs.replace(info, kind="remote", connected=state.connected, last_seen=rfc3339(state.last_seen))


def check_update(pool: PoolActor, node: str, agents: int | None, labels: Any) -> None:
    """A remote node's agents and labels are its process's to say, not a PUT's."""
    if node in pool.remote and (agents is not None or labels is not None):
        raise Conflict(f"node {node!r} is a remote node: its agents and labels are set by its shunter agent "
                       "process (--agents, --labels); restart that with new ones")  # fmt: skip


def _spawn_agent(pool: PoolActor, node: str, index: int) -> None:
    name = f"{node}/{index}"
    node_ref = pool.nodes[node]
    pool.next_agent[node] += 1  # actor names stay unique while a lost stand-in stops
    generation = pool.next_agent[node]
    pool.agents[name] = pool.system.spawn(lambda: RemoteAgentActor(agent=name, index=index, node=node_ref),
                                          name=f"agent:{name}@{generation}", parent=node_ref,
                                          supervision=_AGENT_SUPERVISION)  # fmt: skip
    pool._run_all(pool.placement.add_agent(node, name))
