"""Run one shell step (a ``run:`` script) on an agent.

:func:`run_shell` is backend-neutral (anyio: trio or asyncio). Its life cycle:

1. Start ``bash -e -o pipefail -c SCRIPT`` (``/bin/sh -e -c`` where there is no
   bash) in the step's working directory, in a session and process group of
   its own, with exactly the step's environment (plus ``PATH``, ``HOME`` and
   ``LANG`` from the agent when the step doesn't set them) and with
   ``SHUNTER_ENV`` / ``SHUNTER_OUTPUT`` naming two empty files in a private
   temporary directory. The shell is gated: it runs only once the watchdog
   (``watchdog.py``) has its process group, so however the server dies, no
   step's processes outlive it (docs/design.md §10).
2. Deliver stdout and stderr, merged, to ``on_output`` one line at a time as
   they arrive.
3. When the shell exits, stop whatever it left running in its process group
   (SIGTERM, then SIGKILL after ``kill_grace`` seconds): a step can't leave
   processes behind.
4. Read the two files (``NAME=value`` lines and ``NAME<<DELIMITER`` blocks, as
   GitHub Actions does) into :class:`ShellResult` and remove the directory.

If the caller cancels (timeout or cancel), the whole process group gets the
same SIGTERM-then-SIGKILL treatment while its output still reaches
``on_output``, every process is reaped, and the cancellation propagates.

Orphans: when a shell dies, its children are re-parented. In containers the
adopter (PID 1) often never reaps them, which leaves zombies. So on Linux the
first call makes this process a "child subreaper" (``prctl``): orphans of its
descendants are re-parented here instead, and :func:`run_shell` reaps those of
each step's process group. Processes that start a session of their own
(``setsid``) leave the step's group and are not tracked.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import anyio.abc
import msgspec

from .output import MAX_LINE_BYTES, LineSplitter, OutputCallback, parse_exports, read_text
from .watchdog import watchdog

__all__ = ["MAX_LINE_BYTES", "ShellResult", "StepStartError", "parse_exports", "run_shell"]

_INHERITED = ("PATH", "HOME", "LANG")
_READ_CHUNK = 64 * 1024
_POLL_INTERVAL = 0.01  # how often to look whether a stopped process group is gone
_KILL_WAIT = 5.0  # after SIGKILL, how long to wait for the group to vanish
_DRAIN_WAIT = 1.0  # once the group is gone, how long to wait for the end of its output
_PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>


class ShellResult(msgspec.Struct, frozen=True):
    """What a shell step left behind once its shell exited.

    ``exit_code`` is the shell's exit status; a negative value ``-N`` means the
    shell was killed by signal ``N``. ``env`` holds the variables the script
    exported through ``$SHUNTER_ENV`` and ``outputs`` the values it wrote to
    ``$SHUNTER_OUTPUT``.
    """

    exit_code: int
    env: dict[str, str]
    outputs: dict[str, str]


class StepStartError(Exception):
    """The step's shell could not be started (missing working directory, bad
    environment, no shell...). The message says why, like an ``OSError`` does."""


async def run_shell(
    script: str,
    *,
    cwd: os.PathLike[str] | str,
    env: Mapping[str, str],
    on_output: OutputCallback,
    kill_grace: float = 5.0,
    temp_root: str | os.PathLike[str] | None = None,
    on_chunk: Callable[[], None] | None = None,
) -> ShellResult:
    """Run ``script`` as a shell step and return its exit code, env and outputs.

    ``on_output`` receives each line of merged stdout/stderr as soon as it is
    complete, decoded as UTF-8 (invalid bytes become U+FFFD), without its
    ``\\n`` or ``\\r\\n``. A last line without a newline is delivered at exit.
    Lines longer than :data:`MAX_LINE_BYTES` arrive in several pieces. Notes
    from shunter itself (ignored export lines, processes that had to be
    killed) arrive through ``on_output`` too, prefixed ``[shunter]``.
    ``on_output`` should not raise; if it does, the step's processes are
    stopped and the exception propagates. ``on_chunk``, if given, is called
    after the lines of each read have been delivered (a log file flushes
    there, so what a step printed survives a ``kill -9`` of the server).

    A non-zero exit is a result, not an exception. :class:`StepStartError` is
    raised when the shell cannot start. Cancellation stops the process group
    (SIGTERM, up to ``kill_grace`` seconds, SIGKILL) while delivering what it
    still prints, reaps it, and propagates; the export files are not read
    then. Processes the shell leaves running when it exits are stopped the
    same way, and the step ends when its shell does. The private directory
    is made under ``temp_root`` (default: the system's temporary directory);
    the agent puts it beside its workspace, where a restart cleans it up
    even after a ``kill -9``.
    """
    if kill_grace < 0:
        raise ValueError(f"kill_grace must be >= 0, got {kill_grace!r}")
    _become_subreaper()
    child_env = _child_env(env)
    argv = _shell_argv(script)
    # Private and outside the workspace: a step can't clobber another's files.
    private_dir = tempfile.mkdtemp(prefix="shunter-step-", dir=temp_root)
    try:
        env_file = os.path.join(private_dir, "env")
        output_file = os.path.join(private_dir, "output")
        for path in (env_file, output_file):
            open(path, "x").close()
        child_env["SHUNTER_ENV"] = env_file
        child_env["SHUNTER_OUTPUT"] = output_file

        exit_code = await _execute(argv, cwd, child_env, on_output, kill_grace, on_chunk)

        exported = parse_exports(read_text(env_file), source="SHUNTER_ENV", warn=on_output)
        outputs = parse_exports(read_text(output_file), source="SHUNTER_OUTPUT", warn=on_output)
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)
    return ShellResult(exit_code=exit_code, env=exported, outputs=outputs)


# --- starting the shell ---------------------------------------------------


def _child_env(env: Mapping[str, str]) -> dict[str, str]:
    """The step's environment plus PATH/HOME/LANG from the agent when unset."""
    child = dict(env)
    for name in _INHERITED:
        if name not in child and name in os.environ:
            child[name] = os.environ[name]
    for name, value in child.items():
        if not (isinstance(name, str) and isinstance(value, str)):
            raise StepStartError(
                f"cannot start the step: environment variable {name!r} must map a "
                f"string to a string, got {type(value).__name__}"
            )
        if not name or "=" in name or "\0" in name or "\0" in value:
            raise StepStartError(f"cannot start the step: invalid environment variable {name!r}")
    return child


def _shell_argv(script: str) -> list[str]:
    """bash with errexit and pipefail, or POSIX sh with errexit without bash."""
    bash = shutil.which("bash")
    if bash is not None:
        return [bash, "-e", "-o", "pipefail", "-c", script]
    return ["/bin/sh", "-e", "-c", script]


_subreaper_done = False


def _become_subreaper() -> None:
    """Adopt orphans of our descendants (Linux), so that we can reap them.

    Done once per process; harmless where unsupported. See the module docstring.
    """
    global _subreaper_done
    if _subreaper_done:
        return
    _subreaper_done = True
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc prctl: orphans go to PID 1 as usual


# The gate: the step's shell starts only once the watchdog knows its process group. Until the
# server writes a line to its stdin, ``sh`` waits; at end of file (the server died in between)
# it exits without running anything. Then the shell replaces it (same pid, same group) with
# stdin on /dev/null: a script reading stdin sees EOF instead of hanging.
_GATE = 'read _ || exit 125; exec "$@" </dev/null'


async def _start(
    argv: list[str], cwd: os.PathLike[str] | str, env: dict[str, str]
) -> tuple[anyio.abc.Process, int]:
    """Start the gated shell; returns it and the gate (write end) to open once it is watched."""
    gate_read, gate_write = os.pipe()
    try:
        process = await anyio.open_process(
            ["/bin/sh", "-c", _GATE, "shunter-step", *argv],
            cwd=cwd,
            env=env,
            stdin=gate_read,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: it can be signalled as a whole
        )
    except (OSError, ValueError) as exc:
        os.close(gate_write)
        raise StepStartError(f"cannot start the step's shell in {os.fspath(cwd)}: {exc}") from exc
    finally:
        os.close(gate_read)
    return process, gate_write


def _open_gate(gate: int) -> None:
    try:
        os.write(gate, b"go\n")
    except OSError:
        pass  # the shell is already gone: its exit status says why
    finally:
        os.close(gate)


# --- running it ------------------------------------------------------------


async def _execute(
    argv: list[str],
    cwd: os.PathLike[str] | str,
    env: dict[str, str],
    on_output: OutputCallback,
    kill_grace: float,
    on_chunk: Callable[[], None] | None = None,
) -> int:
    """Start the shell, pump its output until it is done, return its exit code."""
    # Shielded: if a cancellation interrupted the start, the script would run
    # on with nobody left to stop its process group.
    with anyio.CancelScope(shield=True):
        process, gate = await _start(argv, cwd, env)
    pgid = process.pid  # a session leader's pid is its process group id
    watchdog.register(pgid)  # if the server dies, the group dies with it
    _open_gate(gate)  # only now may the script start (see _GATE)
    splitter = LineSplitter(on_output, on_chunk)
    try:
        await _supervise(process, pgid, splitter, kill_grace, on_output)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await _stop_and_drain(process, pgid, splitter, kill_grace, on_output)
        raise
    except BaseException:
        # on_output failed (or KeyboardInterrupt): stop without calling it again.
        with anyio.CancelScope(shield=True):
            await _stop_group(process, pgid, kill_grace, _discard)
        raise
    finally:
        with anyio.CancelScope(shield=True):
            await process.aclose()
        watchdog.unregister(pgid)
    exit_code = process.returncode
    assert exit_code is not None  # _supervise waited for the shell
    return exit_code


async def _supervise(
    process: anyio.abc.Process,
    pgid: int,
    splitter: LineSplitter,
    kill_grace: float,
    say: OutputCallback,
) -> None:
    """Pump output to EOF while, in parallel, the shell's exit is awaited and
    its leftovers are stopped (they may hold the pipe open).

    The first failure of either stops both and is re-raised as itself, not
    wrapped in an exception group.
    """
    assert process.stdout is not None
    failures: list[Exception] = []
    # Notes about leftovers wait for the end of the output: the shell's exit
    # can be seen before its last lines are read.
    notes: list[str] = []

    async with anyio.create_task_group() as tg:

        async def guarded(work: Callable[..., Awaitable[None]], *args: Any) -> None:
            try:
                await work(*args)
            except Exception as exc:
                failures.append(exc)
                tg.cancel_scope.cancel()

        tg.start_soon(guarded, _stop_leftovers, process, pgid, kill_grace, notes.append)
        await guarded(_pump, process.stdout, splitter)
    if failures:
        raise failures[0]
    for note in notes:
        say(note)


async def _pump(stream: anyio.abc.ByteReceiveStream, splitter: LineSplitter) -> None:
    try:
        while True:
            splitter.feed(await stream.receive(_READ_CHUNK))
    except anyio.EndOfStream:
        splitter.flush()


async def _stop_leftovers(
    process: anyio.abc.Process, pgid: int, grace: float, say: OutputCallback
) -> None:
    """Once the shell exits, stop what it left running in its process group."""
    await process.wait()
    if _group_alive(process, pgid):
        say("[shunter] the step's shell exited but left processes running; stopping them")
        await _stop_group(process, pgid, grace, say)


# --- stopping and reaping ------------------------------------------------------


async def _stop_and_drain(
    process: anyio.abc.Process,
    pgid: int,
    splitter: LineSplitter,
    grace: float,
    say: OutputCallback,
) -> None:
    """Stop a cancelled step's group while still delivering its output: the
    last lines before a timeout, and what its SIGTERM handlers print, are
    the ones a user needs."""
    assert process.stdout is not None

    async def drain(stream: anyio.abc.ByteReceiveStream) -> None:
        with contextlib.suppress(Exception):  # a broken log sink must not hide the cancellation
            try:
                await _pump(stream, splitter)
            finally:
                splitter.flush()  # also a line cut short by the deadline below

    async with anyio.create_task_group() as tg:
        tg.start_soon(drain, process.stdout)
        await _stop_group(process, pgid, grace, say)
        # Every writer is gone, so the pipe ends at once, unless a process
        # that left the group (setsid) still holds it: don't wait for that.
        tg.cancel_scope.deadline = anyio.current_time() + _DRAIN_WAIT


async def _stop_group(
    process: anyio.abc.Process, pgid: int, grace: float, say: OutputCallback
) -> None:
    """SIGTERM the group, give it ``grace`` seconds, SIGKILL what is left.

    Returns once the shell and every orphan of the group are reaped (or, for
    processes stuck in the kernel, after a bounded wait and a warning).
    """
    if not _signal_group(pgid, signal.SIGTERM):
        return  # the group is empty: even the shell has been reaped already
    with anyio.move_on_after(grace) as graceful:
        await _wait_group_gone(process, pgid)
    if not graceful.cancelled_caught:
        return
    say(f"[shunter] processes still running {grace:g}s after SIGTERM; sending SIGKILL")
    _signal_group(pgid, signal.SIGKILL)
    with anyio.move_on_after(_KILL_WAIT) as killed:
        await _wait_group_gone(process, pgid)
    if killed.cancelled_caught:
        say(f"[shunter] warning: processes of group {pgid} survived SIGKILL for {_KILL_WAIT:g}s")


async def _wait_group_gone(process: anyio.abc.Process, pgid: int) -> None:
    await process.wait()
    # No event tells when orphans die (they may not be our children): poll.
    while _group_alive(process, pgid):
        await anyio.sleep(_POLL_INTERVAL)


def _group_alive(process: anyio.abc.Process, pgid: int) -> bool:
    """Whether any process of the group exists, after reaping those we may."""
    if process.returncode is None:
        return True
    _reap_orphans(pgid)
    return _signal_group(pgid, 0)


def _reap_orphans(pgid: int) -> None:
    """Reap the group's dead processes that were re-parented to us.

    Only called once the shell itself has been reaped by anyio, so this never
    steals its exit status.
    """
    while True:
        try:
            pid, _ = os.waitpid(-pgid, os.WNOHANG)
        except ChildProcessError:
            return  # none of the group's processes is our child
        if pid == 0:
            return  # some are our children but still running


def _signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to the group; False when the group no longer exists.

    The group id can't be reused while any member exists, and we only signal
    groups we started and haven't seen empty yet.
    """
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # a member changed its user id (setuid); it still exists
    return True


def _discard(_line: str) -> None:
    pass
