"""The runtime facade: events, closing, backpressure, registration, both backends."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
import trio
import trio.testing

import runtime
from runtime import Event

CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}
SIMPLE = """
name: simple
jobs:
  build:
    steps:
      - {id: hello, uses: echo, with: {text: hello}}
      - {id: nap, uses: sleep, with: {seconds: 0.01}}
"""


@pytest.mark.anyio
async def test_a_build_runs_on_both_backends() -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline(SIMPLE)
        build = await rt.submit(pipeline.id)
        assert build.id == "simple.1" and build.status == "RUNNING"
        build = await rt.wait(build.id, timeout=30)
        log = await rt.logs(build.id, job="build", step="hello")
    assert build.status == "SUCCEED"
    assert [step.status for step in build.job("build").steps] == ["SUCCEED", "SUCCEED"]
    assert "hello" in log


@pytest.mark.trio
async def test_subscribers_see_every_change_in_order(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline(SIMPLE)
        events: list[Event] = []
        async with rt.subscribe() as stream:
            build = await rt.submit(pipeline.id)
            async for event in stream:
                events.append(event)
                if event.kind == "build" and event.status == "SUCCEED":
                    break
        history = await rt.events()
    ids = [event.id for event in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    seen = [(e.kind, e.job_id, e.step_id, e.status) for e in events if e.build_id == build.id]
    assert seen[:2] == [("build", None, None, "QUEUE"), ("build", None, None, "RUNNING")]  # created, started
    assert ("job", "build", None, "RUNNING") in seen
    assert seen.index(("step", "build", "hello", "SUCCEED")) < seen.index(("step", "build", "nap", "RUNNING"))
    assert seen[-2:] == [("job", "build", None, "SUCCEED"), ("build", None, None, "SUCCEED")]
    assert [e.id for e in history if e.build_id == build.id] == [e.id for e in events if e.build_id == build.id]


@pytest.mark.trio
async def test_resuming_after_an_event_id_replays_the_rest(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline(SIMPLE)
        build = await rt.wait((await rt.submit(pipeline.id)).id, timeout=60)
        history = await rt.events()
        middle = history[len(history) // 2].id
        async with rt.subscribe(after=middle) as stream:
            replayed = [await stream.receive() for _ in range(len(history) - len(history) // 2 - 1)]
    assert build.status == "SUCCEED"
    assert [e.id for e in replayed] == [e.id for e in history if e.id > middle]


@pytest.mark.trio
async def test_closing_cancels_what_runs_and_says_so(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline("""
name: long
jobs:
  forever: {steps: [{uses: sleep, with: {seconds: 100000}}]}
""")
        first = await rt.submit(pipeline.id)
        second = await rt.submit(pipeline.id)
        await trio.sleep(1)
    assert sorted(rt.interrupted) == sorted([first.id, second.id])


@pytest.mark.trio
async def test_closing_many_builds_names_a_few_in_one_bounded_line(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """30 interrupted builds: the warning names 20 and says how many more, not every id."""
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline("name: long\nsteps: [{uses: sleep, with: {seconds: 100000}}]\n")
        for _ in range(30):
            await rt.submit(pipeline.id)
        await trio.sleep(1)
    assert len(rt.interrupted) == 30
    [line] = [r.getMessage() for r in caplog.records if "runtime closed" in r.getMessage()]
    assert line.startswith("runtime closed; cancelled 30 build(s): ") and line.endswith(" and 10 more"), line
    assert line.count("long.") == 20


@pytest.mark.trio
async def test_builds_a_close_cancels_say_the_runtime_stopped(autojump_clock: trio.abc.Clock) -> None:
    """Not "cancelled by a user": nobody asked, the runtime was closing."""
    ended: dict[str, str | None] = {}

    async def collect(rt: runtime.Runtime, task_status: trio.TaskStatus[None]) -> None:
        async with rt.subscribe() as events:
            task_status.started()
            async for event in events:  # ends when the runtime's hub stops
                if event.kind == "build" and event.status == "CANCELED":
                    ended[event.build_id or ""] = event.reason

    async with trio.open_nursery() as nursery:
        async with runtime.open_runtime(CONFIG) as rt:
            pipeline = await rt.register_pipeline("name: long\njobs: {j: {steps: [{uses: sleep, with: {seconds: 1000}}]}}")
            await nursery.start(collect, rt)
            build = await rt.submit(pipeline.id)
            await trio.sleep(1)
    assert ended == {build.id: "cancelled: the runtime stopped"}


@pytest.mark.trio
async def test_submissions_past_max_queued_builds_are_overloaded(autojump_clock: trio.abc.Clock) -> None:
    config = {**CONFIG, "max-queued-builds": 3}
    async with runtime.open_runtime(config) as rt:
        pipeline = await rt.register_pipeline("""
name: long
jobs:
  forever: {steps: [{uses: sleep, with: {seconds: 100000}}]}
""")
        builds = [await rt.submit(pipeline.id) for _ in range(3)]
        await trio.sleep(0.1)  # the hub counts what the pipelines published
        with pytest.raises(runtime.Overloaded, match="max-queued-builds 3"):
            await rt.submit(pipeline.id)
        await rt.cancel(builds[0].id)
        await rt.wait(builds[0].id, timeout=60)
        await trio.sleep(0.1)
        assert (await rt.submit(pipeline.id)).number == 4


@pytest.mark.trio
async def test_replacing_a_pipeline_keeps_its_builds_and_numbering(autojump_clock: trio.abc.Clock,
                                                                   tmp_path: Path) -> None:
    path = tmp_path / "simple.yml"
    path.write_text(SIMPLE)
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline(path)
        first = await rt.wait((await rt.submit(pipeline.id)).id, timeout=60)
        replaced = await rt.register_pipeline(SIMPLE.replace("hello", "bonjour"), id=pipeline.id)
        second = await rt.wait((await rt.submit(pipeline.id)).id, timeout=60)
        listed = await rt.pipelines()
    assert replaced.id == "simple" and [p.id for p in listed] == ["simple"]
    assert (first.number, second.number) == (1, 2)
    assert first.job("build").steps[0].id == "hello" and second.job("build").steps[0].id == "bonjour"


@pytest.mark.trio
async def test_unknown_ids_and_bad_input_are_refused_clearly(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        with pytest.raises(runtime.NotFound, match="no pipeline 'nope'"):
            await rt.submit("nope")
        with pytest.raises(runtime.SpecError) as error:
            await rt.register_pipeline("name: x\njobs: {a: {steps: [{uses: nosuch}]}}")
        assert error.value.errors[0]["path"].startswith("$.jobs.a.steps[0]")
        with pytest.raises(runtime.SpecError):
            await rt.register_pipeline(SIMPLE, id="../etc")
        pipeline = await rt.register_pipeline(SIMPLE)
        with pytest.raises(runtime.InvalidRequest):
            await rt.submit(pipeline.id, variables=["not", "a", "mapping"])  # type: ignore[arg-type]
        assert await rt.builds() == []
        # a status filter is a BuildStatus or its name; anything else says what would do
        with pytest.raises(runtime.InvalidRequest, match="unknown build status 'DONE'.*QUEUE, RUNNING, SUCCEED"):
            await rt.builds(status="DONE")
        with pytest.raises(runtime.InvalidRequest, match="build status ''"):
            await rt.builds(status="")
        assert await rt.builds(status=runtime.BuildStatus.SUCCEED) == await rt.builds(status="SUCCEED") == []
        with pytest.raises(runtime.InvalidRequest, match="unknown fault 'explode'.*crash, hang, silence"):
            rt.inject_fault("n1/0", "explode")


@pytest.mark.trio
async def test_wait_with_a_timeout_raises_timeout_error(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline("""
name: long
jobs:
  forever: {steps: [{uses: sleep, with: {seconds: 100000}}]}
""")
        build = await rt.submit(pipeline.id)
        with pytest.raises(TimeoutError, match="did not finish within 5s"):
            await rt.wait(build.id, timeout=5)
        assert (await rt.build(build.id)).status == "RUNNING"


@pytest.mark.anyio
async def test_custom_actions_run_on_both_backends() -> None:
    seen: list[str] = []

    async def record(step: object) -> None:
        await anyio.sleep(0)
        seen.append(getattr(step, "build_id"))

    async with runtime.open_runtime(CONFIG) as rt:
        rt.register_action("record", record)
        pipeline = await rt.register_pipeline("name: custom\njobs: {j: {steps: [{uses: record@1}]}}")
        build = await rt.wait((await rt.submit(pipeline.id)).id, timeout=30)
    assert build.status == "SUCCEED" and seen == [build.id]


@pytest.mark.trio
async def test_listed_builds_carry_their_queue_positions(autojump_clock: trio.abc.Clock) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline("""
name: lane
concurrency: {group: lane, max-parallel: 1, queue-length: 5}
jobs:
  forever: {steps: [{uses: sleep, with: {seconds: 100000}}]}
""")
        builds = [await rt.submit(pipeline.id) for _ in range(3)]
        listed = {b.id: b.queue_position for b in await rt.builds(pipeline.id)}
    assert listed == {builds[0].id: None, builds[1].id: 1, builds[2].id: 2}


@pytest.mark.trio
async def test_listings_skip_groups_and_mutexes_that_stopped_after_being_listed(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Groups and mutexes retire when idle, so one may stop between the
    listing and its ask: the facade leaves it out instead of failing."""
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline("""
name: lanes
variables: {L: a}
concurrency: {group: "lane-${{ variables.L }}"}
jobs:
  hold:
    mutex: {label: "m-${{ variables.L }}"}
    steps: [{uses: sleep, with: {seconds: 100000}}]
""")
        for lane in ("a", "b", "a"):
            await rt.submit(pipeline.id, variables={"L": lane})
        await trio.sleep(1)
        groups, mutexes = rt._groups.all(), rt._mutexes.all()
        assert [ref.name for ref in groups + mutexes] == ["group:lane-a", "group:lane-b", "mutex:m-a", "mutex:m-b"]
        for ref in (groups[0], mutexes[0]):  # stops after the listing below was taken
            rt.system.stop_nowait(ref)
        monkeypatch.setattr(rt._groups, "all", lambda: groups)
        monkeypatch.setattr(rt._mutexes, "all", lambda: mutexes)
        assert [group.name for group in await rt.groups()] == ["lane-b"]
        assert await rt.waiting_jobs() == []
        assert (await rt.stats()).builds_running == 2


@pytest.mark.trio
async def test_adding_one_node_name_twice_at_once_is_refused(autojump_clock: trio.abc.Clock) -> None:
    outcomes: list[str] = []

    async def add(pool: str) -> None:
        try:
            await rt.add_node("twin", pool=pool)
            outcomes.append("added")
        except runtime.Conflict:
            outcomes.append("conflict")

    async with runtime.open_runtime(CONFIG) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(add, "a")
            nursery.start_soon(add, "b")
        names = [node.name for node in await rt.nodes()]
    assert sorted(outcomes) == ["added", "conflict"] and names.count("twin") == 1


@pytest.mark.trio
async def test_a_fault_for_an_unknown_agent_harms_no_pool(autojump_clock: trio.abc.Clock) -> None:
    config = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}]},
                        {"name": "gpu", "nodes": [{"name": "g1", "agents": 1}]}]}
    async with runtime.open_runtime(config) as rt:
        rt.inject_fault("g1/0", "silence")  # told to both pools; only one owns it
        rt.inject_fault("nowhere/7", "crash")
        await trio.sleep(1)
        pipeline = await rt.register_pipeline("name: ok\njobs: {j: {steps: [{uses: noop}]}}")
        build = await rt.wait((await rt.submit(pipeline.id)).id, timeout=60)
        stats = await rt.stats()
    assert build.status == "SUCCEED" and stats.agents == 2


@pytest.mark.trio
async def test_a_stalled_loop_does_not_make_healthy_agents_look_silent(autojump_clock: trio.testing.MockClock
                                                                     ) -> None:
    config = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 3}]}],
              "heartbeat-interval": 1, "heartbeat-timeout": 7.5}
    async with runtime.open_runtime(config) as rt:
        await trio.sleep(3)
        autojump_clock.jump(20)  # every timer is overdue at once, as after a long stall
        await trio.sleep(3)
        stats = await rt.stats()
    assert stats.agents_lost == 0 and stats.agents == 3
