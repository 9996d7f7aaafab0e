"""An attempt reported as one ``InstantJob`` changes a build exactly as its ordinary records would.

An agent reports a job it ran inline (instant built-in steps) as one
``InstantJob``; the pipeline applies it in one pass (``driver.py``). Here
the same attempt is told to two pipeline actors, once as the ``InstantJob``
and once as the records it stands for (``InstantJob.records()``: the
``JobStarted``, ``StepStarted``/``StepEnded`` or ``StepNotRun`` per step and
``JobEnded`` an agent sends for a job run in a task), and the two builds
must then be the same field by field: the events published (all but their
wall-clock stamp), the build's snapshot, and what the store would keep
(``encode_build``). The submissions' own clock readings are the only other
difference, and they are set equal before comparing.

An end-to-end check runs the same pipeline on a runtime whose built-ins run
inline and on one where they are registered again as async actions (run
in a task, reported record by record) and compares the builds and the
events the two publish.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

import runtime
from actors.builds.pipeline import PipelineActor
from actors.builds.records import StepLog
from actors.builds.snapshot import build_info
from actors.core import open_system
from actors.directory import Directory
from actors.events import Publish
from actors.execution.actions import SYNC_BUILTINS, StepContext
from actors.model.messages import (
    AgentReport,
    DescribePipeline,
    InstantJob,
    JobRequest,
    StepNotRun,
    StepRan,
    SubmitBuild,
)
from actors.state.codec import encode_build
from runtime.spec_loader import load_pipeline

from .test_pipeline_actor import Parent, Probe

T = 1_700_000_000.0

PIPELINE = {
    "name": "p",
    "jobs": {
        "work": {
            "runs-on": {"labels": []},
            "steps": [
                {"id": "first", "uses": "echo", "with": {"text": "hello"}},
                {"id": "second", "uses": "noop"},
                {"id": "third", "uses": "fail", "continue-on-error": True},
                {"id": "breaks", "uses": "fail"},
                {"id": "skipped", "uses": "noop"},
                {"id": "always", "uses": "echo", "if": "ALWAYS"},
            ],
        },
        "next": {"depend-on": ["work"], "if": "ALWAYS", "steps": [{"uses": "noop"}]},
    },
}


class Side:
    """One pipeline actor with probes for its hub, pools, groups and mutexes; the test plays the agent."""

    def __init__(self, system: Any, name: str) -> None:
        self.published: list[Any] = []
        self.told: list[Any] = []
        self.actor: PipelineActor | None = None
        hub = system.spawn(lambda: Probe(self.published))
        # each side's own families: the system's names are shared
        self.pools = pools = Directory(system, f"pool-{name}", system.spawn(Parent), lambda key: lambda: Probe(self.told))
        groups = Directory(system, f"group-{name}", system.spawn(Parent), lambda key: lambda: Probe([]))
        mutexes = Directory(system, f"mutex-{name}", system.spawn(Parent), lambda key: lambda: Probe([]))
        spec = load_pipeline(PIPELINE)

        def make() -> PipelineActor:
            self.actor = PipelineActor(pipeline_id="p", spec=spec, hub=hub, pools=pools, groups=groups,
                                       mutexes=mutexes)  # fmt: skip
            return self.actor

        self.pipeline = system.spawn(make)

    async def sync(self) -> None:
        await self.pipeline.ask(DescribePipeline())
        for ref in self.pools.all():
            await ref.ask("sync")

    def requests(self) -> list[JobRequest]:
        return [m for m in self.told if type(m) is JobRequest]

    def events(self) -> list[dict[str, Any]]:
        """Every record published, all fields but its wall-clock stamp."""
        records = [record for m in self.published if type(m) is Publish for record in m.records]
        return [{k: v for k, v in msgspec.structs.asdict(record).items() if k != "time"} for record in records]

    def build(self) -> Any:
        assert self.actor is not None
        build = self.actor.builds["p.1"]
        build.created_at = build.queued_at = build.started_at = T  # the submission's own clock reading
        return build


@asynccontextmanager
async def sides() -> AsyncIterator[tuple[Side, Side]]:
    async with open_system() as system:
        yield Side(system, "compact"), Side(system, "ordinary")


def attempt(context: dict[str, str], log: StepLog) -> InstantJob:
    """The job ``work`` as an agent runs it inline: a success with outputs and exports, a failure that
    continues, one that stops the job, a step not run, and an ``if: ALWAYS`` step after the failure."""
    steps = (
        StepRan(0, log, "SUCCEED", None, None, {"greeting": "hello"}, {"FROM_FIRST": "1"}),
        StepRan(1, StepLog(), "SUCCEED", None, None, {}, {}),
        StepRan(2, StepLog(), "FAILED", "failed by the fail action", None, {}, {}),
        StepRan(3, StepLog(), "FAILED", "failed by the fail action", None, {}, {}),
        StepNotRun(4, "UNEXEC", "not run: step 'breaks' ended FAILED: failed by the fail action"),
        StepRan(5, StepLog(), "SUCCEED", None, None, {}, {}),
    )
    return InstantJob("n1", "n1/3", context, T, steps, "FAILED", "step 'breaks' ended FAILED: failed by the fail action")


@pytest.mark.trio
async def test_an_instant_job_makes_the_same_build_events_and_stored_state_as_its_records() -> None:
    async with sides() as (compact, ordinary):
        for side in (compact, ordinary):
            await side.pipeline.ask(SubmitBuild({}))
            await side.sync()
        (request,) = compact.requests()
        assert [r.token for r in ordinary.requests()] == [request.token]
        log = StepLog()
        log.append("hello")
        ran = attempt({"KEPT": "from an earlier job"}, log)
        compact.pipeline.tell(AgentReport(request.token, (ran,)))
        ordinary.pipeline.tell(AgentReport(request.token, ran.records()))
        for side in (compact, ordinary):
            await side.sync()

        assert compact.events() == ordinary.events()
        kinds = [(e["kind"], e["job_id"], e["step_id"], e["status"]) for e in compact.events()]
        assert kinds[3:10] == [  # after the build's QUEUE and RUNNING and the job's QUEUE
            ("job", "work", None, "RUNNING"),
            ("step", "work", "first", "RUNNING"), ("step", "work", "first", "SUCCEED"),
            ("step", "work", "second", "RUNNING"), ("step", "work", "second", "SUCCEED"),
            ("step", "work", "third", "RUNNING"), ("step", "work", "third", "FAILED"),
        ]  # fmt: skip
        assert ("step", "work", "skipped", "UNEXEC") in kinds and ("job", "work", None, "FAILED") in kinds
        assert kinds[-1] == ("job", "next", None, "QUEUE"), "the build moved on to the dependent job"

        one, other = compact.build(), ordinary.build()
        assert encode_build(one) == encode_build(other)
        assert msgspec.to_builtins(build_info(one)) == msgspec.to_builtins(build_info(other))
        work = build_info(one).job("work")
        assert (work.status, work.attempts[-1].agent) == ("FAILED", "n1/3")
        first = one.jobs["work"].steps[0].attempts[-1]
        assert (first.started_at, first.finished_at, first.outputs, first.log.text()) == (T, T, {"greeting": "hello"},
                                                                                         "hello\n")  # fmt: skip
        assert one.jobs["work"].attempts[-1].context_before == {"KEPT": "from an earlier job"}

        # the next job's attempt restores nothing (a first attempt) but runs as its records left the build
        assert [r.token.job_id for r in compact.requests()] == ["work", "next"]
        assert [r.token.job_id for r in ordinary.requests()] == ["work", "next"]


@pytest.mark.trio
async def test_an_instant_job_of_a_finished_attempt_is_fenced_like_its_records() -> None:
    """A second report of the same attempt (over now) changes nothing and is counted as stale."""
    async with sides() as (compact, _):
        await compact.pipeline.ask(SubmitBuild({}))
        await compact.sync()
        (request,) = compact.requests()
        ran = attempt({}, StepLog())
        compact.pipeline.tell(AgentReport(request.token, (ran,)))
        await compact.sync()
        before, events = encode_build(compact.build()), len(compact.events())
        compact.pipeline.tell(AgentReport(request.token, (ran,)))
        await compact.sync()
        assert compact.actor is not None and compact.actor.stale_reports == 1
        assert (encode_build(compact.build()), len(compact.events())) == (before, events)


@pytest.mark.trio
async def test_the_events_of_one_message_share_one_clock_reading_and_the_next_message_reads_it_again() -> None:
    """A submission's events are stamped with the build's own submission time; an agent's report's
    events with one reading taken as the pipeline handles it, later than the first."""
    async with sides() as (compact, ordinary):
        await compact.pipeline.ask(SubmitBuild({}))
        await compact.sync()
        (request,) = compact.requests()
        submitted = [record.time for m in compact.published if type(m) is Publish for record in m.records]
        assert compact.actor is not None
        assert len(submitted) == 3 and set(submitted) == {compact.actor.builds["p.1"].created_at}
        compact.pipeline.tell(AgentReport(request.token, (attempt({}, StepLog()),)))
        await compact.sync()
        reported = [record.time for m in compact.published if type(m) is Publish for record in m.records][3:]
        assert len(reported) > 10 and len(set(reported)) == 1 and reported[0] >= submitted[0]


# -- end to end: built-ins inline, and the same actions in a task -------------------------------------


def as_task(name: str) -> Any:
    """The built-in ``name`` as an async action: the agent then runs the job in a task, record by record."""
    fn = SYNC_BUILTINS[name]

    async def action(step: StepContext) -> None:
        fn(step)

    return action


def timeless(value: Any) -> Any:
    """``value`` without its clock readings (every ``*_at``) and event ids."""
    if isinstance(value, dict):
        return {k: timeless(v) for k, v in value.items() if not k.endswith("_at") and k not in ("id", "time")}
    if isinstance(value, list):
        return [timeless(item) for item in value]
    return value


async def run_once(inline: bool) -> tuple[Any, Any, str]:
    config = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}]}]}
    async with runtime.open_runtime(config) as rt:
        if not inline:
            for name in SYNC_BUILTINS:
                rt.register_action(name, as_task(name))
        await rt.register_pipeline(PIPELINE)
        build = await rt.submit("p")
        info = await rt.wait(build.id, timeout=30)
        events = [msgspec.to_builtins(event) for event in await rt.events() if event.build_id == build.id]
        log = await rt.logs(build.id, "work", "first")
    return timeless(msgspec.to_builtins(info)), timeless(events), log


@pytest.mark.trio
async def test_a_job_run_inline_shows_as_the_same_job_run_in_a_task(autojump_clock: trio.testing.MockClock) -> None:
    inline, in_task = await run_once(inline=True), await run_once(inline=False)
    info, events, log = inline
    assert info["status"] == "FAILED" and "hello" in log, inline
    assert [e["status"] for e in events if e["kind"] == "step" and e["step_id"] == "third"] == ["RUNNING", "FAILED"]
    assert inline == in_task
