"""Small actors and probes shared by the kernel tests."""

from __future__ import annotations

from typing import Any

import anyio
import sniffio

from actors.core import Actor


class Recorder(Actor):
    """Records every message; replies to asks with the message."""

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log = log if log is not None else []

    def receive(self, message: Any) -> Any:
        self.log.append(message)
        return message


class Hang(Actor):
    """Never replies: its async receive sleeps forever."""

    async def receive(self, message: Any) -> Any:
        await anyio.sleep_forever()


def running_tasks() -> int:
    """How many tasks the event loop has right now (both backends)."""
    if sniffio.current_async_library() == "trio":
        import trio

        def count(task: trio.lowlevel.Task) -> int:
            return 1 + sum(count(child) for nursery in task.child_nurseries for child in nursery.child_tasks)

        return count(trio.lowlevel.current_root_task())
    import asyncio

    return len([t for t in asyncio.all_tasks() if not t.done()])


async def wait_until(predicate: Any, *, timeout: float = 5.0) -> None:
    """Poll ``predicate`` between short sleeps (clock-driven under MockClock)."""
    with anyio.fail_after(timeout):
        while not predicate():
            await anyio.sleep(0.001)
