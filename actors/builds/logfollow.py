"""Reading a build's log while it grows: what ``follow=true`` and ``Runtime.follow_logs`` stream.

The pipeline actor answers ``ReadLog`` with ``read_log(build, ...)``: the
lines written since the reader's ``LogCursor``, the cursor after them, and
whether the selection (a step, a job, or the whole build) has ended. Reading
and the end check happen in one actor turn, so a reader told ``finished``
has had every line.

The text has the shape of the plain log (docs/design.md §7, ``GET .../logs``): each
step attempt opens with ``=== job / step attempt N ===``, with ``(STATUS)``
when it had already ended when first read. Lines of parallel jobs arrive
interleaved, so the header is written again whenever the text switches to
another attempt; an attempt that was read while it ran closes with
``=== job / step attempt N ended: STATUS ===``. For a step that has ended
the whole answer is exactly the plain log's text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from ..model.info import JOB_FINAL

if TYPE_CHECKING:
    from .build import Build
    from .records import JobRun, StepAttempt, StepRun

__all__ = ["LogCursor", "LogChunk", "read_log", "MAX_LINES", "MAX_CHARS"]

MAX_LINES = 2_000  # per answer: a reader far behind catches up in several answers
MAX_CHARS = 512 * 1024
_NOT_ENDED = frozenset({"QUEUE", "RUNNING", "DEPENDENT_WAITING"})

Key = tuple[str, str, int]  # job id, step id, attempt number


class LogCursor(msgspec.Struct, frozen=True, gc=False):
    """Where a reader is: lines read per step attempt, the attempts read to their end, those whose
    header gave their status already, and the attempt written last."""

    positions: dict[Key, int] = msgspec.field(default_factory=dict)
    closed: frozenset[Key] = frozenset()
    titled: frozenset[Key] = frozenset()
    last: Key | None = None


class LogChunk(msgspec.Struct, frozen=True, gc=False):
    """New log text, the cursor after it, and whether the selection has ended (nothing more will come).

    ``more`` says the answer was cut short: more text can be read at once.
    """

    text: str
    cursor: LogCursor
    finished: bool
    more: bool = False


def read_log(build: Build, job_id: str | None, step_id: str | None, cursor: LogCursor) -> LogChunk:
    """What ``cursor`` has not read yet of the build's log (one job, or one step, when named).

    Raises ``NotFound`` for an unknown job or step, like the plain log.
    """
    if step_id is not None:
        job, index = build.find_step(job_id, step_id)
        selection = [(job, job.steps[index])]
        ended = job.steps[index].status not in _NOT_ENDED
    elif job_id is not None:
        job = build.job(job_id)
        selection = [(job, step) for step in job.steps]
        ended = job.status in JOB_FINAL
    else:
        selection = [(job, step) for job in build.all_jobs() for step in job.steps]
        ended = build.finished
    reader = _Reader(cursor)
    for job, step in selection:
        for attempt in step.attempts:
            if not reader.read(job, step, attempt):
                return reader.chunk(finished=False, more=True)  # the rest comes in the next answer
    return reader.chunk(finished=ended)


class _Reader:
    def __init__(self, cursor: LogCursor) -> None:
        self.positions = dict(cursor.positions)
        self.closed = set(cursor.closed)
        self.titled = set(cursor.titled)
        self.last = cursor.last
        self.parts: list[str] = []
        self.lines = self.chars = 0

    def read(self, job: JobRun, step: StepRun, attempt: StepAttempt) -> bool:
        """Add what is new of one attempt; False once the budget is spent."""
        key = (job.id, step.spec.id, attempt.number)
        if key in self.closed:
            return True
        status = _status(step, attempt)
        position = self.positions.get(key)
        lines, after = attempt.log.read(position or 0, MAX_LINES - self.lines)
        room = MAX_CHARS - self.chars
        if len(lines) > 1 and sum(map(len, lines)) + len(lines) > room:
            # A chatty step: keep the answer small; what is left comes next time.
            fit = 1
            used = len(lines[0]) + 1
            while fit < len(lines) and used + len(lines[fit]) + 1 <= room:
                used += len(lines[fit]) + 1
                fit += 1
            lines, after = attempt.log.read(position or 0, fit)
        caught_up = after >= attempt.log.written
        title = f"=== {job.id} / {step.spec.id} attempt {attempt.number}"
        if position is None:
            if status is None:
                self._write(key, [f"{title} ==="])
            else:  # ended before it was first read: written as the plain log writes it
                self._write(key, [f"{title} ({status}) ==="])
                self.titled.add(key)
        elif lines and self.last != key:
            self._write(key, [f"{title} ==="])  # back to this attempt after another one's lines
        if lines:
            self._write(key, lines)
        self.positions[key] = after
        if status is not None and caught_up:
            if key not in self.titled:
                self._write(key, [f"{title} ended: {status} ==="])
            self.closed.add(key)
            self.titled.discard(key)
        return self.lines < MAX_LINES and self.chars < MAX_CHARS

    def _write(self, key: Key, lines: list[str]) -> None:
        self.parts.extend(lines)
        self.lines += len(lines)
        self.chars += sum(map(len, lines)) + len(lines)
        self.last = key

    def chunk(self, finished: bool, more: bool = False) -> LogChunk:
        text = "\n".join(self.parts) + "\n" if self.parts else ""
        cursor = LogCursor(self.positions, frozenset(self.closed), frozenset(self.titled), self.last)
        return LogChunk(text, cursor, finished, more)


def _status(step: StepRun, attempt: StepAttempt) -> str | None:
    """The attempt's final status, or None while it may still write."""
    if attempt.status != "RUNNING":
        return attempt.status
    if step.attempts[-1] is not attempt:
        return "CANCELED"  # superseded without a report of its own
    if step.status not in _NOT_ENDED:
        return step.status  # its job ended around it (cancelled, agent lost)
    return None
