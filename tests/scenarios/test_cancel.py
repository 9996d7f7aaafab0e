"""Cancelling builds: ``cancel-in-progress`` groups (docs/design.md §3.1 behaviour 3)
and ``rt.cancel`` of queued, running and finished builds."""

from __future__ import annotations

import pytest
import trio

from runtime import Conflict, NotFound

from .conftest import JobsSpec, describe, hold_step, noop_step, pipeline, scenario


@pytest.mark.trio
async def test_cancel_in_progress_cancels_the_running_build_then_admits_the_new_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A new build of a cancel-in-progress group cancels the running build
    (CANCELED with a reason, its step observes the cancellation), then runs;
    the two never run at the same time."""
    async with scenario() as s:
        await s.register(pipeline("cip", cancel_in_progress=True), id="cip")
        a = await s.submit("cip")
        await s.running(a.id)

        b = await s.submit("cip")
        a_done = await s.finished(a.id, timeout=5)
        assert a_done.status == "CANCELED", describe(a_done)
        assert a_done.reason
        assert s.probe.outcomes(a.id) == ["cancelled"]
        assert a_done.job("work").status == "CANCELED", describe(a_done)

        await s.running(b.id)
        group = await s.group("cip")
        assert group.running == [b.id]
        assert group.queue == []
        assert s.probe.max_active_builds == 1

        s.probe.release(b.id)
        assert (await s.finished(b.id)).status == "SUCCEED"


@pytest.mark.trio
async def test_cancel_in_progress_cancels_queued_builds_too(autojump_clock: trio.testing.MockClock) -> None:
    """While the running build A takes 5 s to stop, B waits; C then cancels A
    (again) and the queued B, which never runs; C runs only once A has
    stopped, so max-parallel 1 holds throughout."""
    async with scenario() as s:
        await s.register(
            pipeline("cipq", {"work": [hold_step(stop_seconds=5)]}, cancel_in_progress=True), id="cipq"
        )
        a = await s.submit("cipq")
        await s.running(a.id)

        b = await s.submit("cipq")
        await s.probe.until(lambda: "cancelled" in s.probe.outcomes(a.id), "A's step to see the cancel")
        assert s.probe.is_active(a.id), "A is still stopping"
        b_now = await s.build(b.id)
        assert b_now.status == "QUEUE", "B may not run while A is still stopping: " + describe(b_now)

        c = await s.submit("cipq")
        b_done = await s.finished(b.id, timeout=5)
        assert b_done.status == "CANCELED", describe(b_done)
        assert b_done.reason
        assert all(j.status == "UNEXEC" for st in b_done.stages for j in st.jobs), describe(b_done)

        a_done = await s.finished(a.id, timeout=30)
        assert a_done.status == "CANCELED", describe(a_done)
        await s.running(c.id)
        assert s.probe.first_start(c.id) > s.probe.seq_of(a.id, "stopped")
        assert not s.probe.started(b.id)
        assert s.probe.max_active_builds == 1
        assert (await s.group("cipq")).running == [c.id]


@pytest.mark.trio
async def test_cancel_queued_build_leaves_the_queue_and_others_move_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling a waiter ends it CANCELED (never run, jobs UNEXEC), takes it
    out of the queue, moves those behind it up, and it is skipped at admission."""
    async with scenario() as s:
        await s.register(pipeline("cq"), id="cq")
        a, b, c, d = [(await s.submit("cq")).id for _ in range(4)]
        await s.running(a)

        await s.rt.cancel(c)
        c_done = await s.finished(c, timeout=5)
        assert c_done.status == "CANCELED", describe(c_done)
        assert c_done.reason
        assert c_done.queue_position is None
        assert all(j.status == "UNEXEC" for st in c_done.stages for j in st.jobs), describe(c_done)
        assert await s.positions(b, d) == [1, 2]
        assert await s.queue("cq") == [b, d]

        s.probe.release(a)
        await s.running(b)
        s.probe.release(b)
        await s.running(d)
        assert s.probe.start_order([a, b, c, d]) == [a, b, d]


@pytest.mark.trio
async def test_cancel_running_build_stops_running_jobs_and_never_runs_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancelling a running build: the running job and step end CANCELED (the
    action sees the cancellation), later steps, dependent jobs and later
    stages end UNEXEC, the build CANCELED with a reason, and the group admits
    the next build."""
    async with scenario() as s:
        stages: list[tuple[str, JobsSpec]] = [
            (
                "first",
                {
                    "j1": [hold_step(), noop_step("after")],
                    "j2": {"depend-on": ["j1"], "steps": [noop_step("n2")]},
                },
            ),
            ("second", {"j3": [noop_step("n3")]}),
        ]
        await s.register(pipeline("cr", stages=stages), id="cr")
        a = await s.submit("cr")
        await s.running(a.id)
        b = await s.submit("cr")

        await s.rt.cancel(a.id)
        done = await s.finished(a.id, timeout=5)
        assert done.status == "CANCELED", describe(done)
        assert done.reason
        assert s.probe.outcomes(a.id) == ["cancelled"]
        j1 = done.job("j1")
        assert j1.status == "CANCELED" and j1.reason, describe(done)
        assert j1.attempts[-1].status == "CANCELED"
        assert j1.step("hold").status == "CANCELED", describe(done)
        assert j1.step("after").status == "UNEXEC", describe(done)
        assert done.job("j2").status == "UNEXEC", describe(done)
        assert done.job("j3").status == "UNEXEC", describe(done)
        assert done.job("j2").attempts == [] and done.job("j3").attempts == []

        await s.running(b.id)
        assert (await s.group("cr")).running == [b.id]


@pytest.mark.trio
async def test_cancel_of_a_finished_build_conflicts_and_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``cancel`` of a finished build raises Conflict; the build is unchanged."""
    async with scenario() as s:
        await s.register(pipeline("cf", group=None), id="cf")
        a = await s.submit("cf")
        s.probe.release(a.id)
        done = await s.finished(a.id)
        assert done.status == "SUCCEED"
        with pytest.raises(Conflict):
            await s.rt.cancel(a.id)
        assert await s.build(a.id) == done


@pytest.mark.trio
async def test_unknown_build_ids_are_not_found(autojump_clock: trio.testing.MockClock) -> None:
    """``build``, ``cancel`` and ``retry`` of an unknown id raise NotFound."""
    async with scenario() as s:
        with pytest.raises(NotFound):
            await s.rt.build("no-such-build")
        with pytest.raises(NotFound):
            await s.rt.cancel("no-such-build")
        with pytest.raises(NotFound):
            await s.rt.retry("no-such-build")
