"""``shunter agent --actions MODULE[:ATTR]``: what a machine offers besides the built-ins (docs/design.md §11)."""

from __future__ import annotations

import pytest

from runtime.agent.plugins import load_actions

MODULE = "tests.runtime.remote.plugin_actions"


def test_a_mapping_and_a_function_add_their_actions_to_the_builtins() -> None:
    registry = load_actions([MODULE, f"{MODULE}:register"])
    assert registry.names() == {"noop", "echo", "fail", "sleep", "deploy", "notify"}
    assert registry.builtin("echo@1") and not registry.builtin("deploy")


@pytest.mark.parametrize("spec, problem", [
    ("", "expected MODULE or MODULE:ATTR"),
    ("no_such_module_anywhere", "cannot import 'no_such_module_anywhere': ModuleNotFoundError"),
    (f"{MODULE}:missing", f"module '{MODULE}' has no 'missing'"),
    (f"{MODULE}:NOT_ACTIONS", "expected a mapping of names to actions, or a function taking the registry, got int"),
    ("tests.runtime.remote.test_plugins:BAD", "invalid action name 'bad name'"),
])  # fmt: skip
def test_a_bad_module_is_one_clear_line(spec: str, problem: str) -> None:
    with pytest.raises(ValueError) as error:
        load_actions([spec])
    assert str(error.value).startswith(f"--actions {spec}: ") and problem in str(error.value), str(error.value)


async def _action(step: object) -> None:
    pass


BAD = {"bad name": _action}
