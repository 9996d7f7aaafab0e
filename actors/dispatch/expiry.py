"""The pool's queue timeouts: one deadline queue and one timer for every waiting attempt.

A job attempt waits in its pool at most ``queue-timeout-minutes``. A timer
per waiting attempt cost a timer handle, a bound method and a heap entry
(three objects the garbage collector tracks) and a heap push and cancel:
with 10,000 attempts waiting, that was 30,000 tracked objects. Here an
attempt costs one untracked ``Expiry`` in a ``DeadlineQueue`` (whose order
is its deadline order while the timeout does not change), and the pool
keeps a single timer, armed for the earliest deadline (docs/design.md §2:
one deadline structure per actor).
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from ..core import TimerHandle
from ..model.messages import JobToken
from ..queues.deadlines import DeadlineQueue, EarliestTimer

__all__ = ["Expiry", "QueueTimeouts"]


class Expiry(msgspec.Struct, gc=False):
    key: JobToken  # the attempt's
    deadline: float  # system clock


class QueueTimeouts:
    """Deadlines of waiting attempts by token, served by one ``EarliestTimer``."""

    __slots__ = ("_queue", "_timer")

    def __init__(self, send_at: Callable[[float], TimerHandle]) -> None:
        self._queue: DeadlineQueue[Expiry] = DeadlineQueue()
        self._timer = EarliestTimer(self._queue, send_at)  # its message makes the pool call ``due``

    def add(self, token: JobToken, deadline: float) -> None:
        self._queue.append(Expiry(token, deadline))
        self._timer.queued(deadline)

    def discard(self, token: JobToken) -> None:
        """The attempt stopped waiting (granted, withdrawn). The timer may fire early (``due`` re-arms
        it then), unless nothing waits any more: then it is cancelled, and no timer is left pending."""
        if self._queue.pop(token) is not None:
            self._timer.shrank()

    def deadline(self, token: JobToken) -> float | None:
        entry = self._queue.get(token)
        return entry.deadline if entry is not None else None

    def due(self, now: float) -> list[JobToken]:
        """The timer fired: the tokens whose deadline has come (forgotten here), and the timer re-armed."""
        self._timer.fired()
        tokens = [entry.key for entry in self._queue.pop_due(now)]
        self._timer.arm()
        return tokens
