"""What the event hub keeps: ``Record``s as actors publish them, ``Kept`` events as readers share them, the ``EventLog`` ring.

Actors describe each change with a ``Record`` (a small struct, stamped as
it is made and not tracked by the garbage collector). The hub numbers the
records and writes them into an ``EventLog``; a record in the log becomes
a ``Kept`` (its id and the readers' memos) the first time anyone reads it,
and its ``Event`` is built once, by the first reader that asks, for every
reader that follows the log (the HTTP event streams, a subscription's
replayed history). Live subscriptions (``actors.subscription``) share a
``Kept`` of their own per event, made by the hub as it publishes and not
put in the log, so the ``Event``s they build go when they are read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from .model.info import Event, rfc3339
from .model.vocab import EventKind

__all__ = ["EventLog", "Kept", "Record", "make_event"]


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
    the wall clock as it is made, or with the ``time`` its publisher gives
    (a pipeline stamps the records of one message with one reading). The
    constructor is msgspec's, in C: a Python helper around it cost twice as
    much per event. ``previous`` is the status before the change where the
    publisher knows it (the hub's counters need it; events do not show it).
    Not tracked by the garbage collector.
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
            event = self._event = make_event(self.id, self.record)
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


_last_stamp: tuple[float | None, str] = (None, "")  # the last record time formatted here, and its text


def make_event(event_id: int, record: Record) -> Event:
    """The ``Event`` of a numbered record (``Kept.event`` memoizes it).

    The events a pipeline makes for one message share its one clock reading
    (``BuildDriver.clock``) and are read in turn: the last stamp formatted is
    kept, and most events reuse it (formatting one cost ~0.2 µs per event
    and subscriber, a third of what a subscriber paid per event)."""
    global _last_stamp
    stamp, last = record.time, _last_stamp  # one tuple, rebound whole: never half of it seen
    if stamp == last[0]:
        text = last[1]
    else:
        text = rfc3339(stamp) or ""
        _last_stamp = (stamp, text)
    # positionally, in Event's field order: thirteen keywords cost ~25 ns more per event
    return Event(event_id, record.kind, text, record.status, record.reason, record.pipeline_id, record.build_id,
                 record.job_id, record.step_id, record.attempt, record.group, record.node, record.data or {})


