"""``/metrics`` histograms fed live, in batches: the same counts as from the kept history.

The collector folds the kept history once, as ``Event``s (times as text),
then follows its subscription in whole batches of ``Kept`` records (times as
floats). Both paths must observe exactly the same waits.
"""

from __future__ import annotations

import random
import time
from typing import Any, cast

import pytest
import trio

from actors.events import Kept, Record
from actors.model.info import rfc3339
from actors.model.vocab import BuildStatus, EventKind, JobStatus
from runtime.http.metrics import MetricsCollector, _micro, _seconds

from .conftest import api, pipeline_yaml
from .test_metrics import _samples


def test_a_records_time_cut_to_microseconds_is_what_its_events_text_gives_back() -> None:
    rng = random.Random(7)
    now = time.time()
    stamps = [now + rng.uniform(-1e6, 1e6) for _ in range(5000)]
    stamps += [1_700_000_000.0, 1_700_000_000.9999999, 1_700_000_000.000_000_4, 1_700_000_000.5000005]
    for stamp in stamps:
        assert _micro(stamp) == _seconds(rfc3339(stamp) or ""), stamp


def test_the_live_fold_and_the_history_fold_count_alike() -> None:
    rng = random.Random(3)
    start = time.time()
    records = []
    for number in range(200):
        queued = start + number * 0.01 + rng.random() * 0.001
        running = queued + rng.choice([0.0, 0.0004999, 0.0005, 0.000_501, 0.3, 2.0, 40.0]) + rng.random() * 1e-6
        build_id = f"app.{number}"
        records += [
            Record(EventKind.BUILD, BuildStatus.QUEUE, build_id=build_id, attempt=1, time=queued),
            Record(EventKind.BUILD, BuildStatus.RUNNING, build_id=build_id, attempt=1, time=running),
            Record(EventKind.JOB, JobStatus.QUEUE, build_id=build_id, job_id="j", attempt=1, time=running),
            Record(EventKind.STEP, "RUNNING", build_id=build_id, job_id="j", step_id="s", attempt=1, time=running),
            Record(EventKind.JOB, JobStatus.RUNNING, build_id=build_id, job_id="j", attempt=1,
                   time=running + rng.random() * 0.002),
        ]  # fmt: skip
    kept = [Kept(event_id, record) for event_id, record in enumerate(records, 1)]
    live = MetricsCollector(cast(Any, None))
    for offset in range(0, len(kept), 37):  # batches that cut builds in two
        live._fold_kept(kept[offset : offset + 37])
    history = MetricsCollector(cast(Any, None))
    history._fold([k.event for k in kept])
    for name in ("queue_wait", "dispatch"):
        a, b = getattr(live, name), getattr(history, name)
        assert (a.counts, a.sum, a.count) == (b.counts, b.sum, b.count), name
    assert live.queue_wait.count == live.dispatch.count == 200
    assert live.last_id == history.last_id == len(records)


@pytest.mark.trio
async def test_builds_after_the_first_scrape_are_counted_live(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        first = await a.submit("app")
        await a.until(first["id"], "SUCCEED")
        before = _samples((await a.client.get("/metrics")).text)  # starts the collector: the history
        assert before["shunter_build_queue_wait_seconds_count"] == 1
        for _ in range(5):
            done = await a.submit("app")
            await a.until(done["id"], "SUCCEED")
        await trio.sleep(1)  # let the collector fold the live batches
        after = _samples((await a.client.get("/metrics")).text)
    assert after["shunter_build_queue_wait_seconds_count"] == 6
    assert after["shunter_job_dispatch_latency_seconds_count"] == 6
    assert after['shunter_build_queue_wait_seconds_bucket{le="+Inf"}'] == 6
    assert after["shunter_events_total"] > before["shunter_events_total"]
