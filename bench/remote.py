"""Remote agents benchmark: no-op jobs per second through ``shunter agent`` processes on loopback.

    python -m bench.remote [--quick]

One ``shunter serve`` child process with two pools: ``local`` (one local
node of 8 agents) and ``remote`` (4 ``shunter agent`` processes of 2 agents
each, joined over HTTP). Each round submits builds of many parallel
``noop`` jobs to one pool and times them from the first submission to the
last build's end, so the figure is dispatch through the agent protocol
(lease, results riding on the next lease), not build submission.

Baselines, same run: the hello-world ASGI app of ``bench.http`` on the same
hypercorn settings, loaded by ``wrk`` (requests/s: one HTTP round trip
each; the httpx client when wrk is missing, which holds the figure down),
and the same jobs on the server's local agents. Targets: remote jobs/s at
least half the hello-world requests/s, i.e. about one round trip per job or
fewer (a lease carries several jobs and the previous results); and the
server's CPU per remote job at most twice its CPU per hello-world request.
On a 2-core machine the four agent processes compete with the server for
the CPU (the hello-world server has it to itself), so the CPU row is the
one that measures the protocol.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import trio

from ._report import Row, print_table, save
from .http import cpu_seconds

ROOT = Path(__file__).resolve().parents[1]
AGENT_PROCESSES = 4
AGENTS_EACH = 2


def _pipeline(name: str, pool: str, jobs: int) -> str:
    lines = [f"version: v3.0\nname: {name}\njobs:"]
    lines += [f"  j{index}: {{runs-on: {pool}, steps: [{{uses: noop@1}}]}}" for index in range(jobs)]
    return "\n".join(lines) + "\n"


def _request(url: str, method: str = "GET", body: bytes | None = None, content_type: str = "application/json") -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


LOCAL_AND_REMOTE = "pools:\n  - {name: local, nodes: [{name: l1, agents: 8}]}\n  - {name: remote, nodes: []}\n"


def _start_server(workdir: Path, config_text: str = LOCAL_AND_REMOTE) -> tuple[subprocess.Popen[bytes], str]:
    config = workdir / "shunter.yml"
    config.write_text(config_text)
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--config", str(config),
                                "--bind", "127.0.0.1:0", "--ephemeral"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    assert process.stdout is not None
    seen, deadline = b"", time.monotonic() + 30
    while b"Ctrl-C to stop" not in seen:
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the server did not start: {seen!r}")
        if select.select([process.stdout], [], [], 1)[0]:
            seen += os.read(process.stdout.fileno(), 4096)
    url = seen.split(b"serving on ", 1)[1].split()[0].decode()
    return process, url


def _start_agent(url: str, workdir: Path, name: str, pool: str = "remote") -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "runtime.cli", "agent", "--server", url, "--name", name,
                             "--pool", pool, "--agents", str(AGENTS_EACH), "--work-dir", str(workdir / name)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def _start_agents(url: str, workdir: Path, pool: str = "remote") -> list[subprocess.Popen[bytes]]:
    agents = [_start_agent(url, workdir, f"b{index}", pool) for index in range(AGENT_PROCESSES)]
    deadline = time.monotonic() + 60
    while True:
        nodes = [node for node in _request(f"{url}/v1/nodes") if node["kind"] == "remote" and node["connected"]]
        if sum(len(node["agents"]) for node in nodes) == AGENT_PROCESSES * AGENTS_EACH:
            return agents
        if time.monotonic() > deadline:
            raise RuntimeError(f"the agents did not join: {nodes}")
        time.sleep(0.1)


def _jobs_per_second(url: str, pipeline: str, builds: int, jobs: int, server_pid: int | None = None,
                     cpu: dict[str, float] | None = None) -> float:
    """Jobs/s from the first submission to the last build's end; the server's CPU µs per job go to
    ``cpu[pipeline]`` (the best round's)."""
    before = cpu_seconds(server_pid) if server_pid is not None else 0.0
    start = time.perf_counter()
    ids = [_request(f"{url}/v1/pipelines/{pipeline}/builds", "POST", b"{}")["id"] for _ in range(builds)]
    # Waited for through /v1/stats: a build of 500 jobs is a large document, and polling it cost
    # the server more CPU than the jobs did. Each build is read once, at the end.
    while True:
        stats = _request(f"{url}/v1/stats")
        if not stats["builds_running"] and not stats["builds_queued"]:
            break
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    for build_id in ids:
        build = _request(f"{url}/v1/builds/{build_id}")
        if build["status"] != "SUCCEED":
            raise RuntimeError(f"build {build_id} ended {build['status']}: {build['reason']}")
    if server_pid is not None and cpu is not None:
        used = (cpu_seconds(server_pid) - before) * 1e6 / (builds * jobs)
        cpu[pipeline] = min(cpu.get(pipeline, used), used)
    return builds * jobs / elapsed


def run(quick: bool = False) -> list[Row]:
    """Hello-world, local and remote loads take turns; each keeps its best round."""
    from .http import _load, _Server, _wrk_load, wrk_path

    jobs = 200 if quick else 500
    builds = 2 if quick else 4
    rounds = 2 if quick else 3
    with tempfile.TemporaryDirectory(prefix="shunter-bench-remote-") as tmp:
        workdir = Path(tmp)
        server, url = _start_server(workdir)
        agents: list[subprocess.Popen[bytes]] = []
        hello = _Server("hello")
        best = {"hello": 0.0, "local": 0.0, "remote": 0.0}
        cpu: dict[str, float] = {}  # the servers' CPU µs per hello-world POST, per local and remote job
        if wrk_path() is None:
            print("wrk is not installed: the hello-world load client is httpx, itself as busy as the server, "
                  "so the hello-world figure is low (apt-get install wrk)")  # fmt: skip
        try:
            agents = _start_agents(url, workdir)
            for pool in ("local", "remote"):
                _request(f"{url}/v1/pipelines/{pool}", "PUT", _pipeline(pool, pool, jobs).encode(), "application/yaml")
            _jobs_per_second(url, "remote", 1, jobs)  # warm up
            for _ in range(rounds):
                seconds = 3.0 if quick else 10.0
                before = hello.cpu_seconds()
                if wrk_path() is not None:
                    figures = _wrk_load(hello.url, "/", seconds, 16)
                else:
                    figures = trio.run(_load, hello.url, "/", 600 if quick else 5000, seconds, 16)
                used = (hello.cpu_seconds() - before) * 1e6 / max(figures["ok"], 1)
                cpu["hello"] = min(cpu.get("hello", used), used)
                best["hello"] = max(best["hello"], figures["per_second"])
                best["local"] = max(best["local"], _jobs_per_second(url, "local", builds, jobs, server.pid, cpu))
                best["remote"] = max(best["remote"], _jobs_per_second(url, "remote", builds, jobs, server.pid, cpu))
        finally:
            hello.stop()
            for agent in agents:
                agent.terminate()
            for agent in agents:
                try:
                    agent.wait(30)
                except subprocess.TimeoutExpired:
                    agent.kill()
            server.terminate()
            server.wait(30)
    rows = [
        Row(f"remote no-op jobs/s ({AGENT_PROCESSES}x{AGENTS_EACH} agents)", best["remote"], "/s",
            "hello-world ASGI POST", best["hello"], "ratio >= 0.5"),
        Row("local no-op jobs/s (8 agents)", best["local"], "/s", "hello-world ASGI POST", best["hello"], ""),
        Row("remote vs local no-op jobs/s", best["remote"], "/s", "local agents, same server", best["local"], ""),
        # Steadier than rates on a shared machine, and blind to the agent processes' own CPU:
        # what the agent protocol costs the server per job, against one plain HTTP request.
        Row("server CPU per remote job", cpu.get("remote", 0.0), "µs", "server CPU per hello-world POST",
            cpu.get("hello", 0.0), "ratio <= 2"),
    ]  # fmt: skip
    print_table(f"remote ({builds} builds x {jobs} noop jobs per round, best of {rounds} rounds)", rows)
    print(f"wrote {save('remote', rows, {'jobs': jobs, 'builds': builds, 'rounds': rounds, **best})}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer jobs and rounds")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
