"""Durable state (docs/design.md §10): a restart with a big store, memory with long history, a huge log.

- restart: 100,000 finished and 10,000 queued builds (``--quick``: 10,000
  and 1,000) written into a state directory the way the journal writes
  them, then ``shunter serve`` started on it as a process: seconds until
  ``/healthz`` answers and until ``/v1/groups`` lists the restored queue.
  Baseline: the same server started on an empty state directory. Target:
  both within 5 s.
- history: RSS of one process after 200,000 finished builds (quick: 40,000)
  against the same process after 20,000 (quick: 4,000), builds run with a
  store (finished ones leave memory). Target: ratio <= 1.3.
- log: a step writing 2 GB of output (quick: 200 MB) to a store-backed
  runtime: RSS growth against a budget of 100 MB (the log file is capped by
  ``max-log-bytes``; nothing of it is kept in memory). Target: ratio <= 1.

    python -m bench.store [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

import runtime
from actors.builds.build import Build, new_build
from actors.builds.records import BuildShape, StepLog
from actors.model.vocab import JobStatus, StepStatus
from actors.state.codec import build_row
from actors.state.sqlite import SQLiteStore
from actors.state.store import Batch
from runtime._state import definition_key
from runtime.spec_loader import load_pipeline

from ._report import Row, print_table, save

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = """name: held
concurrency: {group: held, max-parallel: 1, queue-length: 100000, queue-timeout-minutes: 600}
steps:
  - id: nap
    run: sleep 600
"""
NOOP = "name: noop\nsteps: [{uses: noop}]\n"
SERVER_CONFIG = "pools: [{name: default, nodes: [{name: n1, agents: 2}]}]\ndrain-timeout: 0.1\n"


# -- restart -------------------------------------------------------------------------------------


def fill(directory: Path, finished: int, queued: int) -> None:
    """Write ``finished`` + ``queued`` builds of pipeline ``held`` into a store in ``directory``."""
    store = SQLiteStore(directory)
    key = definition_key("held", PIPELINE)
    shape = BuildShape(load_pipeline(PIPELINE), key)
    now = time.time()
    done = new_build(build_id="held.1", spec=shape, number=1, variables={}, group="held", now=now - 3600)
    job = done.start(now - 3600)[0]
    done.job_started(job, "n1", "n1/0", {}, now - 3600)
    done.step_started(job, 0, StepLog(), now - 3600)
    done.step_ended(job, 0, StepStatus.SUCCEED, None, 0, {}, {}, now - 3599)
    done.job_ended(job, JobStatus.SUCCEED, None, now - 3599)
    template = build_row(done, key)
    store.commit(Batch(pipelines={"held": (key, PIPELINE)}, definitions={key: ("held", PIPELINE)}))
    chunk = 10_000
    for first in range(1, finished + 1, chunk):
        rows = {f"held.{n}": template.__class__(f"held.{n}", "held", n, "SUCCEED", "held", template.queued_at,
                                                template.finished_at, key, template.data)
                for n in range(first, min(first + chunk, finished + 1))}  # fmt: skip
        store.commit(Batch(builds=rows))
    rows = {}
    for n in range(finished + 1, finished + queued + 1):
        waiting = new_build(build_id=f"held.{n}", spec=shape, number=n, variables={}, group="held", now=now + n * 1e-6)
        rows[waiting.id] = build_row(waiting, key)
    store.commit(Batch(builds=rows))
    store.close()


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"no {marker!r} within {timeout}s: {seen!r}")
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"the server exited: {seen!r}")
            seen += chunk
    return seen


def restart(directory: Path, queued: int) -> tuple[float, float]:
    """Start ``shunter serve`` on ``directory``: seconds to /healthz, and to its queue listed."""
    config = directory.parent / f"{directory.name}.yml"
    config.write_text(SERVER_CONFIG)
    began = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config), "--state-dir", str(directory),
         "--bind", "127.0.0.1:0"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        out = _read_until(process, b"Ctrl-C to stop", 120).decode()
        url = out.split("serving on ", 1)[1].split()[0]
        with httpx.Client(base_url=url, timeout=30) as client:
            while client.get("/healthz").status_code != 200:
                time.sleep(0.01)
            health = time.perf_counter() - began
            while True:
                groups = client.get("/v1/groups").json()
                if sum(len(group["queue"]) + len(group["running"]) for group in groups) >= queued:
                    break
                time.sleep(0.01)
            serving = time.perf_counter() - began
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return health, serving


# -- memory (each in a process of its own, so RSS is its own) ------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def _history(state: str, first: int, total: int) -> list[float]:
    # the store keeps every build (no retention by count): the history is there, not in memory
    config = {"state-dir": state, "max-queued-builds": 1_000_000, "drain-timeout": 1,
              "retention": {"builds-per-pipeline": None},
              "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 8}]}]}  # fmt: skip
    figures = []
    async with runtime.open_runtime(config) as rt:
        await rt.register_pipeline(NOOP)
        done = 0
        for target in (first, total):
            async def client(count: int) -> None:
                last = None
                for _ in range(count):
                    last = await rt.submit("noop")
                if last is not None:
                    await rt.wait(last.id)

            async with trio.open_nursery() as nursery:
                for _ in range(32):
                    nursery.start_soon(client, (target - done) // 32)
            done = target
            while (await rt.stats()).builds_running:
                await trio.sleep(0.01)
            await trio.sleep(0.5)  # the last commits' acknowledgements let the caches shrink
            figures.append(_rss_mb())
    return figures


async def _log(state: str, size: int) -> list[float]:
    chatty = f"name: chatty\nsteps:\n  - run: head -c {size} /dev/zero | tr '\\\\0' x | fold -w 8000\n"
    config = {"state-dir": state, "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}]}]}
    async with runtime.open_runtime(config) as rt:
        await rt.register_pipeline(chatty)
        await rt.register_pipeline(NOOP)
        await rt.wait((await rt.submit("noop")).id)
        before = _rss_mb()
        build = await rt.wait((await rt.submit("chatty")).id)
        assert build.status == "SUCCEED", build
        text_size = sum([len(piece) async for piece in await rt.log_chunks(build.id)])
        after = _rss_mb()
    return [before, after, float(text_size)]


def _child(kind: str, *args: int) -> list[float]:
    state = tempfile.mkdtemp(prefix="shunter-bench-")
    try:
        call = f"trio.run(s._{kind}, {state!r}, {', '.join(map(str, args))})"
        script = f"import json, trio, bench.store as s; print(json.dumps({call}))"
        result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
        figures: list[float] = json.loads(result.stdout.strip().splitlines()[-1])
        return figures
    finally:
        shutil.rmtree(state, ignore_errors=True)


def run(quick: bool = False) -> list[Row]:
    finished, queued = (10_000, 1_000) if quick else (100_000, 10_000)
    with tempfile.TemporaryDirectory(prefix="shunter-bench-") as scratch:
        full, empty = Path(scratch) / "full", Path(scratch) / "empty"
        began = time.perf_counter()
        fill(full, finished, queued)
        filled = time.perf_counter() - began
        health, serving = restart(full, queued)
        empty_health, empty_serving = restart(empty, 0)
    small, large = (4_000, 40_000) if quick else (20_000, 200_000)
    rss_small, rss_large = _child("history", small, large)
    size = 200_000_000 if quick else 2_000_000_000
    rss_before, rss_after, served = _child("log", size)
    rows = [
        Row(f"restart {finished // 1000}k+{queued // 1000}k: /healthz s", health, "s",
            "restart, empty store: /healthz s", empty_health, "figure <= 5"),
        Row(f"restart {finished // 1000}k+{queued // 1000}k: queue served s", serving, "s",
            "restart, empty store: serving s", empty_serving, "figure <= 5"),
        Row(f"RSS after {large // 1000}k finished, MB", rss_large, "MB", f"RSS after {small // 1000}k, MB",
            rss_small, "ratio <= 1.3"),
        Row(f"RSS growth, {size // 10**6} MB of log, MB", max(rss_after - rss_before, 0.01), "MB",
            "budget, MB", 100.0, "ratio <= 1.0"),
    ]
    print_table("durable state (restart, memory)", rows)
    print(f"store filled in {filled:.1f} s; log served back: {served / 2**20:.1f} MiB (capped by max-log-bytes)")
    print(f"wrote {save('store', rows, {'finished': finished, 'queued': queued, 'rss_mb': [rss_before, rss_after]})}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
