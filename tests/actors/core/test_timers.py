"""Timers on trio's MockClock: exact firing times, cancel, 100,000 pending."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.core import DEFAULT_ASK_TIMEOUT, Actor, AskTimeout, open_system
from actors.core._timers import MAX_LANES

from .helpers import Hang, Recorder, running_tasks


class Stamper(Actor):
    """Records (message, clock time) on arrival."""

    def __init__(self, log: list[tuple[Any, float]]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if isinstance(message, tuple) and message[0] == "after":
            self.send_after(message[1], message[2])
            return None
        self.log.append((message, trio.current_time()))
        return message


@pytest.mark.trio
async def test_send_after_fires_at_the_deadline(autojump_clock: trio.abc.Clock) -> None:
    log: list[tuple[Any, float]] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Stamper(log))
        start = trio.current_time()
        await ref.ask(("after", 30.0, "late"))
        await ref.ask(("after", 5.0, "early"))
        system.send_after(12.5, ref, "middle")
        await trio.sleep(60)
    assert [(m, t - start) for m, t in log] == [("early", 5.0), ("middle", 12.5), ("late", 30.0)]


@pytest.mark.trio
async def test_cancelled_timer_never_fires(autojump_clock: trio.abc.Clock) -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Recorder(log))
        keep = system.send_after(2, ref, "kept")
        drop = system.send_after(1, ref, "dropped")
        drop.cancel()
        drop.cancel()  # idempotent
        assert not drop.active and keep.active
        await trio.sleep(10)
        assert not keep.active
        keep.cancel()  # harmless after firing
    assert log == ["kept"]


@pytest.mark.trio
async def test_hundred_thousand_pending_timers_cost_no_tasks(autojump_clock: trio.abc.Clock) -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Recorder(log))
        await ref.ask("sync")
        tasks_before = running_tasks()
        handles = [system.send_after(100 + (i % 1000) / 10, ref, i) for i in range(100_000)]
        assert running_tasks() == tasks_before
        assert system.statistics().timers_pending == 100_000
        for handle in handles[::2]:
            handle.cancel()  # half cancelled: compaction keeps the heap bounded
        assert system.statistics().timers_pending == 50_000
        await trio.sleep(250)
        await ref.ask("sync")
        assert system.statistics().timers_pending == 0
    fired = log[1:-1]
    assert sorted(fired) == list(range(1, 100_000, 2))
    # fired in deadline order: deadlines grow with i % 1000
    assert [i % 1000 for i in fired] == sorted(i % 1000 for i in fired)


@pytest.mark.trio
async def test_earlier_timer_added_later_wakes_the_service(autojump_clock: trio.abc.Clock) -> None:
    log: list[tuple[Any, float]] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Stamper(log))
        start = trio.current_time()
        system.send_after(1000, ref, "far")
        await trio.sleep(1)
        system.send_after(1, ref, "near")
        await trio.sleep(5)
        assert [(m, t - start) for m, t in log] == [("near", 2.0)]


@pytest.mark.trio
async def test_a_handle_tells_its_deadline_and_keeps_it(autojump_clock: trio.abc.Clock) -> None:
    log: list[tuple[Any, float]] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Stamper(log))
        start = trio.current_time()
        later = system.send_after(7.5, ref, "later")
        at = system.timers.call_at(start + 3.0, ref.tell, "at")
        assert (later.deadline, at.deadline) == (start + 7.5, start + 3.0)
        with pytest.raises(AttributeError):
            later.deadline = start + 1.0  # type: ignore[misc]  # read-only: the heap entry would not follow
        await trio.sleep(10)
        assert later.deadline == start + 7.5 and not later.active  # still readable once it fired
    assert [(m, t - start) for m, t in log] == [("at", 3.0), ("later", 7.5)]


class Holder(Actor):
    """Keeps the reply slot of every ``"hold"`` ask unanswered; answers anything else at once."""

    def __init__(self) -> None:
        self.held: list[Any] = []

    def receive(self, message: Any) -> Any:
        if message == "hold":
            self.held.append(self.defer_reply())
        return message


@pytest.mark.trio
async def test_a_stuck_ask_expires_on_time_behind_thousands_of_settled_ones(autojump_clock: trio.abc.Clock) -> None:
    async with open_system() as system:
        ref = system.spawn(Holder, name="holder")
        start = trio.current_time()
        outcome: list[tuple[str, float]] = []

        async def stuck() -> None:
            try:
                await ref.ask("hold")
            except AskTimeout as error:
                outcome.append((str(error), trio.current_time() - start))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            await trio.sleep(1)
            for number in range(10_000):  # all in the stuck ask's lane (the default timeout), behind it
                assert await ref.ask(number) == number
            assert system.statistics().timers_pending == 1
            # settled entries behind the stuck head are compacted away, not kept for the whole timeout
            assert len(system.timers._lanes[DEFAULT_ASK_TIMEOUT].entries) <= 2 + 64
        timed_out = f"ask to actor 'holder' with str timed out after {DEFAULT_ASK_TIMEOUT:g}s"
        assert outcome == [(timed_out, DEFAULT_ASK_TIMEOUT)]  # at its own deadline, not the last ask's
        assert system.statistics().timers_pending == 0


@pytest.mark.trio
async def test_asks_of_more_delays_than_lanes_each_expire_at_their_own_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with open_system(shutdown_timeout=0.01) as system:
        ref = system.spawn(Hang)
        start = trio.current_time()
        expired: dict[float, float] = {}

        async def ask(timeout: float) -> None:
            with pytest.raises(AskTimeout):
                await ref.ask("ping", timeout=timeout)
            expired[timeout] = trio.current_time() - start

        delays = [float(seconds) for seconds in range(MAX_LANES + 4, 0, -1)]  # some beyond the lanes: heap
        async with trio.open_nursery() as nursery:
            for delay in delays:
                nursery.start_soon(ask, delay)
        assert expired == {delay: delay for delay in delays}
        assert system.statistics().timers_pending == 0
