"""The pipeline actor on its own, in an actor system: fakes stand in for its
pools and concurrency groups, recording what it tells them, and the test
plays the agents, the pool and the group by telling the pipeline what they
would. What is checked is what the pipeline answers and what it tells.

- Admission: the group is told only the build, its limits and when it was
  queued; the submitter (or the retrier of a finished build) is answered
  once the group has decided, with the retry plan kept in the pipeline.
- Reports: an agent's records move the build on; an ``EndJob`` from the
  pool ends an attempt with its own status and reason (a lost agent's
  attempt is retried when the step allows); both are fenced by attempt.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import trio

from actors.admission.group import GroupActor, GroupSnapshot
from actors.builds.pipeline import PipelineActor
from actors.builds.records import StepLog
from actors.core import Actor, ActorSystem, open_system
from actors.directory import Directory
from actors.model.errors import NotRetryable, QueueFull
from actors.model.info import BuildInfo
from actors.model.messages import (
    Admit,
    Admitted,
    AgentReport,
    CancelRequest,
    DescribePipeline,
    EndJob,
    GetBuild,
    JobEnded,
    JobRequest,
    JobStarted,
    JobToken,
    Queued,
    Refused,
    Release,
    RetryRequest,
    StepEnded,
    StepStarted,
    SubmitBuild,
    WaitBuild,
    Withdraw,
)
from runtime.spec_loader import load_pipeline

T = 1_700_000_000.0


class Probe(Actor):
    """Records what it is told under its own key; answers every ask with None (a sync point)."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if message != "sync":
            self.log.append(message)


class Parent(Actor):
    """Parent of a family of probes."""


class Rig:
    """A pipeline actor with probe pools and groups (or real groups); see the module docstring."""

    def __init__(self, system: ActorSystem, nursery: trio.Nursery, pipeline: dict[str, Any],
                 real_groups: bool) -> None:  # fmt: skip
        self.system = system
        self.nursery = nursery
        self.real_groups = real_groups
        self.told: dict[str, list[Any]] = {}
        self.hub = system.spawn(lambda: Probe([]))

        def probe(prefix: str) -> Any:
            return lambda key: lambda: Probe(self.told.setdefault(f"{prefix}:{key}", []))

        group_factory = (lambda key: lambda: GroupActor(key, idle_after=math.inf)) if real_groups else probe("group")
        self.pools = Directory(system, "pool", system.spawn(Parent), probe("pool"))
        self.groups = Directory(system, "group", system.spawn(Parent), group_factory)
        mutexes = Directory(system, "mutex", system.spawn(Parent), probe("mutex"))
        spec = load_pipeline(pipeline)
        self.pipeline = system.spawn(lambda: PipelineActor(pipeline_id="p", spec=spec, hub=self.hub, pools=self.pools,
                                                           groups=self.groups, mutexes=mutexes))  # fmt: skip

    async def sync(self) -> None:
        """Let the pipeline, then every probe, handle what was told so far."""
        await self.pipeline.ask(DescribePipeline())
        for ref in self.pools.all():
            await ref.ask("sync")
        for ref in self.groups.all():
            await ref.ask(GroupSnapshot() if self.real_groups else "sync")

    async def ask_later(self, message: Any) -> Outcome:
        """Ask in a task of its own (the pipeline may answer only once the group has): await ``.result()``.

        Returns once the pipeline and the probes have handled the ask and what it told them."""
        outcome = Outcome()

        async def ask() -> None:
            try:
                outcome.value = await self.pipeline.ask(message)
            except Exception as error:  # the pipeline's answer, as the asker gets it
                outcome.error = error
            outcome.done.set()

        self.nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()  # the task has told its message
        await self.sync()
        return outcome

    def pool(self, name: str = "default") -> list[Any]:
        return self.told.setdefault(f"pool:{name}", [])

    def group(self, name: str = "g") -> list[Any]:
        return self.told.setdefault(f"group:{name}", [])

    def requests(self) -> list[tuple[str, int, int]]:
        """(job, attempt, first step) of every JobRequest told to the default pool, in order."""
        return [(m.token.job_id, m.token.attempt, m.payload.start_step) for m in self.pool() if type(m) is JobRequest]

    async def build(self, build_id: str = "p.1") -> BuildInfo:
        info: BuildInfo = await self.pipeline.ask(GetBuild(build_id))
        return info

    def run(self, token: JobToken, *steps: str, time: float = T, node: str = "n1") -> None:
        """Play an agent running the attempt: steps ``SUCCEED``/``FAILED`` in order, then the job ends."""
        records: list[Any] = [JobStarted(node, f"{node}/0", {}, time)]
        for index, status in enumerate(steps):
            records += [StepStarted(index, StepLog(), time),
                        StepEnded(index, status, None if status == "SUCCEED" else "exit 1", 0, {}, {}, time)]  # fmt: skip
        failed = "FAILED" in steps
        records.append(JobEnded("FAILED" if failed else "SUCCEED", "a step failed" if failed else None, time))
        self.pipeline.tell(AgentReport(token, tuple(records)))


class Outcome:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: Exception | None = None

    @property
    def pending(self) -> bool:
        return not self.done.is_set()

    async def result(self) -> Any:
        await self.done.wait()
        if self.error is not None:
            raise self.error
        return self.value


@asynccontextmanager
async def rig(pipeline: dict[str, Any], *, real_groups: bool = False) -> AsyncIterator[Rig]:
    async with open_system() as system, trio.open_nursery() as nursery:
        yield Rig(system, nursery, pipeline, real_groups)
        nursery.cancel_scope.cancel()


TWO_STAGES = {
    "name": "p",
    "stages": [
        {"name": "build", "jobs": {"compile": {"steps": [{"id": "make", "uses": "noop"}]},
                                   "lint": {"steps": [{"id": "check", "uses": "noop"}]}}},
        {"name": "ship", "jobs": {"deploy": {"steps": [{"id": "push", "uses": "noop", "retry-times": 1}]}}},
    ],
}  # fmt: skip
GROUPED = {**TWO_STAGES, "concurrency": {"group": "g", "max-parallel": 1, "queue-length": 1}}


def token(job: str, attempt: int = 1, build: str = "p.1") -> JobToken:
    return JobToken(build, job, attempt)


def jobs(info: BuildInfo) -> dict[str, tuple[str, str | None]]:
    return {job.id: (job.status, job.reason) for stage in info.stages for job in stage.jobs}


# -- without a group -------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_build_without_a_group_runs_at_once_and_moves_on_with_its_agents_reports(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(TWO_STAGES) as r:
        info = await r.pipeline.ask(SubmitBuild({}))
        assert (info.id, info.status, info.execute_count) == ("p.1", "RUNNING", 1)
        await r.sync()
        assert r.requests() == [("compile", 1, 0), ("lint", 1, 0)]
        assert all(m.pipeline == r.pipeline.name and not m.lock for m in r.pool())
        waiting = await r.ask_later(WaitBuild("p.1"))
        r.run(token("compile"), "SUCCEED")
        r.run(token("lint"), "SUCCEED")
        await r.sync()
        assert r.requests()[2:] == [("deploy", 1, 0)], "the next stage once the first has ended"
        assert waiting.pending
        r.run(token("deploy"), "SUCCEED")
        done = await waiting.result()
        assert (done.status, done.reason) == ("SUCCEED", None)
        assert r.group() == [], "no group, nothing told to one"


@pytest.mark.trio
@pytest.mark.parametrize(("status", "reason"), [
    ("QUEUE_TIMEOUT", "waited 10 minute(s) in pool 'default': no node in pool 'default'"),
    ("CANCELED", "withdrawn"),
    ("FAILED", "agent n1/0 (lock-resource-with) is gone"),
])  # fmt: skip
async def test_an_attempt_the_pool_ends_ends_its_job_with_the_pools_status_and_reason(
    autojump_clock: trio.testing.MockClock, status: str, reason: str
) -> None:
    async with rig(TWO_STAGES) as r:
        await r.pipeline.ask(SubmitBuild({}))
        r.pipeline.tell(EndJob(token("compile"), status, reason, T))
        r.run(token("lint"), "SUCCEED")
        info = await r.pipeline.ask(WaitBuild("p.1"))
        assert jobs(info)["compile"] == (status, reason)
        assert jobs(info)["deploy"] == ("UNEXEC", f"not run: job 'compile' ended {status}")
        assert (info.status, info.reason) == ("FAILED", f"job 'compile' ended {status}: {reason}")
        attempt = info.job("compile").attempts[0]
        assert (attempt.status, attempt.reason, attempt.agent) == (status, reason, None)


@pytest.mark.trio
async def test_a_lost_agents_attempt_is_retried_when_its_step_allows_and_the_old_attempt_is_fenced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(TWO_STAGES) as r:
        await r.pipeline.ask(SubmitBuild({}))
        r.run(token("compile"), "SUCCEED")
        r.run(token("lint"), "SUCCEED")
        await r.sync()
        r.pipeline.tell(AgentReport(token("deploy"), (JobStarted("n1", "n1/0", {}, T), StepStarted(0, StepLog(), T))))
        r.pipeline.tell(EndJob(token("deploy"), "HEARTBEAT_TIMEOUT", "agent n1/0 sent no heartbeat", T))
        await r.sync()
        assert r.requests()[-1] == ("deploy", 2, 0), "again, from the step that ran"
        # Late word about attempt 1 is dropped, from the agent or from the pool.
        r.run(token("deploy", 1), "SUCCEED")
        r.pipeline.tell(EndJob(token("deploy", 1), "FAILED", "late", T))
        r.pipeline.tell(EndJob(token("deploy", 1, build="p.9"), "FAILED", "no such build", T))
        info = await r.build()
        assert info.status == "RUNNING" and jobs(info)["deploy"] == ("QUEUE", None)
        assert [a.status for a in info.job("deploy").attempts] == ["HEARTBEAT_TIMEOUT", "QUEUE"]
        r.run(token("deploy", 2), "SUCCEED", node="n2")
        info = await r.pipeline.ask(WaitBuild("p.1"))
        assert info.status == "SUCCEED" and len(r.requests()) == 4
        assert [(a.status, a.agent, a.retry_of) for a in info.job("deploy").attempts] == [
            ("HEARTBEAT_TIMEOUT", "n1/0", None), ("SUCCEED", "n2/0", 1)]


@pytest.mark.trio
async def test_a_lost_agents_attempt_ends_as_the_pool_says_when_its_step_has_no_retry_left(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(TWO_STAGES) as r:
        await r.pipeline.ask(SubmitBuild({}))
        r.pipeline.tell(AgentReport(token("compile"), (JobStarted("n1", "n1/0", {}, T), StepStarted(0, StepLog(), T))))
        r.pipeline.tell(EndJob(token("compile"), "HEARTBEAT_TIMEOUT", "agent n1/0 sent no heartbeat", T))
        r.run(token("lint"), "SUCCEED")
        info = await r.pipeline.ask(WaitBuild("p.1"))
        assert jobs(info)["compile"] == ("HEARTBEAT_TIMEOUT", "agent n1/0 sent no heartbeat")
        step = info.job("compile").steps[0]
        assert step.status == "FAILED", "the step failed with its agent"
        assert [(a.status, a.reason) for a in step.attempts] == [("FAILED", "agent n1/0 sent no heartbeat")], (
            "its attempt ends with the job, never left RUNNING"
        )
        assert info.status == "FAILED" and [job for job, _, _ in r.requests()] == ["compile", "lint"]


@pytest.mark.trio
async def test_a_cancel_withdraws_the_running_attempts_and_the_pools_end_job_finishes_the_build(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(TWO_STAGES) as r:
        await r.pipeline.ask(SubmitBuild({}))
        r.run(token("compile"), "SUCCEED")
        info = await r.pipeline.ask(CancelRequest("p.1", "stop it"))
        assert info.status == "RUNNING", "until the withdrawn attempt has ended"
        await r.sync()
        assert [(m.token, m.reason) for m in r.pool() if type(m) is Withdraw] == [(token("lint"), "stop it")]
        r.pipeline.tell(EndJob(token("lint"), "CANCELED", "stop it", T))
        info = await r.pipeline.ask(WaitBuild("p.1"))
        assert (info.status, info.reason) == ("CANCELED", "stop it")
        assert jobs(info) == {"compile": ("SUCCEED", None), "lint": ("CANCELED", "stop it"),
                              "deploy": ("UNEXEC", "not run: stop it")}  # fmt: skip


@pytest.mark.trio
async def test_an_in_run_retry_never_goes_to_the_group(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(GROUPED) as r:
        submitted = await r.ask_later(SubmitBuild({}))
        await r.sync()
        r.pipeline.tell(Admitted("p.1"))
        await submitted.result()
        r.run(token("compile"), "FAILED")
        info = await r.pipeline.ask(RetryRequest("p.1", job="compile"))
        assert (info.status, info.execute_count) == ("RUNNING", 1)
        await r.sync()
        assert r.requests()[-1] == ("compile", 2, 0)
        assert [type(m) for m in r.group()] == [Admit], "one admission, for the submission"


# -- admission through a group ------------------------------------------------------------------


@pytest.mark.trio
async def test_the_group_learns_only_the_build_and_its_limits(autojump_clock: trio.testing.MockClock) -> None:
    # (deadline: only for a build restored after a restart, its original queue deadline)
    assert [field.name for field in msgspec.structs.fields(Admit)] == ["build_id", "pipeline", "config", "queued_at",
                                                                      "deadline"]  # fmt: skip
    for answer in (Admitted, Queued, Refused):
        assert all(field.type in (str, int) for field in msgspec.structs.fields(answer)), answer
    async with rig(GROUPED) as r:
        submitted = await r.ask_later(SubmitBuild({}))
        await r.sync()
        (admit,) = r.group()
        assert (admit.build_id, admit.pipeline, admit.config.group, admit.config.max_parallel) == ("p.1", r.pipeline, "g", 1)
        assert submitted.pending, "no answer before the group's"
        r.pipeline.tell(Queued("p.1", 3))
        info = await submitted.result()
        assert (info.status, info.queue_position, info.group) == ("QUEUE", 3, "g")
        await r.sync()
        assert r.requests() == []
        r.pipeline.tell(Admitted("p.1"))
        await r.sync()
        assert r.requests() == [("compile", 1, 0), ("lint", 1, 0)]
        assert (await r.build()).status == "RUNNING"
        r.run(token("compile"), "SUCCEED")
        r.run(token("lint"), "SUCCEED")
        await r.sync()
        r.run(token("deploy"), "SUCCEED")
        assert (await r.pipeline.ask(WaitBuild("p.1"))).status == "SUCCEED"
        await r.sync()
        assert r.group()[1:] == [Release("p.1")], "the place is given back when the build ends"


@pytest.mark.trio
async def test_a_refused_submission_raises_queue_full_and_leaves_no_build(autojump_clock: trio.testing.MockClock) -> None:
    async with rig(GROUPED) as r:
        submitted = await r.ask_later(SubmitBuild({}))
        await r.sync()
        r.pipeline.tell(Refused("p.1", "concurrency group 'g' is full"))
        with pytest.raises(QueueFull, match="concurrency group 'g' is full"):
            await submitted.result()
        again = await r.ask_later(SubmitBuild({}))
        await r.sync()
        assert [m.build_id for m in r.group()] == ["p.1", "p.1"], "the refused build never existed: its number is reused"
        r.pipeline.tell(Admitted("p.1"))
        assert (await again.result()).number == 1


@pytest.mark.trio
@pytest.mark.parametrize("answer", ["admitted", "queued", "refused"])
async def test_a_retry_of_a_finished_build_waits_for_its_group_with_its_plan_kept_in_the_pipeline(
    autojump_clock: trio.testing.MockClock, answer: str
) -> None:
    async with rig(GROUPED) as r:
        submitted = await r.ask_later(SubmitBuild({}))
        await r.sync()
        r.pipeline.tell(Admitted("p.1"))
        await submitted.result()
        r.run(token("compile"), "FAILED")
        r.run(token("lint"), "SUCCEED")
        failed = await r.pipeline.ask(WaitBuild("p.1"))
        assert failed.status == "FAILED"
        retried = await r.ask_later(RetryRequest("p.1", job="compile"))
        await r.sync()
        assert [type(m) for m in r.group()] == [Admit, Release, Admit]
        assert retried.pending and (await r.build()).status == "FAILED", "nothing changes before the group answers"
        with pytest.raises(NotRetryable, match="already waiting for admission"):
            await r.pipeline.ask(RetryRequest("p.1", failed_only=True))
        if answer == "refused":
            r.pipeline.tell(Refused("p.1", "concurrency group 'g' is full"))
            with pytest.raises(QueueFull):
                await retried.result()
            info = await r.build()
            assert (info.status, info.execute_count) == ("FAILED", 1), "a refused retry changes nothing"
            await r.ask_later(RetryRequest("p.1", job="compile"))  # and may be asked again
            await r.sync()
            assert [type(m) for m in r.group()] == [Admit, Release, Admit, Admit]
            return
        if answer == "queued":
            r.pipeline.tell(Queued("p.1", 1))
            info = await retried.result()
            assert (info.status, info.execute_count, info.queue_position) == ("QUEUE", 2, 1)
            assert jobs(info)["compile"] == ("DEPENDENT_WAITING", None), "the plan applied on the group's answer"
            r.pipeline.tell(Admitted("p.1"))
            await r.sync()
        else:
            r.pipeline.tell(Admitted("p.1"))
            info = await retried.result()
            assert (info.status, info.execute_count) == ("RUNNING", 2)
        assert r.requests()[-1] == ("compile", 2, 0)
        assert jobs(await r.build())["lint"] == ("SUCCEED", None), "a job retry keeps what succeeded"


@pytest.mark.trio
async def test_with_a_real_group_the_second_build_queues_and_the_third_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with rig(GROUPED, real_groups=True) as r:
        first = await r.pipeline.ask(SubmitBuild({}))
        second = await r.pipeline.ask(SubmitBuild({}))
        with pytest.raises(QueueFull, match="queue-length 1"):
            await r.pipeline.ask(SubmitBuild({}))
        assert (first.status, second.status, second.queue_position) == ("RUNNING", "QUEUE", 1)
        r.run(token("compile"), "SUCCEED")
        r.run(token("lint"), "SUCCEED")
        await r.sync()
        r.run(token("deploy"), "SUCCEED")
        await r.pipeline.ask(WaitBuild("p.1"))
        await r.sync()
        assert (await r.build("p.2")).status == "RUNNING", "admitted once the first released its place"
        assert (await r.pipeline.ask(SubmitBuild({}))).number == 3, "numbers stay dense after a refusal"
