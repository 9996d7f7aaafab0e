"""The event hub and its subscriptions, driven directly: records in, numbered events out.

A ``Record`` is stamped as it is made and is not tracked by the
garbage collector; the hub numbers records across publishers, keeps the
build and job counters from ``previous``/``status``, and hands each
subscriber a ``Subscription`` that iterates, receives, closes, and ends when
the hub drops it (too slow) or stops.
"""

from __future__ import annotations

import gc
import math

import anyio
import pytest
import trio

from actors.core import open_system
from actors.events import Counters, EventHub, Gauge, History, Publish, Record, Subscribe, Subscription
from actors.model.vocab import BuildStatus, EventKind, GroupChange, JobStatus


def build(status: BuildStatus, previous: BuildStatus | None, build_id: str = "app.1") -> Publish:
    return Publish((Record(EventKind.BUILD, status, pipeline_id="app", build_id=build_id, attempt=1,
                           previous=previous),))  # fmt: skip


def test_a_record_is_stamped_and_not_tracked_by_the_collector() -> None:
    record = Record(EventKind.GROUP, GroupChange.QUEUED, None, pipeline_id="app", build_id="app.3", group="g",
                    data={"position": 2})  # fmt: skip
    assert (record.kind, record.status, record.group, record.data) == ("group", "QUEUED", "g", {"position": 2})
    assert record.time > 1_600_000_000  # the wall clock
    assert not gc.is_tracked(record)
    with pytest.raises(TypeError):  # past kind, status and reason every field is named: no positional layout
        Record(EventKind.BUILD, BuildStatus.QUEUE, None, "app")  # type: ignore[misc]


@pytest.mark.trio
async def test_records_become_numbered_events_and_counters(autojump_clock: trio.testing.MockClock) -> None:
    gauge = Gauge()
    async with open_system() as system:
        hub = system.spawn(lambda: EventHub(gauge=gauge))
        hub.tell(build(BuildStatus.QUEUE, None))
        hub.tell(Publish((
            Record(EventKind.BUILD, BuildStatus.RUNNING, pipeline_id="app", build_id="app.1", attempt=1,
                   previous=BuildStatus.QUEUE),
            Record(EventKind.JOB, JobStatus.QUEUE, pipeline_id="app", build_id="app.1", job_id="j", attempt=1),
            Record(EventKind.NODE, "ADDED", node="n2", data={"pool": "default"}),
        )))  # fmt: skip
        events = await hub.ask(History())
        counters = await hub.ask(Counters())
    assert [(e.id, e.kind, e.status) for e in events] == [
        (1, "build", "QUEUE"), (2, "build", "RUNNING"), (3, "job", "QUEUE"), (4, "node", "ADDED")]  # fmt: skip
    assert events[3].node == "n2" and events[3].data == {"pool": "default"} and events[1].data == {}
    assert events[0].time.endswith("Z")
    assert counters == {"builds": {"QUEUE": 0, "RUNNING": 1}, "jobs": {"QUEUE": 1}, "last_event_id": 4}
    assert gauge.unfinished == 1


@pytest.mark.trio
async def test_a_subscription_iterates_receives_and_closes(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        hub.tell(build(BuildStatus.QUEUE, None))
        subscription = await hub.ask(Subscribe(after=0))
        assert isinstance(subscription, Subscription)
        hub.tell(build(BuildStatus.RUNNING, BuildStatus.QUEUE))
        first = await subscription.receive()  # replayed from the history
        second = await subscription.receive()
        with pytest.raises(anyio.WouldBlock):
            subscription.receive_nowait()
        hub.tell(build(BuildStatus.SUCCEED, BuildStatus.RUNNING))
        seen = []
        async for event in subscription:
            seen.append(event)
            break
        subscription.close()
        subscription.close()  # twice is harmless
        hub.tell(build(BuildStatus.QUEUE, None, "app.2"))
        assert await hub.ask(History(after=3))  # the hub goes on after the subscriber left
        with pytest.raises(anyio.ClosedResourceError):
            await subscription.receive()
        assert [e async for e in subscription] == []
        assert (await hub.ask(Counters()))["last_event_id"] == 4
    assert [(e.id, e.status) for e in (first, second, *seen)] == [(1, "QUEUE"), (2, "RUNNING"), (3, "SUCCEED")]


@pytest.mark.trio
async def test_a_subscriber_too_slow_for_its_buffer_is_dropped(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub)
        slow = await hub.ask(Subscribe(buffer=2))
        unbounded = await hub.ask(Subscribe(buffer=math.inf))
        for number in range(5):
            hub.tell(build(BuildStatus.QUEUE, None, f"app.{number}"))
        await hub.ask(Counters())
        kept = [event.build_id async for event in slow]  # what fitted, then the end
        unbounded.close()
    assert kept == ["app.0", "app.1"]


@pytest.mark.trio
async def test_subscriptions_end_when_the_hub_stops(autojump_clock: trio.testing.MockClock) -> None:
    ended = trio.Event()

    async def read(subscription: Subscription) -> None:
        async for _ in subscription:
            pass
        ended.set()

    async with trio.open_nursery() as nursery:
        async with open_system() as system:
            hub = system.spawn(EventHub)
            nursery.start_soon(read, await hub.ask(Subscribe()))
        with trio.fail_after(1):
            await ended.wait()


def test_an_event_stamp_is_the_record_time_formatted_whether_or_not_the_last_one_was_the_same() -> None:
    """``make_event`` keeps the last stamp it formatted (records of one message share one): the kept text
    is used only for that very stamp, and equals what formatting it anew gives."""
    from actors.eventlog import make_event
    from actors.model.info import rfc3339

    stamps = [0.0, 1_700_000_000.123456, 1_700_000_000.123456, 1_700_000_000.9999995, 1_700_000_001.0,
              1_700_000_000.123456, 1_700_000_000.1234561, 0.0]  # fmt: skip
    for number, stamp in enumerate(stamps, 1):
        record = Record(EventKind.JOB, JobStatus.RUNNING, None, pipeline_id="app", build_id="app.1", time=stamp)
        assert make_event(number, record).time == rfc3339(stamp)


def test_an_event_made_positionally_from_a_record_has_each_field_where_its_name_says() -> None:
    """``make_event`` builds the ``Event`` positionally: every field lands under its own name."""
    from actors.eventlog import make_event
    from actors.model.info import Event, rfc3339

    record = Record(EventKind.STEP, "FAILED", "why", pipeline_id="app", build_id="app.7", job_id="j", step_id="s",
                    attempt=3, group="g", node="n", data={"k": "v"}, time=1_700_000_000.5)  # fmt: skip
    assert make_event(9, record) == Event(id=9, kind=EventKind.STEP, time=rfc3339(1_700_000_000.5) or "",
                                          status="FAILED", reason="why", pipeline_id="app", build_id="app.7",
                                          job_id="j", step_id="s", attempt=3, group="g", node="n",
                                          data={"k": "v"})  # fmt: skip
    assert make_event(10, Record(EventKind.NODE, "ADDED", node="n2")).data == {}
