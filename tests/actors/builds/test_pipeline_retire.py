"""The pipeline actor deleted (``RetirePipeline``) while a build waits for its group's answer.

The group here holds every ``Admit`` until the test lets it through to a real
``GroupActor``, so "submitted, group not answered yet" is an exact state,
not a race: such a build counts as unfinished (the delete is refused
without ``cancel``), and with ``cancel`` it is cancelled as soon as its
group answers, handing its group slot back.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import trio

from actors.admission.group import GroupActor, GroupSnapshot
from actors.builds.pipeline import PipelineActor
from actors.core import Actor, Ref, open_system
from actors.directory import Directory
from actors.events import EventHub
from actors.model.errors import Conflict, NotFound
from actors.model.messages import Admit, GetBuild, RetirePipeline, SubmitBuild
from runtime.spec_loader import load_pipeline

SPEC = load_pipeline({"name": "p", "concurrency": {"group": "g", "max-parallel": 1},
                      "steps": [{"uses": "noop"}]})  # fmt: skip


class _LetThrough(msgspec.Struct, frozen=True):
    pass


class _Held(msgspec.Struct, frozen=True):
    pass


class HoldingGroup(Actor):
    """Keeps the ``Admit`` messages it gets (``_Held`` asks if any); ``_LetThrough`` passes them on."""

    def __init__(self, real: Ref) -> None:
        self.real = real
        self.held: list[Admit] = []

    def receive(self, message: Any) -> Any:
        if type(message) is Admit:
            self.held.append(message)
        elif type(message) is _Held:
            return bool(self.held)
        elif type(message) is _LetThrough:
            for admit in self.held:
                self.real.tell(admit)
            self.held.clear()
        else:
            self.real.tell(message)
        return None


class Sink(Actor):
    """A pool that never runs anything (the builds here are cancelled before they run)."""

    def receive(self, message: Any) -> Any:
        return None


@pytest.mark.trio
async def test_a_build_waiting_for_its_group_blocks_a_delete_or_is_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_system() as system:
        hub = system.spawn(EventHub, name="events")
        real = system.spawn(lambda: GroupActor("g"), name="real-group")
        parent = system.spawn(Sink, name="parent")
        groups = Directory(system, "group", parent, lambda name: lambda: HoldingGroup(real))
        pools = Directory(system, "pool", parent, lambda name: Sink)
        mutexes = Directory(system, "mutex", parent, lambda name: Sink)
        pipeline = system.spawn(lambda: PipelineActor(pipeline_id="p", spec=SPEC, hub=hub, pools=pools,
                                                      groups=groups, mutexes=mutexes), name="pipeline:p")  # fmt: skip
        answers: list[Any] = []

        async def submit() -> None:
            answers.append(await pipeline.ask(SubmitBuild({})))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(submit)
            while not await groups.get("g").ask(_Held()):
                await trio.sleep(0.001)
            with pytest.raises(Conflict, match=r"p\.1"):
                await pipeline.ask(RetirePipeline(cancel=False))
            assert await pipeline.ask(RetirePipeline(cancel=True)) == ["p.1"]
            with pytest.raises(NotFound, match="deleted"):
                await pipeline.ask(SubmitBuild({}))
            groups.get("g").tell(_LetThrough())
        assert [answer.status for answer in answers] == ["CANCELED"]
        assert (await pipeline.ask(GetBuild("p.1"))).reason == "the pipeline was deleted"
        with trio.fail_after(5):  # the slot it was given goes back to the group
            while (await real.ask(GroupSnapshot())).running:
                await trio.sleep(0.01)

