"""The one vocabulary: its words are the public strings, msgspec refuses anything else."""

from __future__ import annotations

import msgspec
import pytest

from actors.model.info import AgentInfo, BuildInfo, Event, GroupInfo, JobInfo, StageInfo, StepAttemptInfo
from actors.model.spec import Concurrency, Job, Step, normalize_condition
from actors.model.vocab import (
    BUILD_FINAL,
    JOB_FAILING,
    JOB_FINAL,
    STEP_FAILING,
    STEP_FINAL,
    AgentStatus,
    BuildStatus,
    RunCondition,
    ContinueOnError,
    EventKind,
    JobStatus,
    StageStatus,
    StepStatus,
    values,
)

BUILD_JSON = {"id": "app.1", "pipeline_id": "app", "number": 1, "status": "RUNNING", "execute_count": 1,
              "group": None, "queue_position": None, "reason": None, "variables": {}, "created_at": None,
              "queued_at": None,
              "started_at": None, "finished_at": None, "stages": []}  # fmt: skip


def test_the_words_are_those_of_the_design() -> None:
    # docs/design.md §3.2, spelled out here on purpose: renaming one is a change of the public interface.
    assert values(BuildStatus) == ["QUEUE", "RUNNING", "SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"]
    assert set(values(JobStatus)) == {"QUEUE", "DEPENDENT_WAITING", "RUNNING", "SUCCEED", "FAILED", "CANCELED",
                                      "SKIP", "UNEXEC", "QUEUE_TIMEOUT", "HEARTBEAT_TIMEOUT", "EXEC_TIMEOUT"}  # fmt: skip
    assert set(values(StepStatus)) == {"QUEUE", "RUNNING", "SUCCEED", "FAILED", "CANCELED", "SKIP", "UNEXEC",
                                       "EXEC_TIMEOUT"}  # fmt: skip
    assert values(EventKind) == ["build", "job", "step", "group", "node"]
    assert values(RunCondition) == ["SUCCESS", "FAILURE", "ALWAYS", "CANCELED"]
    assert values(ContinueOnError) == ["false", "true", "auto", "manual"]


def test_members_are_their_strings() -> None:
    assert JobStatus.FAILED == "FAILED" and hash(JobStatus.FAILED) == hash("FAILED")
    assert f"ended {JobStatus.EXEC_TIMEOUT}" == "ended EXEC_TIMEOUT"
    assert "SUCCEED" in BUILD_FINAL and "RUNNING" not in BUILD_FINAL
    # one status word means the same whichever record it is on
    assert BuildStatus.CANCELED == JobStatus.CANCELED == StepStatus.CANCELED


def test_final_and_failing_sets_agree() -> None:
    assert JOB_FAILING < JOB_FINAL and STEP_FAILING < STEP_FINAL
    assert set(STEP_FINAL) <= set(JOB_FINAL)
    assert set(BUILD_FINAL) <= set(JOB_FINAL) | {"QUEUE_TIMEOUT"}
    assert not {"QUEUE", "RUNNING", "DEPENDENT_WAITING"} & (JOB_FINAL | STEP_FINAL | BUILD_FINAL)
    assert set(values(StageStatus)) <= set(values(JobStatus))


def test_json_is_unchanged_a_member_encodes_as_its_string() -> None:
    info = BuildInfo(**{**BUILD_JSON, "status": BuildStatus.RUNNING})  # type: ignore[arg-type]
    assert msgspec.json.decode(msgspec.json.encode(info)) == BUILD_JSON
    member = AgentInfo(name="n1/0", status=AgentStatus.IDLE)
    assert msgspec.json.encode(member) == b'{"name":"n1/0","status":"idle","job":null,"locked_by":null}'


def test_decoding_a_build_gives_members_and_refuses_an_unknown_status() -> None:
    decoded = msgspec.json.decode(msgspec.json.encode(BUILD_JSON), type=BuildInfo)
    assert decoded.status is BuildStatus.RUNNING
    with pytest.raises(msgspec.ValidationError, match=r"Invalid enum value 'DONE' - at `\$.status`"):
        msgspec.json.decode(msgspec.json.encode({**BUILD_JSON, "status": "DONE"}), type=BuildInfo)
    # a job status is not a build status
    with pytest.raises(msgspec.ValidationError, match="SKIP"):
        msgspec.json.decode(msgspec.json.encode({**BUILD_JSON, "status": "SKIP"}), type=BuildInfo)
    # statuses are case-sensitive words, not loose text
    with pytest.raises(msgspec.ValidationError, match="running"):
        msgspec.convert({**BUILD_JSON, "status": "running"}, BuildInfo)


@pytest.mark.parametrize("record, path", [
    (StepAttemptInfo, "$.status"),
    (StageInfo, "$.status"),
    (JobInfo, "$.status"),
])  # fmt: skip
def test_every_record_checks_its_own_words(record: type, path: str) -> None:
    fields = {"number": 1, "id": "x", "name": "x", "status": "DEPENDENT_WAITING"}
    known = {f.encode_name for f in msgspec.structs.fields(record)}
    data = {key: value for key, value in fields.items() if key in known}
    if record is JobInfo:
        assert msgspec.convert(data, record).status is JobStatus.DEPENDENT_WAITING
        data["status"] = "SUCCESS"  # a condition, not a status
    with pytest.raises(msgspec.ValidationError, match=path.replace("$", r"\$")):
        msgspec.convert(data, record)


def test_groups_events_and_specs_are_checked_too() -> None:
    group = {"name": "g", "max_parallel": 1, "queue_length": 1, "queue_timeout_minutes": 1.0,
             "cancel_in_progress": False, "running": [], "queue": []}  # fmt: skip
    assert msgspec.convert({**group, "on_queue_full": "cancel-oldest"}, GroupInfo).on_queue_full == "cancel-oldest"
    with pytest.raises(msgspec.ValidationError, match="on_queue_full"):
        msgspec.convert({**group, "on_queue_full": "drop"}, GroupInfo)
    with pytest.raises(msgspec.ValidationError, match=r"\$.kind"):
        msgspec.convert({"id": 1, "kind": "stage", "time": "t"}, Event)
    with pytest.raises(msgspec.ValidationError, match=r"\$.if"):
        msgspec.convert({"id": "s", "name": "s", "if": "sometimes"}, Step)
    with pytest.raises(msgspec.ValidationError, match=r"\$.continue_on_error"):
        msgspec.convert({"id": "s", "name": "s", "continue_on_error": "maybe"}, Step)
    with pytest.raises(msgspec.ValidationError, match=r"\$.on_queue_full"):
        msgspec.convert({"group": "g", "on_queue_full": "reject-all"}, Concurrency)
    job = msgspec.convert({"id": "j", "name": "j", "if": "ALWAYS", "steps": [{"id": "s", "name": "s"}]}, Job)
    assert job.if_ is RunCondition.ALWAYS and job.steps[0].continue_on_error is ContinueOnError.FALSE


def test_conditions_normalise_to_members() -> None:
    assert normalize_condition(" failure() ") is RunCondition.FAILURE
    assert normalize_condition("cancelled") is RunCondition.CANCELED
    assert normalize_condition("succeed") is RunCondition.SUCCESS
    assert normalize_condition("sometimes") is None


def test_continue_on_error_says_whether_the_job_goes_on() -> None:
    assert [word.continues for word in ContinueOnError] == [False, True, True, False]
