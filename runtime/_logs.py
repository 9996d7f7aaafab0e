"""Following a build's log while it is written (docs/design.md §13).

``LogFollowing`` is the part of the ``Runtime`` facade behind
``GET /v1/builds/{id}/logs?follow=true``, ``shunter logs -f`` and the
dashboard's log panel. ``read_log`` asks the build's pipeline for what a
reader's cursor has not seen (``actors.builds.logfollow``: the reading and
the end check happen in one actor turn); a finished build that only the
store still holds is read from the store. ``follow_logs`` repeats it every
``log_poll`` seconds until the step, job or build has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio

from actors.builds.build import Build
from actors.builds.logfollow import LogChunk, LogCursor, read_log
from actors.builds.resume import NotHeld
from actors.core import Ref
from actors.model.messages import ReadLog

from ._state import State

__all__ = ["LogFollowing", "LOG_POLL"]

LOG_POLL = 0.25  # seconds between looks for new log lines while following


class LogFollowing:
    """Reading a log as it grows (a part of ``Runtime``; see the module docstring)."""

    log_poll = LOG_POLL  # seconds between looks for new lines when following a log
    _state: State | None

    if TYPE_CHECKING:  # the rest of Runtime

        def _owner(self, build_id: str) -> Ref: ...

        async def _stored(self, build_id: str) -> Build: ...

    async def read_log(self, build_id: str, job: str | None = None, step: str | None = None,
                       cursor: LogCursor | None = None) -> LogChunk:  # fmt: skip
        """The log written since ``cursor`` (from the start without one), the cursor after it, and
        whether the build, ``job`` or ``step`` has ended (then nothing more will come)."""
        try:
            result: LogChunk = await self._owner(build_id).ask(ReadLog(build_id, job, step, cursor or LogCursor()))
        except NotHeld:
            if self._state is None:
                raise
            # Finished and out of the pipeline's cache: its records and log files are in the store.
            return read_log(await self._stored(build_id), job, step, cursor or LogCursor())
        return result

    async def follow_logs(self, build_id: str, job: str | None = None, step: str | None = None, *,
                          poll: float | None = None) -> AsyncIterator[str]:  # fmt: skip
        """Yield the log (of the build, a job or a step) as it is written; ends when that has ended.

        For what has already ended it yields the whole log at once (the text
        of ``logs()``) and ends. New lines are looked for every ``poll``
        seconds (``log_poll`` by default). ``NotFound`` for an unknown build,
        job or step.
        """
        cursor = None
        while True:
            chunk = await self.read_log(build_id, job, step, cursor)
            cursor = chunk.cursor
            if chunk.text:
                yield chunk.text
            if chunk.finished:
                return
            if not chunk.more:
                await anyio.sleep(self.log_poll if poll is None else poll)
