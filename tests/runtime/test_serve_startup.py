"""``shunter serve`` that cannot start: one line (or the spec errors by path), exit 1.

Each case is a real ``python -m runtime.cli serve`` process; they run side by
side (each is mostly interpreter start-up). A busy port is a socket this
test binds and listens on itself.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ANY_PORT = "server: {bind: '127.0.0.1:0'}\n"  # never the default 8000: the machine is shared
BAD_PIPELINE = "name: bad\njobs:\n  j:\n    steps: [{uses: 'actions/checkout@v4'}, {uses: echo@1, with: {txt: hi}}]\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _serve_all(cases: dict[str, list[str]]) -> dict[str, tuple[int, str, str]]:
    """Run ``shunter serve ARGS`` for every case at once: name -> (exit code, stdout, stderr)."""
    # --ephemeral: side by side they would share (and contend for) one state directory
    processes = {name: subprocess.Popen([sys.executable, "-m", "runtime.cli", "serve", "--ephemeral", *args], cwd=ROOT,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
                 for name, args in cases.items()}
    results = {}
    try:
        for name, process in processes.items():
            stdout, stderr = process.communicate(timeout=60)
            results[name] = (process.returncode, stdout, stderr)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_start_up_errors_are_one_line_or_spec_errors_by_path_and_exit_1(tmp_path: Path, busy_port: int) -> None:
    (tmp_path / "bad.yml").write_text(BAD_PIPELINE)
    (tmp_path / "dir.yml").mkdir()
    configs = {
        "invalid config": "server: {bind: nowhere, max-body-bytes: 0}\n",
        "missing pipeline": f"{ANY_PORT}pipelines: [{tmp_path / 'absent.yml'}]\n",
        "unreadable pipeline": f"{ANY_PORT}pipelines: [{tmp_path / 'dir.yml'}]\n",
        "invalid pipeline": f"{ANY_PORT}pipelines: [{tmp_path / 'bad.yml'}]\n",
        "busy port in config": f"server: {{bind: '127.0.0.1:{busy_port}'}}\npipelines: [{tmp_path / 'bad.yml'}]\n",
    }
    for name, text in configs.items():
        (tmp_path / f"{name.replace(' ', '-')}.yml").write_text(text)
    cases = {name: ["--config", str(tmp_path / f"{name.replace(' ', '-')}.yml")] for name in configs}
    cases |= {
        "busy port": ["--bind", f"127.0.0.1:{busy_port}"],
        "bad --bind": ["--bind", "localhost"],
        "missing config": ["--config", str(tmp_path / "absent-config.yml")],
    }
    results = _serve_all(cases)

    for name, (code, stdout, stderr) in results.items():
        assert code == 1, (name, code, stdout, stderr)
        assert "Traceback" not in stderr and "Exception" not in stderr, (name, stderr)
        assert stdout == "", (name, stdout)  # nothing started, so nothing was announced

    def err(name: str) -> list[str]:
        return results[name][2].splitlines()

    busy = f"cannot listen on 127.0.0.1:{busy_port}: address already in use"
    assert err("busy port") == [busy]
    # The address is checked first: the invalid pipeline is never even loaded.
    assert err("busy port in config") == [busy]
    assert err("missing config") == [f"cannot read config file {tmp_path / 'absent-config.yml'}: "
                                     "No such file or directory"]  # fmt: skip
    config = tmp_path / "invalid-config.yml"
    assert err("invalid config") == [f"{config}: 2 error(s)",
                                     "  $.server.bind: must be HOST:PORT (e.g. 127.0.0.1:8000), got 'nowhere'",
                                     "  $.server.max-body-bytes: must be >= 1"]  # fmt: skip
    assert err("bad --bind") == ["--bind: 1 error(s)",
                                 "  $.server.bind: must be HOST:PORT (e.g. 127.0.0.1:8000), got 'localhost'"]  # fmt: skip
    assert err("missing pipeline") == [
        f"{tmp_path / 'missing-pipeline.yml'}: 1 error(s)",
        f"  $.pipelines[0]: cannot read pipeline file '{tmp_path / 'absent.yml'}': No such file or directory",
    ]
    assert err("unreadable pipeline") == [
        f"{tmp_path / 'unreadable-pipeline.yml'}: 1 error(s)",
        f"  $.pipelines[0]: cannot read pipeline file '{tmp_path / 'dir.yml'}': Is a directory",
    ]
    assert err("invalid pipeline") == [
        f"pipeline {tmp_path / 'bad.yml'}: 2 error(s)",
        "  $.jobs.j.steps[0].uses: unknown action 'actions/checkout'",
        "  $.jobs.j.steps[1].with.txt: unknown input 'txt' of action 'echo' (did you mean 'text'?); it takes: text",
    ]
