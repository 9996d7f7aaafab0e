"""A keyed FIFO queue: O(1) append, removal from anywhere, and head.

A plain dict looks like one (it keeps insertion order) but degrades as a
queue: entries deleted at its front stay behind as dummies until the next
resize, and ``next(iter(d))`` skips them one by one. Measured on this
machine: 2.5 µs per pop-front/append cycle at 1k entries, 69 µs at 100k.
Here the order lives in a deque and removal is lazy: a removed entry is
skipped when it reaches the front, and the deque is compacted when stale
entries outnumber live ones.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["Fifo"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Fifo(Generic[K, V]):
    __slots__ = ("_items", "_order")

    def __init__(self) -> None:
        self._items: dict[K, V] = {}
        self._order: deque[tuple[K, V]] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def append(self, key: K, value: V) -> None:
        """Queue ``value`` at the back under ``key`` (which must not be queued)."""
        self._items[key] = value
        self._order.append((key, value))

    def appendleft(self, key: K, value: V) -> None:
        """Queue ``value`` at the front (it goes before everything waiting)."""
        self._items[key] = value
        self._order.appendleft((key, value))

    def pop(self, key: K) -> V | None:
        """Remove ``key`` wherever it waits; None if it is not queued."""
        value = self._items.pop(key, None)
        if value is None:
            return None
        order = self._order
        if order[0][1] is value:
            order.popleft()  # the head left (the usual case of a queue): no stale entry to skip later
        elif len(order) > 2 * len(self._items) + 32:
            self._order = deque(entry for entry in order if self._items.get(entry[0]) is entry[1])
        return value

    def head(self) -> tuple[K, V] | None:
        """The oldest entry, or None when empty."""
        order, items = self._order, self._items
        while order:
            key, value = order[0]
            if items.get(key) is value:
                return key, value
            order.popleft()  # removed earlier: skip it for good
        return None

    def popleft(self) -> tuple[K, V]:
        """Remove and return the oldest entry (IndexError when empty)."""
        entry = self.head()
        if entry is None:
            raise IndexError("pop from an empty Fifo")
        self._order.popleft()
        del self._items[entry[0]]
        return entry

    def items(self) -> Iterator[tuple[K, V]]:
        """Entries oldest first."""
        items = self._items
        return ((key, value) for key, value in self._order if items.get(key) is value)

    def keys(self) -> Iterator[K]:
        return (key for key, _ in self.items())

    def values(self) -> Iterator[V]:
        return (value for _, value in self.items())

    def __iter__(self) -> Iterator[K]:
        return self.keys()
