"""One timer service per system: a heap of deadlines served by a single task.

A pending timer is a heap entry, never a sleeping task, so 100,000 queued
timeouts cost 100,000 small objects and one task (docs/design.md §2). Cancelling is
lazy (the entry is skipped when it surfaces); the heap is compacted when
cancelled entries outnumber live ones, so cancel-heavy workloads (queue
timeouts of builds that got admitted) do not grow it without bound.

Deadlines that all lie the same delay ahead (every ``ask`` with the default
timeout) go to a FIFO lane instead: one deque per delay, in deadline order by
construction, so adding one is an append and settling one is a count. An ask
with a heap timer cost 1.2 µs of its round trip in those two steps; the lane
costs a third of that.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from ._backend import Backend

__all__ = ["Expiring", "Lane", "TimerHandle", "TimerService"]

logger = logging.getLogger("actors.timers")


class TimerHandle:
    """A scheduled callback; ``cancel()`` it to keep it from firing.

    ``deadline`` says when it fires (or fired), on the system clock, so an
    actor that keeps a handle needs no copy of its deadline beside it.
    """

    __slots__ = ("_deadline", "_callback", "_args", "_service")

    def __init__(
        self, deadline: float, callback: Callable[..., Any], args: tuple[Any, ...], service: TimerService
    ) -> None:
        self._deadline = deadline
        self._callback: Callable[..., Any] | None = callback
        self._args = args
        self._service = service

    @property
    def deadline(self) -> float:
        """The clock time it fires at. Read-only: the heap entry would not move with it."""
        return self._deadline

    @property
    def active(self) -> bool:
        """True until the timer fires or is cancelled."""
        return self._callback is not None

    def cancel(self) -> None:
        """Keep the timer from firing. Idempotent; harmless after it fired."""
        if self._callback is not None:
            self._callback = None
            self._args = ()
            self._service._note_cancelled()

    def _fire(self) -> None:
        callback, args = self._callback, self._args
        self._callback = None
        self._args = ()
        if callback is not None:
            callback(*args)


class Expiring(Protocol):
    """What a lane holds: an entry that knows its deadline, whether it is settled, and how to expire."""

    deadline: float

    @property
    def settled(self) -> bool: ...

    def expire(self) -> None: ...


class Lane:
    """The pending deadlines of one delay, oldest first.

    An entry leaves when it surfaces: settled ones are dropped, the others
    expire. Its owner calls ``settle()`` once for each entry, expired or not;
    that only counts: the entry itself knows it is settled.
    The deque is compacted once settled entries outnumber live ones, so an
    entry stuck at the head does not hold every later one for a whole delay.
    """

    __slots__ = ("delay", "entries", "live")

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.entries: deque[Expiring] = deque()
        self.live = 0

    def settle(self) -> None:
        """One of the lane's entries is settled (answered, or seen to have expired): one fewer live."""
        self.live -= 1

    def _compact(self) -> None:
        self.entries = deque(entry for entry in self.entries if not entry.settled)


MAX_LANES = 8  # distinct delays with a lane; deadlines of other delays go to the heap


class TimerService:
    """Fires callbacks at deadlines on the system's clock (trio's MockClock included)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._now = backend.clock()
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._cancelled = 0
        self._parker = backend.new_parker()
        self._armed_deadline = math.inf
        self._lanes: dict[float, Lane] = {}
        self.fired = 0

    def __len__(self) -> int:
        """Pending (not cancelled, not fired) timers and lane entries."""
        return len(self._heap) - self._cancelled + sum(lane.live for lane in self._lanes.values())

    def expire_later(self, delay: float, entry: Expiring) -> Lane | TimerHandle:
        """Call ``entry.expire()`` at ``entry.deadline`` (``delay`` from now) unless it is settled first.

        Tell the returned object when the entry settles: ``settle()`` on a
        lane, ``cancel()`` on a timer handle (a delay without a lane).
        """
        lane = self._lanes.get(delay)
        if lane is None:
            if len(self._lanes) >= MAX_LANES:
                return self.call_at(entry.deadline, entry.expire)
            lane = self._lanes[delay] = Lane(delay)
        entries = lane.entries
        if not entries:
            if entry.deadline < self._armed_deadline:
                self._parker.unpark()
        elif len(entries) > 2 * lane.live + 64:
            lane._compact()
            entries = lane.entries
        entries.append(entry)
        lane.live += 1
        return lane

    def call_at(self, deadline: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` in the timer task once the clock reaches ``deadline``."""
        handle = TimerHandle(deadline, callback, args, self)
        heapq.heappush(self._heap, (deadline, next(self._counter), handle))
        if deadline < self._armed_deadline:
            self._parker.unpark()
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds."""
        return self.call_at(self._now() + delay, callback, *args)

    def _note_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].active]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def _serve_lanes(self, now: float) -> float:
        """Expire the lanes' due entries; return the earliest deadline left."""
        earliest = math.inf
        for lane in self._lanes.values():
            entries = lane.entries
            while entries:
                head = entries[0]
                if head.settled:
                    entries.popleft()
                    continue
                if head.deadline > now:
                    earliest = min(earliest, head.deadline)
                    break
                entries.popleft()  # still live: its owner settles it once it sees the expiry
                self.fired += 1
                try:
                    head.expire()
                except Exception:
                    logger.exception("timer callback failed")
        return earliest

    async def run(self) -> None:
        """Serve deadlines forever; cancelled with the system."""
        backend = self._backend
        while True:
            now = self._now()
            earliest = self._serve_lanes(now) if self._lanes else math.inf
            # Re-read self._heap each time: a callback may cancel timers and
            # trigger a compaction that replaces the list.
            while self._heap and self._heap[0][0] <= now:
                _, _, handle = heapq.heappop(self._heap)
                if not handle.active:
                    self._cancelled -= 1
                    continue
                self.fired += 1
                try:
                    handle._fire()
                except Exception:
                    logger.exception("timer callback failed")
            if self._heap:
                earliest = min(earliest, self._heap[0][0])
            if earliest == math.inf:
                self._armed_deadline = math.inf
                await self._parker.park()
                continue
            self._armed_deadline = earliest
            with backend.move_on_at(self._armed_deadline):
                await self._parker.park()
            self._armed_deadline = math.inf
