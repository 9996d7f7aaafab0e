"""shunter's vocabulary, defined once: statuses, conditions, policies, event and fault kinds.

Each word list is a ``StrEnum``. A member *is* its string (``JobStatus.FAILED
== "FAILED"``, same hash, ``f"{member}"`` is the value), so members compare
with, and stand in for, the strings of the public YAML and JSON (docs/design.md §3.2,
§4, §7): JSON output is unchanged, and msgspec encodes a member as its value.
Where a Struct field is typed with one of these, msgspec refuses any other
value when decoding (``Invalid enum value 'X' - at `$.status```), and the
OpenAPI document lists the values from the type itself.

Build, job, step and stage statuses overlap by design: a job can end in every
way a step can, and more (it waits for slots, dependencies and heartbeats).
The ``*_FINAL`` sets say which statuses end a record; ``JOB_FAILING`` and
``STEP_FAILING`` say which failed (retryable, and counted against the build
unless ``continue-on-error``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "BuildStatus",
    "JobStatus",
    "StepStatus",
    "StageStatus",
    "AgentStatus",
    "RunCondition",
    "ContinueOnError",
    "OnQueueFull",
    "EventKind",
    "GroupChange",
    "NodeChange",
    "FaultKind",
    "Blocker",
    "BUILD_FINAL",
    "JOB_FINAL",
    "STEP_FINAL",
    "JOB_FAILING",
    "STEP_FAILING",
    "values",
]


class BuildStatus(StrEnum):
    """Where a build is (docs/design.md §3.2). Every status but ``SUCCEED`` ends with a reason."""

    QUEUE = "QUEUE"  # waiting in its concurrency group (or for its group's answer)
    RUNNING = "RUNNING"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"  # waited past its group's queue-timeout-minutes


class JobStatus(StrEnum):
    """Where a job (and each of its attempts) is (docs/design.md §3.2)."""

    QUEUE = "QUEUE"  # waiting for a slot, an agent or its mutex
    DEPENDENT_WAITING = "DEPENDENT_WAITING"  # its stage or a depend-on job has not finished
    RUNNING = "RUNNING"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIP = "SKIP"  # its ``if`` did not hold (FAILURE or CANCELED with nothing to react to)
    UNEXEC = "UNEXEC"  # never ran: something before it failed, or the build was cancelled
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"  # no slot or agent within its queue-timeout-minutes
    HEARTBEAT_TIMEOUT = "HEARTBEAT_TIMEOUT"  # its agent was lost
    EXEC_TIMEOUT = "EXEC_TIMEOUT"  # ran past its timeout-minutes


class StepStatus(StrEnum):
    """Where a step (and each of its attempts) is (docs/design.md §3.2)."""

    QUEUE = "QUEUE"
    RUNNING = "RUNNING"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIP = "SKIP"
    UNEXEC = "UNEXEC"
    EXEC_TIMEOUT = "EXEC_TIMEOUT"


class StageStatus(StrEnum):
    """A stage's status, rolled up from its jobs (a stage has no state of its own).

    ``RUNNING`` while any job runs or some jobs have started, ``QUEUE`` while
    none has; ended, it is ``CANCELED`` or ``FAILED`` if a job ended so
    (without continue-on-error), ``SKIP`` / ``UNEXEC`` if no job ran, else
    ``SUCCEED``.
    """

    QUEUE = "QUEUE"
    RUNNING = "RUNNING"
    SUCCEED = "SUCCEED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    SKIP = "SKIP"
    UNEXEC = "UNEXEC"


class AgentStatus(StrEnum):
    """An agent in ``GET /v1/nodes``: running a job attempt or not."""

    IDLE = "idle"
    BUSY = "busy"


class RunCondition(StrEnum):
    """Values of ``if`` for jobs and steps, after normalisation (``failure()`` → ``FAILURE``).

    - ``SUCCESS``: run only if everything before it succeeded (the default).
    - ``FAILURE``: run only if something before it failed.
    - ``ALWAYS``: run whatever happened before (the default for ``finally`` jobs).
    - ``CANCELED``: run only if the build was cancelled.

    "Before" means the earlier steps of the job for a step, and the earlier
    stages plus ``depend-on`` jobs for a job.
    """

    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    ALWAYS = "ALWAYS"
    CANCELED = "CANCELED"


class ContinueOnError(StrEnum):
    """Values of a step's ``continue-on-error`` (YAML booleans read as ``true``/``false``).

    - ``false``: a failure of the step fails the job (the default).
    - ``true``: the failure is recorded and the job goes on with the next step.
    - ``auto``: like ``true`` (BK-CI's name for continuing automatically).
    - ``manual``: the failure is kept for a user to decide (retry the step or
      let the job go on); until that exists the job stops there, as for ``false``.
    """

    FALSE = "false"
    TRUE = "true"
    AUTO = "auto"
    MANUAL = "manual"

    @property
    def continues(self) -> bool:
        """The job goes on past a failure of the step."""
        return self in _CONTINUING


_CONTINUING = frozenset({ContinueOnError.TRUE, ContinueOnError.AUTO})


class OnQueueFull(StrEnum):
    """What a concurrency group does with a build arriving at a full queue (docs/design.md §3.1 item 1)."""

    REJECT = "reject"  # refuse the new build (queue_full)
    CANCEL_OLDEST = "cancel-oldest"  # cancel the oldest queued build to make room


class EventKind(StrEnum):
    """What an event (``GET /v1/events``, ``rt.subscribe()``) is about.

    ``build``, ``job`` and ``step`` events carry the new ``BuildStatus`` /
    ``JobStatus`` / ``StepStatus`` in ``status``; ``group`` events a
    ``GroupChange`` and ``node`` events a ``NodeChange``.
    """

    BUILD = "build"
    JOB = "job"
    STEP = "step"
    GROUP = "group"
    NODE = "node"


class GroupChange(StrEnum):
    """The ``status`` of a ``group`` event: what happened to one build in a concurrency group.

    Every group event names the ``group``, the ``pipeline_id`` and the
    ``build_id`` (a retried finished build is admitted again under the same
    id); ``data`` has ``running`` and ``queued``, the group's counts right
    after the change (for builds that left the queue together, after they
    all left).

    - ``ADMITTED``: the build got a running place (at once, or from the queue).
    - ``QUEUED``: the build joined the queue; ``data.position`` is its place (1 = next).
    - ``REFUSED``: the queue was full (policy reject); ``reason`` says so.
      A refused new build never existed: the next build takes its number.
    - ``DEQUEUED``: it left the queue without running because its pipeline
      withdrew it (a user cancelled it while queued).
    - ``CANCELED``: the group cancelled it while it was queued, to make room
      (``cancel-oldest``) or for a newer build (``cancel-in-progress``);
      ``reason`` says which. A running build cancelled by cancel-in-progress
      keeps its place until it has stopped, then is ``RELEASED``.
    - ``QUEUE_TIMEOUT``: it waited past ``queue-timeout-minutes``; ``reason`` says how long.
    - ``RELEASED``: a running build ended and gave its place back.
    """

    ADMITTED = "ADMITTED"
    QUEUED = "QUEUED"
    REFUSED = "REFUSED"
    DEQUEUED = "DEQUEUED"
    CANCELED = "CANCELED"
    QUEUE_TIMEOUT = "QUEUE_TIMEOUT"
    RELEASED = "RELEASED"


class NodeChange(StrEnum):
    """The ``status`` of a ``node`` event: what happened to a build node or one of its agents.

    Every node event names the ``node``; ``data`` has its ``pool`` and what
    the change concerns (below).

    - ``ADDED``: the node joined; ``data.agents`` (names), ``data.labels``,
      ``data.kind`` (``local``, or ``remote`` for a ``shunter agent`` node).
    - ``DRAINING``: its removal was asked for; running jobs finish first
      (``data.busy``: agents still running one).
    - ``REMOVED``: its last agent left; the node is gone.
    - ``AGENT_LOST``: an agent crashed or fell silent past the heartbeat
      timeout; ``reason`` says which, ``data.agent`` names it and
      ``data.job`` the attempt it ran (``build/job#attempt``) or null.
    - ``AGENT_REPLACED``: a fresh agent took a lost one's place;
      ``data.agent`` is the new one, ``data.replaces`` the lost one.
    - ``CHANGED``: its labels or agent count were changed (``rt.update_node``);
      ``data.labels``, ``data.agents`` (names, new ones included, busy ones
      still leaving too) and ``data.agents_wanted``.
    - ``AGENT_RETIRED``: an agent left a node that had more than it wants,
      at the change or once its job (or lock chain) ended; ``data.agent``.
    - ``CONNECTED``: a remote node's process registered or was heard again
      after a disconnection; its agents (``data.agents``) are back.
    - ``DISCONNECTED``: a remote node's agents were lost (silent past the
      heartbeat timeout, or its process registered again with a new
      session); ``data.last_seen`` says when it was last heard (RFC 3339).
    """

    ADDED = "ADDED"
    DRAINING = "DRAINING"
    REMOVED = "REMOVED"
    AGENT_LOST = "AGENT_LOST"
    AGENT_REPLACED = "AGENT_REPLACED"
    CONNECTED = "CONNECTED"
    DISCONNECTED = "DISCONNECTED"
    CHANGED = "CHANGED"
    AGENT_RETIRED = "AGENT_RETIRED"


class FaultKind(StrEnum):
    """Faults ``rt.inject_fault`` can put into an agent (tests, benchmarks, drills)."""

    CRASH = "crash"  # the agent raises: its node reports it lost at once
    HANG = "hang"  # the agent stops handling messages and heartbeats
    SILENCE = "silence"  # only its heartbeats stop; it goes on working


class Blocker(StrEnum):
    """What holds a waiting job (``WaitingJob.blocked_by``, ``GET /v1/jobs/waiting``).

    Read from the words its reason has (docs/design.md §3.1): the pool's
    ``concurrency-limit-total ...``, ``concurrency-limit-per-node ...``,
    ``no node ...`` / ``node ... does not have labels ...``,
    ``no free agent ...``, ``agent ... (lock-resource-with) ...``, and the
    mutex's ``mutex '<label>' held by ...``.
    """

    TOTAL = "total"  # concurrency-limit-total of its job key
    PER_NODE = "per-node"  # concurrency-limit-per-node on every matching node
    NO_NODE = "no-node"  # no node of its pool matches runs-on (pool, node-name, labels)
    NO_FREE_AGENT = "no-free-agent"  # matching nodes, every agent busy
    AGENT = "agent"  # the agent of its lock-resource-with chain is busy, locked or gone
    MUTEX = "mutex"  # its mutex label is held


BUILD_FINAL = frozenset({BuildStatus.SUCCEED, BuildStatus.FAILED, BuildStatus.CANCELED, BuildStatus.QUEUE_TIMEOUT})
"""Build statuses that end a build."""

JOB_FAILING = frozenset({JobStatus.FAILED, JobStatus.CANCELED, JobStatus.QUEUE_TIMEOUT, JobStatus.HEARTBEAT_TIMEOUT,
                         JobStatus.EXEC_TIMEOUT})  # fmt: skip
"""A job that ended in one of these failed (it fails the build unless it has continue-on-error)."""

JOB_FINAL = JOB_FAILING | {JobStatus.SUCCEED, JobStatus.SKIP, JobStatus.UNEXEC}
"""Job statuses that end a job attempt."""

STEP_FAILING = frozenset({StepStatus.FAILED, StepStatus.CANCELED, StepStatus.EXEC_TIMEOUT})
"""A step that ended in one of these failed (and may be retried)."""

STEP_FINAL = STEP_FAILING | {StepStatus.SUCCEED, StepStatus.SKIP, StepStatus.UNEXEC}
"""Step statuses that end a step attempt."""


def values(words: type[StrEnum]) -> list[str]:
    """The strings of a vocabulary, in definition order (for messages and schemas)."""
    return [member.value for member in words]
