"""What an agent reports about an attempt: the records an ``AgentReport`` carries, applied in order
by the pipeline (``actors/builds/driver.py``).

An attempt that waits on something (a shell step, an async action) is
reported as it goes: ``JobStarted``, each step's ``StepStarted`` and
``StepEnded`` (or ``StepNotRun`` when its ``if`` keeps it from running),
then ``JobEnded``. An attempt of instant built-in steps, which the agent
runs inline at one instant, is reported as one ``InstantJob`` that stands
for all of those; ``InstantJob.records`` gives them back for a reader that
knows only the ordinary ones (a remote agent's uplink). None of them is
tracked by the garbage collector: they hold only data.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .vocab import JobStatus, StepStatus

__all__ = ["JobStarted", "StepStarted", "StepEnded", "StepNotRun", "JobEnded", "StepRan", "InstantJob", "Record"]


class JobStarted(msgspec.Struct, frozen=True, gc=False):
    node: str
    agent: str
    context: dict[str, str]
    time: float


class StepStarted(msgspec.Struct, frozen=True, gc=False):
    index: int
    log: Any  # the StepLog the agent writes
    time: float


class StepEnded(msgspec.Struct, frozen=True, gc=False):
    index: int
    status: StepStatus
    reason: str | None
    exit_code: int | None
    outputs: dict[str, str]
    exported_env: dict[str, str]
    time: float


class StepNotRun(msgspec.Struct, frozen=True, gc=False):
    index: int
    status: StepStatus  # SKIP or UNEXEC
    reason: str


class JobEnded(msgspec.Struct, frozen=True, gc=False):
    status: JobStatus
    reason: str | None
    time: float


class StepRan(msgspec.Struct, frozen=True, gc=False):
    """A step of an ``InstantJob``: its ``StepStarted`` and ``StepEnded`` in one, at the job's instant."""

    index: int
    log: Any  # the StepLog the agent wrote
    status: StepStatus
    reason: str | None
    exit_code: int | None
    outputs: dict[str, str]
    exported_env: dict[str, str]


class InstantJob(msgspec.Struct, frozen=True, gc=False):
    """A whole attempt an agent ran inline, all of it at the one instant ``time``.

    It stands for the attempt's ``JobStarted``, each step's ``StepStarted``
    and ``StepEnded`` (its ``StepRan``) or its ``StepNotRun``, and the
    ``JobEnded``, in that order; the pipeline makes from it the state and the
    events those would make. One record, made and applied in one pass: a
    one-step job's four records, handled one by one, cost more than the job.
    """

    node: str
    agent: str
    context: dict[str, str]  # as JobStarted's: the agent's context before the job
    time: float
    steps: tuple[StepRan | StepNotRun, ...]
    status: JobStatus
    reason: str | None

    def records(self) -> tuple[Record, ...]:
        """The ordinary records it stands for, in order."""
        now = self.time
        records: list[Record] = [JobStarted(self.node, self.agent, self.context, now)]
        for step in self.steps:
            if isinstance(step, StepRan):
                records.append(StepStarted(step.index, step.log, now))
                records.append(StepEnded(step.index, step.status, step.reason, step.exit_code, step.outputs,
                                         step.exported_env, now))  # fmt: skip
            else:
                records.append(step)
        records.append(JobEnded(self.status, self.reason, now))
        return tuple(records)


Record = JobStarted | StepStarted | StepEnded | StepNotRun | JobEnded
