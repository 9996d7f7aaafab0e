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
from ..queues.deadlines import DeadlineQueue

__all__ = ["Expiry", "QueueTimeouts"]


class Expiry(msgspec.Struct, gc=False):
    key: JobToken  # the attempt's
    deadline: float  # system clock


class QueueTimeouts:
    """Deadlines of waiting attempts by token; ``arm`` keeps the one timer pointed at the earliest."""

    __slots__ = ("_queue", "_timer", "_send_at")

    def __init__(self, send_at: Callable[[float], TimerHandle]) -> None:
        self._queue: DeadlineQueue[Expiry] = DeadlineQueue()
        self._timer: TimerHandle | None = None
        self._send_at = send_at  # arms the pool's timer: its message makes the pool call ``due``

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, token: JobToken, deadline: float) -> None:
        self._queue.append(Expiry(token, deadline))
        timer = self._timer
        if timer is None or not timer.active or deadline < timer.deadline:
            self._arm()

    def discard(self, token: JobToken) -> None:
        """The attempt stopped waiting (granted, withdrawn). The timer may fire early (``due`` re-arms
        it then), unless nothing waits any more: then it is cancelled, and no timer is left pending."""
        if self._queue.pop(token) is not None and not self._queue and self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def deadline(self, token: JobToken) -> float | None:
        entry = self._queue.get(token)
        return entry.deadline if entry is not None else None

    def due(self, now: float) -> list[JobToken]:
        """The timer fired: the tokens whose deadline has come (forgotten here), and the timer re-armed."""
        self._timer = None
        tokens = [entry.key for entry in self._queue.pop_due(now)]
        self._arm()
        return tokens

    def _arm(self) -> None:
        earliest = self._queue.earliest()
        timer = self._timer
        if timer is not None and timer.active:
            if earliest is not None and timer.deadline <= earliest:
                return  # fires in time (early if the earliest left: ``due`` re-arms then)
            timer.cancel()
        self._timer = None if earliest is None else self._send_at(earliest)
