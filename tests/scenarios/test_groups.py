"""Concurrency groups: FIFO admission, overflow policies, max-parallel, shared
and rendered group names, queue introspection and queue timeouts (docs/design.md
§3.1 behaviours 1 and 2), and idle groups retiring without losing a build."""

from __future__ import annotations

import pytest
import trio

from actors.admission.idle import IDLE_AFTER
from runtime import QueueFull

from .conftest import Scenario, describe, noop_step, pipeline, scenario, ts


@pytest.mark.trio
async def test_probe_actions_see_the_build_they_run_for(autojump_clock: trio.testing.MockClock) -> None:
    """Plumbing the other scenarios rely on: a ``uses:`` step's action runs
    for the build ``submit`` returned (by ``step.build_id`` or a rendered
    ``${{ ci.build_id }}``), and ``rt.wait`` returns once the build ends."""
    async with scenario() as s:
        await s.register(pipeline("plain", group=None), id="plain")
        b = await s.submit("plain")
        await s.probe.until_started(b.id)
        run = s.probe.starts[0]
        assert b.id in run.keys and run.job == "work", run
        s.probe.release(b.id)
        done = await s.finished(b.id)
        assert done.status == "SUCCEED", describe(done)
        assert done.execute_count == 1 and done.number == 1


@pytest.mark.trio
async def test_waiting_builds_are_admitted_in_fifo_order(autojump_clock: trio.testing.MockClock) -> None:
    """With max-parallel 1, builds queue at positions 1..n in submit order
    and start one at a time in exactly that order."""
    async with scenario() as s:
        await s.register(pipeline("fifo", queue_length=5), id="fifo")
        ids = [(await s.submit("fifo")).id for _ in range(5)]
        await s.running(ids[0])
        assert await s.positions(*ids) == [None, 1, 2, 3, 4]
        assert await s.queue("fifo") == ids[1:]

        for index, build_id in enumerate(ids):
            await s.running(build_id)
            assert (await s.group("fifo")).running == [build_id]
            assert await s.positions(*ids[index + 1 :]) == list(range(1, len(ids) - index))
            s.probe.release(build_id)
            assert (await s.finished(build_id)).status == "SUCCEED"

        assert s.probe.start_order(ids) == ids
        assert s.probe.max_active_builds == 1


@pytest.mark.trio
async def test_full_queue_rejects_and_the_refusal_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Policy ``reject`` (the default): past queue-length a submit raises
    QueueFull; the queue, its positions and the numbering of accepted builds
    are as if the refused submit never happened."""
    async with scenario() as s:
        await s.register(pipeline("rej", queue_length=2), id="rej")
        a, b, c = [await s.submit("rej") for _ in range(3)]
        await s.running(a.id)
        queue_before = sorted((await s.group("rej")).queue, key=lambda e: e.position)

        with pytest.raises(QueueFull) as refused:
            await s.submit("rej")
        assert refused.value.code == "queue_full"
        assert refused.value.message

        group = await s.group("rej")
        assert group.running == [a.id]
        assert sorted(group.queue, key=lambda e: e.position) == queue_before
        assert await s.positions(a.id, b.id, c.id) == [None, 1, 2]
        assert [x.number for x in (a, b, c)] == [1, 2, 3]

        s.probe.release(a.id)
        await s.running(b.id)
        d = await s.submit("rej")
        # Submits one after the other: the refused one never existed, so the
        # numbers of accepted builds stay dense.
        assert d.number == 4, "a refused submit must not use up a build number"
        assert [(await s.build(x.id)).number for x in (a, b, c)] == [1, 2, 3]
        assert (d.status, d.queue_position) == ("QUEUE", 2), describe(d)
        assert await s.queue("rej") == [c.id, d.id]


@pytest.mark.trio
async def test_cancel_oldest_makes_room_for_the_new_build(autojump_clock: trio.testing.MockClock) -> None:
    """Policy ``cancel-oldest``: a submit to a full queue is accepted; the
    oldest waiter ends CANCELED with a reason without ever running, the others
    move up and the new build queues at the back."""
    async with scenario() as s:
        await s.register(pipeline("old", queue_length=2, on_queue_full="cancel-oldest"), id="old")
        a, b, c = [await s.submit("old") for _ in range(3)]
        await s.running(a.id)

        d = await s.submit("old")  # no QueueFull
        assert d.status == "QUEUE", describe(d)
        b_done = await s.finished(b.id, timeout=5)
        assert b_done.status == "CANCELED", describe(b_done)
        assert b_done.reason, "a cancelled build says why"
        assert b_done.queue_position is None
        assert await s.positions(c.id, d.id) == [1, 2]
        assert await s.queue("old") == [c.id, d.id]
        assert (await s.group("old")).running == [a.id]

        e = await s.submit("old")
        assert (await s.finished(c.id, timeout=5)).status == "CANCELED"
        assert await s.queue("old") == [d.id, e.id]

        s.probe.release(a.id)
        await s.running(d.id)
        assert not s.probe.started(b.id) and not s.probe.started(c.id)
        assert (await s.build(a.id)).status == "SUCCEED"


@pytest.mark.trio
async def test_max_parallel_two_runs_two_at_once_never_three(autojump_clock: trio.testing.MockClock) -> None:
    """max-parallel 2: two builds run together (without either finishing),
    the third waits at position 1, and at no instant do three run."""
    async with scenario() as s:
        await s.register(pipeline("par", max_parallel=2), id="par")
        ids = [(await s.submit("par")).id for _ in range(5)]
        await s.running(ids[0])
        await s.running(ids[1])
        assert s.probe.is_active(ids[0]) and s.probe.is_active(ids[1])
        assert sorted((await s.group("par")).running) == sorted(ids[:2])
        assert await s.positions(*ids[2:]) == [1, 2, 3]
        assert not s.probe.started(ids[2])

        s.probe.release(ids[0])
        await s.running(ids[2])
        assert sorted((await s.group("par")).running) == sorted(ids[1:3])
        assert await s.positions(*ids[3:]) == [1, 2]

        for build_id in ids[1:]:
            s.probe.release(build_id)
            await s.finished(build_id)
            running = (await s.group("par")).running
            assert len(running) <= 2, running
        order = s.probe.start_order(ids)
        assert sorted(order[:2]) == sorted(ids[:2]) and order[2:] == ids[2:], order
        assert s.probe.max_active_builds == 2


@pytest.mark.trio
async def test_pipelines_with_the_same_rendered_group_share_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two pipelines whose group renders to the same name share one gate:
    a build of the second waits for the running build of the first."""
    async with scenario() as s:
        await s.register(pipeline("alpha", group="lane-${{ variables.LANE }}", variables={"LANE": "x"}), id="alpha")
        await s.register(pipeline("beta", group="lane-x"), id="beta")
        a = await s.submit("alpha")
        await s.running(a.id)
        b = await s.submit("beta")
        assert (b.status, b.queue_position, b.group) == ("QUEUE", 1, "lane-x"), describe(b)
        assert (await s.build(a.id)).group == "lane-x"

        lanes = [g for g in await s.rt.groups() if g.name == "lane-x"]
        assert len(lanes) == 1
        assert lanes[0].running == [a.id]
        assert await s.queue("lane-x") == [b.id]

        s.probe.release(a.id)
        await s.running(b.id)
        assert (await s.group("lane-x")).running == [b.id]


@pytest.mark.trio
async def test_group_rendered_from_a_variable_separates_builds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``group: deploy-${{ variables.ENV }}``: builds with different ENV are in
    different groups and run together; same ENV shares the gate."""
    async with scenario() as s:
        await s.register(
            pipeline("env", group="deploy-${{ variables.ENV }}", variables={"ENV": "dev"}), id="env"
        )
        dev1 = await s.submit("env")
        prod1 = await s.submit("env", {"ENV": "prod"})
        await s.running(dev1.id)
        await s.running(prod1.id)
        assert (await s.build(dev1.id)).group == "deploy-dev"
        assert (await s.build(prod1.id)).group == "deploy-prod"

        dev2 = await s.submit("env", {"ENV": "dev"})
        assert (dev2.status, dev2.queue_position, dev2.group) == ("QUEUE", 1, "deploy-dev"), describe(dev2)
        dev_group = await s.group("deploy-dev")
        prod_group = await s.group("deploy-prod")
        assert (dev_group.running, await s.queue("deploy-dev")) == ([dev1.id], [dev2.id])
        assert (prod_group.running, await s.queue("deploy-prod")) == ([prod1.id], [])
        assert s.probe.max_active_builds == 2


@pytest.mark.trio
async def test_groups_report_positions_and_deadlines_that_hold(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``rt.groups()`` shows the group's limits, the running build and the
    queue with positions 1..n in submit order, queued_at and deadline =
    queued_at + queue-timeout; ``queue_position`` of each build agrees; and
    each waiter really times out at its deadline, the others moving up."""
    async with scenario() as s:
        await s.register(pipeline("intro", queue_length=5, queue_timeout_minutes=2), id="intro")
        a = await s.submit("intro")
        await s.running(a.id)
        t0 = trio.current_time()
        waiting = []
        for _ in range(3):
            waiting.append((await s.submit("intro")).id)
            await trio.sleep(10)

        group = await s.group("intro")
        assert (group.max_parallel, group.queue_length, group.queue_timeout_minutes) == (1, 5, 2)
        assert (group.on_queue_full, group.cancel_in_progress) == ("reject", False)
        assert group.running == [a.id]
        entries = sorted(group.queue, key=lambda e: e.position)
        assert [(e.build_id, e.position) for e in entries] == [(b, i + 1) for i, b in enumerate(waiting)]
        for entry in entries:
            build = await s.build(entry.build_id)
            assert build.queue_position == entry.position
            assert ts(entry.queued_at) == ts(build.queued_at), "one instant, reported twice"
            wait = (ts(entry.deadline) - ts(entry.queued_at)).total_seconds()
            assert abs(wait - 120) < 0.5, (entry, wait)

        for index, build_id in enumerate(waiting):
            done = await s.finished(build_id, timeout=200)
            elapsed = trio.current_time() - t0
            assert done.status == "QUEUE_TIMEOUT", describe(done)
            assert 120 + 10 * index - 0.25 <= elapsed <= 120 + 10 * index + 0.25, (index, elapsed)
            rest = waiting[index + 1 :]
            assert await s.queue("intro") == rest
            assert await s.positions(*rest) == list(range(1, len(rest) + 1))
        assert (await s.build(a.id)).status == "RUNNING"


@pytest.mark.trio
@pytest.mark.parametrize("minutes", [1, 0.5, 2.25])
async def test_queued_build_times_out_after_exactly_queue_timeout_minutes(
    autojump_clock: trio.testing.MockClock, minutes: float
) -> None:
    """A build that waits queue-timeout-minutes (fractions too) ends
    QUEUE_TIMEOUT then, not before, with a reason naming the group; it never
    ran; the running build is untouched."""
    async with scenario() as s:
        await s.register(pipeline("slow", group="slow-lane", queue_timeout_minutes=minutes), id="slow")
        a = await s.submit("slow")
        await s.running(a.id)
        b = await s.submit("slow")
        t0 = trio.current_time()
        timeout = minutes * 60

        await trio.sleep(timeout - 1)
        early = await s.build(b.id)
        assert (early.status, early.queue_position) == ("QUEUE", 1), describe(early)

        done = await s.finished(b.id, timeout=5)
        elapsed = trio.current_time() - t0
        assert timeout - 0.01 <= elapsed <= timeout + 0.25, (timeout, elapsed)
        assert done.status == "QUEUE_TIMEOUT", describe(done)
        assert "slow-lane" in (done.reason or ""), done.reason
        assert done.queue_position is None
        assert done.started_at is None
        assert done.finished_at is not None
        assert all(job.status == "UNEXEC" for st in done.stages for job in st.jobs), describe(done)
        assert not s.probe.started(b.id)

        group = await s.group("slow-lane")
        assert (group.running, group.queue) == ([a.id], [])
        assert (await s.build(a.id)).status == "RUNNING"


@pytest.mark.trio
async def test_timed_out_build_frees_its_queue_place(autojump_clock: trio.testing.MockClock) -> None:
    """Queue of 2, timeout 1 min: while B and C wait a submit is refused; when
    B times out, C moves to position 1 and a new build D fits at position 2."""
    async with scenario() as s:
        await s.register(pipeline("tq", queue_length=2, queue_timeout_minutes=1), id="tq")
        a = await s.submit("tq")
        await s.running(a.id)
        b = await s.submit("tq")
        await trio.sleep(30)
        c = await s.submit("tq")
        with pytest.raises(QueueFull):
            await s.submit("tq")

        assert (await s.finished(b.id, timeout=40)).status == "QUEUE_TIMEOUT"
        assert await s.positions(c.id) == [1]
        d = await s.submit("tq")
        assert (d.status, d.queue_position) == ("QUEUE", 2), describe(d)
        assert await s.queue("tq") == [c.id, d.id]

        s.probe.release(a.id)
        await s.running(c.id)
        assert await s.positions(d.id) == [1]
        assert not s.probe.started(b.id)
        assert (await s.build(b.id)).status == "QUEUE_TIMEOUT"


@pytest.mark.trio
async def test_builds_sharing_a_deadline_all_time_out_at_it(autojump_clock: trio.testing.MockClock) -> None:
    """Thirty builds queued at one instant with one timeout all end
    QUEUE_TIMEOUT at that deadline (the group ends them in one batch), not
    before, each with a reason naming the group; the running build is
    untouched and the queue is empty after."""
    async with scenario() as s:
        await s.register(pipeline("burst", group="burst-lane", queue_length=30, queue_timeout_minutes=1), id="burst")
        a = await s.submit("burst")
        await s.running(a.id)
        t0 = trio.current_time()
        ids = [(await s.submit("burst")).id for _ in range(30)]

        await trio.sleep(60 - 1)
        assert {(await s.build(b)).status for b in ids} == {"QUEUE"}
        done = [await s.finished(b, timeout=5) for b in ids]
        assert trio.current_time() - t0 <= 60 + 0.25
        assert {b.status for b in done} == {"QUEUE_TIMEOUT"}, [describe(b) for b in done]
        assert all("burst-lane" in (b.reason or "") and b.started_at is None for b in done)
        assert not any(s.probe.started(b) for b in ids)
        group = await s.group("burst-lane")
        assert (group.running, group.queue) == ([a.id], [])
        assert (await s.build(a.id)).status == "RUNNING"


# -- idle groups retire -----------------------------------------------------------------------


def group_actors(s: Scenario) -> list[str]:
    """Names of the group and mutex actors that exist at all (stopping ones included)."""
    system = s.rt.system
    return [ref.name for parent in ("groups", "mutexes") for ref in system.children(system.lookup(parent))]


@pytest.mark.trio
async def test_groups_rendered_per_build_retire_once_idle(autojump_clock: trio.testing.MockClock) -> None:
    """``group: g-${{ ci.build_num }}`` (and a mutex label per build) makes
    one group and one mutex per build. Once idle for IDLE_AFTER they are
    gone: ``rt.groups()`` lists none and no actor is left; a later build
    whose group name comes round again is admitted by a fresh group."""
    async with scenario() as s:
        jobs = {"work": {"mutex": {"label": "m-${{ ci.build_num }}"}, "steps": [noop_step("n")]}}
        await s.register(pipeline("per-build", jobs, group="g-${{ ci.build_num }}"), id="per-build")
        baseline = s.rt.system.statistics().actors
        ids = [(await s.submit("per-build")).id for _ in range(200)]
        done = [await s.finished(build_id) for build_id in ids]
        assert {build.status for build in done} == {"SUCCEED"}, [describe(b) for b in done if b.status != "SUCCEED"]
        assert len(await s.rt.groups()) == 200 and len(group_actors(s)) == 400, "idle, not yet retired"

        await trio.sleep(IDLE_AFTER + 1)
        assert await s.rt.groups() == []
        assert group_actors(s) == []
        assert s.rt.system.statistics().actors == baseline
        stats = await s.rt.stats()
        assert (stats.builds_running, stats.builds_queued, stats.jobs_queued) == (0, 0, 0)

        await s.register(pipeline("again", {"work": [noop_step("n")]}, group="g-7"), id="again")
        build = await s.finished((await s.submit("again")).id)
        assert (build.status, build.group) == ("SUCCEED", "g-7"), describe(build)
        assert [group.name for group in await s.rt.groups()] == ["g-7"]


@pytest.mark.trio
async def test_max_parallel_holds_across_a_retirement(autojump_clock: trio.testing.MockClock) -> None:
    """A group of max-parallel 1 that retired and is started again runs one
    build and queues the next, then admits it when the first ends."""
    async with scenario() as s:
        await s.register(pipeline("lane", group="lane"), id="lane")
        a = await s.submit("lane")
        await s.running(a.id)
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        await trio.sleep(IDLE_AFTER + 1)
        assert await s.rt.groups() == [] and group_actors(s) == []

        b, c = await s.submit("lane"), await s.submit("lane")
        await s.running(b.id)
        assert (c.status, c.queue_position) == ("QUEUE", 1), describe(c)
        assert (await s.group("lane")).running == [b.id] and await s.queue("lane") == [c.id]
        s.probe.release(b.id)
        await s.running(c.id)
        s.probe.release(c.id)
        assert (await s.finished(c.id)).status == "SUCCEED"
        assert s.probe.max_active_builds == 1


@pytest.mark.trio
async def test_builds_submitted_as_their_group_retires_are_never_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Round after round, two builds are submitted at the very instant the
    group's idle period ends; trio's scheduler decides whether the group
    retires before the first Admit reaches it or finds it already queued
    when it checks. Either way one runs, the other queues behind it, and
    both finish: no build is lost or admitted past max-parallel. (The
    unit tests in tests/actors/test_group.py force each ordering.)"""
    async with scenario() as s:
        await s.register(pipeline("edge", group="edge"), id="edge")
        first = await s.submit("edge")
        await s.running(first.id)
        s.probe.release(first.id)
        await s.finished(first.id)
        idle_since = trio.current_time()  # holds end and builds finish without virtual time passing
        retired = 0
        for _ in range(20):
            before = s.rt.system.lookup("group:edge")  # idle since the last round
            await trio.sleep_until(idle_since + IDLE_AFTER)
            pair = [await s.submit("edge"), await s.submit("edge")]
            retired += before.stopped
            running = [b for b in pair if b.status == "RUNNING"]
            queued = [b for b in pair if b.status == "QUEUE"]
            assert (len(running), [b.queue_position for b in queued]) == (1, [1]), [describe(b) for b in pair]
            for build in running + queued:
                await s.running(build.id)
                assert (await s.group("edge")).running == [build.id]
                s.probe.release(build.id)
                assert (await s.finished(build.id)).status == "SUCCEED"
            idle_since = trio.current_time()
        assert s.probe.max_active_builds == 1
        assert 0 < retired, "the group never retired: the rounds did not test the hand-over"
