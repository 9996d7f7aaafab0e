"""``shunter validate`` checks what registering checks, through one function.

Every bad pipeline here is refused with the same errors, by path, by
``shunter validate``, by ``rt.register_pipeline`` and by ``PUT
/v1/pipelines/{id}`` (400 ``invalid_spec``), and registers nothing: unknown
actions, and ``with:`` inputs the action does not declare or values of the
wrong type or out of bounds. The warnings for a ``runs-on`` no node matches
come from the same function (``--config`` for ``validate``).
"""

from __future__ import annotations

from pathlib import Path
import httpx
import pytest

import runtime
from actors.execution.actions import ActionInput, ActionRegistry, StepContext
from actors.model.errors import SpecError
from runtime.cli import main

STEP = "$.jobs.j.steps[0]"
BAD = {
    "unknown action": ("{uses: actions/checkout@v4}", [(f"{STEP}.uses", "unknown action 'actions/checkout'")]),
    "echo typo": ("{uses: echo@1, with: {txt: typo}}",
                  [(f"{STEP}.with.txt", "unknown input 'txt' of action 'echo' (did you mean 'text'?); it takes: text")]),
    "sleep not a number": ("{uses: sleep@1, with: {seconds: abc}}", [(f"{STEP}.with.seconds", "must be a number, got 'abc'")]),
    "sleep negative": ("{uses: sleep@1, with: {seconds: -1}}", [(f"{STEP}.with.seconds", "must be >= 0")]),
    "sleep infinite": ("{uses: sleep@1, with: {seconds: .inf}}", [(f"{STEP}.with.seconds", "must be a finite number")]),
    "sleep list": ("{uses: sleep@1, with: {seconds: [1]}}", [(f"{STEP}.with.seconds", "must be a number, got list")]),
    "noop input": ("{uses: noop, with: {x: 1}}", [(f"{STEP}.with.x", "unknown input 'x' of action 'noop'; it takes no inputs")]),
    "echo mapping": ("{uses: echo@1, with: {text: {a: 1}}}",
                     [(f"{STEP}.with.text", "must be a string, number or boolean, got mapping")]),
    "fail two": ("{uses: fail@1, with: {mesage: x, reason: y}}",
                 [(f"{STEP}.with.mesage", "unknown input 'mesage' of action 'fail' (did you mean 'message'?); it takes: message"),
                  (f"{STEP}.with.reason", "unknown input 'reason' of action 'fail'; it takes: message")]),
}  # fmt: skip
GOOD = [
    "{uses: sleep@1, with: {seconds: 0}}",
    "{uses: sleep@1, with: {seconds: '1.5'}}",
    "{uses: sleep@1, with: {seconds: '${{ variables.S }}'}}",  # known when the build runs
    "{uses: sleep}",
    "{uses: echo@1, with: {text: 42}}",
    "{uses: echo@1, with: {text: true}}",
    "{uses: fail@1, with: {message: '${{ variables.S }}'}}",
    "{uses: noop@1}",
]
CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1, "labels": ["linux"]}]}]}


def _pipeline(step: str) -> str:
    return f"name: p\nvariables: {{S: '1'}}\njobs:\n  j:\n    steps: [{step}]\n"


def _validate(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, list[str]]:
    path = tmp_path / "act.yml"
    path.write_text(text)
    code = main(["validate", str(path), *extra])
    return code, capsys.readouterr().out.splitlines()


@pytest.mark.parametrize("name", list(BAD))
def test_validate_refuses_what_registering_refuses(name: str, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    step, expected = BAD[name]
    code, lines = _validate(tmp_path, _pipeline(step), capsys)
    assert code == 1
    assert lines == [f"{tmp_path / 'act.yml'}: {len(expected)} error(s)"] + [f"  {p}: {m}" for p, m in expected]


@pytest.mark.parametrize("step", GOOD)
def test_validate_accepts_good_inputs(step: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = _validate(tmp_path, _pipeline(step), capsys)
    assert (code, lines) == (0, [f"{tmp_path / 'act.yml'}: ok ('p': 1 stage(s), 1 job(s))"])


@pytest.mark.trio
async def test_register_and_put_refuse_the_same_and_change_nothing() -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.asgi_app), base_url="http://localhost") as http:
            for name, (step, expected) in BAD.items():
                errors = [{"path": path, "message": message} for path, message in expected]
                with pytest.raises(SpecError) as refused:
                    await rt.register_pipeline(_pipeline(step), id="p")
                assert refused.value.errors == errors, name
                response = await http.put("/v1/pipelines/p", content=_pipeline(step),
                                          headers={"content-type": "application/yaml"})  # fmt: skip
                assert response.status_code == 400, (name, response.text)
                assert response.json()["error"] == "invalid_spec" and response.json()["details"] == errors, name
            assert await rt.pipelines() == []
            for step in GOOD:
                assert (await rt.register_pipeline(_pipeline(step), id="p")).warnings == []


@pytest.mark.trio
async def test_put_returns_the_warnings_of_a_runs_on_no_node_matches() -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rt.asgi_app), base_url="http://localhost") as http:
            text = "name: p\njobs:\n  j: {runs-on: windows-pool, steps: [{uses: noop}]}\n"
            response = await http.put("/v1/pipelines/p", content=text, headers={"content-type": "application/yaml"})
            assert response.status_code == 201, response.text
            assert response.json()["warnings"] == [{
                "path": "$.jobs.j.runs-on",
                "message": "no node in pool 'windows-pool' matches (the pool has no nodes); pools with nodes: default",
            }]  # fmt: skip
            assert (await http.get("/v1/pipelines/p")).json()["warnings"] == []


def test_validate_with_a_config_warns_about_runs_on_no_node_matches(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    config = tmp_path / "shunter.yml"
    config.write_text("pools:\n  - {name: default, nodes: [{name: n1, labels: [linux]}]}\n"
                      "  - {name: windows, nodes: [{name: w1}]}\n")  # fmt: skip
    text = ("name: p\njobs:\n  a: {runs-on: windows-pool, steps: [{uses: noop}]}\n"
            "  b: {runs-on: {labels: [gpu]}, steps: [{uses: noop}]}\n"
            "  c: {runs-on: {lock-resource-with: b}, depend-on: [b], steps: [{uses: noop}]}\n"
            "  d: {runs-on: {labels: [linux]}, steps: [{uses: noop}]}\n")  # fmt: skip
    code, lines = _validate(tmp_path, text, capsys, "--config", str(config))
    assert code == 0
    assert lines == [
        f"{tmp_path / 'act.yml'}: ok ('p': 1 stage(s), 4 job(s)), 2 warning(s)",
        "  warning: $.jobs.a.runs-on: no node in pool 'windows-pool' matches (the pool has no nodes); "
        "pools with nodes: default, windows (did you mean 'windows'?)",
        "  warning: $.jobs.b.runs-on: no node in pool 'default' has labels [gpu]; labels of its nodes: linux",
    ]
    # Without --config there is nothing to check the pools against.
    assert _validate(tmp_path, text, capsys) == (0, [f"{tmp_path / 'act.yml'}: ok ('p': 1 stage(s), 4 job(s))"])
    (tmp_path / "bad.yml").write_text("pools: 3\n")
    assert main(["validate", str(tmp_path / "act.yml"), "--config", str(tmp_path / "bad.yml")]) == 1


async def _deploy(step: StepContext) -> None:
    step.log(f"deploying to {step.with_['env']}")


@pytest.mark.trio
async def test_a_registered_action_may_declare_its_inputs() -> None:
    inputs = {"env": ActionInput(type="text", required=True),
              "replicas": ActionInput(type="integer", minimum=1, maximum=10)}  # fmt: skip
    async with runtime.open_runtime(CONFIG) as rt:
        rt.register_action("deploy", _deploy, inputs)
        rt.register_action("anything", _deploy)  # no declaration: any with: is accepted
        with pytest.raises(SpecError) as refused:
            await rt.register_pipeline(_pipeline("{uses: deploy@1, with: {replicas: 2.5}}"), id="p")
        assert refused.value.errors == [
            {"path": f"{STEP}.with.replicas", "message": "must be an integer, got number"},
            {"path": f"{STEP}.with", "message": "input 'env' of action 'deploy' is required"},
        ]
        with pytest.raises(SpecError, match="must be <= 10"):
            await rt.register_pipeline(_pipeline("{uses: deploy@1, with: {env: prod, replicas: 11}}"), id="p")
        await rt.register_pipeline(_pipeline("{uses: deploy@1, with: {env: prod, replicas: 3}}"), id="p")
        await rt.register_pipeline(_pipeline("{uses: anything@1, with: {whatever: [1, {x: 2}]}}"), id="q")
        build = await rt.wait((await rt.submit("p")).id, timeout=30)
        assert build.status == "SUCCEED"
        assert "deploying to prod" in await rt.logs(build.id)


def test_inputs_must_be_declared_with_action_input() -> None:
    registry = ActionRegistry()
    with pytest.raises(TypeError, match="must map input names to ActionInput"):
        registry.register("x", _deploy, {"env": "text"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="input type must be one of"):
        ActionInput(type="float")
    registry.register("x", _deploy, {"env": ActionInput()})
    assert registry.declared_inputs() == {"x": {"env": ActionInput()}}
    assert set(ActionRegistry.with_builtins().declared_inputs()) == {"noop", "sleep", "fail", "echo"}
