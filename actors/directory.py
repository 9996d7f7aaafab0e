"""Finds the actor for a name (a pool, a group, a mutex), starting it on first use.

Actors of one family are named ``<prefix>:<key>`` in the system registry and
supervised by one parent; the directory holds no state of its own, so any
actor may use it. Look-up and spawn happen without an await in between, so
two users can never start the same name twice.
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
        try:
            return self.system.lookup(f"{self.prefix}:{key}")
        except LookupError:
            return None

    def get(self, key: str) -> Ref:
        ref = self.find(key)
        if ref is None:
            ref = self.system.spawn(self.factory(key), name=f"{self.prefix}:{key}", parent=self.parent,
                                    supervision=self.supervision)  # fmt: skip
        return ref

    def all(self) -> list[Ref]:
        return self.system.children(self.parent)
