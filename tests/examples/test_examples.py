"""Each example runs as written (its short demo mode) and finishes by itself.

The three run side by side (each mostly waits for its demo build's one-second step).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {
    "embed_trio": ["examples/embed_trio.py"],
    "embed_asyncio": ["examples/embed_asyncio.py"],
    "submit_http": ["examples/submit_http.py", "--var", "DEPLOY_ENV=staging"],
}


def _run_all() -> dict[str, str]:
    processes = {name: subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
                 for name, args in EXAMPLES.items()}
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
    outputs = _run_all()
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
