"""A job waiting for an agent costs the cyclic garbage collector nothing (docs/design.md §2).

A job that waits in a pool's queue outlives the collector's young passes;
thousands of tracked ones in its old generation used to trigger full passes
over every object of the process. So what the pool keeps for a waiting job
(its placement ``Request`` and the pipeline's ``JobRequest`` in it) is
untracked, which is safe only while nothing in it leads back to an actor:
an untracked link in a cycle through the actor graph would keep a closed
runtime's actors alive. The pipeline is named, not held by its ``Ref``,
and the job still reports to it.

The check walks everything the waiting request holds and fails on any
object that is not plain data (a ``Ref``, an actor, a cell, a function...).
"""

from __future__ import annotations

import enum
import gc
from typing import Any

import msgspec
import pytest
import trio

from actors.dispatch.placement import Request
from actors.model.messages import JobRequest

from .conftest import hold_step, pipeline
from .dispatch_helpers import dispatch_config, dispatch_scenario, job, node

_ATOMS = (str, int, float, bool, type(None), bytes, enum.Enum)
_CONTAINERS = (tuple, list, dict, set, frozenset)


def foreign(value: Any, path: str = "request", seen: set[int] | None = None) -> list[str]:
    """The paths under ``value`` to objects that are neither plain data nor msgspec structs of it."""
    seen = set() if seen is None else seen
    if isinstance(value, _ATOMS) or id(value) in seen:
        return []
    seen.add(id(value))
    if isinstance(value, msgspec.Struct):
        return [found for field in value.__struct_fields__
                for found in foreign(getattr(value, field), f"{path}.{field}", seen)]  # fmt: skip
    if isinstance(value, dict):
        return [found for key, item in value.items()
                for found in foreign(key, f"{path} key", seen) + foreign(item, f"{path}[{key!r}]", seen)]  # fmt: skip
    if isinstance(value, _CONTAINERS):
        return [found for index, item in enumerate(value) for found in foreign(item, f"{path}[{index}]", seen)]
    return [f"{path}: {type(value).__module__}.{type(value).__qualname__}"]


@pytest.mark.trio
async def test_a_waiting_jobs_request_is_untracked_and_holds_only_data(autojump_clock: trio.testing.MockClock) -> None:
    source = pipeline("w", {"compile": job([hold_step()], {"concurrency-limit-total": 1})}, group=None)
    async with dispatch_scenario(dispatch_config([node("n1", 2)])) as s:
        await s.register(source, id="w")
        first, second = [(await s.submit("w")).id for _ in range(2)]
        await s.job_running(first, "compile")
        await s.until_waiting(second, "compile")
        pool = s.rt.system.lookup("pool:default")._cell.actor
        (waiting,) = pool.placement.waiting.values()
        assert type(waiting) is Request and type(waiting.data) is JobRequest
        assert waiting.data.token.build_id == second
        assert not gc.is_tracked(waiting), "the placement's record of a waiting job is tracked by the collector"
        assert not gc.is_tracked(waiting.data), "the JobRequest of a waiting job is tracked by the collector"
        assert foreign(waiting) == [], "an untracked waiting request must hold plain data only"
        assert waiting.data.pipeline == "pipeline:w"  # it names the pipeline's actor
        s.probe.release_all()
        assert [(await s.finished(build)).status for build in (first, second)] == ["SUCCEED", "SUCCEED"]
        await s.assert_quiet()


def test_the_walk_finds_a_ref_hidden_in_a_request() -> None:
    """The check above would catch a ``Ref`` put back into what a waiting job holds."""

    class Hidden:
        pass

    request = Request(token="t", build_id="b", key=("p", "j"), data={"deep": (1, [Hidden()])})
    assert foreign(request) == ["request.data['deep'][1][0]: " + f"{__name__}.{Hidden.__qualname__}"]
