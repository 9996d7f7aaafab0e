"""Pipeline loading: the docs/design.md §4 example, defaults, and every kind of error by path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actors.model.errors import SpecError
from actors.model.spec import Concurrency, Mutex, PipelineSpec, RunsOn
from runtime.spec_loader import load_pipeline, slugify, validate_pipeline_id

ACTIONS = {"noop", "sleep", "fail", "echo"}
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"

DESIGN_EXAMPLE = """\
version: v3.0
name: build-and-deploy
variables:
  DEPLOY_ENV: test                  # or {value: test}
concurrency:
  group: ${{ ci.pipeline_id }}      # templated; absent → no group
  max-parallel: 1                   # running builds per group (default 1)
  queue-length: 10                  # 0 → no queue (default 10)
  queue-timeout-minutes: 480        # default 480; fractions allowed
  cancel-in-progress: false         # default false
  on-queue-full: reject             # reject (default) | cancel-oldest
stages:                             # or top-level `jobs:` / `steps:`
  - name: build
    jobs:
      compile:
        runs-on:                    # or a plain pool name: `runs-on: my-pool`
          pool-name: my-pool        # default pool: "default"
          self-hosted: true         # accepted
          node-name: n1             # optional pin
          labels: [linux]           # optional: node must have all
          concurrency-limit-per-node: 2
          concurrency-limit-total: 5
          queue-timeout-minutes: 10 # default 10
        timeout-minutes: 120        # default 900
        continue-on-error: false
        mutex: {label: "deploy-${{ variables.DEPLOY_ENV }}", queue-length: 3, timeout-minutes: 60}
        steps:
          - id: make
            run: make               # shell, in the agent workspace
            retry-times: 2          # automatic retries, 0..5
            timeout-minutes: 60
            continue-on-error: false  # or auto | manual
          - uses: sleep@1           # a registered action
            with: {seconds: 1}
      package:
        depend-on: [compile]
        runs-on: {lock-resource-with: compile}
        steps:
          - run: ls out/
finally:                            # jobs that run after the stages
  notify: {if: FAILURE, steps: [{run: echo failed}]}
"""


def errors_of(source: Any, **kwargs: Any) -> list[dict[str, str]]:
    """The errors a source is refused with (fails the test if it loads)."""
    with pytest.raises(SpecError) as info:
        load_pipeline(source, **kwargs)
    assert info.value.errors == info.value.details
    return info.value.errors


def error_at(source: Any, path: str, **kwargs: Any) -> str:
    """The one message reported at ``path`` (other errors are allowed)."""
    errors = errors_of(source, **kwargs)
    messages = [e["message"] for e in errors if e["path"] == path]
    assert len(messages) == 1, errors
    return messages[0]


def one_job(job: str = "{steps: [{run: x}]}", extra: str = "") -> str:
    """A small pipeline with job ``j`` defined by the flow mapping ``job``."""
    return f"name: p\n{extra}jobs:\n  j: {job}\n"


# -- the design's example and defaults ------------------------------------------


def test_design_example_loads_with_every_field() -> None:
    spec = load_pipeline(DESIGN_EXAMPLE, known_actions=ACTIONS)
    assert spec.version == "v3.0" and spec.name == "build-and-deploy"
    assert spec.variables == {"DEPLOY_ENV": "test"}
    assert spec.concurrency == Concurrency(
        group="${{ ci.pipeline_id }}",
        max_parallel=1,
        queue_length=10,
        queue_timeout_minutes=480.0,
        cancel_in_progress=False,
        on_queue_full="reject",
    )
    assert spec.source == DESIGN_EXAMPLE
    (stage,) = spec.stages
    assert stage.name == "build"
    compile_, package = stage.jobs
    assert compile_.id == "compile" and compile_.name == "compile"
    assert compile_.runs_on == RunsOn(
        pool_name="my-pool",
        self_hosted=True,
        node_name="n1",
        labels=("linux",),
        concurrency_limit_per_node=2,
        concurrency_limit_total=5,
        queue_timeout_minutes=10.0,
    )
    assert compile_.timeout_minutes == 120.0 and compile_.continue_on_error is False
    assert compile_.mutex == Mutex(
        label="deploy-${{ variables.DEPLOY_ENV }}", queue_length=3, timeout_minutes=60.0
    )
    assert compile_.depend_on == () and compile_.if_ == "SUCCESS" and compile_.env == {}
    make, sleep = compile_.steps
    assert (make.id, make.name, make.run, make.uses) == ("make", "make", "make", None)
    assert (make.retry_times, make.timeout_minutes, make.continue_on_error) == (2, 60.0, "false")
    assert (sleep.id, sleep.name, sleep.uses) == ("step-2", "step-2", "sleep@1")
    assert make.action is None and sleep.action == "sleep"
    assert sleep.with_ == {"seconds": 1} and sleep.run is None
    assert package.depend_on == ("compile",)
    # A job locked to another's agent takes that job's placement.
    assert package.runs_on.lock_resource_with == "compile"
    assert (package.runs_on.pool_name, package.runs_on.node_name) == ("my-pool", "n1")
    assert package.runs_on.labels == ("linux",)
    assert package.runs_on.concurrency_limit_total is None
    assert package.runs_on.queue_timeout_minutes == 10.0
    assert package.steps[0].run == "ls out/" and package.steps[0].id == "step-1"
    (notify,) = spec.finally_
    assert notify.id == "notify" and notify.if_ == "FAILURE"
    assert notify.steps[0].run == "echo failed"
    assert [job.id for job in spec.all_jobs()] == ["compile", "package", "notify"]


def test_defaults_of_a_minimal_pipeline() -> None:
    spec = load_pipeline("name: tiny\nsteps:\n  - run: echo hi\n")
    assert spec.version == "v3.0" and spec.variables == {} and spec.concurrency is None
    assert spec.finally_ == ()
    (stage,) = spec.stages
    assert stage.name == "stage-1"
    (job,) = stage.jobs
    assert (job.id, job.name, job.runs_on, job.depend_on) == ("job-1", "job-1", RunsOn(), ())
    assert (job.timeout_minutes, job.continue_on_error, job.mutex) == (900.0, False, None)
    assert (job.env, job.if_) == ({}, "SUCCESS")
    (step,) = job.steps
    assert (step.id, step.name, step.run) == ("step-1", "step-1", "echo hi")
    assert (step.uses, step.action) == (None, None)
    assert (step.with_, step.env, step.if_, step.timeout_minutes) == ({}, {}, "SUCCESS", None)
    assert (step.retry_times, step.continue_on_error) == (0, "false")


def test_concurrency_and_mutex_defaults() -> None:
    spec = load_pipeline(
        one_job("{mutex: {label: m}, steps: [{run: x}]}", extra="concurrency: {group: g}\n")
    )
    assert spec.concurrency == Concurrency(group="g")
    assert spec.job("j").mutex == Mutex(label="m")


def test_finally_jobs_default_to_always() -> None:
    spec = load_pipeline(one_job() + "finally:\n  f: {steps: [{run: x}]}\n")
    assert spec.job("f").if_ == "ALWAYS"
    assert spec.job("j").if_ == "SUCCESS"


def test_top_level_jobs_form_is_one_stage() -> None:
    spec = load_pipeline(
        "name: p\njobs:\n  a: {steps: [{run: x}]}\n  b: {depend-on: a, steps: [{run: y}]}\n"
    )
    (stage,) = spec.stages
    assert stage.name == "stage-1" and [j.id for j in stage.jobs] == ["a", "b"]
    assert spec.job("b").depend_on == ("a",)


def test_plain_and_object_runs_on() -> None:
    assert load_pipeline(one_job("{runs-on: fast, steps: [{run: x}]}")).job("j").runs_on == RunsOn(
        pool_name="fast"
    )
    spec = load_pipeline(one_job("{runs-on: {node-name: n2, labels: gpu}, steps: [{run: x}]}"))
    assert spec.job("j").runs_on == RunsOn(node_name="n2", labels=("gpu",))


def test_json_input_and_mapping_input() -> None:
    data = {
        "name": "from-json",
        "jobs": {"a": {"steps": [{"uses": "echo@1", "with": {"text": "hi"}}]}},
    }
    spec = load_pipeline(json.dumps(data, indent="\t"), known_actions=ACTIONS)
    step = spec.job("a").steps[0]
    assert step.with_ == {"text": "hi"} and step.action == "echo"
    assert spec.source.startswith("{")
    from_mapping = load_pipeline(data)
    assert from_mapping.job("a") == spec.job("a") and from_mapping.source == ""
    assert load_pipeline(json.dumps(data).encode()).name == "from-json"


def test_path_input(tmp_path: Path) -> None:
    path = tmp_path / "p.yml"
    path.write_text("name: on-disk\nsteps: [{run: x}]\n")
    assert load_pipeline(path).name == "on-disk"
    assert "cannot read" in error_at(tmp_path / "missing.yml", "$")


def test_with_is_mapped_to_with_() -> None:
    spec = load_pipeline("name: p\nsteps:\n  - uses: sleep@1\n    with: {seconds: 0.5, tags: [a]}")
    assert spec.job("job-1").steps[0].with_ == {"seconds": 0.5, "tags": ["a"]}


@pytest.mark.parametrize(
    ("written", "expected"),
    [("v3.0", "v3.0"), ("v3", "v3.0"), ("'3.0'", "v3.0"), ("3.0", "v3.0"), ("3", "v3.0")],
)
def test_accepted_versions(written: str, expected: str) -> None:
    assert load_pipeline(f"version: {written}\n" + one_job()).version == expected


def test_variable_forms() -> None:
    spec = load_pipeline(
        textwrap.dedent(
            """\
            name: p
            variables:
              A: text
              B: 3
              C: true
              D: 1.5
              E: {value: x, description: the x}
              F:
              G: 2024-01-31
            steps: [{run: "echo ${{ variables.A }}"}]
            """
        )
    )
    assert spec.variables == {
        "A": "text", "B": "3", "C": "true", "D": "1.5", "E": "x", "F": "", "G": "2024-01-31"
    }


def test_conditions_are_normalised() -> None:
    steps = "[{run: x, if: always}, {run: y, if: Canceled}]"
    spec = load_pipeline(one_job(f"{{if: failure(), steps: {steps}}}"))
    job = spec.job("j")
    assert job.if_ == "FAILURE" and [s.if_ for s in job.steps] == ["ALWAYS", "CANCELED"]


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("false", "false"),
        ("true", "true"),
        ("auto", "auto"),
        ("manual", "manual"),
        ("AUTO", "auto"),
    ],
)
def test_step_continue_on_error(written: str, expected: str) -> None:
    spec = load_pipeline(one_job(f"{{steps: [{{run: x, continue-on-error: {written}}}]}}"))
    assert spec.job("j").steps[0].continue_on_error == expected


def test_templates_in_every_templated_field_are_accepted() -> None:
    load_pipeline(
        textwrap.dedent(
            """\
            name: p
            variables: {V: v}
            concurrency: {group: "g-${{ variables.V }}-${{ ci.pipeline_id }}"}
            jobs:
              j:
                env: {A: "${{ ci.build_id }}"}
                mutex: {label: "m-${{ variables.V }}"}
                steps:
                  - run: "echo ${{ ci.build_num }}"
                    env: {B: "${{ variables.V }}"}
                  - uses: echo@1
                    with: {text: "${{ variables.V }}", nested: [{deep: "${{ ci.build_id }}"}]}
            """
        ),
        known_actions=ACTIONS,
    )


def test_null_counts_as_absent() -> None:
    job = "{runs-on: null, timeout-minutes: null, steps: [{run: x}]}"
    spec = load_pipeline(one_job(job, extra="concurrency:\n"))
    assert spec.concurrency is None and spec.job("j").timeout_minutes == 900.0


# -- errors -------------------------------------------------------------------


def test_invalid_yaml_reports_line_and_column() -> None:
    (error,) = errors_of("name: p\nsteps: [\n  - run: x\n")
    assert error["path"] == "$"
    assert "invalid YAML at line" in error["message"] and "column" in error["message"]


def test_invalid_json_falls_back_to_a_yaml_error() -> None:
    (error,) = errors_of('{"name": "p", "steps": [}')
    assert error["path"] == "$" and "line 1" in error["message"]


def test_duplicate_yaml_keys_are_refused() -> None:
    (error,) = errors_of("name: p\njobs:\n  a: {steps: [{run: x}]}\n  a: {steps: [{run: y}]}\n")
    assert "duplicate key 'a'" in error["message"] and "line 4" in error["message"]


def test_yaml_merge_keys_may_be_overridden() -> None:
    spec = load_pipeline(
        "name: p\njobs:\n"
        "  a: &j {timeout-minutes: 5, steps: [{run: x}]}\n"
        "  b: {<<: *j, timeout-minutes: 7}\n"
    )
    assert spec.job("b").timeout_minutes == 7.0 and spec.job("b").steps == spec.job("a").steps


@pytest.mark.parametrize("source", ["[1, 2]", "just text", "", "42"])
def test_top_level_must_be_a_mapping(source: str) -> None:
    (error,) = errors_of(source)
    assert error["path"] == "$" and "must be a mapping" in error["message"]


def test_invalid_utf8_is_refused() -> None:
    assert "UTF-8" in error_at(b"name: \xff\n", "$")


def test_unknown_keys_at_every_level_with_suggestions() -> None:
    source = textwrap.dedent(
        """\
        name: p
        varables: {}
        concurrency: {group: g, max-paralel: 2}
        stages:
          - name: s
            job: {}
            jobs:
              j:
                runs_on: default
                runs-on: {pool: x}
                mutex: {label: m, timeout: 1}
                steps:
                  - run: x
                    retry: 1
        """
    )
    errors = {e["path"]: e["message"] for e in errors_of(source)}
    assert errors == {
        "$.varables": "unknown key 'varables' (did you mean 'variables'?)",
        "$.concurrency.max-paralel": "unknown key 'max-paralel' (did you mean 'max-parallel'?)",
        "$.stages[0].job": "unknown key 'job' (did you mean 'jobs'?)",
        "$.stages[0].jobs.j.runs_on": "unknown key 'runs_on' (did you mean 'runs-on'?)",
        "$.stages[0].jobs.j.runs-on.pool": "unknown key 'pool' (did you mean 'pool-name'?)",
        "$.stages[0].jobs.j.mutex.timeout": (
            "unknown key 'timeout' (did you mean 'timeout-minutes'?)"
        ),
        "$.stages[0].jobs.j.steps[0].retry": "unknown key 'retry' (did you mean 'retry-times'?)",
    }


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    source = "name: p\nvariables: {A: {value: 1, readonly: true}}\nsteps: [{run: x}]\n"
    message = error_at(source, "$.variables.A.readonly")
    assert message == "unknown key 'readonly' (expected one of: value, description)"


def test_a_github_on_key_is_refused_by_name() -> None:
    # YAML 1.1 reads an unquoted `on` as true: the loader keeps the word.
    source = "name: p\non:\n  push: {branches: [main]}\nsteps: [{run: x}]\n"
    assert errors_of(source) == [{"path": "$.on", "message": "'on' is not supported (shunter has no "
                                  "triggers; builds are submitted through the API)"}]  # fmt: skip
    assert error_at('name: p\n"on": push\nsteps: [{run: x}]\n', "$.on").startswith("'on' is not supported")


def test_yaml_boolean_words_as_keys_stay_words() -> None:
    spec = load_pipeline("name: p\njobs:\n  j: {env: {yes: 1, OFF: 'no'}, steps: [{run: x}]}\n")
    assert spec.stages[0].jobs[0].env == {"yes": "1", "OFF": "no"}
    assert error_at(one_job("{on: x, steps: [{run: x}]}"), "$.jobs.j.on").startswith("unknown key 'on'")
    # A key of the wrong type in a mapping given as such (no YAML text to read the word from).
    bool_key = error_at({"name": "p", True: {"push": {}}, "steps": [{"run": "x"}]}, "$")
    assert "key True must be a string, got boolean" in bool_key and "quote the key" in bool_key
    assert "key 3 must be a string, got integer" in error_at("name: p\n3: x\nsteps: [{run: x}]\n", "$")


def test_the_error_path_from_the_design() -> None:
    source = (
        "name: p\nstages:\n  - jobs:\n      compile:\n"
        "        {runs-on: {concurrency-limit-total: 0}, steps: [{run: x}]}\n"
    )
    (error,) = errors_of(source)
    assert error == {
        "path": "$.stages[0].jobs.compile.runs-on.concurrency-limit-total",
        "message": "must be >= 1",
    }
    assert "$.stages[0].jobs.compile.runs-on.concurrency-limit-total: must be >= 1" in str(
        SpecError([error])
    )


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timeout-minutes", "0", "must be > 0"),
        ("timeout-minutes", "-1", "must be > 0"),
        ("timeout-minutes", "true", "must be a number, got boolean"),
        ("timeout-minutes", "'5'", "must be a number, got string"),
        ("timeout-minutes", ".inf", "must be a finite number"),
        ("continue-on-error", "1", "must be true or false, got integer"),
        ("continue-on-error", "auto", "must be true or false, got string"),
        ("name", "''", "must not be empty"),
        ("name", "[a]", "must be a string, got list"),
        ("if", "sometimes", "must be one of SUCCESS, FAILURE, ALWAYS, CANCELED, got 'sometimes'"),
        ("depend-on", "{a: 1}", "must be a list of strings, got mapping"),
        ("env", "[A]", "must be a mapping, got list"),
        ("mutex", "deploy", "must be a mapping, got string"),
        ("runs-on", "5", "must be a mapping, got integer"),
        ("steps", "[]", "must be a non-empty list of steps, got an empty list"),
        ("steps", "{run: x}", "must be a non-empty list of steps, got mapping"),
    ],
)
def test_job_field_errors(field: str, value: str, message: str) -> None:
    if field == "steps":
        job = f"{{steps: {value}}}"
    else:
        job = f"{{{field}: {value}, steps: [{{run: x}}]}}"
    assert error_at(one_job(job), f"$.jobs.j.{field}") == message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("concurrency-limit-per-node", "0", "must be >= 1"),
        ("concurrency-limit-total", "true", "must be an integer, got boolean"),
        ("concurrency-limit-total", "2.5", "must be an integer, got number"),
        ("queue-timeout-minutes", "0", "must be > 0"),
        ("self-hosted", "yes please", "must be true or false, got string"),
        ("pool-name", "''", "must not be empty"),
        ("labels", "[linux, 3]", None),
    ],
)
def test_runs_on_field_errors(field: str, value: str, message: str | None) -> None:
    source = one_job(f"{{runs-on: {{{field}: {value}}}, steps: [{{run: x}}]}}")
    if message is None:  # a bad list item is reported at its own index
        message = "must be a non-empty string, got integer"
        assert error_at(source, f"$.jobs.j.runs-on.{field}[1]") == message
    else:
        assert error_at(source, f"$.jobs.j.runs-on.{field}") == message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max-parallel", "0", "must be >= 1"),
        ("queue-length", "-1", "must be >= 0"),
        ("queue-timeout-minutes", "0", "must be > 0"),
        ("cancel-in-progress", "'true'", "must be true or false, got string"),
        (
            "on-queue-full",
            "cancel-olderst",
            "must be one of reject, cancel-oldest, got 'cancel-olderst' "
            "(did you mean 'cancel-oldest'?)",
        ),
        ("group", "''", "must not be empty"),
    ],
)
def test_concurrency_field_errors(field: str, value: str, message: str) -> None:
    settings = f"{field}: {value}" if field == "group" else f"group: g, {field}: {value}"
    source = one_job(extra=f"concurrency: {{{settings}}}\n")
    assert error_at(source, f"$.concurrency.{field}") == message


def test_required_keys() -> None:
    assert error_at("steps: [{run: x}]\n", "$.name") == "is required"
    cases = [
        (one_job(extra="concurrency: {max-parallel: 2}\n"), "$.concurrency.group"),
        (one_job("{mutex: {queue-length: 1}, steps: [{run: x}]}"), "$.jobs.j.mutex.label"),
        ("name: p\nstages: [{name: s}]\n", "$.stages[0].jobs"),
        ("name: p\nvariables: {A: {description: d}}\nsteps: [{run: x}]\n", "$.variables.A.value"),
    ]
    for source, path in cases:
        assert error_at(source, path) == "is required"
    message = error_at(one_job("{name: j}"), "$.jobs.j.steps")
    assert message == "is required (a job needs at least one step)"


@pytest.mark.parametrize(
    ("step", "path", "message"),
    [
        ("{retry-times: 6, run: x}", "retry-times", "must be <= 5"),
        ("{retry-times: -1, run: x}", "retry-times", "must be >= 0"),
        ("{retry-times: true, run: x}", "retry-times", "must be an integer, got boolean"),
        ("{timeout-minutes: 0, run: x}", "timeout-minutes", "must be > 0"),
        (
            "{continue-on-error: maybe, run: x}",
            "continue-on-error",
            "must be one of false, true, auto, manual, got 'maybe'",
        ),
        ("{run: x, with: {a: 1}}", "with", "is only for steps with 'uses' (an action)"),
        ("{uses: echo@1, with: [a]}", "with", "must be a mapping, got list"),
        ("{uses: '@1'}", "uses", "must be 'action@version' (e.g. 'sleep@1'), got '@1'"),
        ("{uses: slep@1}", "uses", "unknown action 'slep' (did you mean 'sleep'?)"),
        ("{run: 5}", "run", "must be a string, got integer"),
        ("{run: ''}", "run", "must not be empty"),
        (
            "{id: '1st', run: x}",
            "id",
            "invalid step id '1st': use a letter or '_' then letters, digits, '_' or '-'",
        ),
        (
            "{run: x, env: {1A: v}}",
            "env['1A']",
            "invalid variable name '1A': use a letter or '_' then letters, digits or '_'",
        ),
        ("{run: x, env: {A: [1]}}", "env.A", "must be a string, number or boolean, got list"),
    ],
)
def test_step_field_errors(step: str, path: str, message: str) -> None:
    source = one_job(f"{{steps: [{{run: ok}}, {step}]}}")
    assert error_at(source, f"$.jobs.j.steps[1].{path}", known_actions=ACTIONS) == message


def test_step_needs_exactly_one_of_run_and_uses() -> None:
    assert error_at(one_job("{steps: [{name: n}]}"), "$.jobs.j.steps[0]") == (
        "needs 'run' (a shell command) or 'uses' (an action)"
    )
    assert error_at(one_job("{steps: [{run: x, uses: echo@1}]}"), "$.jobs.j.steps[0]") == (
        "use either 'run' or 'uses', not both"
    )


def test_uses_without_version_and_unknown_actions_only_checked_when_known() -> None:
    spec = load_pipeline(one_job("{steps: [{uses: deploy}, {uses: my.org/deploy@v2.1}]}"))
    assert [s.action for s in spec.job("j").steps] == ["deploy", "my.org/deploy"]
    source = one_job("{steps: [{uses: deploy}]}")
    message = error_at(source, "$.jobs.j.steps[0].uses", known_actions=ACTIONS)
    assert message == "unknown action 'deploy'"


def test_version_must_be_v3() -> None:
    assert error_at("version: v2.0\n" + one_job(), "$.version") == (
        "unsupported version 'v2.0': shunter reads v3.0 (or v3, 3.0)"
    )
    assert "unsupported version True" in error_at("version: true\n" + one_job(), "$.version")


def test_exactly_one_of_stages_jobs_steps() -> None:
    assert error_at("name: p\n", "$") == "one of 'stages', 'jobs' or 'steps' is required"
    message = error_at("name: p\njobs: {a: {steps: [{run: x}]}}\nsteps: [{run: x}]\n", "$")
    assert message == "use only one of 'stages', 'jobs' or 'steps' (found 'jobs', 'steps')"
    message = error_at("name: p\nstages: []\n", "$.stages")
    assert message == "must be a non-empty list of stages, got an empty list"
    assert error_at("name: p\njobs: {}\n", "$.jobs") == "must declare at least one job"


def test_stage_names_default_and_must_be_unique() -> None:
    job = "{steps: [{run: x}]}"
    spec = load_pipeline(f"name: p\nstages:\n  - jobs: {{a: {job}}}\n  - jobs: {{b: {job}}}\n")
    assert [s.name for s in spec.stages] == ["stage-1", "stage-2"]
    source = (
        f"name: p\nstages:\n  - {{name: s, jobs: {{a: {job}}}}}\n"
        f"  - {{name: s, jobs: {{b: {job}}}}}\n  - {{name: finally, jobs: {{c: {job}}}}}\n"
    )
    errors = errors_of(source)
    assert errors == [
        {"path": "$.stages[1].name", "message": "duplicate stage name 's' (also $.stages[0])"},
        {
            "path": "$.stages[2].name",
            "message": "duplicate stage name 'finally' (reserved for the finally jobs)",
        },
    ]


def test_job_ids_are_unique_across_the_pipeline_including_finally() -> None:
    job = "a: {steps: [{run: x}]}"
    source = f"name: p\nstages:\n  - jobs: {{{job}}}\n  - jobs: {{{job}}}\nfinally:\n  {job}\n"
    errors = errors_of(source)
    assert [e["path"] for e in errors] == ["$.stages[1].jobs.a", "$.finally.a"]
    assert errors[0]["message"] == (
        "duplicate job id 'a' (also $.stages[0].jobs.a); job ids are unique across the pipeline"
    )


def test_job_id_pattern_and_quoted_paths() -> None:
    message = error_at("name: p\njobs:\n  'my job': {steps: [{run: x}]}\n", "$.jobs['my job']")
    assert message == (
        "invalid job id 'my job': use a letter or '_' then letters, digits, '_' or '-'"
    )


def test_step_ids_are_unique_within_a_job_only() -> None:
    source = one_job("{steps: [{run: x}, {id: step-1, run: y}]}")
    assert error_at(source, "$.jobs.j.steps[1]") == (
        "duplicate step id 'step-1' (also $.jobs.j.steps[0]); "
        "steps without an id are named step-N by position"
    )
    steps = "{steps: [{id: s, run: x}]}"
    spec = load_pipeline(f"name: p\njobs:\n  a: {steps}\n  b: {steps}\n")
    assert spec.job("a").steps[0].id == spec.job("b").steps[0].id == "s"


def test_depend_on_rules() -> None:
    source = textwrap.dedent(
        """\
        name: p
        stages:
          - name: build
            jobs:
              compile: {steps: [{run: x}]}
              test: {depend-on: [compil, deploy, test], steps: [{run: x}]}
          - name: ship
            jobs:
              deploy: {depend-on: compile, steps: [{run: x}]}
        """
    )
    assert errors_of(source) == [
        {
            "path": "$.stages[0].jobs.test.depend-on[0]",
            "message": "unknown job 'compil' (did you mean 'compile'?)",
        },
        {
            "path": "$.stages[0].jobs.test.depend-on[1]",
            "message": "job 'deploy' is in a later stage ('ship'): "
            "depend-on names jobs of the same stage",
        },
        {
            "path": "$.stages[0].jobs.test.depend-on[2]",
            "message": "job 'test' cannot depend on itself",
        },
        {
            "path": "$.stages[1].jobs.deploy.depend-on",
            "message": "job 'compile' is in an earlier stage ('build'), "
            "which always finishes first: depend-on names jobs of the same stage",
        },
    ]


def test_duplicate_dependencies_collapse() -> None:
    spec = load_pipeline(
        "name: p\njobs:\n  a: {steps: [{run: x}]}\n  b: {depend-on: [a, a], steps: [{run: x}]}\n"
    )
    assert spec.job("b").depend_on == ("a",)


def test_dependency_cycles_are_named() -> None:
    source = textwrap.dedent(
        """\
        name: p
        jobs:
          a: {depend-on: [c], steps: [{run: x}]}
          b: {depend-on: [a], steps: [{run: x}]}
          c: {depend-on: [b], steps: [{run: x}]}
          d: {steps: [{run: x}]}
          e: {depend-on: [d, f], steps: [{run: x}]}
          f: {depend-on: [e], steps: [{run: x}]}
        finally:
          g: {depend-on: [h], steps: [{run: x}]}
          h: {depend-on: [g], steps: [{run: x}]}
        """
    )
    assert errors_of(source) == [
        {"path": "$.jobs.a.depend-on", "message": "dependency cycle: a -> c -> b -> a"},
        {"path": "$.jobs.e.depend-on", "message": "dependency cycle: e -> f -> e"},
        {"path": "$.finally.g.depend-on", "message": "dependency cycle: g -> h -> g"},
    ]


LOCK_PIPELINE = """\
name: p
stages:
  - name: build
    jobs:
      compile: {{runs-on: {{pool-name: big, labels: [linux]}}, steps: [{{run: x}}]}}
      unit: {{depend-on: [compile], steps: [{{run: x}}]}}
      lint: {{steps: [{{run: x}}]}}
      {job}
  - name: ship
    jobs:
      upload: {{runs-on: {{lock-resource-with: {target}}}, steps: [{{run: x}}]}}
finally:
  clean: {{runs-on: {{lock-resource-with: upload}}, steps: [{{run: x}}]}}
"""


def test_lock_resource_with_across_stages_and_through_ancestors() -> None:
    job = "package: {depend-on: [unit], runs-on: {lock-resource-with: compile}, steps: [{run: x}]}"
    spec = load_pipeline(LOCK_PIPELINE.format(job=job, target="package"))
    for job_id in ("package", "upload", "clean"):
        runs_on = spec.job(job_id).runs_on
        assert (runs_on.pool_name, runs_on.labels) == ("big", ("linux",)), job_id
    assert spec.job("upload").runs_on.lock_resource_with == "package"


@pytest.mark.parametrize(
    ("job", "target", "path", "message"),
    [
        (
            "package: {runs-on: {lock-resource-with: lint}, depend-on: [unit], steps: [{run: x}]}",
            "compile",
            "$.stages[0].jobs.package.runs-on.lock-resource-with",
            "job 'lint' is in the same stage but not a depend-on ancestor, "
            "so it may not have run first: add it to depend-on",
        ),
        (
            "package: {runs-on: {lock-resource-with: package}, steps: [{run: x}]}",
            "compile",
            "$.stages[0].jobs.package.runs-on.lock-resource-with",
            "a job cannot lock the agent of itself",
        ),
        (
            "package: {runs-on: {lock-resource-with: upload}, steps: [{run: x}]}",
            "compile",
            "$.stages[0].jobs.package.runs-on.lock-resource-with",
            "job 'upload' runs in a later stage ('ship')",
        ),
        (
            "package: {steps: [{run: x}]}",
            "compil",
            "$.stages[1].jobs.upload.runs-on.lock-resource-with",
            "unknown job 'compil' (did you mean 'compile'?)",
        ),
        (
            "package: {runs-on: {lock-resource-with: compile, node-name: n1}, "
            "depend-on: [compile], steps: [{run: x}]}",
            "compile",
            "$.stages[0].jobs.package.runs-on.node-name",
            "cannot be combined with lock-resource-with (the job runs on the agent of 'compile')",
        ),
    ],
)
def test_lock_resource_with_errors(job: str, target: str, path: str, message: str) -> None:
    errors = errors_of(LOCK_PIPELINE.format(job=job, target=target))
    assert errors == [{"path": path, "message": message}]


def test_template_errors_in_every_templated_field() -> None:
    source = textwrap.dedent(
        """\
        name: p
        variables: {DEPLOY_ENV: test}
        concurrency: {group: "${{ ci.pipeline }}"}
        jobs:
          j:
            env: {A: "${{ variables.DEPLOY_EN }}"}
            mutex: {label: "${{ vars.DEPLOY_ENV }}"}
            steps:
              - run: "echo ${{ variables.NOPE"
                env: {B: "${{ env.X }}"}
              - uses: echo@1
                with: {text: [{deep: "${{ ci.build_number }}"}]}
        """
    )
    errors = {e["path"]: e["message"] for e in errors_of(source)}
    assert set(errors) == {
        "$.concurrency.group",
        "$.jobs.j.env.A",
        "$.jobs.j.mutex.label",
        "$.jobs.j.steps[0].run",
        "$.jobs.j.steps[0].env.B",
        "$.jobs.j.steps[1].with.text[0].deep",
    }
    assert "did you mean 'pipeline_id'?" in errors["$.concurrency.group"]
    assert "did you mean 'DEPLOY_ENV'?" in errors["$.jobs.j.env.A"]
    assert "did you mean 'variables'?" in errors["$.jobs.j.mutex.label"]
    assert "not closed" in errors["$.jobs.j.steps[0].run"]
    assert "did you mean 'build_num'?" in errors["$.jobs.j.steps[1].with.text[0].deep"]


def test_many_errors_are_reported_together() -> None:
    source = textwrap.dedent(
        """\
        version: v9
        name: ''
        concurrency: {group: g, max-parallel: 0}
        jobs:
          a:
            runs-on: {concurrency-limit-total: 0}
            steps: [{retry-times: 9, run: x}]
          b: {depend-on: [z], steps: []}
        """
    )
    paths = [e["path"] for e in errors_of(source)]
    assert paths == [
        "$.version",
        "$.name",
        "$.concurrency.max-parallel",
        "$.jobs.a.steps[0].retry-times",
        "$.jobs.a.runs-on.concurrency-limit-total",
        "$.jobs.b.steps",
        "$.jobs.b.depend-on[0]",
    ]
    with pytest.raises(SpecError, match=r"and 2 more"):
        load_pipeline(source)


def test_a_pipeline_of_200_jobs_loads() -> None:
    lines = ["name: big", "variables: {V: v}", "stages:"]
    for stage in range(4):
        lines += [f"  - name: s{stage}", "    jobs:"]
        for index in range(50):
            job = f"j{stage}_{index}"
            deps = f"depend-on: [j{stage}_{index - 1}], " if index else ""
            lock = f"runs-on: {{lock-resource-with: j{stage}_{index - 1}}}, " if index else ""
            steps = "steps: [{run: 'echo ${{ variables.V }}'}]"
            lines.append(f"      {job}: {{{deps}{lock}{steps}}}")
    spec = load_pipeline("\n".join(lines) + "\n")
    assert sum(1 for _ in spec.all_jobs()) == 200
    last = spec.job("j3_49")
    assert last.depend_on == ("j3_48",) and last.runs_on.lock_resource_with == "j3_48"


def test_every_example_pipeline_loads() -> None:
    files = sorted(EXAMPLES.glob("*.yml"))
    names = {path.stem for path in files}
    assert {
        "group-queue", "cancel-in-progress", "cancel-oldest", "step-retry",
        "job-limits", "agent-reuse", "mutex", "build-and-deploy",
    } <= names
    for path in files:
        spec = load_pipeline(path.read_text(), known_actions=ACTIONS)
        assert isinstance(spec, PipelineSpec), path
        assert validate_pipeline_id(slugify(spec.name)) is None


# -- ids ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("build-and-deploy", "build-and-deploy"),
        ("Build & Deploy!", "build-deploy"),
        ("  --Hello__World--  ", "hello-world"),
        ("Déploiement été", "deploiement-ete"),
        ("构建", "pipeline"),
        ("", "pipeline"),
        ("a" * 70 + "-b", "a" * 64),
    ],
)
def test_slugify(name: str, slug: str) -> None:
    assert slugify(name) == slug
    assert validate_pipeline_id(slugify(name)) is None


@pytest.mark.parametrize("good", ["app", "App_1.2-x", "a" * 64, "0"])
def test_valid_pipeline_ids(good: str) -> None:
    assert validate_pipeline_id(good) is None


@pytest.mark.parametrize("bad", ["", ".hidden", "a" * 65, "with space", "a/b", 5])
def test_invalid_pipeline_ids(bad: Any) -> None:
    message = validate_pipeline_id(bad)
    assert message is not None and "pipeline id" in message


def test_alias_bombs_in_with_are_refused_quickly() -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):  # 10**9 strings once expanded
        levels.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    source = "name: p\nsteps:\n  - uses: echo@1\n    with: {" + ", ".join(levels) + "}\n"
    message = error_at(source, "$.steps[0].with")
    assert message.startswith("too large")
