"""Durable state (docs/design.md §10): what a runtime on a state directory brings back after a restart.

Each test opens a runtime on a temporary state directory, does something,
stops it (gracefully, with a tiny ``drain-timeout``: what still runs is
interrupted exactly as a ``kill -9`` would leave it, since the journal is
sealed first), reopens it on the same directory and checks what came back.
The crash test with a real server and ``kill -9`` is ``test_crash.py``.
"""

from __future__ import annotations

import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import runtime
from actors.model.errors import Conflict, Overloaded


def settings(state: Path, **extra: Any) -> dict[str, Any]:
    return {"state-dir": str(state), "drain-timeout": 0.05,
            "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}], **extra}  # fmt: skip


QUICK = """
name: quick
steps:
  - id: hello
    run: echo "hello from ${{ ci.build_num }}"
"""

SLOW = """
name: slow
concurrency: {group: slow-group, max-parallel: 1, queue-length: 10, queue-timeout-minutes: 60}
steps:
  - id: nap
    run: sleep 30
"""


@pytest.mark.trio
async def test_in_memory_unless_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with runtime.open_runtime() as rt:
        await rt.register_pipeline(QUICK)
        await rt.wait((await rt.submit("quick")).id, timeout=10)
    assert list(tmp_path.iterdir()) == []
    async with runtime.open_runtime() as rt:
        assert await rt.pipelines() == []


@pytest.mark.trio
async def test_pipelines_builds_logs_numbers_and_events_come_back(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(QUICK)
        await rt.register_pipeline({"name": "mapped", "steps": [{"uses": "echo", "with": {"text": "from a mapping"}}]})
        first = await rt.wait((await rt.submit("quick")).id, timeout=10)
        second = await rt.wait((await rt.submit("quick")).id, timeout=10)
        mapped = await rt.wait((await rt.submit("mapped")).id, timeout=10)
        last_event = (await rt.events())[-1].id
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        assert sorted(p.id for p in await rt.pipelines()) == ["mapped", "quick"]
        assert (await rt.pipeline("quick")).source == QUICK
        assert await rt.build(first.id) == first
        assert await rt.build(second.id) == second
        assert await rt.build(mapped.id) == mapped
        assert "hello from 2" in await rt.logs(second.id, job="job-1", step="hello")
        assert "from a mapping" in await rt.logs(mapped.id)
        assert [b.id for b in await rt.builds("quick")] == ["quick.2", "quick.1"]  # newest first
        third = await rt.submit("quick")
        assert third.number == 3  # numbering continues
        await rt.wait(third.id, timeout=10)
        assert min(event.id for event in await rt.events()) > last_event  # event ids are never reused


@pytest.mark.trio
async def test_stats_after_a_restart_count_the_finished_builds_of_the_store(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(QUICK)
        await rt.register_pipeline({"name": "broken", "steps": [{"uses": "fail", "with": {"message": "no"}}]})
        for pipeline in ("quick", "quick", "broken"):
            await rt.wait((await rt.submit(pipeline)).id, timeout=10)
        before = await rt.stats()
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        after = await rt.stats()
        assert after.builds_finished == before.builds_finished == 3
        assert after.builds_by_status == before.builds_by_status == {"SUCCEED": 2, "FAILED": 1}
        await rt.wait((await rt.submit("quick")).id, timeout=10)
        assert (await rt.stats()).builds_by_status == {"SUCCEED": 3, "FAILED": 1}


@pytest.mark.trio
async def test_an_answer_means_the_effect_is_committed(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(SLOW)
        with sqlite3.connect(tmp_path / "shunter.db") as db:
            assert db.execute("SELECT id FROM pipelines").fetchall() == [("slow",)]
            running = await rt.submit("slow")
            queued = await rt.submit("slow")
            stored = dict(db.execute("SELECT id, status FROM builds").fetchall())
            assert stored == {running.id: "RUNNING", queued.id: "QUEUE"}
            await rt.cancel(queued.id)
            assert db.execute("SELECT status FROM builds WHERE id = ?", (queued.id,)).fetchone() == ("CANCELED",)
            await rt.add_node("n2", agents=3, labels=["linux"])
            assert db.execute("SELECT name, pool, agents, labels FROM nodes").fetchall() == [("n2", "default", 3, '["linux"]')]
            await rt.remove_node("n2")
            assert db.execute("SELECT * FROM nodes").fetchall() == []


@pytest.mark.trio
async def test_queued_builds_come_back_in_order_with_their_deadlines(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(SLOW)
        other = SLOW.replace("name: slow", "name: other")  # a second pipeline in the same group
        await rt.register_pipeline(other)
        submitted = [await rt.submit(pipeline) for pipeline in ("slow", "slow", "other", "slow", "other")]
        before = {entry.build_id: entry for entry in (await rt.groups())[0].queue}
    assert rt.interrupted == [submitted[0].id]
    assert rt.left_queued and set(rt.left_queued) == {b.id for b in submitted[1:]}
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        # the interrupted build ends and releases its slot: the head of the queue runs now
        ended = await rt.wait(submitted[0].id, timeout=10)
        assert ended.status == "FAILED" and "interrupted" in (ended.reason or "")
        with trio.fail_after(30):
            while (await rt.build(submitted[1].id)).status != "RUNNING":
                await trio.sleep(0.01)
        group = (await rt.groups())[0]
        assert group.name == "slow-group" and group.running == [submitted[1].id]
        assert [entry.build_id for entry in group.queue] == [b.id for b in submitted[2:]]
        for entry in group.queue:
            assert entry.deadline == before[entry.build_id].deadline  # the original deadline, not a new one
            assert entry.queued_at == before[entry.build_id].queued_at


@pytest.mark.trio
async def test_a_queued_build_past_its_deadline_times_out_at_start(tmp_path: Path) -> None:
    short = SLOW.replace("queue-timeout-minutes: 60", "queue-timeout-minutes: 0.002")  # 0.12 s
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(short)
        await rt.submit("slow")
        waiting = await rt.submit("slow")
    await trio.sleep(0.2)  # the server is down while the deadline passes
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        build = await rt.build(waiting.id)
        assert build.status == "QUEUE_TIMEOUT"
        assert "'slow-group'" in (build.reason or "") and "server was down" in (build.reason or "")


@pytest.mark.trio
async def test_a_running_job_is_retried_when_its_step_allows_else_interrupted(tmp_path: Path) -> None:
    retried = """
name: retried
steps:
  - id: work
    run: test -e "$MARK" || { touch "$MARK"; sleep 30; }
    retry-times: 1
"""
    mark = tmp_path / "mark"
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(retried.replace("$MARK", str(mark)))
        await rt.register_pipeline(SLOW)
        a = await rt.submit("retried")
        b = await rt.submit("slow")
        with trio.fail_after(30):
            while not mark.exists() or (await rt.build(b.id)).stages[0].jobs[0].status != "RUNNING":
                await trio.sleep(0.01)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        done = await rt.wait(a.id, timeout=30)
        assert done.status == "SUCCEED"
        job = done.stages[0].jobs[0]
        assert [attempt.status for attempt in job.attempts] == ["HEARTBEAT_TIMEOUT", "SUCCEED"]
        assert job.attempts[0].reason == "interrupted: the server stopped while it ran"
        # b's group takes it back before it resumes, so it may end after a's retry: wait for it
        ended = await rt.wait(b.id, timeout=30)
        assert ended.status == "FAILED"
        assert ended.stages[0].jobs[0].reason == "interrupted: the server stopped while it ran"


@pytest.mark.trio
async def test_nodes_added_over_the_api_come_back(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.add_node("n2", pool="big", agents=3, labels=["gpu"])
        await rt.add_node("n3")
        await rt.remove_node("n3")
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        nodes = {node.name: node for node in await rt.nodes()}
        assert set(nodes) == {"n1", "n2"}
        assert len(nodes["n2"].agents) == 3 and nodes["n2"].labels == ["gpu"] and nodes["n2"].pool == "big"


@pytest.mark.trio
async def test_finished_builds_leave_memory_and_are_read_from_the_store(tmp_path: Path) -> None:
    from runtime import _state

    count = _state.FINISHED_CACHE + 20
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline({"name": "tiny", "steps": [{"id": "s", "uses": "fail", "with": {"message": "no"}}]})
        ids = [(await rt.submit("tiny")).id for _ in range(count)]
        await rt.wait(ids[-1], timeout=30)
        ref = rt._pipeline("tiny")
        for _ in range(100):  # the last commits' acknowledgements let the cache shrink
            await trio.sleep(0.01)
        held = len(ref._cell.actor.builds)  # type: ignore[attr-defined]
        assert held <= _state.FINISHED_CACHE + 5
        oldest = await rt.build(ids[0])
        assert oldest.status == "FAILED" and oldest.stages[0].jobs[0].steps[0].reason
        assert "no" in await rt.logs(ids[0]) or (await rt.logs(ids[0])).startswith("===")
        assert len(await rt.builds("tiny")) == count
        retried = await rt.retry(ids[0])  # read back, then retried as usual
        assert retried.execute_count == 2
        with pytest.raises(Conflict):
            await rt.cancel(ids[1])


@pytest.mark.trio
async def test_a_stop_drains_and_refuses_new_builds(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path, **{"drain-timeout": 5})) as rt:
        await rt.register_pipeline(QUICK.replace('echo "hello', 'sleep 0.3; echo "hello'))
        started = await rt.submit("quick")
        closing = time.monotonic()
    assert time.monotonic() - closing < 4  # it waited for the build, not for the whole drain-timeout
    assert rt.interrupted == [] and rt.left_queued == []
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        assert (await rt.build(started.id)).status == "SUCCEED"
        rt._draining = True
        with pytest.raises(Overloaded):
            await rt.submit("quick")


@pytest.mark.trio
async def test_logs_are_files_capped_per_attempt(tmp_path: Path) -> None:
    chatty = """
name: chatty
steps:
  - id: talk
    run: for i in $(seq 1 5000); do echo "line $i of a chatty step"; done
"""
    async with runtime.open_runtime(settings(tmp_path, **{"max-log-bytes": 4096})) as rt:
        await rt.register_pipeline(chatty)
        build = await rt.wait((await rt.submit("chatty")).id, timeout=20)
        assert build.status == "SUCCEED"
        text = await rt.logs(build.id)
        assert "line 1 of" in text and "line 5000" not in text
        assert "log truncated: it reached max-log-bytes (4096)" in text
        assert len(text) < 4096 + 300
    files = list((tmp_path / "logs" / "chatty" / "1").iterdir())
    assert len(files) == 1 and files[0].stat().st_size < 4096 + 200


@pytest.mark.trio
async def test_two_servers_cannot_share_a_state_directory(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)):
        with pytest.raises(Exception, match="in use by shunter pid"):
            async with runtime.open_runtime(settings(tmp_path)):
                pass


@pytest.mark.trio
async def test_a_replaced_definition_keeps_running_builds_on_the_old_one(tmp_path: Path) -> None:
    """A running build keeps the definition it started with, across a restart too."""
    v1 = "name: app\nsteps:\n  - id: one\n    run: sleep 30\n"
    v2 = "name: app\nsteps:\n  - id: two\n    run: 'true'\n"
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(v1)
        old = await rt.submit("app")
        await rt.register_pipeline(v2)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        assert (await rt.pipeline("app")).source == v2
        ended = await rt.wait(old.id, timeout=10)
        assert [step.id for step in ended.stages[0].jobs[0].steps] == ["one"]
        new = await rt.wait((await rt.submit("app")).id, timeout=10)
        assert [step.id for step in new.stages[0].jobs[0].steps] == ["two"] and new.number == 2


@pytest.mark.trio
async def test_work_and_temp_directories_of_a_killed_run_are_cleaned_at_start(tmp_path: Path) -> None:
    left = tmp_path / "work" / "default" / "n1" / "shunter-step-left-by-kill-9"
    left.mkdir(parents=True)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        assert not left.exists()
        await rt.register_pipeline("name: where\nsteps:\n  - run: echo \"$SHUNTER_ENV\"\n")
        build = await rt.wait((await rt.submit("where")).id, timeout=10)
        assert f"{tmp_path}/work/default/n1/shunter-step-" in await rt.logs(build.id)  # under the state dir
    in_memory = Path(tempfile.gettempdir()) / "shunter-pid99999999-left"  # a process that is gone
    in_memory.mkdir(exist_ok=True)
    async with runtime.open_runtime():
        assert not in_memory.exists()


@pytest.mark.trio
async def test_retention_removes_old_builds_and_their_logs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from actors.state import journal

    monkeypatch.setattr(journal, "PRUNE_EVERY", 0.0)  # a pass after every commit
    keep = {"retention": {"days": None, "builds-per-pipeline": 2}}
    async with runtime.open_runtime(settings(tmp_path, **keep)) as rt:
        await rt.register_pipeline(QUICK)
        ids = [(await rt.wait((await rt.submit("quick")).id, timeout=10)).id for _ in range(5)]
        await rt.submit("quick")  # one more commit: the pass after it sees all five finished
        with trio.fail_after(30):
            while (tmp_path / "logs" / "quick" / "1").exists() or (tmp_path / "logs" / "quick" / "3").exists():
                await trio.sleep(0.01)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        kept = [build.id for build in await rt.builds("quick") if build.status == "SUCCEED"]
        assert set(ids[:3]).isdisjoint(kept) and ids[4] in kept and len(kept) <= 3  # the newest two (and a late one)
        assert (tmp_path / "logs" / "quick" / "5").exists()


@pytest.mark.trio
async def test_a_restart_applies_retention_at_once(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(QUICK)
        ids = [(await rt.wait((await rt.submit("quick")).id, timeout=10)).id for _ in range(4)]
    keep = {"retention": {"days": None, "builds-per-pipeline": 2}}
    async with runtime.open_runtime(settings(tmp_path, **keep)) as rt:
        with trio.fail_after(30):  # not the minute between passes: the first one comes with the start
            while (tmp_path / "logs" / "quick" / "2").exists():
                await trio.sleep(0.01)
        assert sorted(build.id for build in await rt.builds("quick")) == ids[2:]
        with pytest.raises(runtime.NotFound):
            await rt.build(ids[0])


@pytest.mark.anyio
async def test_a_restart_on_both_backends_streams_logs_over_http(tmp_path: Path) -> None:
    """trio and asyncio alike: a build, its log streamed by GET …/logs from the file, after a restart."""
    import httpx

    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(QUICK)
        build = await rt.wait((await rt.submit("quick")).id, timeout=10)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        transport = httpx.ASGITransport(app=rt.asgi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            answer = await client.get(f"/v1/builds/{build.id}/logs")
            assert answer.status_code == 200 and "hello from 1" in answer.text
            assert "content-length" not in answer.headers  # streamed from the file
            assert (await client.get("/v1/builds/quick.9/logs")).status_code == 404
            assert (await client.get(f"/v1/builds/{build.id}")).json()["status"] == "SUCCEED"


@pytest.mark.trio
async def test_in_memory_a_configured_drain_lets_running_builds_finish(tmp_path: Path) -> None:
    config = {"drain-timeout": 5, "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}]}]}
    async with runtime.open_runtime(config) as rt:
        await rt.register_pipeline(SLOW.replace("sleep 30", "sleep 0.3"))
        running = await rt.submit("slow")
        queued = await rt.submit("slow")  # waits in the group: not admitted during the drain
    assert rt.interrupted == [queued.id]  # in memory what is left is cancelled, as before
    async with runtime.open_runtime(config):
        pass  # nothing comes back in memory
    assert running.id not in rt.interrupted


@pytest.mark.trio
async def test_a_lock_chain_holds_its_agent_again_after_a_restart(tmp_path: Path) -> None:
    """compile ran on an agent that deploy (lock-resource-with: compile) must use; deploy waits for a
    job of its stage. Across a restart that agent stays the chain's: another build's jobs go to the
    other agent, and deploy runs on compile's (docs/design.md §3.1 behaviour 9)."""
    gate = tmp_path / "gate"
    chain = f"""
name: chain
stages:
  - name: one
    jobs:
      compile: {{steps: [{{uses: noop}}]}}
  - name: two
    jobs:
      hold: {{steps: [{{run: "while [ ! -e {gate} ]; do sleep 0.05; done", retry-times: 1}}]}}
      deploy: {{depend-on: [hold], runs-on: {{lock-resource-with: compile}}, steps: [{{uses: noop}}]}}
"""
    three = settings(tmp_path, pools=[{"name": "default", "nodes": [{"name": "n1", "agents": 3}]}])
    async with runtime.open_runtime(three) as rt:
        await rt.register_pipeline(chain)
        await rt.register_pipeline(QUICK)
        build = await rt.submit("chain")
        with trio.fail_after(30):
            while (info := await rt.build(build.id)).stages[1].jobs[0].status != "RUNNING":
                await trio.sleep(0.01)
        locked = info.stages[0].jobs[0].agent
        assert locked is not None
    async with runtime.open_runtime(three) as rt:  # hold runs again on one agent: one is left for others
        with trio.fail_after(30):
            while not any(agent.locked_by == build.id for node in await rt.nodes() for agent in node.agents):
                await trio.sleep(0.01)
        assert [agent.name for node in await rt.nodes() for agent in node.agents
                if agent.locked_by == build.id] == [locked]  # fmt: skip
        others = [await rt.wait((await rt.submit("quick")).id, timeout=30) for _ in range(4)]
        assert {other.stages[0].jobs[0].agent for other in others}.isdisjoint({locked}), "the chain's agent stayed its"
        gate.touch()
        done = await rt.wait(build.id, timeout=30)
        assert done.status == "SUCCEED", done
        assert done.stages[1].jobs[1].agent == locked
        assert not any(agent.locked_by for node in await rt.nodes() for agent in node.agents), "unlocked at the end"
