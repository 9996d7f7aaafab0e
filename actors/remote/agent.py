"""A remote agent's stand-in on the server: the actor the pool places jobs on.

The pool treats it as any agent (it is granted, limited, locked by
``lock-resource-with``, retired); what it is told goes to its
``RemoteNodeActor``, which owns the connection to the ``shunter agent``
process that really runs the job. Reports come back through the node as
this agent's own ``AgentReport`` and ``AgentIdle``.
"""

from __future__ import annotations

from typing import Any

from ..core import Actor, Ref
from ..model.messages import CancelJob, Fault, Retire, RunJob
from .node import Assign, CancelAttempt, Hang

__all__ = ["RemoteAgentActor", "RemoteAgentFault"]


class RemoteAgentFault(RuntimeError):
    """The injected ``crash`` fault."""


class RemoteAgentActor(Actor):
    """See the module docstring."""

    def __init__(self, *, agent: str, index: int, node: Ref) -> None:
        self.agent = agent
        self.index = index
        self.node = node

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is RunJob:
            self.node.tell(Assign(self.index, message.token, message.pipeline, message.payload))
        elif kind is CancelJob:
            self.node.tell(CancelAttempt(message.token, message.reason))
        elif kind is Retire:
            # Retired idle (drain) or lost: in both cases the pool has settled
            # what it held, and the node fences off what the agent still says.
            self.stop()
        elif kind is Fault:
            if message.kind == "crash":
                raise RemoteAgentFault(f"injected crash of agent {self.agent}")
            if message.kind == "hang":  # the server hears nothing more of it (a real process: SIGSTOP it)
                self.node.tell(Hang(self.index))
        else:
            raise TypeError(f"agent {self.agent} got an unexpected {kind.__name__}")
