"""Variables and secrets are data, never code (docs/design.md §12), with real shells.

The four payloads of issue 14 (``$(…)``, a quote that closes the script's
own, backticks, a quote and a newline) are submitted as a variable and
echoed bare, in double quotes and in single quotes: each prints literally
and creates no file. Secrets from the configuration (value, ``env``,
``file``) reach ``env:``, ``with:`` and ``run:`` and never a log, an event,
a build's JSON or a reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

import runtime
from actors.execution.actions import ActionFailed, StepContext
from actors.execution.script import render_script
from runtime.spec_loader import load_pipeline

from .conftest import waiting_events

CONFIG: dict[str, Any] = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}


def payloads(tmp: Path) -> list[str]:
    return [
        f"$(id > {tmp}/pwned1)",
        f'"; touch {tmp}/pwned2; echo "',
        f"`touch {tmp}/pwned3`",
        f'a"\ntouch {tmp}/pwned4',
        f"'; touch {tmp}/pwned5; echo '",
        "  two  spaces, a * glob and $HOME  ",
    ]


PIPELINE = """\
name: echo
variables: {X: ""}
steps:
  - id: bare
    run: echo ${{ variables.X }}
  - id: double
    run: echo "${{ variables.X }}"
  - id: single
    run: echo '${{ variables.X }}'
  - id: prefixed
    run: echo "value is ${{ variables.X }}"
  - id: env
    run: printf '%s\\n' "$X"
  - id: heredoc
    run: |
      cat <<EOF
      ${{ variables.X }}
      EOF
"""


def step_logs(text: str) -> dict[str, str]:
    """A build's log split by step: the lines under each ``=== job/step ...`` header."""
    logs: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("=== "):
            current = line.split()[3]  # "=== job / step attempt N (STATUS) ==="
            logs[current] = ""
        elif current is not None:
            logs[current] += line + "\n"
    return logs


@pytest.mark.trio
async def test_the_injection_payloads_print_literally_and_run_nothing(tmp_path: Path) -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        await rt.register_pipeline(PIPELINE)
        for value in payloads(tmp_path):
            build = await rt.submit("echo", {"X": value})
            done = await rt.wait(build.id, timeout=60)
            logs = step_logs(await rt.logs(build.id))
            assert done.status == "SUCCEED", (value, logs, done.stages)
            for step in ("bare", "double", "single", "env", "heredoc"):
                assert logs[step] == value + "\n", (step, value, logs[step])
            assert logs["prefixed"] == f"value is {value}\n"
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_render_script_writes_references_for_their_quoting_context() -> None:
    context = {"variables": {"X": "v"}, "ci": {"build_id": "p.1"}}
    cases = {
        "echo ${{ variables.X }}": 'echo "${SHUNTER_VAR_X}"',
        'echo "a ${{ variables.X }}"': 'echo "a ${SHUNTER_VAR_X}"',
        "echo 'a ${{ variables.X }}'": "echo 'a '\"${SHUNTER_VAR_X}\"''",
        "# it's\necho ${{ variables.X }}": '# it\'s\necho "${SHUNTER_VAR_X}"',
        'echo "$(echo ${{ variables.X }})"': 'echo "$(echo "${SHUNTER_VAR_X}")"',
        "echo ${{ ci.build_id }}": "echo p.1",
    }
    for script, expected in cases.items():
        rendered, env = render_script(script, context)
        assert rendered == expected, (script, rendered)
        assert env == ({} if "variables" not in script else {"SHUNTER_VAR_X": "v"})


@pytest.mark.trio
async def test_a_reference_in_a_quoted_heredoc_is_refused_at_registration() -> None:
    async with runtime.open_runtime(CONFIG) as rt:
        with pytest.raises(runtime.SpecError) as refused:
            await rt.register_pipeline("name: q\nvariables: {X: 1}\nsteps:\n  - run: |\n      cat <<'EOF'\n"
                                       "      ${{ variables.X }}\n      EOF\n")  # fmt: skip
        assert "quoted here-document" in str(refused.value)


@pytest.mark.parametrize("name", ["LD_PRELOAD", "BASH_ENV", "PATH", "SHUNTER_VAR_Y", "PROMPT_COMMAND"])
def test_variable_names_that_run_code_are_reserved(name: str) -> None:
    with pytest.raises(runtime.SpecError) as refused:
        load_pipeline(f"name: r\nvariables: {{{name}: x}}\nsteps: [{{uses: noop@1}}]\n")
    assert refused.value.errors[0]["path"] == f"$.variables.{name}"


# -- secrets ------------------------------------------------------------------------------------------

SECRET = "s3cr3t-Value-42"
FILE_SECRET = "-----BEGIN KEY-----\nline-two-of-the-key\n-----END KEY-----"
SECRETS_PIPELINE = """\
name: secretive
env: {}
jobs:
  use:
    env: {JOB_TOKEN: "${{ secrets.TOKEN }}"}
    steps:
      - id: shell
        run: |
          echo "token=${{ secrets.TOKEN }}"
          echo ${{ secrets.TOKEN }}
          echo "job env: $JOB_TOKEN, step env: $STEP_TOKEN"
          printf '%s\\n' "$(cat <<EOF
          ${{ secrets.KEY }}
          EOF
          )"
          printf 'split: %s' "${JOB_TOKEN:0:5}"; printf '%s\\n' "${JOB_TOKEN:5}"
          echo "out=${{ secrets.TOKEN }}" >> "$SHUNTER_OUTPUT"
        env: {STEP_TOKEN: "prefix-${{ secrets.FROM_ENV }}"}
      - id: action
        uses: reveal
        with: {value: "${{ secrets.TOKEN }}", nested: ["${{ secrets.FROM_ENV }}"]}
"""


@pytest.mark.trio
async def test_secrets_reach_steps_and_are_masked_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHUNTER_TEST_SECRET", "from-the-environment")
    key = tmp_path / "key"
    key.write_text(FILE_SECRET + "\n")
    config = {**CONFIG, "secrets": {"TOKEN": SECRET, "FROM_ENV": {"env": "SHUNTER_TEST_SECRET"},
                                    "KEY": {"file": str(key)}}}  # fmt: skip
    seen: dict[str, Any] = {}

    async def reveal(step: StepContext) -> None:
        seen.update(step.with_)
        step.log(f"the action got {step.with_['value']}")
        raise ActionFailed(f"failing with {step.with_['value']} in the message")

    async with runtime.open_runtime(config) as rt:
        rt.register_action("reveal", reveal)
        await rt.register_pipeline(SECRETS_PIPELINE.replace("env: {}\n", ""))
        async with rt.subscribe(after=0, buffer=10_000) as events:
            build = await rt.submit("secretive")
            done = await rt.wait(build.id, timeout=60)
            published = waiting_events(events)
        log = await rt.logs(build.id)
        shown = msgspec.json.encode([done, published]).decode() + log
    # The values did reach the steps...
    assert seen == {"value": SECRET, "nested": ["from-the-environment"]}
    assert "token=***" in log and "job env: ***, step env: prefix-***" in log
    assert "***\n" in log and "line-two" not in log  # each line of a multi-line secret is masked
    # ...and none of them is shown anywhere.
    for value in (SECRET, "from-the-environment", "line-two-of-the-key", "-----BEGIN KEY-----"):
        assert value not in shown, value
    step = done.stages[0].jobs[0].steps[1]
    assert step.status == "FAILED" and step.reason is not None and "***" in step.reason
    assert done.stages[0].jobs[0].steps[0].attempts[-1].outputs == {"out": "***"}


@pytest.mark.trio
@pytest.mark.parametrize("durable", [False, True], ids=["memory", "store"])
async def test_a_secret_submitted_as_a_variable_is_masked_in_what_the_build_shows(
    tmp_path: Path, durable: bool
) -> None:
    """Whoever knows a secret may pass it as a variable; a reader of the
    build (read token) must still not see it: variables, the group rendered
    from them, and the reason are masked; the step gets the real value. With
    a store, the same holds for the build read back after a restart."""
    config: dict[str, Any] = {**CONFIG, "secrets": {"TOKEN": SECRET}}
    if durable:
        config["state-dir"] = str(tmp_path / "state")
    pipeline = """\
name: leaky
variables: {X: plain}
concurrency: {group: "deploy-${{ variables.X }}"}
jobs:
  j: {steps: [{run: 'test "$X" = "%s"'}]}
""" % SECRET
    async with runtime.open_runtime(config) as rt:
        await rt.register_pipeline(pipeline)
        build = await rt.submit("leaky", variables={"X": SECRET})
        done = await rt.wait(build.id, timeout=60)
        listed = await rt.builds(pipeline="leaky")
        groups = await rt.groups()
        events = await rt.events(after=0)
    assert done.status == "SUCCEED", "the step saw the real value"
    assert done.variables == {"X": "***"} and done.group == "deploy-***"
    assert [group.name for group in groups] == ["deploy-***"], "the group is known by its masked name"
    for shown in (build, done, *listed, *groups, *events):
        assert SECRET not in msgspec.json.encode(shown).decode()
    if durable:
        async with runtime.open_runtime(config) as rt:
            again = await rt.build(done.id)
        assert again.variables == {"X": "***"} and SECRET not in msgspec.json.encode(again).decode()


@pytest.mark.parametrize("secrets, problem", [
    ({"A": {"env": "SHUNTER_NOT_SET_ANYWHERE"}}, "not set"),
    ({"A": {"file": "/nonexistent/secret"}}, "cannot read"),
    ({"A": "ab"}, "at least"),
    ({"A": {"env": "X", "file": "Y"}}, "exactly one"),
    ({"bad-name": "value"}, "invalid secret name"),
])  # fmt: skip
def test_bad_secrets_are_config_errors(secrets: dict[str, Any], problem: str) -> None:
    with pytest.raises(runtime.SpecError) as refused:
        runtime.load_config({"secrets": secrets})
    assert problem in str(refused.value)


@pytest.mark.trio
async def test_secrets_are_refused_where_they_would_be_shown_and_unknown_ones_named() -> None:
    async with runtime.open_runtime({**CONFIG, "secrets": {"TOKEN": SECRET}}) as rt:
        for text, where in [
            ("name: g\nconcurrency: {group: '${{ secrets.TOKEN }}'}\nsteps: [{uses: noop@1}]\n", "$.concurrency.group"),
            ("name: u\nsteps: [{run: 'echo ${{ secrets.TOKN }}'}]\n", "$.steps[0].run"),
        ]:  # fmt: skip
            with pytest.raises(runtime.SpecError) as refused:
                await rt.register_pipeline(text)
            assert refused.value.errors[0]["path"] == where
            assert SECRET not in str(refused.value)
        assert "did you mean 'TOKEN'" in str(refused.value)
