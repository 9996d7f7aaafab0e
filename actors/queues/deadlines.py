"""A keyed FIFO whose entries expire, for an actor that serves a whole queue with one timer.

A concurrency group keeps one timer in the system's timer service for its
whole queue, armed for ``earliest()``; when it fires, ``pop_due(now)``
hands over every entry due (docs/design.md §2: one deadline structure per actor).

Usually the queue's own order is its deadline order: entries are appended
with ``now + timeout`` and the timeout seldom changes, so the head is the
earliest and the due entries are a prefix, at no cost per entry. That
order breaks when an entry is appended with an earlier deadline than one
queued before it (the timeout was lowered) or put at the front with a later
deadline than the head's. From then until the queue is next empty the
deadlines are also kept in a heap of ``(deadline, seq, entry)`` with lazy
deletion: an entry that left the queue is skipped when it surfaces, and the
heap is compacted when such entries outnumber live ones.

Entries carry their own key, so the order deque holds the entries
themselves rather than a (key, entry) pair each (``Fifo``'s layout): 56 B
less per queued build. Removal is lazy as in ``Fifo``: an entry that left is
skipped when it reaches the front (it is stale when the dict no longer maps
its key to it, so a key queued again is never confused with its old entry),
and the deque is compacted when stale entries outnumber live ones.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from ..core import TimerHandle

__all__ = ["DeadlineQueue", "Deadlines", "EarliestTimer", "Timed"]


class Timed(Protocol):
    """What a ``DeadlineQueue`` holds: an entry that knows its key and when it expires."""

    @property
    def key(self) -> Hashable: ...

    @property
    def deadline(self) -> float: ...


T = TypeVar("T", bound=Timed)


class DeadlineQueue(Generic[T]):
    """FIFO order, removal by key from anywhere, the earliest deadline and the due entries."""

    __slots__ = ("_items", "_order", "_heap", "_latest", "_seq")

    def __init__(self) -> None:
        self._items: dict[Hashable, T] = {}
        self._order: deque[T] = deque()
        self._heap: list[tuple[float, int, T]] | None = None  # None: queue order is deadline order
        self._latest = -math.inf  # the latest deadline queued since the queue was last empty
        self._seq = itertools.count()  # heap tie-break: equal deadlines expire in the order heaped

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[T]:
        """Entries oldest first."""
        items = self._items
        return (entry for entry in self._order if items.get(entry.key) is entry)

    def get(self, key: Hashable) -> T | None:
        return self._items.get(key)

    @property
    def ordered(self) -> bool:
        """True while the queue's order is its deadline order (no heap kept)."""
        return self._heap is None

    # -- queueing ---------------------------------------------------------------------

    def append(self, entry: T) -> None:
        """Queue ``entry`` at the back (its key must not be queued)."""
        self._items[entry.key] = entry
        self._order.append(entry)
        deadline = entry.deadline
        if self._heap is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        elif deadline >= self._latest:
            self._latest = deadline  # still ascending from head to tail
        else:
            self._build_heap()

    def appendleft(self, entry: T) -> None:
        """Queue ``entry`` at the front, before everything waiting."""
        head = self.head()
        self._items[entry.key] = entry
        self._order.appendleft(entry)
        deadline = entry.deadline
        if self._heap is not None:
            heapq.heappush(self._heap, (deadline, next(self._seq), entry))
        elif head is None:
            self._latest = deadline
        elif deadline > head.deadline:
            self._build_heap()

    # -- leaving ----------------------------------------------------------------------

    def head(self) -> T | None:
        """The oldest entry, or None when empty."""
        order, items = self._order, self._items
        while order:
            entry = order[0]
            if items.get(entry.key) is entry:
                return entry
            order.popleft()  # removed earlier: skip it for good
        return None

    def popleft(self) -> T:
        """Remove and return the oldest entry (IndexError when empty)."""
        entry = self.head()
        if entry is None:
            raise IndexError("pop from an empty DeadlineQueue")
        self._order.popleft()
        del self._items[entry.key]
        self._removed()
        return entry

    def pop(self, key: Hashable) -> T | None:
        """Remove the entry of ``key`` wherever it waits; None if it is not queued."""
        items = self._items
        entry = items.pop(key, None)
        if entry is not None:
            order = self._order
            if order[0] is entry:
                order.popleft()  # the head left (the usual case of a queue): no stale entry to skip later
            # ``_removed``'s checks, the cheap ones first: most removals need nothing more.
            if not items or self._heap is not None or len(order) > 2 * len(items) + 32:
                self._removed()
        return entry

    # -- deadlines --------------------------------------------------------------------

    def earliest(self) -> float | None:
        """The earliest deadline queued; None when the queue is empty."""
        heap = self._heap
        if heap is None:
            head = self.head()
            return None if head is None else head.deadline
        items = self._items
        while heap and items.get(heap[0][2].key) is not heap[0][2]:
            heapq.heappop(heap)  # left the queue earlier
        return heap[0][0] if heap else None

    def pop_due(self, now: float) -> list[T]:
        """Remove and return every entry whose deadline is at or before ``now``, earliest first."""
        due: list[T] = []
        items, heap = self._items, self._heap
        if heap is None:
            order = self._order
            while order:
                entry = order[0]
                if items.get(entry.key) is not entry:
                    order.popleft()  # removed earlier
                elif entry.deadline <= now:
                    order.popleft()
                    del items[entry.key]
                    due.append(entry)
                else:
                    break
        else:
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)[2]
                if items.get(entry.key) is entry:
                    del items[entry.key]  # its place in the order is skipped lazily
                    due.append(entry)
        if due:
            self._removed()
        return due

    # -- internals --------------------------------------------------------------------

    def _build_heap(self) -> None:
        seq = self._seq
        self._heap = [(entry.deadline, next(seq), entry) for entry in self]
        heapq.heapify(self._heap)

    def _removed(self) -> None:
        items = self._items
        if not items:
            self._order.clear()
            self._heap = None  # an empty queue is trivially in order again
            self._latest = -math.inf
            return
        if len(self._order) > 2 * len(items) + 32:
            self._order = deque(entry for entry in self._order if items.get(entry.key) is entry)
        heap = self._heap
        if heap is not None and len(heap) > 2 * len(items) + 32:
            self._heap = [item for item in heap if items.get(item[2].key) is item[2]]
            heapq.heapify(self._heap)


class Deadlines(Protocol):
    """What ``EarliestTimer`` serves: a ``DeadlineQueue``, or another index that says how many entries
    it holds and the earliest deadline among them."""

    def __len__(self) -> int: ...

    def earliest(self) -> float | None: ...


class EarliestTimer:
    """The one timer of a ``DeadlineQueue`` (or other ``Deadlines``): armed for its earliest deadline,
    or before it.

    ``queued(deadline)`` after an entry is queued (re-armed only when that
    deadline is earlier), ``shrank()`` after entries left (cancelled only
    when the queue is empty: a timer that fires early costs less than a
    cancel and a new timer per departure), ``fired()`` when its message
    arrives, before the owner pops the due entries, and ``arm()`` after.
    ``send_at(deadline)`` asks the owner's actor for the timer.
    """

    __slots__ = ("_queue", "_send_at", "handle", "_at")

    def __init__(self, queue: Deadlines, send_at: Callable[[float], TimerHandle]) -> None:
        self._queue = queue
        self._send_at = send_at
        self.handle: TimerHandle | None = None
        self._at = math.inf  # the handle's deadline, kept here: read for every entry queued

    def queued(self, deadline: float) -> None:
        handle = self.handle
        if handle is None or deadline < self._at or not handle.active:
            self.arm()

    def shrank(self) -> None:
        if not self._queue and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def fired(self) -> None:
        self.handle = None

    def arm(self) -> None:
        """Point the timer at the earliest deadline queued (none if the queue is empty)."""
        earliest = self._queue.earliest()
        handle = self.handle
        if handle is not None and handle.active:
            if earliest is not None and handle.deadline <= earliest:
                return  # fires in time (early if the earliest entry left: its owner re-arms then)
            handle.cancel()
        self.handle = None if earliest is None else self._send_at(earliest)
        self._at = math.inf if earliest is None else earliest
