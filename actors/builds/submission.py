"""What a submission or a retry of a finished build is checked against and named by. Pure.

The pipeline actor checks a submission's variables against the pipeline's
declared ones (``check_variables``), renders the build's concurrency group
(``render_group``) and tells the group its limits under that name
(``group_config``). A retry of a finished build waits for its group's
answer as a ``RetryPlan``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import msgspec

from ..model.errors import InvalidRequest, UndeclaredVariable
from ..model.spec import Concurrency, PipelineSpec
from ..model.templates import TemplateError, render
from .records import NOTHING

__all__ = ["RetryPlan", "check_variables", "group_config", "render_group"]


class RetryPlan(msgspec.Struct, frozen=True, gc=False):
    """A retry of a finished build: what runs again, applied once its group admits it.

    ``job``, ``step`` and ``failed_only`` are as asked (``Build.rerun_plan``
    says what they select); ``group`` is the group name rendered again for
    this execution; ``queued_at`` is when the retry was asked (wall clock).
    """

    job: str | None
    step: str | None
    failed_only: bool
    group: str | None
    queued_at: float


def check_variables(pipeline_id: str, spec: PipelineSpec, given: dict[str, Any]) -> dict[str, str]:
    """The build's variables: the declared defaults with ``given`` over them, every value a string.

    A name the pipeline does not declare is ``UndeclaredVariable``; a value
    that is not a string, number or boolean is ``InvalidRequest``.
    """
    declared = spec.variables
    if not given:
        # none declared: the shared empty mapping (never changed), not one more dict kept per build
        return dict(declared) if declared else NOTHING
    unknown = sorted(set(given) - set(declared))
    if unknown:
        names = ", ".join(sorted(declared)) or "none"
        raise UndeclaredVariable(
            f"pipeline {pipeline_id!r} declares no variable {', '.join(map(repr, unknown))} (declared: {names})",
            details=[{"path": f"$.variables.{name}", "message": "not declared by the pipeline"} for name in unknown],
        )
    values = dict(declared)
    for name, value in given.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        elif not isinstance(value, str):
            raise InvalidRequest(
                f"variable {name!r} must be a string, number or boolean, got {type(value).__name__}",
                details=[{"path": f"$.variables.{name}", "message": "must be a string, number or boolean"}],
            )
        values[name] = value
    return values


def render_group(pipeline_id: str, spec: PipelineSpec, build_id: str, number: int,
                 variables: dict[str, str], mask: Callable[[str], str] | None = None) -> str | None:  # fmt: skip
    """The build's concurrency group name (None without ``concurrency``); ``InvalidRequest`` if it renders badly.

    A secret value in it (a variable holding one) is masked: the name is shown
    in groups, events and metrics, so the group is known by its masked name.
    """
    concurrency = spec.concurrency
    if concurrency is None:
        return None
    context = {"ci": {"pipeline_id": pipeline_id, "build_id": build_id, "build_num": str(number)},
               "variables": variables}  # fmt: skip
    try:
        name = render(concurrency.group, context).strip()
    except TemplateError as error:
        raise InvalidRequest(f"concurrency group of pipeline {pipeline_id!r}: {error}") from None
    if not name:
        raise InvalidRequest(f"concurrency group of pipeline {pipeline_id!r} rendered to an empty name")
    if mask is not None:
        name = mask(name)
    return sys.intern(name)  # builds of one group share its name, not a copy each


def group_config(spec: PipelineSpec, name: str) -> Concurrency:
    """The pipeline's concurrency settings under the rendered group ``name``."""
    concurrency = spec.concurrency
    assert concurrency is not None
    return msgspec.structs.replace(concurrency, group=name)
