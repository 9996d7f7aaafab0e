"""Each example runs as written (its short demo mode) and finishes by itself.

The three run side by side (each mostly waits for its demo build's one-second
step). ``submit_http.py`` is also run, line by line, as its docstring shows
it, against a real ``shunter serve``; it runs with httpx made unimportable,
since it promises the standard library only.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUBMIT_HTTP = ROOT / "examples" / "submit_http.py"
# Runs an example as ``python examples/x.py ARGS`` would, but with httpx unimportable.
WITHOUT_HTTPX = ("import runpy, sys; sys.modules['httpx'] = None; sys.argv = sys.argv[1:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
EXAMPLES = {
    "embed_trio": ["examples/embed_trio.py"],
    "embed_asyncio": ["examples/embed_asyncio.py"],
    "submit_http": ["-c", WITHOUT_HTTPX, "examples/submit_http.py"],
}


def _run_all(commands: dict[str, list[str]]) -> dict[str, str]:
    """Run ``python ARGS`` for each command at once; each must exit 0. Returns their stdout."""
    processes = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
                 for name, args in commands.items()}
    outputs = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=60)
            assert process.returncode == 0, (name, stdout, stderr)
            assert "Traceback" not in stderr, (name, stderr)
            outputs[name] = stdout
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def test_examples_run_as_written() -> None:
    outputs = _run_all(EXAMPLES)
    for name in ("embed_trio", "embed_asyncio"):
        out = outputs[name]
        assert "shunter API on http://127.0.0.1:" in out, out
        assert "[reporter]" in out, out
        assert "build build-and-deploy.1: SUCCEED; over HTTP: SUCCEED" in out, out
        assert out.rstrip().endswith("stopped"), out

    lines = outputs["submit_http"].splitlines()
    assert "pipeline build-and-deploy: registered" in lines
    assert any(line.endswith("] build QUEUE") for line in lines), lines
    assert any(line.endswith("step compile/make SUCCEED") for line in lines), lines
    assert any(line.endswith("] build SUCCEED") for line in lines), lines
    assert any(line.startswith("build build-and-deploy.1 finished SUCCEED") for line in lines), lines
    assert "(server) stopped: 1 build(s), 1 finished, 0 interrupted" in lines


def _docstring_commands() -> list[list[str]]:
    """The command lines of submit_http.py's docstring, as argument lists after ``python``."""
    text = SUBMIT_HTTP.read_text()
    docstring = text.split('"""', 2)[1]
    lines = [line.split("#", 1)[0].split() for line in docstring.splitlines()
             if line.strip().startswith("python examples/submit_http.py")]  # fmt: skip
    assert len(lines) == 4, docstring
    return [line[1:] for line in lines]


def _start_server() -> tuple[subprocess.Popen[bytes], str]:
    """``shunter serve`` on a free loopback port; returns it and its URL once it listens."""
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--bind", "127.0.0.1:0"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert process.stdout is not None
    seen, deadline = b"", time.monotonic() + 30
    while b"Ctrl-C to stop" not in seen:
        assert time.monotonic() < deadline and process.poll() is None, seen
        if select.select([process.stdout], [], [], 1)[0]:
            seen += os.read(process.stdout.fileno(), 4096)
    match = re.search(rb"serving on (http://127\.0\.0\.1:\d+)", seen)
    assert match is not None, seen
    return process, match.group(1).decode()


def _get(url: str) -> Any:
    import json

    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_submit_http_does_what_its_docstring_says_against_a_real_server() -> None:
    server, url = _start_server()
    try:
        commands = {" ".join(args): ["-c", WITHOUT_HTTPX, *[arg.replace("http://127.0.0.1:8000", url) for arg in args]]
                    for args in _docstring_commands()}  # fmt: skip
        outputs = _run_all(commands)
        builds = _get(f"{url}/v1/builds")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    assert server.returncode == 0
    for command, out in outputs.items():
        assert re.search(r"^build \S+ finished SUCCEED", out, re.MULTILINE), (command, out)
    # The demo line served itself; the three --url lines built on the real server.
    by_pipeline = sorted(((b["pipeline_id"], b["variables"], b["status"]) for b in builds), key=repr)
    assert by_pipeline == [
        ("agent-reuse", {}, "SUCCEED"),
        ("build-and-deploy", {"DEPLOY_ENV": "prod"}, "SUCCEED"),
        ("build-and-deploy", {"DEPLOY_ENV": "test"}, "SUCCEED"),
    ], builds
