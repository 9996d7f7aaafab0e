"""The pipeline actor: one registered pipeline and all its builds.

It numbers builds, renders their concurrency group, asks the group for
admission (answering the submitter only once the group has decided, through
the deferred reply slot), retries builds, answers queries, and is deleted
and revived. Running the admitted builds (dispatching jobs, applying what
agents report and what the pool ended itself, cancelling, settling) is the
``BuildDriver`` half it is built on (``driver.py``). Retries inside a running
build never go through the group; retries of a finished build are new
admissions (docs/design.md §3.1 items 4 and 5).

While the group decides, the pipeline keeps what it will do with the
answer: the deferred reply slot by build id, and for the retry of a
finished build its ``RetryPlan``. The group is told only build ids and limits.

A deleted pipeline (``RetirePipeline``) refuses new builds and retries but
keeps its builds readable and its numbering; registering it again
(``ReplaceSpec``) revives it, so a build id is never used twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..core import Ref, Reply
from ..directory import Directory
from ..events import Publish, Record
from ..model.errors import Conflict, NotFound, NotRetryable, QueueFull
from ..model.info import BuildInfo
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
    ReadLog,
    JobWaiting,
    ListBuilds,
    MutexGranted,
    MutexRefused,
    Queued,
    Refused,
    Release,
    ReplaceSpec,
    RetirePipeline,
    RetryRequest,
    SubmitBuild,
    WaitBuild,
)
from ..model.spec import PipelineSpec
from ..state.durable import Durable
from ..state.journal import Committed
from .build import Build
from .driver import BuildDriver
from .listing import build_key, build_log, describe, list_builds
from .logfollow import read_log
from .resume import Drain, GetLogSources, Restore, Resume, log_sources, resume, resume_running
from .records import NOTHING, BuildShape, JobRun
from .snapshot import build_info, opened_info
from .submission import RetryPlan, check_variables, group_config, render_group
from ..model.vocab import BUILD_FINAL, BuildStatus, EventKind

__all__ = ["PipelineActor", "RetryPlan"]

_QUEUE, _BUILD = BuildStatus.QUEUE, EventKind.BUILD


class PipelineActor(BuildDriver):
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
        durable: Durable | None = None,
        definition: str = "",
        next_number: int = 1,
        mask: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(pipeline_id=pipeline_id, spec=spec, hub=hub, pools=pools, groups=groups, mutexes=mutexes,
                         history=history, durable=durable)  # fmt: skip
        self.mask = mask  # secrets' masker for what builds show
        self.shape = BuildShape(spec, definition, mask)
        self.next_number = next_number
        self.draining = False  # stopping: queued builds stay queued (docs/design.md §10)
        self.pending: dict[str, Build] = {}  # new builds waiting for their group's answer
        self.replies: dict[str, Reply] = {}  # submit or retry asks answered once the group has decided
        self.retired: str | None = None  # deleted: the reason its unfinished builds were cancelled with

    def receive(self, message: Any) -> Any:
        self.clock = time.time()  # this message's one clock reading (see BuildDriver.clock)
        result = self._handle(message)
        durable = self.durable
        if durable is not None and durable.dirty and self._cell.ask_slot is not None:
            durable.answer(self.defer_reply(), result)  # answered once this message's changes are committed
            result = None
        return result

    def batch_done(self) -> None:
        """The batch's events in one ``Publish``, the builds it changed in one journal write."""
        if self.outbox:
            self.hub.tell(Publish(tuple(self.outbox)))
            self.outbox.clear()
        if self.durable is not None:
            self.durable.flush(self.ref)

    def _handle(self, message: Any) -> Any:
        kind = type(message)
        # the two messages of every build first: each test on the way costs a global lookup
        if kind is AgentReport:
            self._report(message)
        elif kind is SubmitBuild:
            if self.retired is not None:
                raise NotFound(f"no pipeline {self.pipeline_id!r} (it was deleted)")
            return self._submit(message)
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
            self.shape = BuildShape(message.spec, message.definition, self.mask)
            self.retired = None
            return describe(self.pipeline_id, self.spec, len(self.builds))
        elif kind is DescribePipeline:
            return describe(self.pipeline_id, self.spec, len(self.builds))
        elif kind is RetirePipeline:
            return self._retire(message)
        elif kind is GetLog:
            return build_log(self._build(message.build_id), message.job, message.step)
        elif kind is Committed:
            assert self.durable is not None
            self.durable.on_committed(message.seq)
            self._forget_old()
        elif kind is Resume:
            return resume(self, message.builds, message.remote)
        elif kind is Restore:
            if message.build.id not in self.builds:
                self.builds[message.build.id] = message.build
                self.finished_order.append(message.build.id)  # in the store already: may leave again
                self.finished_seqs.append(0)
        elif kind is Drain:
            self.draining = True
        elif kind is GetLogSources:
            return log_sources(self._build(message.build_id), message.job, message.step)
        elif kind is ReadLog:
            return read_log(self._build(message.build_id), message.job, message.step, message.cursor)
        else:
            raise TypeError(f"pipeline {self.pipeline_id!r} got an unexpected {kind.__name__}")
        return None

    # -- submission and admission ------------------------------------------------------

    def _submit(self, message: SubmitBuild) -> BuildInfo | None:
        """Reply at once without a group; otherwise once the group has decided."""
        # most builds bring no variables to a pipeline that declares none, and have no group: no calls for those
        spec = self.spec
        given = message.variables
        variables = check_variables(self.pipeline_id, spec, given) if given or spec.variables else NOTHING
        number = self.next_number
        build_id = f"{self.pipeline_id}.{number}"
        group = None if spec.concurrency is None else render_group(self.pipeline_id, spec, build_id, number,
                                                                     variables, self.mask)  # fmt: skip
        self.next_number += 1
        shape, now = self.shape, self.clock
        build = Build(build_id, self.pipeline_id, shape.spec, shape, number, variables, group, now, now)
        if group is None:
            # No group to ask: submitted, started and dispatched in this one pass, at one instant.
            self.builds[build_id] = build
            if self.durable is not None:
                self.durable.touch(build)
            # its two events made here, as _emit_build would: a call each was a tenth of this pass
            outbox, pipeline_id = self.outbox, self.pipeline_id
            outbox.append(Record(_BUILD, _QUEUE, None, pipeline_id=pipeline_id, build_id=build_id, attempt=1, time=now))
            unrun: list[JobRun] = []
            dispatch = build.start(now, unrun)
            outbox.append(Record(_BUILD, build.status, build.reason, pipeline_id=pipeline_id, build_id=build_id,
                                 attempt=build.execute_count, previous=_QUEUE, time=now))  # fmt: skip
            if unrun:
                self._emit_ended_at_start(build, unrun)
            self._dispatch(build, dispatch)
            if build.status in BUILD_FINAL:
                self._finished(build)
            elif shape.opens:
                return opened_info(build)
            return build_info(build)
        self.pending[build_id] = build
        self.replies[build_id] = self.defer_reply()
        self._group(group).tell(Admit(build_id, self.ref, group_config(self.spec, group), now))
        return None

    def _admitted(self, message: Admitted) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None:
            self._store(build)
            self._emit_build(build, None)
        else:
            build = self.builds.get(message.build_id)
            if build is None:
                return
            if build.id in self.resuming:
                self.resuming.discard(build.id)
                resume_running(self, build)
                return
            plan = self.reruns.pop(build.id, None)
            if plan is not None:
                self._apply_rerun(build, plan)
            elif build.status != BuildStatus.QUEUE:
                # cancelled while the admission was on its way: hand the place back
                if build.group is not None:
                    self._group(build.group).tell(Release(build.id))
                return
            elif self.draining:
                return  # it stays queued in the store; the next start admits it again
        self._start(build)
        reply = self.replies.pop(build.id, None)  # none for a build admitted from the queue
        if reply is not None:
            self._answer(reply, build_info(build))

    def _queued(self, message: Queued) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None:
            self._store(build)
            self._emit_build(build, None)
        else:
            build = self.builds[message.build_id]
            if build.id in self.resuming:  # more running than max-parallel now allows: it runs on regardless
                self.resuming.discard(build.id)
                resume_running(self, build)
                return
            plan = self.reruns.pop(build.id, None)
            if plan is not None:
                self._apply_rerun(build, plan)
        if self.retired is not None:  # deleted while its admission was on its way
            self._cancel(build, self.retired)
        reply = self.replies.pop(build.id, None)
        if reply is not None:
            self._answer(reply, build_info(build, message.position))

    def _refused(self, message: Refused) -> None:
        build = self.pending.pop(message.build_id, None)
        if build is not None and build.number == self.next_number - 1:
            self.next_number -= 1  # the refused build never existed: keep numbers dense
        rerun = self.reruns.pop(message.build_id, None)
        reply = self.replies.pop(message.build_id, None)
        if reply is not None:
            reply.set_error(QueueFull(message.message))
        restored = self.builds.get(message.build_id)
        if build is None and rerun is None and restored is not None and restored.status == BuildStatus.QUEUE:
            # a queued build restored at start that its group no longer has room for
            restored.end_unstarted(BuildStatus.CANCELED, f"refused after a restart: {message.message}",
                                   time.time())  # fmt: skip
            self._emit_build(restored, BuildStatus.QUEUE)
            self._settled(restored)

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

    def _start(self, build: Build) -> None:
        if self.retired is not None:  # deleted while its admission was on its way
            self._cancel(build, self.retired)
            return
        super()._start(build)

    # -- cancel, retry, delete ---------------------------------------------------------------

    def _user_cancel(self, request: CancelRequest) -> BuildInfo:
        build = self._build(request.build_id)
        if build.finished:
            raise Conflict(f"build {build.id!r} has already finished ({build.status})")
        self._cancel(build, request.reason)
        return build_info(build)

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
        group = render_group(self.pipeline_id, self.spec, build.id, build.number, build.variables, self.mask)
        plan = RetryPlan(request.job, request.step, request.failed_only, group, time.time())
        if group is None:
            self._apply_rerun(build, plan)
            self._start(build)
            return build_info(build)
        self.reruns[build.id] = plan
        self.replies[build.id] = self.defer_reply()
        self._group(group).tell(Admit(build.id, self.ref, group_config(self.spec, group), plan.queued_at))
        return None

    def _apply_rerun(self, build: Build, plan: RetryPlan) -> None:
        """The group took the retry (admitted or queued it): reset the build for its new execution."""
        previous = build.status
        build.prepare_rerun(job_id=plan.job, step_id=plan.step, failed_only=plan.failed_only, now=plan.queued_at)
        build.group = plan.group
        self._emit_build(build, previous)
