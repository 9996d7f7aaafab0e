"""A subscriber's end of the event stream: the hub hands it whole batches, it gives them out one event at a time.

The hub (``actors.events``) delivers the events of each ``Publish`` to every
subscription at once: one ``deque.extend`` of the batch's ``Kept`` objects,
shared by every subscriber, and at most one wake-up of a waiting reader per
batch. ``receive()``, ``receive_nowait()`` and ``async for`` take the
waiting events one by one from that local queue without a task switch each
(an anyio memory stream cost a stream item, a wake-up and a checkpoint per
event: 2.7x the CPU of a build without subscribers). Each ``Event`` is
built once, by whichever reader asks first, for every reader.

``receive()`` waits only when no event is waiting: while events are
waiting it returns at once, without yielding to the scheduler. A reader
that awaits nothing else therefore runs through what has arrived and then
waits (where it can be cancelled); no more can arrive while it runs.

The ``buffer`` bound is counted in events: a subscription with more than
``buffer`` events waiting to be read is dropped by the hub. It keeps the
events that fitted (part of a batch, if the batch did not fit whole), its
reader gets them, and then its iteration ends; ``reason`` says why.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from types import TracebackType

import anyio
import msgspec

from .core import Ref
from .eventlog import Kept, make_event
from .model.info import Event

__all__ = ["Subscription", "Unsubscribe"]


class Unsubscribe(msgspec.Struct, frozen=True):
    subscription: int  # Subscription.id


class Subscription:
    """A subscriber's end of the event stream (see the module docstring).

    ``receive()`` raises ``anyio.EndOfStream`` once the hub has dropped or
    ended the subscription and every event delivered before has been read,
    and ``anyio.ClosedResourceError`` after ``close()`` (which discards the
    events not yet read); ``async for`` simply ends in both cases.
    ``receive_nowait()`` raises ``anyio.WouldBlock`` when no event is
    waiting. ``reason`` is None while the subscription is open, then says
    why it ended.
    """

    __slots__ = ("id", "reason", "_hub", "_queue", "_bound", "_waiter", "_ended", "_closed")

    def __init__(self, hub: Ref, subscription_id: int, buffer: int | float, backlog: Iterable[Kept] = ()) -> None:
        self.id = subscription_id
        self.reason: str | None = None
        self._hub = hub
        self._queue: deque[Kept] = deque(backlog)
        # The replayed history always fits, with room for one live event (as an anyio stream sized so did).
        self._bound = buffer if buffer == math.inf else max(int(buffer), len(self._queue) + 1)
        self._waiter: anyio.Event | None = None
        self._ended = False  # the hub sends no more: what is queued is still read
        self._closed = False  # the subscriber closed it: nothing more is read

    # -- the subscriber's side ---------------------------------------------------------------

    async def receive(self) -> Event:
        """The next event, waiting for it only if none is waiting."""
        while True:
            queue = self._queue
            if queue:
                return queue.popleft().event
            await self._wait()

    def receive_nowait(self) -> Event:
        """The next event if one is waiting."""
        queue = self._queue
        if queue:
            return queue.popleft().event
        self._raise_if_over()
        raise anyio.WouldBlock

    async def receive_kept(self) -> list[Kept]:
        """Every event waiting, oldest first, waiting for one if none is: the form for a reader that folds batches.

        The events come as the hub keeps them: ``Kept`` (``id``, the
        publisher's ``record`` with its time as a float, and ``event``, built
        on first use), so a reader that needs only the record (the metrics
        collector) builds no ``Event`` at all. Ends like ``receive()``.
        """
        while not self._queue:
            await self._wait()
        batch = list(self._queue)
        self._queue.clear()
        return batch

    @property
    def closed(self) -> bool:
        """Whether the subscriber closed it (rather than the hub ending it)."""
        return self._closed

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        queue = self._queue
        if queue:  # the common case, without the call and the try below
            kept = queue.popleft()
            event = kept._event  # Kept.event inlined: a call less per event and reader
            if event is None:
                event = kept._event = make_event(kept.id, kept.record)
            return event
        try:
            return await self.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Stop receiving: the hub forgets the subscription and the events not read are discarded. Closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._queue.clear()
            if self.reason is None:
                self.reason = "closed by the subscriber"
            self._wake()  # a reader waiting in another task raises ClosedResourceError
            self._hub.tell(Unsubscribe(self.id))

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        traceback: TracebackType | None) -> None:  # fmt: skip
        self.close()

    async def _wait(self) -> None:
        self._raise_if_over()
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = anyio.Event()
        await waiter.wait()

    def _raise_if_over(self) -> None:
        if self._closed:
            raise anyio.ClosedResourceError
        if self._ended:
            raise anyio.EndOfStream

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            waiter.set()

    # -- the hub's side ----------------------------------------------------------------------

    def deliver(self, batch: list[Kept]) -> bool:
        """The hub's: queue a published batch. False when the subscription is over: closed, or dropped now.

        A batch that does not fit whole is queued as far as it fits, in
        events, and the subscription is dropped after those. A reader
        waiting on an empty queue counts as room for one more (as the
        receiver waiting on an anyio stream took one event past its buffer).
        """
        if self._closed or self._ended:
            return False
        queue = self._queue
        waiter = self._waiter
        room = self._bound - len(queue)
        if len(batch) > room:
            if waiter is not None and not queue:
                room += 1
            if len(batch) > room:
                # room is -1 when a woken reader has not yet taken the one event it made room for
                queue.extend(batch[: max(0, int(room))])
                self.end(f"dropped: more than {self._bound} events were waiting to be read")
                return False
        queue.extend(batch)
        if waiter is not None:
            self._waiter = None
            waiter.set()
        return True

    def end(self, reason: str) -> None:
        """The hub's: no more events will come; the reader gets those queued, then the end."""
        if not self._ended and not self._closed:
            self._ended = True
            self.reason = reason
            self._wake()
