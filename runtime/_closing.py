"""How a runtime stops (docs/design.md §10): drain, then cancel what is left, or leave it to the next start.

``Closing`` is the part of the ``Runtime`` facade that ``open_runtime()``
calls on the way out (``_close``) and ``shunter serve`` cuts short on a
second signal (``stop_draining``). Nothing new is admitted once it starts;
running builds get ``drain-timeout`` to finish. In memory, what is left is
then cancelled and awaited (bounded by ``shutdown-timeout``); with durable
state it stays as the store has it: the next start re-queues the queued
builds and treats interrupted jobs as lost.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import anyio

from actors.builds.resume import Drain
from actors.core import ActorSystem, Ref
from actors.model.errors import Conflict, NotFound
from actors.model.info import BuildInfo
from actors.model.messages import CancelRequest, ListBuilds
from actors.model.vocab import BuildStatus

from ._state import State
from .config import RuntimeConfig

__all__ = ["Closing", "some"]

logger = logging.getLogger("shunter")

STOPPED = "cancelled: the runtime stopped"
"""The reason of builds a close cancels (in memory, with nothing left to drain to)."""



def some(ids: list[str], shown: int = 20) -> str:
    """The first ``shown`` ids and how many more: a stop that interrupted 20,000 builds says so in one line."""
    more = len(ids) - shown
    return ", ".join(ids[:shown]) + (f" and {more} more" if more > 0 else "")

class Closing:
    """Draining and closing (a part of ``Runtime``; see the module docstring)."""

    system: ActorSystem
    config: RuntimeConfig
    _pipelines: Ref
    _state: State | None
    _draining: bool
    _drain_scope: anyio.CancelScope | None
    _hurry: bool
    interrupted: list[str]
    left_queued: list[str]

    if TYPE_CHECKING:  # the rest of Runtime

        async def _cancel(self, request: CancelRequest) -> BuildInfo: ...

        async def wait(self, build_id: str, timeout: float | None = None) -> BuildInfo: ...

    async def _unfinished(self, status: BuildStatus | None = None) -> list[BuildInfo]:
        """The queued and running builds of every pipeline, deleted ones too (theirs may still be ending)."""
        found: list[BuildInfo] = []
        for ref in self.system.children(self._pipelines):
            found.extend(info for _, info in await ref.ask(ListBuilds(status, unfinished=True)))
        return found

    async def _close(self) -> None:
        """Drain (docs/design.md §10), then cancel what still runs (in memory) or leave it to the next start (durable)."""
        drain = self.config.drain_timeout
        if self._state is not None or drain is not None:
            self._draining = True
            for ref in self.system.children(self._pipelines):
                ref.tell(Drain())
            await self._drain(30.0 if drain is None else drain)
        if self._state is not None:
            # Durable: what is left stays as the store has it; the next start re-queues the queued
            # builds and treats the interrupted jobs as lost (docs/design.md §10).
            unfinished = await self._unfinished()
            self.interrupted = [build.id for build in unfinished if build.status == "RUNNING"]
            self.left_queued = [build.id for build in unfinished if build.status == "QUEUE"]
            await self._state.seal()
            if unfinished:
                logger.warning("runtime closed; %d build(s) interrupted, %d left queued for the next start",
                               len(self.interrupted), len(self.left_queued))  # fmt: skip
            return
        unfinished = await self._unfinished()
        for build in unfinished:
            try:
                await self._cancel(CancelRequest(build.id, STOPPED))
            except (Conflict, NotFound):  # it finished meanwhile
                pass
        self.interrupted = [build.id for build in unfinished]
        # One deadline for all of them, not one each: 12k queued builds must
        # not mean 12k timeouts in a row.
        with anyio.move_on_after(self.config.shutdown_timeout):
            for build in unfinished:
                try:
                    await self.wait(build.id)
                except NotFound:
                    pass
        if unfinished:
            logger.warning("runtime closed; cancelled %d build(s): %s", len(unfinished),
                           some(self.interrupted))  # fmt: skip

    def stop_draining(self) -> None:
        """Cut a graceful stop's drain short (a second Ctrl-C): running builds are interrupted now."""
        self._hurry = True
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def _drain(self, timeout: float) -> None:
        """Let running builds finish for up to ``timeout`` seconds (nothing new is admitted meanwhile)."""
        running = [build.id for build in await self._unfinished(BuildStatus.RUNNING)]
        with anyio.move_on_after(0 if self._hurry else timeout) as self._drain_scope:
            for build_id in running:
                try:
                    await self.wait(build_id)
                except NotFound:
                    pass
