"""The validated pipeline model: defaults, helpers, encoding."""

import msgspec
import pytest

from actors.model import spec
from actors.model.spec import (
    Concurrency,
    Job,
    Mutex,
    PipelineSpec,
    RunsOn,
    Stage,
    Step,
    normalize_condition,
)


def _job(job_id: str, **kwargs: object) -> Job:
    step = Step(id="step-1", name="step-1", run="true")
    return Job(id=job_id, name=job_id, steps=(step,), **kwargs)  # type: ignore[arg-type]


def _pipeline() -> PipelineSpec:
    return PipelineSpec(
        name="p",
        stages=(
            Stage(name="build", jobs=(_job("a"), _job("b"))),
            Stage(name="test", jobs=(_job("c"),)),
        ),
        finally_=(_job("notify", if_="ALWAYS"),),
    )


def test_concurrency_defaults() -> None:
    c = Concurrency(group="g")
    assert (c.max_parallel, c.queue_length, c.queue_timeout_minutes) == (1, 10, 480.0)
    assert (c.cancel_in_progress, c.on_queue_full) == (False, "reject")


def test_mutex_defaults() -> None:
    m = Mutex(label="deploy")
    assert (m.queue_length, m.timeout_minutes) == (10, 10.0)


def test_runs_on_defaults() -> None:
    r = RunsOn()
    assert r.pool_name == "default" and r.self_hosted is True
    assert r.node_name is None and r.labels == ()
    assert r.concurrency_limit_per_node is None and r.concurrency_limit_total is None
    assert r.queue_timeout_minutes == 10.0 and r.lock_resource_with is None


def test_step_defaults() -> None:
    s = Step(id="step-1", name="step-1", run="make")
    assert (s.uses, s.action, s.with_, s.env) == (None, None, {}, {})
    assert (s.if_, s.timeout_minutes) == ("SUCCESS", None)
    assert (s.retry_times, s.continue_on_error) == (0, "false")


def test_job_and_pipeline_defaults() -> None:
    j = _job("a")
    assert j.runs_on == RunsOn() and j.depend_on == () and j.timeout_minutes == 900.0
    assert j.continue_on_error is False and j.mutex is None and j.env == {} and j.if_ == "SUCCESS"
    p = PipelineSpec(name="p")
    assert p.version == "v3.0" and p.variables == {} and p.concurrency is None
    assert p.stages == () and p.finally_ == () and p.source == ""


def test_all_jobs_yields_stage_jobs_then_finally_jobs() -> None:
    assert [job.id for job in _pipeline().all_jobs()] == ["a", "b", "c", "notify"]


def test_job_finds_any_job_and_raises_key_error_otherwise() -> None:
    p = _pipeline()
    assert p.job("c").id == "c"
    assert p.job("notify").if_ == "ALWAYS"
    with pytest.raises(KeyError):
        p.job("missing")


def test_structs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        _job("a").id = "b"  # type: ignore[misc]


def test_encoding_uses_yaml_names_for_reserved_words() -> None:
    step = Step(
        id="s", name="s", uses="sleep@1", action="sleep", with_={"seconds": 1}, if_="ALWAYS"
    )
    p = PipelineSpec(name="p", stages=(Stage(name="s", jobs=(_job("a"),)),), finally_=(_job("f"),))
    step_json = msgspec.json.decode(msgspec.json.encode(step))
    assert step_json["with"] == {"seconds": 1} and step_json["if"] == "ALWAYS"
    assert "with_" not in step_json and "if_" not in step_json
    assert [j["id"] for j in msgspec.json.decode(msgspec.json.encode(p))["finally"]] == ["f"]


def test_json_round_trip() -> None:
    p = _pipeline()
    assert msgspec.json.decode(msgspec.json.encode(p), type=PipelineSpec) == p


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SUCCESS", "SUCCESS"),
        ("success", "SUCCESS"),
        ("success()", "SUCCESS"),
        ("Failure()", "FAILURE"),
        (" always ", "ALWAYS"),
        ("canceled", "CANCELED"),
        ("cancelled()", "CANCELED"),
        ("sometimes", None),
        ("", None),
    ],
)
def test_normalize_condition(text: str, expected: str | None) -> None:
    assert normalize_condition(text) == expected


def test_public_names_are_exported() -> None:
    for name in ("Concurrency", "Mutex", "RunsOn", "Step", "Job", "Stage", "PipelineSpec"):
        assert name in spec.__all__
