"""The messages between a remote node's actor and its pool, its agents' stand-ins and the HTTP door
(docs/design.md §11; the node is ``node.py``)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..model.messages import JobPayload, JobToken

__all__ = [
    "Connect", "Assign", "Adopt", "CancelAttempt", "Hang", "Disconnected", "Draining", "RemoteJoin", "RemoteLost",
    "RemoteSilent", "RemoteHeard", "RemoteSeen", "RemoteLeave",
]  # fmt: skip


# -- HTTP door -> node (asks) ------------------------------------------------------------------


class Connect(msgspec.Struct, frozen=True):
    """A (new) session: ``agents`` agents with ``labels`` (None: as they are), still running ``running``."""

    agents: int
    labels: tuple[str, ...] | None = None
    running: dict[JobToken, int] = msgspec.field(default_factory=dict)  # token -> agent index


# -- proxy agent -> node ---------------------------------------------------------------------


class Assign(msgspec.Struct, frozen=True):
    index: int
    token: JobToken
    pipeline: str  # its actor's name (as in ``RunJob``)
    payload: JobPayload


class CancelAttempt(msgspec.Struct, frozen=True):
    token: JobToken
    reason: str


class Hang(msgspec.Struct, frozen=True):
    """The injected ``hang`` fault: nothing more is heard from agent ``index`` until the pool declares it lost."""

    index: int


# -- pool -> node ----------------------------------------------------------------------------


class Adopt(msgspec.Struct, frozen=True):
    """After a restart: agent ``index`` was running this attempt when the server stopped; hold it
    (``logs``: the running step's log by step index, written on)."""

    index: int
    token: JobToken
    pipeline: str  # its actor's name (as in ``RunJob``)
    payload: JobPayload
    logs: dict[int, Any]


class Draining(msgspec.Struct, frozen=True):
    """The pool drains the node (its agent left, or ``DELETE /v1/nodes``)."""


class Disconnected(msgspec.Struct, frozen=True):
    """The pool declared agent ``index`` lost; ``token`` is the attempt it ended."""

    index: int
    token: JobToken | None


# -- node -> pool ----------------------------------------------------------------------------


class RemoteJoin(msgspec.Struct, frozen=True):
    """Add the agents ``node/0`` … ``node/agents-1`` that the pool does not have; those past them
    leave; ``labels`` (None: unchanged) are the node's now."""

    node: str
    agents: int
    labels: tuple[str, ...] | None = None


class RemoteLost(msgspec.Struct, frozen=True):
    """These agents of the node (by index) lost their attempts: a new session without them, or
    not back in time after a restart."""

    node: str
    reason: str
    agents: tuple[int, ...]


class RemoteSilent(msgspec.Struct, frozen=True):
    """Nothing heard from the node since ``since`` (system clock)."""

    node: str
    since: float


class RemoteHeard(msgspec.Struct, frozen=True):
    node: str


class RemoteSeen(msgspec.Struct, frozen=True):
    node: str
    connected: bool
    last_seen: float  # wall clock


class RemoteLeave(msgspec.Struct, frozen=True):
    node: str
