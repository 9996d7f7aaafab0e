"""The dispatcher: plain-``receive`` actors handed their mail in one task, on both backends."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
import sniffio

from actors.core import Actor, Ref, open_system

from .helpers import Recorder

pytestmark = pytest.mark.anyio


class Relay(Actor):
    """Passes every message on to ``next``; the last one records it and sets its ``arrived`` event."""

    def __init__(self, next: Ref | None, log: list[Any], arrived: dict[str, anyio.Event]) -> None:
        self.next = next
        self.log = log
        self.arrived = arrived

    def receive(self, message: str) -> None:
        if self.next is not None:
            self.next.tell(message)
        else:
            self.log.append(message)
            self.arrived[message].set()


async def test_a_chain_of_tells_runs_in_one_pass_without_a_task_switch_per_actor() -> None:
    log: list[Any] = []
    arrived = {"warm up": anyio.Event(), "hop": anyio.Event()}
    async with open_system() as system:
        head = system.spawn(lambda: Relay(None, log, arrived))
        for _ in range(99):
            head = system.spawn(lambda after=head: Relay(after, log, arrived))  # type: ignore[misc]
        head.tell("warm up")
        await arrived["warm up"].wait()  # every actor has started and waits for mail
        steps = _TaskSteps.install()
        passes = system.statistics().dispatch_passes
        head.tell("hop")
        await arrived["hop"].wait()
        assert log == ["warm up", "hop"]
        assert system.statistics().dispatch_passes - passes == 1, "100 actors, one pass"
        if steps is not None:
            # the dispatcher once and this task once; a task per actor would be 100 more
            assert steps.remove() <= 3, steps.count


class Spinner(Actor):
    """Tells itself ``left`` more times, counting in ``done``; sets ``finished`` at the last."""

    def __init__(self, done: list[int], finished: anyio.Event) -> None:
        self.done = done
        self.finished = finished

    def receive(self, left: int) -> None:
        self.done[0] += 1
        if left:
            self.ref.tell(left - 1)
        else:
            self.finished.set()


async def test_a_busy_actor_leaves_room_for_other_tasks() -> None:
    done = [0]
    finished = anyio.Event()
    async with open_system() as system:
        spinner = system.spawn(lambda: Spinner(done, finished))
        spinner.tell(20_000)
        while not done[0]:
            await anyio.lowlevel.checkpoint()
        # this task ran again long before the spinner's 20,001 messages were all handled
        assert done[0] < 20_000, done
        await finished.wait()
        assert done[0] == 20_001


class SlowStart(Actor):
    """Its ``started`` takes a few checkpoints; every message records whether it had finished."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log
        self.ready = False

    async def started(self) -> None:
        for _ in range(5):
            await anyio.lowlevel.checkpoint()
        self.ready = True

    def receive(self, message: Any) -> Any:
        self.log.append((message, self.ready))
        return message


async def test_mail_told_while_the_actor_starts_waits_for_started_and_keeps_its_order() -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: SlowStart(log))
        for i in range(10):
            ref.tell(i)
        await ref.ask("sync")
    assert log == [(i, True) for i in [*range(10), "sync"]]


class CrashOn(Actor):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        self.log.append(message)
        return message


async def test_a_crash_in_the_dispatchers_hands_restarts_the_actor_and_its_mail_goes_on_in_order() -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: CrashOn(log))
        for message in ("a", "boom", "b", "c"):
            ref.tell(message)
        assert await ref.ask("sync") == "sync"
        assert ref.statistics().restarts == 1
    assert log == ["a", "b", "c", "sync"]


async def test_an_actor_asked_to_stop_finishes_its_mailbox_before_stopping() -> None:
    log: list[Any] = []

    class Closing(Recorder):
        async def stopping(self) -> None:
            log.append("stopping")

    async with open_system() as system:
        ref = system.spawn(lambda: Closing(log))
        for i in range(1000):
            ref.tell(i)
        await system.stop(ref)
    assert log == [*range(1000), "stopping"]


class Waits(Actor):
    """An ``async def receive`` that waits for ``gate`` while it handles a message."""

    def __init__(self, gate: anyio.Event) -> None:
        self.gate = gate

    async def receive(self, message: Any) -> Any:
        await self.gate.wait()
        return message


async def test_an_async_receive_waiting_does_not_hold_up_the_plain_actors() -> None:
    log: list[Any] = []
    gate = anyio.Event()
    async with open_system() as system:
        waiting = system.spawn(lambda: Waits(gate))
        plain = system.spawn(lambda: Recorder(log))
        async with anyio.create_task_group() as task_group:
            answers: list[Any] = []

            async def ask_waiting() -> None:
                answers.append(await waiting.ask("slow"))

            task_group.start_soon(ask_waiting)
            assert await plain.ask("quick") == "quick"
            assert answers == []
            gate.set()
        assert answers == ["slow"]


class _TaskSteps:
    """Counts trio task steps while installed (None on asyncio, which has no instruments)."""

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    def install(cls) -> _TaskSteps | None:
        if sniffio.current_async_library() != "trio":
            return None
        import trio

        steps = cls()
        instrument = type("StepCounter", (trio.abc.Instrument,), {"before_task_step": lambda _, task: steps._step()})()
        steps._instrument = instrument
        trio.lowlevel.add_instrument(instrument)
        return steps

    def _step(self) -> None:
        self.count += 1

    def remove(self) -> int:
        import trio

        trio.lowlevel.remove_instrument(self._instrument)
        return self.count
