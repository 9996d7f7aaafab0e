"""The event hub: every state change, numbered, kept briefly, pushed to subscribers.

Actors publish raw records (tuples) in batches, one message per handled
message rather than one per change; the hub numbers them, keeps a bounded
history for resuming streams (``Last-Event-ID``) and turns them into
``Event`` structs only for subscribers and readers. A subscriber whose buffer
is full is dropped rather than slowing the runtime. The hub also keeps the
build and job counters of ``/v1/stats``.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import anyio
import msgspec
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .core import Actor
from .model.info import Event, rfc3339

__all__ = ["EventHub", "Gauge", "Publish", "Subscribe", "Unsubscribe", "History", "Counters", "Record"]

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

    def __init__(self, history: int = 10_000, gauge: Gauge | None = None) -> None:
        self.next_id = 1
        self.history: deque[tuple[int, Record]] = deque(maxlen=history)
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
            return [_event(i, r) for i, r in self.history if i > message.after]
        elif kind is Counters:
            return {"builds": dict(self.builds), "jobs": dict(self.jobs), "last_event_id": self.next_id - 1}
        else:
            raise TypeError(f"event hub got an unexpected {kind.__name__}")
        return None

    def _publish(self, records: Iterable[Record]) -> None:
        history, builds, jobs = self.history, self.builds, self.jobs
        subscribers = self.subscribers
        for record in records:
            event_id = self.next_id
            self.next_id += 1
            history.append((event_id, record))
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
                event = _event(event_id, record)
                for stream in list(subscribers):
                    try:
                        stream.send_nowait(event)
                    except anyio.WouldBlock:
                        self.dropped_subscribers += 1
                        self._drop(stream)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                        self._drop(stream)

    def _subscribe(self, message: Subscribe) -> MemoryObjectReceiveStream[Event]:
        backlog = [] if message.after is None else [(i, r) for i, r in self.history if i > message.after]
        size = max(message.buffer, len(backlog) + 1) if message.buffer != math.inf else math.inf
        send, receive = anyio.create_memory_object_stream[Event](size)
        for event_id, record in backlog:
            send.send_nowait(_event(event_id, record))
        self.subscribers.append(send)
        return receive

    def _drop(self, stream: Any) -> None:
        for send in self.subscribers:
            if send is stream or getattr(stream, "_state", None) is getattr(send, "_state", object()):
                self.subscribers.remove(send)
                send.close()
                return
