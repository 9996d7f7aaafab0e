"""Remote sessions that outlive a server restart, lost lease answers, and an agent process that
registers again with other ``--agents`` or ``--labels`` (docs/design.md §11), spoken in-process.

The test plays the ``shunter agent`` process, as in ``test_agent_protocol.py``.
A restart is a graceful stop of the runtime with a tiny ``drain-timeout``
(what still runs is left exactly as a ``kill -9`` leaves it: the journal is
sealed first) and a new runtime on the same state directory. Those tests run
on the real clock, as tests/scenarios/test_durable.py does: the store
commits in worker threads, which the MockClock would jump over. Real server
and agent processes: tests/runtime/remote/test_agent_restarts.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from .conftest import Api, api
from .test_agent_protocol import CONFIG, PINNED, _done, _lease, _node, _register

LABELLED = """
version: v3.0
name: labelled
jobs:
  j:
    runs-on: {labels: [gpu]}
    steps: [{id: one, uses: noop@1}]
"""


def _durable(tmp_path: Path, timeout: float = 600) -> dict[str, Any]:
    return {**CONFIG, "heartbeat-interval": 0.2, "heartbeat-timeout": timeout, "state-dir": str(tmp_path / "state"),
            "drain-timeout": 0.05}  # fmt: skip


def _first_half(token: dict[str, Any]) -> dict[str, Any]:
    """The attempt started and its first step printed a line; the step still runs."""
    return {"token": token, "records": [
        {"type": "started", "context": {}, "time": 1.0},
        {"type": "step_start", "index": 0, "time": 1.0},
        {"type": "log", "index": 0, "lines": ["before the restart"]}]}  # fmt: skip


def _second_half(token: dict[str, Any]) -> dict[str, Any]:
    return {"token": token, "records": [
        {"type": "log", "index": 0, "lines": ["after the restart"]},
        {"type": "step_end", "index": 0, "status": "SUCCEED", "reason": None, "exit_code": 0, "outputs": {},
         "exported_env": {}, "time": 2.0},
        {"type": "step_start", "index": 1, "time": 2.0},
        {"type": "step_end", "index": 1, "status": "SUCCEED", "reason": None, "exit_code": None, "outputs": {},
         "exported_env": {}, "time": 2.0},
        {"type": "ended", "status": "SUCCEED", "reason": None, "time": 2.0}]}  # fmt: skip


async def _running_before_a_restart(a: Api, pipeline: str = PINNED) -> tuple[dict[str, Any], dict[str, Any]]:
    """A build whose job runs on m1/0, mid-step; returns (build, its job's assignment)."""
    session = await _register(a)
    await a.put_pipeline("remote", pipeline)
    build = await a.submit("remote")
    [job] = (await _lease(a, session))["jobs"]
    await _lease(a, session, wait=0, running=[job["token"]], reports=[_first_half(job["token"])])
    return build, job


async def _stats(a: Api) -> tuple[int, ...]:
    stats = (await a.client.get("/v1/stats")).json()
    return stats["jobs_running"], stats["slots_held"], stats["agents_busy"], stats["builds_running"]


@pytest.mark.trio
async def test_an_attempt_carries_on_across_a_restart_when_its_agent_comes_back(
        tmp_path: Path) -> None:  # fmt: skip
    async with api(_durable(tmp_path)) as a:
        build, job = await _running_before_a_restart(a)
    async with api(_durable(tmp_path)) as a:
        node = await _node(a, "m1")
        # back disconnected, its agent holding the attempt (and its slot) until the process says
        assert (node["kind"], node["connected"]) == ("remote", False)
        assert [(agent["name"], agent["status"]) for agent in node["agents"]] == [("m1/0", "busy")]
        assert await _stats(a) == (1, 1, 1, 1)
        running = (await a.client.get(f"/v1/builds/{build['id']}")).json()
        assert running["stages"][0]["jobs"][0]["status"] == "RUNNING"
        session = await _register(a, running=[{"agent": 0, "token": job["token"]}])
        assert (await _node(a, "m1"))["connected"] is True
        reply = await _lease(a, session, wait=0, running=[job["token"]], reports=[_second_half(job["token"])])
        assert reply["stale"] == [] and reply["jobs"] == []
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        assert done["status"] == "SUCCEED" and done["execute_count"] == 1
        job_info = done["stages"][0]["jobs"][0]
        assert [(t["status"], t["agent"]) for t in job_info["attempts"]] == [("SUCCEED", "m1/0")]  # counted once
        assert len(job_info["steps"][0]["attempts"]) == 1
        log = (await a.client.get(f"/v1/builds/{build['id']}/logs")).text
        assert "before the restart\nafter the restart\n" in log  # one step attempt's log, written on
        assert await _stats(a) == (0, 0, 0, 0)
        # the agent takes new work on its new session
        second = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        await _lease(a, session, reports=[_done(job["token"])])
        assert (await a.until(second["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"


@pytest.mark.trio
async def test_an_agent_not_back_within_heartbeat_timeout_of_the_start_loses_its_attempt(
        tmp_path: Path) -> None:  # fmt: skip
    """Not back in time: the attempt ends HEARTBEAT_TIMEOUT, saying why, and is retried when its
    step allows; the agent that comes back later is told its old attempt is stale and takes the retry."""
    pipeline = PINNED.replace("{id: one, run: echo one}", "{id: one, run: echo one, retry-times: 1}")
    async with api(_durable(tmp_path)) as a:
        build, old = await _running_before_a_restart(a, pipeline)
    async with api(_durable(tmp_path, timeout=1.5)) as a:
        start = trio.current_time()
        assert (await _node(a, "m1"))["agents"][0]["status"] == "busy"
        with trio.fail_after(10):
            while (await a.client.get(f"/v1/builds/{build['id']}")).json()["stages"][0]["jobs"][0]["attempts"][0][
                    "status"] == "RUNNING":  # fmt: skip
                await trio.sleep(0.05)
        assert 1 <= trio.current_time() - start <= 3
        attempt = (await a.client.get(f"/v1/builds/{build['id']}")).json()["stages"][0]["jobs"][0]["attempts"][0]
        assert attempt["status"] == "HEARTBEAT_TIMEOUT"
        assert "server restarted" in attempt["reason"] and "heartbeat-timeout 1.5s" in attempt["reason"]
        assert (await _node(a, "m1"))["agents"] == []
        session = await _register(a, running=[{"agent": 0, "token": old["token"]}])  # too late
        reply = await _lease(a, session, running=[old["token"]])
        assert reply["stale"] == [old["token"]]
        [retry] = reply["jobs"] or (await _lease(a, session))["jobs"]
        assert retry["token"]["attempt"] == 2
        await _lease(a, session, reports=[_done(retry["token"])])
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        assert [t["status"] for t in done["stages"][0]["jobs"][0]["attempts"]] == ["HEARTBEAT_TIMEOUT", "SUCCEED"]
        assert await _stats(a) == (0, 0, 0, 0)


@pytest.mark.trio
async def test_an_agent_back_without_the_attempt_ends_it_at_once(
        tmp_path: Path) -> None:  # fmt: skip
    """The agent process restarted too (it says it runs nothing): no waiting for the timeout."""
    async with api(_durable(tmp_path)) as a:
        build, old = await _running_before_a_restart(a)
    async with api(_durable(tmp_path)) as a:
        start = trio.current_time()
        session = await _register(a)
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        assert trio.current_time() - start < 10
        attempt = done["stages"][0]["jobs"][0]["attempts"][0]
        assert attempt["status"] == "HEARTBEAT_TIMEOUT" and f"without attempt {build['id']}/j#1" in attempt["reason"]
        assert [agent["name"] for agent in (await _node(a, "m1"))["agents"]] == ["m1/0"]
        assert (await _lease(a, session, wait=0, reports=[_second_half(old["token"])]))["stale"] == [old["token"]]
        assert await _stats(a) == (0, 0, 0, 0)


@pytest.mark.trio
async def test_a_lost_lease_answer_is_sent_again_with_the_same_token(autojump_clock: trio.testing.MockClock) -> None:
    """At least once: a lease that does not name an assignment sent before gets it again; once a
    request names it (running, or a report), it is not sent again."""
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]  # the answer "never reached the agent"
        start = trio.current_time()
        [again] = (await _lease(a, session, running=[]))["jobs"]
        assert again == job and trio.current_time() - start < 0.1
        assert (await _lease(a, session, wait=0, running=[job["token"]]))["jobs"] == []
        assert (await _lease(a, session, wait=0, running=[job["token"]]))["jobs"] == []
        await _lease(a, session, reports=[_done(job["token"])])
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        assert [t["status"] for t in done["stages"][0]["jobs"][0]["attempts"]] == ["SUCCEED"]


@pytest.mark.trio
async def test_a_lease_answer_lost_to_a_parked_poll_goes_with_the_next_one(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    """The job arrives while a poll is parked, and that poll's answer is lost (its client gave up):
    the next poll gets the job, not an empty answer."""
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        async with trio.open_nursery() as nursery:
            async def abandoned_poll() -> None:
                with trio.move_on_after(0.5):
                    await _lease(a, session, wait=25)

            nursery.start_soon(abandoned_poll)
            await trio.sleep(0.1)
            build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        await _lease(a, session, reports=[_done(job["token"])])
        assert (await a.until(build["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"


@pytest.mark.trio
async def test_registering_again_with_more_agents_and_other_labels_changes_the_node(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    async with api(CONFIG) as a:
        session = await _register(a, labels=["linux"])
        await a.put_pipeline("remote", PINNED)
        await a.put_pipeline("labelled", LABELLED)
        first = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        waiting = await a.submit("labelled")  # no node has the label gpu
        # the process restarts with two agents and the label gpu; its running attempt goes on
        session = await _register(a, agents=2, labels=["gpu"], running=[{"agent": 0, "token": job["token"]}])
        assert session["agents"] == ["m1/0", "m1/1"]
        node = await _node(a, "m1")
        assert node["labels"] == ["gpu"]
        assert [(agent["name"], agent["status"]) for agent in node["agents"]] == [("m1/0", "busy"), ("m1/1", "busy")]
        [placed] = (await _lease(a, session, running=[job["token"]]))["jobs"]
        assert placed["agent"] == 1 and placed["token"]["build_id"] == waiting["id"]
        await _lease(a, session, wait=0, reports=[_done(job["token"]), {"token": placed["token"], "records": [
            {"type": "started", "context": {}, "time": 1.0},
            {"type": "step_start", "index": 0, "time": 1.0},
            {"type": "step_end", "index": 0, "status": "SUCCEED", "reason": None, "exit_code": None,
             "outputs": {}, "exported_env": {}, "time": 1.0},
            {"type": "ended", "status": "SUCCEED", "reason": None, "time": 1.0}]}])  # fmt: skip
        assert (await a.until(first["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
        assert (await a.until(waiting["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
        changes = [event.data for event in await a.rt.events() if event.kind == "node" and event.status == "CHANGED"]
        assert changes[-1]["labels"] == ["gpu"] and changes[-1]["agents"] == ["m1/0", "m1/1"]


@pytest.mark.trio
async def test_registering_again_with_fewer_agents_retires_the_others(autojump_clock: trio.testing.MockClock) -> None:
    """Agents past the new count leave; one that ran an attempt the new process cannot have loses it."""
    async with api(CONFIG) as a:
        session = await _register(a, agents=3)
        await a.put_pipeline("remote", PINNED)
        builds = [await a.submit("remote"), await a.submit("remote")]
        jobs = (await _lease(a, session))["jobs"]
        jobs += [] if len(jobs) == 2 else (await _lease(a, session, running=[jobs[0]["token"]]))["jobs"]
        assert sorted(job["agent"] for job in jobs) == [0, 1]
        on_1 = next(job for job in jobs if job["agent"] == 1)
        on_0 = next(job for job in jobs if job["agent"] == 0)
        session = await _register(a, agents=1, running=[{"agent": 0, "token": on_0["token"]},
                                                        {"agent": 1, "token": on_1["token"]}])  # fmt: skip
        assert session["agents"] == ["m1/0"]
        node = await _node(a, "m1")
        assert [(agent["name"], agent["status"]) for agent in node["agents"]] == [("m1/0", "busy")]
        lost = await a.until(next(b["id"] for b in builds if b["id"] == on_1["token"]["build_id"]), "FAILED")
        assert lost["stages"][0]["jobs"][0]["attempts"][0]["status"] == "HEARTBEAT_TIMEOUT"
        await _lease(a, session, reports=[_done(on_0["token"])])
        assert (await a.until(on_0["token"]["build_id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
        assert await _stats(a) == (0, 0, 0, 0)
        assert [agent["name"] for agent in (await _node(a, "m1"))["agents"]] == ["m1/0"]


@pytest.mark.trio
async def test_a_step_whose_start_never_reached_the_store_is_started_by_what_follows(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    """A server killed between applying a step's start and committing it comes back without it:
    the step's log line or end starts it then. A record about a step the job does not have is
    dropped (it used to reach the build)."""
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        end = {"status": "SUCCEED", "reason": None, "exit_code": 0, "outputs": {}, "exported_env": {}, "time": 1.0}
        await _lease(a, session, wait=0, reports=[{"token": job["token"], "records": [
            {"type": "started", "context": {}, "time": 1.0},
            {"type": "step_end", "index": 0, **end},
            {"type": "log", "index": 1, "lines": ["two"]},
            {"type": "step_end", "index": 1, **end},
            {"type": "step_end", "index": 7, **end},
            {"type": "log", "index": 9, "lines": ["nowhere"]},
            {"type": "ended", "status": "SUCCEED", "reason": None, "time": 1.0}]}])  # fmt: skip
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        steps = done["stages"][0]["jobs"][0]["steps"]
        assert done["status"] == "SUCCEED" and [len(step["attempts"]) for step in steps] == [1, 1]
        log = (await a.client.get(f"/v1/builds/{build['id']}/logs")).text
        assert "two" in log and "nowhere" not in log


CHAIN = """
version: v3.0
name: chain
jobs:
  compile:
    runs-on: {node-name: m1}
    steps: [{id: one, run: echo one}]
  package:
    depend-on: [compile]
    runs-on: {lock-resource-with: compile}
    steps: [{id: one, run: echo one}]
"""


def _ran(token: dict[str, Any]) -> dict[str, Any]:
    """The rest of a one-step attempt that has started."""
    return {"token": token, "records": [
        {"type": "step_end", "index": 0, "status": "SUCCEED", "reason": None, "exit_code": 0, "outputs": {},
         "exported_env": {}, "time": 2.0},
        {"type": "ended", "status": "SUCCEED", "reason": None, "time": 2.0}]}  # fmt: skip


@pytest.mark.trio
async def test_an_attempt_taken_back_holds_its_agent_and_its_lock_chain(tmp_path: Path) -> None:
    """After the restart the agent that runs ``compile`` is busy and locked for its build: another
    job goes to the other agent, and ``package`` follows ``compile`` on the same one."""
    async with api(_durable(tmp_path)) as a:
        session = await _register(a, agents=2, labels=["linux"])
        await a.put_pipeline("chain", CHAIN)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("chain")
        [compile_job] = (await _lease(a, session))["jobs"]
        await _lease(a, session, wait=0, running=[compile_job["token"]], reports=[_first_half(compile_job["token"])])
    async with api(_durable(tmp_path)) as a:
        node = await _node(a, "m1")
        assert node["labels"] == ["linux"] and (await a.client.get("/v1/stats")).json()["agents_locked"] == 1
        index = compile_job["agent"]
        session = await _register(a, agents=2, labels=["linux"],
                                  running=[{"agent": index, "token": compile_job["token"]}])  # fmt: skip
        other = await a.submit("remote")
        [job] = (await _lease(a, session, running=[compile_job["token"]]))["jobs"]
        assert job["token"]["build_id"] == other["id"] and job["agent"] == 1 - index
        [package] = (await _lease(a, session, running=[job["token"]], reports=[_ran(compile_job["token"])]))["jobs"]
        assert package["token"]["job_id"] == "package" and package["agent"] == index
        whole = _first_half(package["token"])["records"] + _ran(package["token"])["records"]
        await _lease(a, session, wait=0, reports=[_done(job["token"]), {"token": package["token"], "records": whole}])
        assert (await a.until(build["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
        assert (await a.until(other["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
        assert await _stats(a) == (0, 0, 0, 0)


@pytest.mark.trio
async def test_an_attempt_handed_out_but_not_yet_started_is_asked_again_under_a_new_number(
        tmp_path: Path) -> None:  # fmt: skip
    """The server handed attempt 1 to m1/0 and stopped before hearing that it started: at the next
    start it cannot know whether it runs, so it asks again as attempt 2. The agent that comes back
    still running attempt 1 is told it is stale; attempt 2 runs, and only it counts."""
    async with api(_durable(tmp_path)) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [old] = (await _lease(a, session))["jobs"]
        assert old["token"]["attempt"] == 1
    async with api(_durable(tmp_path)) as a:
        job = (await a.client.get(f"/v1/builds/{build['id']}")).json()["stages"][0]["jobs"][0]
        assert [(t["number"], t["status"]) for t in job["attempts"]] == [(1, "CANCELED"), (2, "QUEUE")]
        assert "before it knew whether a remote agent had started it" in job["attempts"][0]["reason"]
        session = await _register(a, running=[{"agent": 0, "token": old["token"]}])
        reply = await _lease(a, session, wait=0, running=[old["token"]], reports=[_done(old["token"])])
        assert reply["stale"] == [old["token"]], reply
        [new] = reply["jobs"] or (await _lease(a, session))["jobs"]
        assert new["token"]["attempt"] == 2
        await _lease(a, session, wait=0, running=[new["token"]], reports=[_done(new["token"], 2.0)])
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        attempts = done["stages"][0]["jobs"][0]["attempts"]
        assert [(t["number"], t["status"]) for t in attempts] == [(1, "CANCELED"), (2, "SUCCEED")]
        assert [len(step["attempts"]) for step in done["stages"][0]["jobs"][0]["steps"]] == [1, 1]
        assert await _stats(a) == (0, 0, 0, 0)
