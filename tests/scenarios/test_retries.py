"""Retries and concurrency groups (docs/design.md §3.1 behaviours 4 and 5).

- A failed step or job of a RUNNING build is retried inside that run: no
  group admission, no new slot, no queue movement, same execute_count, the
  new attempt linked to the one it retries. A whole-build retry of a
  RUNNING build is refused.
- A finished build's retry (whole, failed-only, a job, a step) is a new
  admission at the back of its group's queue (or QueueFull), with
  execute_count + 1.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from runtime import NotRetryable, QueueFull

from .conftest import (
    Scenario,
    describe,
    echo_step,
    flaky_step,
    hold_step,
    noop_step,
    pipeline,
    scenario,
)


def _attempts(step: Any) -> list[tuple[int, str, int | None]]:
    return [(t.number, t.status, t.retry_of) for t in step.attempts]


# --- behaviour 4: retries inside a RUNNING build -------------------------------------

RUNNING_APP = pipeline(
    "running-app",
    stages=[
        (
            "build",
            {
                "job1": [echo_step("prepare"), flaky_step("make"), noop_step("after")],
                "job2": [hold_step()],
            },
        )
    ],
    max_parallel=1,
    queue_length=2,
    queue_timeout_minutes=10,
)


async def _running_with_failed_job1(s: Scenario, *, fails: int = 1) -> tuple[str, str, str]:
    """A runs; job1 failed at ``make`` while job2 is held; B and C fill the queue."""
    source = RUNNING_APP if fails == 1 else RUNNING_APP.replace("fails: 1", f"fails: {fails}")
    await s.register(source, id="app")
    a = await s.submit("app")
    await s.running(a.id)
    info = await s.until(a.id, lambda b: b.job("job1").status == "FAILED", "job1 of A failed")
    assert info.status == "RUNNING" and info.job("job2").status == "RUNNING", describe(info)
    b = await s.submit("app")
    c = await s.submit("app")
    assert await s.positions(b.id, c.id) == [1, 2]
    return a.id, b.id, c.id


async def _group_unchanged(s: Scenario, a: str, b: str, c: str) -> None:
    group = await s.group("app")
    assert group.running == [a], "a retry inside a running build takes no group slot"
    assert await s.queue("app") == [b, c]
    assert await s.positions(b, c) == [1, 2]
    assert not s.probe.started(b) and not s.probe.started(c)


@pytest.mark.trio
async def test_step_retry_while_running_reruns_the_job_from_that_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A step retry re-runs job1 from the failed step: earlier steps keep
    their single attempt, the failed step gets attempt 2 (retry_of 1), later
    steps run; the job gets a second attempt; A keeps execute_count 1."""
    async with scenario() as s:
        a, b, c = await _running_with_failed_job1(s)
        retried = await s.rt.retry(a, step="make")
        assert (retried.status, retried.execute_count) == ("RUNNING", 1), describe(retried)

        info = await s.until(a, lambda x: x.job("job1").status == "SUCCEED", "job1 to succeed")
        job1 = info.job("job1")
        assert len(job1.step("prepare").attempts) == 1, describe(info)
        assert _attempts(job1.step("make")) == [(1, "FAILED", None), (2, "SUCCEED", 1)]
        assert job1.step("after").status == "SUCCEED", describe(info)
        assert [(t.number, t.status) for t in job1.attempts] == [(1, "FAILED"), (2, "SUCCEED")]
        assert info.status == "RUNNING" and info.execute_count == 1
        await _group_unchanged(s, a, b, c)

        s.probe.release(a, "job2")
        done = await s.finished(a)
        assert (done.status, done.execute_count) == ("SUCCEED", 1), describe(done)
        await s.running(b)


@pytest.mark.trio
async def test_step_retry_after_a_tolerated_failure_runs_the_step(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A step that failed under ``continue-on-error: true`` before the retried
    step does not fail the retry: the retried step and those after it run
    and the job succeeds (it used to end FAILED with the step UNEXEC)."""
    tolerant = pipeline(
        "tolerant",
        stages=[
            (
                "build",
                {
                    "job1": [
                        {"id": "lint", "uses": "fail@1", "continue-on-error": True},
                        flaky_step("make"),
                        noop_step("after"),
                    ],
                    "job2": [hold_step()],
                },
            )
        ],
    )
    async with scenario() as s:
        await s.register(tolerant, id="tolerant")
        a = (await s.submit("tolerant")).id
        await s.running(a)
        await s.until(a, lambda b: b.job("job1").status == "FAILED", "job1 to fail at make")

        await s.rt.retry(a, step="make")
        info = await s.until(
            a,
            lambda b: len(b.job("job1").attempts) == 2 and b.job("job1").status in ("SUCCEED", "FAILED"),
            "the retried attempt of job1 to end",
        )
        job1 = info.job("job1")
        assert job1.status == "SUCCEED", describe(info)
        assert _attempts(job1.step("make")) == [(1, "FAILED", None), (2, "SUCCEED", 1)]
        assert job1.step("after").status == "SUCCEED"
        assert job1.step("lint").status == "FAILED", "the tolerated failure keeps its record"

        s.probe.release(a, "job2")
        assert (await s.finished(a)).status == "SUCCEED"


@pytest.mark.trio
async def test_job_retry_while_running_bypasses_a_full_queue(autojump_clock: trio.testing.MockClock) -> None:
    """A job retry of a RUNNING build in a full group is accepted at once and
    re-runs the whole job (every step gets a new attempt); no slot, no queue
    movement, execute_count stays 1."""
    async with scenario() as s:
        a, b, c = await _running_with_failed_job1(s)
        with pytest.raises(QueueFull):
            await s.submit("app")

        retried = await s.rt.retry(a, job="job1")
        assert (retried.status, retried.execute_count, retried.queue_position) == ("RUNNING", 1, None)

        info = await s.until(a, lambda x: x.job("job1").status == "SUCCEED", "job1 to succeed")
        job1 = info.job("job1")
        assert [(t.number, t.status) for t in job1.attempts] == [(1, "FAILED"), (2, "SUCCEED")]
        assert len(job1.step("prepare").attempts) == 2, describe(info)
        make = _attempts(job1.step("make"))
        assert [(n, st) for n, st, _ in make] == [(1, "FAILED"), (2, "SUCCEED")]
        assert make[1][2] == 1, "the new attempt names the attempt it retries"
        assert info.job("job2").status == "RUNNING"
        await _group_unchanged(s, a, b, c)

        s.probe.release(a, "job2")
        done = await s.finished(a)
        assert (done.status, done.execute_count) == ("SUCCEED", 1), describe(done)


@pytest.mark.trio
async def test_repeated_step_retries_link_each_attempt_to_the_one_it_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two step retries in one run: attempts 1, 2, 3 with retry_of None, 1, 2."""
    async with scenario() as s:
        a, b, c = await _running_with_failed_job1(s, fails=2)
        await s.rt.retry(a, step="make")
        await s.until(
            a,
            lambda x: len(x.job("job1").step("make").attempts) == 2 and x.job("job1").status == "FAILED",
            "the first retry to fail",
        )
        again = await s.rt.retry(a, step="make")
        assert (again.status, again.execute_count) == ("RUNNING", 1), describe(again)
        info = await s.until(a, lambda x: x.job("job1").status == "SUCCEED", "job1 to succeed")
        assert _attempts(info.job("job1").step("make")) == [
            (1, "FAILED", None),
            (2, "FAILED", 1),
            (3, "SUCCEED", 2),
        ]
        await _group_unchanged(s, a, b, c)


@pytest.mark.trio
async def test_whole_build_retry_of_a_running_build_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``retry(build)`` of a RUNNING build raises NotRetryable with a reason
    and changes nothing."""
    async with scenario() as s:
        a, b, c = await _running_with_failed_job1(s)
        before = await s.build(a)
        with pytest.raises(NotRetryable) as refused:
            await s.rt.retry(a)
        assert refused.value.code == "not_retryable"
        assert refused.value.message
        after = await s.build(a)
        assert (after.status, after.execute_count) == ("RUNNING", 1), describe(after)
        assert after.job("job1") == before.job("job1")
        await _group_unchanged(s, a, b, c)


@pytest.mark.trio
async def test_retry_of_a_job_or_step_that_is_still_running_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Only what failed can be retried in a running build: retrying the
    still-running job2 (or its running step) raises NotRetryable and leaves
    it running undisturbed."""
    async with scenario() as s:
        a, b, c = await _running_with_failed_job1(s)
        with pytest.raises(NotRetryable):
            await s.rt.retry(a, job="job2")
        with pytest.raises(NotRetryable):
            await s.rt.retry(a, job="job2", step="hold")
        info = await s.build(a)
        assert info.job("job2").status == "RUNNING" and len(info.job("job2").attempts) == 1
        assert s.probe.outcomes(a, "job2") == [] and len(s.probe.runs(a, "job2")) == 1
        await _group_unchanged(s, a, b, c)


# --- behaviour 5: retries of a finished build ---------------------------------------

FINISHED_APP = pipeline(
    "finished-app",
    stages=[("build", {"ok": [noop_step("ok-step")], "bad": [echo_step("prepare"), flaky_step("make")]})],
    group="${{ ci.pipeline_id }}",
    max_parallel=1,
    queue_length=2,
)
# Builds of another pipeline in the same group ("app"), held by the test.
BLOCKER = pipeline("blocker", {"work": [hold_step()]}, group="app", max_parallel=1, queue_length=2)

KINDS: dict[str, dict[str, Any]] = {
    "whole": {},
    "failed_only": {"failed_only": True},
    "job": {"job": "bad"},
    "step": {"step": "make"},
}


async def _failed_build(s: Scenario) -> Any:
    """Register both pipelines and run one build of ``app`` to FAILED."""
    await s.register(FINISHED_APP, id="app")
    await s.register(BLOCKER, id="blocker")
    a = await s.submit("app")
    done = await s.finished(a.id)
    assert done.status == "FAILED", describe(done)
    assert (done.job("ok").status, done.job("bad").status) == ("SUCCEED", "FAILED"), describe(done)
    assert done.execute_count == 1 and done.group == "app"
    return done


@pytest.mark.trio
@pytest.mark.parametrize("kind", list(KINDS))
async def test_retry_of_a_finished_build_queues_at_the_back(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """A retried FAILED build is admitted again: it waits at the back of its
    group behind an earlier waiter, with execute_count 2 and its group
    rendered; it runs after that waiter, re-running what the kind asks for."""
    async with scenario() as s:
        before = await _failed_build(s)
        a = before.id
        x = await s.submit("blocker")
        await s.running(x.id)
        y = await s.submit("blocker")

        retried = await s.rt.retry(a, **KINDS[kind])
        assert retried.id == a
        assert (retried.status, retried.queue_position) == ("QUEUE", 2), describe(retried)
        assert retried.execute_count == 2
        assert retried.group == "app"
        assert await s.queue("app") == [y.id, a]
        assert (await s.group("app")).running == [x.id]

        s.probe.release(x.id)
        await s.running(y.id)
        assert await s.positions(a) == [1]
        assert len(s.probe.runs(a, "bad")) == 1, "A must not run again before its turn"
        s.probe.release(y.id)

        done = await s.finished(a)
        assert (done.status, done.execute_count) == ("SUCCEED", 2), describe(done)
        assert min(r.seq for r in s.probe.runs(a, "bad")[1:]) > s.probe.first_start(y.id)
        bad = done.job("bad")
        assert [(t.number, t.status) for t in bad.attempts] == [(1, "FAILED"), (2, "SUCCEED")]
        make = _attempts(bad.step("make"))
        assert [(n, st) for n, st, _ in make] == [(1, "FAILED"), (2, "SUCCEED")]
        if kind == "whole":
            assert len(done.job("ok").attempts) == 2, describe(done)
        else:
            assert done.job("ok") == before.job("ok"), "a job that succeeded is not re-run"
        if kind == "step":
            assert make[1][2] == 1
            assert len(bad.step("prepare").attempts) == 1, "a step retry re-runs from that step"


@pytest.mark.trio
@pytest.mark.parametrize("kind", list(KINDS))
async def test_retry_of_a_finished_build_is_refused_when_the_queue_is_full(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """With its group's queue full, a finished build's retry raises QueueFull
    (policy reject) and leaves the build and the queue exactly as they were."""
    async with scenario() as s:
        before = await _failed_build(s)
        a = before.id
        x = await s.submit("blocker")
        await s.running(x.id)
        y = await s.submit("blocker")
        z = await s.submit("blocker")

        with pytest.raises(QueueFull) as refused:
            await s.rt.retry(a, **KINDS[kind])
        assert refused.value.code == "queue_full"
        assert await s.build(a) == before
        assert await s.queue("app") == [y.id, z.id]
        assert len(s.probe.runs(a)) == 1


@pytest.mark.trio
async def test_failed_only_retry_reruns_failed_and_unrun_jobs_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``failed_only``: the successful job keeps its attempt untouched; the
    failed job and the later stage it blocked run; the build succeeds."""
    async with scenario() as s:
        source = pipeline(
            "fo",
            stages=[
                ("build", {"ok": [noop_step("ok-step")], "bad": [flaky_step("make")]}),
                ("ship", {"later": [noop_step("ship-step")]}),
            ],
            group=None,
        )
        await s.register(source, id="fo")
        a = (await s.submit("fo")).id
        before = await s.finished(a)
        assert before.status == "FAILED", describe(before)
        assert before.job("later").status in ("UNEXEC", "SKIP"), describe(before)

        retried = await s.rt.retry(a, failed_only=True)
        assert retried.execute_count == 2
        done = await s.finished(a)
        assert (done.status, done.execute_count) == ("SUCCEED", 2), describe(done)
        assert done.job("ok") == before.job("ok")
        assert len(done.job("bad").attempts) == 2
        assert done.job("later").status == "SUCCEED"
        assert len(s.probe.runs(a, "bad")) == 2


@pytest.mark.trio
async def test_execute_count_grows_with_each_retry_of_a_finished_build(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Each retry of a finished build is one more execution: 1, 2, 3; the
    group is rendered for each and the build runs in it."""
    async with scenario() as s:
        await s.register(FINISHED_APP.replace("fails: 1", "fails: 2"), id="app")
        a = (await s.submit("app")).id
        first = await s.finished(a)
        assert (first.status, first.execute_count) == ("FAILED", 1)

        second = await s.rt.retry(a, job="bad")
        assert second.execute_count == 2 and second.group == "app"
        second = await s.finished(a)
        assert (second.status, second.execute_count) == ("FAILED", 2), describe(second)

        third = await s.rt.retry(a, step="make")
        assert third.execute_count == 3 and third.group == "app"
        third = await s.finished(a)
        assert (third.status, third.execute_count) == ("SUCCEED", 3), describe(third)
        assert [t.status for t in third.job("bad").step("make").attempts] == ["FAILED", "FAILED", "SUCCEED"]
        assert third.job("ok") == first.job("ok")
