"""Randomized invariants of dispatch (docs/design.md §3.1 behaviours 6 and 8, §9).

Hypothesis draws a program of operations: submits of five pipelines (job
limits, a concurrency group with a job mutex, a three-stage lock chain, a
job that needs a ``gpu`` node, failing steps with ``retry-times``, held
steps), releases of held steps, cancels, retries (job, failed-only, whole),
agent faults (crash, hang, silence), virtual time jumps that fire queue,
mutex and heartbeat timeouts, and nodes added and removed. Each example
runs in its own runtime on trio's MockClock (autojump), so every wait is
virtual time.

After every operation: no job key runs more than its per-node limit on a
node or its total limit across nodes (``rt.nodes()``), and an agent locked
by a build runs only that build's jobs. At the end every hold is released:
every build must reach a final status (nothing lost), and every counter is
zero, every agent idle and unlocked, every queue empty (nothing leaked).

Examples: ``SHUNTER_HYPOTHESIS_EXAMPLES``, default 500 (about 20 s on a
2-core machine, ~40 ms per example); e.g. ``SHUNTER_HYPOTHESIS_EXAMPLES=5000``
for a long hunt.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import event as _event
from hypothesis import strategies as st

from actors.model.vocab import BUILD_FINAL, JOB_FAILING, FaultKind, values
from runtime import Conflict, NotFound, NotRetryable, QueueFull

from .conftest import describe, flaky_step, hold_step, noop_step, pipeline
from .dispatch_helpers import DispatchScenario, agent_names, dispatch_config, dispatch_scenario, fail_step, job, node

EXAMPLES = int(os.environ.get("SHUNTER_HYPOTHESIS_EXAMPLES", "500"))
INTERVAL, TIMEOUT = 5.0, 30.0

CONFIG = dispatch_config(
    [node("n1", 2, ["linux"]), node("n2", 2, ["linux", "gpu"])],
    heartbeat_interval=INTERVAL,
    heartbeat_timeout=TIMEOUT,
)

PIPELINES: dict[str, str] = {
    "lim": pipeline(
        "lim",
        {
            "compile": job(
                [flaky_step("make", fails=1) | {"retry-times": 1}, hold_step()],
                {"concurrency-limit-per-node": 1, "concurrency-limit-total": 2, "queue-timeout-minutes": 1},
            ),
            "lint": job([flaky_step("lint", fails=1)], {"concurrency-limit-total": 1, "queue-timeout-minutes": 2}),
        },
        group=None,
    ),
    "grp": pipeline(
        "grp",
        {
            "deploy": job(
                [hold_step()],
                {"concurrency-limit-per-node": 1},
                mutex={"label": "m-${{ variables.M }}", "queue-length": 1, "timeout-minutes": 1},
            )
        },
        max_parallel=2,
        queue_length=2,
        queue_timeout_minutes=2,
        variables={"M": "a"},
    ),
    "chain": pipeline(
        "chain",
        stages=[
            ("build", {"compile": [hold_step()]}),
            ("test", {"test": job([flaky_step("check")], {"lock-resource-with": "compile"}), "side": [noop_step("s")]}),
            ("package", {"package": job([hold_step()], {"lock-resource-with": "test"})}),
        ],
        group=None,
    ),
    "gpu": pipeline(
        "gpu",
        {"train": job([hold_step()], {"labels": ["gpu"], "concurrency-limit-per-node": 1, "queue-timeout-minutes": 1})},
        group=None,
    ),
    "fail": pipeline(
        "fail",
        {
            "bad": job([fail_step()], {"concurrency-limit-total": 1}),
            "ok": job([noop_step("x")], {"concurrency-limit-per-node": 1}, continue_on_error=True),
        },
        group=None,
    ),
}
LIMITS: dict[str, tuple[int | None, int | None]] = {
    "lim/compile": (1, 2),
    "lim/lint": (None, 1),
    "grp/deploy": (1, None),
    "gpu/train": (1, None),
    "fail/bad": (None, 1),
    "fail/ok": (1, None),
}

_index = st.integers(0, 63)
OPERATIONS = st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(sorted(PIPELINES)), st.sampled_from("ab")),
    st.tuples(st.just("submit"), st.sampled_from(["lim", "chain", "grp"]), st.just("a")),
    st.tuples(st.just("submit"), st.sampled_from(["lim", "chain", "gpu"]), st.just("b")),
    st.tuples(st.just("release"), _index),
    st.tuples(st.just("cancel"), _index),
    st.tuples(st.just("retry"), _index, st.sampled_from(["job", "failed_only", "whole"])),
    st.tuples(st.just("fault"), _index, st.sampled_from(values(FaultKind))),
    st.tuples(st.just("advance"), st.sampled_from([0.01, 1.0, 6.0, 31.0, 61.0, 121.0])),
    st.tuples(st.just("add_node"), st.integers(1, 2), st.sampled_from([(), ("gpu",), ("linux", "gpu")])),
    st.tuples(st.just("remove_node"), _index),
)
PROGRAMS = st.lists(OPERATIONS, min_size=8, max_size=60)



def event(text: str) -> None:
    """``hypothesis.event``, or nothing when a program is replayed by hand."""
    try:
        _event(text)
    except Exception:  # noqa: BLE001 - outside a hypothesis test
        pass


async def _apply(s: DispatchScenario, op: tuple[Any, ...], builds: list[str], added: list[int]) -> None:
    kind = op[0]
    if kind == "submit":
        _, pipeline_id, mutex_label = op
        try:
            if pipeline_id == "grp":
                build = await s.submit(pipeline_id, {"M": mutex_label})
            else:
                build = await s.submit(pipeline_id)
        except QueueFull:
            return
        builds.append(build.id)
    elif kind == "release":
        if builds:
            s.probe.release(builds[op[1] % len(builds)])
    elif kind == "cancel":
        if builds:
            try:
                await s.rt.cancel(builds[op[1] % len(builds)])
            except Conflict:
                pass
    elif kind == "retry":
        if not builds:
            return
        build_id, mode = builds[op[1] % len(builds)], op[2]
        try:
            if mode == "job":
                info = await s.build(build_id)
                failed = [j.id for st in info.stages for j in st.jobs if j.status in JOB_FAILING]
                if failed:
                    await s.rt.retry(build_id, job=failed[0])
            elif mode == "failed_only":
                await s.rt.retry(build_id, failed_only=True)
            else:
                await s.rt.retry(build_id)
        except (NotRetryable, QueueFull, Conflict):
            pass
    elif kind == "fault":
        names = agent_names(await s.rt.nodes())
        if names:
            s.rt.inject_fault(names[op[1] % len(names)], op[2])
    elif kind == "advance":
        await trio.sleep(op[1])
    elif kind == "add_node":
        added.append(len(added) + 1)
        await s.rt.add_node(f"x{len(added)}", agents=op[1], labels=list(op[2]))
    elif kind == "remove_node":
        nodes = [n for n in await s.rt.nodes() if not n.draining]
        if nodes:
            try:
                await s.rt.remove_node(nodes[op[1] % len(nodes)].name)
            except NotFound:
                pass
    else:  # pragma: no cover - the strategy makes only the kinds above
        raise AssertionError(op)


async def _run(program: list[tuple[Any, ...]]) -> None:
    async with dispatch_scenario(CONFIG, limit=12 * 3600.0) as s:
        for pipeline_id, source in PIPELINES.items():
            await s.register(source, id=pipeline_id)
        builds: list[str] = []
        added: list[int] = []
        for number, op in enumerate(program):
            await _apply(s, op, builds, added)
            await trio.sleep(0.01)
            try:
                await s.check_limits(LIMITS)
            except AssertionError as error:
                raise AssertionError(f"after operation {number} {op}: {error}") from None

        s.probe.release_all()
        # Every build ends on its own: queue, mutex and heartbeat timeouts
        # bound every wait once nothing is held.
        for build_id in builds:
            with trio.move_on_after(3600):
                done = await s.rt.wait(build_id)
                assert done.status in BUILD_FINAL, describe(done)
                continue
            raise AssertionError(f"build lost: {describe(await s.build(build_id))}; {await s.state()}")
        await s.assert_quiet(timeout=TIMEOUT + 3 * INTERVAL)
        # What the example exercised (``--hypothesis-show-statistics``).
        event(f"builds: {min(len(builds) // 5 * 5, 20)}+")
        for status in sorted({j.status for b in await s.rt.builds() for st in b.stages for j in st.jobs}):
            event(f"a job ended {status}")
        for op in {op[0] if op[0] != "fault" else f"fault {op[2]}" for op in program}:
            event(f"op {op}")
        listed = {b.id: b for b in await s.rt.builds()}
        assert set(builds) <= set(listed), set(builds) - set(listed)
        unfinished = [describe(b) for b in listed.values() if b.status not in BUILD_FINAL]
        assert not unfinished, unfinished


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(program=PROGRAMS)
def test_random_programs_respect_limits_and_leak_nothing(program: list[tuple[Any, ...]]) -> None:
    """Random submits, releases, cancels, retries, agent faults, timeouts and
    node changes: limits hold after every operation; at the end every build
    is final and nothing is held (see the module docstring)."""
    trio.run(_run, program, clock=trio.testing.MockClock(autojump_threshold=0))
