"""One timer service per system: a heap of deadlines served by a single task.

A pending timer is a heap entry, never a sleeping task, so 100,000 queued
timeouts cost 100,000 small objects and one task (docs/design.md §2). Cancelling is
lazy (the entry is skipped when it surfaces); the heap is compacted when
cancelled entries outnumber live ones, so cancel-heavy workloads (queue
timeouts of builds that got admitted) do not grow it without bound.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections.abc import Callable
from typing import Any

from ._backend import Backend

__all__ = ["TimerHandle", "TimerService"]

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


class TimerService:
    """Fires callbacks at deadlines on the system's clock (trio's MockClock included)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self._heap: list[tuple[float, int, TimerHandle]] = []
        self._counter = itertools.count()
        self._cancelled = 0
        self._parker = backend.new_parker()
        self._armed_deadline = math.inf
        self.fired = 0

    def __len__(self) -> int:
        """Pending (not cancelled, not fired) timers."""
        return len(self._heap) - self._cancelled

    def call_at(self, deadline: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` in the timer task once the clock reaches ``deadline``."""
        handle = TimerHandle(deadline, callback, args, self)
        heapq.heappush(self._heap, (deadline, next(self._counter), handle))
        if deadline < self._armed_deadline:
            self._parker.unpark()
        return handle

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> TimerHandle:
        """Run ``callback(*args)`` after ``delay`` seconds."""
        return self.call_at(self._backend.current_time() + delay, callback, *args)

    def _note_cancelled(self) -> None:
        self._cancelled += 1
        if self._cancelled > 1024 and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].active]
            heapq.heapify(self._heap)
            self._cancelled = 0

    async def run(self) -> None:
        """Serve deadlines forever; cancelled with the system."""
        backend = self._backend
        while True:
            now = backend.current_time()
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
            if not self._heap:
                self._armed_deadline = math.inf
                await self._parker.park()
                continue
            self._armed_deadline = self._heap[0][0]
            with backend.move_on_at(self._armed_deadline):
                await self._parker.park()
            self._armed_deadline = math.inf
