"""What a pipeline answers about its builds without changing them: pages of builds, logs, its description.

Pure functions over the pipeline actor's state, kept apart from the actor
that drives the builds.

Builds are listed newest first by their *key*, (time submitted, pipeline
id, number): a total order across pipelines that a retry does not change
(``queued_at`` does), so a page boundary given as a build stays put while
builds come and go.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable

from ..model.info import BuildInfo, PipelineInfo
from ..model.messages import ListBuilds
from ..model.spec import PipelineSpec
from .build import Build
from .resume import log_sources
from .snapshot import build_info

__all__ = ["BuildKeyT", "build_key", "build_log", "describe", "list_builds"]

BuildKeyT = tuple[float, str, int]


def build_key(build: Build) -> BuildKeyT:
    return (build.created_at, build.pipeline_id, build.number)


def list_builds(builds: Iterable[Build], request: ListBuilds) -> list[tuple[BuildKeyT, BuildInfo]]:
    """The builds ``request`` asks for, newest first, each with its key; snapshots only of those returned."""
    status, unfinished, before = request.status, request.unfinished, request.before
    chosen = [b for b in builds if status in (None, b.status) and not (unfinished and b.finished)
              and (before is None or build_key(b) < before)]  # fmt: skip
    if request.limit is None:
        chosen.sort(key=build_key, reverse=True)
    else:
        chosen = heapq.nlargest(request.limit, chosen, key=build_key)
    return [(build_key(b), build_info(b)) for b in chosen]


def build_log(build: Build, job: str | None, step: str | None) -> str:
    """The whole log text of a build, or of one job or step: each attempt's header, then its log."""
    parts = [header + log.text() for header, log in log_sources(build, job, step)]
    return "".join(part if part.endswith("\n") else part + "\n" for part in parts)


def describe(pipeline_id: str, spec: PipelineSpec, builds: int) -> PipelineInfo:
    return PipelineInfo(
        id=pipeline_id,
        name=spec.name,
        version=spec.version,
        stages=[stage.name for stage in spec.stages],
        jobs=[job.id for job in spec.all_jobs()],
        group=spec.concurrency.group if spec.concurrency else None,
        builds=builds,
        source=spec.source,
        variables=dict(spec.variables),
    )
