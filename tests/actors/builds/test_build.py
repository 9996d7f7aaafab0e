"""The pure build state machine: shared per-spec parts, job records made on demand, lock chains."""

from __future__ import annotations

import tracemalloc

import pytest

from actors.builds.build import Build, new_build as make_build
from actors.builds.records import BuildShape
from actors.model.errors import NotRetryable
from actors.builds.snapshot import build_info
from runtime.spec_loader import load_pipeline

PIPELINE = {
    "name": "p",
    "stages": [
        {"name": "build", "jobs": {
            "compile": {"steps": [{"id": "make", "uses": "noop"}, {"id": "pack", "uses": "noop"}]},
            "lint": {"steps": [{"uses": "noop"}]},
        }},
        {"name": "ship", "jobs": {
            "deploy": {"runs-on": {"lock-resource-with": "compile"}, "steps": [{"uses": "noop"}]},
        }},
    ],
}  # fmt: skip


@pytest.fixture
def shape() -> BuildShape:
    return BuildShape(load_pipeline(PIPELINE))


def new_build(shape: BuildShape, number: int = 1) -> Build:
    return make_build(build_id=f"p.{number}", spec=shape, number=number, variables={}, group="g", now=1000.0)


def statuses(build: Build) -> dict[str, str]:
    return {job.id: job.status for stage in build_info(build).stages for job in stage.jobs}


def test_builds_of_one_spec_share_its_shape(shape: BuildShape) -> None:
    first, second = new_build(shape, 1), new_build(shape, 2)
    assert first.phase_names is second.phase_names == ["build", "ship"]
    assert first.chains is second.chains and first.chains == {"compile": "compile", "deploy": "compile"}
    first.start(1001.0)
    second.start(1001.0)
    assert first.jobs["compile"].step_index is second.jobs["compile"].step_index
    assert first.jobs["compile"] is not second.jobs["compile"]


def test_a_queued_build_keeps_no_job_records_yet_its_snapshot_lists_every_job(shape: BuildShape) -> None:
    build = new_build(shape)
    info = build_info(build)
    assert [(stage.name, stage.status, [job.id for job in stage.jobs]) for stage in info.stages] == [
        ("build", "QUEUE", ["compile", "lint"]),
        ("ship", "QUEUE", ["deploy"]),
    ]
    assert statuses(build) == dict.fromkeys(["compile", "lint", "deploy"], "DEPENDENT_WAITING")
    assert [step.status for step in info.stages[0].jobs[0].steps] == ["QUEUE", "QUEUE"]
    assert build._phases is None and build._jobs is None  # the look made none to keep
    assert build.live_attempt("compile", 1) is None  # a stray report finds nothing, makes nothing
    assert build._jobs is None


def test_starting_makes_the_records_and_dispatches_the_first_stage(shape: BuildShape) -> None:
    build = new_build(shape)
    dispatch = build.start(1001.0)
    assert [job.id for job in dispatch] == ["compile", "lint"]
    assert statuses(build) == {"compile": "QUEUE", "lint": "QUEUE", "deploy": "DEPENDENT_WAITING"}
    assert build.live_attempt("compile", 1) is build.jobs["compile"]


def test_a_build_ended_before_it_started_shows_every_job_unexec_for_its_reason(shape: BuildShape) -> None:
    build = new_build(shape)
    build.end_unstarted("QUEUE_TIMEOUT", "waited 1 minute(s) in concurrency group 'g'", 1060.0)
    assert build._jobs is None
    info = build_info(build)
    assert info.status == "QUEUE_TIMEOUT"
    assert statuses(build) == dict.fromkeys(["compile", "lint", "deploy"], "UNEXEC")
    assert {job.reason for stage in info.stages for job in stage.jobs} == {build.reason}
    assert [stage.status for stage in info.stages] == ["UNEXEC", "UNEXEC"]


def test_a_build_ended_before_it_started_can_be_retried_whole_or_from_a_step(shape: BuildShape) -> None:
    build = new_build(shape)
    build.end_unstarted("CANCELED", "cancelled while queued", 1010.0)
    assert build.rerun_plan(job_id="compile", step_id="pack", failed_only=False)["compile"] == 1
    build.prepare_rerun(job_id=None, step_id=None, failed_only=False, now=1020.0)
    assert (build.status, build.execute_count) == ("QUEUE", 2)
    assert [job.id for job in build.start(1021.0)] == ["compile", "lint"]


def test_a_running_build_refuses_a_whole_retry(shape: BuildShape) -> None:
    build = new_build(shape)
    build.start(1001.0)
    with pytest.raises(NotRetryable):
        build.rerun_plan(job_id=None, step_id=None, failed_only=False)


def test_a_lock_chain_holds_its_agent_until_its_last_job_ends(shape: BuildShape) -> None:
    build = new_build(shape)
    compile_job, lint_job = build.start(1001.0)
    for job in (compile_job, lint_job):
        build.job_started(job, "n1", f"n1/{job.id}", {}, 1002.0)
        build.lock_agent(job, "default", f"n1/{job.id}")
    assert build.locked == {"compile": {("default", "n1/compile")}}  # lint is in no chain
    deploy = build.job_ended(compile_job, "SUCCEED", None, 1003.0)
    assert deploy == [] and build.agents_to_unlock() == []  # the chain's deploy has not run yet
    (deploy_job,) = build.job_ended(lint_job, "SUCCEED", None, 1004.0)
    build.job_started(deploy_job, "n1", "n1/compile", {}, 1005.0)
    build.lock_agent(deploy_job, "default", "n1/compile")
    build.job_ended(deploy_job, "SUCCEED", None, 1006.0)
    assert build.agents_to_unlock() == [("default", "n1/compile")]
    assert build.agents_to_unlock() == []  # handed back once
    assert build.status == "SUCCEED"


def test_a_queued_build_costs_under_a_kilobyte(shape: BuildShape) -> None:
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        builds = [new_build(shape, number) for number in range(1, 1001)]
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(builds) == 1000
    assert (after - before) / 1000 < 1024


def test_a_fenced_queued_attempt_is_replaced_by_the_next_number(shape: BuildShape) -> None:
    """After a restart with remote nodes, a queued attempt may already be on an agent: it ends and
    attempt 2 queues in its place (its run of attempt 1 is then stale: ``live_attempt`` refuses it)."""
    build = new_build(shape)
    build.start(1001.0)
    compile_job = build.jobs["compile"]
    build.fence_queued(compile_job, "asked again", 1002.0)
    assert [(a.number, a.status, a.reason, a.retry_of) for a in compile_job.attempts] == [
        (1, "CANCELED", "asked again", None), (2, "QUEUE", None, 1)]  # fmt: skip
    assert compile_job.status == "QUEUE"
    assert build.live_attempt("compile", 1) is None and build.live_attempt("compile", 2) is compile_job


def test_snapshots_of_untouched_builds_share_their_stages_and_stop_once_one_is_touched(shape: BuildShape) -> None:
    """The submit answer's stages are made once per shape; a build an agent touched gets its own."""
    first, second = new_build(shape, 1), new_build(shape, 2)
    first.start(1001.0)
    second.start(1001.0)
    assert build_info(first).stages is build_info(second).stages
    second.job_started(second.jobs["lint"], "n1", "n1/0", {}, 1002.0)
    touched = build_info(second)
    assert touched.stages is not build_info(first).stages
    assert [job.status for job in touched.stages[0].jobs] == ["QUEUE", "RUNNING"]
    assert [job.status for job in build_info(first).stages[0].jobs] == ["QUEUE", "QUEUE"]


@pytest.mark.parametrize("opening", [None, 1])
def test_records_of_one_step_and_many_step_jobs_are_made_alike_and_anew_for_each_build(
    shape: BuildShape, opening: int | None
) -> None:
    """A one-step job's steps are made by a shortcut (records.py): the same records as the general way."""
    from actors.builds.records import StepRun

    first, second = shape.records(opening), shape.records(opening)
    for phase, other in zip(first, second):
        for job, twin in zip(phase, other):
            assert job.steps == tuple(StepRun(step) for step in job.spec.steps), job.id
            assert job == twin and all(a is not b for a, b in zip(job.steps, twin.steps))
    assert [(len(job.steps), job.phase) for phase in first for job in phase] == [(2, 0), (1, 0), (1, 1)]
