"""A build node: the supervisor of its agents.

Agents are the node's children. An agent that crashes is not restarted in
place: the node reports it lost (``FAILED``) to its pool at once, and the
pool puts a fresh agent, under a new name, in its place. Heartbeats are not
the node's business: each pool watches all its agents with one timer
(``heartbeat.py``), so an idle node costs nothing.
"""

from __future__ import annotations

from typing import Any

from ..core import Actor, Ref
from ..model.messages import AgentLost
from ..model.vocab import JobStatus

__all__ = ["NodeActor"]


class NodeActor(Actor):
    """See the module docstring."""

    def __init__(self, *, node: str, pool: Ref) -> None:
        self.node = node
        self.pool = pool

    def receive(self, message: Any) -> Any:
        raise TypeError(f"node {self.node!r} got an unexpected {type(message).__name__}")

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        agent = child.name.removeprefix("agent:")
        self.pool.tell(AgentLost(agent, JobStatus.FAILED, f"agent {agent} crashed: {error!r}"))
