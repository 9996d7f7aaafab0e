"""The event hub: every state change, numbered, kept briefly, pushed to subscribers.

Actors describe each change with a ``Record`` (a small struct, stamped as
it is made and not tracked by the garbage collector) and publish the
records of one handled message together, in one ``Publish``, rather than
one message per change.
Pipelines publish ``build``, ``job`` and ``step`` records, concurrency groups
``group`` records and pools ``node`` records (``actors.model.vocab`` lists
what each kind's ``status`` may be). The hub numbers the records, keeps a
bounded history for resuming streams (``Last-Event-ID``) and turns them into
``Event`` structs only for subscribers and readers. A subscriber whose
buffer is full is dropped rather than slowing the runtime. The hub also
keeps the build and job counters of ``/v1/stats``.

The history is an ``EventLog``: a ring of events that the hub writes and
anyone may read, like the ``Gauge``. The hub puts each record there as it
was published; the first read of an event puts a ``Kept`` in its place.
Readers that can follow it by position (the HTTP event streams) need no
queue of their own: each keeps a cursor, so a thousand streams replaying
the whole history share the same ``Kept`` objects, each built into an
``Event`` once and encoded once. A reader that falls more than the ring
behind has lost events and says so.

A subscriber holds a ``Subscription``: ``async for event in subscription``,
``await subscription.receive()``, ``subscription.receive_nowait()`` and
``subscription.close()`` (or ``async with``). Its events stop, and its
iteration ends, when the hub drops it (it fell ``buffer`` events behind),
when it is closed, or when the hub stops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .core import Actor, Ref
from .model.info import Event, rfc3339
from .model.vocab import BuildStatus, EventKind

__all__ = [
    "EventHub",
    "EventLog",
    "Kept",
    "Gauge",
    "Publish",
    "Subscribe",
    "Unsubscribe",
    "Subscription",
    "History",
    "Counters",
    "Record",
]

_BUILD, _JOB = EventKind.BUILD, EventKind.JOB
_QUEUE, _RUNNING = BuildStatus.QUEUE, BuildStatus.RUNNING


class _Change(msgspec.Struct, frozen=True, gc=False):
    # What every record says, positionally: Record(kind, status, reason, ...).
    kind: EventKind
    status: str | None
    reason: str | None = None


class Record(_Change, frozen=True, gc=False, kw_only=True):
    """One state change as an actor saw it; the hub numbers it and makes the ``Event``.

    Made in one way only: ``Record(kind, status, reason, **names)``, the
    names (``pipeline_id``, ``build_id``, ``job_id``, ``step_id``,
    ``attempt``, ``group``, ``node``, ``data``) by keyword, and stamped with
    the wall clock as it is made. The constructor is msgspec's, in C: a
    Python helper around it cost twice as much per event. ``previous`` is
    the status before the change where the publisher knows it (the hub's
    counters need it; events do not show it). Not tracked by the garbage
    collector.
    """

    pipeline_id: str | None = None
    build_id: str | None = None
    job_id: str | None = None
    step_id: str | None = None
    attempt: int | None = None
    previous: str | None = None
    group: str | None = None
    node: str | None = None
    data: dict[str, Any] | None = None
    time: float = msgspec.field(default_factory=time.time)


RESERVE_BLOCK = 100_000  # event ids reserved in the store at a time


class Gauge:
    """Builds not yet finished, as the hub has seen them: read-only for everyone else.

    The runtime's ``submit`` reads it to refuse new builds (``Overloaded``)
    without an ask per submission; it lags the pipelines by a mailbox at most.
    """

    __slots__ = ("unfinished",)

    def __init__(self) -> None:
        self.unfinished = 0


class Kept(msgspec.Struct, gc=False):
    """One published event as every reader shares it: its ``Event`` is built once, its bytes encoded once.

    The memos are filled by whichever reader asks first; every reader would
    compute the same value, so sharing them is safe without any ordering.
    A struct the garbage collector does not track (it refers to nothing that
    refers back): the ring holds 10,000 of them, and as a tracked object it
    was 8 of the 21 objects per build the collector kept rescanning.
    """

    id: int
    record: Record
    _event: Event | None = None
    _frame: bytes | None = None

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

    The hub puts each ``Record`` in the ring as it was published; the first
    read of it puts a ``Kept`` (its id and the readers' memos) in its place.
    Most events are never read: the hub no longer makes a ``Kept`` for each.
    """

    __slots__ = ("capacity", "last_id", "closed", "_ring", "_waiter", "_origin")

    def __init__(self, capacity: int = 10_000, first_id: int = 1) -> None:
        if capacity < 1:
            raise ValueError(f"an event log keeps at least 1 event, not {capacity}")
        self.capacity = capacity
        # After a restart with durable state the ids go on from the store's watermark (docs/design.md §10).
        self._origin = first_id
        self.last_id = first_id - 1
        self.closed = False  # the runtime has stopped: no event will come
        self._ring: list[Kept | Record | None] = [None] * capacity
        self._waiter: anyio.Event | None = None

    @property
    def first_id(self) -> int:
        """The oldest id still kept (``last_id + 1`` when empty)."""
        return max(self._origin, self.last_id - self.capacity + 1)

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
        found: list[Kept] = []
        for event_id in range(start, stop + 1):
            kept = ring[event_id % capacity]
            if type(kept) is Record:  # as the hub published it: wrapped once, for every reader
                kept = ring[event_id % capacity] = Kept(event_id, kept)
            found.append(kept)  # type: ignore[arg-type]
        return found

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
    buffer: int | float = 10_000  # events it may fall behind; math.inf: never dropped
    after: int | None = None  # replay history after this event id first


class Unsubscribe(msgspec.Struct, frozen=True):
    subscription: int  # Subscription.id


class History(msgspec.Struct, frozen=True):
    after: int = 0


class Counters(msgspec.Struct, frozen=True):
    pass


class Subscription:
    """A subscriber's end of the event stream (see the module docstring).

    ``receive()`` raises ``anyio.EndOfStream`` once the hub has dropped or
    ended the subscription and every event sent before has been read, and
    ``anyio.ClosedResourceError`` after ``close()``; ``async for`` simply ends
    in both cases. ``receive_nowait()`` raises ``anyio.WouldBlock`` when no
    event is waiting.
    """

    __slots__ = ("id", "_hub", "_stream", "_closed")

    def __init__(self, hub: Ref, subscription_id: int, stream: MemoryObjectReceiveStream[Event]) -> None:
        self.id = subscription_id
        self._hub = hub
        self._stream = stream
        self._closed = False

    async def receive(self) -> Event:
        """The next event, waiting for it."""
        return await self._stream.receive()

    def receive_nowait(self) -> Event:
        """The next event if one is waiting."""
        return self._stream.receive_nowait()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving: the hub forgets the subscription. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._stream.close()
            self._hub.tell(Unsubscribe(self.id))

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:  # fmt: skip
        self.close()


def _event(event_id: int, record: Record) -> Event:
    return Event(
        id=event_id, kind=record.kind, time=rfc3339(record.time) or "", status=record.status, reason=record.reason,
        pipeline_id=record.pipeline_id, build_id=record.build_id, job_id=record.job_id, step_id=record.step_id,
        attempt=record.attempt, group=record.group, node=record.node, data=record.data or {},
    )  # fmt: skip


class EventHub(Actor):
    """See the module docstring."""

    def __init__(self, history: int = 10_000, gauge: Gauge | None = None, log: EventLog | None = None,
                 reserve: Callable[[int], None] | None = None,
                 finished: Mapping[str, int] | None = None) -> None:  # fmt: skip
        self.log = log if log is not None else EventLog(history)
        self.next_id = self.log.last_id + 1  # a restarted hub goes on numbering
        # With durable state, ids are reserved in blocks in the store (``reserve(upto)``) so that
        # after a restart they continue past every id handed out, never reused (docs/design.md §10).
        self.reserve = reserve
        self.reserved = self.next_id - 1
        self._reserve()
        self.subscribers: dict[int, MemoryObjectSendStream[Event]] = {}
        self.next_subscriber = 1
        # ``finished``: the store's finished builds by status, so that a restarted server still counts them.
        # Plain dicts, not Counters: a Counter's item update cost 2.5x a dict's (CPython 3.11
        # specialises subscripts of exact dicts only), ten updates per build.
        self.builds: dict[str, int] = dict(finished or {})
        self.jobs: dict[str, int] = {}
        self.dropped_subscribers = 0
        self.gauge = gauge if gauge is not None else Gauge()

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Publish:
            self._publish(message.records)
        elif kind is Subscribe:
            return self._subscribe(message)
        elif kind is Unsubscribe:
            self._drop(message.subscription)
        elif kind is History:
            return [kept.event for kept in self.log.read(message.after, self.log.capacity)]
        elif kind is Counters:
            return {"builds": dict(self.builds), "jobs": dict(self.jobs), "last_event_id": self.next_id - 1}
        else:
            raise TypeError(f"event hub got an unexpected {kind.__name__}")
        return None

    async def stopping(self) -> None:
        # Subscribers' iterations end rather than wait for events that will never come.
        for subscription in list(self.subscribers):
            self._drop(subscription)

    def _reserve(self, count: int = 0) -> None:
        if self.reserve is not None and self.next_id + count + RESERVE_BLOCK // 2 > self.reserved:
            self.reserved = self.next_id + count + RESERVE_BLOCK
            self.reserve(self.reserved)

    def _publish(self, records: tuple[Record, ...]) -> None:
        count = len(records)
        if self.reserve is not None:
            self._reserve(count)
        log = self.log
        ring, capacity = log._ring, log.capacity  # the log's writer: appends inline, 8 records per build
        first = self.next_id
        start = first % capacity
        # the records themselves (EventLog.read wraps one in a Kept if anyone reads it): one slice
        # store while the batch does not wrap round the ring, not a store per record
        if start + count <= capacity:
            ring[start : start + count] = records
        else:
            for offset, record in enumerate(records):
                ring[(first + offset) % capacity] = record
        builds, jobs = self.builds, self.jobs
        builds_counted = False
        for record in records:
            kind = record.kind
            if kind is _BUILD:
                counter = builds
                builds_counted = True
            elif kind is _JOB:
                counter = jobs
            else:
                continue
            previous, status = record.previous, record.status
            if previous != status:
                if previous is not None:
                    try:
                        counter[previous] -= 1
                    except KeyError:  # counted before a restart, or never
                        counter[previous] = -1
                if status is not None:
                    try:
                        counter[status] += 1
                    except KeyError:
                        counter[status] = 1
        if self.subscribers:
            for offset, record in enumerate(records):
                event_id = first + offset
                kept = ring[event_id % capacity] = Kept(event_id, record)
                self._fan_out(kept.event)
        if builds_counted:  # read only between messages: once per batch, not per build record
            self.gauge.unfinished = builds.get(_QUEUE, 0) + builds.get(_RUNNING, 0)
        self.next_id = first + count
        log.last_id = first + count - 1
        log.notify()

    def _fan_out(self, event: Event) -> None:
        gone = None
        for subscription, stream in self.subscribers.items():
            try:
                stream.send_nowait(event)
            except anyio.WouldBlock:
                self.dropped_subscribers += 1
                gone = [*(gone or ()), subscription]
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                gone = [*(gone or ()), subscription]
        if gone:
            for subscription in gone:
                self._drop(subscription)

    def _subscribe(self, message: Subscribe) -> Subscription:
        backlog = [] if message.after is None else self.log.read(message.after, self.log.capacity)
        size = max(message.buffer, len(backlog) + 1) if message.buffer != math.inf else math.inf
        send, receive = anyio.create_memory_object_stream[Event](size)
        for kept in backlog:
            send.send_nowait(kept.event)  # the same Event for every subscriber: no copy each
        subscription = self.next_subscriber
        self.next_subscriber += 1
        self.subscribers[subscription] = send
        return Subscription(self.ref, subscription, receive)

    def _drop(self, subscription: int) -> None:
        send = self.subscribers.pop(subscription, None)
        if send is not None:
            send.close()
