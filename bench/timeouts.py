"""Queue timeouts: 100k queued builds (``--quick``: 20k) reaching one deadline together.

One group (``max-parallel: 1``, a holding build whose job waits in a pool
without nodes, ``queue-length`` N, ``queue-timeout-minutes`` 0.5 s) is
filled with N builds. Figure: the real time from the deadline to the moment
``rt.stats()`` counts the last of them ``QUEUE_TIMEOUT`` (polled every 2 ms).

Why the clock is held while they are submitted: a queued build's deadline is
its enqueue time plus the timeout, and submitting N builds takes seconds, so
on a running clock the deadlines spread over those seconds and the runtime
expires them at the pace they were submitted, which tests nothing. The run
therefore uses trio's ``MockClock`` at rate 0 while filling (every build gets
the same deadline) and sets it to rate 1 before the deadline: from then on
it is the real clock, and the expiry of all N is one burst, which is what the
target is about.

Baseline, in the same run: the time it took to submit those N builds (from
64 tasks), so the ratio is what expiring a build costs against admitting it.
Target (reported, not asserted): all ended within 1 s of the deadline.

    python -m bench.timeouts [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import trio
import trio.testing

from actors.model.vocab import BuildStatus

from ._harness import scratch_runtime, submit_many
from ._report import Row, print_table, save

TIMEOUT = 0.5  # seconds from release to the shared deadline
CONFIG = {"pools": [{"name": "hold", "nodes": []}], "max-queued-builds": 100_000_000}


def _pipeline(count: int) -> dict[str, Any]:
    return {
        "name": "expiring",
        "concurrency": {"group": "deadline", "max-parallel": 1, "queue-length": count,
                        "queue-timeout-minutes": TIMEOUT / 60},  # fmt: skip
        "jobs": {"work": {"runs-on": "hold", "steps": [{"uses": "noop"}]}},
    }


async def _expire(count: int, clock: trio.testing.MockClock, facts: dict[str, Any]) -> tuple[float, float]:
    """(seconds from the deadline to the last QUEUE_TIMEOUT, seconds to submit them)."""
    async with scratch_runtime(CONFIG) as rt:
        pipeline_id = (await rt.register_pipeline(_pipeline(count), id="expiring")).id
        await rt.submit(pipeline_id)  # the holder: runs, its job waits for a node forever
        start = time.perf_counter()
        accepted, refused = await submit_many(rt, pipeline_id, count)
        submit_seconds = time.perf_counter() - start
        (group,) = await rt.groups()
        if accepted != count or refused or len(group.queue) != count:
            raise AssertionError(f"expected {count} queued, got {accepted} accepted, {len(group.queue)} in queue")

        clock.rate = 1.0  # the clock runs from here on: the shared deadline is TIMEOUT ahead
        deadline = time.perf_counter() + TIMEOUT
        first = last = None
        while last is None:
            expired = (await rt.stats()).builds_by_status.get(BuildStatus.QUEUE_TIMEOUT, 0)
            now = time.perf_counter()
            if expired and first is None:
                first = now
            if expired == count:
                last = now
            elif now > deadline + 120:
                raise RuntimeError(f"only {expired} of {count} builds timed out 120 s after their deadline")
            await trio.sleep(0.002)
        assert first is not None
        if first < deadline:
            raise AssertionError(f"a build timed out {deadline - first:.3f}s before its deadline")
        stats = await rt.stats()
        sample = await rt.build(f"{pipeline_id}.{count + 1}")  # the last queued (5,000 finished are kept)
        if stats.builds_running != 1 or stats.builds_queued or "deadline" not in (sample.reason or ""):
            raise AssertionError(f"unexpected end state: {stats}; {sample.id}: {sample.status} {sample.reason!r}")
        facts.update(first_after_deadline_ms=(first - deadline) * 1e3, reason=sample.reason)
    return last - deadline, submit_seconds


def run(quick: bool = False) -> list[Row]:
    count = 20_000 if quick else 100_000
    facts: dict[str, Any] = {"builds": count, "timeout_seconds": TIMEOUT}
    clock = trio.testing.MockClock(rate=0)
    lag, submit_seconds = trio.run(_expire, count, clock, facts, clock=clock)
    facts.update(lag_seconds=lag, submit_seconds=submit_seconds)
    rows = [
        Row("deadline -> last QUEUE_TIMEOUT: s", lag, "s", f"submitting the {count // 1000}k: s", submit_seconds,
            "figure <= 1"),
        Row("expiry: µs per build", lag / count * 1e6, "µs", "submit: µs per build", submit_seconds / count * 1e6,
            ""),
    ]
    print_table(f"timeouts ({count} queued builds, one group, one shared deadline)", rows)
    print(f"first QUEUE_TIMEOUT seen {facts['first_after_deadline_ms']:.1f} ms after the deadline; "
          f"reason: {facts['reason']}")
    print(f"wrote {save('timeouts', rows, facts)}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20k builds instead of 100k")
    run(quick=parser.parse_args(argv).quick)


if __name__ == "__main__":
    main()
