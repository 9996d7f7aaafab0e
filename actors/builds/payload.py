"""What an agent needs to run one job attempt, derived from the build's state."""

from __future__ import annotations

from typing import Any

from .build import Build
from .records import JobRun, StepLog
from ..model.messages import JobPayload, TemplateContext
from ..model.vocab import StepStatus

__all__ = ["job_payload", "template_context", "chain_agent"]


def job_payload(build: Build, job: JobRun, log_dir: str | None = None,
                max_log_bytes: int = StepLog.DEFAULT_MAX_BYTES) -> JobPayload:  # fmt: skip
    """The attempt's steps, env (variables and build context), template context, the context to
    restore, and where its step logs go (``log_dir``: None keeps them in memory)."""
    attempt = job.attempts[-1]
    start = attempt.start_step
    number = str(build.number)
    pipeline_id, build_id, variables = build.pipeline_id, build.id, build.variables
    # The job's own env is rendered by the agent, which alone holds the secrets it may name.
    env = {"SHUNTER_PIPELINE_ID": pipeline_id, "SHUNTER_BUILD_ID": build_id, "SHUNTER_BUILD_NUM": number,
           "SHUNTER_EXECUTE_COUNT": str(build.execute_count)}  # fmt: skip
    if variables:  # the build context after the variables, as it wins over them; most builds have none
        env = {**variables, **env}
    return JobPayload(
        pipeline_id,
        build.number,
        build.execute_count,
        job.spec,
        start,
        TemplateContext({"pipeline_id": pipeline_id, "build_id": build_id, "build_num": number}, variables),
        env,
        # a first attempt restores nothing, and nothing before its first step failed
        _restore_context(job) if len(job.attempts) > 1 else None,
        start > 0 and any(step.failed_the_job for step in job.steps[:start]),
        log_dir,
        max_log_bytes,
    )


def template_context(build: Build) -> dict[str, Any]:
    """``ci.*`` and ``variables.*`` for templates (a job's mutex label), as the payload's."""
    ci = {"pipeline_id": build.pipeline_id, "build_id": build.id, "build_num": str(build.number)}
    return {"ci": ci, "variables": build.variables}


def chain_agent(build: Build, job: JobRun) -> str | None:
    """The agent a lock-chain job must run on: its target's, or (first job) its own last one."""
    target = job.spec.runs_on.lock_resource_with
    source = build.jobs[target] if target is not None else job
    for attempt in reversed(source.attempts):
        if attempt.agent is not None:
            return attempt.agent
    return None


def _restore_context(job: JobRun) -> dict[str, str] | None:
    """For a retry: the context before the failed attempt plus exports of the steps kept."""
    earlier = job.attempts[:-1]
    if not earlier:
        return None
    base = next((a.context_before for a in reversed(earlier) if a.context_before is not None), None)
    start = job.attempts[-1].start_step
    if base is None and start == 0:
        return None
    context = dict(base or {})
    for step in job.steps[:start]:
        kept = next((a for a in reversed(step.attempts) if a.status == StepStatus.SUCCEED), None)
        if kept is not None:
            context.update(kept.exported_env)
    return context
