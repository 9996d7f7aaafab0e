"""Reading steps, and the pieces jobs and steps share (``env``, ``if``, templates).

``StepReader`` is the part of the pipeline walker (``spec_loader``) that
reads a job's steps: ids, ``run`` or ``uses``, the action's ``with:``
checked against the inputs it declares, ``continue-on-error``. Errors go
to its ``Checker`` by path, like the rest of the walk.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from actors.execution.actions import check_inputs
from actors.execution.script import script_problems
from actors.model import templates
from actors.model.spec import Step, normalize_condition
from actors.model.vocab import RunCondition, ContinueOnError, values
from runtime._validate import Checker, index_path, key_path, suggest

__all__ = ["StepReader", "ID", "ID_RULE", "NAME", "NAME_RULE", "VARIABLE"]

_STEP_KEYS = ("id", "name", "run", "uses", "with", "env", "if", "timeout-minutes", "retry-times",
              "continue-on-error")
ID = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")
ID_RULE = "use a letter or '_' then letters, digits, '_' or '-'"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
NAME_RULE = "use a letter or '_' then letters, digits or '_'"
VARIABLE = "variable name"
_USES = re.compile(r"([A-Za-z0-9_][A-Za-z0-9_./-]*)(?:@([A-Za-z0-9_.-]+))?\Z")
_MAX_WITH_VALUES = 100_000  # per step: YAML aliases can expand a small document


class StepReader:
    """Reads steps into ``Step`` specs, recording every problem in ``check``.

    ``known_actions``: None accepts any ``uses``; a collection of names
    requires one of them; a mapping of names to declared inputs (None for
    an action that accepts anything) also checks each step's ``with:``.
    """

    def __init__(self, known_actions: Any, secrets: Collection[str] = ()) -> None:
        self.check = Checker()
        self.known_actions = known_actions
        self.secrets = frozenset(secrets)  # the names ${{ secrets.NAME }} may use
        self.variables: dict[str, str] = {}  # declared variables, for checking templates

    def steps(self, value: Any, path: str) -> tuple[Step, ...]:
        """A job's steps; their ids (given or ``step-N``) must be unique in the job."""
        if value is None:
            return ()
        steps = []
        seen: dict[str, str] = {}
        for index, item in enumerate(self.check.non_empty_list(value, path, "steps")):
            where = index_path(path, index)
            step = self.step(item, where, index + 1)
            if step is None:
                continue
            if step.id in seen:
                self.check.error(
                    where,
                    f"duplicate step id {step.id!r} (also {seen[step.id]}); "
                    "steps without an id are named step-N by position",
                )
            seen.setdefault(step.id, where)
            steps.append(step)
        return tuple(steps)

    def step(self, value: Any, path: str, position: int) -> Step | None:
        """One step (``position`` is 1-based, for its default id), or None if not a mapping."""
        data = self.check.mapping(value, path, _STEP_KEYS)
        if data is None:
            return None
        c = self.check
        step_id = c.string(data, "id", path, non_empty=True)
        if step_id is not None and step_id.strip() and not ID.match(step_id):
            c.error(key_path(path, "id"), f"invalid step id {step_id!r}: {ID_RULE}")
        step_id = step_id or f"step-{position}"
        run = c.string(data, "run", path, non_empty=True)
        self.templates(run, key_path(path, "run"), secrets=True)
        for problem in script_problems(run or ""):
            c.error(key_path(path, "run"), problem)
        uses = c.string(data, "uses", path, non_empty=True)
        action = self.action(uses, key_path(path, "uses")) if uses else None
        if data.get("run") is not None and data.get("uses") is not None:
            c.error(path, "use either 'run' or 'uses', not both")
        elif data.get("run") is None and data.get("uses") is None:
            c.error(path, "needs 'run' (a shell command) or 'uses' (an action)")
        with_ = data.get("with")
        if with_ is not None:
            if data.get("uses") is None:
                c.error(key_path(path, "with"), "is only for steps with 'uses' (an action)")
            with_ = c.mapping(with_, key_path(path, "with"), None)
            for text, where in c.strings(with_, key_path(path, "with"), _MAX_WITH_VALUES):
                self.templates(text, where, secrets=True)
        if action is not None:
            self.action_inputs(action, with_ or {}, key_path(path, "with"))
        return Step(
            id=step_id,
            name=c.string(data, "name", path, default=step_id, non_empty=True) or step_id,
            run=run,
            uses=uses,
            action=action,
            with_=with_ or {},
            env=self.env(data.get("env"), key_path(path, "env")),
            if_=self.condition(data, path, RunCondition.SUCCESS),
            timeout_minutes=c.positive(data, "timeout-minutes", path, default=None, maximum=525_600.0),
            retry_times=c.integer(data, "retry-times", path, default=0, minimum=0, maximum=5) or 0,
            continue_on_error=self.step_continue(data.get("continue-on-error"), path),
        )

    def action(self, uses: str, path: str) -> str | None:
        """The action name in ``uses`` (``sleep@1`` → ``sleep``); must be known if listed."""
        match = _USES.match(uses.strip())
        if match is None:
            self.check.error(path, f"must be 'action@version' (e.g. 'sleep@1'), got {uses!r}")
            return None
        name = match.group(1)
        if self.known_actions is not None and name not in self.known_actions:
            self.check.error(
                path, f"unknown action {name!r}{suggest(name, self.known_actions)}"
            )
        return name

    def action_inputs(self, action: str, with_: Mapping[str, Any], path: str) -> None:
        """Check ``with:`` against the inputs ``action`` declares (if the registry says)."""
        known = self.known_actions
        inputs = known.get(action) if isinstance(known, Mapping) else None
        if inputs is not None:
            for key, problem in check_inputs(action, inputs, with_):
                self.check.error(path if key is None else key_path(path, key), problem)

    def step_continue(self, value: Any, path: str) -> ContinueOnError:
        """A step's continue-on-error as a ``ContinueOnError`` (booleans too)."""
        if value is None:
            return ContinueOnError.FALSE
        if isinstance(value, bool):
            return ContinueOnError.TRUE if value else ContinueOnError.FALSE
        if isinstance(value, str) and value.strip().lower() in values(ContinueOnError):
            return ContinueOnError(value.strip().lower())
        self.check.error(
            key_path(path, "continue-on-error"),
            f"must be one of {', '.join(values(ContinueOnError))}, got {value!r}",
        )
        return ContinueOnError.FALSE

    # -- shared pieces ---------------------------------------------------

    def condition(self, data: Mapping[str, Any], path: str, default: RunCondition) -> RunCondition:
        """The ``if`` of a job or step, normalised (``failure()`` → ``FAILURE``)."""
        value = self.check.string(data, "if", path)
        if value is None:
            return default
        canonical = normalize_condition(value)
        if canonical is None:
            self.check.error(
                key_path(path, "if"),
                f"must be one of {', '.join(values(RunCondition))}, got {value!r}",
            )
            return default
        return canonical

    def env(self, value: Any, path: str) -> dict[str, str]:
        """An ``env`` mapping: names as for variables, scalar values as text, templates checked."""
        result = {}
        for name, item in self.check.named(value, path, NAME, NAME_RULE, VARIABLE).items():
            result[name] = self.check.scalar_text(item, key_path(path, name))
            self.templates(result[name], key_path(path, name), secrets=True)
        return result

    def templates(self, text: str | None, path: str, *, secrets: bool = False) -> None:
        """Report every template problem of ``text`` against the declared variables (and secrets, where allowed)."""
        if text:
            for problem in templates.check(text, self.variables, self.secrets if secrets else None):
                self.check.error(path, problem)
