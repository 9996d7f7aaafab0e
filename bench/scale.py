"""Scale curves: cost per admission, per dispatch and memory per build against size.

Each row is a figure at one size beside the same figure at the smallest size,
measured in the same run, so the ratio is how the cost grows:

- admission: one group (``max-parallel: 1``, a holding build whose job waits
  in a pool without nodes, an unbounded queue) is filled to 1k, 10k, 100k and
  1M queued builds (``--quick``: up to 100k); at each size, 1,000 more
  submissions are timed one awaited ``rt.submit`` at a time, in five chunks,
  and the median chunk is the figure. Its baseline is a second runtime in
  the same process holding a fresh group of exactly 1k queued builds, whose
  chunks alternate with the big one's: both see the same moment of a noisy
  machine (a sweep compared with its own first point swung 0.5-1.7x). Filling is not measured and runs from 64 tasks;
  a full ``gc.collect()`` after it makes every window start from the same
  collector state, and that pass is timed too (rows ``full GC pass``):
  CPython's full collection walks every live object, so it is the pause
  that does grow with the number of queued builds. If the
  projected fill of the next size exceeds the time budget it is skipped
  and the output says so.
- dispatch: µs per ``noop`` build through the whole runtime (submit to
  finished, as in the dispatch scenario) on 10, 100, 1k and 10k nodes of
  one agent (``--quick``: up to 1k, since spawning 10k nodes takes ~5 s),
  with ``concurrency-limit-total: 8`` binding so jobs wait and every
  release has to find a free node among them all; the best of five runs
  (500 builds each with ``--quick``, 2,000 without), after warming up past
  the 5,000 finished builds a pipeline keeps. Unlike admission, this one is
  not interleaved with a small runtime: the big one's nodes cost the whole
  process (its garbage collections walk them), which would land on both.
  The sweep adds nodes by asking the pool actor directly (fast) and times a few
  ``rt.add_node`` calls at each size (rows ``rt.add_node``); those calls
  come right after the bulk add, so they also pay for the start-up of the
  node and agent actors just spawned (``rt.add_node`` itself asks each
  pool once whether the name is taken).
- memory: tracemalloc's peak while N builds are queued, minus what was traced
  before, per build, for 1k and 10k (and 100k without ``--quick``); each size
  in a fresh runtime, since tracemalloc slows everything it watches.

Targets (reported, not asserted): admission at 1M <= 1.3x at 1k; dispatch at
10k nodes <= 1.5x at 10 nodes; <= 2 KB per queued build. An SVG of the
curves is written beside the JSON (bench/plot.py).

    python -m bench.scale [--quick]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
import tracemalloc
from typing import Any

import trio

import runtime
from actors.dispatch.pool import AddNode

from . import plot
from ._harness import scratch_runtime, submit_many, until
from ._report import Row, print_table, save

HOLD_CONFIG = {"pools": [{"name": "hold", "nodes": []}], "max-queued-builds": 100_000_000}
REFERENCE = 1_000  # builds queued in the reference group


def _queued(group: str) -> dict[str, Any]:
    return {"name": group, "concurrency": {"group": group, "max-parallel": 1, "queue-length": 10_000_000},
            "jobs": {"work": {"runs-on": "hold", "steps": [{"uses": "noop"}]}}}  # fmt: skip


NOOP = {"name": "noop", "jobs": {"work": {"runs-on": {"concurrency-limit-total": 8}, "steps": [{"uses": "noop"}]}}}
WINDOW, CHUNKS, ADD_NODE_CALLS, REPEATS = 1_000, 5, 5, 5


async def _held_group(rt: runtime.Runtime, name: str) -> str:
    """A pipeline whose group ``name`` is held: one build runs, its job waiting for a node forever."""
    pipeline_id = (await rt.register_pipeline(_queued(name), id=name)).id
    await rt.submit(pipeline_id)
    return pipeline_id


async def _interleaved(big: runtime.Runtime, big_id: str, small: runtime.Runtime, small_id: str) -> tuple[float, float]:
    """µs per awaited submit into each: chunks alternate between the two, the median chunk of each."""
    chunk = WINDOW // CHUNKS
    costs: tuple[list[float], list[float]] = ([], [])
    for _ in range(CHUNKS):
        for side, (rt, pipeline_id) in enumerate(((big, big_id), (small, small_id))):
            start = time.perf_counter()
            for _ in range(chunk):
                await rt.submit(pipeline_id)
            costs[side].append((time.perf_counter() - start) / chunk * 1e6)
    return statistics.median(costs[0]), statistics.median(costs[1])


async def _admission(sizes: list[int], budget: float, facts: dict[str, Any],
                     pauses: dict[int, float]) -> dict[int, tuple[float, float]]:  # fmt: skip
    """(µs per admission at each size, µs at 1k queued in another runtime at the same time), for the
    sizes reached within ``budget`` seconds of filling; ``pauses`` gets the ms of a full collection."""
    results: dict[int, tuple[float, float]] = {}
    async with scratch_runtime(HOLD_CONFIG) as big, scratch_runtime(HOLD_CONFIG) as small:
        big_id = await _held_group(big, "queued")
        queued, filling, fill_rate = 0, 0.0, 0.0
        for index, size in enumerate(sizes):
            projected = (size - queued) * fill_rate
            if fill_rate and filling + projected > budget:
                facts["skipped"] = (f"{size:,} queued skipped: filling to it would take ~{projected:.0f}s more "
                                    f"(budget {budget:.0f}s, {fill_rate * 1e6:.0f} µs per build)")  # fmt: skip
                break
            start = time.perf_counter()
            await submit_many(big, big_id, size - queued)
            elapsed = time.perf_counter() - start
            filling += elapsed
            fill_rate = elapsed / (size - queued)
            queued = size
            small_id = await _held_group(small, f"reference{index}")  # a fresh group of exactly 1k
            await submit_many(small, small_id, REFERENCE)
            collect = time.perf_counter()
            gc.collect()  # each window starts from the same collector state; the pass is timed on its own
            pauses[size] = (time.perf_counter() - collect) * 1e3
            results[size] = await _interleaved(big, big_id, small, small_id)
            queued += WINDOW
            (group,) = await big.groups()
            assert len(group.queue) == queued, (len(group.queue), queued)
        facts["fill_seconds"] = filling
    return results


async def _memory(size: int) -> float:
    """Bytes per queued build: tracemalloc's peak while ``size`` builds queue, over what was there."""
    async with scratch_runtime(HOLD_CONFIG) as rt:
        pipeline_id = await _held_group(rt, "queued")
        gc.collect()
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            await submit_many(rt, pipeline_id, size, concurrency=16)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return (peak - before) / size


async def _dispatch_run(rt: runtime.Runtime, pipeline_id: str, builds: int) -> float:
    start = time.perf_counter()
    last = None
    for _ in range(builds):
        last = await rt.submit(pipeline_id)
    assert last is not None
    await rt.wait(last.id)
    await until(rt, lambda s: s.builds_running == 0, poll=0.001)
    return (time.perf_counter() - start) / builds * 1e6


async def _nodes(sizes: list[int], builds: int) -> tuple[dict[int, float], dict[int, float]]:
    """(µs per build, µs per rt.add_node) at each node count."""
    dispatch: dict[int, float] = {}
    add_node: dict[int, float] = {}
    config = {"pools": [{"name": "default", "nodes": []}], "max-queued-builds": 100_000_000, "max-nodes": 100_000}
    async with scratch_runtime(config) as rt:
        pool = rt.system.lookup("pool:default")
        pipeline_id = (await rt.register_pipeline(NOOP, id="noop")).id
        have = 0
        warm = False
        for size in sizes:
            for index in range(have, size - ADD_NODE_CALLS):
                await pool.ask(AddNode(f"n{index}", "default", 1, ()))
            start = time.perf_counter()
            for index in range(size - ADD_NODE_CALLS, size):
                await rt.add_node(f"n{index}")
            add_node[size] = (time.perf_counter() - start) / ADD_NODE_CALLS * 1e6
            have = size
            stats = await rt.stats()
            assert stats.agents == size, stats
            if not warm:  # past the 5,000 finished builds a pipeline keeps, so every size evicts alike
                await _dispatch_run(rt, pipeline_id, 5_500)
                warm = True
            await _dispatch_run(rt, pipeline_id, builds // 10)  # warm up at this size
            dispatch[size] = min([await _dispatch_run(rt, pipeline_id, builds) for _ in range(REPEATS)])
            final = await rt.stats()
            assert final.builds_by_status.keys() == {"SUCCEED"} and final.slots_held == 0, final
    return dispatch, add_node


def _rows(label: str, unit: str, curve: dict[int, float], target: str, what: str = "") -> list[Row]:
    sizes = sorted(curve)
    small = sizes[0]
    return [Row(f"{label} {_k(size)}{what}", curve[size], unit, f"{label} {_k(small)}{what}", curve[small], target)
            for size in sizes[1:]]  # fmt: skip


def _k(size: int) -> str:
    return f"{size // 1_000_000}M" if size >= 1_000_000 else f"{size // 1_000}k" if size >= 1_000 else str(size)


def run(quick: bool = False) -> list[Row]:
    queue_sizes = [1_000, 10_000, 100_000] if quick else [1_000, 10_000, 100_000, 1_000_000]
    memory_sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    node_sizes = [10, 100, 1_000] if quick else [10, 100, 1_000, 10_000]
    builds = 500 if quick else 2_000
    facts: dict[str, Any] = {"window": WINDOW, "dispatch_builds": builds}
    pauses: dict[int, float] = {}
    clock = time.perf_counter()
    admission = trio.run(_admission, queue_sizes, 60.0 if quick else 150.0, facts, pauses)
    facts["admission_seconds"], clock = time.perf_counter() - clock, time.perf_counter()
    gc.collect()
    dispatch, add_node = trio.run(_nodes, node_sizes, builds)
    facts["nodes_seconds"], clock = time.perf_counter() - clock, time.perf_counter()
    gc.collect()
    memory = {size: trio.run(_memory, size) for size in memory_sizes}
    facts["memory_seconds"] = time.perf_counter() - clock
    facts.update(admission_us=admission, gc_pause_ms=pauses, dispatch_us=dispatch, add_node_us=add_node,
                 bytes_per_build=memory)  # fmt: skip
    rows = [
        *[Row(f"admission, {_k(size)} queued", big, "µs", f"{_k(REFERENCE)} queued, same moment", reference,
              "ratio <= 1.3") for size, (big, reference) in admission.items()],  # fmt: skip
        *_rows("full GC pass,", "ms", pauses, "(the collector's pause)", " queued"),
        *_rows("dispatch,", "µs", dispatch, "ratio <= 1.5", " nodes"),
        *_rows("bytes/queued build,", "B", memory, "figure <= 2048"),
        *_rows("rt.add_node,", "µs", add_node, "flat (no issue target)", " nodes"),
    ]
    print_table("scale (each size beside the smallest, same run)", rows)
    if "skipped" in facts:
        print(f"NOTE: {facts['skipped']}")
    print(f"smallest sizes: dispatch {dispatch[10]:.1f} µs/build at 10 nodes; {memory[min(memory)]:.0f} B per "
          f"queued build at {_k(min(memory))}")  # fmt: skip
    path = save("scale", rows, facts)
    svg = plot.write(path.with_suffix(".svg"), _curves(admission, pauses, dispatch, memory, add_node),
                     "shunter scale curves (bench/scale.py)")  # fmt: skip
    print(f"wrote {path} and {svg}")
    return rows


def _curves(admission: dict[int, tuple[float, float]], pauses: dict[int, float], dispatch: dict[int, float],
            memory: dict[int, float], add_node: dict[int, float]) -> list[plot.Curve]:  # fmt: skip
    def points(curve: dict[int, float]) -> list[tuple[float, float]]:
        return sorted((float(size), value) for size, value in curve.items())

    ratios = {size: big / reference for size, (big, reference) in admission.items()}
    return [
        plot.Curve("admission", "builds queued", "x admission at 1k queued", points(ratios), 1.3, "1.3x"),
        plot.Curve("full GC pass", "builds queued", "ms", points(pauses)),
        plot.Curve("dispatch", "nodes", "µs per build", points(dispatch), 1.5 * dispatch[min(dispatch)],
                   "1.5x at 10 nodes"),
        plot.Curve("memory", "builds queued", "bytes per queued build", points(memory), 2048.0, "2 KB"),
        plot.Curve("rt.add_node", "nodes", "µs per call", points(add_node)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="admission up to 100k queued, fewer builds")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
