"""Following a log while it is written: ``Runtime.read_log`` and ``Runtime.follow_logs``.

A ``talk`` action writes the lines it is given and stops at ``@NAME`` until
the test opens that gate, so each test decides exactly when a line appears
and when a step ends (MockClock: no wall-clock waits).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import runtime
from actors.builds.logfollow import MAX_LINES
from actors.builds.records import StepLog
from actors.execution.actions import ActionFailed
from runtime import NotFound

CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}


def pipeline(*jobs: tuple[str, list[str]], name: str = "talky") -> str:
    """One job per (job id, [scripts of its steps]); step ids are s1, s2, ..."""
    text = f"version: v3.0\nname: {name}\njobs:\n"
    for job, scripts in jobs:
        steps = ", ".join(f"{{id: s{i}, uses: talk, with: {{say: '{script}'}}}}" for i, script in enumerate(scripts, 1))
        text += f"  {job}:\n    steps: [{steps}]\n"
    return text


@dataclass
class Talk:
    gates: dict[str, trio.Event] = field(default_factory=dict)

    def open(self, name: str) -> None:
        self.gates.setdefault(name, trio.Event()).set()

    async def action(self, step: Any) -> None:
        for item in str(step.with_["say"]).split(","):
            if item.startswith("@"):
                await self.gates.setdefault(item[1:], trio.Event()).wait()
            elif item == "!fail":
                raise ActionFailed("told to fail")
            elif item.startswith("*"):  # *N: N numbered lines at once
                step.log("\n".join(f"line {i}" for i in range(int(item[1:]))))
            else:
                step.log(item)


@asynccontextmanager
async def talking() -> AsyncIterator[tuple[runtime.Runtime, Talk]]:
    talk = Talk()
    async with runtime.open_runtime(CONFIG) as rt:
        rt.register_action("talk", talk.action)
        yield rt, talk
        for gate in talk.gates.values():
            gate.set()


async def settle() -> None:
    """Let the agents run until everything waits on a gate (virtual time)."""
    await trio.sleep(1)


@pytest.mark.trio
async def test_a_running_step_is_read_as_it_grows_and_ends_with_it(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("build", ["one,two,@a,three,@b,four"])))
        build = await rt.submit("talky")
        await settle()
        chunk = await rt.read_log(build.id, "build", "s1")
        assert chunk.text == "=== build / s1 attempt 1 ===\none\ntwo\n" and not chunk.finished
        again = await rt.read_log(build.id, "build", "s1", chunk.cursor)
        assert again.text == "" and not again.finished  # nothing new: nothing repeated
        talk.open("a")
        await settle()
        chunk = await rt.read_log(build.id, "build", "s1", again.cursor)
        assert chunk.text == "three\n" and not chunk.finished
        talk.open("b")
        await rt.wait(build.id, timeout=10)
        chunk = await rt.read_log(build.id, "build", "s1", chunk.cursor)
        assert chunk.text == "four\n=== build / s1 attempt 1 ended: SUCCEED ===\n" and chunk.finished


@pytest.mark.trio
async def test_follow_yields_pieces_in_order_and_stops_when_the_step_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("build", ["one,@a,two,@b,three", "later"])))
        build = await rt.submit("talky")
        pieces: list[str] = []
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async for piece in rt.follow_logs(build.id, "build", "s1"):
                    pieces.append(piece)

            nursery.start_soon(follow)
            await settle()
            assert pieces == ["=== build / s1 attempt 1 ===\none\n"]
            talk.open("a")
            await settle()
            assert pieces[1:] == ["two\n"]
            talk.open("b")
        # The follower ended by itself once s1 had (s2's "later" is not part of it).
        assert "".join(pieces[2:]) == "three\n=== build / s1 attempt 1 ended: SUCCEED ===\n"
        await rt.wait(build.id, timeout=10)


@pytest.mark.trio
async def test_following_what_has_ended_is_the_plain_log_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("build", ["hello,world", "!fail"]), ("other", ["x"])))
        build = await rt.wait((await rt.submit("talky")).id, timeout=10)
        assert build.status == "FAILED"
        for job, step in ((None, None), ("build", None), ("build", "s1"), ("build", "s2"), (None, "s2")):
            followed = [piece async for piece in rt.follow_logs(build.id, job, step)]
            assert len(followed) == 1, followed
            assert followed[0] == await rt.logs(build.id, job, step)
        assert "=== build / s2 attempt 1 (FAILED) ===" in followed[0]


@pytest.mark.trio
async def test_parallel_jobs_interleave_under_repeated_headers(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("a", ["a1,@x,a2,@y"]), ("b", ["b1,@z,b2"])))
        build = await rt.submit("talky")
        text = ""
        followed = rt.follow_logs(build.id)
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                nonlocal text
                async for piece in followed:
                    text += piece

            nursery.start_soon(follow)
            await settle()
            talk.open("x")
            await settle()
            talk.open("z")
            await settle()
            talk.open("y")
        assert text.splitlines() == [
            "=== a / s1 attempt 1 ===", "a1",
            "=== b / s1 attempt 1 ===", "b1",
            "=== a / s1 attempt 1 ===", "a2",
            "=== b / s1 attempt 1 ===", "b2", "=== b / s1 attempt 1 ended: SUCCEED ===",
            "=== a / s1 attempt 1 ended: SUCCEED ===",
        ]  # fmt: skip
        assert (await rt.build(build.id)).status == "SUCCEED"  # the whole-build follow ended with the build


@pytest.mark.trio
async def test_a_retried_step_is_followed_into_its_new_attempt(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        # Two jobs: "slow" keeps the build running while "build" fails and is retried.
        await rt.register_pipeline(pipeline(("build", ["first,!fail"]), ("slow", ["@done"])))
        build = await rt.submit("talky")
        await settle()
        chunk = await rt.read_log(build.id)
        assert "=== build / s1 attempt 1 (FAILED) ===\nfirst\n" in chunk.text and not chunk.finished
        await rt.retry(build.id, job="build", step="s1")
        await settle()
        later = await rt.read_log(build.id, cursor=chunk.cursor)
        assert later.text == "=== build / s1 attempt 2 (FAILED) ===\nfirst\n"  # it fails again
        assert "attempt 1" not in later.text  # what was read is not read again
        talk.open("done")
        await rt.wait(build.id, timeout=10)
        assert (await rt.read_log(build.id, cursor=later.cursor)).finished


@pytest.mark.trio
async def test_a_chatty_step_is_read_in_bounded_pieces(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("build", [f"*{MAX_LINES * 2 + 5}"])))
        build = await rt.wait((await rt.submit("talky")).id, timeout=10)
        chunk = await rt.read_log(build.id, "build", "s1")
        assert chunk.more and not chunk.finished and len(chunk.text.splitlines()) == 1 + MAX_LINES  # and a header
        pieces = [piece async for piece in rt.follow_logs(build.id, "build", "s1")]
        assert len(pieces) == 3
        # Ended before it was read: one header with its status, no closing line, as in the plain log.
        assert "".join(pieces) == await rt.logs(build.id, "build", "s1")


@pytest.mark.trio
async def test_unknown_builds_jobs_and_steps_are_not_found(autojump_clock: trio.testing.MockClock) -> None:
    async with talking() as (rt, talk):
        await rt.register_pipeline(pipeline(("build", ["hi"]), ("other", ["ho"])))
        build = await rt.wait((await rt.submit("talky")).id, timeout=10)
        for args, words in (((build.id, "nope", None), "nope"), ((build.id, None, "nope"), "nope"),
                            (("talky.9", None, None), "talky.9"), ((build.id, None, "s1"), "several jobs")):  # fmt: skip
            with pytest.raises(NotFound, match=words):
                await rt.read_log(*args)
            with pytest.raises(NotFound, match=words):
                async for _ in rt.follow_logs(*args):
                    pass


# -- with durable state: logs are files (docs/design.md §10) -----------------------------------------------


def durable(state: Path) -> dict[str, Any]:
    return {"state-dir": str(state), "drain-timeout": 0.05,
            "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}  # fmt: skip


@pytest.mark.trio
async def test_a_log_written_to_a_file_is_followed_and_read_back_after_a_restart(tmp_path: Path) -> None:
    """Real time: the store's journal and log files are real I/O. Gates keep the test in control."""
    talk = Talk()
    with trio.fail_after(30):
        async with runtime.open_runtime(durable(tmp_path)) as rt:
            rt.register_action("talk", talk.action)
            await rt.register_pipeline(pipeline(("build", ["one,two,@a,three"]), ("more", ["*5"])))
            build = await rt.submit("talky")
            chunk = await rt.read_log(build.id, "build", "s1")
            while "two" not in chunk.text:  # bounded by fail_after: the agent writes the file
                await trio.sleep(0.01)
                chunk = await rt.read_log(build.id, "build", "s1")
            assert chunk.text == "=== build / s1 attempt 1 ===\none\ntwo\n" and not chunk.finished
            talk.open("a")
            rest = [piece async for piece in rt.follow_logs(build.id, "build", "s1")]
            assert "".join(rest).endswith("three\n=== build / s1 attempt 1 ended: SUCCEED ===\n")
            await rt.wait(build.id, timeout=10)
            whole = await rt.logs(build.id)
        async with runtime.open_runtime(durable(tmp_path)) as rt:  # now only the store holds the build
            rt.register_action("talk", talk.action)
            assert [piece async for piece in rt.follow_logs(build.id)] == [whole]
            assert "line 4\n" in whole and "one\ntwo\nthree\n" in whole


def test_a_file_log_is_read_in_whole_lines(tmp_path: Path) -> None:
    log = StepLog(path=str(tmp_path / "logs" / "step.log"))
    assert log.written == 0 and log.read(0, 10) == ([], 0)  # no file before the first line
    for line in ("alpha", "beta", "gamma"):
        log.append(line)
    assert log.written == len(b"alpha\nbeta\ngamma\n")
    lines, end = log.read(0, 2)
    assert lines == ["alpha", "beta"] and end == len(b"alpha\nbeta\n")
    assert log.read(end, 10) == (["gamma"], log.written)
    assert log.file is not None
    log.file.write(b"half a li")  # a line still being written is left for the next read
    assert log.read(log.written - len(b"half a li"), 10)[0] == []
    log.close()
