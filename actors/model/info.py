"""Result types returned by the Python API and encoded as the HTTP API's JSON.

They are snapshots: frozen msgspec Structs built by the owning actor and
handed out, never live state. Field names are the public JSON of docs/design.md §7.
None can be part of a reference cycle, so none is tracked by the cyclic
garbage collector (``gc=False``): a snapshot per submitted build used to
count towards every collection.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from .vocab import (
    BUILD_FINAL,
    JOB_FINAL,
    STEP_FINAL,
    AgentStatus,
    Blocker,
    BuildStatus,
    EventKind,
    JobStatus,
    OnQueueFull,
    StageStatus,
    StepStatus,
)

__all__ = [
    "BuildInfo",
    "StageInfo",
    "JobInfo",
    "JobAttemptInfo",
    "StepInfo",
    "StepAttemptInfo",
    "PipelineInfo",
    "PipelineDeleted",
    "GroupInfo",
    "QueueEntry",
    "Stats",
    "Event",
    "NodeInfo",
    "AgentInfo",
    "WaitingJob",
    "BUILD_FINAL",
    "JOB_FINAL",
    "STEP_FINAL",
    "rfc3339",
]

# BUILD_FINAL, JOB_FINAL and STEP_FINAL are defined in .vocab; listed here too for older imports.


class StepAttemptInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    number: int
    status: StepStatus
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None
    retry_of: int | None = None
    execute_count: int = 1
    outputs: dict[str, str] = msgspec.field(default_factory=dict)


class StepInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: str
    name: str
    status: StepStatus
    reason: str | None = None
    attempts: list[StepAttemptInfo] = msgspec.field(default_factory=list)


class JobAttemptInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    number: int
    status: JobStatus
    node: str | None = None
    agent: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None
    execute_count: int = 1
    retry_of: int | None = None
    start_step: str | None = None


class JobInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: str
    name: str
    status: JobStatus
    node: str | None = None
    agent: str | None = None
    reason: str | None = None
    attempts: list[JobAttemptInfo] = msgspec.field(default_factory=list)
    steps: list[StepInfo] = msgspec.field(default_factory=list)

    def step(self, step_id: str) -> StepInfo:
        """The step called ``step_id``; KeyError if the job has none."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"job {self.id!r} has no step {step_id!r}")


class StageInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    name: str
    status: StageStatus
    jobs: list[JobInfo] = msgspec.field(default_factory=list)


class BuildInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    id: str
    pipeline_id: str
    number: int
    status: BuildStatus
    execute_count: int
    group: str | None
    queue_position: int | None
    reason: str | None
    variables: dict[str, str]
    created_at: str | None = None  # when it was submitted (the order of GET /v1/builds); never changes
    queued_at: str | None
    started_at: str | None
    finished_at: str | None
    stages: list[StageInfo] = msgspec.field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in BUILD_FINAL

    def job(self, job_id: str) -> JobInfo:
        """The job called ``job_id`` (in any stage, ``finally`` included); KeyError if none."""
        for stage in self.stages:
            for job in stage.jobs:
                if job.id == job_id:
                    return job
        raise KeyError(f"build {self.id!r} has no job {job_id!r}")


class PipelineInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A registered pipeline. ``warnings`` (``{"path", "message"}``, in the
    reply to registering only) names each ``runs-on`` no node matched then."""

    id: str
    name: str
    version: str
    stages: list[str]
    jobs: list[str]
    group: str | None
    builds: int
    source: str
    warnings: list[dict[str, str]] = msgspec.field(default_factory=list)
    variables: dict[str, str] = msgspec.field(default_factory=dict)  # declared, with their defaults


class PipelineDeleted(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """What deleting a pipeline did: its id and the unfinished builds it cancelled (asked with ``cancel``)."""

    id: str
    cancelled: list[str] = msgspec.field(default_factory=list)


class QueueEntry(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    build_id: str
    position: int
    queued_at: str
    deadline: str
    pipeline_id: str = ""
    waiting_for: list[str] = msgspec.field(default_factory=list)


class GroupInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    name: str
    max_parallel: int
    queue_length: int
    queue_timeout_minutes: float
    on_queue_full: OnQueueFull
    cancel_in_progress: bool
    running: list[str]
    queue: list[QueueEntry]


class AgentInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    name: str
    status: AgentStatus
    job: str | None = None  # the attempt it runs: build/job#attempt
    locked_by: str | None = None  # build holding it through lock-resource-with


class NodeInfo(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    name: str
    pool: str
    labels: list[str]
    draining: bool
    agents: list[AgentInfo]
    running: dict[str, int]  # job key "pipeline/job" -> running here now
    agents_wanted: int | None = None  # set by a resize: agents past it leave as their jobs (or lock chains) end
    kind: str = "local"  # "remote": a ``shunter agent`` process (docs/design.md §11)
    connected: bool = True  # a remote node's process is heard from
    last_seen: str | None = None  # when a remote node's process was last heard from
    actions: list[str] | None = None  # a remote node: the actions its process offers (local nodes: all of them)


class WaitingJob(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A job attempt waiting for a slot, an agent or a mutex, and why."""

    build_id: str
    job_id: str
    attempt: int
    pool: str
    reason: str
    since: str
    deadline: str
    position: int = 0  # 1 = next in line where it waits (its pool, or its mutex)
    blocked_by: Blocker | None = None  # what holds it, read from the reason (None: the words are new)


class Stats(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    builds_running: int = 0
    builds_queued: int = 0
    builds_finished: int = 0
    jobs_running: int = 0
    jobs_queued: int = 0
    slots_held: int = 0
    agents: int = 0
    agents_busy: int = 0
    agents_locked: int = 0
    agents_lost: int = 0
    builds_by_status: dict[BuildStatus, int] = msgspec.field(default_factory=dict)


class Event(msgspec.Struct, frozen=True, gc=False):
    """One state change. ``id`` grows by one per event, runtime-wide.

    ``kind`` says what changed and which vocabulary ``status`` is from
    (``EventKind``): a ``BuildStatus``, ``JobStatus`` or ``StepStatus`` (the
    new status of that build, job or step attempt), a ``GroupChange`` or a
    ``NodeChange``. ``reason`` explains a status that is not a success.
    ``attempt`` is the job or step attempt number, or a build's execute
    count for ``build`` events. ``group`` names the concurrency group of a
    ``group`` event and ``node`` the node of a ``node`` event; ``data``
    holds what else the kind carries (see ``GroupChange`` and
    ``NodeChange``), ``{}`` for build, job and step events.

    Unlike the other snapshots it may be made positionally, in field order
    (``make_event`` does: a subscriber builds one per event it reads).
    """

    id: int
    kind: EventKind
    time: str
    status: str | None = None
    reason: str | None = None
    pipeline_id: str | None = None
    build_id: str | None = None
    job_id: str | None = None
    step_id: str | None = None
    attempt: int | None = None
    group: str | None = None
    node: str | None = None
    data: dict[str, Any] = msgspec.field(default_factory=dict)


_last_second: list[Any] = [None, ""]  # (whole second, its text up to the fraction): stamps cluster


def rfc3339(timestamp: float | None) -> str | None:
    """UTC, microseconds, ``Z``. The formatted second is cached: it was the
    hottest function of a build snapshot (three stamps per submit answer);
    concatenation with ``zfill`` costs two thirds of an f-string's ``:06d``."""
    if timestamp is None:
        return None
    seconds = int(timestamp)
    if _last_second[0] != seconds:
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))]
    return _last_second[1] + str(int((timestamp - seconds) * 1e6)).zfill(6) + "Z"
