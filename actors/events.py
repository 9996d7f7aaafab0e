"""The event hub: every state change, numbered, kept briefly, pushed to subscribers.

Actors publish raw records (tuples) in batches, one message per handled
message rather than one per change; the hub numbers them, keeps a bounded
history for resuming streams (``Last-Event-ID``) and turns them into
``Event`` structs only for subscribers and readers. A subscriber whose buffer
is full is dropped rather than slowing the runtime. The hub also keeps the
build and job counters of ``/v1/stats``.

The history is an ``EventLog``: a ring of ``Kept`` events that the hub
writes and anyone may read, like the ``Gauge``. Readers that can follow it
by position (the HTTP event streams) need no queue of their own: each keeps
a cursor, so a thousand streams replaying the whole history share the same
``Kept`` objects, each built into an ``Event`` once and encoded once. A
reader that falls more than the ring behind has lost events and says so.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .core import Actor
from .model.info import Event, rfc3339

__all__ = ["EventHub", "EventLog", "Kept", "Gauge", "Publish", "Subscribe", "Unsubscribe", "History", "Counters",
           "Record"]  # fmt: skip

# (kind, previous status, status, reason, pipeline_id, build_id, job_id, step_id, attempt, wall time, data)
Record = tuple[str, str | None, str | None, str | None, str | None, str | None, str | None, str | None,
               int | None, float, dict[str, Any] | None]  # fmt: skip


class Gauge:
    """Builds not yet finished, as the hub has seen them: read-only for everyone else.

    The runtime's ``submit`` reads it to refuse new builds (``Overloaded``)
    without an ask per submission; it lags the pipelines by a mailbox at most.
    """

    __slots__ = ("unfinished",)

    def __init__(self) -> None:
        self.unfinished = 0


class Kept:
    """One published event as every reader shares it: its ``Event`` is built once, its bytes encoded once.

    The memos are filled by whichever reader asks first; every reader would
    compute the same value, so sharing them is safe without any ordering.
    """

    __slots__ = ("id", "record", "_event", "_frame")

    def __init__(self, event_id: int, record: Record) -> None:
        self.id = event_id
        self.record = record
        self._event: Event | None = None
        self._frame: bytes | None = None

    @property
    def event(self) -> Event:
        event = self._event
        if event is None:
            event = self._event = _event(self.id, self.record)
        return event

    def frame(self, encode: Callable[[Event], bytes]) -> bytes:
        """The event encoded by ``encode`` (one encoder per process: the server-sent events format)."""
        frame = self._frame
        if frame is None:
            frame = self._frame = encode(self.event)
        return frame


class EventLog:
    """The last ``capacity`` events, by id, in a ring: the hub appends, anyone reads.

    ``read(after, limit)`` returns the kept events after an id, oldest first;
    ``wait(after)`` returns once there is an event after that id. Reading
    never copies the ring, so any number of readers cost no memory of their own.
    """

    __slots__ = ("capacity", "last_id", "closed", "_ring", "_waiter")

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError(f"an event log keeps at least 1 event, not {capacity}")
        self.capacity = capacity
        self.last_id = 0
        self.closed = False  # the runtime has stopped: no event will come
        self._ring: list[Kept | None] = [None] * capacity
        self._waiter: anyio.Event | None = None

    @property
    def first_id(self) -> int:
        """The oldest id still kept (``last_id + 1`` when empty)."""
        return max(1, self.last_id - self.capacity + 1)

    def append(self, kept: Kept) -> None:
        """The hub's: add the next event (its id is ``last_id + 1``)."""
        self._ring[kept.id % self.capacity] = kept
        self.last_id = kept.id

    def notify(self) -> None:
        """The hub's, after a batch: wake the readers waiting for news."""
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            waiter.set()

    def read(self, after: int, limit: int) -> list[Kept]:
        """Up to ``limit`` kept events with ids above ``after``, oldest first."""
        start = max(after + 1, self.first_id)
        stop = min(self.last_id, start + limit - 1)
        ring, capacity = self._ring, self.capacity
        return [ring[i % capacity] for i in range(start, stop + 1)]  # type: ignore[misc]

    def close(self) -> None:
        """No more events will come (the runtime is closing): wake every reader."""
        self.closed = True
        self.notify()

    async def wait(self, after: int) -> None:
        """Return once an event with an id above ``after`` has been appended, or the log is closed."""
        while self.last_id <= after and not self.closed:
            if self._waiter is None:
                self._waiter = anyio.Event()
            await self._waiter.wait()


class Publish(msgspec.Struct, frozen=True):
    records: tuple[Record, ...]


class Subscribe(msgspec.Struct, frozen=True):
    buffer: int = 10_000
    after: int | None = None  # replay history after this event id first


class Unsubscribe(msgspec.Struct, frozen=True):
    stream: Any


class History(msgspec.Struct, frozen=True):
    after: int = 0


class Counters(msgspec.Struct, frozen=True):
    pass


def _event(event_id: int, record: Record) -> Event:
    kind, _, status, reason, pipeline_id, build_id, job_id, step_id, attempt, when, data = record
    return Event(
        id=event_id, kind=kind, time=rfc3339(when) or "", status=status, reason=reason,
        pipeline_id=pipeline_id, build_id=build_id, job_id=job_id, step_id=step_id,
        attempt=attempt, data=data or {},
    )  # fmt: skip


class EventHub(Actor):
    """See the module docstring."""

    def __init__(self, history: int = 10_000, gauge: Gauge | None = None, log: EventLog | None = None) -> None:
        self.next_id = 1
        self.log = log if log is not None else EventLog(history)
        self.next_id = self.log.last_id + 1  # a restarted hub goes on numbering
        self.subscribers: list[MemoryObjectSendStream[Event]] = []
        self.builds: Counter[str] = Counter()
        self.jobs: Counter[str] = Counter()
        self.dropped_subscribers = 0
        self.gauge = gauge if gauge is not None else Gauge()

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Publish:
            self._publish(message.records)
        elif kind is Subscribe:
            return self._subscribe(message)
        elif kind is Unsubscribe:
            self._drop(message.stream)
        elif kind is History:
            return [kept.event for kept in self.log.read(message.after, self.log.capacity)]
        elif kind is Counters:
            return {"builds": dict(self.builds), "jobs": dict(self.jobs), "last_event_id": self.next_id - 1}
        else:
            raise TypeError(f"event hub got an unexpected {kind.__name__}")
        return None

    def _publish(self, records: Iterable[Record]) -> None:
        log, builds, jobs = self.log, self.builds, self.jobs
        subscribers = self.subscribers
        for record in records:
            event_id = self.next_id
            self.next_id += 1
            kept = Kept(event_id, record)
            log.append(kept)
            kind, previous, status = record[0], record[1], record[2]
            counter = builds if kind == "build" else jobs if kind == "job" else None
            if counter is not None and previous != status:
                if previous is not None:
                    counter[previous] -= 1
                if status is not None:
                    counter[status] += 1
                if counter is builds:
                    self.gauge.unfinished = builds["QUEUE"] + builds["RUNNING"]
            if subscribers:
                event = kept.event
                for stream in list(subscribers):
                    try:
                        stream.send_nowait(event)
                    except anyio.WouldBlock:
                        self.dropped_subscribers += 1
                        self._drop(stream)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        self._drop(stream)
        log.notify()

    def _subscribe(self, message: Subscribe) -> MemoryObjectReceiveStream[Event]:
        backlog = [] if message.after is None else self.log.read(message.after, self.log.capacity)
        size = max(message.buffer, len(backlog) + 1) if message.buffer != math.inf else math.inf
        send, receive = anyio.create_memory_object_stream[Event](size)
        for kept in backlog:
            send.send_nowait(kept.event)  # the same Event for every subscriber: no copy each
        self.subscribers.append(send)
        return receive

    def _drop(self, stream: Any) -> None:
        for send in self.subscribers:
            if send is stream or getattr(stream, "_state", None) is getattr(send, "_state", object()):
                self.subscribers.remove(send)
                send.close()
                return
