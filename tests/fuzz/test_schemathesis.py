"""Schemathesis against a real ``shunter serve``: every check, stateful included, no failure.

The server is ``shunter serve`` in a child process on a free loopback port,
protected by a token (``SHUNTER_TOKEN``) that the fuzzer sends; it fetches
``/openapi.json`` and runs its phases (examples, coverage, fuzzing,
stateful) with ``--checks all``: no 5xx, every status and body as the
document says, schema-violating requests refused, schema-valid ones
accepted (see ``schemathesis.toml`` for the one operation whose body the
schema cannot fully describe), auth not ignored. ``GET /v1/events`` is left
out: a fuzzer waits for a response to end and an event stream never does
(its parameters and refusals are tested in ``tests/runtime/http``).

Bounded by ``--max-examples`` (about 20 s on two cores).
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TOKEN = "fuzz-token-0123456789abcdef"
PIPELINE = "name: app\nvariables: {X: one}\nsteps: [{uses: noop@1}, {run: 'echo \"${{ variables.X }}\"'}]\n"
MAX_EXAMPLES = 60


def _start(tmp_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "app.yml").write_text(PIPELINE)
    (tmp_path / "shunter.yml").write_text(
        "pools: [{name: default, nodes: [{name: n1, agents: 2}]}]\n"
        f"pipelines: [{tmp_path / 'app.yml'}]\nmax-nodes: 50\nmax-agents-per-node: 8\n"
    )
    env = {**os.environ, "SHUNTER_TOKEN": TOKEN}
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--config", str(tmp_path / "shunter.yml"),
                                "--bind", "127.0.0.1:0"], cwd=tmp_path, env=env, stdout=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + 30
    while b"serving on" not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0 and process.poll() is None, f"the server did not start: {seen!r}"
        if select.select([process.stdout], [], [], left)[0]:
            seen += os.read(process.stdout.fileno(), 4096)
    return process, seen.decode().split("serving on ", 1)[1].split()[0]


def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    process, url = _start(tmp_path)
    try:
        done = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(HERE / "schemathesis.toml"),
             "run", f"{url}/openapi.json", "--checks", "all", "--phases", "examples,coverage,fuzzing,stateful",
             "--max-examples", str(MAX_EXAMPLES), "--workers", "1", "--seed", "15",
             "--exclude-path", "/v1/events", "--header", f"Authorization: Bearer {TOKEN}",
             "--request-timeout", "20"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={k: v for k, v in os.environ.items() if k != "SHUNTER_TOKEN"},
        )  # fmt: skip
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output = done.stdout + done.stderr
    summary = re.search(r"(\d+) generated, (\d+) passed", output)
    assert done.returncode == 0 and summary is not None, output[-6000:]
    generated, passed = map(int, summary.groups())
    assert generated == passed and generated > 500, output[-3000:]
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-3000:]
    print(f"schemathesis: {summary.group(0)}; {re.search(r'Selected: .*', output).group(0)}")  # type: ignore[union-attr]
