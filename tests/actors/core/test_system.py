"""Spawn, names, orderly shutdown and its policy; no task left behind."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

from actors.core import Actor, Ref, open_system

from .helpers import Recorder, running_tasks, wait_until

pytestmark = pytest.mark.anyio


class Tracked(Actor):
    """Logs its stop; spawns ``children`` named children of its own."""

    def __init__(self, log: list[str], children: int = 0) -> None:
        self.log = log
        self.children = children
        self.handled = 0

    async def started(self) -> None:
        for i in range(self.children):
            self.spawn(lambda: Tracked(self.log), name=f"{self.name}.{i}")

    def receive(self, message: Any) -> Any:
        self.handled += 1
        if message == "background":
            self.start_task(anyio.sleep_forever)
        return self.handled

    async def stopping(self) -> None:
        self.log.append(self.name)


async def test_names_and_lookup() -> None:
    async with open_system() as system:
        ref = system.spawn(Recorder, name="one")
        assert system.lookup("one") is ref
        with pytest.raises(ValueError, match="already running"):
            system.spawn(Recorder, name="one")
        anonymous = system.spawn(Recorder)
        assert anonymous.name.startswith("Recorder-")
        await system.stop(ref)
        with pytest.raises(LookupError, match="'one'"):
            system.lookup("one")
        assert system.spawn(Recorder, name="one") is not ref  # the name is free again


async def test_a_stopping_actor_gives_its_name_up_at_once() -> None:
    """The name is free from the stop request on (a directory may start a new
    actor under it while the old one finishes its queue), and the old one
    closing later does not unregister the new one."""
    slow = anyio.Event()

    class Slow(Recorder):
        async def receive(self, message: Any) -> Any:
            if message == "slow":
                await slow.wait()
            return super().receive(message)

    async with open_system() as system:
        old = system.spawn(Slow, name="one")
        old.tell("slow")  # keeps the old actor busy while it stops
        await anyio.lowlevel.checkpoint()
        system.stop_nowait(old)
        assert old.stopped and old.statistics().state == "stopping"
        with pytest.raises(LookupError):
            system.lookup("one")
        new = system.spawn(Recorder, name="one")
        assert system.lookup("one") is new
        slow.set()
        await wait_until(lambda: old.statistics().state == "stopped")
        assert system.lookup("one") is new
        assert await new.ask("hello") == "hello"


async def test_shutdown_stops_children_first_in_reverse_order() -> None:
    log: list[str] = []
    async with open_system() as system:
        system.spawn(lambda: Tracked(log, children=2), name="a")
        b = system.spawn(lambda: Tracked(log, children=1), name="b")
        await b.ask("sync")
        await system.lookup("a").ask("sync")
    assert log == ["b.0", "b", "a.1", "a.0", "a"]


async def test_shutdown_leaves_no_task_behind() -> None:
    before = running_tasks()
    async with open_system() as system:
        refs = [system.spawn(lambda: Tracked([], children=3)) for _ in range(20)]
        for ref in refs:
            ref.tell("background")  # each actor also owns a task sleeping forever
        for ref in refs:
            await ref.ask("sync")
        assert running_tasks() > before + 80
        assert system.statistics().actors == 80
    assert running_tasks() == before
    assert system.statistics().actors == 0
    assert system.interrupted == []


async def test_stop_handles_queued_messages_then_drops_later_ones() -> None:
    class StopsOnRequest(Recorder):
        def receive(self, message: Any) -> Any:
            if message == "stop":
                self.stop()
            return super().receive(message)

    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: StopsOnRequest(log))
        for message in (0, 1, "stop", 2):  # 2 is queued before the stop request
            ref.tell(message)
        await wait_until(lambda: ref.stopped)
        ref.tell("too late")
        assert system.statistics().dead_letters == 1
    assert log == [0, 1, "stop", 2]


async def test_spawn_after_close_is_refused() -> None:
    async with open_system() as system:
        pass
    with pytest.raises(RuntimeError, match="shutting down"):
        system.spawn(Recorder)


async def test_child_refs_see_their_parent_stop() -> None:
    log: list[str] = []
    async with open_system() as system:
        parent = system.spawn(lambda: Tracked(log, children=2), name="p")
        await parent.ask("sync")
        children: list[Ref] = [system.lookup("p.0"), system.lookup("p.1")]
        await system.stop(parent)
        assert all(child.stopped for child in children)
    assert log == ["p.1", "p.0", "p"]
