"""Dispatch cost against pool size and queue length (the pool's placement core).

Every agent is busy and jobs wait; each measured cycle is what the pool does
when an attempt ends: release its slots and agent, grant them to the oldest
fitting waiter, and take a new request in (so the queue length stays put).
The figure is µs per cycle; the baseline is the smallest size measured in
the same run, so the ratio shows how cost grows with size:

    python -m bench.dispatch_scale [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Hashable

from actors.dispatch.placement import Placement, Request

from ._report import Row, best_of, print_table, save

KEYS = [("app", "build"), ("app", "test"), ("lib", "build"), ("lib", "lint")]


def _request(token: int, key_index: int) -> Request:
    key = KEYS[key_index % len(KEYS)]
    labels = frozenset({"linux"}) if key_index % 2 else frozenset()
    return Request(token=token, build_id=f"b{token}", key=key, labels=labels, per_node=2, total=None)


def measure(nodes: int, waiting: int, cycles: int) -> float:
    placement = Placement()
    for index in range(nodes):
        name = f"n{index}"
        placement.add_node(name, frozenset({"linux"}))
        placement.add_agent(name, f"{name}/0")
    token = 0
    running: list[Hashable] = []
    for _ in range(nodes):  # fill every agent
        token += 1
        assert placement.request(_request(token, token)) is not None
        running.append(token)
    for _ in range(waiting):  # then the queue
        token += 1
        assert placement.request(_request(token, token)) is None
    start = time.perf_counter()
    for cycle in range(cycles):
        done = running[cycle]
        _, grants = placement.release(done)
        running.extend(grant.request.token for grant in grants)
        token += 1
        if placement.request(_request(token, token)) is not None:
            running.append(token)
    elapsed = time.perf_counter() - start
    assert len(placement.waiting) == waiting and len(placement.granted) == nodes
    return elapsed / cycles * 1e6


def run(quick: bool = False) -> list[Row]:
    cycles = 20_000 if quick else 100_000
    repeats = 3 if quick else 5

    def cost(nodes: int, waiting: int) -> float:
        return best_of(repeats, lambda: measure(nodes, waiting, cycles))

    small_nodes = cost(10, 1_000)
    rows = [
        Row("10k nodes, 1k waiting: µs/dispatch", cost(10_000, 1_000), "µs",
            "10 nodes, 1k waiting", small_nodes, "ratio <= 1.5"),
        Row("10 nodes, 100k waiting: µs/dispatch", cost(10, 100_000), "µs",
            "10 nodes, 1k waiting", small_nodes, "ratio <= 1.5"),
    ]
    print_table("dispatch scale (pool placement core)", rows)
    print(f"wrote {save('dispatch_scale', rows)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()


