"""Telling an actor known by its name: what a waiting job carries instead of a ``Ref``.

A job waiting in a pool's queue survives the garbage collector's young
passes and is promoted to its old generation; enough of them trigger a full
pass over every object of the process (docs/design.md §2). A ``Ref`` leads
back into the actor graph (its cell, the system, the pool, the queue, the
job), so a message holding one must stay tracked by the collector: an
untracked link in that cycle would keep a closed runtime's actors alive. So
the messages of a job attempt (``JobRequest``, ``RunJob``) name the actor
to report to (the pipeline's actor name) and hold only data; whoever
reports resolves the name here, when it tells.

A name stands for the actor spawned under it: a pipeline's actor lives as
long as its runtime (its crash stops the runtime), so a name never comes to
mean another actor while a job of the first one runs. A message told to a
name whose actor has stopped is a dead letter, as if it had been told to
the actor's ``Ref``.
"""

from __future__ import annotations

from typing import Any

from .core import Actor, Ref

__all__ = ["Names"]


class Names:
    """The refs of the actors one actor tells by name, kept after the first look-up.

    Made by the actor that owns it (in its ``__init__``: the system is read
    only at the first look-up). A kept ref whose actor has stopped is looked
    up again, so an actor started later under the name gets what is told to
    it. At most ``LIMIT`` names are kept (then all are forgotten): a
    long-lived pool told by many short-lived test actors keeps few stopped ones.
    """

    LIMIT = 1024
    __slots__ = ("_owner", "_refs")

    def __init__(self, owner: Actor) -> None:
        self._owner = owner
        self._refs: dict[str, Ref] = {}

    def tell(self, name: str, message: Any) -> None:
        """Tell ``message`` to the actor called ``name`` (a dead letter if none runs under it)."""
        ref = self._refs.get(name)
        if ref is None or ref.stopped:
            ref = self._look_up(name, ref)
            if ref is None:
                # Never seen running, and none runs now: counted as a dead letter like a tell to a stopped ref.
                self._owner.system.dead_letter(name, message)
                return
        ref.tell(message)

    def _look_up(self, name: str, kept: Ref | None) -> Ref | None:
        try:
            ref = self._owner.system.lookup(name)
        except LookupError:
            return kept  # stopped (or never seen): telling it counts a dead letter
        if len(self._refs) >= self.LIMIT:
            self._refs.clear()
        self._refs[name] = ref
        return ref
