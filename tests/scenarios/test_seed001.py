"""Seed 001, literally: a step retry of a RUNNING build in a full group is part
of that run (docs/design.md §3.1 behaviour 4), never refused ``queue_full``.

BK-CI's case: group ``${{ ci.pipeline_id }}``, one running build, a queue of
two, a one-minute queue timeout. Build A has two parallel jobs; job1 fails
at a step while job2 still runs; B and C wait in the queue. Retrying job1's
failed step was refused "queue full". Here it must run at once.
"""

from __future__ import annotations

import pytest
import trio

from runtime import QueueFull

from .conftest import Scenario, describe, echo_step, flaky_step, hold_step, pipeline, scenario

SEED = pipeline(
    "seed-001",
    stages=[("build", {"job1": [echo_step("prepare"), flaky_step("make")], "job2": [hold_step()]})],
    group="${{ ci.pipeline_id }}",
    max_parallel=1,
    queue_length=2,
    queue_timeout_minutes=1,
)


async def _a_failed_at_make_with_b_c_queued(s: Scenario) -> tuple[str, str, str]:
    """Register the seed pipeline; A runs, its job1 fails at ``make`` while
    job2 is held; B and C queue at positions 1 and 2."""
    await s.register(SEED, id="app")
    a = await s.submit("app")
    await s.running(a.id)
    a_info = await s.until(
        a.id,
        lambda b: b.job("job1").status == "FAILED",
        "job1 of A failed",
    )
    assert a_info.status == "RUNNING", describe(a_info)
    assert a_info.job("job2").status == "RUNNING", describe(a_info)
    assert a_info.job("job1").step("make").status == "FAILED", describe(a_info)
    assert a_info.group == "app"

    b = await s.submit("app")
    c = await s.submit("app")
    assert (b.status, b.queue_position) == ("QUEUE", 1), describe(b)
    assert (c.status, c.queue_position) == ("QUEUE", 2), describe(c)
    return a.id, b.id, c.id


@pytest.mark.trio
async def test_seed001_step_retry_of_running_build_is_admitted_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The failed step is retried at once inside A's run: no QueueFull, no new
    group slot, no queue movement, execute_count unchanged, the attempt is
    linked to the failed one; A then succeeds and B is admitted next."""
    async with scenario() as s:
        a, b, c = await _a_failed_at_make_with_b_c_queued(s)
        group_before = await s.group("app")
        assert group_before.running == [a]
        queue_before = sorted(group_before.queue, key=lambda e: e.position)

        retried = await s.rt.retry(a, step="make")  # must not raise QueueFull

        assert retried.id == a
        assert retried.status == "RUNNING", describe(retried)
        assert retried.execute_count == 1, describe(retried)
        assert retried.queue_position is None, describe(retried)

        # The retry runs now, while job2 still holds A and B, C still wait.
        after = await s.until(
            a, lambda x: x.job("job1").status == "SUCCEED", "the retried job1 to succeed"
        )
        assert after.status == "RUNNING", describe(after)
        assert after.execute_count == 1
        assert after.job("job2").status == "RUNNING", describe(after)
        make = after.job("job1").step("make")
        assert [(t.number, t.status, t.retry_of) for t in make.attempts] == [
            (1, "FAILED", None),
            (2, "SUCCEED", 1),
        ], make.attempts
        assert await s.positions(b, c) == [1, 2]
        group = await s.group("app")
        assert group.running == [a], "the retry must not take a group slot"
        assert sorted(group.queue, key=lambda e: e.position) == queue_before, (
            "the retry must not move, add or re-time queue entries"
        )
        assert not s.probe.started(b) and not s.probe.started(c)

        # job2 ends: A succeeds with one execution; B is admitted, C moves up.
        s.probe.release(a, "job2")
        done = await s.finished(a)
        assert done.status == "SUCCEED", describe(done)
        assert done.execute_count == 1
        await s.running(b)
        assert await s.positions(b, c) == [None, 1]
        group = await s.group("app")
        assert group.running == [b]
        assert await s.queue("app") == [c]


@pytest.mark.trio
async def test_seed001_queue_really_is_full_only_the_retry_gets_in(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """With B and C queued the group is full: a new submit is refused
    QueueFull before and after the step retry, while the retry itself is
    accepted. The retry therefore bypassed admission instead of finding room."""
    async with scenario() as s:
        a, b, c = await _a_failed_at_make_with_b_c_queued(s)

        with pytest.raises(QueueFull) as refused:
            await s.submit("app")
        assert refused.value.code == "queue_full"

        retried = await s.rt.retry(a, step="make")
        assert (retried.status, retried.execute_count) == ("RUNNING", 1), describe(retried)
        await s.until(a, lambda x: x.job("job1").status == "SUCCEED", "the retried job1 to succeed")

        with pytest.raises(QueueFull):
            await s.submit("app")
        assert await s.queue("app") == [b, c]
        assert (await s.group("app")).running == [a]
        build = await s.build(a)
        assert build.status == "RUNNING" and build.job("job2").status == "RUNNING", describe(build)


@pytest.mark.trio
async def test_seed001_retry_does_not_delay_the_queue_timeout_of_waiters(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """B and C keep their one-minute deadlines through A's step retry: they
    end QUEUE_TIMEOUT one minute after they queued while A keeps running."""
    async with scenario() as s:
        a, b, c = await _a_failed_at_make_with_b_c_queued(s)
        queued_at = trio.current_time()
        await s.rt.retry(a, step="make")
        await s.until(a, lambda x: x.job("job1").status == "SUCCEED", "the retried job1 to succeed")

        b_done = await s.finished(b, timeout=120)
        elapsed = trio.current_time() - queued_at
        assert b_done.status == "QUEUE_TIMEOUT", describe(b_done)
        assert 59.75 <= elapsed <= 60.25, elapsed
        c_done = await s.finished(c, timeout=5)
        assert c_done.status == "QUEUE_TIMEOUT", describe(c_done)
        a_now = await s.build(a)
        assert a_now.status == "RUNNING" and a_now.execute_count == 1, describe(a_now)
