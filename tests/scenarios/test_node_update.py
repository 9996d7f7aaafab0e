"""Changing a node while it works (``rt.update_node``, ``PUT /v1/nodes/{name}`` on an existing node):

- more agents start at once and take the jobs that waited for an agent;
- fewer agents: idle ones leave at once, busy ones finish their job first
  and then leave instead of taking new work; a running job is never
  stopped, and an agent a ``lock-resource-with`` chain holds stays until
  its chain has ended;
- new labels apply to placement at once, to jobs waiting now too, and a
  job running there goes on when the node no longer has its labels;
- a lost agent on a node that shrank is not replaced past the new count;
- what cannot be changed is refused and changes nothing.
"""

from __future__ import annotations

import pytest
import trio

import runtime
from actors.model.vocab import EventKind, NodeChange

from .conftest import describe, hold_step, noop_step, pipeline
from .dispatch_helpers import DispatchScenario, agent_names, dispatch_config, dispatch_scenario, job, node


async def _agents(s: DispatchScenario, name: str) -> list[str]:
    info = await s.node(name)
    assert info is not None, f"node {name} is gone"
    return [agent.name for agent in info.agents]


@pytest.mark.trio
async def test_more_agents_start_at_once_and_serve_waiting_jobs(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("n1", 1)])) as s:
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        builds = [await s.submit("p") for _ in range(3)]
        await s.job_running(builds[0].id, "work")
        await s.until_waiting(builds[2].id, "work")

        grown = await s.rt.update_node("n1", agents=3)
        assert [a.name for a in grown.agents] == ["n1/0", "n1/1", "n1/2"] and grown.agents_wanted == 3, grown
        for build in builds:  # the two that waited for an agent run now, on the new agents
            await s.job_running(build.id, "work")
        assert {(await s.job(b.id, "work")).agent for b in builds} == {"n1/0", "n1/1", "n1/2"}
        await s.finish_all([b.id for b in builds])
        await s.assert_quiet()


@pytest.mark.trio
async def test_fewer_agents_retire_idle_ones_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("n1", 4)])) as s:
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        busy = await s.submit("p")
        agent = (await s.job_running(busy.id, "work")).job("work").agent
        shrunk = await s.rt.update_node("n1", agents=2)
        assert len(shrunk.agents) == 2 and agent in [a.name for a in shrunk.agents], shrunk
        assert (await s.rt.stats()).agents == 2
        assert (await s.job(busy.id, "work")).status == "RUNNING"
        s.probe.release(busy.id)
        assert (await s.finished(busy.id)).status == "SUCCEED"
        assert s.probe.outcomes(busy.id) == ["succeeded"]
        assert len(await _agents(s, "n1")) == 2
        await s.assert_quiet()


@pytest.mark.trio
async def test_fewer_agents_let_busy_ones_finish_then_leave(autojump_clock: trio.testing.MockClock) -> None:
    """Both agents busy, shrink to 1: nothing is stopped; the first agent to
    finish leaves instead of taking the waiting job, which runs on the
    other one once that is free; the node ends with one agent."""
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        a, b, c = [await s.submit("p") for _ in range(3)]
        agent_a = (await s.job_running(a.id, "work")).job("work").agent
        agent_b = (await s.job_running(b.id, "work")).job("work").agent
        await s.until_waiting(c.id, "work")

        shrunk = await s.rt.update_node("n1", agents=1)
        assert (len(shrunk.agents), shrunk.agents_wanted) == (2, 1), shrunk  # both still run their job
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        await trio.sleep(10)
        assert await _agents(s, "n1") == [agent_b], "the agent that finished first left"
        assert (await s.job(c.id, "work")).status == "QUEUE", "a leaving agent took new work"

        s.probe.release(b.id)
        assert (await s.finished(b.id)).status == "SUCCEED"
        assert (await s.job_running(c.id, "work")).job("work").agent == agent_b
        s.probe.release(c.id)
        await s.finished(c.id)
        assert [s.probe.outcomes(x.id) for x in (a, b, c)] == [["succeeded"]] * 3
        assert agent_a not in agent_names(await s.rt.nodes())
        assert (await s.rt.stats()).agents == 1
        await s.assert_quiet()


@pytest.mark.trio
async def test_shrinking_never_breaks_a_lock_resource_with_chain(autojump_clock: trio.testing.MockClock) -> None:
    """compile holds its agent for package (lock-resource-with); shrinking
    the node meanwhile does not take that agent: package runs on it, then
    the agent leaves once the chain has ended."""
    jobs = {"compile": job([hold_step()]), "package": job([noop_step("pack")], {"lock-resource-with": "compile"})}
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("chain", stages=[("one", {"compile": jobs["compile"]}),
                                                   ("two", {"package": jobs["package"]})], group=None),
                         id="chain")  # fmt: skip
        build = await s.submit("chain")
        agent = (await s.job_running(build.id, "compile")).job("compile").agent
        other = next(name for name in await _agents(s, "n1") if name != agent)

        await s.rt.update_node("n1", agents=1)
        assert await _agents(s, "n1") == [agent], "the idle agent leaves, the chain's stays"
        s.probe.release(build.id)
        done = await s.finished(build.id)
        assert done.status == "SUCCEED", describe(done)
        assert done.job("package").agent == agent, describe(done)
        assert await _agents(s, "n1") == [agent]  # the node kept one: the chain's agent, free again
        assert other not in agent_names(await s.rt.nodes())
        await s.assert_quiet()


@pytest.mark.trio
async def test_shrinking_while_a_chain_waits_between_jobs_keeps_its_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Shrink to 1 of 2 while compile runs on one agent and the other is
    idle: package (next in the chain) still gets compile's agent even
    though the node had one agent too many when compile ended."""
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("chain", stages=[
            ("one", {"compile": job([hold_step()])}),
            ("two", {"package": job([hold_step("pack")], {"lock-resource-with": "compile"})}),
        ], group=None), id="chain")  # fmt: skip
        build = await s.submit("chain")
        agent = (await s.job_running(build.id, "compile")).job("compile").agent
        await s.rt.update_node("n1", agents=1)
        s.probe.release(build.id, "compile")
        running = await s.job_running(build.id, "package")
        assert running.job("package").agent == agent, describe(running)
        s.probe.release(build.id)
        assert (await s.finished(build.id)).status == "SUCCEED"
        assert await _agents(s, "n1") == [agent]
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_chains_agent_leaves_when_its_chain_ends(autojump_clock: trio.testing.MockClock) -> None:
    """Both agents busy (one held by a chain) when the node shrinks to 1: the
    chain runs to its end on its agent, which then leaves (the other agent,
    still busy, stays), and the waiting job gets the agent that stayed."""
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("chain", stages=[
            ("one", {"compile": job([hold_step()])}),
            ("two", {"package": job([hold_step("pack")], {"lock-resource-with": "compile"})}),
        ], group=None), id="chain")  # fmt: skip
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        build = await s.submit("chain")
        agent = (await s.job_running(build.id, "compile")).job("compile").agent
        other, waiting = await s.submit("p"), await s.submit("p")
        stays = (await s.job_running(other.id, "work")).job("work").agent
        await s.until_waiting(waiting.id, "work")

        await s.rt.update_node("n1", agents=1)
        s.probe.release(build.id, "compile")
        assert (await s.job_running(build.id, "package")).job("package").agent == agent
        s.probe.release(build.id)
        assert (await s.finished(build.id)).status == "SUCCEED"
        await trio.sleep(5)
        assert await _agents(s, "n1") == [stays], "the chain's agent left once its chain ended"
        assert (await s.job(waiting.id, "work")).status == "QUEUE"
        s.probe.release(other.id)
        assert (await s.job_running(waiting.id, "work")).job("work").agent == stays
        await s.finish_all([other.id, waiting.id])
        await s.assert_quiet()


@pytest.mark.trio
async def test_new_labels_place_waiting_jobs_and_running_ones_go_on(autojump_clock: trio.testing.MockClock) -> None:
    """n1 (linux, 2 agents) runs two linux jobs; a third waits for an agent, a
    gpu job for a node. Relabelled gpu: the running jobs go on, the waiting
    reasons swap (the linux job now has no node), and the first free agent
    takes the gpu job. Relabelled gpu+linux: the linux job runs too."""
    async with dispatch_scenario(dispatch_config([node("n1", 2, ["linux"])])) as s:
        await s.register(pipeline("gpu", {"work": job([hold_step()], {"labels": ["gpu"]})}, group=None), id="gpu")
        await s.register(pipeline("lin", {"work": job([hold_step()], {"labels": ["linux"]})}, group=None), id="lin")
        a, b = await s.submit("lin"), await s.submit("lin")
        await s.job_running(a.id, "work")
        await s.job_running(b.id, "work")
        c, gpu = await s.submit("lin"), await s.submit("gpu")
        assert "no free agent" in (await s.until_waiting(c.id, "work")).reason
        assert "no node" in ((await s.job(gpu.id, "work")).reason or "")

        changed = await s.rt.update_node("n1", labels=["gpu"])
        assert changed.labels == ["gpu"] and len(changed.agents) == 2, changed

        async def reasons_swapped() -> bool:
            return "no node" in ((await s.job(c.id, "work")).reason or "") and not (await s.job(gpu.id, "work")).reason

        await s.poll(reasons_swapped, "the waiting jobs' reasons to follow the new labels")
        assert [(await s.job(x.id, "work")).status for x in (a, b)] == ["RUNNING"] * 2, "running jobs go on"
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        assert (await s.job_running(gpu.id, "work")).job("work").node == "n1"
        assert (await s.job(c.id, "work")).status == "QUEUE"

        await s.rt.update_node("n1", labels=["gpu", "linux"])
        s.probe.release(b.id)
        await s.job_running(c.id, "work")
        await s.finish_all([b.id, c.id, gpu.id])
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_lost_agent_is_replaced_only_up_to_the_new_count(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        a, b = await s.submit("p"), await s.submit("p")
        agent_a = (await s.job_running(a.id, "work")).job("work").agent
        await s.job_running(b.id, "work")
        await s.rt.update_node("n1", agents=1)
        s.rt.inject_fault(agent_a, "crash")
        lost = await s.finished(a.id)
        assert lost.status == "FAILED", describe(lost)
        await trio.sleep(5)
        assert len(await _agents(s, "n1")) == 1, "the lost agent was the one too many: not replaced"
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.rt.update_node("n1", agents=2)
        assert len(await _agents(s, "n1")) == 2
        await s.assert_quiet()


@pytest.mark.trio
async def test_what_cannot_change_is_refused_and_changes_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("n1", 2), node("n2", 1)])) as s:
        before = await s.rt.nodes()
        with pytest.raises(runtime.NotFound, match="nope"):
            await s.rt.update_node("nope", agents=2)
        with pytest.raises(runtime.Conflict, match="pool 'default'"):
            await s.rt.update_node("n1", agents=3, pool="gpu")
        for bad in (0, -1, 2.5, True, "2"):
            with pytest.raises(runtime.InvalidRequest, match="agents"):
                await s.rt.update_node("n1", agents=bad)  # type: ignore[arg-type]
        with pytest.raises(runtime.InvalidRequest, match="labels"):
            await s.rt.update_node("n1", labels="linux")  # type: ignore[arg-type]
        assert await s.rt.nodes() == before
        await s.register(pipeline("p", {"work": job([hold_step()], {"node-name": "n2"})}, group=None), id="p")
        build = await s.submit("p")
        await s.job_running(build.id, "work")
        await s.rt.remove_node("n2")
        with pytest.raises(runtime.Conflict, match="draining"):
            await s.rt.update_node("n2", agents=3)
        s.probe.release(build.id)
        await s.finished(build.id)
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_change_is_published_as_node_events(autojump_clock: trio.testing.MockClock) -> None:
    """Shrink 3 agents (2 busy) to 1: AGENT_RETIRED for the idle one at once,
    CHANGED with the labels, agents and wanted count, then AGENT_RETIRED for
    the first busy one to finish; the last one stays."""
    async with dispatch_scenario(dispatch_config([node("n1", 3)])) as s:
        await s.register(pipeline("p", {"work": [hold_step()]}, group=None), id="p")
        a, b = await s.submit("p"), await s.submit("p")
        agent_a = (await s.job_running(a.id, "work")).job("work").agent
        agent_b = (await s.job_running(b.id, "work")).job("work").agent
        idle = ({"n1/0", "n1/1", "n1/2"} - {agent_a, agent_b}).pop()
        mark = (await s.rt.events())[-1].id
        await s.rt.update_node("n1", agents=1, labels=["linux"])
        s.probe.release(a.id)
        await s.finished(a.id)
        s.probe.release(b.id)
        await s.finished(b.id)
        events = [(e.status, e.data) for e in await s.rt.events(after=mark) if e.kind == EventKind.NODE]
        await s.assert_quiet()
    assert events == [
        (NodeChange.AGENT_RETIRED, {"pool": "default", "agent": idle}),
        (NodeChange.CHANGED, {"pool": "default", "labels": ["linux"], "agents": sorted([agent_a, agent_b]),
                              "agents_wanted": 1}),
        (NodeChange.AGENT_RETIRED, {"pool": "default", "agent": agent_a}),
    ]  # fmt: skip
