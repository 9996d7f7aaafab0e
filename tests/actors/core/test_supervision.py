"""Restart within the intensity limit, escalation past it, release hooks."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio

from actors.core import Actor, ActorCrashed, Ref, Supervision, open_system

from .helpers import wait_until


class Fragile(Actor):
    """Counts messages in its private state; crashes on "boom"."""

    incarnations = 0

    def __init__(self) -> None:
        Fragile.incarnations += 1
        self.count = 0

    def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        self.count += 1
        return self.count


class Parent(Actor):
    """Holds a resource per child and releases it when the child crashes."""

    def __init__(self, supervision: Supervision, log: list[Any]) -> None:
        self.supervision = supervision
        self.log = log
        self.held: dict[str, int] = {}

    async def started(self) -> None:
        child = self.spawn(Fragile, name="fragile", supervision=self.supervision)
        self.held[child.name] = 1
        self.log.append(("started", child.name))

    def receive(self, message: Any) -> Any:
        if message == "child":
            return self.system.lookup("fragile")
        return dict(self.held)

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        self.log.append(("crashed", child.name, str(error), restarting))
        self.held.pop(child.name, None)


@pytest.mark.anyio
async def test_crashed_actor_restarts_fresh_keeping_its_mailbox() -> None:
    async with open_system() as system:
        ref = system.spawn(Fragile, name="f", supervision=Supervision(max_restarts=3, within=60))
        assert await ref.ask("a") == 1
        ref.tell("boom")
        ref.tell("queued-after-crash")
        # fresh state: the count restarted, and the queued message was kept
        assert await ref.ask("b") == 2
        assert ref.statistics().restarts == 1
        assert not ref.stopped


@pytest.mark.trio
async def test_parent_hook_releases_what_the_crashed_child_held(autojump_clock: trio.abc.Clock) -> None:
    log: list[Any] = []
    async with open_system() as system:
        parent = system.spawn(lambda: Parent(Supervision(max_restarts=2, within=10), log), name="parent")
        child: Ref = await parent.ask("child")
        child.tell("boom")
        await child.ask("sync")
        assert await parent.ask("held") == {}
        assert ("crashed", "fragile", "boom", True) in log


@pytest.mark.trio
async def test_escalation_past_the_limit_crashes_and_restarts_the_parent(autojump_clock: trio.abc.Clock) -> None:
    log: list[Any] = []
    async with open_system() as system:
        parent = system.spawn(
            lambda: Parent(Supervision(max_restarts=2, within=10), log),
            name="parent",
            supervision=Supervision(max_restarts=5, within=10),
        )
        first_child: Ref = await parent.ask("child")
        for restarts in (1, 2):
            first_child.tell("boom")
            await wait_until(lambda: first_child.statistics().restarts == restarts)
        first_child.tell("boom")  # the third crash within the window escalates
        await wait_until(lambda: parent.statistics().restarts == 1)
        # the parent crashed and was restarted: it spawned a fresh child
        assert parent.statistics().restarts == 1
        assert first_child.stopped
        new_child: Ref = await parent.ask("child")
        assert new_child is not first_child and not new_child.stopped
        assert log.count(("started", "fragile")) == 2
        assert ("crashed", "fragile", "boom", False) in log


@pytest.mark.trio
async def test_restart_window_forgets_old_crashes(autojump_clock: trio.abc.Clock) -> None:
    async with open_system() as system:
        ref = system.spawn(Fragile, supervision=Supervision(max_restarts=1, within=5))
        for _ in range(3):
            ref.tell("boom")
            await ref.ask("sync")
            await trio.sleep(6)  # outside the window: each crash is the first
        assert ref.statistics().restarts == 3
        assert not ref.stopped


@pytest.mark.anyio
async def test_top_level_escalation_fails_the_system() -> None:
    with pytest.raises(ActorCrashed, match="'doomed'"):
        async with open_system() as system:
            ref = system.spawn(Fragile, name="doomed", supervision=Supervision(max_restarts=0))
            ref.tell("boom")
            await anyio.sleep_forever()


@pytest.mark.anyio
async def test_no_escalation_when_supervision_says_so() -> None:
    async with open_system() as system:
        ref = system.spawn(Fragile, supervision=Supervision(max_restarts=0, escalate=False))
        ref.tell("boom")
        await wait_until(lambda: ref.stopped)
        assert system.statistics().actors == 0


@pytest.mark.anyio
async def test_crash_in_an_actor_task_crashes_the_actor() -> None:
    class WithTask(Actor):
        def __init__(self) -> None:
            self.tasks = 0

        def receive(self, message: Any) -> Any:
            if message == "spawn-bad":
                self.start_task(self._bad)
            return self.tasks

        async def _bad(self) -> None:
            raise RuntimeError("task failed")

    async with open_system() as system:
        ref = system.spawn(WithTask, supervision=Supervision(max_restarts=1, within=60))
        ref.tell("spawn-bad")
        await wait_until(lambda: ref.statistics().restarts == 1)
        assert await ref.ask("x") == 0
