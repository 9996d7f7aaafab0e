"""A pipeline after a restart: its unfinished builds come back (docs/design.md §10).

``resume`` takes the builds the store held (decoded by the runtime):

- a queued build whose queue deadline passed while the server was down ends
  ``QUEUE_TIMEOUT`` at once, with a reason naming its group and saying so;
- the other queued builds, and the running ones, are returned as ``Admit``
  messages that the runtime tells their groups in the original order
  (running builds first, to take back their slots; then the queued ones by
  the time they were queued), each with its original deadline;
- a running build resumes once its group has it back (``resume_running``):
  a job that was running is treated as one whose agent was lost — retried
  from its running step when that step's ``retry-times`` allows, else ended
  ``HEARTBEAT_TIMEOUT`` with the reason ``INTERRUPTED``; jobs that were
  waiting for a slot or an agent ask again. A job that was running on a
  remote node's agent may still run there (docs/design.md §11): its pool is
  asked to take it back on that agent (``AdoptJob``), and it stays running
  until the node settles it — carried on when the agent comes back with it,
  else ended as above. A job with a ``mutex`` is not taken back (the
  mutex's holder is not durable). A ``lock-resource-with`` chain that
  had begun holds its agent again (``Relock``) before any job is asked for.
  With remote nodes, a job that was
  waiting asks again under a new attempt number (``Build.fence_queued``):
  it may have been handed to a remote agent before the server stopped, and
  the old number's run must not count.

Also here: the messages for restoring a build read back from the store
(``Restore``: e.g. to retry it) and for streaming logs (``GetLogSources``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import msgspec

from ..model.messages import AdoptJob, Admit, JobRequest, JobToken, Relock
from ..model.vocab import StepStatus
from ..model.vocab import JOB_FINAL, BuildStatus, JobStatus
from .build import Build
from .payload import job_payload
from .driver import NotHeld
from .records import JobRun, StepLog

if TYPE_CHECKING:
    from .driver import BuildDriver

__all__ = ["INTERRUPTED", "Drain", "GetLogSources", "NotHeld", "Restore", "Resume", "log_sources", "resume",
           "resume_running"]  # fmt: skip

INTERRUPTED = "interrupted: the server stopped while it ran"
REQUEUED = ("cancelled: the server stopped before it knew whether a remote agent had started it; "
            "asked again as a new attempt")  # fmt: skip


class Resume(msgspec.Struct, frozen=True):
    """Ask: take back these unfinished builds; answers [(running first, queued_at, group, Admit)].
    ``remote``: the remote nodes, whose agents may still run what they ran."""

    builds: list[Any]  # Build
    remote: frozenset[str] = frozenset()


class Restore(msgspec.Struct, frozen=True):
    """Tell: a finished build read back from the store (its records are needed, e.g. for a retry)."""

    build: Any  # Build


class Drain(msgspec.Struct, frozen=True):
    """Tell: the server is stopping: a queued build its group admits now stays queued for the next start."""


class GetLogSources(msgspec.Struct, frozen=True):
    """Ask: the logs of a build (one job or step): [(header, StepLog)], for streaming."""

    build_id: str
    job: str | None = None
    step: str | None = None


def resume(pipeline: BuildDriver, builds: list[Build], remote: frozenset[str] = frozenset()
           ) -> list[tuple[bool, float, str, Admit]]:  # fmt: skip
    """Take back ``builds``; return the admissions to tell their groups (see the module docstring)."""
    pipeline.remote_nodes = remote
    now = time.time()
    admits: list[tuple[bool, float, str, Admit]] = []
    for build in builds:
        pipeline.builds[build.id] = build
        pipeline._emit_build(build, None)  # counted again as queued or running (the hub's counters start at 0)
        if pipeline.durable is not None:
            pipeline.durable.dirty.pop(build.id, None)  # unchanged so far: no need to write it again
        if build.status == "RUNNING" and build.group is None:
            resume_running(pipeline, build)
            continue
        if build.group is None:  # queued without a group cannot be: start it
            pipeline._start(build)
            continue
        concurrency = build.spec.concurrency
        assert build.queued_at is not None
        deadline = build.queued_at + (concurrency.queue_timeout_minutes * 60 if concurrency else 0.0)
        if build.status == "QUEUE" and deadline <= now:
            minutes = concurrency.queue_timeout_minutes if concurrency else 0
            build.end_unstarted(BuildStatus.QUEUE_TIMEOUT, (
                f"waited longer than queue-timeout-minutes ({minutes:g}) in concurrency group {build.group!r}: "
                "the server was down when the deadline passed"), now)  # fmt: skip
            pipeline._emit_build(build, "QUEUE")
            pipeline._settled(build)
            continue
        running = build.status == "RUNNING"
        if running:
            pipeline.resuming.add(build.id)
        admit = Admit(build.id, pipeline.ref, pipeline._group_config_of(build), build.queued_at,
                      deadline=None if running else deadline)  # fmt: skip
        admits.append((not running, build.queued_at, build.group, admit))
    return admits


def resume_running(pipeline: BuildDriver, build: Build) -> None:
    """Carry on a build that was running when the server stopped (see the module docstring)."""
    _relock(pipeline, build)
    now = time.time()
    states = {job.id: job.status for job in build.all_jobs()}
    dispatch: list[JobRun] = []
    for job in list(build.all_jobs()):
        if job.status == "QUEUE":
            if pipeline.remote_nodes and job.attempts:  # it may have been handed to a remote agent
                build.fence_queued(job, REQUEUED, now)
            dispatch.append(job)
        elif job.status == "RUNNING":
            attempt = job.attempts[-1]
            if attempt.node in pipeline.remote_nodes and attempt.agent is not None and job.spec.mutex is None:
                _adopt(pipeline, build, job, attempt.agent)
                continue
            if build.retry_lost(job, JobStatus.HEARTBEAT_TIMEOUT, INTERRUPTED, now):
                dispatch.append(job)
            else:
                dispatch.extend(build.job_ended(job, JobStatus.HEARTBEAT_TIMEOUT, INTERRUPTED, now))
            pipeline._emit_job(build, job, states[job.id])
    if not dispatch and not build.finished:
        dispatch = build.advance(now)
    pipeline._emit_unrun(build, states)
    pipeline._dispatch(build, list({job.id: job for job in dispatch}.values()))  # each job once
    if build.finished:
        pipeline._emit_build(build, "RUNNING")
        pipeline._finished(build)


def _relock(pipeline: BuildDriver, build: Build) -> None:
    """Lock chains that had begun and not ended hold their agent again (the pools' locks are not
    stored): told before any of the build's jobs is asked for, so the chain's next job finds it."""
    chains = build.shape.chains
    for root in set(chains.values()):
        members = [job for job in build.all_jobs() if chains.get(job.id) == root]
        if all(job.status in JOB_FINAL for job in members):
            continue
        first = build.jobs[root]
        agent = next((attempt.agent for attempt in reversed(first.attempts) if attempt.agent), None)
        if agent is not None:
            pool = first.spec.runs_on.pool_name
            build.lock_agent(first, pool, agent)
            pipeline.pools.get(pool).tell(Relock(build.id, agent))


def _adopt(pipeline: BuildDriver, build: Build, job: JobRun, agent: str) -> None:
    """Ask the job's pool to take its attempt back on the remote agent that ran it."""
    payload = job_payload(build, job)
    if pipeline.durable is not None:
        payload = msgspec.structs.replace(payload, log_dir=f"{pipeline.durable.log_root}/{build.number}",
                                          max_log_bytes=pipeline.durable.max_log_bytes)  # fmt: skip
    runs_on = job.spec.runs_on
    token = JobToken(build.id, job.id, job.attempts[-1].number)
    request = JobRequest(token, pipeline.name, payload, runs_on, agent=agent, lock=job.id in build.chains)
    logs = {index: step.attempts[-1].log for index, step in enumerate(job.steps)
            if step.status == StepStatus.RUNNING and step.attempts}  # fmt: skip
    pipeline.pools.get(runs_on.pool_name).tell(AdoptJob(request, logs, INTERRUPTED))


def log_sources(build: Build, job_id: str | None, step_id: str | None) -> list[tuple[str, StepLog]]:
    """Every step attempt's log of ``build`` (one job or step), with the header the log text shows."""
    jobs = [build.job(job_id)] if job_id is not None else list(build.all_jobs())
    if step_id is not None:
        jobs = [build.find_step(job_id, step_id)[0]]
    found: list[tuple[str, StepLog]] = []
    for job in jobs:
        for step in job.steps:
            if step_id is not None and step.spec.id != step_id:
                continue
            for attempt in step.attempts:
                found.append((f"=== {job.id} / {step.spec.id} attempt {attempt.number} ({attempt.status}) ===\n",
                              attempt.log))  # fmt: skip
    return found
