"""The few backend primitives the kernel needs, picked once per system.

anyio's portable primitives cost about twice trio's own on the trio backend
(docs/design.md §2), so the hot ones — parking a task until a message arrives and a
fairness checkpoint — are implemented directly per backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol

import anyio
import anyio.lowlevel
import sniffio
import trio

__all__ = ["Backend", "Parker", "Waker", "current_backend"]


class Waker(Protocol):
    """What a message to an actor wakes: its own task's parker, or the dispatcher's ``MailWaker``."""

    def unpark(self) -> None: ...


class Parker(Protocol):
    """Parks one task until another task, on the same loop, unparks it."""

    async def park(self) -> None: ...

    def unpark(self) -> None: ...


class _TrioParker:
    __slots__ = ("_task",)

    def __init__(self) -> None:
        self._task: trio.lowlevel.Task | None = None

    async def park(self) -> None:
        self._task = _current_task()
        await _wait_task_rescheduled(self._abort)  # a bound method, not a closure made per park

    def _abort(self, _: Any) -> trio.lowlevel.Abort:
        self._task = None
        return _SUCCEEDED

    def unpark(self) -> None:
        task = self._task
        if task is not None:
            self._task = None
            trio.lowlevel.reschedule(task)


_current_task = trio.lowlevel.current_task
_wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
_SUCCEEDED = trio.lowlevel.Abort.SUCCEEDED


class _AsyncioParker:
    __slots__ = ("_future",)

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None

    async def park(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self._future = future
        try:
            await future
        finally:
            self._future = None

    def unpark(self) -> None:
        future = self._future
        if future is not None and not future.done():
            future.set_result(None)


class Backend:
    """The backend-specific pieces: parkers, checkpoints and deadline scopes."""

    __slots__ = ("name", "new_parker", "checkpoint", "move_on_at", "clock")

    def __init__(
        self,
        name: str,
        new_parker: Callable[[], Parker],
        checkpoint: Callable[[], Any],
        move_on_at: Callable[[float], AbstractContextManager[Any]],
        clock: Callable[[], Callable[[], float]],
    ) -> None:
        self.name = name
        self.new_parker = new_parker
        self.checkpoint = checkpoint
        self.move_on_at = move_on_at
        # The running loop's own time function, fetched once per system: ``trio.current_time()``'s
        # value in one call rather than three (it goes through the runner), read per ask.
        self.clock = clock


_TRIO = Backend(
    "trio",
    _TrioParker,
    trio.lowlevel.checkpoint,
    trio.move_on_at,
    lambda: trio.lowlevel.current_clock().current_time,
)
_ASYNCIO = Backend(
    "asyncio",
    _AsyncioParker,
    anyio.lowlevel.checkpoint,
    lambda deadline: anyio.CancelScope(deadline=deadline),
    lambda: asyncio.get_running_loop().time,
)


def current_backend() -> Backend:
    """The backend of the running event loop (trio or asyncio)."""
    name = sniffio.current_async_library()
    if name == "trio":
        return _TRIO
    if name == "asyncio":
        return _ASYNCIO
    raise RuntimeError(f"shunter runs on trio or asyncio, not on {name!r}")
