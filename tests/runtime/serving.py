"""``shunter serve`` as a real process on a free loopback port, for the client and browser tests.

``served(tmp, config, pipelines)`` writes the pipelines and a configuration
that loads them, starts ``python -m runtime.cli serve --bind 127.0.0.1:0``,
waits (bounded) for its "serving on" line and yields the base URL; leaving
the block sends SIGINT and waits for a clean exit. State goes to ``tmp``
(``SHUNTER_HOME``), never to the user's home.

Gated shell steps make a test decide when a step ends, with no sleeps in
the test: ``gate_script(path)`` prints "started", waits until ``path``
exists, then prints "released".
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STARTUP = 60.0  # seconds: a loaded 2-core machine may be slow to import and start


def gate_script(path: Path, before: str = "started", after: str = "released") -> str:
    """A ``run:`` script (a YAML single-quoted scalar) that waits for ``path`` to exist."""
    return f"'echo {before}; while [ ! -e {path} ]; do sleep 0.05; done; echo {after}'"


@contextmanager
def served(tmp: Path, pipelines: Mapping[str, str], *, agents: int = 2, extra: str = "",
           token: str | None = None) -> Iterator[str]:  # fmt: skip
    with served_process(tmp, pipelines, agents=agents, extra=extra, token=token) as (url, _):
        yield url


@contextmanager
def served_process(tmp: Path, pipelines: Mapping[str, str], *, agents: int = 2, extra: str = "",
                   token: str | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:  # fmt: skip
    """``served``, also yielding the server's process (to kill it under a client).

    With ``token`` the server requires it (``SHUNTER_TOKEN``: an admin token).
    """
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in pipelines.items():
        path = tmp / f"{name}.yml"
        path.write_text(text)
        paths.append(str(path))
    config = tmp / "shunter.yml"
    config.write_text(f"pools: [{{name: default, nodes: [{{name: n1, agents: {agents}, labels: [linux]}}]}}]\n"
                      f"pipelines: [{', '.join(paths)}]\n{extra}")  # fmt: skip
    env = {**os.environ, "SHUNTER_HOME": str(tmp / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("SHUNTER_TOKEN", None)
    if token is not None:
        env["SHUNTER_TOKEN"] = token
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config), "--bind", "127.0.0.1:0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        seen = _read_until(process, b"serving on", STARTUP)
        url = seen.split(b"serving on ", 1)[1].split()[0].decode()
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout}s; stdout so far: {seen!r}"
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                stderr = process.stderr.read() if process.stderr else b""
                raise AssertionError(f"the server exited early: {seen!r}; stderr: {stderr!r}")
            seen += chunk
    return seen


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "the condition") -> None:
    """Poll ``condition()`` (a real server's state) until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout}s"
        time.sleep(0.05)
