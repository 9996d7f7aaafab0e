"""Public snapshots of builds (docs/design.md §7 JSON), made from the pipeline's state."""

from __future__ import annotations

from .build import Build
from .records import JobRun
from ..model.info import (
    BuildInfo,
    JobAttemptInfo,
    JobInfo,
    StageInfo,
    StepAttemptInfo,
    StepInfo,
    rfc3339,
)
from ..model.vocab import BUILD_FINAL, BuildStatus, JobStatus, StageStatus

__all__ = ["build_info", "opened_info"]


def build_info(build: Build, queue_position: int | None = None) -> BuildInfo:
    """The public snapshot of a build (docs/design.md §7)."""
    stages = _fresh_stages(build)
    if stages is None:
        stages = _stages(build)
    group, reason, mask = build.group, build.reason, build.shape.mask
    # a copy: builds without variables share one empty dict, and a caller may change what it is given
    variables = dict(build.variables)
    if mask is not None:  # only with secrets configured
        variables = {name: mask(value) for name, value in variables.items()}
        group = group and mask(group)
        reason = reason and mask(reason)
    created = rfc3339(build.created_at)
    # queued as it was submitted (every build but a retried one): one stamp formatted for both
    queued = created if build.queued_at == build.created_at else rfc3339(build.queued_at)
    return BuildInfo(
        id=build.id,
        pipeline_id=build.pipeline_id,
        number=build.number,
        status=build.status,
        execute_count=build.execute_count,
        group=group,
        queue_position=queue_position if build.status == BuildStatus.QUEUE else None,
        reason=reason,
        variables=variables,
        created_at=created,
        queued_at=queued,
        started_at=rfc3339(build.started_at),
        finished_at=rfc3339(build.finished_at),
        stages=stages,
    )


def opened_info(build: Build) -> BuildInfo:
    """``build_info`` of a build just submitted and started in one pass (``BuildShape.opens``).

    Its stages are the same for every such build of its shape, made once;
    submitted, queued and started at one instant, it formats that stamp once.
    """
    shape = build.shape
    stages = shape.opened
    if stages is None:
        stages = shape.opened = _stages(build)
    # a copy (see build_info); a new empty dict made directly for a build without variables (most)
    variables, group, mask = dict(build.variables) if build.variables else {}, build.group, shape.mask
    if mask is not None:  # only with secrets configured
        variables = {name: mask(value) for name, value in variables.items()}
        group = group and mask(group)
    stamp = rfc3339(build.created_at)
    return BuildInfo(id=build.id, pipeline_id=build.pipeline_id, number=build.number, status=build.status,
                     execute_count=build.execute_count, group=group, queue_position=None, reason=None,
                     variables=variables, created_at=stamp, queued_at=stamp, started_at=stamp, finished_at=None,
                     stages=stages)  # fmt: skip


def _stages(build: Build) -> list[StageInfo]:
    stages = []
    for index, jobs in enumerate(build.records_for_reading()):
        job_infos = [_job_info(job) for job in jobs]
        stages.append(StageInfo(name=build.phase_names[index], status=_stage_status(jobs), jobs=job_infos))
    return stages


def _fresh_stages(build: Build) -> list[StageInfo] | None:
    """The stages of a build that no agent has touched yet, shared by every such build of its shape.

    A build just submitted (the answer to every submission) shows what its
    definition alone decides: which jobs queue, wait or are skipped, with
    one unstarted attempt each. That part is the same for every build of a
    shape, so it is made once (frozen structs; their lists are never
    changed) and shared: the submit answer cost 4.7 µs, most of it here.
    None when the build is not in that state; its key covers what could differ.
    A queued build whose records are not made yet shows the stages of its
    shape before anything starts (made once too: 2.8 µs of each answer to a
    submission into a group's queue).
    """
    phases = build._phases
    if phases is None:
        if build.status in BUILD_FINAL:
            return None  # ended unstarted: its jobs show why they never ran
        # queued, its records not made yet: every job waits, as in every such build of its shape
        shape = build.shape
        if shape.unstarted is None:
            shape.unstarted = _stages(build)
        return shape.unstarted
    if build.execute_count != 1:
        return None
    key = []
    for jobs in phases:
        for job in jobs:
            attempts = job.attempts
            if len(attempts) > 1 or (attempts and attempts[0].started_at is not None):
                return None
            for step in job.steps:
                if step.attempts:
                    return None
            key.append((job.status, job.reason, len(attempts)))
    fresh = build.shape.fresh
    signature = tuple(key)
    if fresh is None or fresh[0] != signature:
        fresh = build.shape.fresh = (signature, _stages(build))
    return fresh[1]


def _job_info(job: JobRun) -> JobInfo:
    current = job.attempts[-1] if job.attempts else None
    return JobInfo(
        id=job.id,
        name=job.spec.name,
        status=job.status,
        node=current.node if current else None,
        agent=current.agent if current else None,
        reason=job.reason,
        attempts=[
            JobAttemptInfo(
                number=a.number, status=a.status, node=a.node, agent=a.agent, started_at=rfc3339(a.started_at),
                finished_at=rfc3339(a.finished_at), reason=a.reason, execute_count=a.execute_count,
                retry_of=a.retry_of, start_step=job.steps[a.start_step].spec.id if a.start_step else None,
            )  # fmt: skip
            for a in job.attempts
        ],
        steps=[
            StepInfo(
                id=step.spec.id,
                name=step.spec.name,
                status=step.status,
                reason=step.reason,
                attempts=[
                    StepAttemptInfo(
                        number=a.number, status=a.status, exit_code=a.exit_code, started_at=rfc3339(a.started_at),
                        finished_at=rfc3339(a.finished_at), reason=a.reason, retry_of=a.retry_of,
                        execute_count=a.execute_count, outputs=dict(a.outputs),
                    )  # fmt: skip
                    for a in step.attempts
                ],
            )
            for step in job.steps
        ],
    )


_RUNNING, _QUEUE, _WAITING = JobStatus.RUNNING, JobStatus.QUEUE, JobStatus.DEPENDENT_WAITING
_NOT_STARTED = frozenset({_QUEUE, _WAITING})
_SKIPPED = frozenset({JobStatus.SKIP})
_NOT_RUN = frozenset({JobStatus.UNEXEC, JobStatus.SKIP})
# The first of these that a job without continue-on-error ended in decides a failed stage's status.
_STAGE_FAILURES = ((JobStatus.CANCELED, StageStatus.CANCELED), (JobStatus.FAILED, StageStatus.FAILED),
                   (JobStatus.EXEC_TIMEOUT, StageStatus.FAILED), (JobStatus.HEARTBEAT_TIMEOUT, StageStatus.FAILED),
                   (JobStatus.QUEUE_TIMEOUT, StageStatus.FAILED))  # fmt: skip


def _stage_status(jobs: tuple[JobRun, ...]) -> StageStatus:
    """A stage's status from its jobs' (see ``StageStatus``)."""
    statuses = {job.status for job in jobs}
    if _RUNNING in statuses:
        return StageStatus.RUNNING
    if _QUEUE in statuses:
        return StageStatus.QUEUE if statuses <= _NOT_STARTED else StageStatus.RUNNING
    if _WAITING in statuses:
        return StageStatus.RUNNING if len(statuses) > 1 else StageStatus.QUEUE
    for status, stage_status in _STAGE_FAILURES:
        if any(job.status == status and not job.spec.continue_on_error for job in jobs):
            return stage_status
    if statuses <= _SKIPPED:
        return StageStatus.SKIP
    if statuses <= _NOT_RUN:
        return StageStatus.UNEXEC
    return StageStatus.SUCCEED
