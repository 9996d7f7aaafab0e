"""A build's state machine: phases, jobs, steps, attempts. Pure: no I/O.

The pipeline actor owns its builds and drives them with what agents, the
dispatcher and the concurrency group report; each transition returns the
jobs that must now be dispatched, and the actor carries that out. Keeping
the rules here (conditions, dependencies, retries, final status) makes them
testable without an event loop.

Phases are the stages in order, then ``finally`` as a last phase. A job
starts once its phase is reached and its ``depend-on`` jobs have ended; its
``if`` decides whether it runs. A failed job never cancels its siblings: the
phase ends when all its jobs have ended.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import msgspec

from ..model.errors import NotFound, NotRetryable
from ..model.spec import PipelineSpec
from ..model.vocab import (
    BUILD_FINAL,
    JOB_FAILING,
    JOB_FINAL,
    STEP_FAILING,
    STEP_FINAL,
    BuildStatus,
    RunCondition,
    JobStatus,
    StepStatus,
)
from .lost import LostAttempts
from .records import NOTHING, BuildShape, JobAttempt, JobRun, StepAttempt, StepLog

__all__ = ["Build", "new_build"]

# Read on every transition: module globals, not enum class attributes.
_WAITING, _QUEUE = JobStatus.DEPENDENT_WAITING, JobStatus.QUEUE
_RUNNING, _SUCCEED = BuildStatus.RUNNING, BuildStatus.SUCCEED
_SUCCESS, _ALWAYS, _FAILURE = RunCondition.SUCCESS, RunCondition.ALWAYS, RunCondition.FAILURE
_HEARTBEAT_TIMEOUT, _JOB_RUNNING = JobStatus.HEARTBEAT_TIMEOUT, JobStatus.RUNNING
_STEP_RUNNING, _STEP_FAILED, _STEP_CANCELED = StepStatus.RUNNING, StepStatus.FAILED, StepStatus.CANCELED
_UNRUN_ENDS = frozenset({JobStatus.UNEXEC, JobStatus.SKIP})  # what _consider ends a job with when it does not run


def new_build(*, build_id: str, spec: PipelineSpec | BuildShape, number: int, variables: dict[str, str],
              group: str | None, now: float, pipeline_id: str | None = None) -> Build:  # fmt: skip
    """A build just submitted: queued, no job or step record made yet.

    ``pipeline_id`` is the pipeline actor's own string where it has it; else it is taken from ``build_id``.
    """
    shape = spec if isinstance(spec, BuildShape) else BuildShape(spec)
    if pipeline_id is None:
        pipeline_id = sys.intern(build_id.rsplit(".", 1)[0])  # one copy of the pipeline id, not one per build
    return Build(build_id, pipeline_id, shape.spec, shape, number, variables, group, now, now)


class Build(LostAttempts, msgspec.Struct, gc=False):
    """One run of a pipeline (made by ``new_build``). See the module docstring for the rules.

    Not tracked by the garbage collector, like its records (``records.py``):
    nothing in it refers back to it.
    """

    id: str
    pipeline_id: str
    spec: PipelineSpec
    shape: BuildShape
    number: int
    variables: dict[str, str]
    group: str | None
    created_at: float  # submitted; unlike queued_at, a retry leaves it alone
    queued_at: float | None
    status: BuildStatus = BuildStatus.QUEUE
    reason: str | None = None
    execute_count: int = 1
    started_at: float | None = None
    finished_at: float | None = None
    cancelling: str | None = None  # the cancel reason, once cancelled
    # Job and step records are made when first needed (the build starts or
    # someone retries it): a queued build costs ~700 bytes and nine
    # objects less without them, and a million may queue.
    _phases: tuple[tuple[JobRun, ...], ...] | None = None
    # By job id, made on first use: the hot path finds a job by its place (BuildShape.places),
    # and a dict kept per build was one more object the garbage collector counted.
    _jobs: dict[str, JobRun] | None = None
    phase: int = 0
    locked: dict[str, set[tuple[str, str]]] | None = None  # chain -> (pool, agent) it holds; made on use

    @property
    def phases(self) -> tuple[tuple[JobRun, ...], ...]:
        """The job records, phase by phase (made on first use)."""
        if self._phases is None:
            self._phases = self._make_records()
        return self._phases

    @property
    def jobs(self) -> dict[str, JobRun]:
        """The job records by job id (made on first use)."""
        if self._jobs is None:
            self._jobs = {job.id: job for phase in self.phases for job in phase}
        return self._jobs

    def records_for_reading(self) -> tuple[tuple[JobRun, ...], ...]:
        """The job records; for a build that has none yet, made for the look and not kept."""
        return self._phases if self._phases is not None else self._make_records()

    def _make_records(self) -> tuple[tuple[JobRun, ...], ...]:
        """The job records phase by phase."""
        phases = self.shape.records()
        if self.status in BUILD_FINAL:  # it ended before it started (queue timeout, cancelled while queued)
            for phase in phases:
                for job in phase:
                    job.end_unrun(JobStatus.UNEXEC, self.reason or "")
        return phases

    @property
    def phase_names(self) -> list[str]:
        return self.shape.phase_names

    @property
    def chains(self) -> dict[str, str]:
        """Job id -> the first job of its ``lock-resource-with`` chain (jobs in no chain are absent)."""
        return self.shape.chains

    # -- queries ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status in BUILD_FINAL

    def all_jobs(self) -> Iterator[JobRun]:
        return iter(self.jobs.values())

    def job(self, job_id: str) -> JobRun:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise NotFound(f"build {self.id!r} has no job {job_id!r}") from None

    def find_step(self, job_id: str | None, step_id: str) -> tuple[JobRun, int]:
        """The job and index of ``step_id``; ``job_id`` may be omitted when unambiguous."""
        if job_id is not None:
            job = self.job(job_id)
            if step_id not in job.step_index:
                raise NotFound(f"job {job_id!r} of build {self.id!r} has no step {step_id!r}")
            return job, job.step_index[step_id]
        owners = [job for job in self.jobs.values() if step_id in job.step_index]
        if not owners:
            raise NotFound(f"build {self.id!r} has no step {step_id!r}")
        if len(owners) > 1:
            names = ", ".join(job.id for job in owners)
            raise NotFound(f"step {step_id!r} is in several jobs ({names}); name the job too")
        return owners[0], owners[0].step_index[step_id]

    def live_attempt(self, job_id: str, attempt: int) -> JobRun | None:
        """The job if ``attempt`` is its current, unfinished attempt (the fencing check)."""
        place = self.shape.places.get(job_id)
        if place is None or self._phases is None:
            return None
        job = self._phases[place[0]][place[1]]
        if not job.attempts:
            return None
        current = job.attempts[-1]
        if current.number != attempt or current.status in JOB_FINAL:
            return None
        return job

    # -- lifecycle ----------------------------------------------------------------

    def start(self, now: float, unrun: list[JobRun] | None = None) -> list[JobRun]:
        """Admitted: start running; returns the jobs to dispatch (``unrun``: as for ``advance``)."""
        self.status = _RUNNING
        self.started_at = now
        self.reason = None
        if self._phases is None and self.cancelling is None and self.shape.opens:
            # fresh: its records are made as this advance would leave them (BuildShape.opens)
            self._phases = self.shape.records(self.execute_count)
            return list(self._phases[0])
        return self.advance(now, unrun)

    def end_unstarted(self, status: BuildStatus, reason: str, now: float) -> None:
        """End a build that never started (queue timeout, cancelled while queued)."""
        self.status = status
        self.reason = reason
        self.finished_at = now
        if self._phases is None:
            return  # records made later show every job UNEXEC for this reason
        for job in self.jobs.values():
            if job.status not in JOB_FINAL:
                job.end_unrun(JobStatus.UNEXEC, reason)

    def advance(self, now: float, unrun: list[JobRun] | None = None) -> list[JobRun]:
        """Start what can start, move through phases, finish the build when all ended.

        Jobs their conditions end without running (``UNEXEC``, ``SKIP``) are
        added to ``unrun`` when given: the caller announces them without
        comparing every job's status before and after (a 500-job build's
        every job end did).
        """
        dispatch: list[JobRun] = []
        phases = self._phases if self._phases is not None else self.phases
        count = len(phases)
        while self.phase < count:
            unfinished = False
            for job in phases[self.phase]:
                if job.status is _WAITING:
                    self._consider(job, now, dispatch)
                    if unrun is not None and job.status in _UNRUN_ENDS:
                        unrun.append(job)
                if job.status not in JOB_FINAL:
                    unfinished = True
            if unfinished:
                break
            self.phase += 1
        if self.phase >= count and not dispatch:
            self._finish(now)
        return dispatch

    def _consider(self, job: JobRun, now: float, dispatch: list[JobRun]) -> None:
        depend_on = job.spec.depend_on
        bad_dep = earlier_failure = None
        if depend_on:  # most jobs have no depend-on: no lists or generators made for them
            deps = [self.jobs[name] for name in depend_on]
            if any(dep.status not in JOB_FINAL for dep in deps):
                return
            bad_dep = next((dep for dep in deps if not dep.ok), None)
        if job.phase:
            earlier_failure = next(
                (other for other in self.jobs.values() if other.phase < job.phase and other.failed), None
            )
        condition = job.spec.if_
        start, job.resume_step = job.resume_step, 0
        if self.cancelling is not None:
            if condition == RunCondition.CANCELED or condition == _ALWAYS:
                self._new_attempt(job, start, dispatch)
            else:
                job.end_unrun(JobStatus.UNEXEC, f"not run: {self.cancelling}")
            return
        failed = earlier_failure is not None or bad_dep is not None
        if condition == _SUCCESS and not failed or condition == _ALWAYS or condition == _FAILURE and failed:
            self._new_attempt(job, start, dispatch)
        elif condition == _SUCCESS:
            cause = bad_dep or earlier_failure
            assert cause is not None
            kind = "dependency" if cause is bad_dep else "job"
            job.end_unrun(JobStatus.UNEXEC, f"not run: {kind} {cause.id!r} ended {cause.status}")
        elif condition == _FAILURE:
            job.end_unrun(JobStatus.SKIP, "skipped: if: FAILURE, and nothing before it failed")
        else:  # CANCELED
            job.end_unrun(JobStatus.SKIP, "skipped: if: CANCELED, and the build was not cancelled")

    def _new_attempt(
        self,
        job: JobRun,
        start_step: int,
        dispatch: list[JobRun],
        retry_of: int | None = None,
        after_lost_agent: bool = False,
    ) -> None:
        attempt = JobAttempt(len(job.attempts) + 1, self.execute_count, retry_of, start_step, after_lost_agent)
        job.attempts += (attempt,)
        job.status = _QUEUE
        job.reason = None
        for step in job.steps[start_step:]:
            step.reset()
        dispatch.append(job)

    def _finish(self, now: float) -> None:
        if self.status in BUILD_FINAL:
            return
        self.finished_at = now
        if self.cancelling is not None:
            self.status, self.reason = BuildStatus.CANCELED, self.cancelling
            return
        # the first failed job (JobRun.failed) names the build's failure; advance has made the records
        for phase in self._phases if self._phases is not None else self.phases:
            for job in phase:
                if job.status in JOB_FAILING and not job.spec.continue_on_error:
                    self.status = BuildStatus.FAILED
                    self.reason = f"job {job.id!r} ended {job.status}: {job.reason or 'no reason given'}"
                    return
        self.status, self.reason = _SUCCEED, None

    # -- reports from agents and the dispatcher ---------------------------------------

    def job_started(self, job: JobRun, node: str, agent: str, context: dict[str, str], now: float) -> None:
        attempt = job.attempts[-1]
        attempt.status = _JOB_RUNNING
        attempt.node, attempt.agent = node, agent
        attempt.started_at = now
        if attempt.context_before is None:
            attempt.context_before = context or NOTHING  # an empty one shared: one dict less kept per job
        job.status = _JOB_RUNNING
        job.reason = None  # why it waited (JobWaiting) no longer holds

    def lock_agent(self, job: JobRun, pool: str, agent: str) -> None:
        """``job`` started on ``agent``: if it is in a lock chain, the chain holds that agent."""
        root = self.shape.chains.get(job.id)
        if root is not None:
            if self.locked is None:
                self.locked = {}
            self.locked.setdefault(root, set()).add((pool, agent))

    def agents_to_unlock(self, everything: bool = False) -> list[tuple[str, str]]:
        """(pool, agent) held by chains whose jobs have all ended, or by every chain
        when ``everything`` (the build ended); they are no longer held."""
        if not self.locked:
            return []
        chains = self.shape.chains
        freed: list[tuple[str, str]] = []
        for root in list(self.locked):
            if everything or all(job.status in JOB_FINAL for job in self.jobs.values() if chains.get(job.id) == root):
                freed.extend(self.locked.pop(root))
        return freed

    def step_started(self, job: JobRun, index: int, log: StepLog, now: float) -> StepAttempt:
        step = job.steps[index]
        previous = step.attempts[-1].number if step.attempts else None
        attempt = StepAttempt(len(step.attempts) + 1, previous, self.execute_count, job.attempts[-1].number, log, now)
        step.attempts += (attempt,)
        step.status = _STEP_RUNNING
        step.reason = None
        return attempt

    def step_ended(
        self,
        job: JobRun,
        index: int,
        status: StepStatus,
        reason: str | None,
        exit_code: int | None,
        outputs: dict[str, str],
        exported_env: dict[str, str],
        now: float,
    ) -> None:
        step = job.steps[index]
        attempt = step.attempts[-1]
        attempt.status, attempt.reason, attempt.exit_code = status, reason, exit_code
        # empty ones shared (never changed): two dicts less kept per step
        attempt.outputs, attempt.exported_env = outputs or NOTHING, exported_env or NOTHING
        attempt.finished_at = now
        if attempt.log.file is not None:
            attempt.log.close()
        step.status, step.reason = status, reason

    def step_not_run(self, job: JobRun, index: int, status: StepStatus, reason: str) -> None:
        step = job.steps[index]
        step.status, step.reason = status, reason

    def job_ended(self, job: JobRun, status: JobStatus, reason: str | None, now: float,
                  unrun: list[JobRun] | None = None) -> list[JobRun]:  # fmt: skip
        """The attempt of ``job`` ended: its steps settle, then the build advances (see ``advance``)."""
        attempt = job.attempts[-1]
        attempt.status, attempt.reason = status, reason
        attempt.finished_at = now
        job.status, job.reason = status, reason
        # the step that was running fails with its agent (as when the loss is
        # retried), or is stopped; its attempt ends with it, never left RUNNING
        stopped = _STEP_FAILED if status == _HEARTBEAT_TIMEOUT else _STEP_CANCELED
        for step in job.steps[attempt.start_step :]:
            if step.status not in STEP_FINAL:
                step.status = stopped if step.status == _STEP_RUNNING else StepStatus.UNEXEC
                step.reason = reason
                last = step.attempts[-1] if step.attempts else None
                if last is not None and last.status == _STEP_RUNNING:
                    last.status, last.reason, last.finished_at = step.status, reason, now
            if step.attempts:
                log = step.attempts[-1].log
                if log.file is not None:  # an attempt cut short never reported its end
                    log.close()
        return self.advance(now, unrun)

    # -- cancel -------------------------------------------------------------------

    def cancel(self, reason: str, now: float) -> list[JobRun]:
        """Cancel: returns the jobs (queued or running) whose attempts must be stopped.

        A queued build ends at once. A running one ends once every stopped job
        has reported back (and any ``if: CANCELED`` / ``ALWAYS`` finally jobs ran).
        """
        if self.status == BuildStatus.QUEUE:
            self.end_unstarted(BuildStatus.CANCELED, reason, now)
            return []
        if self.cancelling is None:
            self.cancelling = reason
        return [job for job in self.jobs.values() if job.status == JobStatus.QUEUE or job.status == JobStatus.RUNNING]

    # -- retries ------------------------------------------------------------------

    def retry_in_run(self, job_id: str | None, step_id: str | None, now: float) -> JobRun:
        """Retry a failed job (or from a failed step) as part of this running build.

        Bypasses group admission: the build keeps its slot, its place and its
        execute_count (docs/design.md §3.1 item 4). Returns the job to dispatch.
        """
        if self.cancelling is not None:
            raise NotRetryable(f"build {self.id!r} is being cancelled")
        if job_id is None and step_id is None:
            raise NotRetryable(
                f"build {self.id!r} is {self.status}: a whole-build retry needs a finished build; "
                "retry a failed job or step instead"
            )
        job, start = self.find_step(job_id, step_id) if step_id is not None else (self.job(job_id or ""), 0)
        if job.status not in JOB_FAILING:
            raise NotRetryable(f"job {job.id!r} is {job.status}; only a job that failed can be retried")
        if step_id is not None and job.steps[start].status not in STEP_FAILING:
            raise NotRetryable(
                f"step {step_id!r} of job {job.id!r} is {job.steps[start].status}; only a failed step can be retried"
            )
        if job.phase != self.phase:
            raise NotRetryable(
                f"job {job.id!r} is in phase {self.phase_names[job.phase]!r} but the build has moved on to "
                f"{self.phase_names[self.phase]!r}; retry the build once it has finished"
            )
        dispatch: list[JobRun] = []
        self._reopen_dependents(job)
        self._new_attempt(job, start, dispatch, retry_of=job.attempts[-1].number if job.attempts else None)
        return job

    def _reopen_dependents(self, job: JobRun) -> None:
        """Dependents that did not run because ``job`` failed get another chance."""
        pending = [job.id]
        while pending:
            name = pending.pop()
            for other in self.phases[job.phase]:
                if name in other.spec.depend_on and other.status in (JobStatus.UNEXEC, JobStatus.SKIP):
                    other.reset()
                    pending.append(other.id)

    def rerun_plan(self, *, job_id: str | None, step_id: str | None, failed_only: bool) -> dict[str, int]:
        """Which jobs a retry of this finished build runs again, and from which step.

        Whole: every job. ``failed_only``: every job that did not succeed,
        whole. A job or step: that job (from that step) and whatever did not
        succeed in its phase or after it. ``finally`` jobs always run again.
        Raises ``NotRetryable`` (changing nothing) when there is nothing to retry.
        """
        if not self.finished:
            raise NotRetryable(f"build {self.id!r} is {self.status}")
        finally_phase = len(self.spec.stages)  # == len(self.phases) when there is no finally
        plan: dict[str, int] = {job.id: 0 for job in self.jobs.values() if job.phase == finally_phase}
        if job_id is None and step_id is None and not failed_only:
            plan.update({name: 0 for name in self.jobs})
        elif job_id is None and step_id is None:
            unfinished = [job for job in self.jobs.values() if job.phase < finally_phase and job.status != JobStatus.SUCCEED]
            if not unfinished:
                raise NotRetryable(f"build {self.id!r} has no failed job to retry")
            plan.update({job.id: 0 for job in unfinished})
        else:
            job, start = self.find_step(job_id, step_id) if step_id is not None else (self.job(job_id or ""), 0)
            if step_id is not None and job.steps[start].status not in STEP_FAILING | {StepStatus.UNEXEC}:
                raise NotRetryable(
                    f"step {step_id!r} of job {job.id!r} is {job.steps[start].status}; "
                    "only a failed step or one that never ran can be retried"
                )
            blocker = next(
                (other for other in self.jobs.values() if other.phase < job.phase and other.failed), None
            )
            if blocker is not None:
                raise NotRetryable(
                    f"job {job.id!r} would not run: job {blocker.id!r} of stage "
                    f"{self.phase_names[blocker.phase]!r} ended {blocker.status} and still stops it; "
                    f"retry job {blocker.id!r} or the failed jobs (failed_only)"
                )
            for other in self.jobs.values():
                if other.phase >= job.phase and other.status != JobStatus.SUCCEED:
                    plan.setdefault(other.id, 0)
            plan[job.id] = start
        return plan

    def prepare_rerun(self, *, job_id: str | None, step_id: str | None, failed_only: bool, now: float) -> None:
        """Reset a finished build for a new execution, as ``rerun_plan`` says.

        A new admission follows. Attempt history is kept; execute_count grows by one.
        """
        plan = self.rerun_plan(job_id=job_id, step_id=step_id, failed_only=failed_only)
        for name, start in plan.items():
            self.jobs[name].reset(start)
        self.phase = min(self.jobs[name].phase for name in plan)
        self.execute_count += 1
        self.status, self.reason = BuildStatus.QUEUE, None
        self.cancelling = None
        self.queued_at, self.started_at, self.finished_at = now, None, None
