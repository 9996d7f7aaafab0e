"""The CLI client (``apply``, ``submit``, ``builds``, ``logs``, ``retry``, ``cancel``, ``nodes``) against a
real ``shunter serve`` process, and ``shunter run -v``.

The commands run in-process through ``main()`` (the server is the real
part); ``logs -f`` also runs as its own process to show lines arriving
while the step runs. Steps that must wait use a gate file (serving.py).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.cli import main
from runtime.client import Client

from .serving import ROOT, gate_script, served, served_process, wait_for

HELLO = """\
version: v3.0
name: hello
variables: {WHO: world}
jobs:
  greet:
    steps:
      - {id: say, run: 'echo "hello ${{ variables.WHO }}"'}
"""
BROKEN = "version: v3.0\nname: broken\njobs:\n  make:\n    steps: [{id: compile, run: 'echo compiling; exit 3'}]\n"


def gated(tmp: Path) -> str:
    return ("version: v3.0\nname: gated\nconcurrency: {group: gated, max-parallel: 1, queue-length: 5}\n"
            f"jobs:\n  work:\n    steps:\n      - {{id: wait, run: {gate_script(tmp / 'go')}}}\n")  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("client")
    with served(tmp, {"hello": HELLO, "broken": BROKEN, "gated": gated(tmp)}) as url:
        yield url, tmp


def shunter(url: str, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([args[0], "--server", url, *args[1:]])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_apply_registers_then_replaces_and_lists_spec_errors(server: tuple[str, Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    url, _ = server
    applied = tmp_path / "applied.yml"
    applied.write_text(BROKEN.replace("name: broken", "name: Applied Here"))
    (tmp_path / "bad.yml").write_text(BROKEN.replace("steps:", "stepz:"))
    code, out, err = shunter(url, capsys, "apply", str(applied))
    assert code == 0 and out == f"{applied}: pipeline 'applied-here' created (1 job)\n", err
    code, out, _ = shunter(url, capsys, "apply", str(applied))
    assert code == 0 and out == f"{applied}: pipeline 'applied-here' replaced (1 job)\n"
    code, out, err = shunter(url, capsys, "apply", str(tmp_path / "bad.yml"), str(tmp_path / "missing.yml"))
    assert code == 2  # an unreadable file is a usage error, and outranks the spec error
    assert f"{tmp_path / 'bad.yml'}: 2 error(s)" in err and "$.jobs.make.stepz: unknown key 'stepz'" in err
    assert f"{tmp_path / 'missing.yml'}: cannot read" in err
    assert shunter(url, capsys, "apply", str(tmp_path / "bad.yml"))[0] == 1
    (tmp_path / "arm.yml").write_text(HELLO.replace("name: hello", "name: arm").replace(
        "  greet:\n", "  greet:\n    runs-on: {labels: [arm64]}\n"))
    code, out, _ = shunter(url, capsys, "apply", str(tmp_path / "arm.yml"))
    assert code == 0 and out.splitlines()[1].startswith("  warning: $.jobs.greet.runs-on") and "arm64" in out
    assert "bad" not in [pipeline["id"] for pipeline in Client(url)._json("GET", "/v1/pipelines")]


def test_submit_waits_and_exits_with_the_builds_outcome(server: tuple[str, Path],
                                                        capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    url, _ = server
    code, out, err = shunter(url, capsys, "submit", "hello", "--var", "WHO=cli", "--wait")
    lines = out.splitlines()
    assert code == 0, (out, err)
    build_id = lines[0].split()[1]
    assert len(lines) == 2 and lines[0] in (f"build {build_id} RUNNING", f"build {build_id} QUEUE")
    assert lines[1].startswith(f"build {build_id} SUCCEED in ")
    assert Client(url).build(build_id)["variables"] == {"WHO": "cli"}
    assert "hello cli" in Client(url).logs(build_id)
    code, out, _ = shunter(url, capsys, "submit", "broken", "--wait")
    assert code == 1 and " FAILED in " in out.splitlines()[-1] and out.rstrip().endswith("exit code 3")
    code, _, err = shunter(url, capsys, "submit", "hello", "--var", "NOPE=1")
    assert code == 1 and "NOPE" in err and "(409 undeclared_variable)" in err and err.count("\n") == 1
    code, _, err = shunter(url, capsys, "submit", "nope")
    assert code == 1 and err == "shunter: no pipeline 'nope' (404 not_found)\n"


def test_submit_follow_prints_the_log_then_the_outcome(server: tuple[str, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    url, _ = server
    code, out, err = shunter(url, capsys, "submit", "hello", "-f")
    assert code == 0, err
    lines = out.splitlines()
    build_id = lines[0].split()[1]
    # The step may have ended before the log was first read (a header with its status) or not.
    assert lines[1] in ("=== greet / say attempt 1 ===", "=== greet / say attempt 1 (SUCCEED) ===")
    assert lines[2] == "hello world"
    assert lines[-1].startswith(f"build {build_id} SUCCEED in ")


def test_logs_follow_prints_lines_while_the_step_runs(server: tuple[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    url, tmp = server
    (tmp / "go").unlink(missing_ok=True)
    build = Client(url).submit("gated")
    follower = subprocess.Popen([sys.executable, "-m", "runtime.cli", "logs", build["id"], "--step", "wait", "-f"],
                                cwd=ROOT, env={**os.environ, "SHUNTER_SERVER": url}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "=== work / wait attempt 1 ===\n"
        assert follower.stdout.readline() == "started\n"  # while the step still runs
        assert follower.poll() is None
        (tmp / "go").touch()
        rest, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0, err
    assert rest == "released\n=== work / wait attempt 1 ended: SUCCEED ===\n"
    code, out, _ = shunter(url, capsys, "logs", build["id"])
    assert code == 0 and out == "=== work / wait attempt 1 (SUCCEED) ===\nstarted\nreleased\n"


def test_builds_retry_cancel_and_nodes(server: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    url, tmp = server
    (tmp / "go").unlink(missing_ok=True)
    client = Client(url)
    first, second = client.submit("gated"), client.submit("gated")
    assert second["status"] == "QUEUE"
    code, out, _ = shunter(url, capsys, "builds", "--pipeline", "gated", "--status", "QUEUE")
    assert code == 0 and out.splitlines()[0].split() == ["BUILD", "STATUS", "RUN", "QUEUED", "TOOK", "REASON"]
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [[second["id"], "QUEUE", "#1"]]
    code, out, _ = shunter(url, capsys, "cancel", second["id"])
    assert code == 0 and out.startswith(f"build {second['id']} CANCELED")
    code, _, err = shunter(url, capsys, "cancel", second["id"])
    assert code == 1 and err == f"shunter: build '{second['id']}' has already finished (CANCELED) (409 conflict)\n"
    code, _, err = shunter(url, capsys, "retry", first["id"])
    assert code == 1 and "(409 not_retryable)" in err and err.count("\n") == 1
    (tmp / "go").touch()
    wait_for(lambda: client.build(first["id"])["status"] == "SUCCEED", what=f"{first['id']} to succeed")
    code, out, _ = shunter(url, capsys, "retry", first["id"])
    assert code == 0 and re.fullmatch(rf"build {first['id']} (RUNNING|QUEUE) \(run 2\): retrying build\n", out)
    assert client.wait(first["id"])["execute_count"] == 2
    code, out, _ = shunter(url, capsys, "nodes")
    assert code == 0 and out.splitlines()[1].split() == ["n1", "default", "local", "2", "0", "0", "linux",
                                                         "connected"]  # fmt: skip
    code, _, err = shunter(url, capsys, "builds", "--status", "BAD")
    assert code == 1 and "query.status: must be one of QUEUE" in err and "got 'BAD' (400 invalid_request)" in err
    code, _, err = shunter(url, capsys, "logs", "nope.1")
    assert code == 1 and err == "shunter: no build 'nope.1' (404 not_found)\n"


def test_a_server_that_dies_under_a_follower_is_one_line_and_exit_3(tmp_path: Path) -> None:
    with served_process(tmp_path, {"gated": gated(tmp_path)}) as (url, server):
        build = Client(url).submit("gated")
        follower = subprocess.Popen([sys.executable, "-m", "runtime.cli", "logs", build["id"], "-f", "--server", url],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert follower.stdout is not None
            assert follower.stdout.readline() == "=== work / wait attempt 1 ===\n"
            assert follower.stdout.readline() == "started\n"
            server.kill()  # SIGKILL: no goodbye
            server.wait()
            out, err = follower.communicate(timeout=30)
        finally:
            (tmp_path / "go").touch()  # a step the dead server left behind ends too
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
    assert follower.returncode == 3, (out, err)
    assert err.startswith(f"shunter: the server at {url} broke off the answer") and err.count("\n") == 1, err


def test_an_unreachable_server_is_one_line_and_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket_closed_port() as port:
        code = main(["builds", "--server", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err
    assert code == 3
    assert err.startswith(f"shunter: cannot reach the server at http://127.0.0.1:{port}: ") and err.count("\n") == 1


def test_the_token_goes_as_a_bearer_header(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Against a server with a token: refused with a hint without it; --token and SHUNTER_TOKEN both work."""
    token = "client-token-0123456789"
    monkeypatch.delenv("SHUNTER_TOKEN", raising=False)
    with served(tmp_path, {"hello": HELLO}, token=token) as url:
        assert main(["nodes", "--server", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("shunter: ") and "(401 unauthorized) (set --token or SHUNTER_TOKEN)\n" in err, err
        assert err.count("\n") == 1
        assert main(["nodes", "--server", url, "--token", "wrong"]) == 1
        assert "(401 unauthorized)" in capsys.readouterr().err
        assert main(["submit", "hello", "--wait", "--server", url, "--token", token]) == 0
        monkeypatch.setenv("SHUNTER_TOKEN", token)
        monkeypatch.setenv("SHUNTER_SERVER", url)
        assert main(["logs", "hello.1"]) == 0
        assert "hello world" in capsys.readouterr().out


def test_run_verbose_prints_every_steps_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "two.yml"
    path.write_text("version: v3.0\nname: two\njobs:\n  a:\n    steps:\n"
                    "      - {id: s1, run: 'echo one; echo two'}\n      - {id: s2, run: 'echo three'}\n")  # fmt: skip
    assert main(["run", str(path)]) == 0
    assert "| one" not in capsys.readouterr().out  # quiet about steps that succeed
    assert main(["run", "-v", str(path)]) == 0
    out = capsys.readouterr().out
    shown = [line.strip() for line in out.splitlines() if line.strip().startswith("|")]
    assert shown == ["| one", "| two", "| three"]
    assert out.index("step a/s1 SUCCEED") < out.index("| one") < out.index("step a/s2 RUNNING")


class socket_closed_port:
    """A loopback port nobody listens on (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *args: object) -> None:
        pass
