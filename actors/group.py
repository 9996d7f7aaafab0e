"""Concurrency groups: a named FIFO admission gate shared by pipelines.

A group runs at most ``max-parallel`` builds and queues at most
``queue-length`` more, each for at most ``queue-timeout-minutes``. When the
queue is full a new build is refused (``reject``) or the oldest queued build
is cancelled to make room (``cancel-oldest``). With ``cancel-in-progress`` a
new build cancels the group's running and queued builds and then waits at
the head of the queue until the cancelled ones have released their places:
``max-parallel`` holds at every instant, even while they stop.

The limits come with each ``Admit`` (the latest wins), since pipelines that
render the same group name share it. Queue timeouts are entries in the
system's timer service, cancelled on admission: one heap, no task per build.
Retries inside a running build never come here (DESIGN §3.1 item 4).
"""

from __future__ import annotations

from typing import Any

import msgspec

from .core import Actor, Ref, TimerHandle
from .fifo import Fifo
from .messages import Admit, Admitted, CancelBuild, Dequeued, Queued, QueueTimeout, Refused, Release
from .model import GroupInfo, QueueEntry, rfc3339
from .spec import Concurrency

__all__ = ["GroupActor", "GroupSnapshot", "QueuePosition"]


class GroupSnapshot(msgspec.Struct, frozen=True):
    pass


class QueuePosition(msgspec.Struct, frozen=True):
    build_id: str


class _Waiter:
    __slots__ = ("pipeline", "queued_at", "timeout", "deadline", "timer")

    def __init__(self, pipeline: Ref, queued_at: float, timeout: float, deadline: float, timer: TimerHandle) -> None:
        self.pipeline = pipeline
        self.queued_at = queued_at  # wall clock, for people
        self.timeout = timeout  # seconds
        self.deadline = deadline  # system clock, for the timer
        self.timer = timer


class GroupActor(Actor):
    """One concurrency group. See the module docstring."""

    def __init__(self, name: str) -> None:
        self.group = name
        self.config = Concurrency(group=name)
        self.running: dict[str, Ref] = {}
        self.cancelled: set[str] = set()  # running builds cancelled by cancel-in-progress
        self.queue: Fifo[str, _Waiter] = Fifo()

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Admit:
            self._admit(message)
        elif kind is Release:
            self._release(message.build_id)
        elif kind is QueueTimeout:
            self._timeout(message)
        elif kind is GroupSnapshot:
            return self._snapshot()
        elif kind is QueuePosition:
            return self._position(message.build_id)
        else:
            raise TypeError(f"group {self.group!r} got an unexpected {kind.__name__}")
        return None

    # -- admission ------------------------------------------------------------------

    def _admit(self, admit: Admit) -> None:
        self.config = config = admit.config
        build_id = admit.build_id
        if build_id in self.running or build_id in self.queue:
            admit.pipeline.tell(Refused(build_id, f"build {build_id!r} is already in group {self.group!r}",
                                        admit.reply, admit.retry))  # fmt: skip
            return
        if config.cancel_in_progress:
            self._cancel_everything_for(build_id)
            self._enqueue(admit, front=True)
            self._admit_next()
            return
        if len(self.running) < config.max_parallel and not self.queue:
            self.running[build_id] = admit.pipeline
            admit.pipeline.tell(Admitted(build_id, admit.reply, admit.retry))
            return
        if len(self.queue) >= config.queue_length:
            head = self.queue.head()
            if config.on_queue_full == "cancel-oldest" and head is not None:
                self._dequeue(head[0], "CANCELED", f"cancelled to make room for build {build_id} in concurrency "
                              f"group {self.group!r} (queue-length {config.queue_length}, on-queue-full cancel-oldest)")  # fmt: skip
            else:
                admit.pipeline.tell(Refused(build_id, self._full_message(), admit.reply, admit.retry))
                return
        self._enqueue(admit)

    def _full_message(self) -> str:
        config = self.config
        return (
            f"concurrency group {self.group!r} is full: {len(self.running)} running (max-parallel "
            f"{config.max_parallel}) and {len(self.queue)} queued (queue-length {config.queue_length})"
        )

    def _enqueue(self, admit: Admit, front: bool = False) -> None:
        timeout = self.config.queue_timeout_minutes * 60
        deadline = self.now() + timeout
        timer = self.send_at(deadline, QueueTimeout(admit.build_id, deadline))
        waiter = _Waiter(admit.pipeline, admit.queued_at, timeout, deadline, timer)
        if front:
            self.queue.appendleft(admit.build_id, waiter)
        else:
            self.queue.append(admit.build_id, waiter)
        position = 1 if front else len(self.queue)
        admit.pipeline.tell(Queued(admit.build_id, position, admit.reply, admit.retry))

    def _cancel_everything_for(self, build_id: str) -> None:
        reason = f"cancelled by build {build_id} (cancel-in-progress in concurrency group {self.group!r})"
        for queued in list(self.queue.keys()):
            self._dequeue(queued, "CANCELED", reason)
        for running, pipeline in self.running.items():
            if running not in self.cancelled:
                self.cancelled.add(running)
                pipeline.tell(CancelBuild(running, reason))

    def _admit_next(self) -> None:
        while self.queue and len(self.running) < self.config.max_parallel:
            build_id, waiter = self.queue.popleft()
            waiter.timer.cancel()
            self.running[build_id] = waiter.pipeline
            waiter.pipeline.tell(Admitted(build_id, None))

    def _release(self, build_id: str) -> None:
        if self.running.pop(build_id, None) is not None:
            self.cancelled.discard(build_id)
            self._admit_next()
        else:
            waiter = self.queue.pop(build_id)
            if waiter is not None:
                waiter.timer.cancel()

    def _timeout(self, message: QueueTimeout) -> None:
        waiter = self.queue.get(message.build_id)
        if waiter is None or waiter.deadline != message.deadline:
            return  # admitted, withdrawn, or queued again since
        config = self.config
        blocking = ", ".join(list(self.running)[:3]) or "none"
        self._dequeue(
            message.build_id,
            "QUEUE_TIMEOUT",
            f"waited {config.queue_timeout_minutes:g} minute(s) in concurrency group {self.group!r} "
            f"(max-parallel {config.max_parallel}; running: {blocking})",
        )

    def _dequeue(self, build_id: str, status: str, reason: str) -> None:
        waiter = self.queue.pop(build_id)
        assert waiter is not None
        waiter.timer.cancel()
        waiter.pipeline.tell(Dequeued(build_id, status, reason))

    # -- introspection --------------------------------------------------------------------

    def _position(self, build_id: str) -> int | None:
        for position, queued in enumerate(self.queue, start=1):
            if queued == build_id:
                return position
        return None

    def _snapshot(self) -> GroupInfo:
        config = self.config
        running = list(self.running)
        queue = [
            QueueEntry(
                build_id=build_id,
                position=position,
                queued_at=rfc3339(waiter.queued_at) or "",
                deadline=rfc3339(waiter.queued_at + waiter.timeout) or "",
                pipeline_id=build_id.rsplit(".", 1)[0],
                waiting_for=running,
            )
            for position, (build_id, waiter) in enumerate(self.queue.items(), start=1)
        ]
        return GroupInfo(
            name=self.group,
            max_parallel=config.max_parallel,
            queue_length=config.queue_length,
            queue_timeout_minutes=config.queue_timeout_minutes,
            on_queue_full=config.on_queue_full,
            cancel_in_progress=config.cancel_in_progress,
            running=running,
            queue=queue,
        )


