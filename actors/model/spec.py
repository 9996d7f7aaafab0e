"""The validated pipeline model (docs/design.md §4): what a registered pipeline means.

``runtime.spec_loader.load_pipeline`` turns YAML or JSON into these types and
refuses anything invalid, so code holding a ``PipelineSpec`` can trust every
field: ids are unique, references resolve, numbers are in range and condition
names are normalised. The types are frozen msgspec Structs (pure data, no
I/O); they encode to JSON with the field names shown, except ``with_``,
``if_`` and ``finally_``, which encode as ``with``, ``if`` and ``finally``.
The ``dict`` fields are shared, not copied: treat them as read-only.

Templates (``${{ ci.build_id }}``, ``${{ variables.NAME }}``) are kept
unrendered; see ``actors.templates`` for rendering them per build.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from .vocab import RunCondition, ContinueOnError, OnQueueFull

__all__ = [
    "normalize_condition",
    "Concurrency",
    "Mutex",
    "RunsOn",
    "Step",
    "Job",
    "Stage",
    "PipelineSpec",
]

# Spellings users write for conditions, mapped to the canonical names.
_CONDITION_ALIASES = {
    **{condition.value: condition for condition in RunCondition},
    "SUCCEED": RunCondition.SUCCESS,
    "FAILED": RunCondition.FAILURE,
    "CANCELLED": RunCondition.CANCELED,
}


def normalize_condition(value: str) -> RunCondition | None:
    """Return the canonical condition name for ``value``, or None if it is not one.

    Case does not matter and a trailing ``()`` is allowed, so ``success``,
    ``success()`` and ``SUCCESS`` are all ``RunCondition.SUCCESS``. ``cancelled``
    (two l's) is accepted as ``RunCondition.CANCELED``.
    """
    text = value.strip().upper()
    if text.endswith("()"):
        text = text[:-2].rstrip()
    return _CONDITION_ALIASES.get(text)


class Concurrency(msgspec.Struct, frozen=True, kw_only=True):
    """Build admission through a named concurrency group (pipeline level).

    Builds whose rendered ``group`` is equal share one FIFO gate: at most
    ``max_parallel`` of them run, at most ``queue_length`` wait (0: none
    wait), a waiter is dropped with ``QUEUE_TIMEOUT`` after
    ``queue_timeout_minutes``, and a build arriving at a full queue is
    refused (``OnQueueFull.REJECT``) or makes room by cancelling the
    oldest waiter (``OnQueueFull.CANCEL_OLDEST``). With ``cancel_in_progress`` a new
    build cancels the group's running and queued builds, then is admitted.
    """

    group: str
    max_parallel: int = 1
    queue_length: int = 10
    queue_timeout_minutes: float = 480.0
    cancel_in_progress: bool = False
    on_queue_full: OnQueueFull = OnQueueFull.REJECT


class Mutex(msgspec.Struct, frozen=True, kw_only=True):
    """A job-level concurrency group of size one, named by ``label``.

    Jobs whose rendered ``label`` is equal (in any pipeline) run one at a
    time; at most ``queue_length`` wait, each for at most
    ``timeout_minutes`` before ending ``QUEUE_TIMEOUT``.
    """

    label: str
    queue_length: int = 10
    timeout_minutes: float = 10.0


class RunsOn(msgspec.Struct, frozen=True, kw_only=True):
    """Where a job runs, and the job limits of docs/design.md §3 (seed 002).

    The job needs an agent on a node of ``pool_name``, on ``node_name`` if
    set, on a node having every label in ``labels``. At most
    ``concurrency_limit_per_node`` instances of the job key (pipeline id,
    job id) run on any one node and ``concurrency_limit_total`` across all
    nodes (None: unlimited). A job that gets no slot within
    ``queue_timeout_minutes`` ends ``QUEUE_TIMEOUT``.

    ``lock_resource_with`` names an earlier job whose agent this job must
    run on (seed 000). The loader then copies the placement fields
    (``pool_name``, ``self_hosted``, ``node_name``, ``labels``) from the
    start of that chain, so they say where the held agent lives.
    ``self_hosted`` is accepted for BK-CI compatibility and not acted on.
    """

    pool_name: str = "default"
    self_hosted: bool = True
    node_name: str | None = None
    labels: tuple[str, ...] = ()
    concurrency_limit_per_node: int | None = None
    concurrency_limit_total: int | None = None
    queue_timeout_minutes: float = 10.0
    lock_resource_with: str | None = None


class Step(msgspec.Struct, frozen=True, kw_only=True):
    """One step of a job: a shell command (``run``) or an action (``uses``).

    Exactly one of ``run`` and ``uses`` is set. ``uses`` is kept as written
    (``"sleep@1"``) and ``action`` is its name without the version
    (``"sleep"``); ``with_`` holds the action's inputs (unrendered). ``id``
    is given or ``step-N`` by 1-based position in its job; ``name``
    defaults to the id. A failed attempt is retried automatically up to
    ``retry_times`` times. ``timeout_minutes`` None means the step is
    bounded only by its job's timeout. See ``ContinueOnError`` and
    ``RunCondition`` (``actors.model.vocab``) for ``continue_on_error`` and ``if_``.
    """

    id: str
    name: str
    run: str | None = None
    uses: str | None = None
    action: str | None = None
    with_: dict[str, Any] = msgspec.field(default_factory=dict, name="with")
    env: dict[str, str] = msgspec.field(default_factory=dict)
    if_: RunCondition = msgspec.field(default=RunCondition.SUCCESS, name="if")
    timeout_minutes: float | None = None
    retry_times: int = 0
    continue_on_error: ContinueOnError = ContinueOnError.FALSE


class Job(msgspec.Struct, frozen=True, kw_only=True):
    """A job: steps run in order on one agent.

    ``id`` is unique in the whole pipeline (``finally`` included); ``name``
    defaults to the id. Within a stage, a job starts once every job in
    ``depend_on`` (same stage) has ended; jobs without dependencies start
    together. The whole job is bounded by ``timeout_minutes``
    (``EXEC_TIMEOUT``). With ``continue_on_error`` a failure of this job
    does not fail the build. ``mutex``, if set, must be held while the job
    runs. ``if_`` is ``RunCondition.SUCCESS`` by default and ``RunCondition.ALWAYS``
    for ``finally`` jobs.
    """

    id: str
    name: str
    runs_on: RunsOn = msgspec.field(default_factory=RunsOn)
    depend_on: tuple[str, ...] = ()
    timeout_minutes: float = 900.0
    continue_on_error: bool = False
    mutex: Mutex | None = None
    env: dict[str, str] = msgspec.field(default_factory=dict)
    if_: RunCondition = msgspec.field(default=RunCondition.SUCCESS, name="if")
    steps: tuple[Step, ...]


class Stage(msgspec.Struct, frozen=True, kw_only=True):
    """A stage: its jobs run (respecting ``depend_on``) after the previous stage ended."""

    name: str
    jobs: tuple[Job, ...]


class PipelineSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A whole validated pipeline.

    ``stages`` run one after the other; ``finally_`` jobs run after them
    (shown as a last stage named ``finally``). ``variables`` are the
    declared variables with their default values (strings); a build may
    override them. ``concurrency`` None means builds are admitted without a
    group. ``version`` is always ``"v3.0"`` after loading. ``source`` is the
    text the pipeline was loaded from ("" when loaded from a mapping).
    """

    version: str = "v3.0"
    name: str
    variables: dict[str, str] = msgspec.field(default_factory=dict)
    concurrency: Concurrency | None = None
    stages: tuple[Stage, ...] = ()
    finally_: tuple[Job, ...] = msgspec.field(default=(), name="finally")
    source: str = ""

    def all_jobs(self) -> Iterator[Job]:
        """Yield every job: the stages' jobs in order, then the ``finally`` jobs."""
        for stage in self.stages:
            yield from stage.jobs
        yield from self.finally_

    def job(self, job_id: str) -> Job:
        """Return the job with id ``job_id``; raise KeyError if there is none."""
        for job in self.all_jobs():
            if job.id == job_id:
                return job
        raise KeyError(job_id)
