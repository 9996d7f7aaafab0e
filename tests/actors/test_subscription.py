"""Subscriptions fed in batches: what batching could break.

The hub hands each subscription a whole ``Publish`` batch at once and the
subscription gives the events out one by one; these tests pin down that the
``buffer`` bound still counts events (a subscriber is dropped part-way
through a batch), that ``receive_nowait`` and ``receive`` cross batch
boundaries in order, that ``close()`` discards what was not read and wakes
a waiting reader, that subscribers share the very same ``Event`` objects,
and that a reader in another task is woken by a batch. The ``anyio`` tests
run on trio and on asyncio.
"""

from __future__ import annotations

import math

import anyio
import pytest

from actors.core import open_system
from actors.events import Counters, EventHub, Publish, Record, Subscribe, Subscription
from actors.model.vocab import BuildStatus, EventKind

pytestmark = pytest.mark.anyio


def batch(*numbers: int) -> Publish:
    """One Publish of a QUEUE record per build number: one batch."""
    return Publish(tuple(Record(EventKind.BUILD, BuildStatus.QUEUE, pipeline_id="app", build_id=f"app.{number}")
                         for number in numbers))  # fmt: skip


async def settled(hub: object) -> None:
    """Every message told to the hub before this has been handled (its mailbox is in order)."""
    await hub.ask(Counters())  # type: ignore[attr-defined]


async def drain(subscription: Subscription) -> list[str | None]:
    return [event.build_id async for event in subscription]


async def test_a_subscriber_is_dropped_part_way_through_a_batch_counted_in_events() -> None:
    hub_actor = EventHub()
    async with open_system() as system:
        hub = system.spawn(lambda: hub_actor)
        slow = await hub.ask(Subscribe(buffer=3))
        whole = await hub.ask(Subscribe(buffer=math.inf))
        hub.tell(batch(1, 2, 3, 4, 5))  # one batch of 5 for a buffer of 3
        await settled(hub)
        assert slow.reason is not None and "dropped" in slow.reason and "3 events" in slow.reason
        assert whole.reason is None
        assert await drain(slow) == ["app.1", "app.2", "app.3"]  # what fitted, then the end
        with pytest.raises(anyio.EndOfStream):
            await slow.receive()
        with pytest.raises(anyio.EndOfStream):
            slow.receive_nowait()
        hub.tell(batch(6))
        await settled(hub)
        assert [whole.receive_nowait().build_id for _ in range(6)] == [f"app.{n}" for n in range(1, 7)]
        assert list(hub_actor.subscribers) == [whole.id] and hub_actor.dropped_subscribers == 1
        whole.close()


async def test_the_bound_counts_events_across_batches_not_batches() -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        subscription = await hub.ask(Subscribe(buffer=4))
        hub.tell(batch(1, 2))
        hub.tell(batch(3, 4))  # 4 events in 2 batches: exactly the bound
        await settled(hub)
        assert subscription.reason is None
        assert subscription.receive_nowait().build_id == "app.1"  # one read: room for one more
        hub.tell(batch(5))
        await settled(hub)
        assert subscription.reason is None
        hub.tell(batch(6, 7))  # 4 waiting, 2 more: the first does not fit either
        await settled(hub)
        assert await drain(subscription) == ["app.2", "app.3", "app.4", "app.5"]
        assert subscription.reason is not None and "dropped" in subscription.reason


async def test_receive_nowait_and_receive_cross_batch_boundaries_in_order() -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        subscription = await hub.ask(Subscribe())
        with pytest.raises(anyio.WouldBlock):
            subscription.receive_nowait()
        hub.tell(batch(1, 2))
        hub.tell(batch(3))
        hub.tell(batch(4, 5))
        await settled(hub)
        got = [subscription.receive_nowait(), await subscription.receive(), subscription.receive_nowait(),
               await subscription.receive(), subscription.receive_nowait()]  # fmt: skip
        assert [(event.id, event.build_id) for event in got] == [(n, f"app.{n}") for n in range(1, 6)]
        with pytest.raises(anyio.WouldBlock):
            subscription.receive_nowait()
        subscription.close()


async def test_close_discards_what_was_not_read_and_the_hub_forgets_it() -> None:
    hub_actor = EventHub()
    async with open_system() as system:
        hub = system.spawn(lambda: hub_actor)
        subscription = await hub.ask(Subscribe(buffer=10))
        hub.tell(batch(1, 2, 3))
        await settled(hub)
        assert (await subscription.receive()).build_id == "app.1"
        subscription.close()
        assert subscription.closed and subscription.reason == "closed by the subscriber"
        with pytest.raises(anyio.ClosedResourceError):
            subscription.receive_nowait()  # app.2 and app.3 are gone
        with pytest.raises(anyio.ClosedResourceError):
            await subscription.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await subscription.receive_kept()
        assert await drain(subscription) == []
        for number in range(4, 30):  # far past its buffer: nothing kept for it, no drop counted
            hub.tell(batch(number))
        await settled(hub)
        assert hub_actor.subscribers == {} and hub_actor.dropped_subscribers == 0


async def test_close_wakes_a_reader_waiting_in_another_task() -> None:
    ended: list[str] = []

    async def read(subscription: Subscription) -> None:
        try:
            await subscription.receive()
        except anyio.ClosedResourceError:
            ended.append("closed")

    async with open_system() as system:
        hub = system.spawn(EventHub)
        subscription = await hub.ask(Subscribe())
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, subscription)
                await anyio.wait_all_tasks_blocked()
                subscription.close()
    assert ended == ["closed"]


async def test_subscribers_share_the_same_events_and_each_gets_every_one() -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        first = await hub.ask(Subscribe())
        second = await hub.ask(Subscribe())
        hub.tell(batch(1, 2, 3))
        hub.tell(batch(4))
        await settled(hub)
        one = [first.receive_nowait() for _ in range(4)]
        other = [second.receive_nowait() for _ in range(4)]
        assert [event.id for event in one] == [1, 2, 3, 4]
        assert all(a is b for a, b in zip(one, other))  # built once, shared: they are frozen
        history = await hub.ask(Counters())
        assert history["last_event_id"] == 4
        first.close()
        hub.tell(batch(5))
        await settled(hub)
        assert second.receive_nowait().build_id == "app.5"
        second.close()


async def test_a_waiting_reader_is_woken_by_a_batch_and_reads_it_whole() -> None:
    seen: list[int] = []

    async def read(subscription: Subscription) -> None:
        async for event in subscription:
            seen.append(event.id)

    async with open_system() as system:
        hub = system.spawn(EventHub)
        subscription = await hub.ask(Subscribe(buffer=1))  # a waiting reader is room for one more
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, subscription)
                await anyio.wait_all_tasks_blocked()
                hub.tell(batch(1))
                await settled(hub)
                await anyio.wait_all_tasks_blocked()
                hub.tell(batch(2, 3))
                await settled(hub)
                await anyio.wait_all_tasks_blocked()
                subscription.close()
    assert seen == [1, 2, 3]
    assert subscription.reason == "closed by the subscriber"


async def test_receive_kept_takes_every_waiting_event_as_the_hub_keeps_it() -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        hub.tell(batch(1, 2))
        await settled(hub)
        subscription = await hub.ask(Subscribe(after=1))  # event 2 replayed first
        hub.tell(batch(3))
        hub.tell(batch(4, 5))
        await settled(hub)
        kept = await subscription.receive_kept()
        assert [k.id for k in kept] == [2, 3, 4, 5]
        assert [k.record.build_id for k in kept] == ["app.2", "app.3", "app.4", "app.5"]
        assert isinstance(kept[0].record.time, float) and kept[1].event.id == 3
        with pytest.raises(anyio.WouldBlock):
            subscription.receive_nowait()
    with pytest.raises(anyio.EndOfStream):  # the hub stopped with the system
        await subscription.receive_kept()
    assert subscription.reason == "the event hub stopped"


async def test_the_replayed_history_always_fits_with_room_for_one_more() -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        hub.tell(batch(1, 2, 3))
        await settled(hub)
        subscription = await hub.ask(Subscribe(after=0, buffer=1))
        hub.tell(batch(4))  # fits: the bound is the history's 3 plus one
        await settled(hub)
        assert subscription.reason is None
        hub.tell(batch(5))
        await settled(hub)
        assert await drain(subscription) == ["app.1", "app.2", "app.3", "app.4"]


async def test_a_batch_behind_the_one_a_woken_reader_made_room_for_is_not_queued() -> None:
    """A waiting reader counts as room for one more event; a second batch that comes before the woken
    reader has run finds the queue one past its bound: none of it is queued, and the subscriber is dropped."""
    seen: list[str | None] = []

    async def read(subscription: Subscription) -> None:
        async for event in subscription:
            seen.append(event.build_id)

    async with open_system() as system:
        hub = system.spawn(EventHub)
        subscription = await hub.ask(Subscribe(buffer=4))
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read, subscription)
                await anyio.wait_all_tasks_blocked()
                hub.tell(batch(1, 2, 3, 4, 5))  # 4 + the waiting reader's one
                hub.tell(batch(*range(6, 106)))  # handled in the same turn, before the reader runs
                await settled(hub)
    assert seen == [f"app.{n}" for n in range(1, 6)]
    assert subscription.reason is not None and "dropped" in subscription.reason
