"""A pipeline's side of the journal: which builds changed, and replies held until committed.

The pipeline actor marks the builds a message changed (``touch``) and hands
its replies here (``answer``). At the end of each message, ``flush``
encodes the changed builds into one :class:`~actors.journal.Write` (one per
handled message, whatever it changed) and holds the replies until the
journal says that write is committed (``committed``): a caller of submit,
retry or cancel hears back only once its effect survives ``kill -9``
(docs/design.md §10). Many replies share one commit; the actor never waits.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ..builds.build import Build
from ..core import Ref, Reply
from .codec import build_row
from .journal import Write
from .store import Batch

__all__ = ["Durable"]


class Durable:
    """See the module docstring."""

    __slots__ = ("journal", "dirty", "answers", "held", "seq", "committed", "log_root", "max_log_bytes")

    def __init__(self, journal: Ref, log_root: str, max_log_bytes: int) -> None:
        self.journal = journal
        self.dirty: dict[str, Build] = {}
        self.answers: list[tuple[Reply, Any, bool]] = []
        self.held: deque[tuple[int, list[tuple[Reply, Any, bool]]]] = deque()
        self.seq = 0  # of the last write sent
        self.committed = 0  # of the last write the journal committed
        self.log_root = log_root
        self.max_log_bytes = max_log_bytes

    def touch(self, build: Build) -> None:
        self.dirty[build.id] = build

    def answer(self, reply: Reply, value: Any, error: bool = False) -> None:
        self.answers.append((reply, value, error))

    def flush(self, owner: Ref) -> int:
        """Send this message's changes (``owner`` hears ``Committed``); hold its answers until they are
        committed. Returns the write's seq."""
        if self.dirty:
            rows = {build_id: build_row(build, build.shape.definition)
                    for build_id, build in self.dirty.items()}  # fmt: skip
            self.dirty.clear()
            self.seq += 1
            self.journal.tell(Write(Batch(builds=rows), owner, self.seq))
        if self.answers:
            answers, self.answers = self.answers, []
            if self.seq > self.committed:
                self.held.append((self.seq, answers))
            else:
                _complete(answers)
        return self.seq

    def on_committed(self, seq: int) -> None:
        self.committed = max(self.committed, seq)
        held = self.held
        while held and held[0][0] <= self.committed:
            _complete(held.popleft()[1])


def _complete(answers: list[tuple[Reply, Any, bool]]) -> None:
    for reply, value, error in answers:
        if error:
            reply.set_error(value)
        else:
            reply.set_result(value)
