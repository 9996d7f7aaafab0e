"""Finds the actor for a name (a pool, a group, a mutex), starting it on first use.

Actors of one family are named ``<prefix>:<key>`` in the system registry and
supervised by one parent; the directory holds no state of its own, so any
actor may use it. Look-up and spawn happen without an await in between, so
two users can never start the same name twice.

An actor of the family may stop itself: groups and mutexes retire once
they have been idle for a while (``actors.admission.idle``). The directory never
hands out an actor that has been asked to stop (it would drop what it is
told): the kernel frees the name at the stop request, ``find`` treats such
an actor as absent and ``get`` starts a fresh one under the same name.
Since a retiring actor checks that its mailbox is empty and stops in one
handler, with no await in between, whatever was told to it before is
handled (it does not stop then) and whatever is told through the directory
afterwards goes to the fresh actor: no message is lost, and per-sender
order holds across the hand-over. ``all`` lists only running actors, so a
retired group is no longer listed by ``rt.groups()``.
"""

from __future__ import annotations

from collections.abc import Callable

from .core import Actor, ActorSystem, Ref, Supervision

__all__ = ["Directory"]


class Directory:
    def __init__(
        self,
        system: ActorSystem,
        prefix: str,
        parent: Ref,
        factory: Callable[[str], Callable[[], Actor]],
        supervision: Supervision | None = None,
    ) -> None:
        self.system = system
        self.prefix = prefix
        self.parent = parent
        self.factory = factory
        self.supervision = supervision

    def find(self, key: str) -> Ref | None:
        """The running actor for ``key``, or None (none started, or it is stopping)."""
        try:
            ref = self.system.lookup(f"{self.prefix}:{key}")
        except LookupError:
            return None
        return None if ref.stopped else ref

    def get(self, key: str) -> Ref:
        """The running actor for ``key``, started now if there is none."""
        ref = self.find(key)
        if ref is None:
            ref = self.system.spawn(self.factory(key), name=f"{self.prefix}:{key}", parent=self.parent,
                                    supervision=self.supervision)  # fmt: skip
        return ref

    def all(self) -> list[Ref]:
        """The family's running actors, oldest first (not those stopping)."""
        return [ref for ref in self.system.children(self.parent) if not ref.stopped]
