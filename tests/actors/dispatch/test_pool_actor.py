"""The pool actor on its own, in an actor system, with its real nodes and
agents: a probe stands in for the pipeline and records what it is told.

What is checked: a request runs on a free agent, which reports to the
pipeline; a request that cannot run waits, with its reason and the deadline
of its queue-timeout timer, and the pool ends it itself with an ``EndJob``
(never an ``AgentReport``, which only agents send) on timeout, withdrawal, a
lost agent, or a gone lock-resource-with agent; whatever ends, slots and
agents come back and no timer is left behind.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from actors.core import Actor, ActorSystem, open_system
from actors.dispatch.pool import AddNode, InjectFault, ListNodes, ListWaiting, PoolActor, PoolStats
from actors.execution.actions import ActionRegistry, StepContext
from actors.model.messages import (AgentReport, EndJob, InstantJob, JobEnded, JobPayload, JobRequest, JobStarted, JobToken,
                                   JobWaiting, TemplateContext, Withdraw)
from runtime.spec_loader import load_pipeline


class Pipeline(Actor):
    """Stands in for the pipeline: records what it is told; an ask is a sync point."""

    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> Any:
        if message != "sync":
            self.log.append(message)


class Rig:
    def __init__(self, system: ActorSystem, workdir: Path) -> None:
        self.system = system
        self.told: list[Any] = []
        self.gates: dict[str, trio.Event] = {}  # build id -> opens its held steps
        actions = ActionRegistry.with_builtins()

        async def hold(step: StepContext) -> None:
            await self.gates.setdefault(step.build_id, trio.Event()).wait()

        actions.register("hold", hold)
        self.actions = actions
        self.pipeline = system.spawn(lambda: Pipeline(self.told))
        self.pool = system.spawn(lambda: PoolActor(pool="default", workdir=workdir, actions=actions,
                                                   heartbeat_interval=1.0, heartbeat_timeout=3.0))  # fmt: skip

    def request(self, job: dict[str, Any], build: str = "p.1", attempt: int = 1, agent: str | None = None,
                lock: bool = False) -> JobToken:  # fmt: skip
        """Tell the pool a JobRequest for job ``j`` with this body; returns its token."""
        spec = load_pipeline({"name": "p", "jobs": {"j": job}}).stages[0].jobs[0]
        token = JobToken(build, "j", attempt)
        payload = JobPayload(pipeline_id="p", build_number=1, execute_count=1, job=spec, start_step=0,
                             template_context=TemplateContext({}, {}), env={}, restore=None)  # fmt: skip
        self.pool.tell(JobRequest(token, self.pipeline.name, payload, spec.runs_on, agent=agent, lock=lock))
        return token

    def release(self, build: str) -> None:
        self.gates.setdefault(build, trio.Event()).set()

    async def sync(self) -> None:
        await self.pool.ask(PoolStats())
        await self.pipeline.ask("sync")

    async def stats(self) -> dict[str, int]:
        stats: dict[str, int] = await self.pool.ask(PoolStats())
        return stats

    def ended(self) -> list[tuple[JobToken, str, str]]:
        """(token, status, reason) of every EndJob the pool told."""
        return [(m.token, m.status, m.reason) for m in self.told if type(m) is EndJob]

    def reports(self, token: JobToken) -> list[Any]:
        """The records of the agents' reports about ``token``, in order (an ``InstantJob`` as those it stands for)."""
        return [record for m in self.told if type(m) is AgentReport and m.token == token for item in m.records
                for record in (item.records() if type(item) is InstantJob else (item,))]  # fmt: skip


@asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with open_system() as system:
        rig = Rig(system, tmp_path)
        await rig.sync()  # started: its heartbeat check is armed
        yield rig


def job(*steps: str, **runs_on: Any) -> dict[str, Any]:
    return {"runs-on": {key.replace("_", "-"): value for key, value in runs_on.items()},
            "steps": [{"uses": step} for step in steps]}  # fmt: skip


def seconds(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


IDLE = {"agents_busy": 0, "jobs_running": 0, "jobs_queued": 0, "slots_held": 0}


def idle(stats: dict[str, int]) -> bool:
    return {key: stats[key] for key in IDLE} == IDLE


@pytest.mark.trio
async def test_a_request_runs_on_a_free_agent_which_reports_to_the_pipeline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=1))
        token = r.request(job("noop", "echo"))
        await r.sync()
        records = r.reports(token)
        assert type(records[0]) is JobStarted and (records[0].node, records[0].agent) == ("n1", "n1/0")
        assert type(records[-1]) is JobEnded and records[-1].status == "SUCCEED"
        assert r.ended() == [], "an attempt that ran is reported by its agent alone"
        assert idle(await r.stats())


@pytest.mark.trio
async def test_an_action_registered_over_a_built_in_runs_from_the_next_attempt_of_the_same_job(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """The agent remembers which of a job's steps run inline; a registration makes it look again."""
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=1))
        spec = load_pipeline({"name": "p", "jobs": {"j": job("echo")}}).stages[0].jobs[0]
        payload = JobPayload(pipeline_id="p", build_number=1, execute_count=1, job=spec, start_step=0,
                             template_context=TemplateContext({}, {}), env={}, restore=None)  # fmt: skip
        ran: list[str] = []

        async def echo(step: StepContext) -> None:
            ran.append(step.build_id)

        for build in ("p.1", "p.2"):
            token = JobToken(build, "j", 1)
            r.pool.tell(JobRequest(token, r.pipeline.name, payload, spec.runs_on))  # the same job object both times
            for _ in range(20):
                await r.sync()
                if any(type(record) is JobEnded for record in r.reports(token)):
                    break
            assert r.reports(token)[-1].status == "SUCCEED"
            r.actions.register("echo", echo)
        assert ran == ["p.2"]  # the built-in ran p.1 inline; the registered action ran p.2


@pytest.mark.trio
async def test_a_request_no_node_can_take_waits_with_its_reason_then_ends_queue_timeout(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=1, labels=("linux",)))
        timers = r.system.statistics().timers_pending  # the pool's heartbeat check
        token = r.request(job("noop", labels=["windows"], queue_timeout_minutes=2))
        (waiting,) = await r.pool.ask(ListWaiting())
        assert (waiting.build_id, waiting.job_id, waiting.attempt) == ("p.1", "j", 1)
        assert "no node" in waiting.reason and "windows" in waiting.reason
        assert seconds(waiting.deadline) - seconds(waiting.since) == pytest.approx(120, abs=0.01)
        assert r.system.statistics().timers_pending == timers + 1, "one queue-timeout timer"
        await r.sync()
        assert r.told == [JobWaiting(token, waiting.reason)], "the reason at once, not only at the timeout"
        await trio.sleep(119)
        await r.sync()
        assert r.ended() == []
        await trio.sleep(2)
        await r.sync()
        assert r.ended() == [(token, "QUEUE_TIMEOUT", f"waited 2 minute(s) in pool 'default': {waiting.reason}")]
        assert [type(m) for m in r.told] == [JobWaiting, EndJob], "ended by the pool, not dressed up as an agent's report"
        assert await r.pool.ask(ListWaiting()) == [] and idle(await r.stats())
        assert r.system.statistics().timers_pending == timers


@pytest.mark.trio
async def test_a_waiting_request_withdrawn_ends_canceled_and_leaves_no_timer(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
        timers = r.system.statistics().timers_pending
        token = r.request(job("noop", queue_timeout_minutes=1))
        await r.sync()
        assert r.system.statistics().timers_pending == timers + 1
        r.pool.tell(Withdraw(token, "cancelled by a user"))
        await r.sync()
        assert r.ended() == [(token, "CANCELED", "cancelled by a user")]
        assert r.system.statistics().timers_pending == timers
        await trio.sleep(120)
        await r.sync()
        assert len(r.ended()) == 1, "no queue timeout for a request that left"


@pytest.mark.trio
async def test_a_total_limit_holds_the_second_attempt_until_the_first_agent_is_idle(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=2))
        timers = r.system.statistics().timers_pending
        first = r.request(job("hold", concurrency_limit_total=1), build="p.1")
        second = r.request(job("hold", concurrency_limit_total=1, queue_timeout_minutes=5), build="p.2")
        (waiting,) = await r.pool.ask(ListWaiting())
        assert (waiting.build_id, waiting.reason) == ("p.2", "concurrency-limit-total 1 reached for p/j (1 running)")
        assert seconds(waiting.deadline) - seconds(waiting.since) == pytest.approx(300, abs=0.01)
        stats = await r.stats()
        assert (stats["jobs_running"], stats["jobs_queued"], stats["slots_held"]) == (1, 1, 1)
        await trio.sleep(60)
        r.release("p.1")
        await trio.sleep(1)
        await r.sync()
        assert [type(record) for record in r.reports(second)][:1] == [JobStarted], "ran once the slot came back"
        assert r.reports(first)[-1].status == "SUCCEED"
        assert r.system.statistics().timers_pending == timers, "its queue timeout went when it got its slot"
        r.release("p.2")
        await trio.sleep(600)  # past the second's queue timeout
        await r.sync()
        assert r.ended() == [] and idle(await r.stats())


@pytest.mark.trio
@pytest.mark.parametrize(("fault", "status", "reason"), [
    ("crash", "FAILED", "agent n1/0 crashed: AgentFault('injected crash of agent n1/0')"),
    ("silence", "HEARTBEAT_TIMEOUT", "agent n1/0 sent no heartbeat for 3.5s (heartbeat-timeout 3s)"),
])  # fmt: skip
async def test_a_lost_agents_attempt_ends_with_end_job_and_a_fresh_agent_takes_its_place(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, fault: str, status: str, reason: str
) -> None:
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=1))
        await trio.sleep(0.5)  # between two heartbeat checks (every second)
        token = r.request(job("hold"))
        await r.sync()
        r.pool.tell(InjectFault("n1/0", fault))
        await trio.sleep(5)
        await r.sync()
        assert r.ended() == [(token, status, reason)]
        (node,) = await r.pool.ask(ListNodes())
        assert [(agent.name, agent.status) for agent in node.agents] == [("n1/1", "idle")]
        stats = await r.stats()
        assert stats["agents_lost"] == 1 and idle(stats)
        # A silent agent's job goes on; once it ends the retired agent leaves (its late
        # report is the pipeline's to fence) and work goes to the fresh agent.
        r.release("p.1")
        await trio.sleep(1)
        await r.sync()
        again = r.request(job("noop"), build="p.2")
        await r.sync()
        assert r.reports(again)[0].agent == "n1/1" and idle(await r.stats())


@pytest.mark.trio
async def test_a_request_pinned_to_an_agent_that_is_gone_ends_failed_at_once(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async with rig(tmp_path) as r:
        await r.pool.ask(AddNode("n1", agents=1))
        token = r.request(job("noop"), agent="n1/7", lock=True)
        await r.sync()
        assert r.ended() == [(token, "FAILED", "agent n1/7 (lock-resource-with) is gone")]
        assert await r.pool.ask(ListWaiting()) == [] and idle(await r.stats())


@pytest.mark.trio
async def test_many_waiting_attempts_share_one_timer_and_each_ends_at_its_own_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Queue timeouts are one deadline queue and one timer (actors/dispatch/expiry.py): 50 waiters
    hold one timer between them, a later waiter with a shorter timeout still ends first, and
    each ends at its own deadline, not its neighbour's."""
    async with rig(tmp_path) as r:
        timers = r.system.statistics().timers_pending
        start = trio.current_time()
        slow = [r.request(job("noop", queue_timeout_minutes=2), build=f"p.{n}") for n in range(1, 51)]
        quick = r.request(job("noop", queue_timeout_minutes=1), build="p.99")
        await r.sync()
        assert r.system.statistics().timers_pending == timers + 1
        await trio.sleep(61)
        await r.sync()
        assert [token for token, status, _ in r.ended()] == [quick]
        assert (await r.stats())["jobs_queued"] == 50
        await trio.sleep(60)
        await r.sync()
        ended = r.ended()
        assert [token for token, _, _ in ended] == [quick, *slow]
        assert {status for _, status, _ in ended} == {"QUEUE_TIMEOUT"}
        assert all("waited 2 minute(s)" in reason for _, _, reason in ended[1:]), ended[1]
        assert trio.current_time() - start < 122
        assert r.system.statistics().timers_pending == timers, "no timer left once nothing waits"
