"""Actions: StepContext, the registry, and the built-ins (async and inline forms)."""

from __future__ import annotations

import functools
import pathlib

import anyio
import pytest
import trio

from actors.execution.actions import (
    SYNC_BUILTINS,
    ActionFailed,
    ActionRegistry,
    StepContext,
    UnknownAction,
)


def context(with_: dict[str, object] | None = None) -> tuple[StepContext, list[str]]:
    lines: list[str] = []
    step = StepContext(
        with_=with_,
        env={"A": "1"},
        workspace="/tmp/ws",
        log=lines.append,
        step_id="make",
        job_id="compile",
        build_id="b-1",
    )
    return step, lines


async def deploy(step: StepContext) -> None:
    step.outputs["url"] = "https://example.test"


# --- StepContext ---------------------------------------------------------------


def test_step_context_makes_a_lazy_env_once_on_first_use() -> None:
    calls: list[int] = []

    def make_env() -> dict[str, str]:
        calls.append(1)
        return {"SHUNTER_STEP_ID": "make"}

    unused = StepContext(env=make_env, workspace="/tmp/ws", log=print)
    SYNC_BUILTINS["noop"](unused)
    assert calls == []  # noop never reads it: never made
    used = StepContext(env=make_env, workspace="/tmp/ws", log=print)
    assert used.env["SHUNTER_STEP_ID"] == "make"
    assert used.env is used.env
    assert calls == [1]


def test_step_context_fields_and_defaults() -> None:
    step, _ = context()
    assert step.workspace == pathlib.Path("/tmp/ws")
    assert (step.step_id, step.job_id, step.build_id) == ("make", "compile", "b-1")
    assert step.with_ == {} and step.env == {"A": "1"}
    assert step.outputs == {} and step.exported_env == {}
    other, _ = context()
    assert other.outputs is not step.outputs  # no shared default
    with pytest.raises(AttributeError):
        step.typo = 1  # type: ignore[attr-defined]  # __slots__


def test_log_splits_multi_line_text() -> None:
    step, lines = context()
    step.log("one")
    step.log("two\nthree\n")
    step.log("")
    step.log("\n")
    assert lines == ["one", "two", "three", "", ""]


# --- registry ---------------------------------------------------------------------


def test_register_and_resolve_with_or_without_version() -> None:
    registry = ActionRegistry()
    registry.register("deploy", deploy)
    assert registry.resolve("deploy") is deploy
    assert registry.resolve("deploy@1") is deploy
    assert registry.resolve(" deploy@v2.3 ") is deploy
    assert "deploy@1" in registry and "deploy" in registry
    assert "other" not in registry and 3 not in registry
    assert registry.names() == frozenset({"deploy"})
    assert len(registry) == 1


@pytest.mark.parametrize(
    ("name", "error", "message"),
    [
        ("", ValueError, "must not be empty"),
        ("de ploy", ValueError, "invalid action name 'de ploy'"),
        ("deploy@1", ValueError, "a version goes in"),
        (42, TypeError, "must be a string"),
    ],
)
def test_register_refuses_bad_names(name: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        ActionRegistry().register(name, deploy)  # type: ignore[arg-type]


def test_register_accepts_dots_dashes_and_underscores() -> None:
    registry = ActionRegistry()
    registry.register("my-org.deploy_v2", deploy)
    assert registry.resolve("my-org.deploy_v2@3") is deploy


@pytest.mark.parametrize("fn", [lambda step: None, print, "deploy", None])
def test_register_refuses_what_is_not_an_async_function(fn: object) -> None:
    with pytest.raises(TypeError, match="must be an async function"):
        ActionRegistry().register("deploy", fn)  # type: ignore[arg-type]


def test_register_accepts_async_callables() -> None:
    class Deployer:
        async def __call__(self, step: StepContext) -> None:
            pass

    async def with_target(step: StepContext, target: str) -> None:
        pass

    registry = ActionRegistry()
    registry.register("obj", Deployer())
    registry.register("partial", functools.partial(with_target, target="prod"))
    assert registry.names() == {"obj", "partial"}


def test_unknown_action_suggests_the_nearest_name() -> None:
    registry = ActionRegistry.with_builtins()
    with pytest.raises(KeyError) as caught:
        registry.resolve("slep@1")
    assert isinstance(caught.value, UnknownAction)
    assert str(caught.value) == (
        "unknown action 'slep@1': did you mean 'sleep'? (registered: echo, fail, noop, sleep)"
    )
    with pytest.raises(UnknownAction, match="did you mean 'echo'"):
        registry.resolve("ECHO")
    with pytest.raises(UnknownAction, match="no actions are registered"):
        ActionRegistry().resolve("deploy")


def test_builtins_and_reregistration() -> None:
    registry = ActionRegistry.with_builtins()
    assert registry.names() == {"noop", "sleep", "fail", "echo"}
    assert registry.resolve_sync("echo@1") is SYNC_BUILTINS["echo"]
    assert registry.resolve_sync("sleep") is None  # it waits
    with pytest.raises(UnknownAction):
        registry.resolve_sync("nope")

    registry.register("echo", deploy)  # replaces the built-in
    assert registry.resolve("echo") is deploy
    assert registry.resolve_sync("echo") is None  # must not run the built-in inline
    assert ActionRegistry.with_builtins().resolve_sync("echo") is SYNC_BUILTINS["echo"]


# --- built-ins ----------------------------------------------------------------------


@pytest.mark.anyio
async def test_noop_succeeds_quietly() -> None:
    step, lines = context()
    await ActionRegistry.with_builtins().resolve("noop@1")(step)
    assert lines == [] and step.outputs == {} and step.exported_env == {}


@pytest.mark.anyio
async def test_echo_logs_text() -> None:
    registry = ActionRegistry.with_builtins()
    step, lines = context({"text": "hello\nworld"})
    await registry.resolve("echo")(step)
    step2, lines2 = context({"text": 42})
    await registry.resolve("echo")(step2)
    assert (lines, lines2) == (["hello", "world"], ["42"])


@pytest.mark.anyio
async def test_fail_raises_action_failed_and_logs_why() -> None:
    registry = ActionRegistry.with_builtins()
    step, lines = context({"message": "disk full"})
    with pytest.raises(ActionFailed, match="^disk full$"):
        await registry.resolve("fail")(step)
    assert lines == ["disk full"]
    step, lines = context()
    with pytest.raises(ActionFailed, match="^failed by the fail action$"):
        await registry.resolve("fail")(step)
    assert lines == ["failed by the fail action"]


@pytest.mark.anyio
async def test_unknown_inputs_are_warned_about() -> None:
    step, lines = context({"txt": "typo"})
    await ActionRegistry.with_builtins().resolve("echo")(step)
    assert lines == [
        "[shunter] warning: echo: ignoring unknown input(s) txt (it takes: text)",
        "",
    ]


@pytest.mark.trio
@pytest.mark.parametrize(("with_", "seconds"), [({"seconds": 2.5}, 2.5), ({}, 1), ({"seconds": "3"}, 3)])
async def test_sleep_waits_on_the_runtime_clock(
    autojump_clock: trio.testing.MockClock, with_: dict[str, object], seconds: float
) -> None:
    start = trio.current_time()
    await ActionRegistry.with_builtins().resolve("sleep@1")(context(with_)[0])
    assert trio.current_time() - start == seconds


@pytest.mark.anyio
@pytest.mark.parametrize("bad", ["soon", -1, True, [1], float("nan"), "inf"])
async def test_sleep_refuses_bad_seconds(bad: object) -> None:
    with pytest.raises(ActionFailed, match="sleep: 'seconds' must be a non-negative number, got"):
        await ActionRegistry.with_builtins().resolve("sleep")(context({"seconds": bad})[0])


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(SYNC_BUILTINS))
@pytest.mark.parametrize("with_", [{}, {"text": "hi\nthere"}, {"message": "boom"}])
async def test_sync_builtins_behave_like_the_async_ones(name: str, with_: dict[str, str]) -> None:
    """Running a step inline must be indistinguishable from awaiting it."""

    sync_step, sync_lines = context(dict(with_))
    async_step, async_lines = context(dict(with_))
    sync_error = async_error = None
    try:
        SYNC_BUILTINS[name](sync_step)
    except ActionFailed as exc:
        sync_error = str(exc)
    try:
        with anyio.fail_after(1):
            await ActionRegistry.with_builtins().resolve(name)(async_step)
    except ActionFailed as exc:
        async_error = str(exc)
    assert sync_error == async_error
    assert sync_lines == async_lines
    assert (sync_step.outputs, sync_step.exported_env) == (async_step.outputs, async_step.exported_env)
