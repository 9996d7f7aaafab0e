"""The dispatcher and crashes: a crash the dispatcher meets while the actor's own task is
already being cancelled (a helper task crashed) is not carried into the next incarnation."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
import trio
import trio.testing

from actors.core import Actor, open_system

_incarnations = itertools.count()


class HelperCrash(Actor):
    """On "go": a helper task tells "boom" (which crashes ``receive``) and then crashes itself."""

    def __init__(self, log: list[tuple[int, str]]) -> None:
        self.log = log
        self.incarnation = next(_incarnations)

    async def started(self) -> None:
        self.log.append((self.incarnation, "started"))

    def receive(self, message: str) -> None:
        self.log.append((self.incarnation, message))
        if message == "go":
            self.start_task(self._helper)
        elif message == "boom":
            raise ValueError("boom in receive")

    async def _helper(self) -> None:
        self.ref.tell("boom")
        raise RuntimeError("helper boom")


@pytest.mark.trio
async def test_a_crash_met_while_the_incarnation_is_cancelled_is_not_carried_into_the_next(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    # The race goes either way with trio's batch order: tried until it has gone both ways many times.
    for _ in range(40):
        log: list[tuple[int, str]] = []
        async with open_system() as system:
            ref = system.spawn(lambda: HelperCrash(log))
            ref.tell("go")
            await trio.sleep(1)
            restarts = ref.statistics().restarts
        started = [incarnation for incarnation, what in log if what == "started"]
        # every incarnation but the last was restarted because of something it handled or ran
        for incarnation in started[:-1]:
            assert [what for i, what in log if i == incarnation and what != "started"], log
        assert restarts == len(started) - 1 <= 2, log
