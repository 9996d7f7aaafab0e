"""Steps never outlive the server: a watchdog process kills their process groups.

However the server dies (``kill -9`` included), the kernel closes its end of
a pipe. A tiny helper process, started on the first shell step, reads that
pipe: ``+PGID`` when a step's process group starts, ``-PGID`` when it has
been reaped. At end of file — the server is gone — it sends SIGKILL to every
group still registered, then exits (docs/design.md §10).

The helper runs in a session of its own (a Ctrl-C to the server's terminal
does not reach it) and ignores SIGINT/SIGTERM/SIGHUP, so it outlives the
server just long enough. The pipe's write end is not inherited by steps
(Python makes descriptors non-inheritable), so only the server holds it.
A ``PR_SET_PDEATHSIG`` on the step's shell alone would not do: it reaches
the shell, not the processes the script started.
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["Watchdog", "watchdog"]

_PROGRAM = r"""
import os, signal, sys
for name in ("SIGINT", "SIGTERM", "SIGHUP"):
    signal.signal(getattr(signal, name), signal.SIG_IGN)
groups = set()
for line in sys.stdin.buffer:
    line = line.strip()
    if line[:1] == b"+":
        groups.add(int(line[1:]))
    elif line[:1] == b"-":
        groups.discard(int(line[1:]))
for pgid in groups:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class Watchdog:
    """The server's side: register and unregister step process groups."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.failed = False

    def _start(self) -> subprocess.Popen[bytes] | None:
        if self.process is None and not self.failed:
            try:
                self.process = subprocess.Popen(
                    [sys.executable, "-S", "-c", _PROGRAM], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                )  # fmt: skip
            except OSError:
                self.failed = True  # steps still run; they are stopped on a graceful exit as before
        return self.process

    def _send(self, text: str) -> None:
        process = self._start()
        if process is None or process.stdin is None:
            return
        try:
            process.stdin.write(text.encode())
            process.stdin.flush()
        except OSError:
            self.failed = True
            self.process = None

    def register(self, pgid: int) -> None:
        self._send(f"+{pgid}\n")

    def unregister(self, pgid: int) -> None:
        if self.process is not None:
            self._send(f"-{pgid}\n")

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


watchdog = Watchdog()
"""The one watchdog of this process (started on first use)."""

os.register_at_fork(after_in_child=lambda: setattr(watchdog, "process", None))  # a fork has no watchdog of its own
