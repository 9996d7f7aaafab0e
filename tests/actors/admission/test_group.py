"""The concurrency group actor's queue timeouts, driven directly on trio's
MockClock: one kernel timer per group whatever the queue holds, every waiter
ended exactly at its own deadline, all those due together told to each
pipeline in one ``Dequeued``, and waiters that left never timed out.

Then its idle retirement, through a ``Directory`` as the runtime uses it:
an idle group stops after the idle period and not before, never with a
message in its mailbox, and a fresh one takes over with the limits intact."""

from __future__ import annotations

import math
from typing import Any

import pytest
import trio

from actors.core import Actor, ActorSystem, Ref, Supervision, open_system
from actors.directory import Directory
from actors.admission.group import GroupActor, GroupSnapshot
from actors.model.messages import Admit, Admitted, CancelBuild, Dequeued, Queued, Release
from actors.model.spec import Concurrency


class Pipeline(Actor):
    """Stands in for a pipeline actor: records (clock time, message) of what the group tells it."""

    def __init__(self, log: list[tuple[float, Any]]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if message != "sync":
            self.log.append((trio.current_time(), message))


def admit(build_id: str, pipeline: Ref, minutes: float, *, cancel_in_progress: bool = False) -> Admit:
    config = Concurrency(group="g", max_parallel=1, queue_length=100_000, queue_timeout_minutes=minutes,
                         cancel_in_progress=cancel_in_progress)  # fmt: skip
    return Admit(build_id, pipeline, config, queued_at=1_700_000_000.0)


def dequeued(log: list[tuple[float, Any]]) -> list[tuple[float, Dequeued]]:
    return [(time, message) for time, message in log if type(message) is Dequeued]


class Bench:
    """A system with one group and a recording pipeline."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.log: list[tuple[float, Any]] = []
        self.pipeline = system.spawn(lambda: Pipeline(self.log))
        # Never retires: these tests count the group's queue timer alone.
        self.group = system.spawn(lambda: GroupActor("g", idle_after=math.inf))

    async def sync(self) -> None:
        """Let the group, then the pipeline, handle everything told so far."""
        await self.group.ask(GroupSnapshot())
        await self.pipeline.ask("sync")

    def timers(self) -> int:
        return self.system.statistics().timers_pending

    async def queue(self) -> list[str]:
        return [entry.build_id for entry in (await self.group.ask(GroupSnapshot())).queue]


@pytest.mark.trio
async def test_waiters_sharing_a_deadline_end_at_it_in_one_message_per_pipeline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        bench = Bench(system)
        other_log: list[tuple[float, Any]] = []
        other = system.spawn(lambda: Pipeline(other_log))
        t0 = trio.current_time()
        bench.group.tell(admit("a.0", bench.pipeline, 1))  # runs, and keeps running
        for index in range(1, 1_001):
            bench.group.tell(admit(f"a.{index}", bench.pipeline, 1))
            bench.group.tell(admit(f"b.{index}", other, 1))
        await bench.sync()
        assert len(await bench.queue()) == 2_000
        assert bench.timers() == 1, "one timer for the whole group, not one per waiter"

        await trio.sleep(60 - 0.001)
        await bench.sync()
        assert dequeued(bench.log) == [] and dequeued(other_log) == []

        await trio.sleep(0.002)
        await bench.sync()
        await other.ask("sync")
        for log, prefix in ((bench.log, "a"), (other_log, "b")):
            [(time, message)] = dequeued(log)
            assert time == t0 + 60, "exactly queue-timeout-minutes after they were queued"
            assert message.build_ids == tuple(f"{prefix}.{index}" for index in range(1, 1_001))
            assert message.status == "QUEUE_TIMEOUT"
            assert message.reason == "waited 1 minute(s) in concurrency group 'g' (max-parallel 1; running: a.0)"
        assert await bench.queue() == []
        assert bench.timers() == 0, "no timer is left for an empty queue"


@pytest.mark.trio
async def test_waiters_with_different_timeouts_each_end_at_their_own_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The limits come with each Admit (latest wins): a waiter keeps the
    timeout it was queued with, and reasons say that timeout."""
    async with open_system() as system:
        bench = Bench(system)
        t0 = trio.current_time()
        bench.group.tell(admit("run", bench.pipeline, 10))
        bench.group.tell(admit("ten", bench.pipeline, 10))
        bench.group.tell(admit("two", bench.pipeline, 2))
        bench.group.tell(admit("five", bench.pipeline, 5))
        bench.group.tell(admit("two-b", bench.pipeline, 2))
        await bench.sync()
        await trio.sleep(30)
        bench.group.tell(admit("one-late", bench.pipeline, 1))  # queued at +30: due at +90
        await bench.sync()
        assert bench.timers() == 1

        await trio.sleep(700)
        await bench.sync()
        ended = [(time - t0, message.build_ids, message.reason.split(" in ")[0])
                 for time, message in dequeued(bench.log)]  # fmt: skip
        assert ended == [
            (90, ("one-late",), "waited 1 minute(s)"),
            (120, ("two", "two-b"), "waited 2 minute(s)"),
            (300, ("five",), "waited 5 minute(s)"),
            (600, ("ten",), "waited 10 minute(s)"),
        ]
        assert bench.timers() == 0


@pytest.mark.trio
async def test_a_cancel_in_progress_waiter_at_the_front_and_a_shorter_one_behind_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cancel-in-progress puts the new build at the front; a later build
    with a shorter timeout waits behind it but is due first. The cancelled
    waiter never times out, and the front one, admitted, never does either."""
    async with open_system() as system:
        bench = Bench(system)
        t0 = trio.current_time()
        bench.group.tell(admit("a", bench.pipeline, 10))
        bench.group.tell(admit("b", bench.pipeline, 10))
        bench.group.tell(admit("c", bench.pipeline, 5, cancel_in_progress=True))
        await trio.sleep(10)
        bench.group.tell(admit("d", bench.pipeline, 1))  # behind c, due at +70, before c's +300
        await bench.sync()
        assert await bench.queue() == ["c", "d"]
        assert [m.build_id for _, m in bench.log if type(m) is CancelBuild] == ["a"]
        [(_, cancelled)] = dequeued(bench.log)
        assert (cancelled.build_ids, cancelled.status) == (("b",), "CANCELED")
        assert bench.timers() == 1

        await trio.sleep(70 - 10)
        await bench.sync()
        [_, (time, timed_out)] = dequeued(bench.log)
        assert (time - t0, timed_out.build_ids, timed_out.status) == (70, ("d",), "QUEUE_TIMEOUT")

        bench.group.tell(Release("a"))  # the cancelled build has stopped: c runs
        await bench.sync()
        assert [m.build_id for _, m in bench.log if type(m) is Admitted] == ["a", "c"]
        await trio.sleep(700)
        await bench.sync()
        assert len(dequeued(bench.log)) == 2, "neither b (cancelled) nor c (admitted) times out"
        assert bench.timers() == 0


@pytest.mark.trio
async def test_admitted_and_withdrawn_waiters_never_time_out_and_a_rerun_gets_a_new_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        bench = Bench(system)
        t0 = trio.current_time()
        for build_id in ("a", "b", "c", "d"):
            bench.group.tell(admit(build_id, bench.pipeline, 1))  # b, c, d due at +60
        await trio.sleep(30)
        bench.group.tell(Release("a"))  # b is admitted
        bench.group.tell(Release("c"))  # c is withdrawn (e.g. cancelled by a user)
        await trio.sleep(10)
        bench.group.tell(admit("c", bench.pipeline, 1))  # a rerun of c: due at +100
        await bench.sync()
        assert await bench.queue() == ["d", "c"]

        await trio.sleep(200)
        await bench.sync()
        ended = [(time - t0, message.build_ids) for time, message in dequeued(bench.log)]
        assert ended == [(60, ("d",)), (100, ("c",))]


@pytest.mark.trio
async def test_one_timer_while_the_head_keeps_being_admitted(autojump_clock: trio.testing.MockClock) -> None:
    """The timer stays armed for a waiter that was admitted since; when it
    fires early it finds nothing due and re-arms for the next deadline, so
    the next waiter still ends exactly on time."""
    async with open_system() as system:
        bench = Bench(system)
        t0 = trio.current_time()
        bench.group.tell(admit("run", bench.pipeline, 1))
        for index in range(200):
            bench.group.tell(admit(f"w{index}", bench.pipeline, 1))
            await trio.sleep(0.1)  # w<i> due at +60 + i/10
        await bench.sync()
        assert bench.timers() == 1
        bench.group.tell(Release("run"))  # w0 runs
        for index in range(150):
            bench.group.tell(Release(f"w{index}"))  # w<i+1> runs
            await bench.sync()
            assert bench.timers() <= 1
        assert (await bench.queue())[0] == "w151"

        await trio.sleep(60)
        await bench.sync()
        ended = [(round(time - t0, 6), message.build_ids) for time, message in dequeued(bench.log)]
        assert ended[0] == (round(60 + 15.1, 6), ("w151",)), ended[:3]  # w150 runs; w151 is the first due
        assert [ids for _, ids in ended] == [(f"w{index}",) for index in range(151, 200)]
        assert bench.timers() == 0


# -- idle retirement ----------------------------------------------------------------------

IDLE = 300.0


class Family:
    """Groups started through a ``Directory`` as the runtime does: each tell looks the group up again."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.log: list[tuple[float, Any]] = []
        self.pipeline = system.spawn(lambda: Pipeline(self.log))
        self.parent = system.spawn(Actor, name="groups")
        self.groups = Directory(system, "group", self.parent, lambda name: lambda: GroupActor(name, idle_after=IDLE),
                                Supervision(max_restarts=0))  # fmt: skip

    def tell(self, *messages: Any) -> None:
        for message in messages:
            self.groups.get("g").tell(message)

    def tell_later(self, delay: float, *messages: Any) -> None:
        """Tell ``messages`` from the timer service ``delay`` from now: right after (or before) a
        group timer due at the same instant, in the same pass, before the group can run."""
        self.system.timers.call_later(delay, self.tell, *messages)

    async def sync(self) -> None:
        group = self.groups.find("g")
        if group is not None:
            await group.ask(GroupSnapshot())
        await self.pipeline.ask("sync")

    def alive(self) -> list[Ref]:
        """Group actors that exist at all, stopping ones included."""
        return self.system.children(self.parent)

    def admitted(self) -> list[str]:
        return [message.build_id for _, message in self.log if type(message) is Admitted]

    def queued(self) -> list[tuple[str, int]]:
        return [(message.build_id, message.position) for _, message in self.log if type(message) is Queued]


@pytest.mark.trio
async def test_an_idle_group_retires_after_the_idle_period_and_the_next_admit_starts_a_fresh_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(admit("a", family.pipeline, 1))
        await family.sync()
        old = family.groups.find("g")
        await trio.sleep(2 * IDLE)
        assert family.groups.find("g") is old, "a busy group never retires"
        assert system.statistics().timers_pending == 0, "the check armed at its start found it busy: none left"

        family.tell(Release("a"))
        await family.sync()
        assert system.statistics().timers_pending == 1, "one idle timer"
        await trio.sleep(IDLE - 0.001)
        assert family.groups.find("g") is old and not old.stopped
        await trio.sleep(0.002)
        assert old.stopped and family.groups.find("g") is None
        assert family.alive() == []
        assert system.statistics().timers_pending == 0

        family.tell(admit("b", family.pipeline, 1))
        await family.sync()
        fresh = family.groups.find("g")
        assert fresh is not None and fresh is not old
        assert family.admitted() == ["a", "b"]


@pytest.mark.trio
async def test_a_group_busy_again_before_its_timer_does_not_retire(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(admit("a", family.pipeline, 1), Release("a"))  # idle from now
        await family.sync()
        old = family.groups.find("g")
        await trio.sleep(IDLE - 100)
        family.tell(admit("b", family.pipeline, 1))  # busy again
        await trio.sleep(2 * IDLE)
        assert family.groups.find("g") is old and not old.stopped
        family.tell(Release("b"))
        for index in range(1_000):  # busy and idle again, over and over: still one timer
            family.tell(admit(f"c{index}", family.pipeline, 1), Release(f"c{index}"))
        await family.sync()  # idle from now: a full period again
        assert system.statistics().timers_pending == 1
        await trio.sleep(IDLE - 0.001)
        assert not old.stopped
        await trio.sleep(0.002)
        assert old.stopped and family.alive() == []
        assert family.admitted()[:2] == ["a", "b"] and len(family.admitted()) == 1_002


@pytest.mark.trio
async def test_an_admit_in_the_mailbox_when_the_timer_fires_keeps_the_group_and_is_admitted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The idle check finds an Admit queued behind it: the group does not
    stop, admits the build, and max-parallel still holds for the next one."""
    async with open_system() as system:
        family = Family(system)
        family.tell(admit("a", family.pipeline, 1))
        await trio.sleep(2 * IDLE)  # the check armed at its start finds it busy and is dropped
        family.tell(Release("a"))
        await family.sync()  # idle: its one check is due IDLE from now
        old = family.groups.find("g")
        family.tell_later(IDLE, admit("b", family.pipeline, 1), admit("c", family.pipeline, 1))  # right after it
        await trio.sleep(IDLE + 1)
        assert family.groups.find("g") is old and not old.stopped, "stopped with an Admit in its mailbox"
        assert family.admitted() == ["a", "b"] and family.queued() == [("c", 1)]
        assert family.alive() == [old]


@pytest.mark.trio
async def test_a_check_from_before_a_busy_spell_is_stale(autojump_clock: trio.testing.MockClock) -> None:
    """A build comes and goes just before the idle check is handled: the
    group has been idle for no time at all, so the check does not stop it
    but looks again a full period after the last release."""
    async with open_system() as system:
        family = Family(system)
        family.tell(admit("a", family.pipeline, 1))
        await trio.sleep(2 * IDLE)  # the check armed at its start finds it busy and is dropped
        family.tell_later(IDLE, admit("b", family.pipeline, 1), Release("b"))  # due just before the check
        family.tell(Release("a"))
        await family.sync()  # idle: its check is due IDLE from now, right after b came and went
        old = family.groups.find("g")
        await trio.sleep(IDLE + 1)
        assert family.admitted() == ["a", "b"]
        assert not old.stopped, "a stale check stopped a group idle for 0 s"
        await trio.sleep(IDLE - 2)
        assert not old.stopped
        await trio.sleep(2)
        assert old.stopped and family.alive() == []


@pytest.mark.trio
async def test_limits_hold_across_a_retirement_and_a_stray_release_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(admit("a", family.pipeline, 1), Release("a"))
        await trio.sleep(IDLE + 1)
        assert family.alive() == []

        family.tell(admit("b", family.pipeline, 1), admit("c", family.pipeline, 1))
        family.tell(Release("a"))  # for a build the fresh group never saw
        await family.sync()
        assert family.admitted() == ["a", "b"] and family.queued() == [("c", 1)]
        group = await family.groups.get("g").ask(GroupSnapshot())
        assert (group.running, [entry.build_id for entry in group.queue]) == (["b"], ["c"])
        family.tell(Release("b"))
        await family.sync()
        assert family.admitted() == ["a", "b", "c"]


@pytest.mark.trio
async def test_a_group_that_was_never_told_anything_retires(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        family = Family(system)
        ref = family.groups.get("g")
        await trio.sleep(IDLE + 1)
        assert ref.stopped and family.alive() == []
