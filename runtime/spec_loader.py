"""Load and validate pipeline YAML/JSON into an ``actors.model.spec.PipelineSpec``.

``load_pipeline`` walks the raw data by hand and collects every problem
before refusing, so a user sees all of them at once, each with a
JSONPath-like location::

    $.stages[0].jobs.compile.runs-on.concurrency-limit-total: must be >= 1

Choices made where docs/design.md §4 is silent:

- ``version`` may be left out; ``v3.0``, ``v3``, ``3.0`` and ``3`` (string
  or number) are all read as ``v3.0``. Anything else is refused.
- A key set to ``null`` counts as left out.
- A variable is ``NAME: scalar`` or ``NAME: {value: scalar, description:
  text}``; the description is documentation only. Scalars become strings
  the way a shell sees them (``true``, ``3``, ``1.5``; null is ``""``).
  Variable and env names are ``[A-Za-z_][A-Za-z0-9_]*``.
- ``depend-on`` and ``labels`` accept a single string for a list of one.
- Stage names default to ``stage-N``, must be unique, and may not be
  ``finally`` (the API shows ``finally`` jobs as a stage of that name).
- A job with ``lock-resource-with`` runs on the agent of another job, so
  it may not set ``pool-name``, ``node-name`` or ``labels``; it takes them
  (and ``self-hosted``) from the first job of its lock chain.
- YAML mappings with a duplicate key are refused rather than silently
  keeping the last value.
- A key YAML 1.1 reads as a boolean (``on``, ``yes``, ...) stays the word
  written. A top-level ``on:`` (GitHub's triggers) is refused with its own
  message: shunter has no triggers, builds are submitted through the API,
  and ignoring it would let a user believe their triggers were set up.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from actors.execution.actions import ActionInputs
from actors.model.errors import SpecError
from actors.model.spec import Concurrency, Job, Mutex, PipelineSpec, RunsOn, Stage
from actors.model.vocab import RunCondition, OnQueueFull, values
from runtime._node_warnings import NodeMap, node_warnings
from runtime._spec_references import JobDraft, check_references
from runtime._spec_steps import ID, ID_RULE, NAME, NAME_RULE, VARIABLE, StepReader
from runtime._validate import index_path, key_path, parse_document, type_name

__all__ = ["CheckedPipeline", "KnownActions", "NodeMap", "check_pipeline", "load_pipeline", "read_source",
           "slugify", "validate_pipeline_id"]

_TOP_KEYS = ("version", "name", "variables", "concurrency", "stages", "jobs", "steps", "finally")
_CONCURRENCY_KEYS = ("group", "max-parallel", "queue-length", "queue-timeout-minutes",
                     "cancel-in-progress", "on-queue-full")
_STAGE_KEYS = ("name", "jobs")
_JOB_KEYS = ("name", "runs-on", "depend-on", "timeout-minutes", "continue-on-error", "mutex",
             "env", "if", "steps")
_RUNS_ON_KEYS = ("pool-name", "self-hosted", "node-name", "labels", "concurrency-limit-per-node",
                 "concurrency-limit-total", "queue-timeout-minutes", "lock-resource-with")
_PLACEMENT_KEYS = ("pool-name", "node-name", "labels")
_MUTEX_KEYS = ("label", "queue-length", "timeout-minutes")
_VARIABLE_KEYS = ("value", "description")
_VERSIONS = ("v3.0", "v3", "3.0", "3")
# Upper bounds of every number (docs/design.md §12): generous, and far from overflowing a deadline.
MAX_MINUTES = 525_600.0  # a year
MAX_PARALLEL = 100_000
MAX_QUEUE_LENGTH = 10_000_000
MAX_LIMIT = 1_000_000
# A variable's value comes from whoever submits a build (the write role) and is
# in every step's environment under its own name: names that make programs run
# other code (or change which program runs) would turn that data into code.
_UNSAFE_VARIABLES = frozenset({
    "PATH", "IFS", "BASH_ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "CDPATH", "GLOBIGNORE",
    "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PERL5OPT", "PERL5LIB", "NODE_OPTIONS", "RUBYOPT",
    "GIT_SSH_COMMAND", "GIT_EXEC_PATH",
})  # fmt: skip
_UNSAFE_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_", "SHUNTER_")

_PIPELINE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
_NO_TRIGGERS = "'on' is not supported (shunter has no triggers; builds are submitted through the API)"


KnownActions = Collection[str] | Mapping[str, ActionInputs | None]


class CheckedPipeline(NamedTuple):
    """A valid pipeline, and what is worth a warning (each ``{"path", "message"}``)."""

    spec: PipelineSpec
    warnings: list[dict[str, str]]


def load_pipeline(
    source: str | bytes | os.PathLike[str] | Mapping[str, Any],
    *,
    known_actions: KnownActions | None = None,
    secrets: Collection[str] = (),
) -> PipelineSpec:
    """Parse and validate a pipeline; raise ``SpecError`` listing every problem.

    ``source`` is YAML or JSON text (str or bytes), a path to such a file,
    or an already-parsed mapping. When ``known_actions`` is given, every
    ``uses`` must name one of them; when it maps names to declared inputs
    (``ActionRegistry.declared_inputs()``), every ``with:`` is checked too.
    ``secrets`` are the names ``${{ secrets.NAME }}`` may use (in ``env``,
    ``with`` and ``run``).
    """
    return check_pipeline(source, known_actions=known_actions, secrets=secrets).spec


def check_pipeline(
    source: str | bytes | os.PathLike[str] | Mapping[str, Any],
    *,
    known_actions: KnownActions | None = None,
    nodes: NodeMap | None = None,
    secrets: Collection[str] = (),
    needs: Callable[[Job], frozenset[str]] | None = None,
) -> CheckedPipeline:
    """What registering a pipeline checks, in one place (``shunter validate`` uses it too).

    ``load_pipeline``'s checks, then, when ``nodes`` (pool → node → labels)
    is given, a warning for each ``runs-on`` that no node matches, at the
    path of that ``runs-on`` (jobs on another job's agent are not repeated);
    ``needs`` adds the labels of the actions a job uses that only some nodes
    have (docs/design.md §11).
    """
    if isinstance(source, Mapping):
        data: Any = source
        text = ""
    else:
        data, text, problem = parse_document(source, "pipeline")
        if problem is not None:
            raise SpecError([{"path": "$", "message": problem}])
    walker = _Walker(known_actions, secrets)
    spec = walker.pipeline(data, text)
    if walker.check.errors or spec is None:
        raise SpecError(walker.check.errors)
    return CheckedPipeline(spec, [] if nodes is None else node_warnings(walker.placements(spec), nodes, needs))


def slugify(name: str) -> str:
    """A default pipeline id from a name: lowercase ``[a-z0-9-]``, never empty.

    Accents are dropped (``Déploiement`` → ``deploiement``), every other run
    of characters becomes one dash, dashes are trimmed from both ends, the
    result is cut to 64 characters, and an empty result is ``pipeline``.
    """
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    return slug[:64].rstrip("-") or "pipeline"


def validate_pipeline_id(pipeline_id: Any) -> str | None:
    """Return why ``pipeline_id`` is not a valid id, or None if it is.

    Ids are 1 to 64 characters of ``A-Z a-z 0-9 _ . -`` not starting with a dot.
    """
    if not isinstance(pipeline_id, str):
        return f"pipeline id must be a string, got {type_name(pipeline_id)}"
    if not _PIPELINE_ID.match(pipeline_id):
        return (
            f"invalid pipeline id {pipeline_id!r}: use 1 to 64 characters "
            "of letters, digits, '_', '.' and '-'"
        )
    if pipeline_id.startswith("."):
        return f"invalid pipeline id {pipeline_id!r}: must not start with '.'"
    return None


class _Walker(StepReader):
    """Walks raw pipeline data once, recording errors and job drafts (steps: ``StepReader``)."""

    def __init__(self, known_actions: KnownActions | None, secrets: Collection[str] = ()) -> None:
        super().__init__(known_actions, secrets)
        self.jobs: dict[str, JobDraft] = {}  # every job id of the pipeline
        self.lock_roots: dict[str, JobDraft] = {}  # job id -> first job of its lock chain

    # -- top level -------------------------------------------------------

    def pipeline(self, data: Any, text: str) -> PipelineSpec | None:
        if isinstance(data, Mapping) and "on" in data:  # a GitHub Actions habit
            self.check.error("$.on", _NO_TRIGGERS)
            data = {key: value for key, value in data.items() if key != "on"}
        top = self.check.mapping(data, "$", _TOP_KEYS)
        if top is None:
            return None
        self.version(top.get("version"))
        name = self.check.string(top, "name", "$", required=True, non_empty=True)
        self.variables = self.read_variables(top.get("variables"), "$.variables")
        concurrency = self.concurrency(top.get("concurrency"), "$.concurrency")
        stages = self.stages(top)
        final = self.jobs_of(top.get("finally"), "$.finally", len(stages), "finally", final=True)
        check_references(self.jobs, self.check)
        if self.check.errors or name is None:
            return None
        built = {job_id: self.build(draft) for job_id, draft in self.jobs.items()}
        return PipelineSpec(
            name=name,
            variables=self.variables,
            concurrency=concurrency,
            stages=tuple(
                Stage(name=stage_name, jobs=tuple(built[d.id] for d in drafts))
                for stage_name, drafts in stages
            ),
            finally_=tuple(built[d.id] for d in final),
            source=text,
        )

    def version(self, value: Any) -> None:
        """Refuse any version but v3.0 (and its spellings; see the module docstring)."""
        if value is None:
            return
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 3:
            return  # YAML reads `version: 3.0` as a number
        if isinstance(value, str) and value.strip().lower() in _VERSIONS:
            return
        self.check.error(
            "$.version", f"unsupported version {value!r}: shunter reads v3.0 (or v3, 3.0)"
        )

    def read_variables(self, value: Any, path: str) -> dict[str, str]:
        """Declared variables: ``NAME: scalar`` or ``NAME: {value, description}``."""
        result = {}
        for name, item in self.check.named(value, path, NAME, NAME_RULE, VARIABLE).items():
            where = key_path(path, name)
            if name.upper() in _UNSAFE_VARIABLES or name.upper().startswith(_UNSAFE_PREFIXES):
                self.check.error(where, f"variable name {name!r} is reserved: a submitted value there would "
                                        "change which programs run; choose another name")  # fmt: skip
            if isinstance(item, Mapping):
                entry = self.check.entries(item, where, _VARIABLE_KEYS)
                self.check.string(entry, "description", where)
                if "value" not in entry:
                    self.check.error(key_path(where, "value"), "is required")
                item, where = entry.get("value"), key_path(where, "value")
            result[name] = self.check.scalar_text(item, where)
        return result

    def concurrency(self, value: Any, path: str) -> Concurrency | None:
        """The pipeline's concurrency group, or None when there is none."""
        if value is None:
            return None
        data = self.check.mapping(value, path, _CONCURRENCY_KEYS)
        if data is None:
            return None
        c = self.check
        group = c.string(data, "group", path, required=True, non_empty=True)
        self.templates(group, key_path(path, "group"))
        timeout = c.positive(data, "queue-timeout-minutes", path, default=480.0, maximum=MAX_MINUTES)
        return Concurrency(
            group=group or "",
            max_parallel=c.integer(data, "max-parallel", path, default=1, minimum=1, maximum=MAX_PARALLEL) or 1,
            queue_length=c.integer(data, "queue-length", path, default=10, minimum=0,
                                   maximum=MAX_QUEUE_LENGTH) or 0,  # fmt: skip
            queue_timeout_minutes=timeout or 480.0,
            cancel_in_progress=c.boolean(data, "cancel-in-progress", path, default=False),
            on_queue_full=OnQueueFull(c.choice(data, "on-queue-full", path, values(OnQueueFull),
                                               default=OnQueueFull.REJECT)),
        )

    # -- stages and jobs -------------------------------------------------

    def stages(self, top: dict[str, Any]) -> list[tuple[str, list[JobDraft]]]:
        """The stages as (name, job drafts), from whichever form the pipeline uses."""
        forms = [key for key in ("stages", "jobs", "steps") if top.get(key) is not None]
        if len(forms) != 1:
            given = ", ".join(repr(key) for key in forms)
            self.check.error(
                "$",
                f"use only one of 'stages', 'jobs' or 'steps' (found {given})"
                if forms
                else "one of 'stages', 'jobs' or 'steps' is required",
            )
            return []
        if forms[0] == "jobs":
            return [("stage-1", self.jobs_of(top["jobs"], "$.jobs", 0, "stage-1"))]
        if forms[0] == "steps":
            # One job of one stage: the job takes every default.
            draft = JobDraft(id="job-1", path="$", stage=0, stage_name="stage-1")
            draft.fields = {"name": "job-1", "steps": self.steps(top["steps"], "$.steps")}
            draft.runs_on = {"_given": ()}
            self.jobs[draft.id] = draft
            return [("stage-1", [draft])]
        result: list[tuple[str, list[JobDraft]]] = []
        seen: dict[str, str] = {}
        items = self.check.non_empty_list(top["stages"], "$.stages", "stages")
        for index, item in enumerate(items):
            path = index_path("$.stages", index)
            data = self.check.mapping(item, path, _STAGE_KEYS)
            if data is None:
                continue
            default = f"stage-{index + 1}"
            name = self.check.string(data, "name", path, default=default, non_empty=True)
            name = name or default
            if name in seen or name == "finally":
                why = f"also {seen[name]}" if name in seen else "reserved for the finally jobs"
                self.check.error(key_path(path, "name"), f"duplicate stage name {name!r} ({why})")
            seen.setdefault(name, path)
            if data.get("jobs") is None:
                self.check.error(key_path(path, "jobs"), "is required")
            drafts = self.jobs_of(data.get("jobs"), key_path(path, "jobs"), len(result), name)
            result.append((name, drafts))
        return result

    def jobs_of(
        self, value: Any, path: str, stage: int, stage_name: str, *, final: bool = False
    ) -> list[JobDraft]:
        """Read a mapping of job id → job (a stage's ``jobs``, or ``finally``)."""
        if value is None:
            return []
        data = self.check.mapping(value, path, None)
        if data is None:
            return []
        if not data and not final:
            self.check.error(path, "must declare at least one job")
        drafts = []
        for job_id, item in data.items():
            where = key_path(path, job_id)
            if not ID.match(job_id):
                self.check.error(where, f"invalid job id {job_id!r}: {ID_RULE}")
            draft = self.job(job_id, item, where, stage, stage_name, final=final)
            if job_id in self.jobs:
                self.check.error(
                    where,
                    f"duplicate job id {job_id!r} (also {self.jobs[job_id].path}); "
                    "job ids are unique across the pipeline",
                )
                continue
            self.jobs[job_id] = draft
            drafts.append(draft)
        return drafts

    def job(
        self, job_id: str, value: Any, path: str, stage: int, stage_name: str, *, final: bool
    ) -> JobDraft:
        """Read one job's own fields; references to other jobs are checked once all are read."""
        draft = JobDraft(id=job_id, path=path, stage=stage, stage_name=stage_name)
        data = self.check.mapping(value, path, _JOB_KEYS)
        if data is None:
            return draft
        c = self.check
        draft.fields = {
            "name": c.string(data, "name", path, default=job_id, non_empty=True) or job_id,
            "timeout_minutes": c.positive(data, "timeout-minutes", path, default=900.0, maximum=MAX_MINUTES) or 900.0,
            "continue_on_error": c.boolean(data, "continue-on-error", path, default=False),
            "mutex": self.mutex(data.get("mutex"), key_path(path, "mutex")),
            "env": self.env(data.get("env"), key_path(path, "env")),
            "if_": self.condition(data, path, RunCondition.ALWAYS if final else RunCondition.SUCCESS),
        }
        if data.get("steps") is None:
            c.error(key_path(path, "steps"), "is required (a job needs at least one step)")
        draft.fields["steps"] = self.steps(data.get("steps"), key_path(path, "steps"))
        draft.depend_on = c.string_items(data, "depend-on", path)
        draft.runs_on_path = key_path(path, "runs-on")
        draft.runs_on = self.runs_on(data.get("runs-on"), draft.runs_on_path)
        return draft

    def runs_on(self, value: Any, path: str) -> dict[str, Any]:
        """RunsOn fields as keyword arguments (``_given`` lists the placement keys set)."""
        if value is None:
            return {"_given": ()}
        if isinstance(value, str):
            if not value.strip():
                self.check.error(path, "must not be empty")
            return {"pool_name": value, "_given": ("pool-name",)}
        data = self.check.mapping(value, path, _RUNS_ON_KEYS)
        if data is None:
            return {"_given": ()}
        c = self.check
        return {
            "_given": tuple(key for key in _PLACEMENT_KEYS if data.get(key) is not None),
            "pool_name": c.string(data, "pool-name", path, default="default", non_empty=True),
            "self_hosted": c.boolean(data, "self-hosted", path, default=True),
            "node_name": c.string(data, "node-name", path, non_empty=True),
            "labels": c.string_list(data, "labels", path),
            "concurrency_limit_per_node": c.integer(
                data, "concurrency-limit-per-node", path, default=None, minimum=1, maximum=MAX_LIMIT
            ),
            "concurrency_limit_total": c.integer(
                data, "concurrency-limit-total", path, default=None, minimum=1, maximum=MAX_LIMIT
            ),
            "queue_timeout_minutes": c.positive(data, "queue-timeout-minutes", path, default=10.0,
                                                maximum=MAX_MINUTES),  # fmt: skip
            "lock_resource_with": c.string(data, "lock-resource-with", path, non_empty=True),
        }

    def mutex(self, value: Any, path: str) -> Mutex | None:
        """A job's mutex, or None when it has none."""
        if value is None:
            return None
        data = self.check.mapping(value, path, _MUTEX_KEYS)
        if data is None:
            return None
        c = self.check
        label = c.string(data, "label", path, required=True, non_empty=True)
        self.templates(label, key_path(path, "label"))
        return Mutex(
            label=label or "",
            queue_length=c.integer(data, "queue-length", path, default=10, minimum=0, maximum=MAX_QUEUE_LENGTH) or 0,
            timeout_minutes=c.positive(data, "timeout-minutes", path, default=10.0, maximum=MAX_MINUTES) or 10.0,
        )

    def placements(self, spec: PipelineSpec) -> list[tuple[str, Job]]:
        """(path of its runs-on, job) of every job that picks its own agent."""
        jobs = {job.id: job for job in spec.all_jobs()}
        return [(draft.runs_on_path or "$", jobs[draft.id]) for draft in self.jobs.values()
                if draft.runs_on.get("lock_resource_with") is None]  # fmt: skip

    def build(self, draft: JobDraft) -> Job:
        """The Job of a draft, with placement inherited along its lock chain."""
        fields = {k: v for k, v in draft.runs_on.items() if k != "_given"}
        # Only called on a valid pipeline, so every lock chain ends; the
        # roots are remembered so long chains are walked once.
        chain, root = [], draft
        while root.id not in self.lock_roots and (nxt := root.runs_on.get("lock_resource_with")):
            chain.append(root.id)
            root = self.jobs[nxt]
        root = self.lock_roots.get(root.id, root)
        self.lock_roots.update(dict.fromkeys(chain, root))
        if root is not draft:
            for key in ("pool_name", "self_hosted", "node_name", "labels"):
                if key in root.runs_on:
                    fields[key] = root.runs_on[key]
                else:
                    fields.pop(key, None)
        return Job(
            id=draft.id,
            runs_on=RunsOn(**fields),
            depend_on=tuple(dict.fromkeys(dep for dep, _ in draft.depend_on)),
            **draft.fields,
        )


def read_source(source: str | bytes | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """What ``load_pipeline`` should read: a file's text for a path (a ``PathLike``, or a one-line
    string ending in .yml, .yaml or .json that names a file), else ``source`` itself."""
    if isinstance(source, os.PathLike):
        return Path(source).read_text(encoding="utf-8")
    if isinstance(source, str) and "\n" not in source and source.endswith((".yml", ".yaml", ".json")):
        path = Path(source)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return source
