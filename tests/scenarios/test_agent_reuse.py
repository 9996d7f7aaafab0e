"""Agent reuse and retries (docs/design.md §3.1 behaviours 9 and 10; seed 000).

- ``lock-resource-with: compile`` runs a job on the agent ``compile`` ran on
  in the same build, across stages; that agent is locked for the build from
  the start of ``compile`` until the chain ends (or the build ends): no other
  build's job runs on it, even while it is idle; ``agents_locked`` and
  ``AgentInfo.locked_by`` show it.
- A retried chain job (in a running build, or a finished build's retry)
  re-acquires that agent, waiting for it if another build uses it; if the
  agent is gone the job fails saying so.
- Context: exports flow along the chain (and the workspace is shared); a
  retry sees the snapshot from before the failed attempt, never what that
  attempt exported; a different build on the agent sees neither the
  previous build's env nor its files.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from .conftest import describe, flaky_step, hold_step, noop_step, pipeline
from .dispatch_helpers import (  # noqa: F401 (agent_kind: the fixture pytestmark uses)
    agent_kind,
    DispatchScenario,
    dispatch_config,
    dispatch_scenario,
    export_step,
    fail_step,
    job,
    node,
    peek_step,
    touch_step,
)

LOCK = {"lock-resource-with": "compile"}


# Every scenario here runs on local agents and on remote ones (docs/design.md §11).
pytestmark = pytest.mark.usefixtures("agent_kind")


def _one_agent_nodes(*names: str) -> dict[str, Any]:
    return dispatch_config([node(name, 1) for name in names])


BLOCKER = pipeline("blocker", {"block": job([hold_step()], {"node-name": "n1"})}, group=None)


async def _compile_away_from_n1(s: DispatchScenario, pipeline_id: str) -> tuple[str, str, str]:
    """Run a ``blocker`` build on n1 so the chain's ``compile`` lands elsewhere,
    then free n1 again: a dispatcher that ignored the lock would now be free
    to pick n1. Returns (build id, compile's agent, compile's node)."""
    await s.register(BLOCKER, id="blocker")
    blocker = await s.submit("blocker")
    await s.job_running(blocker.id, "block")
    a = await s.submit(pipeline_id)
    info = await s.until_job(a.id, "compile", lambda j: j.agent is not None, "compile placed")
    compile_job = info.job("compile")
    assert compile_job.node != "n1", describe(info)
    s.probe.release(blocker.id)
    assert (await s.finished(blocker.id)).status == "SUCCEED"
    return a.id, compile_job.agent, compile_job.node


# --- behaviour 9: the chain holds one agent -------------------------------------------------

CHAIN = pipeline(
    "chain",
    stages=[
        ("build", {"compile": [hold_step()]}),
        ("test", {"test": job([hold_step()], LOCK)}),
        ("package", {"package": job([hold_step()], {"lock-resource-with": "test"})}),
    ],
    group=None,
)


@pytest.mark.trio
async def test_a_lock_chain_runs_on_one_agent_across_stages(autojump_clock: trio.testing.MockClock) -> None:
    """compile, test (lock compile) and package (lock test) run on the same
    agent in three stages, though other agents are idle; the agent is
    locked by the build from compile's start until package ends
    (``locked_by``, ``agents_locked`` 1), then unlocked."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2", "n3")) as s:
        await s.register(CHAIN, id="chain")
        a, agent, node_name = await _compile_away_from_n1(s, "chain")
        await s.job_running(a, "compile")
        for job_id in ("compile", "test", "package"):
            info = await s.job_running(a, job_id)
            assert (info.job(job_id).agent, info.job(job_id).node) == (agent, node_name), describe(info)
            assert s.probe.where(a, job_id)[0].agent == agent
            held = await s.agent(agent)
            assert held is not None and held.locked_by == a and held.status == "busy", held
            stats = await s.rt.stats()
            assert stats.agents_locked == 1, stats
            s.probe.release(a, job_id)
        done = await s.finished(a)
        assert done.status == "SUCCEED", describe(done)
        assert {j.agent for st in done.stages for j in st.jobs} == {agent}
        await s.assert_quiet()


GAP = pipeline(
    "gap",
    stages=[
        ("build", {"compile": [hold_step()], "slow": [hold_step()]}),
        ("test", {"test": job([hold_step()], LOCK)}),
    ],
    group=None,
)
PLAIN = pipeline("plain", {"work": [hold_step()]}, group=None)


@pytest.mark.trio
async def test_another_build_cannot_use_a_locked_agent_even_while_it_is_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Two nodes of one agent. A's compile ends while A's ``slow`` still runs:
    compile's agent is idle but locked by A (``agents_locked`` 1), so build
    B waits (QUEUE, listed as waiting) for minutes rather than take it; when
    ``slow`` ends, A's test takes the locked agent and B the other one."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(GAP, id="gap")
        await s.register(PLAIN, id="plain")
        a = await s.submit("gap")
        await s.job_running(a.id, "compile")
        await s.job_running(a.id, "slow")
        agent = (await s.job(a.id, "compile")).agent
        other = (await s.job(a.id, "slow")).agent
        s.probe.release(a.id, "compile")
        await s.until_job_status(a.id, "compile", "SUCCEED")

        async def idle_and_locked() -> Any:
            info = await s.agent(agent)
            return info if info is not None and info.status == "idle" and info.locked_by == a.id else None

        await s.poll(idle_and_locked, f"{agent} idle and locked by {a.id}")
        assert (await s.rt.stats()).agents_locked == 1

        b = await s.submit("plain")
        entry = await s.until_waiting(b.id, "work")
        assert entry.reason, entry
        await trio.sleep(120)
        assert (await s.job(b.id, "work")).status == "QUEUE"
        assert not s.probe.started(b.id)
        assert (await s.agent(agent)).locked_by == a.id

        s.probe.release(a.id, "slow")
        info = await s.job_running(a.id, "test")
        assert info.job("test").agent == agent, describe(info)
        b_info = await s.job_running(b.id, "work")
        assert b_info.job("work").agent == other, describe(b_info)
        await s.finish_all([a.id, b.id])
        assert (await s.build(a.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_job_pinned_to_the_locked_agents_node_waits_for_the_chain(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A job of another build pinned (node-name) to the node of the locked
    agent waits until the chain has ended, then runs there."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(GAP, id="gap")
        a = await s.submit("gap")
        await s.job_running(a.id, "compile")
        node_name = (await s.job(a.id, "compile")).node
        pinned = pipeline("pinned", {"work": job([hold_step()], {"node-name": node_name})}, group=None)
        await s.register(pinned, id="pinned")
        s.probe.release(a.id, "compile")
        b = await s.submit("pinned")
        await s.until_waiting(b.id, "work")
        s.probe.release(a.id, "slow")
        await s.job_running(a.id, "test")
        await trio.sleep(60)
        assert not s.probe.started(b.id)
        s.probe.release(a.id, "test")
        assert (await s.finished(a.id)).status == "SUCCEED"
        info = await s.job_running(b.id, "work")
        assert info.job("work").node == node_name
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.assert_quiet()


@pytest.mark.trio
@pytest.mark.parametrize("how", ["cancel", "compile-fails"])
async def test_the_lock_ends_with_the_build(autojump_clock: trio.testing.MockClock, how: str) -> None:
    """A build cancelled while its locked agent is idle, or failed before the
    chain's later jobs could run (they end UNEXEC), unlocks the agent at
    once: ``locked_by`` None, ``agents_locked`` 0, and a waiting build gets it."""
    first = [fail_step("boom")] if how == "compile-fails" else [noop_step("ok")]
    source = pipeline(
        "ends",
        stages=[
            ("build", {"compile": first, "slow": [hold_step()]}),
            ("test", {"test": job([hold_step()], LOCK)}),
        ],
        group=None,
    )
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(source, id="ends")
        await s.register(PLAIN, id="plain")
        a = await s.submit("ends")
        await s.job_running(a.id, "slow")
        info = await s.until_job_status(a.id, "compile", "SUCCEED", "FAILED")
        agent = info.job("compile").agent
        b = await s.submit("plain")
        await s.until_waiting(b.id, "work")
        if how == "cancel":
            await s.rt.cancel(a.id)
            expected = "CANCELED"
        else:
            s.probe.release(a.id, "slow")
            expected = "FAILED"
        done = await s.finished(a.id, timeout=5)
        assert done.status == expected, describe(done)
        assert done.job("test").status in ("UNEXEC", "CANCELED"), describe(done)
        await s.job_running(b.id, "work")
        released = await s.agent(agent)
        assert released is not None and released.locked_by is None, released
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.assert_quiet()


# --- retries of chain jobs --------------------------------------------------------------------

RETRY_CHAIN = pipeline(
    "rchain",
    stages=[
        ("build", {"compile": [hold_step()]}),
        ("test", {"test": job([flaky_step("check")], LOCK), "other": [hold_step()]}),
    ],
    group=None,
)


@pytest.mark.trio
async def test_retrying_a_chain_job_of_a_running_build_reacquires_the_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """test (lock compile) fails while ``other`` keeps the build RUNNING; the
    job retry runs on compile's agent again, though another agent (n1,
    freed after compile was placed) is idle."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2", "n3")) as s:
        await s.register(RETRY_CHAIN, id="rchain")
        a, agent, _ = await _compile_away_from_n1(s, "rchain")
        s.probe.release(a, "compile")
        info = await s.until_job_status(a, "test", "FAILED")
        assert info.status == "RUNNING", describe(info)
        retried = await s.rt.retry(a, job="test")
        assert retried.execute_count == 1
        info = await s.until_job_status(a, "test", "SUCCEED")
        test = info.job("test")
        assert [(t.number, t.status, t.agent) for t in test.attempts] == [
            (1, "FAILED", agent),
            (2, "SUCCEED", agent),
        ], describe(info)
        assert test.agent == agent
        assert [p.agent for p in s.probe.where(a, "test")] == [agent, agent]
        s.probe.release(a, "other")
        assert (await s.finished(a)).status == "SUCCEED"
        await s.assert_quiet()


FINISHED_CHAIN = pipeline(
    "fchain",
    stages=[
        ("build", {"compile": [noop_step("make")]}),
        ("test", {"test": job([flaky_step("check")], LOCK)}),
    ],
    group=None,
)


@pytest.mark.trio
async def test_retrying_a_chain_job_of_a_finished_build_waits_for_the_same_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A FAILED at test; another build then holds compile's agent (pinned to
    its node). Retrying A's test (a new admission, execute_count 2) waits
    for that agent although the other node is free, then runs on it."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(FINISHED_CHAIN, id="fchain")
        a = await s.submit("fchain")
        failed = await s.finished(a.id)
        assert failed.status == "FAILED", describe(failed)
        agent, node_name = failed.job("compile").agent, failed.job("compile").node
        assert failed.job("test").agent == agent, describe(failed)

        squatter = pipeline("squat", {"work": job([hold_step()], {"node-name": node_name})}, group=None)
        await s.register(squatter, id="squat")
        b = await s.submit("squat")
        await s.job_running(b.id, "work")
        assert (await s.job(b.id, "work")).agent == agent

        retried = await s.rt.retry(a.id, job="test")
        assert retried.execute_count == 2
        await s.until_waiting(a.id, "test")
        await trio.sleep(60)
        assert (await s.job(a.id, "test")).status == "QUEUE"
        s.probe.release(b.id)
        done = await s.finished(a.id)
        assert done.status == "SUCCEED", describe(done)
        assert [t.agent for t in done.job("test").attempts] == [agent, agent], describe(done)
        await s.finished(b.id)
        await s.assert_quiet()


@pytest.mark.trio
async def test_retrying_a_chain_job_whose_agent_is_gone_fails_saying_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """compile's node is removed after A failed at test; retrying test ends
    the job FAILED (not a queue timeout) with a reason saying the agent is
    gone, and nothing stays held."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(FINISHED_CHAIN, id="fchain")
        a = await s.submit("fchain")
        failed = await s.finished(a.id)
        agent, node_name = failed.job("compile").agent, failed.job("compile").node
        await s.rt.remove_node(node_name)

        async def gone() -> bool:
            return await s.node(node_name) is None

        await s.poll(gone, f"node {node_name} removed")
        await s.rt.retry(a.id, job="test")
        done = await s.finished(a.id, timeout=30)
        assert done.status == "FAILED", describe(done)
        test = done.job("test")
        assert len(test.attempts) == 2 and test.attempts[-1].status == "FAILED", describe(done)
        reason = (test.attempts[-1].reason or test.reason or "").lower()
        assert any(word in reason for word in ("gone", "removed", "no longer")), reason
        assert "agent" in reason or agent.lower() in reason, reason
        await s.assert_quiet()


# --- behaviour 10: context and workspace ---------------------------------------------------


@pytest.mark.trio
async def test_exports_and_workspace_follow_the_chain(autojump_clock: trio.testing.MockClock) -> None:
    """compile exports CHAIN and writes a file; test (lock compile, next
    stage) sees both on the same agent. A job of the same build outside the
    chain, on another node, sees neither."""
    source = pipeline(
        "ctx",
        stages=[
            (
                "build",
                {
                    "compile": job(
                        [export_step("exp", "CHAIN", "from-compile"), touch_step("art", "artifact.txt")],
                        {"node-name": "n1"},
                    )
                },
            ),
            ("test", {"test": job([peek_step()], LOCK), "elsewhere": job([peek_step()], {"node-name": "n2"})}),
        ],
        group=None,
    )
    config = dispatch_config([node("n1", 1), node("n2", 1)])
    async with dispatch_scenario(config) as s:
        await s.register(source, id="ctx")
        a = await s.submit("ctx")
        done = await s.finished(a.id)
        assert done.status == "SUCCEED", describe(done)
        (peek,) = s.probe.peeks_of(a.id, "test")
        assert peek.env.get("CHAIN") == "from-compile", peek.env
        assert "artifact.txt" in peek.files, peek.files
        assert peek.agent == done.job("compile").agent == done.job("test").agent
        (outside,) = s.probe.peeks_of(a.id, "elsewhere")
        assert outside.agent != peek.agent, outside
        assert "CHAIN" not in outside.env and "artifact.txt" not in outside.files, outside
        await s.assert_quiet()


RETRY_CTX = pipeline(
    "rctx",
    stages=[
        ("build", {"compile": [export_step("base", "BASE", "1")]}),
        (
            "test",
            {
                "test": job(
                    [
                        peek_step("peek"),
                        export_step("late", "LATE", "attempt-1"),
                        export_step("stale", "STALE", "from-failed-attempt", fails=1),
                    ],
                    LOCK,
                ),
                "other": [hold_step()],
            },
        ),
    ],
    group=None,
)


@pytest.mark.trio
async def test_a_job_retry_in_a_running_build_sees_the_snapshot_not_the_failed_attempt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """test's first attempt exports LATE (step succeeds) and STALE (the step
    exports, then fails). Its job retry, on the same agent, starts from the
    snapshot taken before attempt 1: BASE (from compile) but neither LATE
    nor STALE."""
    async with dispatch_scenario(_one_agent_nodes("n1", "n2")) as s:
        await s.register(RETRY_CTX, id="rctx")
        a = await s.submit("rctx")
        info = await s.until_job_status(a.id, "test", "FAILED")
        assert info.status == "RUNNING", describe(info)
        await s.rt.retry(a.id, job="test")
        info = await s.until_job_status(a.id, "test", "SUCCEED")
        first, second = s.probe.peeks_of(a.id, "test")
        assert first.env.get("BASE") == "1" and "LATE" not in first.env, first.env
        assert second.env.get("BASE") == "1", second.env
        assert "LATE" not in second.env, "the retry saw an export of the failed attempt"
        assert "STALE" not in second.env, "the retry saw an export of the failed step"
        assert second.agent == first.agent == info.job("compile").agent
        s.probe.release(a.id)
        assert (await s.finished(a.id)).status == "SUCCEED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_finished_builds_retry_sees_its_snapshot_not_the_build_that_used_the_agent_since(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A fails at test; build B of another pipeline then runs on the same
    (only) agent, exporting JUNK and writing a file. Retrying A's test
    restores A's snapshot: BASE, not LATE/STALE from the failed attempt,
    not JUNK, and not B's file."""
    source = pipeline(
        "rctx2",
        stages=[
            ("build", {"compile": [export_step("base", "BASE", "1")]}),
            (
                "test",
                {
                    "test": job(
                        [
                            peek_step("peek"),
                            export_step("late", "LATE", "attempt-1"),
                            export_step("stale", "STALE", "from-failed-attempt", fails=1),
                        ],
                        LOCK,
                    )
                },
            ),
        ],
        group=None,
    )
    intruder = pipeline(
        "intruder", {"work": [export_step("junk", "JUNK", "other-build"), touch_step("mess", "intruder.txt")]},
        group=None,
    )
    async with dispatch_scenario(_one_agent_nodes("n1")) as s:
        await s.register(source, id="rctx2")
        await s.register(intruder, id="intruder")
        a = await s.submit("rctx2")
        failed = await s.finished(a.id)
        assert failed.status == "FAILED", describe(failed)
        b = await s.submit("intruder")
        b_done = await s.finished(b.id)
        assert b_done.status == "SUCCEED" and b_done.job("work").agent == failed.job("test").agent

        await s.rt.retry(a.id, job="test")
        done = await s.finished(a.id)
        assert done.status == "SUCCEED", describe(done)
        first, second = s.probe.peeks_of(a.id, "test")
        assert second.env.get("BASE") == "1", second.env
        for stale in ("LATE", "STALE", "JUNK"):
            assert stale not in second.env, (stale, second.env)
        assert "intruder.txt" not in second.files, second.files
        await s.assert_quiet()


@pytest.mark.trio
async def test_a_different_build_on_the_same_agent_gets_a_clean_context_and_workspace(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """On a single agent, build 1 exports SECRET and writes a file in the
    workspace (seen by its own later step); build 2 on the same agent sees
    neither SECRET nor the file."""
    source = pipeline(
        "clean",
        {"work": [peek_step("before"), export_step("secret", "SECRET", "${{ ci.build_id }}"),
                  touch_step("mess", "left-behind.txt"), peek_step("after")]},  # fmt: skip
        group=None,
    )
    async with dispatch_scenario(_one_agent_nodes("n1")) as s:
        await s.register(source, id="clean")
        first = await s.finished((await s.submit("clean")).id)
        second = await s.finished((await s.submit("clean")).id)
        assert first.status == second.status == "SUCCEED"
        assert first.job("work").agent == second.job("work").agent
        before1, after1 = s.probe.peeks_of(first.id)
        before2, after2 = s.probe.peeks_of(second.id)
        assert after1.env.get("SECRET") == first.id and "left-behind.txt" in after1.files, after1
        assert "SECRET" not in before2.env, f"build 2 saw build 1's env: {before2.env.get('SECRET')}"
        assert "left-behind.txt" not in before2.files, f"build 2 found build 1's files: {before2.files}"
        assert after2.env.get("SECRET") == second.id
        await s.assert_quiet()


# --- the same with shell steps (wall clock, no timing) ---------------------------------------


@pytest.mark.trio
async def test_shell_exports_follow_the_chain_and_not_into_another_build() -> None:
    """Shell steps: compile appends ``CHAIN=...`` to ``$SHUNTER_ENV`` and
    writes a file; test (lock compile) sees both; the next build on the only
    agent sees neither; a step that exports and exits 1 leaves nothing for
    the job retry."""
    source = pipeline(
        "sh",
        stages=[
            (
                "build",
                {"compile": [{"id": "make", "run": 'echo "CHAIN=$SHUNTER_BUILD_ID" >> "$SHUNTER_ENV"; echo x > out.txt'}]},
            ),
            (
                "test",
                {
                    "test": job(
                        [
                            peek_step("peek"),
                            {"id": "flaky", "run": 'echo "STALE=1" >> "$SHUNTER_ENV"; test -f second-try'},
                            {"id": "mark", "run": "touch second-try", "if": "FAILURE"},
                        ],
                        LOCK,
                    )
                },
            ),
        ],
        group=None,
    )
    async with dispatch_scenario(_one_agent_nodes("n1"), limit=60) as s:
        await s.register(source, id="sh")
        a = await s.submit("sh")
        failed = await s.finished(a.id, timeout=30)
        assert failed.status == "FAILED", describe(failed)
        await s.rt.retry(a.id, job="test")
        done = await s.finished(a.id, timeout=30)
        assert done.status == "SUCCEED", describe(done)
        first, second = s.probe.peeks_of(a.id, "test")
        assert first.env.get("CHAIN") == a.id and "out.txt" in first.files, first
        assert second.env.get("CHAIN") == a.id, second.env
        assert "STALE" not in second.env, second.env

        b = await s.submit("sh")
        b_failed = await s.finished(b.id, timeout=30)
        (b_peek,) = s.probe.peeks_of(b.id, "test")
        assert b_peek.env.get("CHAIN") == b.id, "build B sees its own export, not A's"
        assert "second-try" not in b_peek.files, f"build B found A's files: {b_peek.files}"
        assert b_failed.status == "FAILED"
        await s.assert_quiet()


@pytest.mark.trio
async def test_closing_right_after_a_workspace_clean_is_not_held_up_by_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Build 1 leaves 3000 files in the only agent's workspace; build 2 on
    that agent starts with it empty, and the runtime closed right after
    ends within 60 virtual seconds. (A close that waits for a clean-up
    thread looks idle to the autojump clock, which then jumps to the next
    deadline: the runtime would seem to hang; this makes the flake of the
    other scenarios deterministic.)"""

    async def litter(step: Any) -> None:
        for index in range(int(step.with_["count"])):
            with open(f"{step.workspace}/litter-{index}", "w", encoding="utf-8") as out:
                out.write("x")

    source = pipeline(
        "litter", {"work": [peek_step("before"), {"id": "litter", "uses": "litter@1", "with": {"count": 3000}}]},
        group=None,
    )
    outer = trio.current_time()
    async with dispatch_scenario(_one_agent_nodes("n1"), limit=60, actions={"litter": litter}) as s:  # 60 s at most
        await s.register(source, id="litter")
        first = await s.finished((await s.submit("litter")).id)
        second = await s.finished((await s.submit("litter")).id)
        assert first.status == second.status == "SUCCEED", describe(second)
        (before,) = s.probe.peeks_of(second.id)
        assert before.files == [], f"{len(before.files)} files left by build 1"
    assert trio.current_time() - outer < 60
