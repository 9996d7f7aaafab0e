"""What ``shunter run`` prints while its build runs: one line per stage, job and step change.

``Progress.show(event)`` is called with each event of the build; it prints
durations, the reason of every status but ``SUCCEED``, and a failed step's
last log lines (with ``verbose``, every step's whole output as it ends).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from actors.model.errors import ShunterError
from actors.model.vocab import JOB_FINAL, BuildStatus, EventKind, JobStatus, StageStatus, StepStatus

__all__ = ["Progress", "LOG_TAIL"]

_UNDERWAY = (JobStatus.QUEUE, JobStatus.RUNNING)  # a build, job or stage not ended (the same words for each)
LOG_TAIL = 15  # lines of a failed step's log shown by `run`


class Progress:
    """Prints one line per stage, job and step change of a build, with durations.

    Jobs and steps are printed from their events. A stage has no events of
    its own: it is shown RUNNING when its first job starts and finished when
    the events say all its jobs have ended (its status then comes from the
    build snapshot, which knows about continue-on-error).
    """

    def __init__(self, rt: Any, build_id: str, verbose: bool = False) -> None:
        self.rt = rt
        self.build_id = build_id
        self.verbose = verbose  # every step's output, not only a failed step's tail
        self.origin: float | None = None
        self.began: dict[Any, float] = {}  # what is running -> when it started
        self.layout: list[tuple[str, list[str]]] | None = None  # stage name -> its job ids
        self.jobs: dict[str, str] = {}  # job id -> JobStatus, from the events
        self.stages: dict[str, str] = {}  # stage name -> what was printed last
        self.status: str | None = BuildStatus.QUEUE

    async def show(self, event: Any) -> bool:
        """Print what ``event`` changed; True once the build has finished."""
        now = _seconds(event.time)
        if self.origin is None:
            self.origin = now
        at = f"{now - self.origin:7.2f}s "
        if event.kind == EventKind.BUILD:
            self.status = event.status
            if event.status in _UNDERWAY:
                self.began.setdefault("build", now)
                self._line(at, f"build {event.status}{_because(event)}")
                return False
            await self._stages(at, now)
            took = now - self.began.get("build", now)
            self._line(at, f"build {event.status} in {took:.2f}s{_because(event)}")
            return True
        attempt = f" (attempt {event.attempt})" if (event.attempt or 1) > 1 else ""
        if event.kind == EventKind.JOB:
            key = ("job", event.job_id, event.attempt)
            if event.status == JobStatus.RUNNING:
                self.began[key] = now
            self.jobs[event.job_id] = event.status
            if event.status == JobStatus.RUNNING:
                await self._stages(at, now)  # its stage starts before it does
            self._line(at, f"    job {event.job_id} {event.status}{attempt}{self._took(key, event, now)}"
                           f"{_because(event)}")  # fmt: skip
            if event.status in JOB_FINAL:
                await self._stages(at, now)
        elif event.kind == EventKind.STEP:
            step_key = ("step", event.job_id, event.step_id, event.attempt)
            if event.status == StepStatus.RUNNING:
                self.began[step_key] = now
            self._line(at, f"      step {event.job_id}/{event.step_id} {event.status}{attempt}"
                           f"{self._took(step_key, event, now)}{_because(event)}")  # fmt: skip
            if self.verbose and event.status not in (StepStatus.QUEUE, StepStatus.RUNNING, StepStatus.SKIP,
                                                     StepStatus.UNEXEC):  # fmt: skip
                await self._log_tail(event, limit=None)
            elif event.status in (StepStatus.FAILED, StepStatus.EXEC_TIMEOUT):
                await self._log_tail(event)
        return False

    def _took(self, key: Any, event: Any, now: float) -> str:
        if event.status in _UNDERWAY:
            return ""
        began = self.began.pop(key, None)
        return "" if began is None else f" in {now - began:.2f}s"

    async def _stages(self, at: str, now: float) -> None:
        if self.layout is None:
            build = await self.rt.build(self.build_id)
            self.layout = [(stage.name, [job.id for job in stage.jobs]) for stage in build.stages]
            for stage in build.stages:
                for job in stage.jobs:
                    self.jobs.setdefault(job.id, job.status)
        for name, jobs in self.layout:
            statuses = [self.jobs.get(job, JobStatus.QUEUE) for job in jobs]
            shown = self.stages.get(name)
            if shown is None and JobStatus.RUNNING in statuses:
                self.stages[name] = StageStatus.RUNNING
                self.began[("stage", name)] = now
                self._line(at, f"  stage {name} RUNNING")
            elif shown in (None, StageStatus.RUNNING) and all(status in JOB_FINAL for status in statuses):
                status = await self._stage_status(name)
                if status is None:
                    continue
                self.stages[name] = status
                began = self.began.pop(("stage", name), None)
                self._line(at, f"  stage {name} {status}" + ("" if began is None else f" in {now - began:.2f}s"))

    async def _stage_status(self, name: str) -> str | None:
        build = await self.rt.build(self.build_id)
        for stage in build.stages:
            if stage.name == name and stage.status not in _UNDERWAY:
                return str(stage.status)
        return None  # the build has moved on (a retry): shown when it ends again

    async def _log_tail(self, event: Any, limit: int | None = LOG_TAIL) -> None:
        """Print the output of the step attempt ``event`` ended: its last ``limit`` lines (None: all)."""
        try:
            text = await self.rt.logs(self.build_id, job=event.job_id, step=event.step_id)
        except ShunterError:
            return
        lines = [line for line in _attempt_lines(text, event.job_id, event.step_id, event.attempt) if line.strip()]
        for line in lines[-limit:] if limit is not None else lines:
            print(f"          | {line}", flush=True)

    @staticmethod
    def _line(at: str, text: str) -> None:
        print(f"{at}{text}", flush=True)


def _attempt_lines(text: str, job: str, step: str, attempt: int | None) -> list[str]:
    """The lines of one attempt in a step's plain log (between its header and the next attempt's)."""
    lines = text.splitlines()
    number = attempt or 1
    start = next((i for i, line in enumerate(lines) if line.startswith(f"=== {job} / {step} attempt {number} (")),
                 None)  # fmt: skip
    if start is None:
        return []
    after = f"=== {job} / {step} attempt {number + 1} ("
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(after)), len(lines))
    return lines[start + 1 : end]


def _because(event: Any) -> str:
    return f": {event.reason}" if event.reason and event.status != JobStatus.SUCCEED else ""


def _seconds(rfc3339: str) -> float:
    try:
        return datetime.fromisoformat(rfc3339).timestamp()
    except ValueError:
        return 0.0
