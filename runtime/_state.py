"""The runtime's durable state (docs/design.md §10): the state directory, recovery, reads from the store.

Layout of a state directory::

    shunter.db (+ -wal, -shm)   the SQLite store: pipelines, definitions, builds, nodes, counters
    logs/PIPELINE/NUMBER/       step logs, one file per step attempt
    work/                       agents' workspaces and steps' temporary files (cleaned at start)
    lock                        held while a server uses the directory

At start, :func:`recover` brings back what the store holds: pipelines on the
definitions they had, then the unfinished builds — their pipelines decide
what each needs (``actors.builds.resume``) and the admissions are told to
the groups here, in the original order across all pipelines. Builds no
actor holds any more (finished, past the pipelines' caches) are read from
the store by :class:`State`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import anyio

from actors.builds.build import Build
from actors.builds.records import BuildShape
from actors.core import Ref
from actors.model.errors import ShunterError
from actors.state.codec import decode_build
from actors.state.journal import Flush, Seal, Write
from actors.state.sqlite import SQLiteStore
from actors.state.store import Batch, BuildRow, NodeRow, Recovered

from .spec_loader import load_pipeline

__all__ = ["State", "StateDirInUse", "definition_key", "default_state_dir", "FINISHED_CACHE"]

FINISHED_CACHE = 200  # finished builds a pipeline keeps in memory with a store; older ones are read back


class StateDirInUse(ShunterError):
    """The state directory cannot be used: another shunter holds it, or it cannot be made or written."""


def default_state_dir() -> str:
    """``$SHUNTER_HOME``, else ``~/.shunter``."""
    return os.environ.get("SHUNTER_HOME") or os.path.expanduser("~/.shunter")


def definition_key(pipeline_id: str, source: str) -> str:
    """The store key of a pipeline definition: its id and text, hashed."""
    return hashlib.sha256(f"{pipeline_id}\0{source}".encode()).hexdigest()[:24]


class State:
    """An open state directory: the store, the journal's ref, and reads of builds no actor holds."""

    def __init__(self, directory: str | os.PathLike[str], mask: Callable[[str], str] | None = None) -> None:
        self.directory = Path(directory).expanduser()
        self.mask = mask  # secrets' masker, for the shapes of builds read back
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock: IO[str] | None = open(self.directory / "lock", "a+")
        except OSError as error:
            raise StateDirInUse(f"cannot use state directory {self.directory}: {error.strerror or error}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.seek(0)
            holder = self._lock.read().strip() or "another process"
            self._lock.close()
            self._lock = None
            raise StateDirInUse(f"state directory {self.directory} is in use by {holder}") from None
        self._lock.truncate(0)
        self._lock.write(f"shunter pid {os.getpid()}\n")
        self._lock.flush()
        self.logs = self.directory / "logs"
        self.work = self.directory / "work"
        # Workspaces and temp files of a previous run (a kill -9 leaves them): start clean.
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.store = SQLiteStore(self.directory)
        self.journal: Ref | None = None
        self._shapes: dict[str, BuildShape] = {}

    def close(self) -> None:
        self.store.close()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    # -- writing -------------------------------------------------------------------------

    async def write(self, batch: Batch) -> None:
        """Journal ``batch`` and return once it is committed."""
        assert self.journal is not None
        await self.journal.ask(Write(batch))

    async def flush(self) -> None:
        assert self.journal is not None
        await self.journal.ask(Flush())

    async def seal(self) -> None:
        """Commit what is pending; later writes are ignored (a stopping server: the next start judges)."""
        assert self.journal is not None
        await self.journal.ask(Seal())

    def pipeline_batch(self, pipeline_id: str, key: str, source: str) -> Batch:
        return Batch(pipelines={pipeline_id: (key, source)}, definitions={key: (pipeline_id, source)})

    def node_batch(self, name: str, node: NodeRow | None) -> Batch:
        return Batch(nodes={name: node})

    def reserve_events(self, upto: int) -> None:
        """The event hub's id watermark (told, not awaited: reserved well ahead of use)."""
        if self.journal is not None:
            self.journal.tell(Write(Batch(meta={"event_id": upto})))

    # -- reading -------------------------------------------------------------------------

    def shape(self, key: str, source: str | None = None) -> BuildShape:
        """The shape of definition ``key`` (parsed once)."""
        shape = self._shapes.get(key)
        if shape is None:
            text = source if source is not None else self.store.definition(key)
            if text is None:
                raise LookupError(f"definition {key} is not in the store")
            shape = self._shapes[key] = BuildShape(load_pipeline(text), key, self.mask)
        return shape

    def decode(self, row: BuildRow) -> Build:
        return decode_build(row, self.shape(row.definition))

    async def read_build(self, build_id: str) -> Build | None:
        """A build as the store has it (None if it has none)."""
        row = await anyio.to_thread.run_sync(self.store.build, build_id)
        return None if row is None else self.decode(row)

    async def read_builds(self, pipeline_id: str | None, status: str | None, limit: int,
                          before: tuple[float, str, int] | None = None) -> list[Build]:  # fmt: skip
        rows = await anyio.to_thread.run_sync(self.store.builds, pipeline_id, status, limit, before)
        return [self.decode(row) for row in rows]

    async def recovered(self) -> Recovered:
        return await anyio.to_thread.run_sync(self.store.recover)

    def group_unfinished(self, recovered: Recovered) -> dict[str, list[Build]]:
        """The unfinished builds decoded, by pipeline, in queued order."""
        for key, source in recovered.definitions.items():
            self.shape(key, source)
        by_pipeline: dict[str, list[Build]] = defaultdict(list)
        for row in recovered.unfinished:
            by_pipeline[row.pipeline_id].append(self.decode(row))
        return by_pipeline


async def tell_admissions(groups: Any, admits: list[tuple[bool, float, str, Any]]) -> None:
    """Tell the restored builds' groups, running builds first, then queued ones in their original order."""
    for _, _, group, admit in sorted(admits, key=lambda item: (item[0], item[1])):
        groups.get(group).tell(admit)
