"""The command line: ``run`` (live progress, exit codes), ``validate``, ``serve``'s refusals.

``run`` is called in-process through ``main()``; its builds use ``uses:``
steps and, for the failing log tail, one short shell step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime.cli import main

OK = """\
version: v3.0
name: hello
variables: {WHO: world}
stages:
  - name: build
    jobs:
      greet:
        steps:
          - {id: say, uses: echo@1, with: {text: "hello ${{ variables.WHO }}"}}
          - {id: nap, uses: sleep@1, with: {seconds: 0.01}}
  - name: check
    jobs:
      verify: {steps: [{uses: noop@1}]}
"""
FAILS = """\
version: v3.0
name: broken
jobs:
  compile:
    steps:
      - id: make
        run: 'echo compiling; echo "error: missing semicolon" >&2; exit 3'
"""
CONFIG = "pools: [{name: default, nodes: [{name: n1, agents: 2}]}]\n"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "ok.yml").write_text(OK)
    (tmp_path / "fails.yml").write_text(FAILS)
    (tmp_path / "bad.yml").write_text(OK.replace("steps:", "stepz:", 1).replace("seconds: 0.01", "seconds: x"))
    (tmp_path / "config.yml").write_text(CONFIG)
    return tmp_path


def test_run_prints_progress_and_exits_0(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(files / "ok.yml"), "--var", "WHO=there", "--config", str(files / "config.yml")])
    out = capsys.readouterr().out
    assert code == 0, out
    lines = [re.sub(r"^\s*\d+\.\d+s ", "", line).strip() for line in out.splitlines()]
    assert lines[0].startswith("build hello.1 of")
    for expected in ("build RUNNING", "stage build RUNNING", "job greet RUNNING", "step greet/say RUNNING",
                     "stage check RUNNING", "job verify RUNNING"):  # fmt: skip
        assert expected in lines, (expected, out)
    assert any(re.fullmatch(r"step greet/nap SUCCEED in \d+\.\d\ds", line) for line in lines), out
    assert any(re.fullmatch(r"stage build SUCCEED in \d+\.\d\ds", line) for line in lines), out
    assert re.fullmatch(r"build SUCCEED in \d+\.\d\ds", lines[-1]), out
    assert lines.index("stage build RUNNING") < lines.index("job greet RUNNING") < lines.index("stage check RUNNING")


def test_run_shows_a_failed_steps_last_log_lines_and_exits_1(files: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = main(["run", str(files / "fails.yml"), "--config", str(files / "config.yml")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "step compile/make FAILED" in out and "exit code 3" in out
    assert "| compiling" in out and "| error: missing semicolon" in out
    assert "build FAILED" in out.splitlines()[-1]


def test_run_refuses_spec_and_usage_errors_with_2(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(files / "bad.yml")]) == 2
    err = capsys.readouterr().err
    assert "$.stages[0].jobs.greet.stepz" in err
    assert main(["run", str(files / "ok.yml"), "--var", "NOPE=1"]) == 2
    assert "NOPE" in capsys.readouterr().err
    assert main(["run", str(files / "missing.yml")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["run", str(files / "ok.yml"), "--config", str(files / "bad.yml")]) == 2
    assert "error(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["run", str(files / "ok.yml"), "--var", "NO_EQUALS"])
    assert usage.value.code == 2


def test_validate_prints_errors_by_path(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(files / "ok.yml")]) == 0
    assert main(["validate", str(files / "bad.yml")]) == 1
    assert "$.stages[0].jobs.greet.stepz" in capsys.readouterr().out


def test_run_cancels_the_build_on_ctrl_c(tmp_path: Path) -> None:
    import os
    import select
    import signal
    import subprocess
    import sys
    import time

    long = tmp_path / "long.yml"
    long.write_text("version: v3.0\nname: long\nsteps: [{id: nap, uses: sleep@1, with: {seconds: 600}}]\n")
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli", "run", str(long)], cwd=Path(__file__).parents[2],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert process.stdout is not None
        seen, deadline = b"", time.monotonic() + 30
        while b"step job-1/nap RUNNING" not in seen:
            assert time.monotonic() < deadline and process.poll() is None, seen
            if select.select([process.stdout], [], [], 1)[0]:
                seen += os.read(process.stdout.fileno(), 4096)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 1
    assert "SIGINT: cancelling build long.1" in stdout.decode()
    assert "build CANCELED" in stdout.decode().splitlines()[-1]
    assert b"Traceback" not in stderr


def test_bench_hands_its_arguments_to_the_suite(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "no-such-scenario", "--quick"]) == 2
    assert "no-such-scenario" in capsys.readouterr().err


def test_version_prints_the_installed_version_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"shunter {version('shunter')}\n"


def test_serve_refuses_ephemeral_with_a_state_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--ephemeral", "--state-dir", "somewhere"]) == 2
    assert "--ephemeral and --state-dir exclude each other" in capsys.readouterr().err


def test_serve_picks_its_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--state-dir, else the config's state-dir, else $SHUNTER_HOME, else ~/.shunter; --ephemeral: none."""
    import argparse

    from runtime.cli import _with_state_dir
    from runtime.config import load_config

    def chosen(config: dict[str, object], state_dir: str | None = None, ephemeral: bool = False) -> str | None:
        args = argparse.Namespace(state_dir=state_dir, ephemeral=ephemeral)
        return _with_state_dir(load_config(config), args).state_dir  # type: ignore[no-any-return]

    monkeypatch.setenv("SHUNTER_HOME", str(tmp_path / "home"))
    assert chosen({}, str(tmp_path / "flag")) == str(tmp_path / "flag")
    assert chosen({"state-dir": str(tmp_path / "config")}) == str(tmp_path / "config")
    assert chosen({}) == str(tmp_path / "home")
    monkeypatch.delenv("SHUNTER_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert chosen({}) == str(tmp_path / ".shunter")
    assert chosen({"state-dir": "/x"}, ephemeral=True) is None


def test_serve_on_an_unusable_state_dir_says_so_in_one_line(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "file").write_text("not a directory")
    assert main(["serve", "--state-dir", str(tmp_path / "file" / "state"), "--bind", "127.0.0.1:0"]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == f"cannot serve: cannot use state directory {tmp_path}/file/state: Not a directory"
    assert captured.out == ""
