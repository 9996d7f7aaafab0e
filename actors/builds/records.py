"""What a build keeps: its jobs, steps and their attempts, and the shape
every build of one pipeline definition shares. Pure data with small rules
(a job's outcome, a reset for a retry); the transitions between them live
in ``build.py``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, ClassVar

import msgspec

from ..model.reports import StepRan
from ..model.spec import Job, PipelineSpec, Step
from ..model.vocab import JOB_FAILING, STEP_FAILING, STEP_FINAL, JobStatus, RunCondition, StepStatus

__all__ = ["NOTHING", "BuildShape", "JobRun", "StepRun", "JobAttempt", "StepAttempt", "StepLog", "step_log"]

# Read on every transition: module globals, not enum class attributes (5 ns, not 50).
_WAITING, _QUEUE, _SUCCEED = JobStatus.DEPENDENT_WAITING, JobStatus.QUEUE, JobStatus.SUCCEED
_STEP_QUEUE, _STEP_RUNNING = StepStatus.QUEUE, StepStatus.RUNNING
_OPENING = frozenset({RunCondition.SUCCESS, RunCondition.ALWAYS})  # a job's `if` that lets it start first
NOTHING: dict[str, str] = {}  # an empty mapping records share: never changed
_NO_LINES: list[str] = []  # a log's lines until its first: shared, never appended to


class StepLog(msgspec.Struct, gc=False):
    """A step attempt's output: the agent appends, readers copy. Bounded.

    In memory (no state directory) it keeps the first and the last lines when
    a step is very chatty, and at most ``max_bytes`` of text. With a ``path``
    (durable state, docs/design.md §10) lines go to that file instead, which is
    created on the first line; past ``max_bytes`` a truncation marker is
    written and the rest is dropped, so memory stays flat whatever the step
    prints. Readers stream the file (``chunks``). Not tracked by the garbage
    collector, and its list of lines is made on the first line: most steps
    of a busy server print nothing.
    """

    MAX_LINES: ClassVar[int] = 20_000
    DEFAULT_MAX_BYTES: ClassVar[int] = 32 * 1024 * 1024

    path: str | None = None
    max_bytes: int = DEFAULT_MAX_BYTES
    lines: list[str] = msgspec.field(default_factory=lambda: _NO_LINES)
    dropped: int = 0
    file: IO[bytes] | None = None
    size: int = 0
    truncated: int = 0  # bytes dropped past max_bytes

    def append(self, line: str) -> None:
        if self.truncated:
            self.truncated += len(line) + 1
            return
        data_size = len(line) + 1  # characters: close enough to bytes for a cap, and cheap
        if self.size + data_size > self.max_bytes:
            self.truncated = data_size
            self._write(f"[shunter] log truncated: it reached max-log-bytes ({self.max_bytes}); "
                        "further output of this step is dropped")  # fmt: skip
            return
        self.size += data_size
        self._write(line)

    def _write(self, line: str) -> None:
        if self.path is None:
            lines = self.lines
            if lines is _NO_LINES:
                self.lines = lines = []
            if len(lines) >= self.MAX_LINES:
                # keep the head, drop from the middle of the tail
                del lines[self.MAX_LINES // 2]
                self.dropped += 1
            lines.append(line)
            return
        if self.file is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self.file = open(self.path, "ab")
        self.file.write(line.encode("utf-8", "replace") + b"\n")

    def sync(self) -> None:
        """Hand what was written to the OS: it then survives a ``kill -9`` of the server."""
        if self.file is not None:
            self.file.flush()

    def close(self) -> None:
        """The attempt has ended: no more lines; the file (if any) is closed."""
        if self.file is not None:
            self.file.close()
            self.file = None

    def chunks(self, size: int = 65_536) -> Iterator[str]:
        """The text in pieces, read from the file as it goes (never the whole log at once)."""
        if self.path is None:
            yield self.text()
            return
        if self.file is not None:
            self.file.flush()
        try:
            with open(self.path, "rb") as handle:
                while piece := handle.read(size):
                    yield piece.decode("utf-8", "replace")
        except FileNotFoundError:
            return

    @property
    def written(self) -> int:
        """The end position for ``read``: lines ever appended (dropped ones included) in memory,
        bytes written to a file."""
        if self.path is None:
            return len(self.lines) + self.dropped
        if self.file is not None:
            self.file.flush()
        try:
            return os.path.getsize(self.path)
        except FileNotFoundError:
            return 0  # no line yet: the file is made on the first

    def read(self, position: int, max_lines: int) -> tuple[list[str], int]:
        """Up to ``max_lines`` lines appended at or after ``position``, and the position after them.

        In memory a position counts appended lines, so a follower reads on
        from where it stopped whatever was dropped meanwhile; lines dropped
        before it got to them read as one ``[shunter] N line(s) dropped``
        line, as in ``text()``. In a file it is a byte offset, and only whole
        lines are read.
        """
        if self.path is not None:
            return self._read_file(position, max_lines)
        lines, half = self.lines, self.MAX_LINES // 2
        found: list[str] = []
        if max_lines <= 0:
            return found, position
        if position < half:  # the head is never dropped
            found = lines[position : min(half, position + max_lines)]
            position += len(found)
            if position < half or len(found) == max_lines:
                return found, position
        first_kept = half + self.dropped  # appended line i >= first_kept is lines[i - dropped]
        if position < first_kept:
            found.append(f"[shunter] {first_kept - position} line(s) dropped")
            position = first_kept
        start = position - self.dropped
        tail = lines[start : start + max(0, max_lines - len(found))]
        found.extend(tail)
        return found, position + len(tail)

    def _read_file(self, position: int, max_lines: int) -> tuple[list[str], int]:
        found: list[str] = []
        path = self.path
        if max_lines <= 0 or path is None:
            return found, position
        if self.file is not None:
            self.file.flush()
        try:
            with open(path, "rb") as handle:
                handle.seek(position)
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a line still being written: the next read has it whole
                    found.append(raw[:-1].decode("utf-8", "replace"))
                    position += len(raw)
                    if len(found) >= max_lines:
                        break
        except FileNotFoundError:
            pass
        return found, position

    def text(self) -> str:
        if self.path is not None:
            return "".join(self.chunks())
        if not self.lines:
            return ""
        if self.dropped:
            head = self.lines[: self.MAX_LINES // 2]
            tail = self.lines[self.MAX_LINES // 2 :]
            return "\n".join([*head, f"[shunter] {self.dropped} line(s) dropped", *tail]) + "\n"
        return "\n".join(self.lines) + "\n"


def step_log(payload: Any, step: Step) -> StepLog:
    """A new log for an attempt of ``step``: a file under the payload's ``log_dir``, else in memory."""
    if payload.log_dir is None:
        # the shared empty lines given, not left to the field's default factory: a Python call less per step
        return StepLog(None, payload.max_log_bytes, _NO_LINES)
    name = f"{payload.job.id}.{step.id}.{time.time_ns():x}.log"  # unique across restarts too
    return StepLog(os.path.join(payload.log_dir, name), payload.max_log_bytes, _NO_LINES)


class StepAttempt(msgspec.Struct, gc=False):
    """One run of a step. Like every record here, a struct the garbage
    collector does not track (no record refers back to its owner, so none is
    part of a cycle): a build's records used to be 13 tracked objects the
    collector rescanned on every full pass, for as long as the build was kept."""

    number: int
    retry_of: int | None
    execute_count: int
    job_attempt: int
    log: StepLog
    started_at: float
    status: StepStatus = _STEP_RUNNING
    exit_code: int | None = None
    finished_at: float | None = None
    reason: str | None = None
    # the step's report replaces these: never mutated, so a shared empty one until then
    outputs: dict[str, str] = msgspec.field(default_factory=lambda: NOTHING)
    exported_env: dict[str, str] = msgspec.field(default_factory=lambda: NOTHING)


class StepRun(msgspec.Struct, gc=False):
    spec: Step
    status: StepStatus = _STEP_QUEUE
    reason: str | None = None
    # A tuple, replaced on the rare new attempt: a list is an object the garbage collector tracks
    # and rescans for as long as the build is kept (two per build of one job of one step).
    attempts: tuple[StepAttempt, ...] = ()

    def reset(self) -> None:
        self.status = _STEP_QUEUE
        self.reason = None

    def ran(self, ran: StepRan, execute_count: int, job_attempt: int, now: float) -> int:
        """A run an agent made inline (``InstantJob``): a new attempt, ended as soon as started, as
        ``Build.step_started`` and ``Build.step_ended`` at one instant would leave it; its number."""
        attempts = self.attempts
        number = len(attempts) + 1
        self.attempts = attempts + (StepAttempt(number, attempts[-1].number if attempts else None, execute_count,
                                                job_attempt, ran.log, now, ran.status, ran.exit_code, now, ran.reason,
                                                ran.outputs or NOTHING, ran.exported_env or NOTHING),)  # fmt: skip
        if ran.log.file is not None:
            ran.log.close()
        self.status, self.reason = ran.status, ran.reason
        return number

    @property
    def failed_the_job(self) -> bool:
        """A failure that stops the job: ``continue-on-error: true``/``auto`` steps fail alone."""
        return self.status in STEP_FAILING and not self.spec.continue_on_error.continues


class JobAttempt(msgspec.Struct, gc=False):
    number: int
    execute_count: int
    retry_of: int | None
    start_step: int
    # made by the runtime itself when the previous attempt's agent was lost,
    # so it spends the step's retry-times rather than starting afresh
    after_lost_agent: bool = False
    status: JobStatus = _QUEUE
    node: str | None = None
    agent: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    reason: str | None = None
    context_before: dict[str, str] | None = None


class JobRun(msgspec.Struct, gc=False):
    """A job of one build: its attempts and its steps (made from ``spec`` by ``BuildShape.records``)."""

    id: str  # read on every transition: a field, not a property
    spec: Job
    phase: int
    step_index: dict[str, int]  # shared by every build of the spec: read-only
    steps: tuple[StepRun, ...]
    status: JobStatus = _WAITING
    reason: str | None = None
    attempts: tuple[JobAttempt, ...] = ()  # a tuple, as StepRun's
    resume_step: int = 0  # where the next attempt starts (a step retry)

    @property
    def attempt(self) -> JobAttempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def failed(self) -> bool:
        """Ended in a failing status that counts against the build."""
        return self.status in JOB_FAILING and not self.spec.continue_on_error

    @property
    def ok(self) -> bool:
        """Ended well enough for dependents with ``if: SUCCESS`` to run."""
        return self.status == _SUCCEED or (self.status in JOB_FAILING and self.spec.continue_on_error)

    def end_unrun(self, status: JobStatus, reason: str) -> None:
        """End without an attempt (``SKIP``, ``UNEXEC``), and every step that has not ended with it."""
        self.status = status
        self.reason = reason
        step_status = StepStatus(status)
        for step in self.steps:
            if step.status not in STEP_FINAL:
                step.status = step_status
                step.reason = reason

    def reset(self, from_step: int = 0) -> None:
        self.status = _WAITING
        self.reason = None
        self.resume_step = from_step
        for step in self.steps[from_step:]:
            step.reset()


class BuildShape:
    """What every build of one pipeline definition shares, made once per definition.

    Phase names, lock chains and each job's step index depend on the spec
    alone; keeping one copy per definition instead of one per build saves
    about 300 bytes and four dicts per build (measured with tracemalloc).
    Read-only once made.
    """

    __slots__ = ("spec", "phase_names", "chains", "step_index", "layout", "places", "definition", "mask", "fresh",
                 "unstarted", "opens", "opened")

    def __init__(
        self, spec: PipelineSpec, definition: str = "", mask: Callable[[str], str] | None = None
    ) -> None:
        self.spec = spec
        self.definition = definition  # its key in the store, with durable state (docs/design.md §10)
        # hides secret values in what a build shows (variables, group, reason):
        # a submitter may pass a secret's value as a variable (docs/design.md §12)
        self.mask = mask
        self.phase_names = [stage.name for stage in spec.stages] + (["finally"] if spec.finally_ else [])
        self.chains = _lock_chains(spec)  # job id -> its lock-resource-with chain's first job
        self.step_index = {job.id: {step.id: i for i, step in enumerate(job.steps)} for job in spec.all_jobs()}
        # what a build's records are made from: phase by phase (the stages, then finally), each phase's
        # number and, for each of its jobs, its spec, step index and its step when it has only one (see
        # ``records``); numbered here, as an enumerate per build cost ~60 ns
        phases = [stage.jobs for stage in spec.stages] + ([spec.finally_] if spec.finally_ else [])
        self.layout = tuple(
            (index, tuple((job, self.step_index[job.id], job.steps[0] if len(job.steps) == 1 else None)
                          for job in jobs))
            for index, jobs in enumerate(phases)
        )  # fmt: skip
        # job id -> (phase, position in it): where a build's record of that job is
        self.places = {job.id: (index, at) for index, jobs in enumerate(phases) for at, job in enumerate(jobs)}
        # the stages every untouched build of this shape shows, and the key they hold for (snapshot.py)
        self.fresh: tuple[tuple[Any, ...], list[Any]] | None = None
        self.unstarted: list[Any] | None = None  # the stages of a queued build whose records are not made yet
        # A fresh build's first advance starts every job of its first phase and nothing else when none
        # of them waits for another or has an `if` that could end it unrun: ``records`` then makes the
        # first attempts itself, and every such build answers its submission with the same stages
        # (``opened``, snapshot.py). No mutex either: a mutex label that fails to render ends its job.
        first = self.layout[0][1] if self.layout else ()
        self.opens = bool(first) and all(
            not job.depend_on and job.mutex is None and job.if_ in _OPENING for job, _, _ in first
        )
        self.opened: list[Any] | None = None

    def records(self, opening: int | None = None) -> tuple[tuple[JobRun, ...], ...]:
        """A build's job records phase by phase.

        With ``opening`` (the build's execute count; only where ``opens``), the
        first phase's jobs are made queued with their first attempt, as the
        build's first ``advance`` would leave them. Once per build, on its hot
        path: plain loops, since each comprehension is a function call of its own (CPython 3.11), and
        a one-step job's steps as a tuple display: ``tuple(map(...))`` of one cost 80 ns more.
        """
        phases: list[tuple[JobRun, ...]] = []
        for index, specs in self.layout:
            made: list[JobRun] = []
            for spec, step_index, only in specs:
                steps = (StepRun(only),) if only is not None else tuple(map(StepRun, spec.steps))
                if opening is None:
                    job = JobRun(spec.id, spec, index, step_index, steps)
                else:
                    job = JobRun(spec.id, spec, index, step_index, steps, _QUEUE, None,
                                 (JobAttempt(1, opening, None, 0),))  # fmt: skip
                made.append(job)
            opening = None
            phases.append(tuple(made))
        return tuple(phases)


def _lock_chains(spec: PipelineSpec) -> dict[str, str]:
    """Map every job of a ``lock-resource-with`` chain to the chain's first job."""
    targets = {job.id: job.runs_on.lock_resource_with for job in spec.all_jobs() if job.runs_on.lock_resource_with}
    if not targets:
        return {}
    chains: dict[str, str] = {}
    for job_id in targets:
        root = job_id
        while root in targets:
            root = targets[root]  # the loader refused cycles
        chains[job_id] = chains[root] = root
    return chains
