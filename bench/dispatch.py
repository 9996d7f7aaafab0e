"""Dispatch throughput: many one-job `noop` builds through the whole runtime.

20,000 builds (``--quick``: 5,000) of a one-job, one-step pipeline on one
node of 8 agents with ``concurrency-limit-total: 8`` binding, submitted
through the Python API. Baselines measured in the same run:

- raw floor: one trio memory channel feeding 8 worker tasks (send_nowait);
- shared-lock design: a task per job under ``trio.Semaphore(8)`` taking an
  agent from a free list, the design docs/design.md §2 rules out.

The headline figures have 64 clients submitting at once (a server's load:
many submissions in flight, so every actor handles a batch per turn), in
memory and with a state directory (docs/design.md §10: each submission is
answered once committed, and many share a commit). Targets: at most the
shared-lock toy's cost per job, at least 25,000 builds/s, store on at least
0.5x in memory. The in-memory run is repeated with one subscriber
(``rt.subscribe()``, as a ``/metrics`` scrape starts one) reading every
event with ``async for``: at most 1.3x the cost per build without it.
One client awaiting each submission in turn is shown for
reference, with its submit-to-finish latency: every build then pays the
task switches of its hops alone.

    python -m bench.dispatch [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import tempfile
import time

import trio

import runtime

from ._report import Row, best_of, print_table, save
from .kernel import channel_floor

PIPELINE = """
name: noop
jobs:
  work:
    runs-on: {concurrency-limit-total: 8}
    steps: [{uses: noop}]
"""
CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 8}]}], "max-queued-builds": 1_000_000}


SUBMITTERS = 64


async def _concurrent_run(builds: int, state_dir: str | None, subscribers: int = 0) -> float:
    """µs per build, ``SUBMITTERS`` clients submitting at once, in memory or on a state directory.

    With ``subscribers``, that many tasks read every event through ``rt.subscribe()``
    and the time runs until they have read the last one.
    """
    config = dict(CONFIG, **({"state-dir": state_dir} if state_dir else {}))
    async with runtime.open_runtime(config) as rt, trio.open_nursery() as readers:
        pipeline = await rt.register_pipeline(PIPELINE)
        last: list[str] = []
        seen = [0] * subscribers  # the last event id each reader has read

        async def read(index: int, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with rt.subscribe(buffer=math.inf) as events:
                task_status.started()
                async for event in events:
                    seen[index] = event.id

        for index in range(subscribers):
            await readers.start(read, index)

        async def client(count: int) -> None:
            for _ in range(count):
                last.append((await rt.submit(pipeline.id)).id)

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(SUBMITTERS):
                nursery.start_soon(client, builds // SUBMITTERS)
        for build_id in last[-SUBMITTERS:]:
            await rt.wait(build_id)
        while (await rt.stats()).builds_running:
            await trio.sleep(0)
        while subscribers and await rt.events(after=min(seen)):
            await trio.sleep(0)
        elapsed = time.perf_counter() - start
        readers.cancel_scope.cancel()
    return elapsed / (builds // SUBMITTERS * SUBMITTERS) * 1e6


def _store_run(builds: int) -> float:
    directory = tempfile.mkdtemp(prefix="shunter-bench-store-")
    try:
        return trio.run(_concurrent_run, builds, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _parse(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _runtime_run(builds: int, latencies: list[float]) -> float:
    async with runtime.open_runtime(CONFIG) as rt:
        pipeline = await rt.register_pipeline(PIPELINE)
        start = time.perf_counter()
        last = None
        for _ in range(builds):
            last = await rt.submit(pipeline.id)
        assert last is not None
        await rt.wait(last.id)
        while (await rt.stats()).builds_running:
            await trio.sleep(0)
        elapsed = time.perf_counter() - start
        # pipelines keep their last retention.builds-per-pipeline finished builds: count them all in the stats
        assert (await rt.stats()).builds_by_status == {"SUCCEED": builds}
        done = await rt.builds(pipeline.id)
        latencies[:] = sorted(_parse(b.finished_at or "") - _parse(b.queued_at or "") for b in done)
    return elapsed / builds * 1e6


async def _shared_lock(jobs: int) -> float:
    limit = trio.Semaphore(8)
    agents = [f"n1/{i}" for i in range(8)]
    finished = 0

    async def job() -> None:
        nonlocal finished
        async with limit:
            agent = agents.pop()
            try:
                await trio.lowlevel.checkpoint()  # the step
            finally:
                agents.append(agent)
                finished += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(jobs):
            nursery.start_soon(job)
    assert finished == jobs
    return (time.perf_counter() - start) / jobs * 1e6


def run(quick: bool = False) -> list[Row]:
    builds = 5_000 if quick else 20_000
    repeats = 1 if quick else 3
    latencies: list[float] = []
    memory_us = best_of(repeats, lambda: trio.run(_concurrent_run, builds, None))
    subscribed_us = best_of(repeats, lambda: trio.run(_concurrent_run, builds, None, 1))
    store_us = best_of(repeats, lambda: _store_run(builds))
    lock_us = best_of(repeats, lambda: trio.run(_shared_lock, builds))
    floor_us = best_of(repeats, lambda: trio.run(channel_floor, builds))
    serial_us = best_of(repeats, lambda: trio.run(_runtime_run, builds, latencies))
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    clients = f"{SUBMITTERS} clients"
    rows = [
        Row(f"{clients}: µs per build", memory_us, "µs", "shared-lock toy: µs per job", lock_us, "ratio <= 1.0"),
        Row(f"{clients}: builds/s", 1e6 / memory_us, "/s", "target builds/s", 25_000, ">= 1.0"),
        Row(f"{clients}, 1 subscriber: µs/build", subscribed_us, "µs", f"{clients}: µs per build", memory_us,
            "ratio <= 1.3"),
        Row(f"store on, {clients}: builds/s", 1e6 / store_us, "/s", f"in memory, {clients}: builds/s",
            1e6 / memory_us, ">= 0.5"),
        Row("1 client awaiting each: µs/build", serial_us, "µs", "shared-lock toy: µs per job", lock_us,
            "(reference)"),
        Row("1 client awaiting each: µs/build", serial_us, "µs", "raw floor: µs per job", floor_us, "(reference)"),
    ]
    print_table(f"dispatch ({builds} builds, 1 node x 8 agents, total limit 8)", rows)
    print(f"submit-to-finish latency, 1 client awaiting each submit: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    print(f"wrote {save('dispatch', rows, {'builds': builds, 'latency_ms': {'p50': p50, 'p99': p99}})}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
