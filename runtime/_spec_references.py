"""Checks across the jobs of a pipeline: depend-on targets and cycles, lock-resource-with.

The walker in ``spec_loader`` reads each job into a ``JobDraft``; once all
are read, these checks run over the drafts and record errors by path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ._validate import Checker, find_cycles, key_path, reaches, suggest

__all__ = ["JobDraft", "check_references"]


@dataclass
class JobDraft:
    """A job read but not yet built: cross-references are checked on these."""

    id: str
    path: str
    stage: int  # position of its stage; the finally jobs come after the last
    stage_name: str
    fields: dict[str, Any] = field(default_factory=dict)
    runs_on: dict[str, Any] = field(default_factory=dict)
    runs_on_path: str = ""
    depend_on: list[tuple[str, str]] = field(default_factory=list)  # (job id, path)


def check_references(jobs: dict[str, JobDraft], check: Checker) -> None:
    """depend-on targets and cycles, then lock-resource-with, over all drafts."""
    deps: dict[str, list[str]] = {}  # valid same-stage dependencies
    for draft in jobs.values():
        deps[draft.id] = []
        for target, path in draft.depend_on:
            other = jobs.get(target)
            if target == draft.id:
                check.error(path, f"job {target!r} cannot depend on itself")
            elif other is None:
                same = [d.id for d in jobs.values() if d.stage == draft.stage]
                check.error(path, f"unknown job {target!r}{suggest(target, same)}")
            elif other.stage != draft.stage:
                why = ("an earlier", ", which always finishes first")
                if other.stage > draft.stage:
                    why = ("a later", "")
                check.error(
                    path,
                    f"job {target!r} is in {why[0]} stage ({other.stage_name!r}){why[1]}: "
                    "depend-on names jobs of the same stage",
                )
            elif target not in deps[draft.id]:
                deps[draft.id].append(target)
    for cycle in find_cycles(deps):
        where = key_path(jobs[cycle[0]].path, "depend-on")
        check.error(where, "dependency cycle: " + " -> ".join(cycle))
    for draft in jobs.values():
        _check_lock(draft, jobs, deps, check)


def _check_lock(draft: JobDraft, jobs: dict[str, JobDraft], deps: dict[str, list[str]], check: Checker) -> None:
    """Check lock-resource-with names a job that will have run before this one."""
    target = draft.runs_on.get("lock_resource_with")
    if target is None:
        return
    path = key_path(draft.runs_on_path, "lock-resource-with")
    other = jobs.get(target)
    if target == draft.id:
        check.error(path, "a job cannot lock the agent of itself")
    elif other is None:
        check.error(path, f"unknown job {target!r}{suggest(target, jobs)}")
    elif other.stage > draft.stage:
        check.error(path, f"job {target!r} runs in a later stage ({other.stage_name!r})")
    elif other.stage == draft.stage and not reaches(deps, draft.id, target):
        check.error(
            path,
            f"job {target!r} is in the same stage but not a depend-on ancestor, "
            "so it may not have run first: add it to depend-on",
        )
    for key in draft.runs_on["_given"]:
        check.error(
            key_path(draft.runs_on_path, key),
            "cannot be combined with lock-resource-with "
            f"(the job runs on the agent of {target!r})",
        )
