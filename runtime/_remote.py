"""The server's side of the agent protocol (docs/design.md §11), between the HTTP door and the actors.

Each call finds the node's ``RemoteNodeActor`` and asks it; the node owns
the connection state. ``register`` adds the node to its pool the first
time (a remote node: its agents arrive with its process) and refuses a
name that a local node already has. With durable state a remote node is
stored (``NodeRow.remote``) at each registration, with the agents and
labels it registered with, and removed when it leaves: after a restart it
comes back disconnected, and its process's sessions go on (docs/design.md §11).
The actions its process offers besides the built-ins become labels of the
node that only jobs using them ask for (``placement_labels``,
``actors.dispatch.matching.action_label``), stored and changed with the others.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actors.core import Ref
from actors.dispatch.matching import action_label
from actors.dispatch.pool import AddNode, HasNode
from actors.model.errors import Conflict, InvalidRequest
from actors.remote.node import Connect, UnknownSession
from actors.remote.protocol import LeaseBody, LeaveBody, LeaseReply, Register, ReportBody, ReportReply, Session
from actors.state.journal import Write
from actors.state.store import NodeRow

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["register", "lease", "report", "leave", "placement_labels"]

_ASK = 30.0  # seconds, beyond a lease's own wait


async def register(rt: Runtime, body: Register) -> Session:
    limit = rt.config.max_agents_per_node
    if body.agents > limit:
        message = f"must be an integer from 1 to {limit} (max-agents-per-node), got {body.agents}"
        raise InvalidRequest(f"agents: {message}", details=[{"path": "$.agents", "message": message}])
    node = _node_or_none(rt, body.name)
    if node is None:
        # The same reservation and caps as Runtime.add_node.
        if body.name in rt._adding_nodes:
            raise Conflict(f"node {body.name!r} is being added")
        rt._adding_nodes.add(body.name)
        try:
            for ref in rt._pools.all():
                if await ref.ask(HasNode(body.name)):
                    raise Conflict(f"node {body.name!r} is a local node of this server (configured or added "
                                   "with PUT /v1/nodes); start the agent with another --name")  # fmt: skip
            if len(rt._node_names) + len(rt._adding_nodes) > rt.config.max_nodes:
                raise Conflict(f"there are {len(rt._node_names)} nodes already (max-nodes "
                               f"{rt.config.max_nodes}); remove one first")  # fmt: skip
            await rt._pools.get(body.pool).ask(AddNode(body.name, body.pool, body.agents, placement_labels(body), True))
            rt._node_names.add(body.name)
        finally:
            rt._adding_nodes.discard(body.name)
        node = _node(rt, body.name, "")
    else:
        pool = await _pool_of(rt, body.name)
        if pool is not None and pool != body.pool:
            raise Conflict(f"node {body.name!r} is in pool {pool!r}, not {body.pool!r}")
    running = {held.token: held.agent for held in body.running}
    labels = placement_labels(body)
    session: Session = await node.ask(Connect(body.agents, labels, running))
    _store(rt, body.name, NodeRow(body.name, body.pool, body.agents, labels, remote=True))
    return session


def placement_labels(body: Register) -> tuple[str, ...]:
    """The node's labels as placement sees them: its own, and one per action it offers (a re-registration
    that changes them must give these too, or jobs using its actions would no longer go there)."""
    return (*body.labels, *map(action_label, body.actions or ()))


async def lease(rt: Runtime, body: LeaseBody) -> LeaseReply:
    reply: LeaseReply = await _node(rt, body.node, body.session).ask(body, timeout=body.wait + _ASK)
    return reply


async def report(rt: Runtime, body: ReportBody) -> ReportReply:
    reply: ReportReply = await _node(rt, body.node, body.session).ask(body, timeout=_ASK)
    return reply


async def leave(rt: Runtime, body: LeaveBody) -> Any:
    reply = await _node(rt, body.node, body.session).ask(body, timeout=_ASK)
    rt._node_names.discard(body.node)  # draining: it no longer counts towards max-nodes
    _store(rt, body.node, None)
    return reply


def _store(rt: Runtime, name: str, row: NodeRow | None) -> None:
    """Journal the remote node (told, not awaited: its agent process registers it again anyway)."""
    if rt._state is not None and rt._state.journal is not None:
        rt._state.journal.tell(Write(rt._state.node_batch(name, row)))


def _node_or_none(rt: Runtime, name: str) -> Ref | None:
    try:
        return rt.system.lookup(f"remote-node:{name}")
    except LookupError:
        return None


def _node(rt: Runtime, name: str, session: str) -> Ref:
    node = _node_or_none(rt, name)
    if node is None:
        raise UnknownSession(f"no remote node {name!r} (it left, or the server restarted): register again")
    return node


async def _pool_of(rt: Runtime, name: str) -> str | None:
    for ref in rt._pools.all():
        if await ref.ask(HasNode(name)):
            return str(ref.name).removeprefix("pool:")
    return None
