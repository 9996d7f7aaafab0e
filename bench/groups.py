"""Concurrency groups at saturation: admission cost, rejections, FIFO order.

1,000 pipelines (``--quick``: 100), each with its own group of
``max-parallel: 2`` and ``queue-length: 50``, get 55 submissions each,
round-robin across pipelines, one awaited ``rt.submit`` at a time: per group
2 run, 50 queue and 3 are refused with ``QueueFull``. Builds hold because
their job waits in a pool with no nodes, so the groups stay full while the
submissions are measured.

Figure: µs per submission (and admissions/s, an admission being a
submission answered RUNNING or QUEUE). Baseline, in the same run: the same
submissions to as many pipelines *without* a concurrency group, whose jobs
wait in the same empty pool, so the ratio is what admission through a group
costs on top of starting a build.

Then the builds are released (a node with one agent per running build joins
the pool; ``noop`` jobs end at once) and every group must admit its 50 queued
builds in submit order: the build ``RUNNING`` events are read from a
subscription and checked per group. Any disorder, a wrong count of
rejections or a build that did not succeed raises.

    python -m bench.groups [--quick]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import defaultdict
from typing import Any

import anyio
import trio

import runtime
from actors.model.vocab import BuildStatus, EventKind

from ._harness import scratch_runtime, until
from ._report import Row, print_table, save

MAX_PARALLEL, QUEUE_LENGTH, REFUSED_EACH = 2, 50, 3
ROUNDS = MAX_PARALLEL + QUEUE_LENGTH + REFUSED_EACH
CONFIG = {"pools": [{"name": "hold", "nodes": []}], "max-queued-builds": 10_000_000, "max-agents-per-node": 100_000}


def _pipeline(index: int, grouped: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": f"g{index}",
        "jobs": {"work": {"runs-on": "hold", "steps": [{"uses": "noop"}]}},
    }
    if grouped:
        spec["concurrency"] = {"group": "${{ ci.pipeline_id }}", "max-parallel": MAX_PARALLEL,
                               "queue-length": QUEUE_LENGTH}  # fmt: skip
    return spec


async def _register(rt: runtime.Runtime, pipelines: int, grouped: bool) -> list[str]:
    return [(await rt.register_pipeline(_pipeline(i, grouped), id=f"g{i}")).id for i in range(pipelines)]


async def _submit_all(rt: runtime.Runtime, ids: list[str]) -> tuple[float, int, int]:
    """Round-robin submissions, one at a time: (seconds, admitted, refused)."""
    admitted = refused = 0
    start = time.perf_counter()
    for _ in range(ROUNDS):
        for pipeline_id in ids:
            try:
                await rt.submit(pipeline_id)
            except runtime.QueueFull:
                refused += 1
            else:
                admitted += 1
    return time.perf_counter() - start, admitted, refused


async def _baseline(pipelines: int) -> float:
    """µs per submission to pipelines without a group (jobs wait in the empty pool)."""
    async with scratch_runtime(CONFIG) as rt:
        ids = await _register(rt, pipelines, grouped=False)
        seconds, admitted, refused = await _submit_all(rt, ids)
        assert refused == 0 and admitted == pipelines * ROUNDS
    return seconds / (pipelines * ROUNDS) * 1e6


async def _grouped(pipelines: int, facts: dict[str, Any]) -> float:
    """µs per submission into full groups; then release and verify FIFO admission."""
    async with scratch_runtime(CONFIG) as rt:
        ids = await _register(rt, pipelines, grouped=True)
        seconds, admitted, refused = await _submit_all(rt, ids)
        facts.update(admitted=admitted, refused=refused, submit_seconds=seconds)
        if admitted != pipelines * (MAX_PARALLEL + QUEUE_LENGTH) or refused != pipelines * REFUSED_EACH:
            raise AssertionError(f"expected {MAX_PARALLEL + QUEUE_LENGTH} admitted and {REFUSED_EACH} refused "
                                 f"per group, got {admitted} admitted and {refused} refused in {pipelines} groups")
        stats = await rt.stats()
        assert stats.builds_running == pipelines * MAX_PARALLEL, stats
        assert stats.builds_queued == pipelines * QUEUE_LENGTH, stats

        async with rt.subscribe(buffer=math.inf) as events:
            start = time.perf_counter()
            await rt.add_node("release", pool="hold", agents=pipelines * MAX_PARALLEL)
            await until(rt, lambda s: s.builds_running == 0 and s.builds_queued == 0, poll=0.05,
                        what="the released groups to drain")  # fmt: skip
            facts["drain_us_per_build"] = (time.perf_counter() - start) / admitted * 1e6
            started: dict[str, list[int]] = defaultdict(list)
            while True:
                try:
                    event = events.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
                if event.kind == EventKind.BUILD and event.status == BuildStatus.RUNNING and event.build_id:
                    pipeline_id, _, number = event.build_id.rpartition(".")
                    started[pipeline_id].append(int(number))
        _check_fifo(ids, started)
        final = await rt.stats()
        if final.builds_by_status != {"SUCCEED": admitted}:
            raise AssertionError(f"every admitted build should have succeeded: {final.builds_by_status}")
    return seconds / (pipelines * ROUNDS) * 1e6


def _check_fifo(ids: list[str], started: dict[str, list[int]]) -> None:
    """Build numbers follow submit order; after release each group starts 3..52 in order."""
    expected = list(range(MAX_PARALLEL + 1, MAX_PARALLEL + QUEUE_LENGTH + 1))
    for pipeline_id in ids:
        if started.get(pipeline_id) != expected:
            raise AssertionError(f"group {pipeline_id!r} admitted its queue out of order: "
                                 f"{started.get(pipeline_id)} (expected {expected[0]}..{expected[-1]})")  # fmt: skip
    print(f"FIFO verified: {len(ids)} groups each admitted builds {expected[0]}..{expected[-1]} in submit order")


def run(quick: bool = False) -> list[Row]:
    pipelines = 100 if quick else 1_000
    facts: dict[str, Any] = {"pipelines": pipelines, "submissions": pipelines * ROUNDS}
    base_us = trio.run(_baseline, pipelines)
    group_us = trio.run(_grouped, pipelines, facts)
    admitted, refused = facts["admitted"], facts["refused"]
    rows = [
        Row("group submit: µs per submission", group_us, "µs", "no-group submit: µs per submit", base_us,
            "ratio: cost of admission"),
        Row("admissions/s (running or queued)", admitted / facts["submit_seconds"], "/s",
            "no-group submissions/s", 1e6 / base_us, ""),
        Row("rejections (QueueFull)", refused, "n", "expected: 3 per group", pipelines * REFUSED_EACH,
            "ratio == 1"),
    ]
    print_table(f"groups ({pipelines} pipelines x group max-parallel {MAX_PARALLEL}, queue-length {QUEUE_LENGTH}; "
                f"{ROUNDS} submissions each)", rows)  # fmt: skip
    print(f"after release: {facts['drain_us_per_build']:.0f} µs per queued build to drain (not a figure: "
          f"it is dispatch, measured by the dispatch scenario)")
    print(f"wrote {save('groups', rows, facts)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 pipelines instead of 1,000")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
