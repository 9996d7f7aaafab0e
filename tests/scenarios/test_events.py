"""Group and node events: what concurrency groups and pools publish, in order.

Every event goes through the same hub as build, job and step events (kept in
``rt.events()``, pushed to ``rt.subscribe()``), so these tests read the hub's
history after driving the runtime, and check each event's words, names,
reasons and data, their order, and where they fall against the build and job
events they explain.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

import runtime
from actors.model.info import Event
from actors.model.vocab import EventKind, GroupChange, NodeChange

from .conftest import describe, hold_step, pipeline, scenario
from .dispatch_helpers import dispatch_config, dispatch_scenario, job, node


async def kind_of(rt: Any, kind: EventKind) -> list[Event]:
    return [event for event in await rt.events() if event.kind == kind]


def brief(events: list[Event]) -> list[tuple[Any, ...]]:
    """(status, build or node, data) of each event: the part a test can state exactly."""
    return [(e.status, e.build_id or e.node, e.data) for e in events]


def index_of(events: list[Event], kind: str, status: str, build_id: str) -> int:
    for event in events:
        if (event.kind, event.status, event.build_id) == (kind, status, build_id):
            return event.id
    raise AssertionError(f"no {kind} {status} event of {build_id}: {[(e.kind, e.status, e.build_id) for e in events]}")


# -- groups ------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_group_events_follow_each_build_through_its_group(autojump_clock: trio.testing.MockClock) -> None:
    """max-parallel 1, queue-length 2: admitted, queued at 1 and 2, refused
    when full, withdrawn while queued (a user cancel), released when done,
    the next admitted from the queue; each event names the group, pipeline
    and build and carries the group's counts after the change."""
    async with scenario() as s:
        await s.register(pipeline("lane", queue_length=2), id="lane")
        async with s.rt.subscribe() as live:
            a, b, c = [(await s.submit("lane")).id for _ in range(3)]
            with pytest.raises(runtime.QueueFull):
                await s.submit("lane")
            await s.rt.cancel(c)
            await s.running(a)
            s.probe.release(a)
            await s.running(b)
            s.probe.release(b)
            await s.finished(b)
            seen = []
            while len([e for e in seen if e.kind == EventKind.GROUP]) < 8:
                seen.append(await live.receive())
        events = await s.rt.events()
    group = [e for e in events if e.kind == EventKind.GROUP]
    assert brief(group) == [
        (GroupChange.ADMITTED, a, {"running": 1, "queued": 0}),
        (GroupChange.QUEUED, b, {"running": 1, "queued": 1, "position": 1}),
        (GroupChange.QUEUED, c, {"running": 1, "queued": 2, "position": 2}),
        (GroupChange.REFUSED, "lane.4", {"running": 1, "queued": 2}),
        (GroupChange.DEQUEUED, c, {"running": 1, "queued": 1}),
        (GroupChange.RELEASED, a, {"running": 0, "queued": 1}),
        (GroupChange.ADMITTED, b, {"running": 1, "queued": 0}),
        (GroupChange.RELEASED, b, {"running": 0, "queued": 0}),
    ]
    assert {(e.group, e.pipeline_id, e.job_id, e.node) for e in group} == {("lane", "lane", None, None)}
    refused, withdrawn = group[3], group[4]
    assert "concurrency group 'lane' is full" in (refused.reason or ""), refused
    assert "withdrawn" in (withdrawn.reason or ""), withdrawn
    assert [e.reason for e in group if e.status in ("ADMITTED", "QUEUED", "RELEASED")] == [None] * 6
    # live subscribers get the very same events, in the same order
    assert [e.id for e in seen if e.kind == EventKind.GROUP] == [e.id for e in group]
    # the group decides first, then the build reacts: b ran only after a's place was released
    assert index_of(events, "group", "RELEASED", a) < index_of(events, "group", "ADMITTED", b) \
        < index_of(events, "build", "RUNNING", b)
    assert index_of(events, "build", "CANCELED", c) < index_of(events, "group", "DEQUEUED", c)


@pytest.mark.trio
async def test_a_queue_timeout_is_a_group_event_before_the_builds(autojump_clock: trio.testing.MockClock) -> None:
    """A waiter past queue-timeout-minutes: one QUEUE_TIMEOUT group event per
    waiter, with the reason the build gets, published before the builds end."""
    async with scenario() as s:
        await s.register(pipeline("slow", queue_timeout_minutes=1, queue_length=5), id="slow")
        a = (await s.submit("slow")).id
        waiting = [(await s.submit("slow")).id for _ in range(2)]
        await s.running(a)
        await trio.sleep(61)
        ended = [await s.finished(build_id, timeout=5) for build_id in waiting]
        events = await s.rt.events()
    timed_out = [e for e in events if e.kind == EventKind.GROUP and e.status == GroupChange.QUEUE_TIMEOUT]
    assert [e.build_id for e in timed_out] == waiting
    for event, build in zip(timed_out, ended):
        assert build.status == "QUEUE_TIMEOUT", describe(build)
        assert event.reason == build.reason and "waited 1 minute(s) in concurrency group 'slow'" in event.reason
        assert event.id < index_of(events, "build", "QUEUE_TIMEOUT", build.id)
    assert timed_out[-1].data == {"running": 1, "queued": 0}


@pytest.mark.trio
async def test_cancel_oldest_and_cancel_in_progress_say_who_was_cancelled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """cancel-oldest: the oldest waiter is CANCELED to make room, then the new
    build QUEUED. cancel-in-progress: the newcomer is QUEUED at the head and
    ADMITTED once the cancelled running build has RELEASED its place."""
    async with scenario() as s:
        await s.register(pipeline("room", queue_length=1, on_queue_full="cancel-oldest"), id="room")
        first, oldest, newest = [(await s.submit("room")).id for _ in range(3)]
        await s.register(pipeline("hurry", cancel_in_progress=True), id="hurry")
        running, waiting = [(await s.submit("hurry")).id for _ in range(2)]
        await s.running(waiting)
        events = await s.rt.events()
    room = [e for e in events if e.kind == EventKind.GROUP and e.group == "room"]
    assert [(e.status, e.build_id) for e in room] == [
        ("ADMITTED", first), ("QUEUED", oldest), ("CANCELED", oldest), ("QUEUED", newest)]  # fmt: skip
    assert f"to make room for build {newest}" in (room[2].reason or "") and "cancel-oldest" in (room[2].reason or "")
    hurry = [e for e in events if e.kind == EventKind.GROUP and e.group == "hurry"]
    # with cancel-in-progress every arrival queues at the head, and is admitted once there is room
    assert [(e.status, e.build_id, e.data.get("position")) for e in hurry] == [
        ("QUEUED", running, 1), ("ADMITTED", running, None),
        ("QUEUED", waiting, 1), ("RELEASED", running, None), ("ADMITTED", waiting, None)]  # fmt: skip
    assert index_of(events, "build", "CANCELED", running) < index_of(events, "group", "RELEASED", running)


# -- nodes -------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_nodes_added_drained_and_removed(autojump_clock: trio.testing.MockClock) -> None:
    """Configured and added nodes are ADDED with pool, agents, labels and
    kind; removing an idle node is DRAINING then REMOVED at once; removing
    a busy one is DRAINING (busy 1) and REMOVED only when its job ended."""
    async with dispatch_scenario(dispatch_config([node("n1", 1)])) as s:
        await s.rt.add_node("n2", pool="gpu", agents=2, labels=["cuda", "linux"])
        await s.rt.add_node("n3")
        await s.rt.remove_node("n3")
        await s.register(pipeline("pin", {"work": job([hold_step()], {"pool-name": "gpu"})}, group=None), id="pin")
        b = await s.submit("pin")
        await s.job_running(b.id, "work")
        await s.rt.remove_node("n2")
        before_end = await kind_of(s.rt, EventKind.NODE)
        s.probe.release(b.id)
        await s.finished(b.id)
        await s.poll(lambda: _node_gone(s, "n2"), "n2 to leave")
        events = await s.rt.events()
    nodes = [e for e in events if e.kind == EventKind.NODE]
    assert brief(nodes) == [
        (NodeChange.ADDED, "n1", {"pool": "default", "agents": ["n1/0"], "labels": [], "kind": "local"}),
        (NodeChange.ADDED, "n2", {"pool": "gpu", "agents": ["n2/0", "n2/1"], "labels": ["cuda", "linux"],
                                  "kind": "local"}),
        (NodeChange.ADDED, "n3", {"pool": "default", "agents": ["n3/0"], "labels": [], "kind": "local"}),
        (NodeChange.DRAINING, "n3", {"pool": "default", "busy": 0}),
        (NodeChange.REMOVED, "n3", {"pool": "default"}),
        (NodeChange.DRAINING, "n2", {"pool": "gpu", "busy": 1}),
        (NodeChange.REMOVED, "n2", {"pool": "gpu"}),
    ]  # fmt: skip
    # still there while its job ran (its job's end and its removal both follow the agent's last report)
    assert brief(before_end) == brief(nodes)[:-1]
    assert all(e.build_id is None and e.group is None and e.reason is None for e in nodes)


async def _node_gone(s: Any, name: str) -> bool | None:
    return True if await s.node(name) is None else None


@pytest.mark.trio
@pytest.mark.parametrize("fault, words, job_status", [
    ("crash", "crashed", "FAILED"),
    ("hang", "sent no heartbeat", "HEARTBEAT_TIMEOUT"),
])  # fmt: skip
async def test_a_lost_agent_and_its_replacement(autojump_clock: trio.testing.MockClock, fault: str, words: str,
                                                job_status: str) -> None:  # fmt: skip
    """An agent lost while it runs a job: AGENT_LOST naming it, the attempt it
    ran and why, then AGENT_REPLACED naming the fresh agent; both before the
    job event they cause."""
    async with dispatch_scenario(dispatch_config([node("n1", 1)], heartbeat_interval=5, heartbeat_timeout=30)) as s:
        await s.register(pipeline("lost", {"work": [hold_step()]}, group=None), id="lost")
        b = await s.submit("lost")
        victim = (await s.job_running(b.id, "work")).job("work").agent
        s.rt.inject_fault(victim, fault)
        done = await s.finished(b.id, timeout=60)
        events = await s.rt.events()
    assert done.job("work").status == job_status, describe(done)
    lost, replaced = [e for e in events if e.kind == EventKind.NODE][1:]
    assert (lost.status, lost.node, lost.data) == (
        NodeChange.AGENT_LOST, "n1", {"pool": "default", "agent": victim, "job": f"{b.id}/work#1"})
    assert words in (lost.reason or "") and victim in (lost.reason or ""), lost
    assert (replaced.status, replaced.node, replaced.data) == (
        NodeChange.AGENT_REPLACED, "n1", {"pool": "default", "agent": "n1/1", "replaces": victim})
    assert lost.id < replaced.id < index_of(events, "job", job_status, b.id)


@pytest.mark.trio
async def test_group_and_node_events_are_kept_for_resuming(autojump_clock: trio.testing.MockClock) -> None:
    """A subscriber resuming after an id gets the group and node events
    after it from the history, like any other."""
    async with scenario() as s:
        await s.register(pipeline("app"), id="app")
        mark = (await s.rt.events())[-1].id
        await s.rt.add_node("late")
        build = (await s.submit("app")).id
        await s.running(build)
        async with s.rt.subscribe(after=mark) as replay:
            kinds = [(e.kind, e.status) for e in [await replay.receive() for _ in range(4)]]
    assert kinds == [("node", "ADDED"), ("group", "ADMITTED"), ("build", "QUEUE"), ("build", "RUNNING")]


# -- jobs that end without running -----------------------------------------------------------


@pytest.mark.trio
async def test_every_job_ends_in_an_event_even_one_its_condition_skips_at_the_start() -> None:
    """A first-stage job with ``if: FAILURE`` is SKIPped as the build starts (nothing failed before it):
    the event stream says so, as it does for a job skipped later, so a follower never waits for it."""
    definition = """
name: skips
stages:
  - name: first
    jobs:
      work: {steps: [{uses: noop}]}
      rescue: {if: FAILURE, steps: [{uses: noop}]}
  - name: second
    jobs:
      after: {if: FAILURE, steps: [{uses: noop}]}
"""
    async with runtime.open_runtime() as rt:
        await rt.register_pipeline(definition)
        build = await rt.wait((await rt.submit("skips")).id, timeout=10)
        events = [e for e in await rt.events() if e.kind == EventKind.JOB and e.build_id == build.id]
    final = {job.id: job.status for stage in build.stages for job in stage.jobs}
    assert final == {"work": "SUCCEED", "rescue": "SKIP", "after": "SKIP"}
    last_event = {e.job_id: e.status for e in events}  # in order: the last one of each job wins
    assert last_event == final
    skipped = [e for e in events if e.job_id == "rescue"]
    assert [e.status for e in skipped] == ["SKIP"]
    assert "if: FAILURE" in (skipped[0].reason or ""), skipped[0]
