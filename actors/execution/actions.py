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
(``message``) and ``echo`` (``text``). ``noop``, ``echo`` and ``fail`` never
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

__all__ = [
    "SYNC_BUILTINS",
    "Action",
    "ActionFailed",
    "ActionRegistry",
    "StepContext",
    "SyncAction",
    "UnknownAction",
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

    def __repr__(self) -> str:
        return (
            f"StepContext(build_id={self.build_id!r}, job_id={self.job_id!r}, "
            f"step_id={self.step_id!r}, with_={dict(self.with_)!r})"
        )


Action = Callable[[StepContext], Awaitable[None]]
SyncAction = Callable[[StepContext], None]

_ACTION_NAME = re.compile(r"[A-Za-z0-9_.-]+\Z")


class ActionRegistry:
    """Named actions that ``uses:`` steps resolve to.

    Registering a name again replaces the earlier action (built-ins included).
    """

    __slots__ = ("_actions", "_sync")

    def __init__(self) -> None:
        self._actions: dict[str, Action] = {}
        # Built-ins that may run inline; dropped when their name is re-registered.
        self._sync: dict[str, SyncAction] = {}

    @classmethod
    def with_builtins(cls) -> ActionRegistry:
        """A new registry holding ``noop``, ``sleep``, ``fail`` and ``echo``."""
        registry = cls()
        registry._actions.update(_ASYNC_BUILTINS)
        registry._sync.update(SYNC_BUILTINS)
        return registry

    def register(self, name: str, fn: Action) -> None:
        """Register ``fn`` (``async def fn(step) -> None``) under ``name``.

        Raises TypeError when ``name`` is not a string or ``fn`` is not an
        async function, ValueError when ``name`` is empty or holds other
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
        self._actions[name] = fn
        self._sync.pop(name, None)

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


def _action_name(uses: str) -> str:
    """``"deploy@1"`` → ``"deploy"``; the version is not checked."""
    return uses.strip().partition("@")[0]


def _is_async_callable(fn: object) -> bool:
    return callable(fn) and (
        inspect.iscoroutinefunction(fn)
        or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
    )


# --- built-ins -------------------------------------------------------------------


def _warn_unknown_inputs(step: StepContext, action: str, accepted: frozenset[str]) -> None:
    """Log a warning for ``with`` keys the action doesn't read (likely typos)."""
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
    _warn_unknown_inputs(step, "noop", frozenset())


def echo(step: StepContext) -> None:
    """``echo``: logs ``with.text`` (nothing when absent)."""
    _warn_unknown_inputs(step, "echo", frozenset({"text"}))
    text = step.with_.get("text")
    step.log("" if text is None else str(text))


def fail(step: StepContext) -> None:
    """``fail``: fails the step with ``with.message``."""
    _warn_unknown_inputs(step, "fail", frozenset({"message"}))
    message = step.with_.get("message")
    raise ActionFailed(str(message) if message not in (None, "") else "failed by the fail action")


async def sleep(step: StepContext) -> None:
    """``sleep``: waits ``with.seconds`` (default 1) on the runtime's clock."""
    _warn_unknown_inputs(step, "sleep", frozenset({"seconds"}))
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
