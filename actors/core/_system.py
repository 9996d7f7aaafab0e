"""The actor system: one task group, names, supervision roots, orderly shutdown."""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import msgspec

from ._actor import ActorFactory
from ._backend import Backend, current_backend
from ._cell import Cell, Ref
from ._dispatcher import Dispatcher
from ._errors import ActorCrashed
from ._timers import TimerHandle, TimerService

__all__ = ["ActorSystem", "Supervision", "SystemStatistics", "open_system"]

logger = logging.getLogger("actors")


class Supervision(msgspec.Struct, frozen=True):
    """How a crashed actor is treated (one_for_one, as in OTP).

    Up to ``max_restarts`` restarts within ``within`` seconds; one more crash
    in that window stops the actor for good and, if ``escalate``, crashes its
    parent (or, for a top-level actor, the whole system). ``max_restarts=0``
    never restarts.
    """

    max_restarts: int = 3
    within: float = 5.0
    escalate: bool = True


class SystemStatistics(msgspec.Struct, frozen=True):
    actors: int  # running actors; those asked to stop no longer count
    dead_letters: int
    timers_pending: int
    timers_fired: int
    dispatch_passes: int  # passes of the dispatcher over the actors with mail (``actors.core._dispatcher``)


class ActorSystem:
    """Spawns, names and stops actors; owns the timer service.

    Create one with ``open_system()``. Shutdown stops top-level actors in
    reverse order of spawning, each after its children (also in reverse
    order). A stopping actor handles the messages already in its mailbox and
    then stops; messages told after the stop request are dropped and counted
    as dead letters. Its name is free from the stop request on, so a
    directory can start a new actor under it at once (``lookup`` never
    hands out an actor that would drop what it is told). An actor that has not stopped within
    ``shutdown_timeout`` seconds is cancelled and reported in ``interrupted``.
    """

    def __init__(self, task_group: anyio.abc.TaskGroup, backend: Backend, shutdown_timeout: float) -> None:
        self.backend = backend
        self.now = backend.clock()  # the loop's clock (trio's MockClock in tests), one call per read
        self.shutdown_timeout = shutdown_timeout
        self.timers = TimerService(backend)
        self.dispatcher = Dispatcher(backend)
        self.interrupted: list[str] = []
        self._task_group = task_group
        self._names: dict[str, Cell] = {}
        self._roots: list[Cell] = []
        self._counter = itertools.count(1)
        self._dead_letters = 0
        self._failure: ActorCrashed | None = None
        self._closing = False

    # -- actors -------------------------------------------------------------

    def spawn(
        self,
        factory: ActorFactory,
        *,
        name: str | None = None,
        supervision: Supervision | None = None,
        parent: Ref | None = None,
    ) -> Ref:
        """Start an actor from ``factory`` (called again on each restart).

        ``name`` must be unique among running actors (one that was asked to
        stop has given its name up already); without one the actor gets
        ``<Class>-<n>``. Messages may be told to the returned ref at once;
        they are handled after the actor's ``started`` hook.
        """
        parent_cell = parent._cell if parent is not None else None
        # A live parent may still spawn while the system closes (e.g. from its
        # started hook): its own stop path stops those children.
        if parent_cell is None and self._closing:
            raise RuntimeError("the actor system is shutting down")
        if parent_cell is not None and parent_cell.state == "stopped":
            raise RuntimeError(f"cannot spawn under {parent_cell.name!r}: it has stopped")
        if name is None:
            name = f"{getattr(factory, '__name__', 'actor')}-{next(self._counter)}"
        elif name in self._names:
            raise ValueError(f"an actor named {name!r} is already running")
        cell = Cell(self, name, factory, supervision or Supervision(), parent_cell)
        self._names[name] = cell
        (parent_cell.children if parent_cell is not None else self._roots).append(cell)
        self._task_group.start_soon(cell.main, name=f"actor:{name}")
        return cell.ref

    def lookup(self, name: str) -> Ref:
        """The running actor called ``name`` (never one asked to stop); ``LookupError`` if there is none."""
        try:
            return self._names[name].ref
        except KeyError:
            raise LookupError(f"no running actor named {name!r}") from None

    def children(self, ref: Ref) -> list[Ref]:
        """The running children of ``ref``, oldest first."""
        return [cell.ref for cell in ref._cell.children]

    async def stop(self, ref: Ref, *, timeout: float | None = None) -> None:
        """Stop an actor (children first) and wait until it has stopped."""
        await self._stop_cell(ref._cell, self.shutdown_timeout if timeout is None else timeout)

    def stop_nowait(self, ref: Ref) -> None:
        """Ask an actor to stop (after what is queued) without waiting for it."""
        ref._cell.request_stop()

    def send_after(self, delay: float, ref: Ref, message: Any) -> TimerHandle:
        """Tell ``message`` to ``ref`` after ``delay`` seconds."""
        return self.timers.call_later(delay, ref.tell, message)

    def statistics(self) -> SystemStatistics:
        return SystemStatistics(
            actors=len(self._names),
            dead_letters=self._dead_letters,
            timers_pending=len(self.timers),
            timers_fired=self.timers.fired,
            dispatch_passes=self.dispatcher.passes,
        )

    # -- internals used by cells ------------------------------------------------

    async def _stop_cell(self, cell: Cell, timeout: float) -> None:
        await cell.stop_children(timeout)
        cell.request_stop()
        with anyio.move_on_after(timeout):
            await cell.stopped_event.wait()
            return
        self.interrupted.append(cell.name)
        logger.warning("actor %s did not stop within %gs; cancelled", cell.name, timeout)
        cell.cancel_scope.cancel()
        await cell.stopped_event.wait()

    def _release_name(self, cell: Cell) -> None:
        """Free ``cell``'s name, unless a newer actor already holds it."""
        if self._names.get(cell.name) is cell:
            del self._names[cell.name]

    def _forget(self, cell: Cell) -> None:
        self._release_name(cell)  # an actor that crashed for good was never asked to stop
        if cell in self._roots:
            self._roots.remove(cell)

    def dead_letter(self, name: str, message: Any) -> None:
        """Count ``message``, told to ``name`` where no actor runs, as a dead letter (``statistics()``).

        What a stopped actor's ``Ref`` does with a tell; for code that tells actors by name."""
        self._dead_letter(name, message)

    def _dead_letter(self, name: str, message: Any) -> None:
        self._dead_letters += 1
        logger.debug("dead letter to %s: %s", name, type(message).__name__)

    def _fatal(self, error: ActorCrashed) -> None:
        logger.critical("%s; shutting the actor system down", error)
        if self._failure is None:
            self._failure = error
        self._task_group.cancel_scope.cancel()

    async def _shutdown(self) -> None:
        self._closing = True
        for cell in reversed(list(self._roots)):
            await self._stop_cell(cell, self.shutdown_timeout)


@asynccontextmanager
async def open_system(*, shutdown_timeout: float = 10.0) -> AsyncIterator[ActorSystem]:
    """Run an actor system for the duration of the ``async with`` block.

    On exit every actor is stopped in order (see ``ActorSystem``) and no task
    is left behind. If an actor crash escalates past the top, the block is
    cancelled and ``ActorCrashed`` is raised.
    """
    backend = current_backend()
    async with anyio.create_task_group() as task_group:
        system = ActorSystem(task_group, backend, shutdown_timeout)
        task_group.start_soon(system.timers.run, name="actors:timers")
        task_group.start_soon(system.dispatcher.run, name="actors:dispatcher")
        try:
            yield system
        finally:
            with anyio.CancelScope(shield=True):
                await system._shutdown()
            task_group.cancel_scope.cancel()
    if system._failure is not None:
        raise system._failure
