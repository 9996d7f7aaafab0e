"""Job mutexes: at most one job attempt holds a rendered label at a time.

The concurrency-group machinery at job level: waiters queue FIFO up to
``queue-length``; one more ends its job FAILED ("mutex queue full"); a
waiter past ``timeout-minutes`` ends QUEUE_TIMEOUT with the wait in the reason. The
holder releases when its attempt ends (or is withdrawn while waiting).

Retirement: a mutex with no holder and no waiter for ``IDLE_AFTER`` (five
minutes) stops itself (``actors.admission.idle``), so labels rendered per build do not
leave an actor behind each. The next ``MutexAcquire`` for its label starts a
fresh mutex through the directory; no message is lost (the stop happens only
with an empty mailbox, and the directory never hands out a stopping mutex).
The fresh mutex needs nothing from the old one: it held nothing, the limits
come with every ``MutexAcquire``, and a ``MutexRelease`` for a token it
never saw is ignored.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from ..core import Actor, TimerHandle
from ..queues.fifo import Fifo
from .idle import IDLE_AFTER, IdleCheck, IdleRetirement
from ..model.messages import JobToken, MutexAcquire, MutexGranted, MutexRefused, MutexRelease
from ..model.info import WaitingJob, rfc3339

__all__ = ["MutexActor", "ListMutexWaiters"]


class ListMutexWaiters(msgspec.Struct, frozen=True):
    pass


class _MutexTimeout(msgspec.Struct, frozen=True):
    token: JobToken


class _Waiter:
    """A queued attempt; its timeout timer knows its deadline."""

    __slots__ = ("acquire", "since", "timer")

    def __init__(self, acquire: MutexAcquire, since: float, timer: TimerHandle) -> None:
        self.acquire = acquire
        self.since = since
        self.timer = timer


class MutexActor(Actor):
    """One mutex label. See the module docstring."""

    def __init__(self, label: str, idle_after: float = IDLE_AFTER) -> None:
        self.label = label
        self.holder: JobToken | None = None
        self.queue: Fifo[JobToken, _Waiter] = Fifo()
        self.idle = IdleRetirement(idle_after)  # stops the mutex once idle that long

    async def started(self) -> None:
        self.idle.settle(self, True)  # a mutex nobody tells anything still retires

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is MutexAcquire:
            self._acquire(message)
        elif kind is MutexRelease:
            self._release(message.token)
        elif kind is _MutexTimeout:
            self._timeout(message.token)
        elif kind is ListMutexWaiters:
            return self._waiters()
        elif kind is IdleCheck:
            self.idle.fire(self, message)
            return None
        else:
            raise TypeError(f"mutex {self.label!r} got an unexpected {kind.__name__}")
        self.idle.settle(self, self.is_idle)
        return None

    @property
    def is_idle(self) -> bool:
        """No holder and no waiter: the mutex holds nothing for anyone."""
        return self.holder is None and not self.queue

    def _acquire(self, acquire: MutexAcquire) -> None:
        if self.holder is None and not self.queue:
            self.holder = acquire.token
            acquire.pipeline.tell(MutexGranted(acquire.token))
            return
        if len(self.queue) >= acquire.queue_length:
            acquire.pipeline.tell(MutexRefused(
                acquire.token,
                f"mutex queue full: mutex {self.label!r} is held by {self.holder} and "
                f"{len(self.queue)} job(s) wait (queue-length {acquire.queue_length})",
            ))  # fmt: skip
            return
        now = self.now()
        timer = self.send_at(now + acquire.timeout_minutes * 60, _MutexTimeout(acquire.token))
        self.queue.append(acquire.token, _Waiter(acquire, now, timer))

    def _release(self, token: JobToken) -> None:
        waiter = self.queue.pop(token)
        if waiter is not None:
            waiter.timer.cancel()
            return
        if token != self.holder:
            return
        self.holder = None
        if self.queue:
            token, waiter = self.queue.popleft()
            waiter.timer.cancel()
            self.holder = token
            waiter.acquire.pipeline.tell(MutexGranted(token))

    def _timeout(self, token: JobToken) -> None:
        waiter = self.queue.pop(token)
        if waiter is None:
            return
        minutes = (self.now() - waiter.since) / 60
        waiter.acquire.pipeline.tell(MutexRefused(
            token, f"waited {minutes:g} minute(s) for mutex {self.label!r} (held by {self.holder}; "
                   f"timeout-minutes {waiter.acquire.timeout_minutes:g})",
            timed_out=True,
        ))  # fmt: skip

    def _waiters(self) -> list[WaitingJob]:
        now, wall = self.now(), time.time()
        return [
            WaitingJob(build_id=token.build_id, job_id=token.job_id, attempt=token.attempt, pool="",
                       reason=f"mutex {self.label!r} held by {self.holder}",
                       since=rfc3339(wall - (now - waiter.since)) or "",
                       deadline=rfc3339(wall + (waiter.timer.deadline - now)) or "")  # fmt: skip
            for token, waiter in self.queue.items()
        ]
