"""Telling actors by name (actors/names.py): what a waiting job's messages carry instead of a Ref."""

from __future__ import annotations

from typing import Any

import pytest

from actors.core import Actor, open_system
from actors.names import Names

from .core.helpers import Recorder


class Teller(Actor):
    """Tells ``(name, message)`` asks on by name; answers the system's dead-letter count."""

    def __init__(self) -> None:
        self.names = Names(self)

    def receive(self, message: Any) -> Any:
        name, payload = message
        self.names.tell(name, payload)
        return self.system.statistics().dead_letters


@pytest.mark.trio
async def test_a_name_reaches_its_actor_then_a_dead_letter_then_the_next_actor_under_it() -> None:
    first: list[Any] = []
    second: list[Any] = []
    async with open_system() as system:
        teller = system.spawn(Teller, name="teller")
        target = system.spawn(lambda: Recorder(first), name="pipeline:app")
        assert await teller.ask(("pipeline:app", "one")) == 0
        await target.ask("sync")
        await system.stop(target)
        assert await teller.ask(("pipeline:app", "lost")) == 1  # its kept ref is stopped, none runs
        assert await teller.ask(("pipeline:nobody", "lost too")) == 2  # never seen
        again = system.spawn(lambda: Recorder(second), name="pipeline:app")
        assert await teller.ask(("pipeline:app", "two")) == 2  # looked up again: the new actor
        await again.ask("sync")
    assert first == ["one", "sync"]
    assert second == ["two", "sync"]
