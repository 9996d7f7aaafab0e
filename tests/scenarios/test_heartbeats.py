"""Heartbeats, lost agents, fencing and all-or-nothing grants (docs/design.md §3.1
behaviours 11 and 12), driven by ``rt.inject_fault``:

- ``hang``: the agent stops doing anything; its job ends HEARTBEAT_TIMEOUT
  after heartbeat-timeout and within one heartbeat-interval more (the pool
  checks once per interval); a fresh agent with a new name replaces it.
- ``silence``: the agent keeps running but stops heartbeating; the job ends
  HEARTBEAT_TIMEOUT, its slots go to the next waiter at once, and the late
  report of the finished job changes nothing (fenced by the attempt token).
- ``crash``: the agent actor raises; its job ends FAILED naming the crash,
  the agent is replaced.
- Crashes during dispatch leave nothing half-granted.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .conftest import describe, hold_step, noop_step, pipeline
from .dispatch_helpers import (  # noqa: F401 (agent_kind: the fixture pytestmark uses)
    agent_kind,
    AGENTS,
    DispatchScenario,
    agent_names,
    dispatch_config,
    dispatch_scenario,
    dwell_step,
    job,
    node,
)

INTERVAL, TIMEOUT = 5.0, 30.0


# Every scenario here runs on local agents and on remote ones (docs/design.md §11).
pytestmark = pytest.mark.usefixtures("agent_kind")

LIMITED = pipeline(
    "hb",
    {"work": job([hold_step()], {"concurrency-limit-total": 1, "concurrency-limit-per-node": 1,
                                 "queue-timeout-minutes": 30})},  # fmt: skip
    group=None,
)


async def _replacement(s: DispatchScenario, node_name: str, lost: str, count: int) -> list[str]:
    """Wait until ``node_name`` has ``count`` agents that are not lost, none of
    them named ``lost``; return their names. A remote node's agent is not
    replaced by another: it comes back under its own name, with its process's
    next request (docs/design.md §11)."""
    remote = AGENTS[0] == "remote"

    async def check() -> list[str] | None:
        info = await s.node(node_name)
        if info is None or (remote and not (await s.rt.stats()).agents_lost):
            return None
        names = [a.name for a in info.agents if a.status != "lost"]
        return names if len(names) == count and (remote or lost not in names) else None

    result: list[str] = await s.poll(check, f"{node_name} to replace {lost} ({count} live agents)", timeout=60)
    return result


async def _until_ended(s: DispatchScenario, build_id: str, job_id: str, status: str, timeout: float) -> tuple[Any, float]:
    """Poll every 50 ms until the job has ``status``; return (build, when)."""
    info = await s.until_job_status(build_id, job_id, status, timeout=timeout, step=0.05)
    return info, trio.current_time()


# --- hang -------------------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(("interval", "timeout"), [(5.0, 30.0), (1.0, 7.5)])
async def test_a_hung_agent_ends_its_job_heartbeat_timeout_on_time_and_is_replaced(
    autojump_clock: trio.testing.MockClock, interval: float, timeout: float
) -> None:
    """A hung agent: its job ends HEARTBEAT_TIMEOUT after heartbeat-timeout
    and within one heartbeat-interval more (the pool's check period), the
    build FAILED; a fresh agent with a new name takes its place and the build
    that waited for an agent runs on it."""
    config = dispatch_config([node("n1", 1)], heartbeat_interval=interval, heartbeat_timeout=timeout)
    async with dispatch_scenario(config) as s:
        await s.register(LIMITED, id="hb")
        a = await s.submit("hb")
        info = await s.job_running(a.id, "work")
        victim = info.job("work").agent
        b = await s.submit("hb")
        await s.until_waiting(b.id, "work")
        await trio.sleep(interval * 0.6)  # somewhere between two checks
        t0 = trio.current_time()
        s.rt.inject_fault(victim, "hang")

        await trio.sleep(timeout - 0.01)
        assert (await s.job(a.id, "work")).status == "RUNNING", "ended before heartbeat-timeout"
        info, when = await _until_ended(s, a.id, "work", "HEARTBEAT_TIMEOUT", timeout=3 * interval)
        assert timeout < when - t0 <= timeout + interval + 0.1, (when - t0, timeout, interval)
        assert info.job("work").reason, describe(info)
        assert info.job("work").attempts[-1].status == "HEARTBEAT_TIMEOUT", describe(info)
        done = await s.finished(a.id, timeout=5)
        assert done.status == "FAILED", describe(done)

        (fresh,) = await _replacement(s, "n1", victim, 1)
        assert (fresh == victim) is (AGENTS[0] == "remote")  # a remote agent comes back under its name
        b_info = await s.job_running(b.id, "work")
        assert (b_info.job("work").node, b_info.job("work").agent) == ("n1", fresh), describe(b_info)
        s.probe.release_all()
        assert (await s.finished(b.id)).status == "SUCCEED"
        assert (await s.build(a.id)).job("work") == done.job("work"), "the hung agent's late words changed the job"
        await s.assert_quiet()


# --- silence and fencing -------------------------------------------------------------------


@pytest.mark.trio
async def test_a_silent_agent_loses_its_job_its_slots_go_on_and_its_late_report_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A silent agent keeps running its step but sends no heartbeat: after
    ~heartbeat-timeout the job ends HEARTBEAT_TIMEOUT and its total and
    node slots pass at once to the waiting build (while the silent step is
    still running). When that step then finishes, its report is fenced: the
    job, its steps and the build do not change. A remote agent is told at its
    next request that the attempt is over (``stale``) and stops the step
    rather than finish it (docs/design.md §11); nothing it said changes the job."""
    remote = AGENTS[0] == "remote"
    config = dispatch_config([node("n1", 2)])
    async with dispatch_scenario(config) as s:
        await s.register(LIMITED, id="hb")
        a = await s.submit("hb")
        info = await s.job_running(a.id, "work")
        victim = info.job("work").agent
        b = await s.submit("hb")
        entry = await s.until_waiting(b.id, "work")
        assert "total" in entry.reason.lower() or "per-node" in entry.reason.lower(), entry
        t0 = trio.current_time()
        s.rt.inject_fault(victim, "silence")

        info, when = await _until_ended(s, a.id, "work", "HEARTBEAT_TIMEOUT", timeout=TIMEOUT + 3 * INTERVAL)
        assert TIMEOUT < when - t0 <= TIMEOUT + INTERVAL + 0.1, when - t0
        a_done = await s.finished(a.id, timeout=5)
        assert a_done.status == "FAILED", describe(a_done)
        assert remote or s.probe.is_active(a.id), "a silent agent keeps running its step"

        b_info = await s.job_running(b.id, "work")
        assert b_info.job("work").agent != victim, describe(b_info)
        assert s.probe.is_active(b.id)
        await s.check_limits({"hb/work": (1, 1)})
        fresh = await _replacement(s, "n1", victim, 2)
        assert (victim in fresh) is remote

        s.probe.release(a.id)
        await s.probe.until(lambda: not s.probe.is_active(a.id), "the silent step to finish")
        assert s.probe.outcomes(a.id) == ["cancelled" if remote else "succeeded"]
        await trio.sleep(2 * TIMEOUT)
        after = await s.build(a.id)
        assert after.job("work") == a_done.job("work"), f"late report changed the job: {describe(after)}"
        assert (after.status, after.finished_at, after.reason) == (a_done.status, a_done.finished_at, a_done.reason)
        assert all(st.status != "SUCCEED" for st in after.job("work").steps), describe(after)

        s.probe.release(b.id)
        assert (await s.finished(b.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_silent_agent_in_a_lock_chain_releases_the_lock(autojump_clock: trio.testing.MockClock) -> None:
    """Silence on the agent of a lock chain: the chain job ends
    HEARTBEAT_TIMEOUT, the build fails with its later chain job never run,
    and the lock is gone (no agent locked) for a waiting build."""
    source = pipeline(
        "lc",
        stages=[("build", {"compile": [hold_step()]}), ("test", {"test": job([noop_step("t")], {"lock-resource-with": "compile"})})],
        group=None,
    )
    config = dispatch_config([node("n1", 1)])
    async with dispatch_scenario(config) as s:
        await s.register(source, id="lc")
        await s.register(pipeline("plain", {"work": [hold_step()]}, group=None), id="plain")
        a = await s.submit("lc")
        victim = (await s.job_running(a.id, "compile")).job("compile").agent
        assert (await s.rt.stats()).agents_locked == 1
        b = await s.submit("plain")
        await s.until_waiting(b.id, "work")
        s.rt.inject_fault(victim, "silence")
        done = await s.finished(a.id, timeout=TIMEOUT + 3 * INTERVAL)
        assert done.job("compile").status == "HEARTBEAT_TIMEOUT", describe(done)
        assert done.job("test").status == "UNEXEC", describe(done)
        assert done.status == "FAILED", describe(done)
        await s.job_running(b.id, "work")
        assert (await s.rt.stats()).agents_locked == 0
        s.probe.release_all()
        await s.finished(b.id)
        await s.assert_quiet(timeout=10)


# --- crash ----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_a_crashed_agent_fails_its_job_naming_the_crash_and_is_replaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Crash while running: the job ends FAILED with a reason naming the
    crash, right away (no heartbeat wait), its step stops, a fresh agent
    with a new name replaces it and the waiting build runs there."""
    config = dispatch_config([node("n1", 1)])
    async with dispatch_scenario(config) as s:
        await s.register(LIMITED, id="hb")
        a = await s.submit("hb")
        victim = (await s.job_running(a.id, "work")).job("work").agent
        b = await s.submit("hb")
        await s.until_waiting(b.id, "work")
        s.rt.inject_fault(victim, "crash")
        done = await s.finished(a.id, timeout=1)
        work = done.job("work")
        assert (done.status, work.status) == ("FAILED", "FAILED"), describe(done)
        assert "crash" in (work.reason or "").lower(), work.reason
        await s.probe.until(lambda: not s.probe.is_active(a.id), "the crashed agent's step to stop")

        (fresh,) = await _replacement(s, "n1", victim, 1)
        b_info = await s.job_running(b.id, "work")
        assert b_info.job("work").agent == fresh, describe(b_info)
        s.probe.release(b.id)
        assert (await s.finished(b.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_crashed_mutex_holder_passes_the_mutex_on(autojump_clock: trio.testing.MockClock) -> None:
    """The build holding a job mutex loses its agent to a crash: the mutex
    goes to the waiting build."""
    source = pipeline(
        "mx",
        {"deploy": job([hold_step()], mutex={"label": "prod", "queue-length": 5, "timeout-minutes": 30})},
        group=None,
    )
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(source, id="mx")
        a = await s.submit("mx")
        victim = (await s.job_running(a.id, "deploy")).job("deploy").agent
        b = await s.submit("mx")
        await s.until_waiting(b.id, "deploy")
        s.rt.inject_fault(victim, "crash")
        assert (await s.finished(a.id, timeout=5)).status == "FAILED"
        await s.job_running(b.id, "deploy")
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.assert_quiet()


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["crash", "hang", "silence"])
async def test_a_fault_on_an_idle_agent_replaces_it_and_work_goes_on(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """A fault on an idle agent: the node ends up with as many live agents as
    before (the lost one replaced), and builds still run and finish."""
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("p", {"work": [noop_step("go")]}, group=None), id="p")
        before = agent_names(await s.rt.nodes())
        s.rt.inject_fault(before[0], kind)
        await trio.sleep(TIMEOUT + 2 * INTERVAL)
        live = await _replacement(s, "n1", before[0], 2)
        assert before[1] in live
        ids = [(await s.submit("p")).id for _ in range(4)]
        assert [(await s.finished(b)).status for b in ids] == ["SUCCEED"] * 4
        await s.assert_quiet()


# --- behaviour 12: faults during dispatch --------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["crash", "hang", "silence"])
async def test_faults_during_dispatch_leave_nothing_half_granted(
    autojump_clock: trio.testing.MockClock, kind: str
) -> None:
    """Each round submits a build whose job (0-2 virtual seconds) needs the
    key's only total slot, and (without yielding) faults every agent, so the
    fault lands while the grant is on its way or the job runs. Whatever each build's fate, afterwards no slot,
    agent or lock is held, and a last build of the same key (total 1)
    runs and SUCCEEDs, which a leaked total slot would forbid."""
    source = pipeline(
        "dx",
        {"work": job([dwell_step("go", "${{ variables.SECS }}")],
                     {"concurrency-limit-total": 1, "concurrency-limit-per-node": 1, "queue-timeout-minutes": 5})},
        group=None,
        variables={"SECS": "0"},
    )  # fmt: skip
    async with dispatch_scenario(dispatch_config([node("n1", 1), node("n2", 1)])) as s:
        await s.register(source, id="dx")
        fates = []
        for index in range(6):
            names = agent_names(await s.rt.nodes())
            build = await s.submit("dx", {"SECS": str(index % 3)})
            for name in names:
                s.rt.inject_fault(name, kind)
            done = await s.finished(build.id, timeout=1800)
            fates.append(done.status)
            await s.assert_quiet(timeout=TIMEOUT + 3 * INTERVAL)
        assert all(f in ("SUCCEED", "FAILED") for f in fates), fates
        if kind != "silence":  # a silent agent may finish a short job before it is declared lost
            assert "FAILED" in fates, f"no fault landed on a granted job: {fates}"
        last = await s.submit("dx")
        assert (await s.finished(last.id, timeout=60)).status == "SUCCEED"
        await s.assert_quiet()
        nodes = await s.rt.nodes()
        assert sorted(n.name for n in nodes) == ["n1", "n2"]
        assert all(len([a for a in n.agents if a.status != "lost"]) == 1 for n in nodes), [
            (n.name, n.connected, [(a.name, a.status) for a in n.agents]) for n in nodes]


@pytest.mark.trio
async def test_a_crash_right_after_a_chain_job_is_granted_unlocks_the_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The agent is crashed in the same instant the first job of a lock chain
    is submitted: the build ends, and no agent stays locked or busy."""
    source = pipeline(
        "cc",
        stages=[("build", {"compile": [noop_step("c")]}), ("test", {"test": job([noop_step("t")], {"lock-resource-with": "compile"})})],
        group=None,
    )
    async with dispatch_scenario(dispatch_config([node("n1", 1)])) as s:
        await s.register(source, id="cc")
        for _ in range(3):
            names = agent_names(await s.rt.nodes())
            build = await s.submit("cc")
            for name in names:
                s.rt.inject_fault(name, "crash")
            done = await s.finished(build.id, timeout=1800)
            assert done.status in ("SUCCEED", "FAILED"), describe(done)
            await s.assert_quiet()
        final = await s.finished((await s.submit("cc")).id, timeout=60)
        assert final.status == "SUCCEED", describe(final)
        assert final.job("test").agent == final.job("compile").agent
        await s.assert_quiet()
