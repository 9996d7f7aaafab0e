"""A build node: supervises its agents and watches their heartbeats.

Agents are the node's children. Each agent heartbeats to its node every
``heartbeat_interval``; the node checks once per interval (one timer per
node, not per agent) and reports an agent silent for ``heartbeat_timeout``
to its pool as lost (``HEARTBEAT_TIMEOUT``). An agent that crashes is not
restarted in place: the node reports it lost (``FAILED``) and the pool puts
a fresh agent, under a new name, in its place.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .core import Actor, Ref
from .messages import AgentLost, Heartbeat

__all__ = ["NodeActor", "Track", "Untrack"]


class Track(msgspec.Struct, frozen=True):
    agent: str


class Untrack(msgspec.Struct, frozen=True):
    agent: str


class _Check(msgspec.Struct, frozen=True):
    pass


class NodeActor(Actor):
    """See the module docstring."""

    def __init__(self, *, node: str, pool: Ref, heartbeat_interval: float, heartbeat_timeout: float) -> None:
        self.node = node
        self.pool = pool
        self.interval = heartbeat_interval
        self.timeout = heartbeat_timeout
        self.last_seen: dict[str, float] = {}
        self.next_check = 0.0

    async def started(self) -> None:
        self._schedule_check()

    def _schedule_check(self) -> None:
        self.next_check = self.now() + self.interval
        self.send_at(self.next_check, _Check())

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Heartbeat:
            # Tracking on heartbeat too lets a restarted node pick its agents up again.
            self.last_seen[message.agent] = self.now()
        elif kind is _Check:
            self._check()
            self._schedule_check()
        elif kind is Track:
            self.last_seen[message.agent] = self.now()
        elif kind is Untrack:
            self.last_seen.pop(message.agent, None)
        else:
            raise TypeError(f"node {self.node!r} got an unexpected {kind.__name__}")

    def _check(self) -> None:
        now = self.now()
        # A check that runs late (the loop stalled) is as late as the agents'
        # own heartbeat ticks: forgive them that much, or a stall would make
        # every healthy agent look silent.
        lateness = max(0.0, now - self.next_check)
        lost = [agent for agent, seen in self.last_seen.items() if now - seen > self.timeout + lateness]
        for agent in lost:
            silent = now - self.last_seen.pop(agent)
            self.pool.tell(AgentLost(agent, "HEARTBEAT_TIMEOUT",
                                     f"agent {agent} sent no heartbeat for {silent:g}s "
                                     f"(heartbeat-timeout {self.timeout:g}s)"))  # fmt: skip

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        agent = child.name.removeprefix("agent:")
        self.last_seen.pop(agent, None)
        self.pool.tell(AgentLost(agent, "FAILED", f"agent {agent} crashed: {error!r}"))
