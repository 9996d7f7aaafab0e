"""``GET /metrics``: Prometheus text with gauges from the runtime and histograms from the events."""

from __future__ import annotations

import math
import re

import pytest
import trio

from runtime.http.metrics import Histogram

from .conftest import GATED, api, pipeline_yaml

_SAMPLE = re.compile(r'^([a-z_]+)(\{[^}]*\})? (-?[0-9.e+]+|\+Inf)$')


def _samples(text: str) -> dict[str, float]:
    samples = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, f"not a Prometheus sample: {line!r}"
        samples[(match.group(1) + (match.group(2) or ""))] = float(match.group(3))
    return samples


def test_histogram_is_cumulative() -> None:
    histogram = Histogram([0.1, 1])
    for value in (0.05, 0.1, 0.5, 7):
        histogram.observe(value)
    lines = histogram.render("x_seconds", "help")
    assert lines[:2] == ["# HELP x_seconds help", "# TYPE x_seconds histogram"]
    assert lines[2:] == ['x_seconds_bucket{le="0.1"} 2', 'x_seconds_bucket{le="1"} 3', 'x_seconds_bucket{le="+Inf"} 4',
                         "x_seconds_sum 7.650000", "x_seconds_count 4"]  # fmt: skip
    assert math.isclose(histogram.sum, 7.65)


@pytest.mark.trio
async def test_metrics_text(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        await a.put_pipeline("gated", GATED.replace("jobs:", 'concurrency: {group: "q\\"1", queue-length: 5}\njobs:'))
        for _ in range(3):
            done = await a.submit("app")
            await a.until(done["id"], "SUCCEED")
        held = await a.submit("gated")
        await a.submit("gated")
        await a.until(held["id"], "RUNNING")
        await trio.sleep(1)  # let the collector fold the events
        response = await a.client.get("/metrics")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = _samples(response.text)
        assert samples['shunter_builds{status="SUCCEED"}'] == 3
        assert samples['shunter_builds{status="RUNNING"}'] == 1
        assert samples['shunter_builds{status="QUEUE"}'] == 1
        assert samples['shunter_builds{status="QUEUE_TIMEOUT"}'] == 0
        assert samples['shunter_group_queue_depth{group="q\\"1"}'] == 1
        assert samples['shunter_group_running{group="q\\"1"}'] == 1
        assert samples["shunter_agents_busy"] == 1 and samples["shunter_agents"] == 2
        assert samples["shunter_sse_clients"] == 0
        # 4 builds started (3 done, 1 running); the queued one has not waited its turn yet.
        assert samples["shunter_build_queue_wait_seconds_count"] == 4
        assert samples['shunter_build_queue_wait_seconds_bucket{le="+Inf"}'] == 4
        assert samples["shunter_job_dispatch_latency_seconds_count"] == 4
        assert samples["shunter_events_total"] >= 20
        a.open("g")
