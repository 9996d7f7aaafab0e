"""Retry planning of the pure build state machine, table by table.

``Build.rerun_plan`` says which jobs a retry of a finished build runs again
and from which step (docs/design.md §3.1 item 5); ``Build.retry_in_run`` starts a
new attempt of a failed job inside a running build (item 4). Each row of a
table names a build played to some outcome, the retry asked, and the plan or
the refusal expected. One pipeline serves every row:

    stage build:  compile [make, pack]            (first job of a lock chain)
                  lint    [check]                  continue-on-error
                  unit    [test]                   depend-on compile
    stage ship:   package [zip]                    lock-resource-with compile
                  docs    [check]                  (a step id lint has too)
    finally:      notify  [say]                    if: ALWAYS
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import pytest

from actors.builds.build import Build, new_build
from actors.builds.records import BuildShape, JobRun, StepLog
from actors.model.errors import NotFound, NotRetryable
from runtime.spec_loader import load_pipeline

PIPELINE = {
    "name": "p",
    "stages": [
        {"name": "build", "jobs": {
            "compile": {"steps": [{"id": "make", "uses": "noop"}, {"id": "pack", "uses": "noop"}]},
            "lint": {"continue-on-error": True, "steps": [{"id": "check", "uses": "noop"}]},
            "unit": {"depend-on": ["compile"], "steps": [{"id": "test", "uses": "noop"}]},
        }},
        {"name": "ship", "jobs": {
            "package": {"runs-on": {"lock-resource-with": "compile"}, "steps": [{"id": "zip", "uses": "noop"}]},
            "docs": {"steps": [{"id": "check", "uses": "noop"}]},
        }},
    ],
    "finally": {"notify": {"if": "ALWAYS", "steps": [{"id": "say", "uses": "noop"}]}},
}  # fmt: skip

SHAPE = BuildShape(load_pipeline(PIPELINE))
ALL = ["compile", "lint", "unit", "package", "docs", "notify"]
T = 1000.0


@dataclass(frozen=True)
class Outcome:
    """How a build is played: ``fail[job]`` = the step that fails (the job ends
    FAILED), ``end[job]`` = a status the job ends with before running (no step
    ran), ``hold`` = jobs left running (the build stays RUNNING)."""

    fail: dict[str, str] = field(default_factory=dict)
    end: dict[str, str] = field(default_factory=dict)
    hold: frozenset[str] = frozenset()


def agent_of(job: JobRun) -> str:
    """A lock chain runs on one agent; every other job on an agent of its own."""
    return "n1/0" if job.id in SHAPE.chains else f"n1/{job.id}"


def play_job(build: Build, job: JobRun, outcome: Outcome) -> list[JobRun]:
    """Play one dispatched attempt as its agent would report it; returns what the build dispatches next."""
    if job.id in outcome.end:
        return build.job_ended(job, outcome.end[job.id], f"ended {outcome.end[job.id]} by the test", T)
    build.job_started(job, "n1", agent_of(job), {}, T)
    build.lock_agent(job, "default", agent_of(job))
    failing = outcome.fail.get(job.id)
    for index in range(job.attempts[-1].start_step, len(job.steps)):
        build.step_started(job, index, StepLog(), T)
        failed = job.steps[index].spec.id == failing
        build.step_ended(job, index, "FAILED" if failed else "SUCCEED", "exit 1" if failed else None,
                         1 if failed else 0, {}, {}, T)  # fmt: skip
        if failed:
            return build.job_ended(job, "FAILED", f"step {failing!r} failed", T)
    return build.job_ended(job, "SUCCEED", None, T)


def play(build: Build, jobs: list[JobRun], outcome: Outcome) -> None:
    """Play ``jobs`` and everything they lead to, leaving ``outcome.hold`` jobs running."""
    queue = deque(jobs)
    while queue:
        job = queue.popleft()
        if job.id in outcome.hold:
            build.job_started(job, "n1", agent_of(job), {}, T)
            continue
        queue.extend(play_job(build, job, outcome))


def built(outcome: Outcome) -> Build:
    build = new_build(build_id="p.1", spec=SHAPE, number=1, variables={}, group=None, now=T)
    play(build, build.start(T), outcome)
    return build


def statuses(build: Build) -> dict[str, str]:
    return {job.id: job.status for job in build.all_jobs()}


# -- the finished builds the rerun table starts from ------------------------------------

FINISHED = {
    # compile fails at its second step: unit, package and docs never run; notify does
    "compile-failed-at-pack": Outcome(fail={"compile": "pack"}),
    "all-succeeded": Outcome(),
    # lint fails but continues on error: the build succeeds all the same
    "lint-failed-continue-on-error": Outcome(fail={"lint": "check"}),
    "package-failed": Outcome(fail={"package": "zip"}),
    "compile-queue-timeout": Outcome(end={"compile": "QUEUE_TIMEOUT"}),
    "unit-lost-agent": Outcome(end={"unit": "HEARTBEAT_TIMEOUT"}),
    "notify-failed": Outcome(fail={"notify": "say"}),
}

FINISHED_STATUS = {
    "compile-failed-at-pack": ("FAILED", {"compile": "FAILED", "lint": "SUCCEED", "unit": "UNEXEC",
                                          "package": "UNEXEC", "docs": "UNEXEC", "notify": "SUCCEED"}),
    "all-succeeded": ("SUCCEED", dict.fromkeys(ALL, "SUCCEED")),
    "lint-failed-continue-on-error": ("SUCCEED", {**dict.fromkeys(ALL, "SUCCEED"), "lint": "FAILED"}),
    "package-failed": ("FAILED", {**dict.fromkeys(ALL, "SUCCEED"), "package": "FAILED"}),
    "compile-queue-timeout": ("FAILED", {"compile": "QUEUE_TIMEOUT", "lint": "SUCCEED", "unit": "UNEXEC",
                                         "package": "UNEXEC", "docs": "UNEXEC", "notify": "SUCCEED"}),
    "unit-lost-agent": ("FAILED", {**dict.fromkeys(ALL, "SUCCEED"), "unit": "HEARTBEAT_TIMEOUT",
                                   "package": "UNEXEC", "docs": "UNEXEC"}),
    "notify-failed": ("FAILED", {**dict.fromkeys(ALL, "SUCCEED"), "notify": "FAILED"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(FINISHED))
def test_the_played_builds_end_as_the_tables_assume(name: str) -> None:
    build = built(FINISHED[name])
    assert (build.status, statuses(build)) == FINISHED_STATUS[name]


@dataclass(frozen=True)
class Refusal:
    error: type[Exception]
    words: str  # a part of the message


# (finished build, job, step, failed_only) -> plan (job -> first step index) or Refusal
RERUN_TABLE = [
    # whole build: every job, from its first step
    ("compile-failed-at-pack", None, None, False, dict.fromkeys(ALL, 0)),
    ("all-succeeded", None, None, False, dict.fromkeys(ALL, 0)),
    # failed_only: every job that did not succeed, whole, and the finally jobs
    ("compile-failed-at-pack", None, None, True, dict.fromkeys(["compile", "unit", "package", "docs", "notify"], 0)),
    ("package-failed", None, None, True, {"package": 0, "notify": 0}),
    ("compile-queue-timeout", None, None, True, dict.fromkeys(["compile", "unit", "package", "docs", "notify"], 0)),
    ("unit-lost-agent", None, None, True, dict.fromkeys(["unit", "package", "docs", "notify"], 0)),
    # a continue-on-error job that failed is not a success: failed_only runs it again
    ("lint-failed-continue-on-error", None, None, True, {"lint": 0, "notify": 0}),
    # a failed finally job is no reason on its own: only finally jobs would run
    ("notify-failed", None, None, True, Refusal(NotRetryable, "no failed job to retry")),
    ("all-succeeded", None, None, True, Refusal(NotRetryable, "no failed job to retry")),
    # a job: it, and whatever did not succeed in its phase or later, and the finally jobs
    ("compile-failed-at-pack", "compile", None, False, dict.fromkeys(["compile", "unit", "package", "docs", "notify"], 0)),
    # ... unless an earlier stage's failure still stands: the retry would run nothing
    ("compile-failed-at-pack", "package", None, False, Refusal(NotRetryable, "job 'compile' of stage 'build' ended FAILED and still stops it")),
    ("package-failed", "package", None, False, {"package": 0, "notify": 0}),
    ("unit-lost-agent", "unit", None, False, dict.fromkeys(["unit", "package", "docs", "notify"], 0)),
    ("notify-failed", "notify", None, False, {"notify": 0}),
    # a job that succeeded may be run again too (with what failed after it)
    ("package-failed", "lint", None, False, {"lint": 0, "package": 0, "notify": 0}),
    # a step: its job from that step (by step id alone when unambiguous)
    ("compile-failed-at-pack", None, "pack", False, {"compile": 1, "unit": 0, "package": 0, "docs": 0, "notify": 0}),
    ("compile-failed-at-pack", "compile", "pack", False, {"compile": 1, "unit": 0, "package": 0, "docs": 0,
                                                          "notify": 0}),  # fmt: skip
    # a step that never ran may be retried after the build ended
    ("compile-failed-at-pack", None, "zip", False, Refusal(NotRetryable, "job 'compile' of stage 'build' ended FAILED and still stops it")),
    ("package-failed", None, "zip", False, {"package": 0, "notify": 0}),
    ("compile-queue-timeout", "compile", "pack", False, {"compile": 1, "unit": 0, "package": 0, "docs": 0,
                                                         "notify": 0}),  # fmt: skip
    ("compile-failed-at-pack", None, "make", False, Refusal(NotRetryable, "step 'make' of job 'compile' is SUCCEED")),
    ("all-succeeded", "package", "zip", False, Refusal(NotRetryable, "only a failed step or one that never ran")),
    # names that are not there, or not enough to tell
    ("compile-failed-at-pack", "nope", None, False, Refusal(NotFound, "has no job 'nope'")),
    ("compile-failed-at-pack", None, "nope", False, Refusal(NotFound, "has no step 'nope'")),
    ("compile-failed-at-pack", "unit", "pack", False, Refusal(NotFound, "job 'unit' of build 'p.1' has no step 'pack'")),
    ("compile-failed-at-pack", None, "check", False, Refusal(NotFound, "several jobs (lint, docs)")),
    ("compile-failed-at-pack", "docs", "check", False, Refusal(NotRetryable, "job 'compile' of stage 'build' ended FAILED and still stops it")),
]  # fmt: skip


@pytest.mark.parametrize(("finished", "job", "step", "failed_only", "expected"), RERUN_TABLE)
def test_rerun_plan(finished: str, job: str | None, step: str | None, failed_only: bool,
                    expected: dict[str, int] | Refusal) -> None:  # fmt: skip
    build = built(FINISHED[finished])
    before = (build.status, build.execute_count, statuses(build))
    if isinstance(expected, Refusal):
        with pytest.raises(expected.error, match=re.escape(expected.words)):
            build.rerun_plan(job_id=job, step_id=step, failed_only=failed_only)
    else:
        assert build.rerun_plan(job_id=job, step_id=step, failed_only=failed_only) == expected
    assert (build.status, build.execute_count, statuses(build)) == before, "planning changes nothing"


@pytest.mark.parametrize(("finished", "job", "step", "failed_only", "expected"),
                         [row for row in RERUN_TABLE if not isinstance(row[4], Refusal)])
def test_a_rerun_resets_what_its_plan_names_and_runs_it_from_its_step(
    finished: str, job: str | None, step: str | None, failed_only: bool, expected: dict[str, int]
) -> None:
    build = built(FINISHED[finished])
    kept = {name: status for name, status in statuses(build).items() if name not in expected}
    attempts = {name: len(run.attempts) for name, run in build.jobs.items()}
    build.prepare_rerun(job_id=job, step_id=step, failed_only=failed_only, now=T + 1)
    assert (build.status, build.reason, build.execute_count, build.queued_at) == ("QUEUE", None, 2, T + 1)
    assert {name: status for name, status in statuses(build).items() if name not in expected} == kept
    assert all(build.jobs[name].status == "DEPENDENT_WAITING" for name in expected)
    started: dict[str, int] = {}
    queue = deque(build.start(T + 2))
    while queue:  # everything succeeds this time
        run = queue.popleft()
        started[run.id] = run.attempts[-1].start_step
        assert run.attempts[-1].execute_count == 2
        queue.extend(play_job(build, run, Outcome()))
    assert started == expected, "exactly the planned jobs run, each from its planned step"
    assert {name: len(run.attempts) for name, run in build.jobs.items()} == {
        name: count + (name in expected) for name, count in attempts.items()
    }, "earlier attempts are kept"
    assert build.status == "SUCCEED"


@pytest.mark.parametrize(("job", "step"), [("package", None), (None, "zip"), ("docs", "check")])
def test_a_rerun_past_a_failure_that_stands_is_refused(job: str | None, step: str | None) -> None:
    """A later job would end UNEXEC again while an earlier stage's failure
    (compile) stands: the retry is refused, naming the job to retry, and
    changes nothing (no admission, execute_count stays)."""
    build = built(FINISHED["compile-failed-at-pack"])
    before = statuses(build)
    with pytest.raises(NotRetryable, match="job 'compile' of stage 'build' ended FAILED.*retry job 'compile'"):
        build.prepare_rerun(job_id=job, step_id=step, failed_only=False, now=T + 1)
    assert statuses(build) == before and build.execute_count == 1


def test_a_running_build_has_no_rerun_plan() -> None:
    build = built(Outcome(fail={"compile": "pack"}, hold=frozenset({"lint"})))
    assert build.status == "RUNNING"
    for job, step, failed_only in [(None, None, False), (None, None, True), ("compile", None, False)]:
        with pytest.raises(NotRetryable, match="is RUNNING"):
            build.rerun_plan(job_id=job, step_id=step, failed_only=failed_only)


def test_a_rerun_of_a_lock_chain_member_holds_the_chain_agent_until_it_ends() -> None:
    build = built(FINISHED["package-failed"])
    assert build.agents_to_unlock(everything=True) == [("default", "n1/0")]  # the pipeline frees it at the end
    build.prepare_rerun(job_id="package", step_id=None, failed_only=False, now=T + 1)
    (package,) = build.start(T + 2)
    assert package.id == "package"
    build.job_started(package, "n1", "n1/0", {}, T + 3)
    build.lock_agent(package, "default", "n1/0")
    assert build.agents_to_unlock() == [], "held while the chain's job runs"
    (notify,) = build.job_ended(package, "SUCCEED", None, T + 4)
    assert build.agents_to_unlock() == [("default", "n1/0")], "freed once the chain's last job ended"
    play(build, [notify], Outcome())
    assert build.status == "SUCCEED"


# -- retries inside a running build -------------------------------------------------------

RUNNING = {
    # compile fails at pack while lint still runs: unit will not run (its dependency failed)
    "compile-failed-lint-runs": Outcome(fail={"compile": "pack"}, hold=frozenset({"lint"})),
    "compile-queue-timeout-lint-runs": Outcome(end={"compile": "QUEUE_TIMEOUT"}, hold=frozenset({"lint"})),
    "compile-lost-lint-runs": Outcome(end={"compile": "HEARTBEAT_TIMEOUT"}, hold=frozenset({"lint"})),
    "compile-exec-timeout-lint-runs": Outcome(end={"compile": "EXEC_TIMEOUT"}, hold=frozenset({"lint"})),
    "compile-canceled-lint-runs": Outcome(end={"compile": "CANCELED"}, hold=frozenset({"lint"})),
    # lint (continue-on-error) fails while compile runs: still its phase
    "lint-failed-compile-runs": Outcome(fail={"lint": "check"}, hold=frozenset({"compile"})),
    # lint failed in stage build, and the build moved on to stage ship, where docs runs
    "lint-failed-ship-runs": Outcome(fail={"lint": "check"}, hold=frozenset({"docs"})),
    # package failed in stage ship while docs runs
    "package-failed-docs-runs": Outcome(fail={"package": "zip"}, hold=frozenset({"docs"})),
}

# (running build, job, step) -> (job retried, first step, jobs reopened) or Refusal
IN_RUN_TABLE = [
    ("compile-failed-lint-runs", "compile", None, ("compile", 0, ["unit"])),
    ("compile-failed-lint-runs", None, "pack", ("compile", 1, ["unit"])),
    ("compile-failed-lint-runs", "compile", "pack", ("compile", 1, ["unit"])),
    # any failing end of a job may be retried in the run
    ("compile-queue-timeout-lint-runs", "compile", None, ("compile", 0, ["unit"])),
    ("compile-lost-lint-runs", "compile", None, ("compile", 0, ["unit"])),
    ("compile-exec-timeout-lint-runs", "compile", None, ("compile", 0, ["unit"])),
    ("compile-canceled-lint-runs", "compile", None, ("compile", 0, ["unit"])),
    ("lint-failed-compile-runs", "lint", None, ("lint", 0, [])),
    ("lint-failed-compile-runs", "lint", "check", ("lint", 0, [])),
    ("package-failed-docs-runs", "package", None, ("package", 0, [])),
    # a whole-build or failed-only retry needs a finished build
    ("compile-failed-lint-runs", None, None, Refusal(NotRetryable, "a whole-build retry needs a finished build")),
    # only what failed
    ("compile-failed-lint-runs", "lint", None, Refusal(NotRetryable, "job 'lint' is RUNNING")),
    ("compile-failed-lint-runs", "unit", None, Refusal(NotRetryable, "job 'unit' is UNEXEC")),
    ("compile-failed-lint-runs", "package", None, Refusal(NotRetryable, "job 'package' is DEPENDENT_WAITING")),
    ("compile-failed-lint-runs", None, "make", Refusal(NotRetryable, "step 'make' of job 'compile' is SUCCEED")),
    ("compile-queue-timeout-lint-runs", None, "pack", Refusal(NotRetryable, "step 'pack' of job 'compile' is UNEXEC")),
    # a job of a phase the build has left: retry the build once it finished
    ("lint-failed-ship-runs", "lint", None, Refusal(NotRetryable, "has moved on to 'ship'")),
    # names that are not there
    ("compile-failed-lint-runs", "nope", None, Refusal(NotFound, "has no job 'nope'")),
    ("compile-failed-lint-runs", None, "check", Refusal(NotFound, "several jobs")),
]  # fmt: skip


@pytest.mark.parametrize("name", sorted(RUNNING))
def test_the_running_builds_run_as_the_table_assumes(name: str) -> None:
    build = built(RUNNING[name])
    assert build.status == "RUNNING"
    held = RUNNING[name].hold
    assert {job for job, status in statuses(build).items() if status == "RUNNING"} == held


@pytest.mark.parametrize(("running", "job", "step", "expected"), IN_RUN_TABLE)
def test_retry_in_run(running: str, job: str | None, step: str | None,
                      expected: tuple[str, int, list[str]] | Refusal) -> None:  # fmt: skip
    build = built(RUNNING[running])
    before = statuses(build)
    if isinstance(expected, Refusal):
        with pytest.raises(expected.error, match=re.escape(expected.words)):
            build.retry_in_run(job, step, T + 1)
        assert statuses(build) == before, "a refused retry changes nothing"
        return
    name, start, reopened = expected
    retried = build.retry_in_run(job, step, T + 1)
    attempt = retried.attempts[-1]
    assert (retried.id, retried.status, attempt.start_step) == (name, "QUEUE", start)
    assert (attempt.number, attempt.retry_of, attempt.execute_count) == (2, 1, 1), "linked to the attempt it retries"
    assert (build.status, build.execute_count) == ("RUNNING", 1), "part of this run"
    assert [s.status for s in retried.steps[:start]] == ["SUCCEED"] * start, "steps before a retried step are kept"
    assert all(s.status == "QUEUE" for s in retried.steps[start:])
    changed = {other for other, status in statuses(build).items() if status != before[other] and other != name}
    assert changed == set(reopened) and all(build.jobs[o].status == "DEPENDENT_WAITING" for o in reopened)


def test_an_in_run_retry_that_succeeds_lets_the_build_succeed_with_its_dependents() -> None:
    build = built(RUNNING["compile-failed-lint-runs"])
    compile_job = build.retry_in_run(None, "pack", T + 1)
    lint = build.jobs["lint"]
    play(build, [compile_job], Outcome())
    assert statuses(build)["unit"] == "SUCCEED", "the reopened dependent ran after the retry succeeded"
    assert build.status == "RUNNING", "lint still runs: the phase waits for it"
    play(build, build.job_ended(lint, "SUCCEED", None, T + 2), Outcome())
    assert (build.status, build.execute_count) == ("SUCCEED", 1)
    assert [a.status for a in compile_job.steps[1].attempts] == ["FAILED", "SUCCEED"]
    assert len(compile_job.steps[0].attempts) == 1, "a step retry does not run the steps before it"


def test_an_in_run_retry_of_a_chain_root_keeps_the_chain_agent() -> None:
    build = built(RUNNING["compile-failed-lint-runs"])
    assert build.agents_to_unlock() == [], "package (same chain) has not run: the agent stays held"
    retried = build.retry_in_run("compile", None, T + 1)
    build.job_started(retried, "n1", "n1/0", {}, T + 2)
    build.lock_agent(retried, "default", "n1/0")
    assert build.locked == {"compile": {("default", "n1/0")}}


def test_a_build_being_cancelled_refuses_an_in_run_retry() -> None:
    build = built(RUNNING["compile-failed-lint-runs"])
    assert [job.id for job in build.cancel("stop", T + 1)] == ["lint"]
    with pytest.raises(NotRetryable, match="is being cancelled"):
        build.retry_in_run("compile", None, T + 2)
