"""The store interface: what the actors' journal writes and a restart reads back.

Actors own live state; the store is their journal (docs/design.md §10). Everything
goes through a few plain records so that another database (PostgreSQL) can
take SQLite's place by implementing :class:`Store`:

- a pipeline: its id, the definition text it was registered with, its next
  build number;
- a definition: one text per (pipeline, content hash); a build names the
  definition it runs, since a replaced pipeline keeps its running builds on
  the old one;
- a build: its id, pipeline, number, status, group, wall-clock times and an
  opaque blob (the build codec's encoding of jobs, steps and attempts);
- a node registered over the API (name, pool, agents, labels), or by a
  remote agent process (``remote``);
- which pipelines are deleted (their row and builds stay: ids are never
  reused, and the builds stay readable);
- counters (``meta``): the event-id watermark.

Writes arrive as a :class:`Batch` from one writer (the journal actor's
thread) and are committed as one transaction. Reads come from any thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import msgspec

__all__ = ["Batch", "BuildRow", "NodeRow", "PipelineRow", "Recovered", "Retention", "Store"]


class BuildRow(msgspec.Struct, frozen=True, gc=False):
    """One build as stored: indexed columns plus the codec's blob."""

    id: str
    pipeline_id: str
    number: int
    status: str
    group: str | None
    queued_at: float | None
    finished_at: float | None
    definition: str  # key of the definition it runs
    data: bytes
    created_at: float | None = None  # the listing order (a row stored before it was kept: its queued_at)


class PipelineRow(msgspec.Struct, frozen=True):
    id: str
    definition: str  # key of its current definition
    source: str
    next_number: int


class NodeRow(msgspec.Struct, frozen=True):
    name: str
    pool: str
    agents: int
    labels: tuple[str, ...]
    remote: bool = False  # a ``shunter agent`` process's node: it comes back disconnected (docs/design.md §11)


class Retention(msgspec.Struct, frozen=True):
    """How long finished builds stay in the store: ``days`` and/or ``builds_per_pipeline`` (None: no limit)."""

    days: float | None = 90.0
    builds_per_pipeline: int | None = 10_000


@dataclass
class Batch:
    """Writes committed together. Later writes of one key replace earlier ones (coalescing)."""

    pipelines: dict[str, tuple[str, str] | None] = field(default_factory=dict)  # id -> (definition, source) or delete
    definitions: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (pipeline id, source)
    builds: dict[str, BuildRow] = field(default_factory=dict)
    nodes: dict[str, NodeRow | None] = field(default_factory=dict)  # None: removed
    meta: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, bool] = field(default_factory=dict)  # pipeline id -> deleted (True) or registered again

    def merge(self, other: Batch) -> None:
        self.pipelines.update(other.pipelines)
        self.deleted.update(other.deleted)
        self.definitions.update(other.definitions)
        self.builds.update(other.builds)
        self.nodes.update(other.nodes)
        for key, value in other.meta.items():
            self.meta[key] = max(value, self.meta.get(key, value))

    def __bool__(self) -> bool:
        return bool(self.pipelines or self.definitions or self.builds or self.nodes or self.meta or self.deleted)


@dataclass
class Recovered:
    """What a start reads back: everything but the finished builds (those are read on demand)."""

    pipelines: list[PipelineRow]
    definitions: dict[str, str]  # key -> source, for the definitions unfinished builds run
    unfinished: list[BuildRow]  # queued and running, oldest queued_at first
    nodes: list[NodeRow]
    meta: dict[str, int]
    finished: int  # how many finished builds the store holds
    finished_by_status: dict[str, int] = field(default_factory=dict)  # the same, by final status
    deleted: set[str] = field(default_factory=set)  # pipelines deleted (their rows are in ``pipelines`` too)


class Store(Protocol):
    """A durable journal of pipelines, builds and nodes (see the module docstring)."""

    def recover(self) -> Recovered: ...

    def commit(self, batch: Batch) -> None:
        """Write ``batch`` as one transaction (called from the writer thread only)."""

    def build(self, build_id: str) -> BuildRow | None: ...

    def builds(self, pipeline_id: str | None, status: str | None, limit: int,
               before: tuple[float, str, int] | None = None) -> list[BuildRow]:  # fmt: skip
        """Finished builds of pipelines not deleted, newest first by (created_at, pipeline_id, number), at
        most ``limit``; with ``before``, only those whose key is below it (the next page of a listing)."""

    def definition(self, key: str) -> str | None: ...

    def prune(self, retention: Retention, now: float, limit: int = 1_000) -> list[str]:
        """Delete at most ``limit`` finished builds past ``retention``; return their ids (their logs go
        too). Fewer than ``limit`` means none is left past it."""

    def close(self) -> None: ...
