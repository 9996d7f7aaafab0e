"""The directory starts an actor per key on first use and never hands out
one that has been asked to stop: a stopping actor is absent, ``get`` starts
a fresh one under the same name (even while the old one is still finishing
its queue), and ``all`` lists only running actors."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from actors.core import Actor, ActorSystem, Supervision, open_system
from actors.directory import Directory


class Member(Actor):
    """Records (key, message); ``"stop"`` stops it, ``"slow"`` blocks it until ``gate`` is set."""

    def __init__(self, key: str, log: list[tuple[str, Any]], gate: trio.Event) -> None:
        self.key = key
        self.log = log
        self.gate = gate

    async def receive(self, message: Any) -> Any:
        if message == "slow":
            await self.gate.wait()
        self.log.append((self.key, message))
        if message == "stop":
            self.stop()
        return self.key


class Family:
    def __init__(self, system: ActorSystem) -> None:
        self.log: list[tuple[str, Any]] = []
        self.gate = trio.Event()
        self.parent = system.spawn(Actor, name="members")
        self.directory = Directory(system, "member", self.parent,
                                   lambda key: lambda: Member(key, self.log, self.gate),
                                   Supervision(max_restarts=0))  # fmt: skip


@pytest.mark.trio
async def test_get_starts_one_actor_per_key_and_find_finds_it() -> None:
    async with open_system() as system:
        family = Family(system)
        assert family.directory.find("a") is None
        a = family.directory.get("a")
        assert a.name == "member:a"
        assert family.directory.get("a") is a and family.directory.find("a") is a
        b = family.directory.get("b")
        assert family.directory.all() == [a, b]
        assert await a.ask("hi") == "a"


@pytest.mark.trio
async def test_a_stopping_actor_is_absent_and_get_starts_a_fresh_one() -> None:
    async with open_system() as system:
        family = Family(system)
        directory = family.directory
        old = directory.get("a")
        old.tell("slow")  # still finishing its queue after the stop request below
        old.tell("stop")
        old.tell("queued before the stop")
        await trio.testing.wait_all_tasks_blocked()
        system.stop_nowait(old)  # the stop request: "stop" is still queued behind "slow"
        assert old.stopped and old.statistics().state == "stopping"
        assert directory.find("a") is None
        assert directory.all() == []

        fresh = directory.get("a")  # the old one has not closed: the name is free already
        assert fresh is not old and not fresh.stopped
        assert directory.find("a") is fresh and directory.all() == [fresh]
        fresh.tell("told after the stop")
        await trio.testing.wait_all_tasks_blocked()
        assert family.log == [("a", "told after the stop")]

        family.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert old.statistics().state == "stopped"
        assert directory.find("a") is fresh, "the old actor closing did not unregister the fresh one"
        assert family.log == [("a", "told after the stop"), ("a", "slow"), ("a", "stop"),
                              ("a", "queued before the stop")]  # fmt: skip
        assert system.children(family.parent) == [fresh]


@pytest.mark.trio
async def test_an_actor_that_stopped_itself_is_replaced_on_next_use() -> None:
    async with open_system() as system:
        family = Family(system)
        old = family.directory.get("a")
        assert await old.ask("stop") == "a"
        assert old.stopped and family.directory.find("a") is None
        fresh = family.directory.get("a")
        assert fresh is not old
        assert await fresh.ask("again") == "a"
        assert [ref.name for ref in family.directory.all()] == ["member:a"]
