"""The job mutex actor on trio's MockClock, started through a ``Directory``
as the runtime does: one holder at a time, and idle retirement (an idle
mutex stops after the idle period and not before, never with a message in
its mailbox, and a fresh one takes over with mutual exclusion intact)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.core import Actor, ActorSystem, Ref, Supervision, open_system
from actors.directory import Directory
from actors.model.messages import JobToken, MutexAcquire, MutexGranted, MutexRefused, MutexRelease
from actors.admission.mutex import ListMutexWaiters, MutexActor

IDLE = 300.0


class Pipeline(Actor):
    """Stands in for a pipeline actor: records what the mutex tells it."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if message != "sync":
            self.log.append(message)


def token(build: str) -> JobToken:
    return JobToken(build, "deploy", 1)


class Family:
    """Mutexes started through a ``Directory``: each tell looks the mutex up again."""

    def __init__(self, system: ActorSystem) -> None:
        self.system = system
        self.log: list[Any] = []
        self.pipeline = system.spawn(lambda: Pipeline(self.log))
        self.parent = system.spawn(Actor, name="mutexes")
        self.mutexes = Directory(system, "mutex", self.parent, lambda label: lambda: MutexActor(label, idle_after=IDLE),
                                 Supervision(max_restarts=0))  # fmt: skip

    def acquire(self, build: str) -> MutexAcquire:
        return MutexAcquire(token(build), self.pipeline, "m", queue_length=5, timeout_minutes=60)

    def tell(self, *messages: Any) -> None:
        for message in messages:
            self.mutexes.get("m").tell(message)

    def tell_later(self, delay: float, *messages: Any) -> None:
        """Tell ``messages`` from the timer service ``delay`` from now (see test_group.Family)."""
        self.system.timers.call_later(delay, self.tell, *messages)

    async def sync(self) -> None:
        mutex = self.mutexes.find("m")
        if mutex is not None:
            await mutex.ask(ListMutexWaiters())
        await self.pipeline.ask("sync")

    def alive(self) -> list[Ref]:
        return self.system.children(self.parent)

    def granted(self) -> list[str]:
        return [message.token.build_id for message in self.log if type(message) is MutexGranted]

    async def waiting(self) -> list[str]:
        return [job.build_id for job in await self.mutexes.get("m").ask(ListMutexWaiters())]


@pytest.mark.trio
async def test_one_holder_at_a_time_in_fifo_order(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"), family.acquire("b"), family.acquire("c"))
        await family.sync()
        assert family.granted() == ["a"] and await family.waiting() == ["b", "c"]
        family.tell(MutexRelease(token("a")))
        await family.sync()
        assert family.granted() == ["a", "b"] and await family.waiting() == ["c"]


@pytest.mark.trio
async def test_an_idle_mutex_retires_after_the_idle_period_and_the_next_acquire_starts_a_fresh_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"))
        await family.sync()
        old = family.mutexes.find("m")
        await trio.sleep(2 * IDLE)
        assert family.mutexes.find("m") is old, "a held mutex never retires"
        assert system.statistics().timers_pending == 0, "the check armed at its start found it held: none left"

        family.tell(MutexRelease(token("a")))
        await family.sync()
        assert system.statistics().timers_pending == 1, "one idle timer"
        await trio.sleep(IDLE - 0.001)
        assert not old.stopped
        await trio.sleep(0.002)
        assert old.stopped and family.mutexes.find("m") is None and family.alive() == []

        family.tell(family.acquire("b"))
        await family.sync()
        assert family.mutexes.find("m") not in (None, old)
        assert family.granted() == ["a", "b"]


@pytest.mark.trio
async def test_a_mutex_busy_again_before_its_timer_does_not_retire(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"), MutexRelease(token("a")))
        await family.sync()
        old = family.mutexes.find("m")
        await trio.sleep(IDLE - 100)
        family.tell(family.acquire("b"))
        await trio.sleep(2 * IDLE)
        assert family.mutexes.find("m") is old and not old.stopped
        family.tell(MutexRelease(token("b")))
        await family.sync()
        await trio.sleep(IDLE - 0.001)
        assert not old.stopped
        await trio.sleep(0.002)
        assert old.stopped and family.alive() == []


@pytest.mark.trio
async def test_an_acquire_in_the_mailbox_when_the_timer_fires_keeps_the_mutex_and_is_granted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"))
        await trio.sleep(2 * IDLE)  # the check armed at its start finds it held and is dropped
        family.tell(MutexRelease(token("a")))
        await family.sync()  # idle: its one check is due IDLE from now
        old = family.mutexes.find("m")
        family.tell_later(IDLE, family.acquire("b"), family.acquire("c"))  # told right after the check
        await trio.sleep(IDLE + 1)
        assert family.mutexes.find("m") is old and not old.stopped, "stopped with an acquire in its mailbox"
        assert family.granted() == ["a", "b"] and await family.waiting() == ["c"]
        assert family.alive() == [old]


@pytest.mark.trio
async def test_a_check_from_before_a_busy_spell_is_stale(autojump_clock: trio.testing.MockClock) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"))
        await trio.sleep(2 * IDLE)  # the check armed at its start finds it held and is dropped
        family.tell_later(IDLE, family.acquire("b"), MutexRelease(token("b")))  # due just before the check
        family.tell(MutexRelease(token("a")))
        await family.sync()
        old = family.mutexes.find("m")
        await trio.sleep(IDLE + 1)
        assert family.granted() == ["a", "b"]
        assert not old.stopped, "a stale check stopped a mutex idle for 0 s"
        await trio.sleep(IDLE - 2)
        assert not old.stopped
        await trio.sleep(2)
        assert old.stopped and family.alive() == []


@pytest.mark.trio
async def test_mutual_exclusion_holds_across_a_retirement_and_a_stray_release_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        family = Family(system)
        family.tell(family.acquire("a"), MutexRelease(token("a")))
        await trio.sleep(IDLE + 1)
        assert family.alive() == []

        family.tell(family.acquire("b"), family.acquire("c"))
        family.tell(MutexRelease(token("a")))  # a token the fresh mutex never saw
        await family.sync()
        assert family.granted() == ["a", "b"] and await family.waiting() == ["c"]
        family.tell(MutexRelease(token("b")))
        await family.sync()
        assert family.granted() == ["a", "b", "c"]
        assert not [message for message in family.log if type(message) is MutexRefused]
