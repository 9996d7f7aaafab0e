"""The SQLite store: Python's own ``sqlite3`` in WAL mode, one file in the state directory.

One connection writes (the journal's thread: a batch is one transaction,
``synchronous=NORMAL``, which in WAL mode survives a killed process; only a
power cut can lose the last commits). Readers get a connection per thread
and never wait for the writer (WAL). See ``store.py`` for the records.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

from .store import Batch, BuildRow, NodeRow, PipelineRow, Recovered, Retention

__all__ = ["SQLiteStore", "FINAL_STATUSES"]

FINAL_STATUSES = ("SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pipelines (
    id TEXT PRIMARY KEY, definition TEXT NOT NULL, source TEXT NOT NULL,
    next_number INTEGER NOT NULL DEFAULT 1, seq INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS definitions (key TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS builds (
    id TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL, number INTEGER NOT NULL, status TEXT NOT NULL,
    grp TEXT, queued_at REAL, finished_at REAL, definition TEXT NOT NULL, data BLOB NOT NULL,
    finished INTEGER NOT NULL, created_at REAL);
CREATE INDEX IF NOT EXISTS builds_unfinished ON builds (queued_at) WHERE finished = 0;
CREATE INDEX IF NOT EXISTS builds_by_pipeline ON builds (pipeline_id, number);
CREATE INDEX IF NOT EXISTS builds_by_end ON builds (finished_at) WHERE finished = 1;
CREATE TABLE IF NOT EXISTS nodes (name TEXT PRIMARY KEY, pool TEXT NOT NULL, agents INTEGER NOT NULL,
    labels TEXT NOT NULL, remote INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deleted_pipelines (id TEXT PRIMARY KEY);
"""
_COLUMNS = "id, pipeline_id, number, status, grp, queued_at, finished_at, definition, data, created_at"
# Listings page by this key (docs/design.md §10), newest first: made after the column may have been added.
_LISTING_INDEXES = """
CREATE INDEX IF NOT EXISTS builds_by_creation ON builds (created_at, pipeline_id, number) WHERE finished = 1;
CREATE INDEX IF NOT EXISTS builds_of_pipeline_by_creation ON builds (pipeline_id, created_at, number)
    WHERE finished = 1;
"""


def _connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


def _row(values: tuple[object, ...]) -> BuildRow:
    return BuildRow(*values)  # type: ignore[arg-type]  # columns in _COLUMNS order


class SQLiteStore:
    """A :class:`~actors.state.store.Store` in ``directory/shunter.db``."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "shunter.db"
        self._writer = _connect(self.path)
        self._writer.executescript(_SCHEMA)
        columns = {row[1] for row in self._writer.execute("PRAGMA table_info(nodes)")}
        if "remote" not in columns:  # a store made before remote nodes were kept
            self._writer.execute("ALTER TABLE nodes ADD COLUMN remote INTEGER NOT NULL DEFAULT 0")
        if "created_at" not in {row[1] for row in self._writer.execute("PRAGMA table_info(builds)")}:
            # a store made before listings paged in it: a build was created when it was first queued.
            # One transaction: a column added but left unfilled would never be filled at a later start.
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.execute("ALTER TABLE builds ADD COLUMN created_at REAL")
                self._writer.execute("UPDATE builds SET created_at = queued_at")
                self._writer.execute("COMMIT")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
        self._writer.executescript(_LISTING_INDEXES)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []  # list.append is atomic: no guard needed

    def _reader(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = _connect(self.path)
            self._readers.append(connection)
        return connection

    # -- writing -----------------------------------------------------------------------

    def commit(self, batch: Batch) -> None:
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        try:
            for key, (pipeline_id, source) in batch.definitions.items():
                db.execute("INSERT OR IGNORE INTO definitions VALUES (?, ?, ?)", (key, pipeline_id, source))
            for pipeline_id, value in batch.pipelines.items():
                if value is None:
                    db.execute("DELETE FROM pipelines WHERE id = ?", (pipeline_id,))
                    db.execute("DELETE FROM builds WHERE pipeline_id = ?", (pipeline_id,))
                else:
                    db.execute(
                        "INSERT INTO pipelines (id, definition, source, seq) VALUES (?, ?, ?, "
                        "(SELECT COALESCE(MAX(seq), 0) + 1 FROM pipelines)) "
                        "ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, source = excluded.source",
                        (pipeline_id, *value),
                    )
            if batch.builds:
                db.executemany(
                    f"INSERT OR REPLACE INTO builds ({_COLUMNS}, finished) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [(*_values(row), row.status in FINAL_STATUSES) for row in batch.builds.values()],
                )
                numbers: dict[str, int] = {}
                for row in batch.builds.values():
                    numbers[row.pipeline_id] = max(numbers.get(row.pipeline_id, 0), row.number)
                db.executemany(
                    "UPDATE pipelines SET next_number = MAX(next_number, ?) WHERE id = ?",
                    [(number + 1, pipeline_id) for pipeline_id, number in numbers.items()],
                )
            for name, node in batch.nodes.items():
                if node is None:
                    db.execute("DELETE FROM nodes WHERE name = ?", (name,))
                else:
                    db.execute("INSERT OR REPLACE INTO nodes VALUES (?, ?, ?, ?, ?)",
                               (node.name, node.pool, node.agents, json.dumps(list(node.labels)), node.remote))  # fmt: skip
            for pipeline_id, deleted in batch.deleted.items():
                db.execute("INSERT OR IGNORE INTO deleted_pipelines VALUES (?)" if deleted else
                           "DELETE FROM deleted_pipelines WHERE id = ?", (pipeline_id,))  # fmt: skip
            for key, counter in batch.meta.items():
                db.execute("INSERT INTO meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET "
                           "value = MAX(value, excluded.value)", (key, counter))  # fmt: skip
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def prune(self, retention: Retention, now: float, limit: int = 1_000) -> list[str]:
        db = self._writer
        doomed: set[str] = set()
        if retention.days is not None:
            cutoff = now - retention.days * 86_400
            doomed.update(r[0] for r in db.execute(
                "SELECT id FROM builds WHERE finished = 1 AND finished_at < ? LIMIT ?", (cutoff, limit)))  # fmt: skip
        if retention.builds_per_pipeline is not None:
            keep = retention.builds_per_pipeline
            for (pipeline_id,) in db.execute("SELECT id FROM pipelines").fetchall():
                if len(doomed) >= limit:
                    break
                # the oldest finished builds past the newest ``keep``
                doomed.update(r[0] for r in db.execute(
                    "SELECT id FROM builds WHERE pipeline_id = ? AND finished = 1 AND number <= ("
                    "  SELECT number FROM builds WHERE pipeline_id = ? AND finished = 1 "
                    "  ORDER BY number DESC LIMIT 1 OFFSET ?) ORDER BY number LIMIT ?",
                    (pipeline_id, pipeline_id, keep, limit - len(doomed))))  # fmt: skip
        if doomed:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM builds WHERE id = ?", [(build_id,) for build_id in doomed])
            db.execute("COMMIT")
        return sorted(doomed)

    # -- reading -----------------------------------------------------------------------

    def recover(self) -> Recovered:
        db = self._reader()
        pipelines = [PipelineRow(*r) for r in db.execute(
            "SELECT id, definition, source, next_number FROM pipelines ORDER BY seq")]  # fmt: skip
        unfinished = [_row(r) for r in db.execute(
            f"SELECT {_COLUMNS} FROM builds WHERE finished = 0 ORDER BY queued_at, pipeline_id, number")]  # fmt: skip
        keys = {row.definition for row in unfinished} | {p.definition for p in pipelines}
        definitions = {key: source for key, source in db.execute("SELECT key, source FROM definitions")
                       if key in keys}  # fmt: skip
        nodes = [NodeRow(name, pool, agents, tuple(json.loads(labels)), bool(remote)) for name, pool, agents, labels, remote
                 in db.execute("SELECT name, pool, agents, labels, remote FROM nodes ORDER BY rowid")]  # fmt: skip
        meta = dict(db.execute("SELECT key, value FROM meta"))
        by_status = dict(db.execute("SELECT status, COUNT(*) FROM builds WHERE finished = 1 GROUP BY status"))
        deleted = {pipeline_id for (pipeline_id,) in db.execute("SELECT id FROM deleted_pipelines")}
        return Recovered(pipelines, definitions, unfinished, nodes, meta, sum(by_status.values()), by_status,
                         deleted)  # fmt: skip

    def build(self, build_id: str) -> BuildRow | None:
        found = self._reader().execute(f"SELECT {_COLUMNS} FROM builds WHERE id = ?", (build_id,)).fetchone()
        return None if found is None else _row(found)

    def builds(self, pipeline_id: str | None, status: str | None, limit: int,
               before: tuple[float, str, int] | None = None) -> list[BuildRow]:  # fmt: skip
        # a deleted pipeline's builds stay readable by id but are not listed (a short page would end paging)
        where = ["finished = 1", "pipeline_id NOT IN (SELECT id FROM deleted_pipelines)"]
        args: list[object] = []
        if pipeline_id is not None:
            where.append("pipeline_id = ?")
            args.append(pipeline_id)
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if before is not None:
            where.append("(created_at, pipeline_id, number) < (?, ?, ?)")
            args.extend(before)
        order = "created_at DESC, pipeline_id DESC, number DESC"
        query = f"SELECT {_COLUMNS} FROM builds WHERE {' AND '.join(where)} ORDER BY {order} LIMIT ?"
        return [_row(r) for r in self._reader().execute(query, (*args, limit))]

    def definition(self, key: str) -> str | None:
        found = self._reader().execute("SELECT source FROM definitions WHERE key = ?", (key,)).fetchone()
        return None if found is None else str(found[0])

    def close(self) -> None:
        readers, self._readers = self._readers, []
        for connection in readers:
            connection.close()
        self._writer.close()


def _values(row: BuildRow) -> tuple[object, ...]:
    return (row.id, row.pipeline_id, row.number, row.status, row.group, row.queued_at, row.finished_at,
            row.definition, row.data, row.created_at)  # fmt: skip
