"""Pools, nodes and placement (issue 4, deliverable 1):

- ``rt.nodes()`` describes the configured nodes and their agents;
- ``add_node`` at run time (creating its pool if needed) serves a job that
  waited because no node matched;
- ``remove_node`` drains: the running job finishes, no new job starts there,
  then the node disappears;
- ``runs-on`` labels, node-name and pool-name decide where a job runs, and
  the attempt records node and agent.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .conftest import describe, hold_step, noop_step, pipeline
from .dispatch_helpers import dispatch_config, dispatch_scenario, job, node


@pytest.mark.trio
async def test_nodes_describe_the_configured_pools_nodes_and_agents(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Every configured node with its pool, labels and agents ``<node>/<i>``,
    all idle and unlocked, nothing running; stats count the agents."""
    config = dispatch_config(
        [node("n1", 2, ["linux"]), node("n2", 1)], pools={"gpu": [node("g1", 3, ["cuda", "linux"])]}
    )
    async with dispatch_scenario(config) as s:
        nodes = {n.name: n for n in await s.rt.nodes()}
        assert sorted(nodes) == ["g1", "n1", "n2"]
        assert (nodes["n1"].pool, sorted(nodes["n1"].labels)) == ("default", ["linux"])
        assert (nodes["g1"].pool, sorted(nodes["g1"].labels)) == ("gpu", ["cuda", "linux"])
        assert nodes["n2"].labels == []
        assert [a.name for a in nodes["n1"].agents] == ["n1/0", "n1/1"]
        assert [a.name for a in nodes["g1"].agents] == ["g1/0", "g1/1", "g1/2"]
        for info in nodes.values():
            assert info.draining is False and not any(info.running.values()), info
            for agent in info.agents:
                assert (agent.status, agent.job, agent.locked_by) == ("idle", None, None), agent
        stats = await s.rt.stats()
        assert (stats.agents, stats.agents_busy, stats.agents_locked) == (6, 0, 0), stats


@pytest.mark.trio
async def test_a_running_job_shows_on_its_node_and_agent(autojump_clock: trio.testing.MockClock) -> None:
    """While a job runs, its node's ``running`` maps ``pipeline/job`` to 1 and
    its agent is busy with the attempt (token names build and job); the job
    and its attempt record that node and agent."""
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("show", {"work": [hold_step()]}, group=None), id="show")
        b = await s.submit("show")
        info = await s.job_running(b.id, "work")
        work = info.job("work")
        assert work.node == "n1" and work.agent in ("n1/0", "n1/1"), describe(info)
        assert (work.attempts[0].node, work.attempts[0].agent) == (work.node, work.agent)
        n1 = await s.node("n1")
        assert n1.running.get("show/work") == 1, n1.running
        busy = [a for a in n1.agents if a.status == "busy"]
        assert [a.name for a in busy] == [work.agent], n1.agents
        assert b.id in (busy[0].job or "") and "work" in (busy[0].job or ""), busy[0]
        stats = await s.rt.stats()
        assert (stats.jobs_running, stats.slots_held, stats.agents_busy) == (1, 1, 1), stats
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.assert_quiet()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("runs_on", "add"),
    [
        ({"pool-name": "gpu"}, {"name": "g1", "pool": "gpu"}),
        ({"pool-name": "fresh"}, {"name": "f1", "pool": "fresh"}),
        ({"labels": ["cuda"]}, {"name": "c1", "labels": ["cuda", "linux"]}),
        ({"node-name": "late"}, {"name": "late", "agents": 2}),
    ],
    ids=["empty-pool", "new-pool", "labels", "node-name"],
)
async def test_adding_a_node_serves_a_job_that_waited_for_one(
    autojump_clock: trio.testing.MockClock, runs_on: dict[str, Any], add: dict[str, Any]
) -> None:
    """A job no node matches waits (QUEUE, reason ``no node``) without timing
    out early; ``add_node`` at run time (creating the pool if needed) makes
    it run on the new node and the build SUCCEEDs."""
    config = dispatch_config([node("n1", 2, ["linux"])], pools={"gpu": []})
    async with dispatch_scenario(config) as s:
        await s.register(pipeline("w", {"work": job([noop_step("go")], runs_on)}, group=None), id="w")
        b = await s.submit("w")
        entry = await s.until_waiting(b.id, "work")
        assert "no node" in entry.reason.lower(), entry
        await trio.sleep(300)
        assert (await s.job(b.id, "work")).status == "QUEUE"

        name = add.pop("name")
        added = await s.rt.add_node(name, **add)
        assert added.name == name and added.pool == add.get("pool", "default"), added
        assert len(added.agents) == add.get("agents", 1)
        done = await s.finished(b.id, timeout=5)
        assert done.status == "SUCCEED", describe(done)
        assert done.job("work").node == name, describe(done)
        assert done.job("work").agent.startswith(f"{name}/"), describe(done)
        assert name in {n.name for n in await s.rt.nodes()}
        await s.assert_quiet()


@pytest.mark.trio
async def test_removing_a_node_drains_it(autojump_clock: trio.testing.MockClock) -> None:
    """``remove_node`` while a job runs there: the node shows draining, the
    running job finishes and SUCCEEDs (never cancelled), jobs that could
    run anywhere go elsewhere or wait instead of starting there, a job
    pinned to it waits; once idle the node is gone from ``rt.nodes()``."""
    config = dispatch_config([node("n1", 2), node("n2", 1)])
    async with dispatch_scenario(config) as s:
        await s.register(pipeline("pin1", {"work": job([hold_step()], {"node-name": "n1"})}, group=None), id="pin1")
        await s.register(pipeline("any", {"work": [hold_step()]}, group=None), id="any")
        await s.register(
            pipeline("late1", {"work": job([noop_step("go")], {"node-name": "n1", "queue-timeout-minutes": 1})},
                     group=None),
            id="late1",
        )  # fmt: skip
        a = await s.submit("pin1")
        await s.job_running(a.id, "work")
        removed = await s.rt.remove_node("n1")
        assert removed.name == "n1" and removed.draining is True, removed
        n1 = await s.node("n1")
        assert n1 is not None and n1.draining is True, "a node with a running job stays until it is idle"

        b = await s.submit("any")
        assert (await s.job_running(b.id, "work")).job("work").node == "n2"
        c = await s.submit("any")
        await s.until_waiting(c.id, "work")
        pinned = await s.submit("late1")
        await trio.sleep(10)
        assert (await s.job(c.id, "work")).status == "QUEUE", "no new job starts on a draining node"
        assert (await s.job(pinned.id, "work")).status == "QUEUE"

        s.probe.release(a.id)
        a_done = await s.finished(a.id)
        assert a_done.status == "SUCCEED", describe(a_done)
        assert s.probe.outcomes(a.id) == ["succeeded"]

        async def n1_gone() -> bool:
            return await s.node("n1") is None

        await s.poll(n1_gone, "n1 to disappear once idle")
        await trio.sleep(5)
        assert not s.probe.started(c.id), "a job started on the drained node"
        late = await s.finished(pinned.id, timeout=120)
        assert late.status == "FAILED" and late.job("work").status == "QUEUE_TIMEOUT", describe(late)
        assert "no node" in (late.job("work").reason or "").lower(), describe(late)

        s.probe.release(b.id)
        info = await s.job_running(c.id, "work")
        assert info.job("work").node == "n2"
        s.probe.release(c.id)
        await s.finished(c.id)
        await s.assert_quiet()


@pytest.mark.trio
async def test_removing_an_idle_node_removes_it_at_once(autojump_clock: trio.testing.MockClock) -> None:
    """An idle node goes at once; its agents no longer count; jobs run on the
    remaining node."""
    async with dispatch_scenario(dispatch_config([node("n1", 2), node("n2", 1)])) as s:
        await s.rt.remove_node("n1")

        async def n1_gone() -> bool:
            return await s.node("n1") is None

        await s.poll(n1_gone, "n1 to go", timeout=1)
        assert (await s.rt.stats()).agents == 1
        await s.register(pipeline("p", {"work": [noop_step("go")]}, group=None), id="p")
        done = await s.finished((await s.submit("p")).id)
        assert (done.status, done.job("work").node) == ("SUCCEED", "n2"), describe(done)
        await s.assert_quiet()


@pytest.mark.trio
async def test_labels_node_name_and_pool_decide_where_jobs_run(autojump_clock: trio.testing.MockClock) -> None:
    """A job runs only on a node of its pool that has all its labels (and is
    the named node, if pinned), whatever else is free; a plain
    ``runs-on: <pool>`` names the pool."""
    config = dispatch_config(
        [node("n1", 2, ["linux"]), node("n2", 2, ["linux", "gpu"]), node("n3", 2, ["windows"])],
        pools={"mac": [node("m1", 1, ["arm"])]},
    )
    cases = {
        "gpu": ({"labels": ["gpu"]}, {"n2"}),
        "linux_gpu": ({"labels": ["linux", "gpu"]}, {"n2"}),
        "linux": ({"labels": ["linux"]}, {"n1", "n2"}),
        "windows": ({"labels": ["windows"]}, {"n3"}),
        "pinned": ({"node-name": "n3"}, {"n3"}),
        "pinned_linux": ({"node-name": "n1", "labels": ["linux"]}, {"n1"}),
        "mac": ({"pool-name": "mac"}, {"m1"}),
        "mac_arm": ({"pool-name": "mac", "labels": ["arm"]}, {"m1"}),
        "anywhere": ({}, {"n1", "n2", "n3"}),
    }
    jobs = {name: job([noop_step("go")], runs_on) for name, (runs_on, _) in cases.items()}
    jobs["plain_pool"] = {"runs-on": "mac", "steps": [noop_step("go")]}
    cases["plain_pool"] = ({}, {"m1"})
    async with dispatch_scenario(config) as s:
        await s.register(pipeline("where", jobs, group=None), id="where")
        seen: dict[str, set[str]] = {name: set() for name in cases}
        for _ in range(4):
            done = await s.finished((await s.submit("where")).id)
            assert done.status == "SUCCEED", describe(done)
            for name in cases:
                info = done.job(name)
                assert info.agent and info.agent.startswith(f"{info.node}/"), describe(done)
                assert [(t.node, t.agent) for t in info.attempts] == [(info.node, info.agent)], describe(done)
                seen[name].add(info.node)
        for name, (_, allowed) in cases.items():
            assert seen[name] <= allowed, (name, seen[name], allowed)
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_job_pinned_to_a_busy_node_waits_without_blocking_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """X holds n1's only agent; Y, pinned to n1, waits; Z, submitted after Y
    and free to run anywhere, runs on n2 at once; Y runs on n1 when X ends."""
    async with dispatch_scenario(dispatch_config([node("n1", 1), node("n2", 1)])) as s:
        await s.register(pipeline("pin", {"work": job([hold_step()], {"node-name": "n1"})}, group=None), id="pin")
        await s.register(pipeline("any", {"work": [hold_step()]}, group=None), id="any")
        x = await s.submit("pin")
        await s.job_running(x.id, "work")
        y = await s.submit("pin")
        entry = await s.until_waiting(y.id, "work")
        assert entry.reason, entry
        z = await s.submit("any")
        z_info = await s.job_running(z.id, "work")
        assert z_info.job("work").node == "n2", describe(z_info)
        assert (await s.job(y.id, "work")).status == "QUEUE"
        s.probe.release(x.id)
        y_info = await s.job_running(y.id, "work")
        assert y_info.job("work").node == "n1", describe(y_info)
        await s.finish_all([x.id, y.id, z.id])
        await s.assert_quiet()
