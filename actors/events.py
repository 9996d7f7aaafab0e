"""The event hub: every state change, numbered, kept briefly, pushed to subscribers.

Actors describe each change with a ``Record`` (``actors.eventlog``: a small
struct, stamped as it is made and not tracked by the garbage collector)
and publish the records of one handled message together, in one
``Publish``, rather than one message per change.
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

A subscriber holds a ``Subscription`` (``actors.subscription``): ``async for
event in subscription``, ``await subscription.receive()``,
``subscription.receive_nowait()`` and ``subscription.close()`` (or ``async
with``). While anyone subscribes, the hub wraps each published batch in
``Kept`` objects once (not put in the ring) and hands every subscription
the same batch in one call; each ``Event`` is then built once, by the
first reader, for all. A subscription's events stop, and its
iteration ends, when the hub drops it (more than ``buffer`` events waiting
for it), when it is closed, or when the hub stops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .core import Actor
from .eventlog import EventLog, Kept, Record
from .model.vocab import BuildStatus, EventKind
from .subscription import Subscription, Unsubscribe

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


RESERVE_BLOCK = 100_000  # event ids reserved in the store at a time


class Gauge:
    """Builds not yet finished, as the hub has seen them: read-only for everyone else.

    The runtime's ``submit`` reads it to refuse new builds (``Overloaded``)
    without an ask per submission; it lags the pipelines by a mailbox at most.
    """

    __slots__ = ("unfinished",)

    def __init__(self) -> None:
        self.unfinished = 0


class Publish(msgspec.Struct, frozen=True):
    records: tuple[Record, ...]


class Subscribe(msgspec.Struct, frozen=True):
    buffer: int | float = 10_000  # events it may fall behind; math.inf: never dropped
    after: int | None = None  # replay history after this event id first


class History(msgspec.Struct, frozen=True):
    after: int = 0


class Counters(msgspec.Struct, frozen=True):
    pass


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
        self.subscribers: dict[int, Subscription] = {}
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
        for subscription in self.subscribers.values():
            subscription.end("the event hub stopped")
        self.subscribers.clear()

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
            # The subscribers' own Kept, made once for all of them, not put in the ring: the Events their
            # readers build go with the last reader, not 10,000 events later (kept alive there they cost
            # ~3 µs more per build, 64 clients and one reader, in the cache misses of a larger heap).
            # map, not a comprehension: Kept is called from C, without a bytecode loop (~30 ns an event)
            self._fan_out(list(map(Kept, range(first, first + count), records)))
        if builds_counted:  # read only between messages: once per batch, not per build record
            self.gauge.unfinished = builds.get(_QUEUE, 0) + builds.get(_RUNNING, 0)
        self.next_id = first + count
        log.last_id = first + count - 1
        log.notify()

    def _fan_out(self, batch: list[Kept]) -> None:
        # One call per subscriber per batch: the same Kept objects for all of them.
        gone = None
        for subscription in self.subscribers.values():
            if not subscription.deliver(batch):
                gone = [*(gone or ()), subscription]
        if gone:
            for subscription in gone:
                if not subscription.closed:  # dropped, not left
                    self.dropped_subscribers += 1
                del self.subscribers[subscription.id]

    def _subscribe(self, message: Subscribe) -> Subscription:
        backlog = [] if message.after is None else self.log.read(message.after, self.log.capacity)
        subscription = Subscription(self.ref, self.next_subscriber, message.buffer, backlog)
        self.next_subscriber += 1
        self.subscribers[subscription.id] = subscription
        return subscription

    def _drop(self, subscription: int) -> None:
        self.subscribers.pop(subscription, None)
