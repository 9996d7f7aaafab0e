"""Messages between the CI actors: frozen, tagged msgspec Structs.

Everything about a job attempt carries a ``JobToken``; the attempt number in
it is the fencing token: an actor drops a report whose attempt is not the
job's current one, so a late message from a cancelled or lost attempt never
touches its successor (docs/design.md §2).

Flow of a build (arrows are ``tell``):

    facade --Submit(ask)--> pipeline --Admit--> group --Admitted/Queued--> pipeline
    pipeline [--MutexAcquire--> mutex --MutexGranted--> pipeline]
    pipeline --JobRequest--> pool --RunJob--> agent --AgentReport--> pipeline
    pool --JobWaiting--> pipeline           (no node could run it; or one can again)
    agent --AgentIdle--> pool               pipeline --Release--> group
    node --AgentLost--> pool                (an agent crashed)
    pool --EndJob--> pipeline               (an attempt the pool ended without its agent)

Messages that hold only data (tokens, payloads, reports) are not tracked by
the cyclic garbage collector (``gc=False``): they cannot be part of a cycle,
and several per build used to count towards every collection. Messages that
carry a ``Ref`` or a reply slot stay tracked; a job attempt's ``JobRequest``
and ``RunJob`` name the pipeline's actor instead of holding its ``Ref``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ..core import Ref
from .reports import InstantJob, JobEnded, JobStarted, StepEnded, StepNotRun, StepRan, StepStarted
from .spec import Concurrency, Job, PipelineSpec, RunsOn
from .vocab import BuildStatus, FaultKind, JobStatus

__all__ = [
    "Relock",
    "TemplateContext",
    "SubmitBuild",
    "GetBuild",
    "ListBuilds",
    "BuildKey",
    "RetirePipeline",
    "CancelRequest",
    "RetryRequest",
    "WaitBuild",
    "ReplaceSpec",
    "DescribePipeline",
    "GetLog",
    "ReadLog",

    "JobToken",
    "JobPayload",
    "JobRequest",
    "Withdraw",
    "JobWaiting",
    "Unlock",
    "AdoptJob",
    "AgentLost",
    "Fault",
    "Retire",
    "MutexAcquire",
    "MutexGranted",
    "MutexRefused",
    "MutexRelease",
    "RunJob",
    "CancelJob",
    "AgentIdle",
    "AgentReport",
    "JobStarted",
    "StepStarted",
    "StepEnded",
    "StepNotRun",
    "JobEnded",
    "StepRan",
    "InstantJob",
    "EndJob",
    "Admit",
    "Admitted",
    "Queued",
    "Refused",
    "Dequeued",
    "CancelBuild",
    "Release",
]


class _Message(msgspec.Struct, frozen=True, tag=True):
    pass


class JobToken(msgspec.Struct, frozen=True, gc=False):
    """Names one attempt of one job of one build; hashable."""

    build_id: str
    job_id: str
    attempt: int

    def __str__(self) -> str:
        return f"{self.build_id}/{self.job_id}#{self.attempt}"


# -- pipeline <-> dispatcher <-> agent ---------------------------------------------


class TemplateContext(msgspec.Struct, frozen=True, gc=False):
    """``ci.*`` and ``variables.*`` for rendering step templates (JSON: an object of those two).

    A struct rather than a dict of dicts: a dict holding dicts is an object
    the garbage collector tracks, one per job waiting in a pool.
    """

    ci: dict[str, str]
    variables: dict[str, str]

    def as_dict(self) -> dict[str, Any]:
        return {"ci": self.ci, "variables": self.variables}


class JobPayload(msgspec.Struct, frozen=True, gc=False):
    """All an agent needs to run one job attempt."""

    pipeline_id: str
    build_number: int
    execute_count: int
    job: Job
    start_step: int
    template_context: TemplateContext
    # variables + SHUNTER_* build context (the job's env: is rendered by the agent, with secrets)
    env: dict[str, str]
    # context to restore before a retry (snapshot + exports of the steps kept)
    restore: dict[str, str] | None
    # a step before start_step failed (for the `if` of the steps that run)
    failed_before: bool = False
    # where step logs go (durable state, docs/design.md §10; None: in memory) and their cap per attempt
    log_dir: str | None = None
    max_log_bytes: int = 32 * 1024 * 1024


class JobRequest(_Message, frozen=True, gc=False):
    """Pipeline → pool: find an agent for this attempt.

    ``agent`` pins it to one agent (lock-resource-with); ``lock`` keeps that
    agent for the build after the attempt, until the pipeline unlocks it.
    ``pipeline`` is the name of the pipeline's actor, not its ``Ref``: the
    request waits in the pool's queue, often long enough to reach the
    collector's old generation, and holding only data it is never scanned
    there (``actors/names.py`` resolves the name when the pool or the agent tells).
    """

    token: JobToken
    pipeline: str
    payload: JobPayload
    runs_on: RunsOn
    agent: str | None = None
    lock: bool = False


class AdoptJob(_Message, frozen=True):
    """Pipeline → pool, after a restart: ``request``'s attempt was running on agent ``request.agent``
    when the server stopped. A remote agent may still run it (docs/design.md §11): the pool holds it there
    for the node to settle; otherwise it ends ``HEARTBEAT_TIMEOUT`` with ``reason``. ``logs``: the
    running step's log by step index."""

    request: JobRequest
    logs: dict[int, Any]
    reason: str


class Unlock(_Message, frozen=True):
    """Pipeline → pool: the build's lock chain on this agent has ended."""

    build_id: str
    agent: str


class Relock(_Message, frozen=True):
    """Pipeline → pool, after a restart: the build's lock chain holds this agent again (until ``Unlock``)."""

    build_id: str
    agent: str


class AgentLost(_Message, frozen=True):
    """Node → pool: an agent crashed; what it ran ends with ``status``.

    The pool makes one itself for an agent silent past the timeout (``heartbeat.py``).
    """

    agent: str
    status: JobStatus  # FAILED (crashed) or HEARTBEAT_TIMEOUT
    reason: str


class Fault(_Message, frozen=True):
    """Pool → agent, for tests and benchmarks: crash or hang (the pool keeps silence to itself)."""

    kind: FaultKind  # crash or hang


class Retire(_Message, frozen=True):
    """Pool → agent: leave once the current attempt is over (hung: at once)."""


class MutexAcquire(_Message, frozen=True):
    token: JobToken
    pipeline: Ref
    label: str
    queue_length: int
    timeout_minutes: float


class MutexGranted(_Message, frozen=True):
    token: JobToken


class MutexRefused(_Message, frozen=True):
    """The job may not wait for the mutex: its queue is full (the job ends
    FAILED) or it waited past ``timeout-minutes`` (QUEUE_TIMEOUT)."""

    token: JobToken
    reason: str
    timed_out: bool = False


class MutexRelease(_Message, frozen=True):
    token: JobToken


class Withdraw(_Message, frozen=True):
    """Pipeline → pool: stop this attempt, queued or running."""

    token: JobToken
    reason: str


class JobWaiting(_Message, frozen=True, gc=False):
    """Pool → pipeline: the waiting attempt's reason, told at once when no node
    of the pool could ever run it (``no node in pool 'x' matches``), and None
    when a node that could has come. Other waits are told only when they end."""

    token: JobToken
    reason: str | None


class RunJob(_Message, frozen=True, gc=False):
    """Pool → agent: run this attempt now; the agent reports to the actor named ``pipeline``.

    ``secrets`` (a remote agent's, sent with the job) replaces the agent's own for this attempt only.
    """

    token: JobToken
    pipeline: str
    payload: JobPayload
    secrets: Any = None  # actors.execution.secrets.Secrets (the model does not import execution)


class CancelJob(_Message, frozen=True):
    token: JobToken
    reason: str


class AgentIdle(_Message, frozen=True):
    """Agent → pool: the attempt ended; the agent is free again."""

    agent: str
    token: JobToken


class AgentReport(_Message, frozen=True, gc=False):
    """Agent → pipeline: what happened to an attempt, in order (only agents send it;
    an attempt the pool ends itself comes as ``EndJob``).

    An agent flushes its records (``reports.py``) whenever it is about to
    wait, so a job of instant steps costs one message, not one per step, and
    one record: an ``InstantJob``.
    """

    token: JobToken
    records: tuple[JobStarted | StepStarted | StepEnded | StepNotRun | JobEnded | InstantJob, ...]


class EndJob(_Message, frozen=True, gc=False):
    """Pool → pipeline: the pool ended this attempt itself; no agent reports it.

    Withdrawn or timed out while it waited for an agent (``CANCELED``,
    ``QUEUE_TIMEOUT``), its agent lost (``HEARTBEAT_TIMEOUT``, or ``FAILED``
    when its node crashed), or its ``lock-resource-with`` agent gone
    (``FAILED``). ``time`` is when the pool decided (wall clock). Fenced by
    ``token`` like an agent's report: the pipeline drops it when that
    attempt is already over.
    """

    token: JobToken
    status: JobStatus
    reason: str
    time: float


# -- pipeline <-> concurrency group --------------------------------------------------


class Admit(_Message, frozen=True):
    """Pipeline → group: admit this build (new, or a retry of a finished one).

    The group learns only the build and the limits; the pipeline keeps what
    it will do with the answer (the submitter's reply slot, the retry plan).
    """

    build_id: str
    pipeline: Ref
    config: Concurrency
    queued_at: float  # wall clock; the build reports the same instant
    # wall clock; only for a build restored after a restart, which keeps its original queue deadline
    deadline: float | None = None


class Admitted(_Message, frozen=True, gc=False):
    """Group → pipeline: the build may run now (at once, or on leaving the queue)."""

    build_id: str


class Queued(_Message, frozen=True, gc=False):
    """Group → pipeline: the build waits in the group's queue at ``position`` (1 = next)."""

    build_id: str
    position: int


class Refused(_Message, frozen=True, gc=False):
    """Group → pipeline: the build was not admitted (queue full); ``message`` says why."""

    build_id: str
    message: str


class Dequeued(_Message, frozen=True):
    """Group → pipeline: these queued builds left the queue without running.

    One message per pipeline for all its builds that left together (every
    waiter due at one timer fire, every waiter cancelled by one
    cancel-in-progress), all with the same status and reason.
    """

    build_ids: tuple[str, ...]
    status: BuildStatus  # QUEUE_TIMEOUT or CANCELED
    reason: str


class CancelBuild(_Message, frozen=True):
    """Group → pipeline: cancel this running build (cancel-in-progress)."""

    build_id: str
    reason: str


class Release(_Message, frozen=True):
    """Pipeline → group: the build ended or left; free its place."""

    build_id: str


# -- runtime facade -> pipeline (asks) ---------------------------------------------------


class SubmitBuild(_Message, frozen=True, gc=False):
    """Facade → pipeline (ask): start a build. Untracked: under load every client's submission is in
    flight (its ask awaits the reply) whenever the collector's middle pass runs, so one per client
    reached the collector's old generation at each of those passes."""

    variables: dict[str, Any]


class GetBuild(_Message, frozen=True):
    build_id: str


class ListBuilds(_Message, frozen=True):
    """Answered with ``[(key, BuildInfo)]``, newest first; a key is (created time, pipeline id, number)."""

    status: BuildStatus | None = None
    unfinished: bool = False  # only QUEUE and RUNNING builds
    limit: int | None = None  # only the newest ``limit``
    before: tuple[float, str, int] | None = None  # only those whose key is smaller (older)


class BuildKey(_Message, frozen=True):
    """The key of a build in ``ListBuilds`` order (to page from it); ``NotFound`` if unknown."""

    build_id: str


class RetirePipeline(_Message, frozen=True):
    """Delete the pipeline: refuse new builds and retries; builds stay readable; ``ReplaceSpec`` revives it.

    With unfinished builds it is refused (``Conflict`` naming them) unless
    ``cancel``; then they are cancelled with ``reason``. Answers the ids of
    the builds it cancelled.
    """

    cancel: bool = False
    reason: str = "the pipeline was deleted"


class CancelRequest(_Message, frozen=True):
    build_id: str
    reason: str = "cancelled by a user"


class RetryRequest(_Message, frozen=True):
    build_id: str
    job: str | None = None
    step: str | None = None
    failed_only: bool = False


class WaitBuild(_Message, frozen=True):
    build_id: str


class ReplaceSpec(_Message, frozen=True):
    spec: PipelineSpec
    definition: str = ""  # its key in the store (durable state)


class DescribePipeline(_Message, frozen=True):
    pass


class GetLog(_Message, frozen=True):
    build_id: str
    job: str | None = None
    step: str | None = None


class ReadLog(_Message, frozen=True):
    """The log written since ``cursor`` (a ``LogCursor``), for following it; answered with a ``LogChunk``."""

    build_id: str
    job: str | None
    step: str | None
    cursor: Any
