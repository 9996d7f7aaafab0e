"""A job attempt's payload: its env is the build's variables, then the build context, which wins."""

from __future__ import annotations

from actors.builds.build import new_build
from actors.builds.payload import job_payload
from actors.builds.records import BuildShape
from runtime.spec_loader import load_pipeline

SHAPE = BuildShape(load_pipeline({"name": "p", "jobs": {"work": {"steps": [{"uses": "noop"}]}}}))
CONTEXT = {"SHUNTER_PIPELINE_ID": "p", "SHUNTER_BUILD_ID": "p.7", "SHUNTER_BUILD_NUM": "7",
           "SHUNTER_EXECUTE_COUNT": "1"}  # fmt: skip


def payload_env(variables: dict[str, str]) -> dict[str, str]:
    build = new_build(build_id="p.7", spec=SHAPE, number=7, variables=variables, group=None, now=1000.0)
    (job,) = build.start(1000.0)
    payload = job_payload(build, job)
    assert payload.template_context.variables == variables
    assert payload.template_context.ci == {"pipeline_id": "p", "build_id": "p.7", "build_num": "7"}
    return payload.env


def test_a_build_without_variables_gets_the_build_context_alone() -> None:
    env = payload_env({})
    assert env == CONTEXT and list(env) == list(CONTEXT)


def test_variables_come_first_and_the_build_context_wins_over_a_variable_of_its_name() -> None:
    env = payload_env({"DEPLOY_ENV": "test", "SHUNTER_BUILD_ID": "mine"})
    assert env == {"DEPLOY_ENV": "test", **CONTEXT}
    assert list(env) == ["DEPLOY_ENV", "SHUNTER_BUILD_ID", "SHUNTER_PIPELINE_ID", "SHUNTER_BUILD_NUM",
                         "SHUNTER_EXECUTE_COUNT"]  # fmt: skip
