"""Kernel benchmarks: tell throughput, ask round trip, 8-worker dispatch.

Each figure is measured beside the raw trio floor in the same run:
    python -m bench.kernel [--quick]
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from typing import Any

import trio

from actors.core import Actor, Ref, open_system

from ._report import Row, best_of, print_table, save


# -- tell throughput ---------------------------------------------------------


class _Counter(Actor):
    def __init__(self) -> None:
        self.count = 0

    def receive(self, message: Any) -> Any:
        self.count += 1
        return self.count


async def _actor_tell(n: int) -> float:
    async with open_system() as system:
        ref = system.spawn(_Counter)
        await ref.ask(None)
        start = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        await ref.ask(None)
        return (time.perf_counter() - start) / n * 1e6


# -- ask round trip ------------------------------------------------------------


async def _actor_ask(n: int) -> float:
    async with open_system() as system:
        ref = system.spawn(_Counter)
        await ref.ask(None)
        start = time.perf_counter()
        for i in range(n):
            await ref.ask(i)
        return (time.perf_counter() - start) / n * 1e6


async def _channel_ping_pong(n: int) -> float:
    ping_send, ping_receive = trio.open_memory_channel[Any](0)
    pong_send, pong_receive = trio.open_memory_channel[Any](0)

    async def ponger() -> None:
        async for message in ping_receive:
            await pong_send.send(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ponger)
        start = time.perf_counter()
        for i in range(n):
            await ping_send.send(i)
            await pong_receive.receive()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n * 1e6


# -- 8-worker dispatch ---------------------------------------------------------


class _Dispatcher(Actor):
    """Hands jobs to idle workers; a worker reports back when done."""

    def __init__(self, workers: int, total: int, done: trio.Event) -> None:
        self.worker_count = workers
        self.total = total
        self.done = done
        self.pending: list[int] = []
        self.idle: list[Ref] = []
        self.finished = 0

    async def started(self) -> None:
        self.idle = [self.spawn(lambda: _Worker(self.ref)) for _ in range(self.worker_count)]

    def receive(self, message: Any) -> Any:
        if isinstance(message, int):
            self.pending.append(message)
        elif isinstance(message, Ref):  # a worker is idle again
            self.finished += 1
            self.idle.append(message)
            if self.finished == self.total:
                self.done.set()
        while self.pending and self.idle:
            self.idle.pop().tell(self.pending.pop())
        return None


class _Worker(Actor):
    def __init__(self, dispatcher: Ref) -> None:
        self.dispatcher = dispatcher

    def receive(self, message: Any) -> Any:
        self.dispatcher.tell(self.ref)


async def _actor_dispatch(n: int) -> float:
    done = trio.Event()
    async with open_system() as system:
        ref = system.spawn(lambda: _Dispatcher(8, n, done))
        await ref.ask("warm")  # starts the workers; neither a job nor a worker
        start = time.perf_counter()
        for i in range(n):
            ref.tell(i)
        await done.wait()
        return (time.perf_counter() - start) / n * 1e6


async def channel_floor(n: int, workers: int = 8) -> float:
    """The raw floor: one trio memory channel feeding ``workers`` tasks (µs per item)."""
    send, receive = trio.open_memory_channel[Any](math.inf)
    finished = 0
    done = trio.Event()

    async def worker() -> None:
        nonlocal finished
        async for _ in receive:
            finished += 1
            if finished == n:
                done.set()

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker)
        await trio.sleep(0)
        start = time.perf_counter()
        for i in range(n):
            send.send_nowait(i)
        await done.wait()
        elapsed = time.perf_counter() - start
        nursery.cancel_scope.cancel()
    return elapsed / n * 1e6


def run(quick: bool = False) -> list[Row]:
    n = 50_000 if quick else 200_000
    asks = 5_000 if quick else 20_000
    repeats = 3 if quick else 5

    one_consumer = functools.partial(channel_floor, workers=1)

    def measure(fn: Any, count: int) -> float:
        return best_of(repeats, lambda: trio.run(fn, count))

    rows = [
        Row("tell: µs per message", measure(_actor_tell, n), "µs",
            "trio channel send_nowait", measure(one_consumer, n), "ratio <= 2.0 (>= 0.5x throughput)"),
        Row("ask: µs per round trip", measure(_actor_ask, asks), "µs",
            "trio ping-pong round trip", measure(_channel_ping_pong, asks), "ratio <= 2.0"),
        Row("dispatch to 8 workers: µs/job", measure(_actor_dispatch, n // 2), "µs",
            "channel feeding 8 workers", measure(channel_floor, n // 2), ""),
    ]
    print_table("kernel", rows)
    path = save("kernel", rows)
    print(f"wrote {path}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller runs, fewer repeats")
    args = parser.parse_args(argv)
    run(quick=args.quick)


if __name__ == "__main__":
    main()
