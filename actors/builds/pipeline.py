"""The pipeline actor: owns its builds and drives their state machines.

It numbers builds, renders their concurrency group, asks the group for
admission (answering the submitter only once the group has decided, through
the deferred reply slot), requests agents for runnable jobs, applies what
agents report and what the pool ended itself (dropping both for stale
attempts), and tells the group when a build ends. Retries inside a running
build never go through the group; retries of a finished build are new
admissions (DESIGN §3.1 items 4 and 5).

While the group decides, the pipeline keeps what it will do with the
answer: the deferred reply slot by build id, and for the retry of a
finished build its ``RetryPlan``. The group is told only build ids and limits.

A deleted pipeline (``RetirePipeline``) refuses new builds and retries but
keeps its builds readable and its numbering; registering it again
(``ReplaceSpec``) revives it, so a build id is never used twice.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

import msgspec

from .build import Build
from .records import BuildShape, JobRun
from ..core import Actor, Ref, Reply
from ..directory import Directory
from ..model.errors import Conflict, InvalidRequest, NotFound, NotRetryable, QueueFull, UndeclaredVariable
from ..events import Publish, Record
from ..model.messages import (
    Admit,
    Admitted,
    AgentReport,
    BuildKey,
    CancelBuild,
    CancelRequest,
    Dequeued,
    DescribePipeline,
    EndJob,
    GetBuild,
    GetLog,
    JobEnded,
    JobRequest,
    JobStarted,
    JobToken,
    JobWaiting,
    ListBuilds,
    MutexAcquire,
    MutexGranted,
    MutexRefused,
    MutexRelease,
    Queued,
    Refused,
    Release,
    ReplaceSpec,
    RetirePipeline,
    RetryRequest,
    StepEnded,
    StepNotRun,
    StepStarted,
    SubmitBuild,
    Unlock,
    WaitBuild,
    Withdraw,
)
from ..model.info import BuildInfo
from .listing import build_key, build_log, describe, list_builds
from .payload import chain_agent, job_payload, template_context
from .snapshot import build_info
from ..model.spec import Concurrency, PipelineSpec
from ..model.templates import TemplateError, render
from ..model.vocab import BuildStatus, EventKind, JobStatus

# A job whose status changed without an attempt of its own (see _emit_unrun).
_UNRUN = frozenset({JobStatus.UNEXEC, JobStatus.SKIP, JobStatus.DEPENDENT_WAITING})

__all__ = ["PipelineActor", "RetryPlan"]


class RetryPlan(msgspec.Struct, frozen=True, gc=False):
    """A retry of a finished build: what runs again, applied once its group admits it.

    ``job``, ``step`` and ``failed_only`` are as asked (``Build.rerun_plan``
    says what they select); ``group`` is the group name rendered again for
    this execution; ``queued_at`` is when the retry was asked (wall clock).
    """

    job: str | None
    step: str | None
    failed_only: bool
    group: str | None
    queued_at: float


class PipelineActor(Actor):
    """One registered pipeline and all its builds. See the module docstring."""

    def __init__(
        self,
        *,
        pipeline_id: str,
        spec: PipelineSpec,
        hub: Ref,
        pools: Directory,
        groups: Directory,
        mutexes: Directory,
        history: int = 5_000,
    ) -> None:
        self.pipeline_id = pipeline_id
        self.spec = spec
        self.shape = BuildShape(spec)
        self.hub = hub
        self.pools = pools
        self.groups = groups
        self.mutexes = mutexes
        self.history = history
        self.next_number = 1
        self.builds: dict[str, Build] = {}
        self.pending: dict[str, Build] = {}  # new builds waiting for their group's answer
        self.reruns: dict[str, RetryPlan] = {}  # finished builds whose retry awaits its group's answer
        self.replies: dict[str, Reply] = {}  # submit or retry asks answered once the group has decided
        self.waiters: dict[str, list[Reply]] = {}
        self.finished_order: deque[str] = deque()
        self.outbox: list[Record] = []
        self.stale_reports = 0
        # attempts waiting for their mutex: token -> (build, mutex label)
        self.mutex_waits: dict[JobToken, tuple[Build, str]] = {}
        self.retired: str | None = None  # deleted: the reason its unfinished builds were cancelled with

    def receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        finally:
            if self.outbox:
                self.hub.tell(Publish(tuple(self.outbox)))
                self.outbox.clear()

    def _handle(self, message: Any) -> Any:
        kind = type(message)
        if kind is AgentReport:
            self._report(message)
        elif kind is EndJob:
            self._pool_ended(message)
        elif kind is JobWaiting:
            self._job_waiting(message)
        elif kind is MutexGranted:
            self._mutex_granted(message.token)
        elif kind is MutexRefused:
            self._mutex_refused(message)
        elif kind is Admitted:
            self._admitted(message)
        elif kind is Queued:
            self._queued(message)
        elif kind is Refused:
            self._refused(message)
        elif kind is Dequeued:
            self._dequeued(message)
        elif kind is CancelBuild:
            build = self.builds.get(message.build_id)
            if build is not None and not build.finished:
                self._cancel(build, message.reason)
        elif kind is SubmitBuild:
            if self.retired is not None:
                raise NotFound(f"no pipeline {self.pipeline_id!r} (it was deleted)")
            return self._submit(message)
        elif kind is GetBuild:
            return build_info(self._build(message.build_id))
        elif kind is ListBuilds:
            return list_builds(self.builds.values(), message)
        elif kind is BuildKey:
            return build_key(self._build(message.build_id))
        elif kind is CancelRequest:
            return self._user_cancel(message)
        elif kind is RetryRequest:
            return self._retry(message)
        elif kind is WaitBuild:
            build = self._build(message.build_id)
            if build.finished:
                return build_info(build)
            # Drop the slots of waits that timed out, so polling never piles them up.
            waiting = [reply for reply in self.waiters.get(build.id, ()) if not reply.done]
            waiting.append(self.defer_reply())
            self.waiters[build.id] = waiting
        elif kind is ReplaceSpec:
            self.spec = message.spec
            self.shape = BuildShape(message.spec)
            self.retired = None
            return describe(self.pipeline_id, self.spec, len(self.builds))
        elif kind is DescribePipeline:
            return describe(self.pipeline_id, self.spec, len(self.builds))
        elif kind is RetirePipeline:
            return self._retire(message)
        elif kind is GetLog:
            return build_log(self._build(message.build_id), message)
        else:
            raise TypeError(f"pipeline {self.pipeline_id!r} got an unexpected {kind.__name__}")
        return None

    # -- submission and admission ------------------------------------------------------

    def _submit(self, message: SubmitBuild) -> BuildInfo | None:
        """Reply at once without a group; otherwise once the group has decided."""
        variables = self._variables(message.variables)
        number = self.next_number
        build_id = f"{self.pipeline_id}.{number}"
        group = self._render_group(build_id, number, variables)
        self.next_number += 1
        build = Build(build_id=build_id, spec=self.shape, number=number, variables=variables, group=group,
                      now=time.time())  # fmt: skip
        if group is None:
            self._store(build)
            self._emit_build(build, None)
            self._start(build)
            return build_info(build)
        self.pending[build_id] = build
        assert build.queued_at is not None
        self.replies[build_id] = self.defer_reply()
        self._group(group).tell(Admit(build_id, self.ref, self._group_config(group), build.queued_at))
        return None

    def _variables(self, given: dict[str, Any]) -> dict[str, str]:
        declared = self.spec.variables
        unknown = sorted(set(given) - set(declared))
        if unknown:
            names = ", ".join(sorted(declared)) or "none"
            raise UndeclaredVariable(
                f"pipeline {self.pipeline_id!r} declares no variable {', '.join(map(repr, unknown))} "
                f"(declared: {names})",
                details=[{"path": f"$.variables.{name}", "message": "not declared by the pipeline"} for name in unknown],
            )
        values = dict(declared)
        for name, value in given.items():
            if isinstance(value, bool):
                value = "true" if value else "false"
            elif isinstance(value, (int, float)):
                value = str(value)
            elif not isinstance(value, str):
                raise InvalidRequest(
                    f"variable {name!r} must be a string, number or boolean, got {type(value).__name__}",
                    details=[{"path": f"$.variables.{name}", "message": "must be a string, number or boolean"}],
                )
            values[name] = value
        return values

    def _render_group(self, build_id: str, number: int, variables: dict[str, str]) -> str | None:
        concurrency = self.spec.concurrency
        if concurrency is None:
            return None
        context = {"ci": {"pipeline_id": self.pipeline_id, "build_id": build_id, "build_num": str(number)},
                   "variables": variables}  # fmt: skip
        try:
            name = render(concurrency.group, context).strip()
        except TemplateError as error:
            raise InvalidRequest(f"concurrency group of pipeline {self.pipeline_id!r}: {error}") from None
        if not name:
            raise InvalidRequest(f"concurrency group of pipeline {self.pipeline_id!r} rendered to an empty name")
        return sys.intern(name)  # builds of one group share its name, not a copy each

    def _group_config(self, name: str) -> Concurrency:
        concurrency = self.spec.concurrency
        assert concurrency is not None
        return msgspec.structs.replace(concurrency, group=name)

    def _group(self, name: str) -> Ref:
        return self.groups.get(name)

    def _admitted(self, message: Admitted) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None:
            self._store(build)
            self._emit_build(build, None)
        else:
            build = self.builds.get(message.build_id)
            if build is None:
                return
            plan = self.reruns.pop(build.id, None)
            if plan is not None:
                self._apply_rerun(build, plan)
            elif build.status != BuildStatus.QUEUE:
                # cancelled while the admission was on its way: hand the place back
                if build.group is not None:
                    self._group(build.group).tell(Release(build.id))
                return
        self._start(build)
        reply = self.replies.pop(build.id, None)  # none for a build admitted from the queue
        if reply is not None:
            reply.set_result(build_info(build))

    def _queued(self, message: Queued) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None:
            self._store(build)
            self._emit_build(build, None)
        else:
            build = self.builds[message.build_id]
            plan = self.reruns.pop(build.id, None)
            if plan is not None:
                self._apply_rerun(build, plan)
        if self.retired is not None:  # deleted while its admission was on its way
            self._cancel(build, self.retired)
        reply = self.replies.pop(build.id, None)
        if reply is not None:
            reply.set_result(build_info(build, message.position))

    def _refused(self, message: Refused) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None and build.number == self.next_number - 1:
            self.next_number -= 1  # the refused build never existed: keep numbers dense
        self.reruns.pop(message.build_id, None)
        reply = self.replies.pop(message.build_id, None)
        if reply is not None:
            reply.set_error(QueueFull(message.message))

    def _dequeued(self, message: Dequeued) -> None:
        """End the builds the group let go unstarted; their events leave in one Publish (the outbox)."""
        now = time.time()
        for build_id in message.build_ids:
            build = self.builds.get(build_id)
            if build is None or build.status != BuildStatus.QUEUE:
                continue
            build.end_unstarted(message.status, message.reason, now)
            self._emit_build(build, BuildStatus.QUEUE)
            # It never started: it holds no agent, and the group has let it go.
            self._settled(build)

    # -- running ---------------------------------------------------------------------------

    def _start(self, build: Build) -> None:
        if self.retired is not None:  # deleted while its admission was on its way
            self._cancel(build, self.retired)
            return
        previous = build.status
        dispatch = build.start(time.time())
        self._emit_build(build, previous)
        self._dispatch(build, dispatch)
        if build.finished:
            self._finished(build)

    def _dispatch(self, build: Build, jobs: list[JobRun]) -> None:
        for job in jobs:
            self._emit_job(build, job, None)
            token = JobToken(build.id, job.id, job.attempts[-1].number)
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
        in_chain = job.id in build.chains
        self.pools.get(runs_on.pool_name).tell(
            JobRequest(token, self.ref, job_payload(build, job), runs_on,
                       agent=chain_agent(build, job) if in_chain else None, lock=in_chain)  # fmt: skip
        )

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

    def _live(self, token: JobToken) -> tuple[Build, JobRun] | None:
        """The build and job of ``token`` if it is their current attempt; None (counted) if it is over."""
        build = self.builds.get(token.build_id)
        job = build.live_attempt(token.job_id, token.attempt) if build is not None else None
        if build is None or job is None:
            self.stale_reports += 1  # fenced: a message about an attempt that is over
            return None
        return build, job

    def _report(self, report: AgentReport) -> None:
        live = self._live(report.token)
        if live is not None:
            build, job = live
            for record in report.records:
                self._apply(build, job, report.token, record)

    def _pool_ended(self, message: EndJob) -> None:
        """The pool ended the attempt itself (see ``EndJob``): it ends as its agent's JobEnded would end it."""
        live = self._live(message.token)
        if live is not None:
            build, job = live
            self._job_ended(build, job, message.token, message.status, message.reason, message.time)

    def _apply(self, build: Build, job: JobRun, token: JobToken, record: Any) -> None:
        """Apply one record of an agent's report."""
        kind = type(record)
        if kind is StepStarted:
            build.step_started(job, record.index, record.log, record.time)
            self._emit_step(build, job, record.index)
        elif kind is StepEnded:
            build.step_ended(job, record.index, record.status, record.reason, record.exit_code,
                             record.outputs, record.exported_env, record.time)  # fmt: skip
            self._emit_step(build, job, record.index)
        elif kind is StepNotRun:
            build.step_not_run(job, record.index, record.status, record.reason)
            self._emit_step(build, job, record.index)
        elif kind is JobStarted:
            previous = job.status
            build.job_started(job, record.node, record.agent, record.context, record.time)
            build.lock_agent(job, job.spec.runs_on.pool_name, record.agent)
            self._emit_job(build, job, previous)
        elif kind is JobEnded:
            self._job_ended(build, job, token, record.status, record.reason, record.time)

    def _job_ended(self, build: Build, job: JobRun, token: JobToken, status: JobStatus, reason: str | None, now: float,
                   mutex_held: bool = True) -> None:  # fmt: skip
        """The attempt ended (its agent said so, the pool or this actor ended it): free its mutex,
        retry it elsewhere if its agent was lost and its step allows, else move the build on."""
        previous_build, previous_job = build.status, job.status
        states = {other.id: other.status for other in build.all_jobs()}
        if job.spec.mutex is not None and mutex_held:
            self._release_mutex(build, token)
        if status == JobStatus.HEARTBEAT_TIMEOUT and build.retry_lost(job, status, reason, now):
            self._dispatch(build, [job])  # the step allows it: again, on another agent
            return
        dispatch = build.job_ended(job, status, reason, now)
        self._emit_job(build, job, previous_job)
        self._emit_unrun(build, states)
        self._unlock_finished_chains(build)
        self._dispatch(build, dispatch)
        if build.finished:
            self._emit_build(build, previous_build)
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

    def _unlock_finished_chains(self, build: Build, everything: bool = False) -> None:
        """A lock chain whose jobs have all ended (or a build that ended) frees its agent."""
        for pool, agent in build.agents_to_unlock(everything):
            self.pools.get(pool).tell(Unlock(build.id, agent))

    def _finished(self, build: Build) -> None:
        self._unlock_finished_chains(build, everything=True)
        if build.group is not None:
            self._group(build.group).tell(Release(build.id))
        self._settled(build)

    def _settled(self, build: Build) -> None:
        """The build has ended and holds nothing: answer its waiters, forget the oldest past ``history``."""
        for reply in self.waiters.pop(build.id, ()):
            reply.set_result(build_info(build))
        self.finished_order.append(build.id)
        while len(self.finished_order) > self.history:
            old = self.finished_order.popleft()
            if old in self.builds and self.builds[old].finished and old not in self.reruns:
                del self.builds[old]

    def _store(self, build: Build) -> None:
        self.builds[build.id] = build

    # -- cancel and retry ------------------------------------------------------------------

    def _user_cancel(self, request: CancelRequest) -> BuildInfo:
        build = self._build(request.build_id)
        if build.finished:
            raise Conflict(f"build {build.id!r} has already finished ({build.status})")
        self._cancel(build, request.reason)
        return build_info(build)

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

    def _retire(self, request: RetirePipeline) -> list[str]:
        """Delete: refused while builds are unfinished unless asked to cancel them (their ids are answered)."""
        if self.retired is not None:
            raise NotFound(f"no pipeline {self.pipeline_id!r} (it was deleted)")
        live = [b for b in self.builds.values() if not b.finished]
        unfinished = sorted({*self.pending, *self.reruns, *(b.id for b in live)},
                            key=lambda build_id: int(build_id.rpartition(".")[2]))  # fmt: skip
        if unfinished and not request.cancel:
            raise Conflict(
                f"pipeline {self.pipeline_id!r} has unfinished builds: {', '.join(unfinished)}; cancel them "
                "first, or delete with cancel=true",
                details=[{"build_id": build_id} for build_id in unfinished],
            )
        self.retired = request.reason
        for build in live:  # those still on their way to a group are cancelled when its answer comes
            self._cancel(build, request.reason)
        return unfinished

    def _retry(self, request: RetryRequest) -> BuildInfo | None:
        build = self._build(request.build_id)
        if self.retired is not None:
            raise NotRetryable(f"pipeline {self.pipeline_id!r} was deleted; register it again to retry its builds")
        if build.id in self.reruns:
            raise NotRetryable(f"a retry of build {build.id!r} is already waiting for admission")
        if not build.finished:
            if request.failed_only:
                raise NotRetryable(
                    f"build {build.id!r} is {build.status}: failed_only retries a finished build; "
                    "retry a failed job or step instead"
                )
            states = {job.id: job.status for job in build.all_jobs()}
            job = build.retry_in_run(request.job, request.step, time.time())
            self._emit_unrun(build, states)
            self._dispatch(build, [job])
            return build_info(build)
        build.rerun_plan(job_id=request.job, step_id=request.step, failed_only=request.failed_only)  # validates
        group = self._render_group(build.id, build.number, build.variables)
        plan = RetryPlan(request.job, request.step, request.failed_only, group, time.time())
        if group is None:
            self._apply_rerun(build, plan)
            self._start(build)
            return build_info(build)
        self.reruns[build.id] = plan
        self.replies[build.id] = self.defer_reply()
        self._group(group).tell(Admit(build.id, self.ref, self._group_config(group), plan.queued_at))
        return None

    def _apply_rerun(self, build: Build, plan: RetryPlan) -> None:
        """The group took the retry (admitted or queued it): reset the build for its new execution."""
        previous = build.status
        build.prepare_rerun(job_id=plan.job, step_id=plan.step, failed_only=plan.failed_only, now=plan.queued_at)
        build.group = plan.group
        self._emit_build(build, previous)

    # -- queries ------------------------------------------------------------------------

    def _build(self, build_id: str) -> Build:
        build = self.builds.get(build_id)
        if build is None:
            raise NotFound(f"no build {build_id!r}")
        return build

    # -- events -------------------------------------------------------------------------

    def _emit_build(self, build: Build, previous: str | None) -> None:
        self.outbox.append(Record(EventKind.BUILD, build.status, build.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, attempt=build.execute_count, previous=previous))

    def _emit_job(self, build: Build, job: JobRun, previous: str | None) -> None:
        attempt = job.attempts[-1].number if job.attempts else None
        self.outbox.append(Record(EventKind.JOB, job.status, job.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, job_id=job.id, attempt=attempt, previous=previous))

    def _emit_step(self, build: Build, job: JobRun, index: int) -> None:
        step = job.steps[index]
        attempt = step.attempts[-1].number if step.attempts else None
        self.outbox.append(Record(EventKind.STEP, step.status, step.reason, pipeline_id=self.pipeline_id,
                                  build_id=build.id, job_id=job.id, step_id=step.spec.id, attempt=attempt))

    def _emit_unrun(self, build: Build, before: dict[str, JobStatus]) -> None:
        """Events for jobs whose status changed without an attempt of their own."""
        for job in build.all_jobs():
            if before.get(job.id) != job.status and job.status in _UNRUN:
                self._emit_job(build, job, before.get(job.id))
