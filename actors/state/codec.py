"""A build to bytes and back: what the journal stores and a restart reads.

The encoding is a compact msgpack tree of the build's mutable state (status,
times, jobs, steps, every attempt, where each step attempt's log file is);
the definition is not in it (builds name their definition, stored once).
Decoding needs the ``BuildShape`` of that definition. Agent locks are not
kept: after a restart no agent holds anything.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..builds.build import Build, new_build
from ..builds.records import BuildShape, JobAttempt, JobRun, StepAttempt, StepLog
from ..model.vocab import BuildStatus, JobStatus, StepStatus
from .store import BuildRow

__all__ = ["encode_build", "decode_build", "build_row"]

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()
_VERSION = 1


def _step_attempt(a: StepAttempt) -> list[Any]:
    return [a.number, a.status, a.exit_code, a.started_at, a.finished_at, a.reason, a.retry_of, a.execute_count,
            a.outputs or None, a.exported_env or None, a.log.path, a.job_attempt,
            None if a.log.path is not None else a.log.text()]  # fmt: skip


def _job_attempt(a: JobAttempt) -> list[Any]:
    return [a.number, a.status, a.node, a.agent, a.started_at, a.finished_at, a.reason, a.execute_count,
            a.retry_of, a.start_step, a.context_before]  # fmt: skip


def _job(job: JobRun) -> list[Any]:
    return [job.id, job.status, job.reason, job.resume_step, [_job_attempt(a) for a in job.attempts],
            [[step.status, step.reason, [_step_attempt(a) for a in step.attempts]] for step in job.steps]]  # fmt: skip


def encode_build(build: Build) -> bytes:
    """The build's state as bytes (see the module docstring)."""
    phases = build._phases  # records not made yet (a queued build): nothing to keep
    jobs = None if phases is None else [_job(job) for phase in phases for job in phase]
    return _encoder.encode([_VERSION, build.variables, build.status, build.reason, build.execute_count,
                            build.queued_at, build.started_at, build.finished_at, build.cancelling, build.phase,
                            jobs, build.created_at])  # fmt: skip


def build_row(build: Build, definition: str) -> BuildRow:
    return BuildRow(build.id, build.pipeline_id, build.number, build.status, build.group, build.queued_at,
                    build.finished_at, definition, encode_build(build), build.created_at)  # fmt: skip


def decode_build(row: BuildRow, shape: BuildShape) -> Build:
    """The build of ``row``, on its definition's ``shape``."""
    (_, variables, status, reason, execute_count, queued_at, started_at, finished_at, cancelling, phase,
     jobs, *rest) = _decoder.decode(row.data)  # fmt: skip
    # created_at came later: a build stored without it was created when it was first queued
    build = new_build(build_id=row.id, spec=shape, number=row.number, variables=variables, group=row.group,
                  now=rest[0] if rest else queued_at)  # fmt: skip
    build.status, build.reason, build.execute_count = BuildStatus(status), reason, execute_count
    build.queued_at, build.started_at, build.finished_at = queued_at, started_at, finished_at
    build.cancelling, build.phase = cancelling, phase
    if jobs is not None:
        saved = {item[0]: item for item in jobs}
        phases = build._make_records()
        for records in phases:
            for job in records:
                item = saved.get(job.id)
                if item is not None:
                    _restore_job(job, item)
        build._phases = phases
        build._jobs = {job.id: job for records in phases for job in records}
    return build


def _restore_job(job: JobRun, item: list[Any]) -> None:
    _, status, job.reason, job.resume_step, attempts, steps = item
    job.status = JobStatus(status)
    for a in attempts:
        attempt = JobAttempt(a[0], a[7], a[8], a[9])
        attempt.status = JobStatus(a[1])
        attempt.node, attempt.agent, attempt.started_at, attempt.finished_at, attempt.reason = a[2:7]
        attempt.context_before = a[10]
        job.attempts += (attempt,)
    for step, (status, reason, step_attempts) in zip(job.steps, steps):
        step.status, step.reason = StepStatus(status), reason
        for a in step_attempts:
            log = StepLog(a[10])
            if a[10] is None and a[12]:
                for line in a[12].rstrip("\n").split("\n"):
                    log.append(line)
            step_attempt = StepAttempt(a[0], a[6], a[7], a[11], log, a[3])
            step_attempt.status, step_attempt.exit_code, step_attempt.finished_at = StepStatus(a[1]), a[2], a[4]
            step_attempt.reason = a[5]
            step_attempt.outputs, step_attempt.exported_env = a[8] or {}, a[9] or {}
            step.attempts += (step_attempt,)
