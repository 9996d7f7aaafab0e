"""A ``runs-on`` that no node matches (docs/design.md §13: "says so at once").

- Registering warns, by the path of the ``runs-on``, in the words the
  pool will use (``PipelineInfo.warnings``); the pipeline is still valid.
- A job no node can run gets that reason at once: in its ``reason`` (and
  a job event), and in ``rt.waiting_jobs()``; at its queue timeout it ends
  QUEUE_TIMEOUT saying ``no node``.
- A node that matches, added later, runs the job; the waiting jobs it does
  not take at once lose the "no node" reason (they wait for an agent).
- Draining the last matching node gives the jobs left waiting the reason.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .conftest import describe, hold_step, noop_step, pipeline
from .dispatch_helpers import DispatchScenario, dispatch_config, dispatch_scenario, job, node

CONFIG = dispatch_config([node("n1", 2, ["linux"])], pools={"gpu-pool": []})
RUNS_ON = "$.jobs.work.runs-on"


def _one_job(runs_on: dict[str, Any], steps: list[dict[str, Any]] | None = None, minutes: float = 1) -> str:
    return pipeline("nn", {"work": job(steps or [noop_step("go")], {**runs_on, "queue-timeout-minutes": minutes})},
                    group=None)  # fmt: skip


async def _reason_at_once(s: DispatchScenario, build_id: str, reason: str) -> None:
    """The job has ``reason`` within a virtual millisecond of its submission, everywhere it shows."""
    t0 = trio.current_time()
    build = await s.until(build_id, lambda b: b.job("work").reason is not None, "the job's reason", timeout=1)
    assert trio.current_time() - t0 < 0.01
    assert build.job("work").status == "QUEUE" and build.job("work").reason == reason, describe(build)
    (waiting,) = await s.waiting(build_id, "work")
    assert waiting.reason == reason, waiting
    events = [e for e in await s.rt.events() if e.build_id == build_id and e.kind == "job"]
    assert [(e.status, e.reason) for e in events] == [("QUEUE", None), ("QUEUE", reason)], events


@pytest.mark.trio
@pytest.mark.parametrize(
    ("runs_on", "reason", "hint"),
    [
        ({"pool-name": "windows-pool"}, "no node in pool 'windows-pool' matches (the pool has no nodes)",
         "; pools with nodes: default"),
        ({"pool-name": "gpu-pool"}, "no node in pool 'gpu-pool' matches (the pool has no nodes)",
         "; pools with nodes: default"),
        ({"pool-name": "defualt"}, "no node in pool 'defualt' matches (the pool has no nodes)",
         "; pools with nodes: default (did you mean 'default'?)"),
        ({"labels": ["gpu"]}, "no node in pool 'default' has labels [gpu]", "; labels of its nodes: linux"),
        ({"node-name": "n9"}, "no node 'n9' in pool 'default'", "; its nodes: n1"),
        ({"node-name": "n1", "labels": ["linux", "gpu"]}, "node 'n1' in pool 'default' does not have labels [gpu]",
         "; labels of its nodes: linux"),
    ],
    ids=["unknown-pool", "empty-pool", "misspelled-pool", "labels", "node-name", "node-labels"],
)  # fmt: skip
async def test_no_node_matches_warns_at_registration_and_says_so_at_once(
    autojump_clock: trio.testing.MockClock, runs_on: dict[str, Any], reason: str, hint: str
) -> None:
    async with dispatch_scenario(CONFIG) as s:
        info = await s.register(_one_job(runs_on), id="nn")
        assert info.warnings == [{"path": RUNS_ON, "message": reason + hint}]
        assert (await s.rt.pipeline("nn")).warnings == []  # only the reply to registering carries them
        t0 = trio.current_time()
        b = await s.submit("nn")
        await _reason_at_once(s, b.id, reason)
        done = await s.finished(b.id, timeout=120)
        assert 60 - 0.01 <= trio.current_time() - t0 <= 60.25
        work = done.job("work")
        assert work.status == "QUEUE_TIMEOUT", describe(done)
        assert work.reason == f"waited 1 minute(s) in pool {runs_on.get('pool-name', 'default')!r}: {reason}"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_pipeline_every_node_matches_has_no_warning(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(CONFIG) as s:
        source = pipeline("ok", {"a": job([noop_step("go")], {"labels": ["linux"]}),
                                 "b": job([noop_step("go")], {"lock-resource-with": "a"}, depend_on=["a"]),
                                 "c": job([noop_step("go")])}, group=None)  # fmt: skip
        assert (await s.register(source, id="ok")).warnings == []
        b = await s.submit("ok")
        done = await s.finished(b.id)
        assert done.status == "SUCCEED", describe(done)
        assert all(job.reason is None for stage in done.stages for job in stage.jobs), describe(done)


@pytest.mark.trio
@pytest.mark.parametrize("pool", ["default", "windows-pool"])
async def test_a_matching_node_added_later_runs_the_job(autojump_clock: trio.testing.MockClock, pool: str) -> None:
    """Two builds wait for a ``gpu`` node; one with one agent comes: the first
    runs at once, the second loses the no-node reason and waits for that agent."""
    runs_on = {"pool-name": pool, "labels": ["gpu"]}
    async with dispatch_scenario(CONFIG) as s:
        await s.register(_one_job(runs_on, [hold_step()], minutes=10), id="nn")
        first, second = await s.submit("nn"), await s.submit("nn")
        reason = f"no node in pool {pool!r} " + ("has labels [gpu]" if pool == "default" else
                                                 "matches (the pool has no nodes)")  # fmt: skip
        await _reason_at_once(s, first.id, reason)
        await _reason_at_once(s, second.id, reason)
        await trio.sleep(60)

        await s.rt.add_node("g1", pool, 1, ["gpu"])
        running = (await s.job_running(first.id, "work")).job("work")
        assert running.reason is None and running.node == "g1", running
        waiting = await s.until(second.id, lambda b: b.job("work").reason is None, "the reason cleared", timeout=1)
        assert waiting.job("work").status == "QUEUE", describe(waiting)
        (entry,) = await s.waiting(second.id, "work")
        assert entry.reason.startswith("no free agent on 1 matching node(s)"), entry

        done = await s.finish_all([first.id, second.id])
        assert [b.status for b in done] == ["SUCCEED", "SUCCEED"], [describe(b) for b in done]
        await s.assert_quiet()


@pytest.mark.trio
async def test_draining_the_last_matching_node_gives_the_waiting_job_the_reason(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = dispatch_config([node("n1", 2), node("g1", 1, ["gpu"])])
    async with dispatch_scenario(config) as s:
        await s.register(_one_job({"labels": ["gpu"]}, [hold_step()], minutes=5), id="nn")
        holder = await s.submit("nn")
        await s.job_running(holder.id, "work")
        waiter = await s.submit("nn")
        entry = await s.until_waiting(waiter.id, "work")
        assert entry.reason.startswith("no free agent"), entry
        assert (await s.job(waiter.id, "work")).reason is None

        await s.rt.remove_node("g1")  # drains: the holder goes on, nothing new starts there
        reason = "no node in pool 'default' has labels [gpu]"
        build = await s.until(waiter.id, lambda b: b.job("work").reason == reason, "the no-node reason", timeout=1)
        assert build.job("work").status == "QUEUE", describe(build)
        assert (await s.until_waiting(waiter.id, "work")).reason == reason

        s.probe.release(holder.id)
        assert (await s.finished(holder.id)).status == "SUCCEED"
        done = await s.finished(waiter.id)
        assert done.job("work").status == "QUEUE_TIMEOUT" and reason in (done.job("work").reason or ""), describe(done)
        assert await s.node("g1") is None
        await s.assert_quiet()
