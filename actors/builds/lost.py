"""Attempts whose agent was lost, or that may have been handed out before a restart.

Part of ``Build`` (a mixin, so ``build.py`` stays one screenful of rules per
concern): a lost agent's job is retried from its running step within one
``retry-times`` budget, and after a restart a queued attempt a remote agent
may hold is replaced by a new one, so that a run of the old one is stale.
"""

from __future__ import annotations

from typing import Protocol

from ..model.vocab import JobStatus, StepStatus
from .records import JobRun

__all__ = ["LostAttempts"]


class _Owner(Protocol):
    """What these rules need of the build."""

    cancelling: str | None
    execute_count: int

    def _new_attempt(self, job: JobRun, start_step: int, dispatch: list[JobRun], retry_of: int | None = None,
                     after_lost_agent: bool = False) -> None: ...  # fmt: skip


class LostAttempts:
    __slots__ = ()

    def retry_lost(self: _Owner, job: JobRun, status: JobStatus, reason: str | None, now: float) -> bool:
        """The job's agent was lost: retry elsewhere from the running step if its
        ``retry-times`` allows; True if a new attempt was made (dispatch ``job``)."""
        if self.cancelling is not None:
            return False
        attempt = job.attempts[-1]
        index = next((i for i, step in enumerate(job.steps) if step.status == StepStatus.RUNNING), None)
        # A remote agent can be lost after it was given the attempt and before
        # it said it started: nothing ran, so the first step is retried.
        never_started = index is None and attempt.started_at is None and attempt.start_step < len(job.steps)
        if index is None and not never_started:
            return False
        index = attempt.start_step if index is None else index
        step = job.steps[index]
        # retry-times is one budget across the attempts that lost agents made
        # in a row, not a fresh one per attempt (or a job whose agents keep
        # dying would retry forever)
        chain = {attempt.number}
        link = attempt
        while link.after_lost_agent and link.retry_of is not None:
            link = job.attempts[link.retry_of - 1]
            chain.add(link.number)
        tries = sum(1 for a in step.attempts if a.job_attempt in chain and a.execute_count == self.execute_count)
        if max(tries, len(chain) if never_started else 0) > step.spec.retry_times:
            return False
        if not never_started:
            step_attempt = step.attempts[-1]
            step_attempt.status, step_attempt.reason, step_attempt.finished_at = StepStatus.FAILED, reason, now
            step_attempt.log.close()
            step.status, step.reason = StepStatus.FAILED, reason
        attempt.status, attempt.reason, attempt.finished_at = status, reason, now
        self._new_attempt(job, index, [], retry_of=attempt.number, after_lost_agent=True)
        return True

    def fence_queued(self: _Owner, job: JobRun, reason: str, now: float) -> None:
        """End the queued attempt of ``job`` and queue a new one in its place.

        After a restart the server does not know whether it had handed a
        queued attempt to a remote agent (the hand-over is not stored; the
        agent's "started" report is). Asking again under a new attempt
        number makes a run of the old one stale wherever it is: its reports
        are refused, and its agent is told to kill it.
        """
        attempt = job.attempts[-1]
        attempt.status, attempt.reason, attempt.finished_at = JobStatus.CANCELED, reason, now
        self._new_attempt(job, attempt.start_step, [], retry_of=attempt.number)
