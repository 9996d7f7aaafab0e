"""The journal actor: group commit of the actors' writes, off their hot path.

Actors ``tell`` it :class:`Write` messages (a :class:`~actors.state.store.Batch`
each). It merges them into one pending batch and commits that batch in a
worker thread; while a commit runs, new writes pile up and go together in
the next one (group commit: one transaction for many changes, however many
actors wrote). After each commit it tells every writer that asked for an
acknowledgement ``Committed(seq)``, and completes the reply of every
:class:`Write` that came as an ``ask`` — that is how an API call answers
only once its effect is durable (docs/design.md §10).

Retention runs here too, between commits, at start and then at most once a minute: finished
builds past ``retention`` leave the store and their logs are deleted, a
thousand at a time between commits (memory stays flat however many go).
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec

from ..core import Actor, Ref, Reply
from .store import Batch, Retention, Store

__all__ = ["JournalActor", "Write", "Committed", "Flush", "Seal"]

logger = logging.getLogger("shunter")

PRUNE_EVERY = 60.0  # seconds between retention passes
PRUNE_CHUNK = 1_000  # builds removed per transaction


class Write(msgspec.Struct, frozen=True):
    """Journal these changes; tell ``ack`` ``Committed(seq)`` once they are durable (ask: the reply)."""

    batch: Any  # a Batch (a dataclass: not a Struct field type msgspec checks)
    ack: Ref | None = None
    seq: int = 0


class Committed(msgspec.Struct, frozen=True):
    """Journal → writer: every write you sent up to ``seq`` is committed."""

    seq: int


class Flush(msgspec.Struct, frozen=True):
    """Ask: answered once everything written before it is committed."""


class Seal(msgspec.Struct, frozen=True):
    """Ask: commit what is pending, then ignore every later write (the server is stopping)."""


class JournalActor(Actor):
    """See the module docstring."""

    def __init__(self, store: Store, *, retention: Retention | None = None, log_root: Path | None = None) -> None:
        self.store = store
        self.retention = retention
        self.log_root = log_root
        self.pending = Batch()
        self.acks: dict[Ref, int] = {}
        self.replies: list[Reply] = []
        self.flushing = False
        self.sealed = False
        self.commits = 0
        self.writes = 0
        # The first pass comes with the first commit: a restart applies a (changed) retention at once.
        self.last_prune = -math.inf
        self.pruning = False  # a retention pass has more to remove

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is Write:
            if self.sealed:
                return None  # stopping: what happens now is for the next start to judge
            self.writes += 1
            self.pending.merge(message.batch)
            if message.ack is not None:
                self.acks[message.ack] = max(message.seq, self.acks.get(message.ack, 0))
            if self._asking():
                self.replies.append(self.defer_reply())
        elif kind is Flush or kind is Seal:
            self.replies.append(self.defer_reply())
            if kind is Seal:
                self.sealed = True
        else:
            raise TypeError(f"journal got an unexpected {kind.__name__}")
        if not self.flushing:
            self.flushing = True
            self.start_task(self._flush)
        return None

    def _asking(self) -> bool:
        return self._cell.ask_slot is not None

    async def _flush(self) -> None:
        while True:
            batch, acks, replies = self.pending, self.acks, self.replies
            if not (batch or acks or replies or self.pruning):
                break
            self.pending, self.acks, self.replies = Batch(), {}, []
            if batch:
                await anyio.to_thread.run_sync(self.store.commit, batch)
                self.commits += 1
            for ref, seq in acks.items():
                ref.tell(Committed(seq))
            for reply in replies:
                reply.set_result(None)
            if self.retention is not None and (self.pruning or time.monotonic() - self.last_prune >= PRUNE_EVERY):
                self.last_prune = time.monotonic()
                self.pruning = await anyio.to_thread.run_sync(self._prune, self.retention)
        self.flushing = False

    def _prune(self, retention: Retention) -> bool:
        """One chunk of a retention pass; True if there is more to remove."""
        removed = self.store.prune(retention, time.time(), PRUNE_CHUNK)
        if removed and self.log_root is not None:
            for build_id in removed:
                pipeline_id, _, number = build_id.rpartition(".")
                shutil.rmtree(self.log_root / pipeline_id / number, ignore_errors=True)
        if removed:
            logger.info("retention: %d finished build(s) removed from the store", len(removed))
        return len(removed) >= PRUNE_CHUNK
