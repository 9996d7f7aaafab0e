"""Job limits, job queue timeouts, exact slot accounting and job mutexes
(docs/design.md §3.1 behaviours 6, 7 and 8; seed 002).

- ``concurrency-limit-per-node`` / ``concurrency-limit-total`` hold for the
  job key (pipeline id, job id) across all builds at every instant; other
  keys are independent; waiters are served FIFO per constraint and one that
  cannot be placed never blocks others.
- A job that waits past ``runs-on.queue-timeout-minutes`` ends QUEUE_TIMEOUT
  naming what held it (``total``, ``per-node``, ``no free agent``,
  ``no node``) and the wait; its build fails unless ``continue-on-error``.
- After everything ends, every counter is zero and nothing is held.
- ``mutex``: one holder per rendered label across builds and pipelines,
  FIFO waiters, "mutex queue full", and a timeout that states the wait.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .conftest import describe, flaky_step, hold_step, noop_step, pipeline
from .dispatch_helpers import (
    DispatchScenario,
    dispatch_config,
    dispatch_scenario,
    dwell_step,
    fail_step,
    job,
    mentions_wait,
    node,
    seconds,
)

# --- behaviour 6: limits hold at every instant -----------------------------------------

THREE_BY_FOUR = dispatch_config([node("n1", 4), node("n2", 4), node("n3", 4)])

LIMITED = pipeline(
    "limited",
    {
        "compile": job([hold_step()], {"concurrency-limit-per-node": 1, "concurrency-limit-total": 2}),
        "lint": job([hold_step()], {"concurrency-limit-per-node": 1, "concurrency-limit-total": 3}),
    },
    group=None,
)
# Same job id, another pipeline: another job key with its own slots.
OTHER = pipeline(
    "other",
    {"compile": job([hold_step()], {"concurrency-limit-per-node": 1, "concurrency-limit-total": 2})},
    group=None,
)
LIMITS = {
    "limited/compile": (1, 2),
    "limited/lint": (1, 3),
    "other/compile": (1, 2),
}


@pytest.mark.trio
async def test_per_node_and_total_limits_hold_at_every_instant_across_builds(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """3 nodes x 4 agents, 12 builds of ``limited`` and 4 of ``other``, jobs
    released one per key per round: no key ever runs more than once on a
    node or more than its total (probe maxima, so at every instant; and
    ``rt.nodes()`` at every steady point, where its running maps match what
    really runs); every limit is reached (the keys do not share slots) and
    every build SUCCEEDs."""
    async with dispatch_scenario(THREE_BY_FOUR) as s:
        await s.register(LIMITED, id="limited")
        await s.register(OTHER, id="other")
        ids = [(await s.submit("limited")).id for _ in range(12)]
        others = [(await s.submit("other")).id for _ in range(4)]
        unreleased: dict[str, list[str]] = {
            "limited/compile": list(ids),
            "limited/lint": list(ids),
            "other/compile": list(others),
        }

        def active(key: str) -> list[str]:
            pipeline_id, _, job_id = key.partition("/")
            return [
                r.build for r in s.probe.active
                if r.job == job_id and r.build.rpartition(".")[0] == pipeline_id
            ]  # fmt: skip

        def steady() -> bool:
            return all(
                len(active(key)) == min(LIMITS[key][1] or 99, len(builds)) for key, builds in unreleased.items()
            )

        rounds = 0
        while any(unreleased.values()):
            rounds += 1
            await s.probe.until(steady, f"round {rounds}: every key at min(total, unreleased)")
            await s.check_limits(LIMITS)

            async def consistent() -> bool:
                # A job just released may hold its slot for a few messages more.
                for info in await s.rt.nodes():
                    for key in LIMITS:
                        if info.running.get(key, 0) != s.probe.live_per_node[(info.name, key)]:
                            return False
                stats = await s.rt.stats()
                running_now = sum(len(active(k)) for k in LIMITS)
                return stats.jobs_running == stats.slots_held == running_now

            await s.poll(consistent, f"round {rounds}: rt.nodes() and stats agree with what runs")
            await s.check_limits(LIMITS)
            for key, builds in unreleased.items():
                if builds:
                    oldest = next(b for b in builds if b in active(key))
                    builds.remove(oldest)
                    s.probe.release(oldest, key.partition("/")[2])

        done = [await s.finished(b) for b in ids + others]
        assert [d.status for d in done] == ["SUCCEED"] * 16, [describe(d) for d in done if d.status != "SUCCEED"]
        for key, (per_node, total) in LIMITS.items():
            assert s.probe.max_on_any_node(key) == per_node, (key, dict(s.probe.max_per_node))
            assert s.probe.max_total[key] == total, (key, dict(s.probe.max_total))
        for build_id in ids:
            info = await s.build(build_id)
            for job_id in ("compile", "lint"):
                j = info.job(job_id)
                assert j.node in ("n1", "n2", "n3") and j.agent and j.agent.startswith(j.node + "/"), describe(info)
                assert [(a.node, a.agent) for a in j.attempts] == [(j.node, j.agent)], describe(info)
        await s.assert_quiet()


@pytest.mark.trio
async def test_limits_hold_under_timed_load_with_a_sampler(autojump_clock: trio.testing.MockClock) -> None:
    """30 builds of jobs that take 1-3 virtual seconds on 2 nodes x 3 agents,
    per-node 2, total 3: the probe never sees more than 2 on a node or 3 in
    all, a sampler of ``rt.nodes()`` every 50 ms never does either, the
    limits are reached, and everything SUCCEEDs and is released."""
    config = dispatch_config([node("n1", 3), node("n2", 3)])
    source = pipeline(
        "timed",
        {
            "build": job(
                [dwell_step("work", "${{ variables.SECS }}")],
                {"concurrency-limit-per-node": 2, "concurrency-limit-total": 3, "queue-timeout-minutes": 60},
            ),
            "other": job([dwell_step("work", 2)], {"concurrency-limit-per-node": 1, "queue-timeout-minutes": 60}),
        },
        group=None,
        variables={"SECS": "1"},
    )
    async with dispatch_scenario(config) as s:
        await s.register(source, id="timed")
        ids = []
        samples = 0
        async with trio.open_nursery() as nursery:

            async def sampler() -> None:
                nonlocal samples
                while True:
                    await s.check_limits({"timed/build": (2, 3), "timed/other": (1, None)})
                    samples += 1
                    await trio.sleep(0.05)

            nursery.start_soon(sampler)
            for index in range(30):
                ids.append((await s.submit("timed", {"SECS": str(1 + index % 3)})).id)
                if index % 4 == 3:
                    await trio.sleep(0.7)
            done = [await s.finished(b) for b in ids]
            nursery.cancel_scope.cancel()
        assert [d.status for d in done] == ["SUCCEED"] * 30, [describe(d) for d in done if d.status != "SUCCEED"]
        assert samples > 20
        assert s.probe.max_on_any_node("timed/build") == 2, dict(s.probe.max_per_node)
        assert s.probe.max_total["timed/build"] == 3, dict(s.probe.max_total)
        assert s.probe.max_on_any_node("timed/other") == 1, dict(s.probe.max_per_node)
        assert s.probe.max_total["timed/other"] == 2, "per-node 1 on two nodes: two at once"
        await s.assert_quiet()


@pytest.mark.trio
async def test_jobs_held_by_a_total_limit_start_in_fifo_order(autojump_clock: trio.testing.MockClock) -> None:
    """Total limit 1 on 2 nodes: the jobs of 6 builds start one at a time in
    submit order, each waiting job listed by ``waiting_jobs()`` with a reason
    naming the total limit."""
    config = dispatch_config([node("n1", 2), node("n2", 2)])
    source = pipeline("one", {"compile": job([hold_step()], {"concurrency-limit-total": 1})}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(source, id="one")
        ids = [(await s.submit("one")).id for _ in range(6)]
        for index, build_id in enumerate(ids):
            await s.job_running(build_id, "compile")
            rest = ids[index + 1 :]

            async def rest_waiting() -> list[Any] | None:
                waiting = [w for w in await s.rt.waiting_jobs() if w.job_id == "compile"]
                return waiting if sorted(w.build_id for w in waiting) == sorted(rest) else None

            waiting = await s.poll(rest_waiting, f"exactly {rest} in waiting_jobs()") if rest else []
            assert all("total" in (w.reason or "").lower() for w in waiting), waiting
            for other in rest:
                assert (await s.job(other, "compile")).status == "QUEUE"
            s.probe.release(build_id)
            assert (await s.finished(build_id)).status == "SUCCEED"
        assert s.probe.start_order(ids) == ids
        assert s.probe.max_total["one/compile"] == 1
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_job_at_its_total_limit_does_not_block_other_keys(autojump_clock: trio.testing.MockClock) -> None:
    """``capped`` (total 1) holds its slot and a second ``capped`` build waits
    first in line; jobs of other keys submitted after it start at once on
    the free agents, and the waiter starts when the slot frees."""
    config = dispatch_config([node("n1", 3)])
    capped = pipeline("capped", {"compile": job([hold_step()], {"concurrency-limit-total": 1})}, group=None)
    free = pipeline("free", {"compile": job([hold_step()])}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(capped, id="capped")
        await s.register(free, id="free")
        first = await s.submit("capped")
        await s.job_running(first.id, "compile")
        held = await s.submit("capped")
        entry = await s.until_waiting(held.id, "compile")
        assert "total" in entry.reason.lower(), entry
        f1 = await s.submit("free")
        f2 = await s.submit("free")
        await s.job_running(f1.id, "compile")
        await s.job_running(f2.id, "compile")
        assert (await s.job(held.id, "compile")).status == "QUEUE"
        assert not s.probe.started(held.id)

        s.probe.release(first.id)
        await s.job_running(held.id, "compile")
        for build_id in (held.id, f1.id, f2.id):
            s.probe.release(build_id)
            assert (await s.finished(build_id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_job_at_its_per_node_limit_uses_another_node_or_waits_without_blocking(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Per-node 1 on 2 nodes x 2 agents: two ``pn`` jobs run on different
    nodes, the third waits (reason ``per-node``) while jobs of another key
    take the two remaining agents; when one ``pn`` job ends the waiter runs
    on that node."""
    config = dispatch_config([node("n1", 2), node("n2", 2)])
    pn = pipeline("pn", {"compile": job([hold_step()], {"concurrency-limit-per-node": 1})}, group=None)
    free = pipeline("free", {"compile": job([hold_step()])}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(pn, id="pn")
        await s.register(free, id="free")
        a, b, c = [await s.submit("pn") for _ in range(3)]
        await s.job_running(a.id, "compile")
        await s.job_running(b.id, "compile")
        nodes_used = {(await s.job(x.id, "compile")).node for x in (a, b)}
        assert nodes_used == {"n1", "n2"}
        entry = await s.until_waiting(c.id, "compile")
        assert "per-node" in entry.reason.lower(), entry
        f1, f2 = await s.submit("free"), await s.submit("free")
        await s.job_running(f1.id, "compile")
        await s.job_running(f2.id, "compile")
        assert (await s.job(c.id, "compile")).status == "QUEUE"

        a_node = (await s.job(a.id, "compile")).node
        s.probe.release(a.id)
        info = await s.job_running(c.id, "compile")
        assert info.job("compile").node == a_node, describe(info)
        await s.finish_all([a.id, b.id, c.id, f1.id, f2.id])
        await s.assert_quiet()


# --- behaviour 7: job queue timeouts -------------------------------------------------------


async def _times_out(
    s: DispatchScenario, build_id: str, job_id: str, t0: float, minutes: float, word: str
) -> Any:
    """The job waits (QUEUE, listed with ``word`` and a deadline), then ends
    QUEUE_TIMEOUT exactly ``minutes`` after ``t0`` with ``word`` and the wait
    in its reason; returns the finished build."""
    timeout = minutes * 60
    entry = await s.until_waiting(build_id, job_id)
    assert word in (entry.reason or "").lower(), entry
    assert entry.attempt == 1 and entry.job_id == job_id, entry
    assert abs((seconds(entry.deadline) - seconds(entry.since)) - timeout) < 0.5, entry
    stats = await s.rt.stats()
    assert stats.jobs_queued >= 1, stats

    await trio.sleep(timeout - 1 - (trio.current_time() - t0))
    early = await s.job(build_id, job_id)
    assert early.status == "QUEUE", early

    done = await s.finished(build_id, timeout=5)
    elapsed = trio.current_time() - t0
    assert timeout - 0.01 <= elapsed <= timeout + 0.25, (timeout, elapsed)
    timed_out = done.job(job_id)
    assert timed_out.status == "QUEUE_TIMEOUT", describe(done)
    reason = (timed_out.reason or "").lower()
    assert word in reason, timed_out.reason
    assert mentions_wait(timed_out.reason, minutes), f"the reason should state the {minutes:g} minute wait: {timed_out.reason!r}"
    assert not s.probe.started(build_id, job_id)
    assert await s.waiting(build_id) == []
    return done


@pytest.mark.trio
async def test_queue_timeout_on_the_total_limit(autojump_clock: trio.testing.MockClock) -> None:
    """Total limit 1 on 2 free nodes: the second build's job ends
    QUEUE_TIMEOUT after exactly 1.5 minutes with ``total`` in its reason and
    the build FAILED; the holder keeps running."""
    config = dispatch_config([node("n1", 2), node("n2", 2)])
    source = pipeline(
        "tot", {"compile": job([hold_step()], {"concurrency-limit-total": 1, "queue-timeout-minutes": 1.5})}, group=None
    )
    async with dispatch_scenario(config) as s:
        await s.register(source, id="tot")
        a = await s.submit("tot")
        await s.job_running(a.id, "compile")
        b = await s.submit("tot")
        t0 = trio.current_time()
        done = await _times_out(s, b.id, "compile", t0, 1.5, "total")
        assert done.status == "FAILED", describe(done)
        assert (await s.job(a.id, "compile")).status == "RUNNING"
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_queue_timeout_on_the_per_node_limit(autojump_clock: trio.testing.MockClock) -> None:
    """Per-node 1 (total 5) on one node of 4 agents: the second job ends
    QUEUE_TIMEOUT after 2.5 minutes with ``per-node`` in its reason."""
    config = dispatch_config([node("n1", 4)])
    runs_on = {"concurrency-limit-per-node": 1, "concurrency-limit-total": 5, "queue-timeout-minutes": 2.5}
    source = pipeline("pern", {"compile": job([hold_step()], runs_on)}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(source, id="pern")
        a = await s.submit("pern")
        await s.job_running(a.id, "compile")
        b = await s.submit("pern")
        done = await _times_out(s, b.id, "compile", trio.current_time(), 2.5, "per-node")
        assert done.status == "FAILED", describe(done)
        await s.finish_all([a.id])
        await s.assert_quiet()


@pytest.mark.trio
async def test_queue_timeout_when_no_agent_is_free(autojump_clock: trio.testing.MockClock) -> None:
    """No limits, one agent held by another pipeline: the job ends
    QUEUE_TIMEOUT after 0.5 minutes with ``no free agent`` in its reason."""
    config = dispatch_config([node("n1", 1)])
    async with dispatch_scenario(config) as s:
        await s.register(pipeline("busy", {"work": [hold_step()]}, group=None), id="busy")
        await s.register(
            pipeline("late", {"work": job([noop_step("go")], {"queue-timeout-minutes": 0.5})}, group=None), id="late"
        )
        a = await s.submit("busy")
        await s.job_running(a.id, "work")
        b = await s.submit("late")
        done = await _times_out(s, b.id, "work", trio.current_time(), 0.5, "no free agent")
        assert done.status == "FAILED", describe(done)
        await s.finish_all([a.id])
        await s.assert_quiet()


@pytest.mark.trio
@pytest.mark.parametrize(
    "runs_on",
    [{"pool-name": "gpu"}, {"pool-name": "nowhere"}, {"labels": ["cuda"]}, {"node-name": "n9"}],
    ids=["empty-pool", "unknown-pool", "labels", "node-name"],
)
async def test_queue_timeout_when_no_node_matches(
    autojump_clock: trio.testing.MockClock, runs_on: dict[str, Any]
) -> None:
    """A job whose pool has no node (empty or unknown pool), or whose labels
    or node-name no node has, waits and ends QUEUE_TIMEOUT after 1 minute
    with ``no node`` in its reason, while free agents elsewhere stay idle."""
    config = dispatch_config([node("n1", 2, ["linux"])], pools={"gpu": []})
    source = pipeline("nn", {"work": job([noop_step("go")], {**runs_on, "queue-timeout-minutes": 1})}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(source, id="nn")
        b = await s.submit("nn")
        done = await _times_out(s, b.id, "work", trio.current_time(), 1, "no node")
        assert done.status == "FAILED", describe(done)
        assert done.job("work").node is None and done.job("work").agent is None, describe(done)
        await s.assert_quiet()


@pytest.mark.trio
async def test_queue_timeout_with_continue_on_error_lets_the_build_succeed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job with ``continue-on-error: true`` that times out waiting for its
    total slot ends QUEUE_TIMEOUT, the build's other job runs, and the build
    SUCCEEDs; without it, the same timeout fails the build."""
    config = dispatch_config([node("n1", 4)])
    source = pipeline(
        "coe",
        {
            "optional": job(
                [hold_step()],
                {"concurrency-limit-total": 1, "queue-timeout-minutes": 1},
                continue_on_error=True,
            ),
            "main": job([noop_step("go")]),
        },
        group=None,
    )
    async with dispatch_scenario(config) as s:
        await s.register(source, id="coe")
        a = await s.submit("coe")
        await s.job_running(a.id, "optional")
        b = await s.submit("coe")
        t0 = trio.current_time()
        done = await s.finished(b.id, timeout=120)
        assert 60 - 0.01 <= trio.current_time() - t0 <= 60.25
        assert done.status == "SUCCEED", describe(done)
        assert done.job("optional").status == "QUEUE_TIMEOUT", describe(done)
        assert "total" in (done.job("optional").reason or "").lower(), describe(done)
        assert done.job("main").status == "SUCCEED", describe(done)
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        await s.assert_quiet()


# --- behaviour 8: exact accounting --------------------------------------------------------


@pytest.mark.trio
async def test_cancelling_builds_waiting_for_slots_and_running_releases_everything(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Cancel a build whose job waits for a total slot (it never runs and
    leaves ``waiting_jobs()``), then the running holder: both CANCELED, the
    next waiter gets the slot, and at the end every counter is zero."""
    config = dispatch_config([node("n1", 2), node("n2", 2)])
    source = pipeline("cx", {"compile": job([hold_step()], {"concurrency-limit-total": 1})}, group=None)
    async with dispatch_scenario(config) as s:
        await s.register(source, id="cx")
        a, b, c = [await s.submit("cx") for _ in range(3)]
        await s.job_running(a.id, "compile")
        await s.until_waiting(b.id, "compile")
        await s.until_waiting(c.id, "compile")
        assert (await s.rt.stats()).jobs_queued == 2

        await s.rt.cancel(b.id)
        b_done = await s.finished(b.id, timeout=5)
        assert b_done.status == "CANCELED", describe(b_done)
        assert b_done.job("compile").status in ("CANCELED", "UNEXEC"), describe(b_done)
        assert await s.waiting(b.id) == []
        assert not s.probe.started(b.id)

        await s.rt.cancel(a.id)
        assert (await s.finished(a.id, timeout=5)).status == "CANCELED"
        await s.job_running(c.id, "compile")
        stats = await s.rt.stats()
        assert (stats.jobs_running, stats.slots_held, stats.jobs_queued) == (1, 1, 0), stats
        s.probe.release(c.id)
        assert (await s.finished(c.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_counters_are_zero_after_failures_cancels_timeouts_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A mix on 2 nodes x 2 agents with per-node 1 / total 2 limits: failing
    steps with automatic retries, a failed job retried in a running build, a
    retried finished build, cancels while running and while waiting, queue
    timeouts and a group queue. Once every build has ended: every stats
    counter zero, every agent idle and unlocked, every queue empty."""
    config = dispatch_config([node("n1", 2), node("n2", 2)])
    limited = pipeline(
        "mix",
        {
            "compile": job(
                [flaky_step("make", fails=1) | {"retry-times": 1}, hold_step()],
                {"concurrency-limit-per-node": 1, "concurrency-limit-total": 2, "queue-timeout-minutes": 3},
            ),
            "check": job([flaky_step("check", fails=1)], {"concurrency-limit-total": 1, "queue-timeout-minutes": 3}),
            "broken": job([fail_step()], continue_on_error=True),
        },
        group=None,
    )
    grouped = pipeline("grp", {"work": [hold_step()]}, max_parallel=1, queue_length=3, queue_timeout_minutes=2)
    async with dispatch_scenario(config) as s:
        await s.register(limited, id="mix")
        await s.register(grouped, id="grp")
        mix = [(await s.submit("mix")).id for _ in range(6)]
        grp = [(await s.submit("grp")).id for _ in range(3)]
        await s.job_running(mix[0], "compile")
        await s.check_limits({"mix/compile": (1, 2), "mix/check": (None, 1)})

        await s.rt.cancel(mix[5])  # waiting for a slot, probably
        await s.rt.cancel(mix[0])  # running
        info = await s.until_job_status(mix[1], "check", "FAILED", "SUCCEED", timeout=60)
        if info.job("check").status == "FAILED" and info.status == "RUNNING":
            await s.rt.retry(mix[1], job="check")
        await trio.sleep(30)
        await s.check_limits({"mix/compile": (1, 2), "mix/check": (None, 1)})
        s.probe.release(grp[0])
        await trio.sleep(200)  # queue timeouts fire for what still waits
        s.probe.release_all()
        done = [await s.finished(b) for b in mix + grp]
        await s.assert_quiet()
        retried = await s.rt.retry(mix[3], failed_only=True)
        assert retried.execute_count == 2
        again = await s.finished(mix[3])
        assert again.status == "SUCCEED", describe(again)
        by_id = {d.id: d for d in done}
        summary = [describe(d) for d in done]
        assert by_id[mix[0]].status == by_id[mix[5]].status == "CANCELED", summary
        # mix[1] and mix[2] held the two compile slots past the 3-minute queue timeout.
        for late in (mix[3], mix[4]):
            assert by_id[late].status == "FAILED", summary
            assert by_id[late].job("compile").status == "QUEUE_TIMEOUT", summary
        assert by_id[mix[1]].status == "SUCCEED", summary  # its failed check was retried
        assert by_id[mix[2]].status == "FAILED", summary  # its check failed once, never retried
        assert by_id[mix[2]].job("compile").status == "SUCCEED", summary
        assert by_id[grp[2]].status == "QUEUE_TIMEOUT", summary
        await s.assert_quiet()


# --- job mutex ------------------------------------------------------------------------------


def _mutex_pipeline(name: str, *, queue_length: int = 3, timeout_minutes: float = 60) -> str:
    return pipeline(
        name,
        {
            "deploy": job(
                [hold_step()],
                mutex={
                    "label": "deploy-${{ variables.ENV }}",
                    "queue-length": queue_length,
                    "timeout-minutes": timeout_minutes,
                },
            )
        },
        group=None,
        variables={"ENV": "test"},
    )


@pytest.mark.trio
async def test_mutex_one_holder_per_label_across_pipelines_fifo(autojump_clock: trio.testing.MockClock) -> None:
    """Builds of two pipelines whose mutex renders to ``deploy-test`` deploy
    one at a time in submit order (the waiters in QUEUE, listed with a
    ``mutex`` reason, never more than one active), while ``deploy-prod``
    runs at once beside them."""
    config = dispatch_config([node("n1", 8)])
    async with dispatch_scenario(config) as s:
        await s.register(_mutex_pipeline("m1"), id="m1")
        await s.register(_mutex_pipeline("m2"), id="m2")
        ids = []
        for index in range(4):
            ids.append((await s.submit("m1" if index % 2 == 0 else "m2")).id)
        await s.job_running(ids[0], "deploy")
        prod = await s.submit("m1", {"ENV": "prod"})
        await s.job_running(prod.id, "deploy")

        for index, build_id in enumerate(ids):
            await s.job_running(build_id, "deploy")
            for waiter in ids[index + 1 :]:
                entry = await s.until_waiting(waiter, "deploy")
                assert "mutex" in (entry.reason or "").lower(), entry
                assert (await s.job(waiter, "deploy")).status == "QUEUE"
                assert not s.probe.started(waiter)
            s.probe.release(build_id)
            assert (await s.finished(build_id)).status == "SUCCEED"
        assert s.probe.start_order(ids) == ids
        actives = [r for r in s.probe.starts if r.job == "deploy"]
        assert len(actives) == 5
        s.probe.release(prod.id)
        assert (await s.finished(prod.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_mutex_queue_full_fails_the_job(autojump_clock: trio.testing.MockClock) -> None:
    """Mutex queue-length 1: A holds, B waits, C's job ends FAILED at once
    with "mutex queue full" (its build FAILED); A then B still deploy."""
    config = dispatch_config([node("n1", 4)])
    async with dispatch_scenario(config) as s:
        await s.register(_mutex_pipeline("mq", queue_length=1), id="mq")
        a = await s.submit("mq")
        await s.job_running(a.id, "deploy")
        b = await s.submit("mq")
        await s.until_waiting(b.id, "deploy")
        c = await s.submit("mq")
        c_done = await s.finished(c.id, timeout=5)
        assert c_done.status == "FAILED", describe(c_done)
        assert c_done.job("deploy").status == "FAILED", describe(c_done)
        assert "mutex queue full" in (c_done.job("deploy").reason or "").lower(), describe(c_done)
        assert not s.probe.started(c.id)
        assert (await s.job(b.id, "deploy")).status == "QUEUE"

        s.probe.release(a.id)
        await s.job_running(b.id, "deploy")
        s.probe.release(b.id)
        assert [(await s.finished(x)).status for x in (a.id, b.id)] == ["SUCCEED", "SUCCEED"]
        await s.assert_quiet()


@pytest.mark.trio
async def test_mutex_wait_past_timeout_ends_the_job_queue_timeout(autojump_clock: trio.testing.MockClock) -> None:
    """Mutex timeout-minutes 2.5: B, waiting behind A, ends QUEUE_TIMEOUT exactly
    2.5 minutes after it began to wait, its reason naming the mutex and the
    wait; A keeps the mutex and the next build gets it after A."""
    config = dispatch_config([node("n1", 4)])
    async with dispatch_scenario(config) as s:
        await s.register(_mutex_pipeline("mt", timeout_minutes=2.5), id="mt")
        a = await s.submit("mt")
        await s.job_running(a.id, "deploy")
        b = await s.submit("mt")
        t0 = trio.current_time()
        await s.until_waiting(b.id, "deploy")
        await trio.sleep(149)
        assert (await s.job(b.id, "deploy")).status == "QUEUE"
        done = await s.finished(b.id, timeout=5)
        assert 150 - 0.01 <= trio.current_time() - t0 <= 150.25
        assert done.status == "FAILED", describe(done)
        deploy = done.job("deploy")
        assert deploy.status == "QUEUE_TIMEOUT", describe(done)
        assert "mutex" in (deploy.reason or "").lower(), deploy.reason
        assert mentions_wait(deploy.reason, 2.5), deploy.reason
        assert not s.probe.started(b.id)

        c = await s.submit("mt")
        await s.until_waiting(c.id, "deploy")
        s.probe.release(a.id)
        await s.job_running(c.id, "deploy")
        s.probe.release(c.id)
        await s.finished(c.id)
        await s.assert_quiet()


@pytest.mark.trio
async def test_cancelling_the_mutex_holder_passes_the_mutex_on(autojump_clock: trio.testing.MockClock) -> None:
    """Cancelling the build that holds the mutex releases it to the first
    waiter; cancelling a waiter removes it from the mutex queue."""
    config = dispatch_config([node("n1", 4)])
    async with dispatch_scenario(config) as s:
        await s.register(_mutex_pipeline("mc"), id="mc")
        a, b, c = [await s.submit("mc") for _ in range(3)]
        await s.job_running(a.id, "deploy")
        await s.until_waiting(c.id, "deploy")
        await s.rt.cancel(b.id)
        assert (await s.finished(b.id, timeout=5)).status == "CANCELED"
        await s.rt.cancel(a.id)
        assert (await s.finished(a.id, timeout=5)).status == "CANCELED"
        await s.job_running(c.id, "deploy")
        assert not s.probe.started(b.id)
        s.probe.release(c.id)
        assert (await s.finished(c.id)).status == "SUCCEED"
        await s.assert_quiet()
