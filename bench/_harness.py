"""What the runtime scenarios share: a runtime dropped fast, concurrent filling, polling stats.

Only the measured part of a scenario goes through the public API one call at
a time; filling a queue to a size beforehand is not measured, so it runs
from many tasks at once (the pipeline then drains its mailbox in batches,
about twice as fast).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

import runtime
from actors.model.info import Stats

__all__ = ["scratch_runtime", "submit_many", "until", "LEAK_FIELDS", "leaks"]

# What must be zero once every build has ended (docs/design.md §3.1 item 8).
LEAK_FIELDS = ("builds_running", "builds_queued", "jobs_running", "jobs_queued", "slots_held", "agents_busy",
               "agents_locked")  # fmt: skip


@asynccontextmanager
async def scratch_runtime(config: Mapping[str, Any]) -> AsyncIterator[runtime.Runtime]:
    """``open_runtime(config)``, dropped as a whole when the block ends.

    A clean close cancels and awaits every unfinished build with two asks
    each (and logs a line per build); with the 100k queued builds a scale
    measurement leaves behind, that takes longer than the measurement. A
    benchmark has no use for it, so the runtime's scope is cancelled instead:
    the actor system stops every actor at once.
    """
    shunter_log = logging.getLogger("shunter")
    level = shunter_log.level
    shunter_log.setLevel(logging.ERROR)
    error: BaseException | None = None
    try:
        with trio.CancelScope() as scope:
            async with runtime.open_runtime(config) as rt:
                try:
                    yield rt
                except BaseException as exc:  # re-raised below: the cancelled close must not swallow it
                    error = exc
                scope.cancel()
    finally:
        shunter_log.setLevel(level)
    if error is not None:
        raise error


async def submit_many(rt: runtime.Runtime, pipeline_id: str, count: int, concurrency: int = 64) -> tuple[int, int]:
    """Submit ``count`` builds from ``concurrency`` tasks; (accepted, refused with QueueFull)."""
    numbers = iter(range(count))
    accepted = refused = 0

    async def submitter() -> None:
        nonlocal accepted, refused
        for _ in numbers:
            try:
                await rt.submit(pipeline_id)
            except runtime.QueueFull:
                refused += 1
            else:
                accepted += 1

    async with trio.open_nursery() as nursery:
        for _ in range(min(concurrency, count)):
            nursery.start_soon(submitter)
    return accepted, refused


async def until(rt: runtime.Runtime, done: Callable[[Stats], bool], *, poll: float = 0.01,
                timeout: float = 600.0, what: str = "the runtime to settle") -> Stats:  # fmt: skip
    """Poll ``rt.stats()`` until ``done(stats)``; fail loudly after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            stats = await rt.stats()
            if done(stats):
                return stats
            await trio.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}: {await rt.stats()}")


def leaks(stats: Stats) -> dict[str, int]:
    """The counters of ``LEAK_FIELDS`` that are not zero."""
    return {field: getattr(stats, field) for field in LEAK_FIELDS if getattr(stats, field)}
