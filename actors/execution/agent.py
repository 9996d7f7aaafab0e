"""An agent: runs one job attempt at a time, in its own workspace and context.

Mutual exclusion is by ownership: the dispatcher grants an agent to one
attempt and the agent refuses a second ``RunJob`` while it holds one. Its
context (env exported by steps) follows it from job to job of the same build
(the ``lock-resource-with`` chain of seed 000) and is reset, with the
workspace cleaned, before it serves a different build. Before each attempt it
snapshots the context and reports the snapshot; a retry arrives with the
snapshot to restore, so it never sees what the failed attempt or another
build left behind.

Faults can be injected for tests and benchmarks, through the pool:
``crash`` (the actor raises) and ``hang`` (no reports at all; the pool
hears no more heartbeats from it). ``silence`` stops only the heartbeats
(``heartbeat.py``) and never reaches the agent: its job goes on and the
late report is fenced off. A retired agent leaves once its attempt is over
(a hung one at once).

A job whose steps are all instant built-ins (``noop``, ``echo``, ``fail``)
runs inline in ``receive``: no task, no cancel scope, one report of one
record (an ``InstantJob``). Anything else runs in a task owned by the agent,
under one cancel scope for the job's timeout and cancellation.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import msgspec

from .actions import ActionFailed, ActionRegistry, StepContext, SyncAction
from ..builds.records import StepLog, step_log
from ..core import Actor, Ref
from ..model.messages import (
    AgentIdle,
    AgentReport,
    CancelJob,
    Fault,
    InstantJob,
    JobEnded,
    JobPayload,
    JobStarted,
    JobToken,
    Retire,
    RunJob,
    StepEnded,
    StepNotRun,
    StepRan,
    StepStarted,
)
from .script import render_script
from .secrets import Secrets
from .shell import StepStartError, run_shell
from ..model.spec import Step
from ..model.templates import TemplateError, render
from ..model.vocab import RunCondition, FaultKind, JobStatus, StepStatus
from ..names import Names

__all__ = ["AgentActor", "AgentFault", "JobRunner", "StepOutcome"]

Record = JobStarted | StepStarted | StepEnded | StepNotRun | JobEnded | InstantJob  # what a report carries
# The records made as an attempt runs: a report's, or (run inline) the StepRan and StepNotRun of an InstantJob.
Records = list[Any]

# Read for every step or job: an enum member looked up on its class costs 51 ns, a global 5 (measured).
_SUCCESS = RunCondition.SUCCESS
_SUCCEED, _JOB_SUCCEED = StepStatus.SUCCEED, JobStatus.SUCCEED
# The ``if`` of a step that runs while nothing before it failed, and once something has (tuples: an
# enum's hash is a Python call, and the conditions are the enum's members, found by identity).
_RUNS_WHILE_OK = (RunCondition.SUCCESS, RunCondition.ALWAYS)
_RUNS_AFTER_FAILURE = (RunCondition.ALWAYS, RunCondition.FAILURE)


class AgentFault(RuntimeError):
    """The injected ``crash`` fault."""


class StepOutcome(msgspec.Struct, gc=False):
    """How one run of a step ended. A struct: made for every step, and a class's ``__init__`` cost
    four times as much (measured). Untracked by the collector: it is dropped once recorded."""

    status: StepStatus
    reason: str | None = None
    exit_code: int | None = None
    outputs: dict[str, str] = msgspec.field(default_factory=dict)
    exported_env: dict[str, str] = msgspec.field(default_factory=dict)


_SUCCEEDED = StepOutcome(_SUCCEED)  # what the step rules read of an instant step that succeeded (status, reason)


class JobRunner:
    """The step rules of one attempt (pure): ``if``, ``retry-times``, ``continue-on-error``."""

    __slots__ = ("steps", "index", "failed", "failure", "tries", "records")

    def __init__(self, payload: JobPayload, records: Records) -> None:
        self.steps = payload.job.steps
        self.index = payload.start_step
        self.failed = payload.failed_before
        self.failure: str | None = "a step before the retried one failed" if self.failed else None
        self.tries = 0
        self.records = records

    def next_step(self) -> tuple[int, Step] | None:
        """The next step to run, recording those whose ``if`` keeps them from running."""
        while self.index < len(self.steps):
            step = self.steps[self.index]
            condition = step.if_
            if condition in (_RUNS_AFTER_FAILURE if self.failed else _RUNS_WHILE_OK):
                return self.index, step
            if condition == _SUCCESS:
                self.records.append(StepNotRun(self.index, StepStatus.UNEXEC, f"not run: {self.failure}"))
            else:
                self.records.append(StepNotRun(self.index, StepStatus.SKIP, f"skipped: if: {condition} not met"))
            self.index += 1
        return None

    def step_done(self, outcome: StepOutcome) -> bool:
        """Record an attempt's outcome; True if the same step runs again (automatic retry)."""
        step = self.steps[self.index]
        succeeded = outcome.status == _SUCCEED
        if not succeeded and self.tries < step.retry_times:
            self.tries += 1
            return True
        self.tries = 0
        if not succeeded and not step.continue_on_error.continues:
            if not self.failed:
                self.failed = True
                self.failure = f"step {step.id!r} ended {outcome.status}: {outcome.reason}"
        self.index += 1
        return False

    def result(self) -> tuple[JobStatus, str | None]:
        return (JobStatus.FAILED, self.failure) if self.failed else (JobStatus.SUCCEED, None)


def _render_value(value: Any, context: dict[str, dict[str, str]]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, dict):
        return {key: _render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render_value(item, context) for item in value]
    return value


class AgentActor(Actor):
    """One executor on a node. See the module docstring."""

    def __init__(
        self,
        *,
        node: str,
        agent: str,
        workspace: Path,
        pool: Ref,
        actions: ActionRegistry,
        kill_grace: float = 5.0,
        secrets: Secrets | None = None,
    ) -> None:
        self.node = node
        self.own_secrets = secrets if secrets is not None else Secrets()
        self.secrets = self.own_secrets  # those of the current attempt (a remote job brings its own)
        self.agent = agent
        self.workspace = workspace
        self.pool = pool
        self.actions = actions
        self.kill_grace = kill_grace
        self.names = Names(self)  # where a job's reports go: its ``RunJob`` names the pipeline's actor
        self.hung = False  # injected: no reports
        self.retiring = False
        self.trash_count = 0
        self.lease_build: str | None = None
        self.context: dict[str, str] = {}
        self.workspace_used = False
        self.clean_needed = False
        self.current: JobToken | None = None
        self.cancel_reason: str | None = None
        self.scope: anyio.CancelScope | None = None
        # The last job seen and its steps' plain functions (None: not all instant), for the registry's
        # ``changes`` then: an agent mostly runs the same job again, and resolving every step's action
        # each time was a measurable part of an instant job's cost.
        self._instant_for: tuple[Any, int, tuple[SyncAction, ...] | None] = (None, -1, None)

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is RunJob:
            self._run(message)
        elif kind is CancelJob:
            if message.token == self.current and self.scope is not None:
                self.cancel_reason = message.reason
                self.scope.cancel()
        elif kind is Retire:
            self.retiring = True
            if self.current is None:
                self.stop()
            elif self.hung and self.scope is not None:
                self.scope.cancel()
        elif kind is Fault:
            self._fault(message.kind)
        else:
            raise TypeError(f"agent {self.agent} got an unexpected {kind.__name__}")

    def _fault(self, kind: FaultKind) -> None:
        if kind == FaultKind.CRASH:
            raise AgentFault(f"injected crash of agent {self.agent}")
        if kind == FaultKind.HANG:
            self.hung = True
        else:
            raise ValueError(f"unknown agent fault {kind!r}: use crash or hang (silence stays in the pool)")

    # -- one attempt ------------------------------------------------------------------

    def _run(self, run: RunJob) -> None:
        if self.current is not None:
            raise RuntimeError(f"agent {self.agent} got {run.token} while running {self.current}")
        token, payload = run.token, run.payload
        if self.lease_build != token.build_id:
            self.lease_build = token.build_id
            self.context = {}
            self.clean_needed = self.clean_needed or self.workspace_used
        if payload.restore is not None:
            self.context = dict(payload.restore)
        self.current = token
        self.secrets = run.secrets if run.secrets is not None else self.own_secrets
        self.cancel_reason = None
        now = time.time()
        known_job, known_changes, instant = self._instant_for
        if payload.job is not known_job or self.actions.changes != known_changes:
            instant = self._instant_steps(payload)
        if instant is not None:
            self._run_inline(run, instant, now)
        else:
            records: list[Record] = [JobStarted(self.node, self.agent, dict(self.context), now)]
            # Made here, not in the task, so a CancelJob that arrives before
            # the task starts still finds something to cancel.
            self.scope = anyio.CancelScope(deadline=anyio.current_time() + payload.job.timeout_minutes * 60)
            self.start_task(self._run_in_task, run, records, self.scope)

    def _instant_steps(self, payload: JobPayload) -> tuple[SyncAction, ...] | None:
        """The plain functions of the job's steps when all are instant built-ins, else None; remembered
        for the job and the registry's change count (``_run`` reads the memo first)."""
        job, changes = payload.job, self.actions.changes
        actions: list[SyncAction] = []
        instant: tuple[SyncAction, ...] | None = None
        for step in job.steps:  # in order, stopping at the first that is not instant, as ``all`` would
            action = self.actions.resolve_sync(step.uses or "") if step.run is None else None
            if action is None:
                break
            actions.append(action)
        else:
            instant = tuple(actions)
        self._instant_for = (job, changes, instant)
        return instant

    def _run_inline(self, run: RunJob, actions: tuple[SyncAction, ...], now: float) -> None:
        # It all happens in one instant, ``now``: a clock read per record cost more than the step. Its
        # steps' records are StepRan and StepNotRun, sent in one InstantJob (``_finish``).
        payload = run.payload
        context = dict(self.context)  # as the job starts, for the InstantJob
        records: Records = []
        steps, index = payload.job.steps, payload.start_step
        outcome: StepOutcome | None = None
        if not payload.failed_before:
            # While steps succeed and their ``if`` lets them run, the step rules have nothing to decide (the
            # runner's calls were a fifth of an instant job's cost): a runner takes over at a step that fails
            # or has another ``if``.
            while index < len(steps) and steps[index].if_ in _RUNS_WHILE_OK:
                outcome = self._instant_step(run, index, steps[index], actions[index], records, now)
                if outcome is not None:
                    break
                index += 1
            else:
                if index == len(steps):
                    self._finish(run, records, _JOB_SUCCEED, None, now, context)
                    return
                outcome = None
        runner = JobRunner(payload, records)
        runner.index = index
        if outcome is not None:  # the step that failed
            runner.step_done(outcome)
        while (item := runner.next_step()) is not None:
            index, step = item
            runner.step_done(self._instant_step(run, index, step, actions[index], records, now) or _SUCCEEDED)
        status, reason = runner.result()
        self._finish(run, records, status, reason, now, context)

    def _instant_step(self, run: RunJob, index: int, step: Step, action: SyncAction, records: Records,
                      now: float) -> StepOutcome | None:  # fmt: skip
        """Run the step and record its run (a ``StepRan``): None if it succeeded, else how it failed."""
        log = step_log(run.payload, step)
        try:
            context = self._context_for(run, step, log)
            action(context)
        except Exception as error:
            outcome = _failed(error)
            self._record_end(records, index, outcome, now, log)
            return outcome
        # A success, recorded as ``_record_end`` records one, without its StepOutcome and the call.
        exported, outputs, secrets = context.exported_env, context.outputs, self.secrets
        if exported:
            self.context.update(exported)
        records.append(StepRan(index, log, _SUCCEED, None, None,
                               secrets.mask_values(outputs) if secrets.masks else dict(outputs), exported))  # fmt: skip
        return None

    async def _run_in_task(self, run: RunJob, records: list[Record], scope: anyio.CancelScope) -> None:
        runner = JobRunner(run.payload, records)
        job = run.payload.job
        running: int | None = None
        reason: str | None
        with scope:
            while (item := runner.next_step()) is not None:
                running, step = item
                log = step_log(run.payload, step)
                records.append(StepStarted(running, log, time.time()))
                self._flush(run, records)
                outcome = await self._execute(run, step, log)
                self._record_end(records, running, outcome)
                running = None
                runner.step_done(outcome)
        self.scope = None
        if scope.cancelled_caught:
            if self.cancel_reason is not None:
                status, reason = JobStatus.CANCELED, self.cancel_reason
            else:
                status, reason = JobStatus.EXEC_TIMEOUT, f"job exceeded timeout-minutes {job.timeout_minutes:g}"
            if running is not None:  # the step stopped the same way as its job
                self._record_end(records, running, StepOutcome(StepStatus(status), reason))
        else:
            status, reason = runner.result()
        self._finish(run, records, status, reason)

    def _record_end(self, records: Records, index: int, outcome: StepOutcome, now: float | None = None,
                    log: StepLog | None = None) -> None:  # fmt: skip
        """The step's end, or with its ``log`` (run inline) its whole run, as a ``StepRan``."""
        if outcome.status == _SUCCEED and outcome.exported_env:
            self.context.update(outcome.exported_env)
        # What is reported is shown (events, build JSON): secrets masked. The
        # exported env stays as it is: later steps need the real values, and it is never shown.
        secrets, reason, outputs = self.secrets, outcome.reason, outcome.outputs
        if secrets.masks:
            reason = reason and secrets.mask(reason)
            outputs = secrets.mask_values(outputs)
        else:
            outputs = dict(outputs)  # a copy, as mask_values makes: what the action keeps is not the record
        if log is not None:
            records.append(StepRan(index, log, outcome.status, reason, outcome.exit_code, outputs, outcome.exported_env))
            return
        records.append(StepEnded(index, outcome.status, reason, outcome.exit_code, outputs, outcome.exported_env,
                                 time.time() if now is None else now))  # fmt: skip

    def _flush(self, run: RunJob, records: list[Record]) -> None:
        if records and not self.hung:
            self.names.tell(run.pipeline, AgentReport(run.token, tuple(records)))
        records.clear()

    def _finish(self, run: RunJob, records: Records, status: JobStatus, reason: str | None,
                now: float | None = None, context: dict[str, str] | None = None) -> None:  # fmt: skip
        """Report the attempt's end; run inline (with the ``context`` it started with), the whole attempt."""
        reason = reason and self.secrets.mask(reason)
        if context is not None and now is not None:
            records = [InstantJob(self.node, self.agent, context, now, tuple(records), status, reason)]
        else:
            records.append(JobEnded(status, reason, time.time() if now is None else now))
        if not self.hung:  # ``_flush``, without clearing a list nobody reads again
            self.names.tell(run.pipeline, AgentReport(run.token, tuple(records)))
        self.current = None
        self.secrets = self.own_secrets  # a remote job's secrets are forgotten with it
        if self.retiring:
            self.stop()
        elif not self.hung:
            self.pool.tell(AgentIdle(self.agent, run.token))

    # -- steps --------------------------------------------------------------------------

    def _template_context(self, run: RunJob) -> dict[str, Any]:
        """``ci``, ``variables`` and, held by the agent alone, ``secrets``."""
        context = run.payload.template_context.as_dict()
        if self.secrets:
            context["secrets"] = self.secrets.values()
        return context

    def _log_writer(self, log: StepLog) -> Any:
        """Where a step's output goes: its log, with secret values masked."""
        if not self.secrets.masks:
            return log.append
        mask = self.secrets.mask
        return lambda line: log.append(mask(line))

    def _step_env(self, run: RunJob, step: Step) -> dict[str, str]:
        payload = run.payload
        context = self._template_context(run)
        env = dict(payload.env)
        for key, value in payload.job.env.items():
            if not key.startswith("SHUNTER_"):  # the build's own context stays as the runtime set it
                env[key] = render(value, context)
        env.update(self.context)
        for key, value in step.env.items():
            env[key] = render(value, context)
        env.update(
            SHUNTER_JOB_ID=run.token.job_id,
            SHUNTER_JOB_ATTEMPT=str(run.token.attempt),
            SHUNTER_STEP_ID=step.id,
            SHUNTER_AGENT=self.agent,
            SHUNTER_NODE=self.node,
            SHUNTER_WORKSPACE=str(self.workspace),
        )
        return env

    def _context_for(self, run: RunJob, step: Step, log: StepLog) -> StepContext:
        token = run.token
        return StepContext._made(
            self.workspace,
            log.append if not self.secrets.masks else self._log_writer(log),
            _render_value(step.with_, self._template_context(run)) if step.with_ else {},
            # made on first use unless the step has env of its own, whose template errors fail the step now
            self._step_env(run, step) if step.env else functools.partial(self._step_env, run, step),
            step.id,
            token.job_id,
            token.build_id,
        )

    async def _execute(self, run: RunJob, step: Step, log: StepLog) -> StepOutcome:
        timeout = step.timeout_minutes * 60 if step.timeout_minutes is not None else math.inf
        with anyio.move_on_after(timeout) as step_scope:
            try:
                if step.run is not None:
                    return await self._shell(run, step, log)
                context = self._context_for(run, step, log)
                sync = self.actions.resolve_sync(step.uses or "")
                if sync is not None:
                    sync(context)
                else:
                    self._prepare_workspace()  # actions may use step.workspace too
                    await self.actions.resolve(step.uses or "")(context)
                return StepOutcome(StepStatus.SUCCEED, outputs=context.outputs, exported_env=context.exported_env)
            except Exception as error:
                return _failed(error)
        assert step_scope.cancelled_caught
        return StepOutcome(StepStatus.EXEC_TIMEOUT, f"step exceeded timeout-minutes {step.timeout_minutes:g}")

    async def _shell(self, run: RunJob, step: Step, log: StepLog) -> StepOutcome:
        assert step.run is not None
        # References become environment variables, never pasted text (docs/design.md §12; script.py).
        script, values = render_script(step.run, self._template_context(run))
        env = self._step_env(run, step)
        env.update(values)
        self._prepare_workspace()
        result = await run_shell(script, cwd=self.workspace, env=env, on_output=self._log_writer(log),
                                 kill_grace=self.kill_grace, temp_root=self.workspace.parent,
                                 on_chunk=log.sync)  # fmt: skip
        if result.exit_code == 0:
            return StepOutcome(StepStatus.SUCCEED, exit_code=0, outputs=result.outputs, exported_env=result.env)
        reason = f"exit code {result.exit_code}" if result.exit_code > 0 else f"killed by signal {-result.exit_code}"
        return StepOutcome(StepStatus.FAILED, reason, exit_code=result.exit_code, outputs=result.outputs)

    def _prepare_workspace(self) -> None:
        """Make the workspace exist, emptied if another build used it.

        Emptying is a rename (constant time, no waiting on a thread, which
        trio's MockClock would read as idleness); the old tree is deleted in
        the background.
        """
        if self.clean_needed:
            self.clean_needed = False
            if self.workspace.exists():
                self.trash_count += 1
                trash = self.workspace.with_name(f".{self.workspace.name}.old{self.trash_count}")
                os.rename(self.workspace, trash)
                self.start_task(_delete_tree, trash)
        if not self.workspace_used or not self.workspace.exists():
            self.workspace.mkdir(parents=True, exist_ok=True)
        self.workspace_used = True


def _failed(error: Exception) -> StepOutcome:
    if isinstance(error, (ActionFailed, StepStartError, TemplateError)):
        return StepOutcome(StepStatus.FAILED, str(error))
    return StepOutcome(StepStatus.FAILED, f"{type(error).__name__}: {error}")


async def _delete_tree(path: Path) -> None:
    """Delete an old workspace in a worker thread. Abandoned on cancel: a
    closing runtime must not wait for a large tree (nor, under trio's
    MockClock, sit idle while virtual time runs past its deadlines)."""
    await anyio.to_thread.run_sync(shutil.rmtree, path, True, abandon_on_cancel=True)
