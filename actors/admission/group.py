"""Concurrency groups: a named FIFO admission gate shared by pipelines.

A group runs at most ``max-parallel`` builds and queues at most
``queue-length`` more, each for at most ``queue-timeout-minutes``. When the
queue is full a new build is refused (``reject``) or the oldest queued build
is cancelled to make room (``cancel-oldest``). With ``cancel-in-progress`` a
new build cancels the group's running and queued builds and then waits at
the head of the queue until the cancelled ones have released their places:
``max-parallel`` holds at every instant, even while they stop.

The limits come with each ``Admit`` (the latest wins), since pipelines that
render the same group name share it. Retries inside a running build never
come here (docs/design.md §3.1 item 4).

Queue timeouts: a waiter times out exactly ``queue-timeout-minutes`` after
it was queued, with the timeout it was queued with (a later ``Admit`` may
change the limit for those that follow). The group keeps ONE timer in the
system's timer service, armed for the earliest deadline of its queue
(``DeadlineQueue`` finds it), not a timer per waiter: those cost ~350 B
each and one message hop per expiry. When the timer fires, every due waiter
is taken in one handler and each pipeline is told one ``Dequeued`` listing
its builds, so 100k waiters sharing a deadline take two messages, not 200k.
The timer is re-armed when an earlier deadline is queued and when it fires.
When the earliest waiter leaves (admitted, withdrawn, cancelled) the timer
is left as it is: firing early finds nothing due and re-arms, which is
cheaper than a cancel and a new timer per admission. It is cancelled when
the queue empties.

Events: every admission, queueing, refusal, departure from the queue and
release is published to the event hub as a ``group`` event (the words are
``GroupChange``'s), those of one handled message in one ``Publish``, so
``GET /v1/events?kind=group`` shows each build's way through the group.

Retirement: a group with nothing running and nothing queued for
``IDLE_AFTER`` (five minutes) stops itself (``actors.admission.idle``), so group
names rendered per build do not leave an actor behind each. The next
``Admit`` for its name starts a fresh group through the directory; no
message is lost (the stop happens only with an empty mailbox, and the
directory never hands out a stopping group). The fresh group needs nothing
from the old one: it held no build, the limits come with every ``Admit``,
and a ``Release`` for a build it never saw is ignored. A retired group is no
longer listed by ``rt.groups()``.
"""

from __future__ import annotations

import math
import time
from typing import Any

import msgspec

from ..core import Actor, Ref
from ..events import Publish, Record
from ..queues.deadlines import DeadlineQueue, EarliestTimer
from .idle import IDLE_AFTER, IdleCheck, IdleRetirement
from ..model.messages import Admit, Admitted, CancelBuild, Dequeued, Queued, Refused, Release
from ..model.info import GroupInfo, QueueEntry, rfc3339
from ..model.spec import Concurrency
from ..model.vocab import BuildStatus, EventKind, GroupChange, OnQueueFull

__all__ = ["GroupActor", "GroupSnapshot", "QueuePosition"]


class GroupSnapshot(msgspec.Struct, frozen=True):
    pass


class QueuePosition(msgspec.Struct, frozen=True):
    build_id: str


class _Expire(msgspec.Struct, frozen=True):
    """The group's timer fired: end the waiters that are due."""


_EXPIRE = _Expire()


class _Waiter:
    """A queued build: with its deadline float, the only objects a waiter costs the group."""

    __slots__ = ("key", "pipeline", "queued_at", "timeout", "deadline")

    def __init__(self, build_id: str, pipeline: Ref, queued_at: float, timeout: float, deadline: float) -> None:
        self.key = build_id  # the DeadlineQueue key
        self.pipeline = pipeline
        self.queued_at = queued_at  # wall clock, for people
        self.timeout = timeout  # seconds
        self.deadline = deadline  # system clock, for the timer


class GroupActor(Actor):
    """One concurrency group. See the module docstring."""

    def __init__(self, name: str, idle_after: float = IDLE_AFTER, hub: Ref | None = None) -> None:
        self.group = name
        self.config = Concurrency(group=name)
        self.running: dict[str, Ref] = {}
        self.cancelled: set[str] = set()  # running builds cancelled by cancel-in-progress
        self.queue: DeadlineQueue[_Waiter] = DeadlineQueue()
        self.timer = EarliestTimer(self.queue, lambda deadline: self.send_at(deadline, _EXPIRE))
        self._shared_timeout = math.nan  # the last queue timeout (s): one float object for its waiters
        self.idle = IdleRetirement(idle_after)  # stops the group once idle that long
        self.hub = hub  # where its group events go (none: not published)
        self.outbox: list[Record] = []  # the events of the message being handled

    async def started(self) -> None:
        self.idle.settle(self, True)  # a group nobody tells anything still retires

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Admit:
            self._admit(message)
        elif kind is Release:
            self._release(message.build_id)
        elif kind is _Expire:
            self._expire()
        elif kind is GroupSnapshot:
            return self._snapshot()
        elif kind is QueuePosition:
            return self._position(message.build_id)
        elif kind is IdleCheck:
            self.idle.fire(self, message)
            return None
        else:
            raise TypeError(f"group {self.group!r} got an unexpected {kind.__name__}")
        if self.outbox:
            self._publish()
        self.idle.settle(self, self.is_idle)
        return None

    @property
    def is_idle(self) -> bool:
        """Nothing running, nothing queued: the group holds nothing for anyone."""
        return not self.running and not self.queue

    # -- admission ------------------------------------------------------------------

    def _admit(self, admit: Admit) -> None:
        self.config = config = admit.config
        build_id = admit.build_id
        if build_id in self.running or build_id in self.queue:
            message = f"build {build_id!r} is already in group {self.group!r}"
            admit.pipeline.tell(Refused(build_id, message))
            self._event(GroupChange.REFUSED, build_id, message)
            return
        if config.cancel_in_progress:
            self._cancel_everything_for(build_id)
            self._enqueue(admit, front=True)
            self._admit_next()
            return
        if len(self.running) < config.max_parallel and not self.queue:
            self.running[build_id] = admit.pipeline
            admit.pipeline.tell(Admitted(build_id))
            self._event(GroupChange.ADMITTED, build_id)
            return
        if len(self.queue) >= config.queue_length:
            head = self.queue.head()
            if config.on_queue_full == OnQueueFull.CANCEL_OLDEST and head is not None:
                self._dequeue(head.key, BuildStatus.CANCELED, f"cancelled to make room for build {build_id} in "
                              f"concurrency group {self.group!r} (queue-length {config.queue_length}, "
                              "on-queue-full cancel-oldest)")  # fmt: skip
            else:
                message = self._full_message()
                admit.pipeline.tell(Refused(build_id, message))
                self._event(GroupChange.REFUSED, build_id, message)
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
        if timeout == self._shared_timeout:
            timeout = self._shared_timeout  # one object for all: a float of its own is 24 B per waiter
        else:
            self._shared_timeout = timeout
        # A build restored after a restart keeps what was left of its original wait (docs/design.md §10).
        left = timeout if admit.deadline is None else max(0.0, admit.deadline - time.time())
        deadline = self.now() + left
        waiter = _Waiter(admit.build_id, admit.pipeline, admit.queued_at, timeout, deadline)
        if front:
            self.queue.appendleft(waiter)
        else:
            self.queue.append(waiter)
        self.timer.queued(deadline)
        position = 1 if front else len(self.queue)
        admit.pipeline.tell(Queued(admit.build_id, position))
        self._event(GroupChange.QUEUED, admit.build_id, position=position)

    def _cancel_everything_for(self, build_id: str) -> None:
        reason = f"cancelled by build {build_id} (cancel-in-progress in concurrency group {self.group!r})"
        queued = [self.queue.popleft() for _ in range(len(self.queue))]
        self._tell_dequeued(queued, BuildStatus.CANCELED, reason)
        self.timer.shrank()
        for running, pipeline in self.running.items():
            if running not in self.cancelled:
                self.cancelled.add(running)
                pipeline.tell(CancelBuild(running, reason))

    def _admit_next(self) -> None:
        while self.queue and len(self.running) < self.config.max_parallel:
            waiter = self.queue.popleft()
            self.running[waiter.key] = waiter.pipeline
            waiter.pipeline.tell(Admitted(waiter.key))
            self._event(GroupChange.ADMITTED, waiter.key)
        self.timer.shrank()

    def _release(self, build_id: str) -> None:
        if self.running.pop(build_id, None) is not None:
            self.cancelled.discard(build_id)
            self._event(GroupChange.RELEASED, build_id)
            self._admit_next()
        elif self.queue.pop(build_id) is not None:
            self._event(GroupChange.DEQUEUED, build_id, "withdrawn by its pipeline")
            self.timer.shrank()

    def _dequeue(self, build_id: str, status: BuildStatus, reason: str) -> None:
        waiter = self.queue.pop(build_id)
        assert waiter is not None
        self._tell_dequeued([waiter], status, reason)
        self.timer.shrank()

    # -- queue timeouts -------------------------------------------------------------------

    def _expire(self) -> None:
        """The timer fired: end every due waiter now, one message per pipeline, then re-arm.

        A waiter admitted, withdrawn or cancelled before its deadline has left
        the queue, so it cannot be here; one queued again has a new deadline.
        """
        self.timer.fired()
        batches: dict[tuple[Ref, float], list[str]] = {}  # one per pipeline, unless timeouts differ
        for waiter in self.queue.pop_due(self.now()):
            key = (waiter.pipeline, waiter.timeout)
            build_ids = batches.get(key)
            if build_ids is None:
                batches[key] = build_ids = []
            build_ids.append(waiter.key)
        reasons: dict[float, str] = {}
        for (pipeline, timeout), build_ids in batches.items():
            reason = reasons.get(timeout)
            if reason is None:
                reasons[timeout] = reason = self._timeout_reason(timeout)
            pipeline.tell(Dequeued(tuple(build_ids), BuildStatus.QUEUE_TIMEOUT, reason))
            self._events(GroupChange.QUEUE_TIMEOUT, build_ids, reason)
        self.timer.arm()

    def _timeout_reason(self, timeout: float) -> str:
        """Why a waiter that waited ``timeout`` seconds was let go: the group, its limit, who runs."""
        blocking = ", ".join(list(self.running)[:3]) or "none"
        return (f"waited {timeout / 60:g} minute(s) in concurrency group {self.group!r} "
                f"(max-parallel {self.config.max_parallel}; running: {blocking})")  # fmt: skip

    def _tell_dequeued(self, waiters: list[_Waiter], status: BuildStatus, reason: str) -> None:
        """Tell each pipeline, in one message, which of its builds left the queue without running."""
        by_pipeline: dict[Ref, list[str]] = {}
        for waiter in waiters:
            by_pipeline.setdefault(waiter.pipeline, []).append(waiter.key)
        for pipeline, build_ids in by_pipeline.items():
            pipeline.tell(Dequeued(tuple(build_ids), status, reason))
            self._events(GroupChange(status), build_ids, reason)  # CANCELED or QUEUE_TIMEOUT: the same word

    # -- events ---------------------------------------------------------------------------

    def _event(self, change: GroupChange, build_id: str, reason: str | None = None, position: int | None = None
               ) -> None:  # fmt: skip
        """Note a group event (see ``GroupChange``); sent with the others of this message."""
        if self.hub is None:
            return
        data: dict[str, Any] = {"running": len(self.running), "queued": len(self.queue)}
        if position is not None:
            data["position"] = position
        self.outbox.append(Record(EventKind.GROUP, change, reason, pipeline_id=build_id.rpartition(".")[0],
                                  build_id=build_id, group=self.group, data=data))  # fmt: skip

    def _events(self, change: GroupChange, build_ids: list[str], reason: str) -> None:
        """The events of builds of one pipeline that left the queue together, in their order.

        A timer fire may end 100k waiters: their events share the pipeline's
        id and one (read-only) ``data``, the counts after they all left.
        """
        if self.hub is None or not build_ids:
            return
        pipeline_id, group = build_ids[0].rpartition(".")[0], self.group
        data = {"running": len(self.running), "queued": len(self.queue)}
        self.outbox.extend([Record(EventKind.GROUP, change, reason, pipeline_id=pipeline_id, build_id=build_id,
                                   group=group, data=data) for build_id in build_ids])  # fmt: skip

    def _publish(self) -> None:
        assert self.hub is not None
        self.hub.tell(Publish(tuple(self.outbox)))
        self.outbox.clear()

    # -- introspection --------------------------------------------------------------------

    def _position(self, build_id: str) -> int | None:
        for position, waiter in enumerate(self.queue, start=1):
            if waiter.key == build_id:
                return position
        return None

    def _snapshot(self) -> GroupInfo:
        config = self.config
        running = list(self.running)
        queue = [
            QueueEntry(
                build_id=waiter.key,
                position=position,
                queued_at=rfc3339(waiter.queued_at) or "",
                deadline=rfc3339(waiter.queued_at + waiter.timeout) or "",
                pipeline_id=waiter.key.rsplit(".", 1)[0],
                waiting_for=running,
            )
            for position, waiter in enumerate(self.queue, start=1)
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


