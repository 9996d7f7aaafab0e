"""README.md's "Build machines" runs as written, on loopback.

Its blocks are ```text (test_readme.py does not run them: they span
machines), so this test runs them itself, the three in order as one bash
script in a fresh directory: ``0.0.0.0:8000`` and ``ci-host:8000`` become
``127.0.0.1`` and a free port, ``examples/`` is the repository's, and the
long-running ``shunter serve`` and ``shunter agent`` go to the background.
Between the blocks the script waits (bounded) for what a reader would
wait for: the server answering, then both agents joined. Every process
it started is stopped at the end, the whole process group at the latest.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tests.test_readme import README, ROOT, code_blocks

BIN = Path(sys.executable).parent


def _section_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("### Build machines")
    end = text.index("\n### ", start + 1)
    blocks = [block.text for block in code_blocks(README) if start < _offset(text, block.line) < end]
    assert len(blocks) == 3, blocks
    return blocks


def _offset(text: str, line: int) -> int:
    return sum(len(item) + 1 for item in text.splitlines()[: line - 1])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _until(condition: str, what: str) -> str:
    return f'for i in $(seq 300); do {condition} && break; sleep 0.1; done; {condition} || {{ echo "never: {what}"; exit 9; }}'


def test_the_build_machines_section_runs_on_loopback(tmp_path: Path) -> None:
    server, agents, client = _section_blocks()
    address = f"127.0.0.1:{_free_port()}"

    def local(block: str) -> str:
        block = block.replace("0.0.0.0:8000", address).replace("ci-host:8000", address)
        return block.replace("examples/", f"{ROOT}/examples/")

    background = re.compile(r"^(shunter (?:serve|agent) .*)$", re.M)
    script = "\n".join([
        "set -e",
        "trap 'kill -INT $(jobs -p) 2>/dev/null; wait' EXIT",
        background.sub(r"\1 > serve.log 2>&1 &", local(server)),
        _until(f"curl -sf http://{address}/healthz > /dev/null", "the server answers"),
        background.sub(lambda m: f"{m.group(1)} >> agents.log 2>&1 &", local(agents)),
        _until("[ $(grep -c ' joined pool ' agents.log) = 2 ]", "both agents joined"),
        local(client),
    ])  # fmt: skip
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    process = subprocess.Popen(["bash", "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        out, _ = process.communicate(timeout=120)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever the trap left
        except ProcessLookupError:
            pass
    output = out.decode()
    logs = "".join(f"\n--- {p.name}\n{p.read_text()}" for p in tmp_path.glob("*.log"))
    assert process.returncode == 0, output + logs
    nodes = {line.split()[0]: line.split() for line in output.splitlines() if line.startswith("build-0")}
    assert sorted(nodes) == ["build-01", "build-02"] and all(row[2] == "remote" for row in nodes.values()), output
    assert "pipeline 'machines' created (2 jobs)" in output
    assert re.search(r"image built on build-01 by build-01/[01]\n", output), output
    assert re.search(r"tests passed on build-0[12]\n", output) and "build machines.1 SUCCEED" in output, output
    assert "auth: {tokens: [{name: machines, role: agent" in (tmp_path / "machines.yml").read_text()
