"""How a build runs: phases, depend-on, if, finally, timeouts, retries, shell steps.

Timed behaviour runs on trio's MockClock with `uses:` steps; shell steps run
real processes on the real clock, waiting on the build, never on a sleep.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

import runtime
from actors.execution.actions import ActionFailed, StepContext

from .conftest import describe

CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 4}]}]}


@asynccontextmanager
async def opened() -> AsyncIterator[runtime.Runtime]:
    async with runtime.open_runtime(CONFIG) as rt:
        yield rt


async def run(rt: runtime.Runtime, yaml_text: str, **variables: str) -> runtime.BuildInfo:
    pipeline = await rt.register_pipeline(yaml_text)
    build = await rt.submit(pipeline.id, variables=variables or None)
    return await rt.wait(build.id, timeout=3600)


def statuses(build: runtime.BuildInfo) -> dict[str, str]:
    return {job.id: job.status for stage in build.stages for job in stage.jobs}


@pytest.mark.trio
async def test_stages_run_in_order_and_depend_on_orders_jobs(autojump_clock: trio.abc.Clock) -> None:
    order: list[str] = []

    async def mark(step: StepContext) -> None:
        order.append(step.job_id)
        await trio.sleep(float(step.with_.get("seconds", 0)))

    async with opened() as rt:
        rt.register_action("mark", mark)
        build = await run(rt, """
name: ordered
stages:
  - name: one
    jobs:
      slow: {steps: [{uses: mark, with: {seconds: 5}}]}
      after-slow: {depend-on: [slow], steps: [{uses: mark}]}
      fast: {steps: [{uses: mark}]}
  - name: two
    jobs:
      last: {steps: [{uses: mark}]}
""")
    assert build.status == "SUCCEED"
    # slow and fast start together; after-slow waits for slow; stage two waits for all
    assert set(order[:2]) == {"slow", "fast"} and order[2:] == ["after-slow", "last"]
    assert [stage.status for stage in build.stages] == ["SUCCEED", "SUCCEED"]


@pytest.mark.trio
async def test_a_failed_job_lets_its_siblings_finish_and_stops_later_stages(autojump_clock: trio.abc.Clock) -> None:
    async with opened() as rt:
        pipeline = await rt.register_pipeline("""
name: failing
stages:
  - name: one
    jobs:
      broken: {steps: [{uses: fail, with: {message: compiler exploded}}]}
      sibling: {steps: [{uses: sleep, with: {seconds: 60}}]}
      dependent: {depend-on: [broken], steps: [{uses: noop}]}
  - name: two
    jobs:
      later: {steps: [{uses: noop}]}
      on-failure: {if: FAILURE, steps: [{uses: echo, with: {text: cleaning up}}]}
""")
        build = await rt.submit(pipeline.id)
        with trio.fail_after(30):
            while (await rt.build(build.id)).job("broken").status != "FAILED":
                await trio.sleep(1)
        during = await rt.build(build.id)
        assert during.status == "RUNNING" and during.job("sibling").status == "RUNNING"
        build = await rt.wait(build.id, timeout=3600)
    assert build.status == "FAILED"
    assert "broken" in (build.reason or "") and "compiler exploded" in (build.reason or "")
    assert statuses(build) == {"broken": "FAILED", "sibling": "SUCCEED", "dependent": "UNEXEC",
                               "later": "UNEXEC", "on-failure": "SUCCEED"}
    assert "broken" in (build.job("dependent").reason or "")


@pytest.mark.trio
async def test_continue_on_error_keeps_the_build_green(autojump_clock: trio.abc.Clock) -> None:
    async with opened() as rt:
        build = await run(rt, """
name: tolerant
jobs:
  flaky-lint:
    continue-on-error: true
    steps: [{uses: fail}]
  build:
    steps:
      - {id: optional, uses: fail, continue-on-error: true}
      - {id: main, uses: noop}
""")
    assert build.status == "SUCCEED"
    assert build.job("flaky-lint").status == "FAILED"
    steps = {step.id: step.status for step in build.job("build").steps}
    assert steps == {"optional": "FAILED", "main": "SUCCEED"}


@pytest.mark.trio
async def test_step_if_conditions(autojump_clock: trio.abc.Clock) -> None:
    async with opened() as rt:
        build = await run(rt, """
name: conditions
jobs:
  j:
    steps:
      - {id: boom, uses: fail}
      - {id: skipped-by-failure, uses: noop}
      - {id: report, if: FAILURE, uses: echo, with: {text: it failed}}
      - {id: always, if: ALWAYS, uses: noop}
      - {id: only-on-cancel, if: CANCELED, uses: noop}
""")
    steps = {step.id: step.status for step in build.job("j").steps}
    assert steps == {"boom": "FAILED", "skipped-by-failure": "UNEXEC", "report": "SUCCEED",
                     "always": "SUCCEED", "only-on-cancel": "SKIP"}
    assert build.status == "FAILED"


@pytest.mark.trio
async def test_instant_steps_follow_the_step_rules_of_steps_run_in_a_task(autojump_clock: trio.abc.Clock) -> None:
    """Built-in steps run inline in the agent, other actions in a task: ``if``, ``retry-times`` and
    ``continue-on-error`` decide the same on both paths, from the first step on."""

    async def noop(step: StepContext) -> None:
        pass

    async def fail(step: StepContext) -> None:
        raise ActionFailed("failed by the fail action")

    pipeline = """
name: rules-{kind}
jobs:
  j:
    steps:
      - {{id: cancel-only, if: CANCELED, uses: {prefix}noop}}
      - {{id: failure-only, if: FAILURE, uses: {prefix}noop}}
      - {{id: first, uses: {prefix}noop}}
      - {{id: flaky, uses: {prefix}fail, retry-times: 1, continue-on-error: true}}
      - {{id: tolerated, uses: {prefix}noop}}
      - {{id: boom, uses: {prefix}fail}}
      - {{id: not-run, uses: {prefix}noop}}
      - {{id: report, if: FAILURE, uses: {prefix}noop}}
      - {{id: always, if: ALWAYS, uses: {prefix}noop}}
"""
    seen = []
    async with opened() as rt:
        rt.register_action("task-noop", noop)
        rt.register_action("task-fail", fail)
        for kind, prefix in (("inline", ""), ("task", "task-")):
            job = (await run(rt, pipeline.format(kind=kind, prefix=prefix))).job("j")
            seen.append((job.status, job.reason, [(s.id, s.status, len(s.attempts)) for s in job.steps]))
    assert seen[0] == seen[1]
    assert seen[0] == ("FAILED", "step 'boom' ended FAILED: failed by the fail action", [
        ("cancel-only", "SKIP", 0), ("failure-only", "SKIP", 0), ("first", "SUCCEED", 1), ("flaky", "FAILED", 2),
        ("tolerated", "SUCCEED", 1), ("boom", "FAILED", 1), ("not-run", "UNEXEC", 0), ("report", "SUCCEED", 1),
        ("always", "SUCCEED", 1)])


@pytest.mark.trio
async def test_finally_jobs_run_by_their_condition(autojump_clock: trio.abc.Clock) -> None:
    async with opened() as rt:
        build = await run(rt, """
name: with-finally
jobs:
  work: {steps: [{uses: fail}]}
finally:
  notify: {if: FAILURE, steps: [{uses: echo, with: {text: failed}}]}
  celebrate: {if: SUCCESS, steps: [{uses: noop}]}
  tidy: {steps: [{uses: noop}]}
""")
    assert build.stages[-1].name == "finally"
    assert statuses(build) == {"work": "FAILED", "notify": "SUCCEED", "celebrate": "UNEXEC", "tidy": "SUCCEED"}


@pytest.mark.trio
async def test_step_and_job_timeouts_end_exec_timeout_on_time(autojump_clock: trio.abc.Clock) -> None:
    async with opened() as rt:
        start = trio.current_time()
        build = await run(rt, """
name: timeouts
jobs:
  slow-step:
    steps:
      - {id: nap, uses: sleep, with: {seconds: 600}, timeout-minutes: 1}
      - {id: next, uses: noop}
  slow-job:
    timeout-minutes: 2
    steps:
      - {id: a, uses: sleep, with: {seconds: 100}}
      - {id: b, uses: sleep, with: {seconds: 100}}
      - {id: c, uses: noop}
""")
        elapsed = trio.current_time() - start
    assert 120 <= elapsed < 121
    step_job, slow_job = build.job("slow-step"), build.job("slow-job")
    assert step_job.status == "FAILED" and step_job.step("nap").status == "EXEC_TIMEOUT"
    assert "timeout-minutes 1" in (step_job.step("nap").reason or "")
    assert step_job.step("next").status == "UNEXEC"
    assert slow_job.status == "EXEC_TIMEOUT" and "timeout-minutes 2" in (slow_job.reason or "")
    assert [s.status for s in slow_job.steps] == ["SUCCEED", "EXEC_TIMEOUT", "UNEXEC"]


@pytest.mark.trio
async def test_retry_times_retries_automatically_and_links_attempts(autojump_clock: trio.abc.Clock) -> None:
    calls = 0

    async def third_time_lucky(step: StepContext) -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError(f"attempt {calls} failed")

    async with opened() as rt:
        rt.register_action("lucky", third_time_lucky)
        build = await run(rt, """
name: retrying
jobs:
  j: {steps: [{id: s, uses: lucky, retry-times: 2}]}
""")
    attempts = build.job("j").step("s").attempts
    assert build.status == "SUCCEED"
    assert [(a.number, a.status, a.retry_of) for a in attempts] == [
        (1, "FAILED", None), (2, "FAILED", 1), (3, "SUCCEED", 2)]
    assert "attempt 1 failed" in (attempts[0].reason or "")
    assert len(build.job("j").attempts) == 1  # automatic retries stay inside one job attempt


@pytest.mark.trio
async def test_variables_are_checked_and_rendered(autojump_clock: trio.abc.Clock) -> None:
    seen: dict[str, object] = {}

    async def capture(step: StepContext) -> None:
        seen.update(with_=dict(step.with_), env=dict(step.env))

    async with opened() as rt:
        rt.register_action("capture", capture)
        pipeline = await rt.register_pipeline("""
name: vars
variables: {TARGET: staging}
jobs:
  j:
    env: {WHERE: "${{ variables.TARGET }}"}
    steps: [{uses: capture, with: {to: "deploy-${{ variables.TARGET }}-${{ ci.build_num }}"}}]
""")
        with pytest.raises(runtime.InvalidRequest, match="TARGT"):
            await rt.submit(pipeline.id, variables={"TARGT": "prod"})
        with pytest.raises(runtime.InvalidRequest, match="TARGET"):
            await rt.submit(pipeline.id, variables={"TARGET": ["not", "a", "string"]})
        assert await rt.builds(pipeline.id) == []  # refused submissions left nothing behind
        build = await rt.submit(pipeline.id, variables={"TARGET": "prod"})
        await rt.wait(build.id, timeout=60)
    assert build.number == 1 and build.variables == {"TARGET": "prod"}
    assert seen["with_"] == {"to": "deploy-prod-1"}
    env = seen["env"]
    assert isinstance(env, dict)
    assert env["WHERE"] == "prod" and env["TARGET"] == "prod" and env["SHUNTER_BUILD_ID"] == build.id


@pytest.mark.trio
async def test_every_example_pipeline_registers() -> None:
    examples = sorted(Path(__file__).parents[2].joinpath("examples", "pipelines").glob("*.yml"))
    assert len(examples) >= 8
    async with opened() as rt:
        for path in examples:
            info = await rt.register_pipeline(path)
            assert info.jobs, path


# -- shell steps: real processes, real clock, waiting on the build ---------------------------


@pytest.mark.trio
async def test_shell_steps_share_exports_outputs_and_the_workspace() -> None:
    async with opened() as rt:
        build = await run(rt, """
name: shell
jobs:
  j:
    env: {GREETING: hello}
    steps:
      - id: write
        run: |
          echo "$GREETING from $SHUNTER_BUILD_ID" > note.txt
          echo "VERSION=1.2.3" >> "$SHUNTER_ENV"
          echo "digest=abc" >> "$SHUNTER_OUTPUT"
      - id: read
        run: |
          cat note.txt
          test "$VERSION" = 1.2.3
      - id: exit
        run: exit 3
""")
        log = await rt.logs(build.id, job="j", step="read")
    job = build.job("j")
    assert [s.status for s in job.steps] == ["SUCCEED", "SUCCEED", "FAILED"]
    assert job.step("write").attempts[0].outputs == {"digest": "abc"}
    assert job.step("exit").attempts[0].exit_code == 3 and "exit code 3" in (job.step("exit").reason or "")
    assert f"hello from {build.id}" in log


@pytest.mark.trio
async def test_cancel_kills_the_running_process_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    async with opened() as rt:
        pipeline = await rt.register_pipeline(f"""
name: cancel-me
jobs:
  j:
    steps:
      - run: |
          sleep 1000 &
          echo $! > {pid_file}
          wait
""")
        build = await rt.submit(pipeline.id)
        with trio.fail_after(30):
            while not pid_file.exists() or not pid_file.read_text().strip():
                await trio.sleep(0.01)
        child = int(pid_file.read_text())
        await rt.cancel(build.id)
        build = await rt.wait(build.id, timeout=30)
    assert build.status == "CANCELED" and build.job("j").status == "CANCELED"
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


@pytest.mark.trio
async def test_a_lost_agents_job_is_retried_elsewhere_when_the_step_allows(autojump_clock: trio.abc.Clock) -> None:
    started = trio.Event()

    async def long_step(step: StepContext) -> None:
        started.set()
        await trio.sleep(300)

    config = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}, {"name": "n2", "agents": 1}]}],
              "heartbeat-interval": 5, "heartbeat-timeout": 30}
    async with runtime.open_runtime(config) as rt:
        rt.register_action("long", long_step)
        pipeline = await rt.register_pipeline("""
name: resilient
jobs:
  j: {steps: [{id: prep, uses: noop}, {id: work, uses: long, retry-times: 1}]}
""")
        build = await rt.submit(pipeline.id)
        await started.wait()
        first_agent = (await rt.build(build.id)).job("j").agent
        assert first_agent is not None
        rt.inject_fault(first_agent, "silence")
        build = await rt.wait(build.id, timeout=3600)
        stats = await rt.stats()
    job = build.job("j")
    assert build.status == "SUCCEED"
    assert [(a.number, a.status, a.retry_of, a.start_step) for a in job.attempts] == [
        (1, "HEARTBEAT_TIMEOUT", None, None), (2, "SUCCEED", 1, "work")]
    assert job.attempts[1].agent != first_agent
    assert [a.status for a in job.step("work").attempts] == ["FAILED", "SUCCEED"]
    assert "heartbeat" in (job.step("work").attempts[0].reason or "")
    assert stats.agents_lost == 1 and stats.slots_held == 0 and stats.agents_busy == 0


@pytest.mark.trio
async def test_retry_times_bounds_retries_after_lost_agents_across_attempts(autojump_clock: trio.abc.Clock) -> None:
    """``retry-times: 1`` allows one retry in all, not one per job attempt:
    the second lost agent ends the job HEARTBEAT_TIMEOUT (it used to retry
    for as long as agents kept being lost)."""
    async def long_step(step: StepContext) -> None:
        await trio.sleep(300)

    nodes = [{"name": f"n{i}", "agents": 1} for i in range(1, 4)]
    config = {"pools": [{"name": "default", "nodes": nodes}], "heartbeat-interval": 5, "heartbeat-timeout": 30}
    async with runtime.open_runtime(config) as rt:
        rt.register_action("long", long_step)
        pipeline = await rt.register_pipeline("""
name: unlucky
jobs:
  j: {steps: [{id: work, uses: long, retry-times: 1}]}
""")
        build = await rt.submit(pipeline.id)
        lost: list[str] = []
        with trio.fail_after(3600):
            while len(lost) < 2:
                info = await rt.build(build.id)
                job = info.job("j")
                if job.status == "RUNNING" and job.agent is not None and job.agent not in lost:
                    if len(job.attempts) == len(lost) + 1 and job.step("work").status == "RUNNING":
                        rt.inject_fault(job.agent, "silence")
                        lost.append(job.agent)
                await trio.sleep(1)
        build = await rt.wait(build.id, timeout=3600)
        stats = await rt.stats()
    job = build.job("j")
    assert build.status == "FAILED", describe(build)
    assert [a.status for a in job.attempts] == ["HEARTBEAT_TIMEOUT", "HEARTBEAT_TIMEOUT"], describe(build)
    assert [a.status for a in job.step("work").attempts] == ["FAILED", "FAILED"]
    assert stats.slots_held == 0 and stats.agents_busy == 0


@pytest.mark.trio
async def test_a_node_crash_loses_its_agents_and_nothing_stays_held(autojump_clock: trio.abc.Clock) -> None:
    started = trio.Event()

    async def long_step(step: StepContext) -> None:
        started.set()
        await trio.sleep(300)

    async with opened() as rt:
        rt.register_action("long", long_step)
        pipeline = await rt.register_pipeline("name: victim\njobs: {j: {steps: [{uses: long}]}}")
        build = await rt.submit(pipeline.id)
        await started.wait()
        rt.system.lookup("node:n1").tell("not a message a node understands")  # crashes it
        build = await rt.wait(build.id, timeout=60)
        stats = await rt.stats()
        nodes = await rt.nodes()
        again = await rt.wait((await rt.submit(pipeline.id)).id, timeout=3600)
    assert build.status == "FAILED" and "node n1 crashed" in (build.job("j").reason or "")
    assert stats.slots_held == 0 and stats.agents_busy == 0 and stats.agents == 4
    assert [agent.name for agent in nodes[0].agents] == ["n1/4", "n1/5", "n1/6", "n1/7"]
    assert again.status == "SUCCEED"
