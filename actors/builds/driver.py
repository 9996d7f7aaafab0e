"""What a pipeline does with its builds once they are admitted: run them, cancel them, settle them.

``BuildDriver`` is the half of the pipeline actor (``pipeline.py``) that
drives build state machines (``build.py``): it starts a build, dispatches
its runnable jobs (through their job mutex when they have one, then to
their pool, pinned to the chain's agent for ``lock-resource-with``),
applies what agents report and what pools end themselves (dropping both
for attempts that are over: the attempt number is the fencing token),
cancels builds, and settles a build when it ends: its lock chains' agents
are unlocked, its group slot released, its waiters answered, and the
oldest finished builds forgotten past ``history``. Every change goes out as
an event, all of one message's events in one ``Publish``.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import msgspec

from ..core import Actor, Ref, Reply
from ..directory import Directory
from ..events import Record
from ..model.errors import NotFound
from ..model.messages import (
    AgentReport,
    EndJob,
    InstantJob,
    JobEnded,
    JobRequest,
    JobStarted,
    JobToken,
    JobWaiting,
    MutexAcquire,
    MutexRefused,
    MutexRelease,
    Release,
    StepEnded,
    StepNotRun,
    StepRan,
    StepStarted,
    Unlock,
    Withdraw,
)
from ..model.spec import Concurrency, PipelineSpec
from ..model.templates import TemplateError, render
from ..state.durable import Durable
from .build import Build
from .payload import chain_agent, job_payload, template_context
from .records import JobRun
from .snapshot import build_info
from .submission import RetryPlan
from ..model.vocab import BUILD_FINAL, BuildStatus, EventKind, JobStatus, StepStatus

__all__ = ["BuildDriver", "NotHeld"]

# A job whose status changed without an attempt of their own (see _emit_unrun).
_UNRUN = frozenset({JobStatus.UNEXEC, JobStatus.SKIP, JobStatus.DEPENDENT_WAITING})
# Read on every job's end: module globals, not enum class attributes.
_WAITING, _HEARTBEAT_TIMEOUT = JobStatus.DEPENDENT_WAITING, JobStatus.HEARTBEAT_TIMEOUT
_STEP_RUNNING = StepStatus.RUNNING
_BUILD, _JOB, _STEP = EventKind.BUILD, EventKind.JOB, EventKind.STEP


class NotHeld(NotFound):
    """The pipeline holds no such build (it may be in the store: finished, out of the cache)."""


class BuildDriver(Actor):
    """Runs, cancels and settles a pipeline's admitted builds. See the module docstring."""

    def __init__(self, *, pipeline_id: str, spec: PipelineSpec, hub: Ref, pools: Directory, groups: Directory,
                 mutexes: Directory, history: int = 5_000, durable: Durable | None = None) -> None:  # fmt: skip
        self.pipeline_id = pipeline_id
        self.spec = spec  # the current definition (a build runs on the one it started with)
        self.hub = hub
        self.pools = pools
        self.pool_refs: dict[str, Ref] = {}  # pool name -> its actor, while it runs (see _request_agent)
        self.groups = groups
        self.mutexes = mutexes
        self.history = history  # finished builds kept here; with a store, older ones are read from it
        # With durable state (docs/design.md §10): the journal of this pipeline's builds; replies wait for its commits.
        self.durable = durable
        self.resuming: set[str] = set()  # running builds restored at start, waiting for their group slot
        self.remote_nodes: frozenset[str] = frozenset()  # at a restart: whose agents may still run their jobs
        self.builds: dict[str, Build] = {}
        self.reruns: dict[str, RetryPlan] = {}  # finished builds whose retry awaits its group's answer
        self.waiters: dict[str, list[Reply]] = {}
        # finished builds, oldest first, and the seq of each one's last write: two deques rather than
        # one of pairs, whose tuple per build the garbage collector counted for as long as it was kept
        self.finished_order: deque[str] = deque()
        self.finished_seqs: deque[int] = deque()
        self.outbox: list[Record] = []
        # The wall clock, read once per handled message (PipelineActor.receive): the events of one message
        # are stamped with it, so a reader formats their shared stamp once (rfc3339's memo), and each
        # record is made without a clock call of its own.
        self.clock = time.time()
        self.stale_reports = 0
        # attempts waiting for their mutex: token -> (build, mutex label)
        self.mutex_waits: dict[JobToken, tuple[Build, str]] = {}

    def _group(self, name: str) -> Ref:
        return self.groups.get(name)

    def _group_config_of(self, build: Build) -> Concurrency:
        """The limits of ``build``'s group as its own definition says (a restored build may predate a replace)."""
        concurrency = build.spec.concurrency or self.spec.concurrency
        assert concurrency is not None and build.group is not None
        return msgspec.structs.replace(concurrency, group=build.group)

    # -- running -------------------------------------------------------------------------

    def _start(self, build: Build) -> None:
        previous = build.status
        unrun: list[JobRun] = []
        dispatch = build.start(time.time(), unrun)
        self._emit_build(build, previous)
        self._emit_ended_at_start(build, unrun)
        self._dispatch(build, dispatch)
        if build.finished:
            self._finished(build)

    def _emit_ended_at_start(self, build: Build, unrun: list[JobRun]) -> None:
        """Events for the jobs a build's start ended without running (an ``if: FAILURE`` job of the first
        stage is SKIPped at once): a follower of the events learns every job's end."""
        for job in unrun:
            self._emit_job(build, job, _WAITING)

    def _dispatch(self, build: Build, jobs: list[JobRun]) -> None:
        if self.durable is not None and jobs:
            self.durable.touch(build)
        outbox, build_id = self.outbox, build.id
        for job in jobs:
            attempt = job.attempts[-1].number
            outbox.append(Record(_JOB, job.status, job.reason, pipeline_id=self.pipeline_id, build_id=build_id,
                                 job_id=job.id, attempt=attempt, time=self.clock))  # fmt: skip
            token = JobToken(build_id, job.id, attempt)
            mutex = job.spec.mutex
            if mutex is None:
                self._request_agent(build, job, token)
                continue
            try:
                label = render(mutex.label, template_context(build))
            except TemplateError as error:
                self._end_job(build, job, JobStatus.FAILED, f"mutex label: {error}")
                continue
            self.mutex_waits[token] = (build, label)
            self.mutexes.get(label).tell(
                MutexAcquire(token, self.ref, label, mutex.queue_length, mutex.timeout_minutes)
            )

    def _request_agent(self, build: Build, job: JobRun, token: JobToken) -> None:
        runs_on = job.spec.runs_on
        in_chain = job.id in build.shape.chains
        durable = self.durable
        if durable is None:
            payload = job_payload(build, job)
        else:
            payload = job_payload(build, job, f"{durable.log_root}/{build.number}", durable.max_log_bytes)
        # the pool's ref is kept: the directory's lookup was four calls per job
        pool = self.pool_refs.get(runs_on.pool_name)
        if pool is None or pool.stopped:
            pool = self.pool_refs[runs_on.pool_name] = self.pools.get(runs_on.pool_name)
        # the cell's name read directly: the ``name`` property's call was a tenth of this function
        pool.tell(JobRequest(token, self._cell.name, payload, runs_on, chain_agent(build, job) if in_chain else None,
                             in_chain))  # fmt: skip

    def _job_waiting(self, message: JobWaiting) -> None:
        """The pool says why the attempt waits (no node can run it), or that it no longer does."""
        token = message.token
        build = self.builds.get(token.build_id)
        job = build.live_attempt(token.job_id, token.attempt) if build is not None else None
        if build is not None and job is not None and job.status == JobStatus.QUEUE and job.reason != message.reason:
            job.reason = message.reason
            self._emit_job(build, job, JobStatus.QUEUE)

    def _mutex_granted(self, token: JobToken) -> None:
        waiting = self.mutex_waits.pop(token, None)
        if waiting is None:
            return  # withdrawn meanwhile; our MutexRelease hands it back
        build, _ = waiting
        job = build.live_attempt(token.job_id, token.attempt)
        if job is not None:
            self._request_agent(build, job, token)

    def _mutex_refused(self, message: MutexRefused) -> None:
        waiting = self.mutex_waits.pop(message.token, None)
        if waiting is None:
            return
        build, _ = waiting
        job = build.live_attempt(message.token.job_id, message.token.attempt)
        if job is not None:
            status = JobStatus.QUEUE_TIMEOUT if message.timed_out else JobStatus.FAILED
            self._end_job(build, job, status, message.reason, mutex_held=False)

    def _end_job(self, build: Build, job: JobRun, status: JobStatus, reason: str, mutex_held: bool = True) -> None:
        """End an attempt here, no agent or pool involved (its mutex refused it, a cancel found it waiting)."""
        token = JobToken(build.id, job.id, job.attempts[-1].number)
        self._job_ended(build, job, token, status, reason, time.time(), mutex_held)

    # -- what agents and pools report ----------------------------------------------------

    def _live(self, token: JobToken) -> tuple[Build, JobRun] | None:
        """The build and job of ``token`` if it is their current attempt; None (counted) if it is over."""
        build = self.builds.get(token.build_id)
        job = build.live_attempt(token.job_id, token.attempt) if build is not None else None
        if build is None or job is None:
            self.stale_reports += 1  # fenced: a message about an attempt that is over (as in _report)
            return None
        return build, job

    def _report(self, report: AgentReport) -> None:
        """Apply an agent's records in order, in one loop with their events made inline: a build
        brings four records, and a call per record and per event cost ~1 µs of the pipeline's ~13."""
        token = report.token
        build = self.builds.get(token.build_id)
        job = build.live_attempt(token.job_id, token.attempt) if build is not None else None
        if build is None or job is None:
            self.stale_reports += 1  # fenced: a message about an attempt that is over
            return
        if self.durable is not None and report.records:
            self.durable.touch(build)  # every record below is a change
        outbox, pipeline_id, build_id, job_id, clock = self.outbox, self.pipeline_id, build.id, job.id, self.clock
        record: Any  # one of the report's record types, told apart by type
        for record in report.records:
            kind = type(record)
            if kind is InstantJob:
                self._instant(build, job, token, record)
            elif kind is StepStarted:
                step = job.steps[record.index]
                attempt = build.step_started(job, record.index, record.log, record.time)
                outbox.append(Record(_STEP, step.status, None, pipeline_id=pipeline_id, build_id=build_id,
                                     job_id=job_id, step_id=step.spec.id, attempt=attempt.number,
                                     time=clock))  # fmt: skip
            elif kind is StepEnded:
                step = job.steps[record.index]
                build.step_ended(job, record.index, record.status, record.reason, record.exit_code,
                                 record.outputs, record.exported_env, record.time)  # fmt: skip
                outbox.append(Record(_STEP, step.status, step.reason, pipeline_id=pipeline_id, build_id=build_id,
                                     job_id=job_id, step_id=step.spec.id, attempt=step.attempts[-1].number,
                                     time=clock))  # fmt: skip
            elif kind is StepNotRun:
                build.step_not_run(job, record.index, record.status, record.reason)
                self._emit_step(build, job, record.index)
            elif kind is JobStarted:
                previous = job.status
                build.job_started(job, record.node, record.agent, record.context, record.time)
                if build.shape.chains:  # most pipelines have no lock-resource-with chain
                    build.lock_agent(job, job.spec.runs_on.pool_name, record.agent)
                outbox.append(Record(_JOB, job.status, job.reason, pipeline_id=pipeline_id, build_id=build_id,
                                     job_id=job_id, attempt=job.attempts[-1].number, previous=previous,
                                     time=clock))  # fmt: skip
            elif kind is JobEnded:
                self._job_ended(build, job, token, record.status, record.reason, record.time)

    def _instant(self, build: Build, job: JobRun, token: JobToken, ran: InstantJob) -> None:
        """Apply a whole attempt run inline as its records would be applied one by one (``_report``),
        making the same state and events, in one pass: the job's start, each step's attempt made ended."""
        previous, now = job.status, ran.time
        build.job_started(job, ran.node, ran.agent, ran.context, now)
        if build.shape.chains:
            build.lock_agent(job, job.spec.runs_on.pool_name, ran.agent)
        outbox, pipeline_id, build_id, job_id, clock = self.outbox, self.pipeline_id, build.id, job.id, self.clock
        attempt = job.attempts[-1].number
        outbox.append(Record(_JOB, job.status, job.reason, pipeline_id=pipeline_id, build_id=build_id, job_id=job_id,
                             attempt=attempt, previous=previous, time=clock))  # fmt: skip
        steps, execute_count = job.steps, build.execute_count
        step_ran: Any  # a StepRan or a StepNotRun, told apart by type
        for step_ran in ran.steps:
            if type(step_ran) is StepRan:
                step = steps[step_ran.index]
                number = step.ran(step_ran, execute_count, attempt, now)
                step_id = step.spec.id
                outbox.append(Record(_STEP, _STEP_RUNNING, None, pipeline_id=pipeline_id, build_id=build_id,
                                     job_id=job_id, step_id=step_id, attempt=number, time=clock))  # fmt: skip
                outbox.append(Record(_STEP, step.status, step.reason, pipeline_id=pipeline_id, build_id=build_id,
                                     job_id=job_id, step_id=step_id, attempt=number, time=clock))  # fmt: skip
            else:
                build.step_not_run(job, step_ran.index, step_ran.status, step_ran.reason)
                self._emit_step(build, job, step_ran.index)
        self._job_ended(build, job, token, ran.status, ran.reason, now)

    def _pool_ended(self, message: EndJob) -> None:
        """The pool ended the attempt itself (see ``EndJob``): it ends as its agent's JobEnded would end it."""
        live = self._live(message.token)
        if live is not None:
            build, job = live
            self._job_ended(build, job, message.token, message.status, message.reason, message.time)

    def _job_ended(self, build: Build, job: JobRun, token: JobToken, status: JobStatus, reason: str | None, now: float,
                   mutex_held: bool = True) -> None:  # fmt: skip
        """The attempt ended (its agent said so, the pool or this actor ended it): free its mutex,
        retry it elsewhere if its agent was lost and its step allows, else move the build on."""
        previous_build, previous_job = build.status, job.status
        if job.spec.mutex is not None and mutex_held:
            self._release_mutex(build, token)
        if status == _HEARTBEAT_TIMEOUT and build.retry_lost(job, status, reason, now):
            self._dispatch(build, [job])  # the step allows it: again, on another agent
            return
        unrun: list[JobRun] = []  # jobs that were waiting and now end without running
        dispatch = build.job_ended(job, status, reason, now, unrun)
        if self.durable is not None:
            self.durable.touch(build)
        # the job's event and (below) the build's made here: a call each cost more than the making
        self.outbox.append(Record(_JOB, job.status, job.reason, pipeline_id=self.pipeline_id, build_id=build.id,
                                  job_id=job.id, attempt=job.attempts[-1].number, previous=previous_job,
                                  time=self.clock))  # fmt: skip
        for other in unrun:
            self._emit_job(build, other, _WAITING)
        if build.locked:
            self._unlock_finished_chains(build)
        if dispatch:
            self._dispatch(build, dispatch)
        if build.status in BUILD_FINAL:
            self.outbox.append(Record(_BUILD, build.status, build.reason, pipeline_id=self.pipeline_id,
                                      build_id=build.id, attempt=build.execute_count, previous=previous_build,
                                      time=self.clock))
            self._finished(build)

    def _release_mutex(self, build: Build, token: JobToken) -> None:
        waiting = self.mutex_waits.pop(token, None)
        label = waiting[1] if waiting is not None else self._mutex_label(build, token.job_id)
        if label is not None:
            self.mutexes.get(label).tell(MutexRelease(token))

    def _mutex_label(self, build: Build, job_id: str) -> str | None:
        mutex = build.jobs[job_id].spec.mutex
        if mutex is None:
            return None
        try:
            return render(mutex.label, template_context(build))
        except TemplateError:
            return None

    # -- ending --------------------------------------------------------------------------

    def _unlock_finished_chains(self, build: Build, everything: bool = False) -> None:
        """A lock chain whose jobs have all ended (or a build that ended) frees its agent.

        Callers skip it for a build that holds none (``build.locked`` empty): most builds."""
        for pool, agent in build.agents_to_unlock(everything):
            self.pools.get(pool).tell(Unlock(build.id, agent))

    def _finished(self, build: Build) -> None:
        if build.locked:
            self._unlock_finished_chains(build, everything=True)
        if build.group is not None:
            self._group(build.group).tell(Release(build.id))
        self._settled(build)

    def _settled(self, build: Build) -> None:
        """The build has ended and holds nothing: answer its waiters, forget the oldest past ``history``."""
        for reply in self.waiters.pop(build.id, ()):
            self._answer(reply, build_info(build))
        # the write at the end of this message holds its final state
        self.finished_order.append(build.id)
        self.finished_seqs.append(self.durable.seq + 1 if self.durable is not None else 0)
        if len(self.finished_order) > self.history:
            self._forget_old()

    def _forget_old(self) -> None:
        """Drop the oldest finished builds past ``history`` (with a store: once their final state is committed)."""
        order, seqs, builds = self.finished_order, self.finished_seqs, self.builds
        committed = self.durable.committed if self.durable is not None else 0
        while len(order) > self.history and seqs[0] <= committed:
            old = order.popleft()
            seqs.popleft()
            build = builds.get(old)
            if build is not None and build.status in BUILD_FINAL and old not in self.reruns:
                del builds[old]

    def _answer(self, reply: Reply, value: Any) -> None:
        """Answer now, or with a store once this message's changes are committed."""
        if self.durable is not None:
            self.durable.answer(reply, value)
        else:
            reply.set_result(value)

    def _store(self, build: Build) -> None:
        self.builds[build.id] = build

    # -- cancel --------------------------------------------------------------------------

    def _cancel(self, build: Build, reason: str) -> None:
        previous = build.status
        states = {job.id: job.status for job in build.all_jobs()}
        stop = build.cancel(reason, time.time())
        for job in stop:
            token = JobToken(build.id, job.id, job.attempts[-1].number)
            waiting = self.mutex_waits.pop(token, None)
            if waiting is not None:  # still waiting for its mutex: no agent to stop
                self.mutexes.get(waiting[1]).tell(MutexRelease(token))
                self._end_job(build, job, JobStatus.CANCELED, reason, mutex_held=False)
            else:
                self.pools.get(job.spec.runs_on.pool_name).tell(Withdraw(token, reason))
        if build.finished and previous == BuildStatus.RUNNING:
            return  # the last job ended just now (mutex waiters), _apply finished the build
        if build.finished:  # it was queued
            self._emit_build(build, previous)
            self._emit_unrun(build, states)
            self._finished(build)
            return
        dispatch = build.advance(time.time())
        self._emit_unrun(build, states)
        self._dispatch(build, dispatch)
        if build.finished:
            self._emit_build(build, previous)
            self._finished(build)

    # -- queries -------------------------------------------------------------------------

    def _build(self, build_id: str) -> Build:
        build = self.builds.get(build_id)
        if build is None:
            raise NotHeld(f"no build {build_id!r}")
        return build

    # -- events --------------------------------------------------------------------------

    def _emit_build(self, build: Build, previous: str | None) -> None:
        if self.durable is not None:
            self.durable.touch(build)
        self.outbox.append(Record(EventKind.BUILD, build.status, build.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, attempt=build.execute_count, previous=previous, time=self.clock))

    def _emit_job(self, build: Build, job: JobRun, previous: str | None) -> None:
        if self.durable is not None:
            self.durable.touch(build)
        attempt = job.attempts[-1].number if job.attempts else None
        self.outbox.append(Record(EventKind.JOB, job.status, job.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, job_id=job.id, attempt=attempt, previous=previous,
                                  time=self.clock))

    def _emit_step(self, build: Build, job: JobRun, index: int) -> None:
        if self.durable is not None:
            self.durable.touch(build)
        step = job.steps[index]
        attempt = step.attempts[-1].number if step.attempts else None
        self.outbox.append(Record(EventKind.STEP, step.status, step.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, job_id=job.id, step_id=step.spec.id, attempt=attempt,
                                  time=self.clock))

    def _emit_unrun(self, build: Build, before: dict[str, JobStatus]) -> None:
        """Events for jobs whose status changed without an attempt of their own."""
        for job in build.all_jobs():
            if before.get(job.id) != job.status and job.status in _UNRUN:
                self._emit_job(build, job, before.get(job.id))
