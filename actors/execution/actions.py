"""Actions: what a ``uses:`` step runs.

An action is ``async def action(step: StepContext) -> None``. Returning
succeeds the step; raising fails it, with the exception's message as the
step's reason (raise :class:`ActionFailed` for a plain failure). An action
reads its inputs from ``step.with_``, may write ``step.outputs`` and
``step.exported_env`` (env for the later steps of the job) and logs with
``step.log(text)``.

:class:`ActionRegistry` maps names to actions; ``uses: deploy@1`` and
``uses: deploy`` both name the action ``deploy`` (the version is accepted and
ignored). The built-ins are ``noop``, ``sleep`` (``seconds``), ``fail``
(``message``) and ``echo`` (``text``).

An action may declare its inputs (:class:`ActionInput`: type, bounds,
required); the pipeline loader then checks every ``with:`` against them when
a pipeline is validated or registered (:func:`check_inputs`), so a typo or a
bad value is refused by path before any build runs. The built-ins declare
theirs; an action registered without a declaration accepts any ``with:``.
``noop``, ``echo`` and ``fail`` never
wait, so they also exist as plain functions in :data:`SYNC_BUILTINS`: a
runtime can run those steps inline, without a task switch
(:meth:`ActionRegistry.resolve_sync` says when that is allowed).
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
import pathlib
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio
import msgspec

__all__ = [
    "BUILTIN_INPUTS",
    "SYNC_BUILTINS",
    "Action",
    "ActionFailed",
    "ActionInput",
    "ActionInputs",
    "ActionRegistry",
    "StepContext",
    "SyncAction",
    "UnknownAction",
    "check_inputs",
    "action_name",
]


class ActionFailed(Exception):
    """Raised by an action to fail its step; the message is the step's reason."""


class UnknownAction(KeyError):
    """``uses:`` names no registered action. The message suggests the nearest name."""

    def __str__(self) -> str:
        # KeyError would show the message in quotes.
        return str(self.args[0]) if self.args else ""


class StepContext:
    """What an action receives: its inputs, environment, workspace, and where
    to put its outputs, exported env and log lines."""

    __slots__ = (
        "_env",
        "_log",
        "build_id",
        "exported_env",
        "job_id",
        "outputs",
        "step_id",
        "with_",
        "workspace",
    )

    def __init__(
        self,
        *,
        workspace: os.PathLike[str] | str,
        log: Callable[[str], None],
        with_: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
        step_id: str = "",
        job_id: str = "",
        build_id: str = "",
        outputs: dict[str, str] | None = None,
        exported_env: dict[str, str] | None = None,
    ) -> None:
        """``log`` receives one line at a time, without its newline (the same
        contract as ``on_output`` of :func:`actors.execution.shell.run_shell`). ``env``
        may be a function that makes it: it is called on first use, since most
        built-ins never read it and it is a dozen entries to build per step."""
        self.with_: Mapping[str, Any] = with_ if with_ is not None else {}
        self._env: Mapping[str, str] | Callable[[], Mapping[str, str]] = env if env is not None else {}
        self.workspace = workspace if isinstance(workspace, pathlib.Path) else pathlib.Path(workspace)
        self.outputs: dict[str, str] = outputs if outputs is not None else {}
        self.exported_env: dict[str, str] = exported_env if exported_env is not None else {}
        self.step_id = step_id
        self.job_id = job_id
        self.build_id = build_id
        self._log = log

    @property
    def env(self) -> Mapping[str, str]:
        """The step's environment: variables, job and step ``env``, exports of earlier steps, ``SHUNTER_*``."""
        env = self._env
        if callable(env):
            env = self._env = env()
        return env

    def log(self, text: str) -> None:
        """Append ``text`` to the step log, one log line per line of text.

        A single trailing newline doesn't add an empty line.
        """
        if "\n" not in text:
            self._log(text)
            return
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            self._log(line)

    @classmethod
    def _made(cls, workspace: pathlib.Path, log: Callable[[str], None], with_: Mapping[str, Any],
              env: Mapping[str, str] | Callable[[], Mapping[str, str]], step_id: str, job_id: str,
              build_id: str) -> StepContext:  # fmt: skip
        """The agent's constructor (arguments already in their final form): for every step, and the
        keyword ``__init__`` with its conversions cost 0.25 µs more per step (measured)."""
        context = cls.__new__(cls)
        context.with_ = with_
        context._env = env
        context.workspace = workspace
        context.outputs = {}
        context.exported_env = {}
        context.step_id = step_id
        context.job_id = job_id
        context.build_id = build_id
        context._log = log
        return context

    def __repr__(self) -> str:
        return (
            f"StepContext(build_id={self.build_id!r}, job_id={self.job_id!r}, "
            f"step_id={self.step_id!r}, with_={dict(self.with_)!r})"
        )


Action = Callable[[StepContext], Awaitable[None]]
SyncAction = Callable[[StepContext], None]

_INPUT_TYPES = ("text", "number", "integer", "boolean", "any")


class ActionInput(msgspec.Struct, frozen=True, kw_only=True):
    """One input an action reads from ``with:``.

    ``type`` is ``text`` (a string, number or boolean, used as text),
    ``number`` (finite; a numeric string too), ``integer``, ``boolean`` or
    ``any``; ``minimum``/``maximum`` bound numbers. A string holding a
    template (``${{ variables.X }}``) is only known at run time, so any type
    accepts it here and the action checks the rendered value.
    """

    type: str = "any"
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in _INPUT_TYPES:
            raise ValueError(f"input type must be one of {', '.join(_INPUT_TYPES)}, got {self.type!r}")

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not acceptable for this input, or None."""
        if value is None or self.type == "any" or (isinstance(value, str) and "${{" in value):
            return None
        if self.type == "text":
            ok = isinstance(value, (str, int, float))  # bool is an int
            return None if ok else f"must be a string, number or boolean, got {_type_name(value)}"
        if self.type == "boolean":
            return None if isinstance(value, bool) else f"must be true or false, got {_type_name(value)}"
        number = _number(value)
        if number is None or (self.type == "integer" and not float(number).is_integer()):
            kind = "an integer" if self.type == "integer" else "a number"
            got = repr(value) if isinstance(value, str) else _type_name(value)
            return f"must be {kind}, got {got}"
        if not math.isfinite(number):
            return "must be a finite number"
        if self.minimum is not None and number < self.minimum:
            return f"must be >= {self.minimum:g}"
        if self.maximum is not None and number > self.maximum:
            return f"must be <= {self.maximum:g}"
        return None


ActionInputs = Mapping[str, ActionInput]


def check_inputs(action: str, inputs: ActionInputs, with_: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """Every problem of a step's ``with:`` for ``action``: ``(input or None, message)``.

    Unknown inputs (with the nearest declared one suggested), missing
    required ones (reported on ``with`` itself, None) and bad values.
    """
    problems: list[tuple[str | None, str]] = []
    for key, value in with_.items():
        declared = inputs.get(key) if isinstance(key, str) else None
        if declared is None:
            close = difflib.get_close_matches(str(key), list(inputs), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            takes = f"it takes: {', '.join(inputs)}" if inputs else "it takes no inputs"
            problems.append((str(key), f"unknown input {key!r} of action {action!r}{hint}; {takes}"))
            continue
        problem = declared.problem(value)
        if problem is not None:
            problems.append((key, problem))
    for key, declared in inputs.items():
        if declared.required and with_.get(key) is None:
            problems.append((None, f"input {key!r} of action {action!r} is required"))
    return problems


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return {int: "integer", float: "number", str: "string"}.get(type(value), type(value).__name__)


_ACTION_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class ActionRegistry:
    """Named actions that ``uses:`` steps resolve to.

    Registering a name again replaces the earlier action (built-ins included).
    """

    __slots__ = ("_actions", "_inputs", "_sync", "changes")

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        # Registrations so far: what a caller derived from the registry (a job's placement labels) is
        # stale once this has moved.
        self.changes = 0
        self._inputs: dict[str, ActionInputs | None] = {}  # None: accepts any ``with:``
        # Built-ins that may run inline; dropped when their name is re-registered.
        self._sync: dict[str, SyncAction] = {}

    @classmethod
    def with_builtins(cls) -> ActionRegistry:
        """A new registry holding ``noop``, ``sleep``, ``fail`` and ``echo``."""
        registry = cls()
        registry._actions.update(_ASYNC_BUILTINS)
        registry._inputs.update(BUILTIN_INPUTS)
        registry._sync.update(SYNC_BUILTINS)
        return registry

    def register(self, name: str, fn: Action, inputs: ActionInputs | None = None) -> None:
        """Register ``fn`` (``async def fn(step) -> None``) under ``name``.

        ``inputs`` declares what ``with:`` may hold (input name →
        :class:`ActionInput`); pipelines registered afterwards are checked
        against it. None accepts anything.

        Raises TypeError when ``name`` is not a string, ``fn`` is not an
        async function or ``inputs`` is not a mapping of names to
        ``ActionInput``, ValueError when ``name`` is empty or holds other
        characters than letters, digits, ``_``, ``.`` and ``-``.
        """
        if not isinstance(name, str):
            raise TypeError(f"an action name must be a string, got {type(name).__name__}")
        if not name:
            raise ValueError("an action name must not be empty")
        if not _ACTION_NAME.match(name):
            hint = " (a version goes in `uses: name@version`, not in the name)" if "@" in name else ""
            raise ValueError(
                f"invalid action name {name!r}: use only letters, digits, '_', '.' and '-'{hint}"
            )
        if not _is_async_callable(fn):
            raise TypeError(
                f"action {name!r} must be an async function "
                f"(`async def action(step) -> None`), got {fn!r}"
            )
        if inputs is not None and not (isinstance(inputs, Mapping) and all(
                isinstance(key, str) and isinstance(value, ActionInput) for key, value in inputs.items())):
            raise TypeError(f"inputs of action {name!r} must map input names to ActionInput, got {inputs!r}")
        self._actions[name] = fn
        self._inputs[name] = dict(inputs) if inputs is not None else None
        self._sync.pop(name, None)
        self.changes += 1

    def resolve(self, uses: str) -> Action:
        """The action a ``uses:`` value names; ``name@version`` and ``name`` alike.

        Raises :class:`UnknownAction` (a KeyError) naming the nearest
        registered action when there is none of that name.
        """
        name = _action_name(uses)
        try:
            return self._actions[name]
        except KeyError:
            raise UnknownAction(self._unknown(uses, name)) from None

    def resolve_sync(self, uses: str) -> SyncAction | None:
        """The plain-function form of a built-in, for running its step inline.

        None when ``uses`` names an action that may wait (or one registered
        over a built-in): run :meth:`resolve`'s action then. Unknown names
        raise like :meth:`resolve`.
        """
        name = _action_name(uses)
        sync = self._sync.get(name)
        if sync is None and name not in self._actions:
            raise UnknownAction(self._unknown(uses, name))
        return sync

    def names(self) -> frozenset[str]:
        """Every registered action name."""
        return frozenset(self._actions)

    def builtin(self, uses: str) -> bool:
        """Whether ``uses`` names a built-in that no registration replaced: the same code on
        every node, remote ones included (docs/design.md §11). Unknown names are not built-in."""
        name = _action_name(uses)
        action = _ASYNC_BUILTINS.get(name)
        return action is not None and self._actions.get(name) is action

    def declared_inputs(self) -> dict[str, ActionInputs | None]:
        """Every registered action name → its declared inputs (None: accepts any ``with:``)."""
        return dict(self._inputs)

    def __contains__(self, uses: object) -> bool:
        """``"deploy" in registry`` and ``"deploy@1" in registry`` alike."""
        return isinstance(uses, str) and _action_name(uses) in self._actions

    def __len__(self) -> int:
        return len(self._actions)

    def __repr__(self) -> str:
        return f"ActionRegistry({sorted(self._actions)!r})"

    def _unknown(self, uses: str, name: str) -> str:
        message = f"unknown action {uses!r}"
        if not self._actions:
            return f"{message}: no actions are registered"
        by_lower = {known.lower(): known for known in self._actions}
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        if close:
            message += f": did you mean {by_lower[close[0]]!r}?"
        known = sorted(self._actions)
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20} more" if len(known) > 20 else "")
        return f"{message} (registered: {listed})"


def action_name(uses: str) -> str:
    """``"deploy@1"`` → ``"deploy"``: the registered name a ``uses:`` value names."""
    return _action_name(uses)


def _action_name(uses: str) -> str:
    """``"deploy@1"`` → ``"deploy"``; the version is not checked."""
    return uses.strip().partition("@")[0]


def _is_async_callable(fn: object) -> bool:
    return callable(fn) and (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    )


# --- built-ins -------------------------------------------------------------------


BUILTIN_INPUTS: dict[str, ActionInputs] = {
    "noop": {},
    "sleep": {"seconds": ActionInput(type="number", minimum=0, description="how long to wait (default 1)")},
    "fail": {"message": ActionInput(type="text", description="the step's reason")},
    "echo": {"text": ActionInput(type="text", description="what to log")},
}
"""What each built-in reads from ``with:``; the loader refuses anything else."""


def _warn_unknown_inputs(step: StepContext, action: str) -> None:
    """Log a warning for ``with`` keys the action doesn't read: a pipeline that
    went through the loader has none, but a spec built by hand may."""
    accepted = BUILTIN_INPUTS[action]
    if step.with_:
        unknown = sorted(str(key) for key in step.with_ if key not in accepted)
        if unknown:
            takes = ", ".join(sorted(accepted)) or "no inputs"
            step.log(
                f"[shunter] warning: {action}: ignoring unknown input(s) "
                f"{', '.join(unknown)} (it takes: {takes})"
            )


def noop(step: StepContext) -> None:
    """``noop``: succeeds without doing anything."""
    _warn_unknown_inputs(step, "noop")


def echo(step: StepContext) -> None:
    """``echo``: logs ``with.text`` (nothing when absent)."""
    _warn_unknown_inputs(step, "echo")
    text = step.with_.get("text")
    step.log("" if text is None else str(text))


def fail(step: StepContext) -> None:
    """``fail``: fails the step with ``with.message``."""
    _warn_unknown_inputs(step, "fail")
    raw = step.with_.get("message")
    message = str(raw) if raw not in (None, "") else "failed by the fail action"
    step.log(message)  # the log says why, as a failing command's output would
    raise ActionFailed(message)


async def sleep(step: StepContext) -> None:
    """``sleep``: waits ``with.seconds`` (default 1) on the runtime's clock."""
    _warn_unknown_inputs(step, "sleep")
    await anyio.sleep(_seconds(step.with_.get("seconds")))


def _seconds(raw: object) -> float:
    """``seconds`` as a number; templated values arrive as strings."""
    if raw is None:
        return 1.0
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        try:
            value = float(raw.strip())
        except ValueError:
            value = None
    if value is None or not math.isfinite(value) or value < 0:
        raise ActionFailed(f"sleep: 'seconds' must be a non-negative number, got {raw!r}")
    return value


def _as_async(fn: SyncAction) -> Action:
    """The registry form of a plain built-in: same behaviour, never waits."""

    @functools.wraps(fn)
    async def action(step: StepContext) -> None:
        fn(step)

    return action


SYNC_BUILTINS: dict[str, SyncAction] = {"noop": noop, "echo": echo, "fail": fail}
"""Built-ins that never wait, as plain functions for running inline."""

_ASYNC_BUILTINS: dict[str, Action] = {
    **{name: _as_async(fn) for name, fn in SYNC_BUILTINS.items()},
    "sleep": sleep,
}
