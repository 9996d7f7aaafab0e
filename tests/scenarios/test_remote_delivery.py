"""A lease answer lost on the way, and one that arrives twice, with the real agent code
(``runtime.agent.serve_node``: the uplink and its lanes) against the runtime's app in-process
(docs/design.md §11). Delivery is at least once; running is once.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import msgspec
import pytest
import trio
import trio.testing

import runtime
from actors.remote.protocol import LeaseReply
from runtime.agent import AgentOptions, serve_node
from runtime.agent.http import Unreachable

from .remote_helpers import AppTransport

T = TypeVar("T")
CONFIG = {"heartbeat-interval": 1, "heartbeat-timeout": 30, "pools": [{"name": "default", "nodes": []}]}
COUNTED = "version: v3.0\nname: counted\njobs:\n  j:\n    steps: [{uses: count@1}, {uses: noop@1}]\n"


class Faulty(AppTransport):
    """Loses the first lease answer that carries a job (``lose``), or delivers it again with the
    next lease answer (``repeat``)."""

    fault = "lose"
    done = False
    held: list[Any] = []

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T:
        result = await super().post(path, message, reply, timeout)
        if not isinstance(result, LeaseReply) or Faulty.done:
            return result
        if Faulty.held:  # repeat: the jobs of the answer before, again
            Faulty.done = True
            return msgspec.structs.replace(result, jobs=[*Faulty.held, *result.jobs])  # type: ignore[return-value]
        if result.jobs:
            if Faulty.fault == "lose":
                Faulty.done = True
                raise Unreachable("the connection dropped before the answer arrived")
            Faulty.held = list(result.jobs)
        return result


@asynccontextmanager
async def _one_node(rt: runtime.Runtime, transport: Callable[[Any], AppTransport],
                    agents: int = 1) -> AsyncIterator[None]:  # fmt: skip
    """The real agent code serving node m1 (``agents`` agents) over ``transport``, until the block ends."""
    root = Path(tempfile.mkdtemp(prefix="shunter-delivery-"))
    try:
        options = AgentOptions(server="http://127.0.0.1", name="m1", work_dir=root, agents=agents)
        async with serve_node(options, connect=lambda: transport(rt.asgi_app), actions=rt.actions,
                              out=lambda line: None):  # fmt: skip
            with trio.fail_after(60):
                while not [n for n in await rt.nodes() if n.connected and n.agents]:
                    await trio.sleep(0.01)
            yield
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def _run_once(fault: str) -> tuple[dict[str, Any], int, float]:
    Faulty.fault, Faulty.done, Faulty.held = fault, False, []
    runs = 0

    async def count(step: Any) -> None:
        nonlocal runs
        runs += 1
        await trio.sleep(0.5)

    async with runtime.open_runtime(CONFIG) as rt:
        rt.register_action("count", count)
        async with _one_node(rt, Faulty):
            await rt.register_pipeline(COUNTED, id="counted")
            start = trio.current_time()
            build = await rt.submit("counted")
            info = await rt.wait(build.id, timeout=60)
            took = trio.current_time() - start
    return msgspec.to_builtins(info), runs, took


@pytest.mark.trio
async def test_a_lost_lease_answer_is_delivered_again_and_the_job_runs_once(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    info, runs, took = await _run_once("lose")
    assert Faulty.done and info["status"] == "SUCCEED", info
    assert [a["status"] for a in info["stages"][0]["jobs"][0]["attempts"]] == ["SUCCEED"]
    assert runs == 1
    assert took < 5  # sent again with the next lease, not ended by the 30 s heartbeat-timeout


@pytest.mark.trio
async def test_an_assignment_delivered_twice_runs_once(autojump_clock: trio.testing.MockClock) -> None:
    info, runs, _ = await _run_once("repeat")
    assert Faulty.done and info["status"] == "SUCCEED", info
    assert [a["status"] for a in info["stages"][0]["jobs"][0]["attempts"]] == ["SUCCEED"]
    assert runs == 1


# a, b and c at once on two agents: b's end frees an agent for c while a still runs
STEPPED = ("version: v3.0\nname: stepped\njobs:\n  a:\n    steps: [{uses: pause@1}]\n"
           "  b:\n    steps: [{uses: noop@1}]\n  c:\n    steps: [{uses: noop@1}]\n")


class SlowLeases(AppTransport):
    """Records every request's path; a lease that carries reports answers 50 ms late (a slow link)."""

    paths: list[str] = []

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T:
        SlowLeases.paths.append(path)
        result = await super().post(path, message, reply, timeout)
        if path == "/v1/agent/lease" and message.reports:
            await trio.sleep(0.05)
        return result


@pytest.mark.trio
async def test_reports_ready_between_polls_ride_on_the_next_lease(autojump_clock: trio.testing.MockClock) -> None:
    """Job a ends while the lease that carries b's end is on its way, and that lease's answer brings c:
    a's end waits for the next lease rather than go in a report request of its own, even while the
    agent starts c (docs/design.md §11: the report lane is for while the lease waits for work)."""
    SlowLeases.paths = []

    async def pause(step: Any) -> None:
        await trio.sleep(0.01)

    async with runtime.open_runtime(CONFIG) as rt:
        rt.register_action("pause", pause)
        async with _one_node(rt, SlowLeases, agents=2):
            await rt.register_pipeline(STEPPED, id="stepped")
            info = await rt.wait((await rt.submit("stepped")).id, timeout=60)
    assert info.status == "SUCCEED", info
    assert "/v1/agent/report" not in SlowLeases.paths, SlowLeases.paths
