"""Remote chaos: builds on real ``shunter agent`` processes while they are killed, paused and restarted.

    python -m bench.remote_chaos [--quick]

One ``shunter serve`` (heartbeat interval 0.2 s, timeout 1.5 s) and 4
``shunter agent`` processes x 2 agents. 1,000 builds (200 with
``--quick``) of a pipeline of two jobs: ``limited`` (``concurrency-limit-
per-node: 1``, ``concurrency-limit-total: 3``) and ``free``, each a shell
step that writes ``build job attempt`` to a ledger file and sleeps 100 ms,
with ``retry-times: 2`` so a job lost with its agent runs again elsewhere.
While they run, every ~1 s a random agent process gets one fault, in turn:
``kill -9`` (restarted under the same name 0.5 s later), ``SIGSTOP`` for
2.5 s (past the timeout) then ``SIGCONT``, or SIGTERM (it drains and
leaves) and a fresh start under the same name.

Checked, and the run fails otherwise: every build ends in a final status;
no (build, job, attempt) appears twice in the ledger (no job ran twice
under one attempt); at every sample of ``GET /v1/nodes`` (every 50 ms) no
node runs more than one ``limited`` job and all nodes together no more than
three; at the end every counter of ``GET /v1/stats`` is zero.

Figure: builds/s with faults; baseline, same cluster and run: the same
builds with no faults (a fifth as many).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ._report import Row, print_table, save
from .remote import AGENT_PROCESSES, AGENTS_EACH, _request, _start_agent, _start_agents, _start_server

CONFIG = "heartbeat-interval: 0.2\nheartbeat-timeout: 1.5\npools: [{name: default, nodes: []}]\n"
FINAL = ("SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT")
COUNTERS = ("builds_running", "builds_queued", "jobs_running", "jobs_queued", "slots_held", "agents_busy",
            "agents_locked")  # fmt: skip


def _pipeline(ledger: Path) -> str:
    step = f'echo "$SHUNTER_BUILD_ID $SHUNTER_JOB_ID $SHUNTER_JOB_ATTEMPT" >> {ledger}; sleep 0.1'
    return (f"version: v3.0\nname: soak\njobs:\n"
            f"  limited:\n    runs-on: {{concurrency-limit-per-node: 1, concurrency-limit-total: 3}}\n"
            f"    steps: [{{run: '{step}', retry-times: 2}}]\n"
            f"  free:\n    steps: [{{run: '{step}', retry-times: 2}}]\n")  # fmt: skip


class _Sampler(threading.Thread):
    """Samples the running ``limited`` jobs per node until stopped; counts violations."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples = 0
        self.violations: list[Any] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                nodes = _request(f"{self.url}/v1/nodes")
            except OSError:
                continue
            running = {node["name"]: node["running"].get("soak/limited", 0) for node in nodes}
            self.samples += 1
            if any(count > 1 for count in running.values()) or sum(running.values()) > 3:
                self.violations.append(running)
            self.halt.wait(0.05)


def _run_builds(url: str, count: int, agents: dict[str, subprocess.Popen[bytes]] | None,
                workdir: Path) -> dict[str, Any]:  # fmt: skip
    """Submit ``count`` builds and wait for them, injecting faults into ``agents`` if given."""
    start = time.perf_counter()
    ids = [_request(f"{url}/v1/pipelines/soak/builds", "POST", b"{}")["id"] for _ in range(count)]
    faults: collections.Counter[str] = collections.Counter()
    kinds = ("kill -9", "SIGSTOP/SIGCONT", "SIGTERM restart")
    rng = random.Random(13)
    next_fault = time.monotonic() + 1.0
    deadline = time.monotonic() + 600
    while True:
        stats = _request(f"{url}/v1/stats")
        if stats["builds_running"] == 0 and stats["builds_queued"] == 0:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"builds did not finish: {stats}")
        if agents is not None and time.monotonic() >= next_fault:
            kind = kinds[sum(faults.values()) % len(kinds)]
            name = rng.choice(sorted(agents))
            process = agents[name]
            if kind == "kill -9":
                process.kill()
                process.wait()
                time.sleep(0.5)
            elif kind == "SIGSTOP/SIGCONT":
                os.kill(process.pid, signal.SIGSTOP)
                time.sleep(2.5)
                os.kill(process.pid, signal.SIGCONT)
            else:
                process.terminate()
                process.wait(60)
            if kind != "SIGSTOP/SIGCONT":
                agents[name] = _start_agent(url, workdir, name, "default")
            faults[kind] += 1
            next_fault = time.monotonic() + 1.0
        time.sleep(0.1)
    elapsed = time.perf_counter() - start
    statuses: collections.Counter[str] = collections.Counter()
    reasons: collections.Counter[str] = collections.Counter()
    for build_id in ids:
        build = _request(f"{url}/v1/builds/{build_id}")
        statuses[build["status"]] += 1
        for job in build["stages"][0]["jobs"]:
            for attempt in job["attempts"]:
                if attempt["status"] != "SUCCEED":
                    reasons[f"{attempt['status']}: {_shape(attempt['reason'])}"] += 1
    return {"seconds": elapsed, "per_second": count / elapsed, "statuses": dict(statuses), "faults": dict(faults),
            "attempts_not_succeeded": dict(reasons)}


def _shape(reason: str | None) -> str:
    """A reason without its names and numbers, to count alike ones together."""
    import re

    return re.sub(r"[0-9][0-9.]*|b[0-9]+/[0-9]+|soak\.[0-9]+", "N", reason or "")


def run(quick: bool = False) -> list[Row]:
    builds = 200 if quick else 1000
    with tempfile.TemporaryDirectory(prefix="shunter-bench-remote-chaos-") as tmp:
        workdir = Path(tmp)
        ledger = workdir / "ledger.txt"
        server, url = _start_server(workdir, CONFIG)
        processes: list[subprocess.Popen[bytes]] = []
        agents: dict[str, subprocess.Popen[bytes]] = {}
        sampler = _Sampler(url)
        try:
            processes = _start_agents(url, workdir, "default")
            agents = {f"b{index}": process for index, process in enumerate(processes)}
            _request(f"{url}/v1/pipelines/soak", "PUT", _pipeline(ledger).encode(), "application/yaml")
            calm = _run_builds(url, max(builds // 5, 20), None, workdir)
            sampler.start()
            chaos = _run_builds(url, builds, agents, workdir)
            # every agent back before the counters are read (a stopped one comes back by itself)
            deadline = time.monotonic() + 60
            while True:
                nodes = _request(f"{url}/v1/nodes")
                if sum(len(node["agents"]) for node in nodes if node["connected"]) == AGENT_PROCESSES * AGENTS_EACH:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the agents did not all come back: {json.dumps(nodes)[:2000]}")
                time.sleep(0.1)
            stats = _request(f"{url}/v1/stats")
        finally:
            sampler.halt.set()
            for process in [*processes, *agents.values()]:
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGCONT)
                    process.terminate()
            for process in [*processes, *agents.values()]:
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
            server.terminate()
            server.wait(30)
        entries = collections.Counter(ledger.read_text().splitlines())
    twice = {entry: n for entry, n in entries.items() if n > 1}
    unfinished = {status: n for status, n in chaos["statuses"].items() if status not in FINAL}
    leaked = {name: stats[name] for name in COUNTERS if stats[name]}
    print(f"  attempts that did not succeed, by reason: {chaos['attempts_not_succeeded']}")
    print(f"  faults: {chaos['faults']}; build statuses: {chaos['statuses']}; {sampler.samples} limit samples, "
          f"{len(sampler.violations)} over a limit; {len(entries)} attempts in the ledger, {len(twice)} twice; "
          f"counters at the end: {({name: stats[name] for name in COUNTERS})}")  # fmt: skip
    rows = [Row(f"remote chaos: builds/s ({builds}, faults)", chaos["per_second"], "/s", "the same without faults",
                calm["per_second"], "")]  # fmt: skip
    print_table("remote chaos (4 shunter agent processes x 2 agents, kill -9 / SIGSTOP / SIGTERM every ~1 s)", rows)
    print(f"wrote {save('remote_chaos', rows, {'calm': calm, 'chaos': chaos, 'samples': sampler.samples, 'violations': sampler.violations[:20], 'twice': dict(list(twice.items())[:20]), 'stats': stats})}")  # fmt: skip
    problems = []
    if unfinished:
        problems.append(f"builds not final: {unfinished}")
    if twice:
        problems.append(f"jobs ran twice under one attempt: {dict(list(twice.items())[:5])}")
    if sampler.violations:
        problems.append(f"limits broken at {len(sampler.violations)} sample(s): {sampler.violations[:3]}")
    if leaked:
        problems.append(f"counters not zero at the end: {leaked}")
    if problems:
        raise AssertionError("; ".join(problems))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 builds instead of 1,000")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
