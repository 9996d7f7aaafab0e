"""Real ``shunter serve`` and ``shunter agent`` processes on loopback, for the remote-agent tests.

A ``Cluster`` starts the server (free port, small heartbeats: interval
0.2 s, timeout 1.5 s) and agents (each with its own work dir and log file
under ``tmp_path``), talks to the server with urllib, and stops every
process it started when the test ends (SIGCONT first, so a stopped agent
can die; then SIGKILL whatever is left, step processes included). Waiting
is a bounded poll on the real processes, the part under test.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).parents[3]
HEARTBEAT_INTERVAL = 0.2
HEARTBEAT_TIMEOUT = 1.5

__all__ = ["Cluster", "free_port", "HEARTBEAT_TIMEOUT"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Cluster:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: subprocess.Popen[bytes] | None = None
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.processes: list[subprocess.Popen[bytes]] = []
        self.config = tmp_path / "shunter.yml"
        self.config.write_text(f"heartbeat-interval: {HEARTBEAT_INTERVAL}\nheartbeat-timeout: {HEARTBEAT_TIMEOUT}\n"
                               "pools: [{name: default, nodes: []}]\n")  # fmt: skip

    # -- processes -------------------------------------------------------------------------------

    def start_server(self, wait: bool = True) -> None:
        log = open(self.tmp / "server.log", "ab")
        self.server = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--config", str(self.config),
                                        "--bind", f"127.0.0.1:{self.port}", "--state-dir", str(self.tmp / "state")],
                                       cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT)  # fmt: skip
        self.processes.append(self.server)
        if wait:
            self.until(lambda: self._healthy(), "the server answers /healthz")

    def start_agent(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"agent-{name}.log", "ab")
        process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "agent", "--server", self.url, "--name", name,
                                    "--work-dir", str(self.tmp / f"work-{name}"), *args], cwd=ROOT, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.agents[name] = process
        self.processes.append(process)
        return process

    def agent_log(self, name: str) -> str:
        return (self.tmp / f"agent-{name}.log").read_text()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
        for process in self.processes:
            process.wait(10)
        for pid_file in self.tmp.glob("*.pgid"):  # step processes an agent killed with -9 left behind
            try:
                os.killpg(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    # -- HTTP ------------------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        data = None if body is None else (body.encode() if isinstance(body, str) else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"content-type": content_type})  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def put_pipeline(self, pipeline_id: str, yaml: str) -> None:
        self.request("PUT", f"/v1/pipelines/{pipeline_id}", yaml, "application/yaml")

    def submit(self, pipeline_id: str) -> str:
        build_id: str = self.request("POST", f"/v1/pipelines/{pipeline_id}/builds", {})["id"]
        return build_id

    def build(self, build_id: str) -> Any:
        return self.request("GET", f"/v1/builds/{build_id}")

    def nodes(self) -> dict[str, Any]:
        return {node["name"]: node for node in self.request("GET", "/v1/nodes")}

    def stats(self) -> Any:
        return self.request("GET", "/v1/stats")

    def log(self, build_id: str) -> str:
        with urllib.request.urlopen(f"{self.url}/v1/builds/{build_id}/logs", timeout=10) as response:
            text: str = response.read().decode()
            return text

    def wait_build(self, build_id: str, timeout: float = 20) -> Any:
        result: list[Any] = []

        def finished() -> bool:
            result[:] = [self.build(build_id)]
            return result[0]["status"] not in ("QUEUE", "RUNNING")

        self.until(finished, f"build {build_id} ends", timeout)
        return result[0]

    def wait_connected(self, *names: str, connected: bool = True, agents: int | None = None) -> None:
        def ready() -> bool:
            nodes = self.nodes()
            return all(name in nodes and nodes[name]["connected"] is connected
                       and (agents is None or len(nodes[name]["agents"]) == agents) for name in names)  # fmt: skip

        self.until(ready, f"nodes {names} connected={connected}")

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except (urllib.error.URLError, ConnectionError):
                pass
            if time.monotonic() > deadline:
                logs = {path.name: path.read_text()[-2000:] for path in self.tmp.glob("*.log")}
                raise AssertionError(f"timed out waiting until {what}; logs: {logs}")
            time.sleep(0.05)

    def _healthy(self) -> bool:
        assert self.server is not None and self.server.poll() is None, (self.tmp / "server.log").read_text()
        return bool(self.request("GET", "/healthz")["status"] == "ok")


def step_running(cluster: Cluster, build_id: str) -> dict[str, Any] | None:
    """The running job of a one-job build, once its step has started."""
    job = cluster.build(build_id)["stages"][0]["jobs"][0]
    if job["status"] == "RUNNING" and job["steps"][0]["status"] == "RUNNING":
        running: dict[str, Any] = job
        return running
    return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return not re.search(r"^State:\s+Z", status, re.M)
