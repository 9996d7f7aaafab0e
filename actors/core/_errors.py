"""Errors raised by the actor kernel. Each names the actor and the message."""

from __future__ import annotations

__all__ = ["ActorError", "AskTimeout", "ActorStopped", "ActorCrashed"]


class ActorError(Exception):
    """Base of the kernel's errors."""


class AskTimeout(ActorError, TimeoutError):
    """An ``ask`` got no reply before its deadline."""

    def __init__(self, actor: str, message_type: str, timeout: float) -> None:
        super().__init__(f"ask to actor {actor!r} with {message_type} timed out after {timeout:g}s")
        self.actor = actor
        self.message_type = message_type
        self.timeout = timeout


class ActorStopped(ActorError):
    """The actor stopped (or was never running) before it could reply."""

    def __init__(self, actor: str, message_type: str) -> None:
        super().__init__(f"actor {actor!r} is stopped; {message_type} was not handled")
        self.actor = actor
        self.message_type = message_type


class ActorCrashed(ActorError):
    """An actor crashed more often than its supervision allows, and nobody above took it."""

    def __init__(self, actor: str, cause: BaseException) -> None:
        super().__init__(f"actor {actor!r} crashed past its restart limit: {cause!r}")
        self.actor = actor
        self.__cause__ = cause
