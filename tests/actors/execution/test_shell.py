"""run_shell: exit codes, environment, exports, output streaming, and stopping
a step's whole process group. Runs on trio and asyncio.

These tests run real subprocesses. Where a test must wait for one, it polls
with a short sleep under ``fail_after(10)``; no wall-clock sleep decides an
outcome.
"""

from __future__ import annotations

import os
import pathlib
import tempfile

import anyio
import pytest

from actors.execution.output import LineSplitter
from actors.execution.shell import (
    MAX_LINE_BYTES,
    ShellResult,
    StepStartError,
    parse_exports,
    run_shell,
)

pytestmark = pytest.mark.anyio


class Log:
    """Collects the lines a step writes."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    def notes(self) -> list[str]:
        return [line for line in self.lines if line.startswith("[shunter]")]


async def run(script: str, cwd: pathlib.Path, env: dict[str, str] | None = None, **kw: object):
    log = Log()
    with anyio.fail_after(10):
        result = await run_shell(script, cwd=cwd, env=env or {}, on_output=log, **kw)
    return result, log


async def wait_for_file(path: pathlib.Path) -> None:
    """Wait until a subprocess has created ``path`` (written atomically by mv)."""
    while not path.exists():
        await anyio.sleep(0.01)


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.fixture
def private_tmp(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    """Makes run_shell create its private directory where the test can look."""
    base = tmp_path / "private"
    base.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(base))
    return base


# --- exit codes ---------------------------------------------------------------


async def test_success_returns_exit_code_zero_and_output(tmp_path: pathlib.Path) -> None:
    result, log = await run("echo one; echo two >&2", tmp_path)
    assert result == ShellResult(exit_code=0, env={}, outputs={})
    assert log.lines == ["one", "two"]


async def test_non_zero_exit_code_is_a_result(tmp_path: pathlib.Path) -> None:
    result, _ = await run("exit 3", tmp_path)
    assert result.exit_code == 3


async def test_shell_killed_by_a_signal_has_negative_exit_code(tmp_path: pathlib.Path) -> None:
    result, _ = await run("kill -TERM $$", tmp_path)
    assert result.exit_code == -15


async def test_errexit_stops_at_first_failing_command(tmp_path: pathlib.Path) -> None:
    result, log = await run("echo before; false; echo unreachable", tmp_path)
    assert result.exit_code == 1
    assert log.lines == ["before"]


async def test_pipefail_fails_on_a_failing_pipeline_stage(tmp_path: pathlib.Path) -> None:
    result, log = await run("false | cat; echo unreachable", tmp_path)
    assert result.exit_code == 1
    assert log.lines == []


async def test_falls_back_to_sh_without_bash(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # the agent's PATH has no bash
    result, log = await run('echo "$0"; false; echo unreachable', tmp_path, {"PATH": "/usr/bin:/bin"})
    assert log.lines == ["/bin/sh"]
    assert result.exit_code == 1


# --- environment and working directory ---------------------------------------------


async def test_env_is_exactly_the_given_one_plus_path_home_lang(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHUNTER_TEST_LEAK", "must not reach the step")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.setenv("HOME", "/home/agent")
    result, log = await run("compgen -e", tmp_path, {"GREETING": "hello world"})
    assert result.exit_code == 0
    bash_own = {"PWD", "SHLVL", "OLDPWD", "_"}
    assert set(log.lines) - bash_own == {
        "GREETING", "PATH", "HOME", "LANG", "SHUNTER_ENV", "SHUNTER_OUTPUT"
    }


async def test_given_values_win_over_inherited_ones(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", "/home/agent")
    env = {"HOME": "/home/step", "GREETING": "a b=c", "PATH": os.environ["PATH"]}
    _, log = await run('echo "$HOME|$GREETING"', tmp_path, env)
    assert log.lines == ["/home/step|a b=c"]


async def test_runs_in_cwd(tmp_path: pathlib.Path) -> None:
    workspace = tmp_path / "work space"
    workspace.mkdir()
    _, log = await run("pwd -P; ls", workspace)
    assert log.lines == [str(workspace.resolve())]


async def test_stdin_is_empty(tmp_path: pathlib.Path) -> None:
    result, log = await run("cat; echo done", tmp_path)
    assert (result.exit_code, log.lines) == (0, ["done"])


async def test_missing_cwd_raises_step_start_error(
    tmp_path: pathlib.Path, private_tmp: pathlib.Path
) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(StepStartError, match="missing"):
        await run("true", missing)
    assert list(private_tmp.iterdir()) == []


async def test_invalid_environment_raises_step_start_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(StepStartError, match="A=B"):
        await run("true", tmp_path, {"A=B": "x"})


# --- SHUNTER_ENV and SHUNTER_OUTPUT --------------------------------------------------


async def test_exports_both_forms_and_warns_about_invalid_names(tmp_path: pathlib.Path) -> None:
    script = """
        echo "VERSION=1.2.3" >> "$SHUNTER_ENV"
        echo "QUERY=a=b" >> "$SHUNTER_ENV"
        echo "1BAD=x" >> "$SHUNTER_ENV"
        printf 'NOTES<<EOF\\nline one\\nline two\\nEOF\\n' >> "$SHUNTER_ENV"
        echo "artifact=out/app.tar" >> "$SHUNTER_OUTPUT"
        printf 'bad-name<<END\\nx\\nEND\\n' >> "$SHUNTER_OUTPUT"
        echo "after=yes" >> "$SHUNTER_OUTPUT"
    """
    result, log = await run(script, tmp_path)
    assert result.env == {"VERSION": "1.2.3", "QUERY": "a=b", "NOTES": "line one\nline two"}
    assert result.outputs == {"artifact": "out/app.tar", "after": "yes"}
    notes = log.notes()
    assert len(notes) == 2
    assert "SHUNTER_ENV line 3" in notes[0] and "'1BAD'" in notes[0]
    assert "SHUNTER_OUTPUT line 2" in notes[1] and "'bad-name'" in notes[1]


async def test_exports_are_read_after_a_failing_exit(tmp_path: pathlib.Path) -> None:
    result, _ = await run('echo "A=1" >> "$SHUNTER_OUTPUT"; exit 2', tmp_path)
    assert (result.exit_code, result.outputs) == (2, {"A": "1"})


async def test_export_files_are_private_and_removed(
    tmp_path: pathlib.Path, private_tmp: pathlib.Path
) -> None:
    result, log = await run('echo "$SHUNTER_ENV"; echo "$SHUNTER_OUTPUT"', tmp_path)
    env_file, output_file = map(pathlib.Path, log.lines)
    assert env_file.parent == output_file.parent
    assert env_file.parent.parent == private_tmp  # not in the workspace
    assert not env_file.parent.exists()
    assert list(private_tmp.iterdir()) == []


def test_parse_exports_edge_cases() -> None:
    warnings: list[str] = []
    text = (
        "A=1\r\n"
        "\n"
        "A=2\n"  # a later value wins
        "EMPTY=\n"
        "SIMPLE=x<<y\n"  # '=' first: the simple form
        "MULTI<<EOF\r\n"
        "has = and <<\r\n"
        "\n"
        "EOF\r\n"
        "no assignment here\n"
        "=nameless\n"
        "NODELIM<<\n"
        "OPEN<<END\n"
        "never closed\n"
    )
    result = parse_exports(text, source="SHUNTER_ENV", warn=warnings.append)
    assert result == {"A": "2", "EMPTY": "", "SIMPLE": "x<<y", "MULTI": "has = and <<\n"}
    assert [w.split(":")[1].strip() for w in warnings] == [
        "SHUNTER_ENV line 10",
        "SHUNTER_ENV line 11",
        "SHUNTER_ENV line 12",
        "SHUNTER_ENV line 13",
    ]
    assert all(w.startswith("[shunter] warning: ") and w.endswith("ignored") for w in warnings)


def test_parse_exports_of_empty_file() -> None:
    assert parse_exports("", source="SHUNTER_OUTPUT", warn=pytest.fail) == {}


# --- output --------------------------------------------------------------------------


async def test_partial_last_line_crlf_and_invalid_utf8(tmp_path: pathlib.Path) -> None:
    _, log = await run(r"printf 'one\r\ntwo\n\nbad \377\nthree'", tmp_path)
    assert log.lines == ["one", "two", "", "bad \ufffd", "three"]


async def test_lines_are_delivered_as_they_arrive(tmp_path: pathlib.Path) -> None:
    # The script only goes on once the test has seen its first line, so
    # this finishes only if output is delivered while the script runs.
    go = tmp_path / "go"
    log = Log()

    def on_output(line: str) -> None:
        log(line)
        if line == "first":
            go.touch()

    script = 'echo first; while [ ! -e "$GO" ]; do sleep 0.01; done; echo second'
    with anyio.fail_after(10):
        result = await run_shell(script, cwd=tmp_path, env={"GO": str(go)}, on_output=on_output)
    assert (result.exit_code, log.lines) == (0, ["first", "second"])


async def test_long_lines_are_split_without_breaking_characters(tmp_path: pathlib.Path) -> None:
    (tmp_path / "data").write_bytes(b"a" * 200_000 + b"\n" + "\u20ac".encode() * 30_000)
    _, log = await run("cat data", tmp_path)
    assert [len(line) for line in log.lines[:4]] == [MAX_LINE_BYTES] * 3 + [200_000 - 3 * MAX_LINE_BYTES]
    euros = log.lines[4:]
    assert all(len(line.encode()) <= MAX_LINE_BYTES for line in euros)
    assert "".join(euros) == "\u20ac" * 30_000


def test_line_splitting_does_not_depend_on_read_sizes() -> None:
    data = (
        b"short\r\n"
        + b"x" * MAX_LINE_BYTES + b"\r\n"  # exactly the limit, then CRLF
        + b"y" * (MAX_LINE_BYTES + 1) + b"\n"
        + "\u00e9".encode() * MAX_LINE_BYTES + b"\n"
        + b"tail"
    )
    expected: list[str] | None = None
    for size in (3, 1000, MAX_LINE_BYTES - 1, MAX_LINE_BYTES + 2, len(data)):
        lines: list[str] = []
        splitter = LineSplitter(lines.append)
        for start in range(0, len(data), size):
            splitter.feed(data[start : start + size])
        splitter.flush()
        assert "\ufffd" not in "".join(lines)
        if expected is None:
            expected = lines
        assert lines == expected, size
    assert expected is not None
    assert expected[:4] == ["short", "x" * MAX_LINE_BYTES, "y" * MAX_LINE_BYTES, "y"]
    assert expected[-1] == "tail"


# --- leftovers and cancellation ---------------------------------------------------


async def test_background_leftovers_are_stopped_when_the_shell_exits(tmp_path: pathlib.Path) -> None:
    # The background sleep holds the output pipe: without stopping it the step
    # would only end when it does.
    pids = tmp_path / "pids"
    script = 'sleep 1000 & echo "$!" > "$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"; echo started'
    result, log = await run(script, tmp_path, {"PIDS": str(pids)})
    assert result.exit_code == 0
    assert log.lines == [
        "started",
        "[shunter] the step's shell exited but left processes running; stopping them",
    ]
    assert_gone(int(pids.read_text()))


async def cancel_once_written(script: str, pids: pathlib.Path, log: Log, **kw: object) -> list[str]:
    """Run ``script``, cancel it once it has written ``pids``; say how run_shell ended."""
    outcome: list[str] = []

    async def step() -> None:
        try:
            await run_shell(script, cwd=pids.parent, env={"PIDS": str(pids)}, on_output=log, **kw)
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("returned")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(step)
            await wait_for_file(pids)
            tg.cancel_scope.cancel()
    return outcome


async def test_cancel_terminates_the_whole_process_group(
    tmp_path: pathlib.Path, private_tmp: pathlib.Path
) -> None:
    script = (
        'echo "$SHUNTER_ENV"; printf partial; '
        'sleep 1000 & echo "$$ $!" > "$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"; wait'
    )
    log = Log()
    outcome = await cancel_once_written(script, tmp_path / "pids", log)
    assert outcome == ["cancelled"]
    shell_pid, grandchild_pid = map(int, (tmp_path / "pids").read_text().split())
    assert_gone(shell_pid)
    assert_gone(grandchild_pid)
    assert log.lines[1] == "partial"  # the unfinished line is not lost
    assert log.notes() == []  # SIGTERM was enough
    assert not pathlib.Path(log.lines[0]).parent.exists()
    assert list(private_tmp.iterdir()) == []


async def test_cancel_gives_the_script_time_to_clean_up_and_logs_it(
    tmp_path: pathlib.Path,
) -> None:
    script = (
        "trap 'echo cleaning up; exit 0' TERM; "
        'sleep 1000 & echo "$$ $!" > "$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"; wait'
    )
    log = Log()
    # a grace no loaded machine outlasts: this is about the trap's output, not the SIGKILL after it
    outcome = await cancel_once_written(script, tmp_path / "pids", log, kill_grace=30.0)
    assert outcome == ["cancelled"]
    assert log.lines == ["cleaning up"], log.lines  # output after the cancel still reaches the log
    for pid in map(int, (tmp_path / "pids").read_text().split()):
        assert_gone(pid)


async def test_cancelled_before_starting_still_stops_and_cleans_up(
    tmp_path: pathlib.Path, private_tmp: pathlib.Path
) -> None:
    pids = tmp_path / "pids"
    script = 'sleep 1000 & echo "$$ $!" > "$PIDS"; wait'
    with anyio.fail_after(10), anyio.CancelScope() as scope:
        scope.cancel()
        await run_shell(script, cwd=tmp_path, env={"PIDS": str(pids)}, on_output=Log())
    assert scope.cancelled_caught
    assert list(private_tmp.iterdir()) == []
    if pids.exists():  # how far the script got before it was stopped varies
        for pid in map(int, pids.read_text().split()):
            assert_gone(pid)


async def test_cancel_kills_what_ignores_sigterm_after_the_grace(tmp_path: pathlib.Path) -> None:
    script = (
        "trap '' TERM; "  # the shell and (inherited) its background child ignore SIGTERM
        'sleep 1000 & echo "$$ $!" > "$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"; wait'
    )
    log = Log()
    outcome = await cancel_once_written(script, tmp_path / "pids", log, kill_grace=0.2)
    assert outcome == ["cancelled"]
    assert log.notes() == ["[shunter] processes still running 0.2s after SIGTERM; sending SIGKILL"]
    for pid in map(int, (tmp_path / "pids").read_text().split()):
        assert_gone(pid)


async def test_on_output_failure_stops_the_step_and_propagates(tmp_path: pathlib.Path) -> None:
    pids = tmp_path / "pids"

    def on_output(line: str) -> None:
        raise RuntimeError(f"log sink broken on {line!r}")

    script = 'sleep 1000 & echo "$$ $!" > "$PIDS"; echo hello; wait'
    with anyio.fail_after(10), pytest.raises(RuntimeError, match="hello"):
        await run_shell(script, cwd=tmp_path, env={"PIDS": str(pids)}, on_output=on_output)
    for pid in map(int, pids.read_text().split()):
        assert_gone(pid)


async def test_negative_kill_grace_is_refused(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="kill_grace"):
        await run("true", tmp_path, kill_grace=-1)
