"""``GET /metrics``: Prometheus text exposition of a runtime.

Gauges are read at scrape time from the public runtime API: builds by
status, jobs, slots and agents (``rt.stats()``, every integer field, so
counters added to ``Stats`` appear without a change here) and, per
concurrency group, running builds and queue depth (``rt.groups()``).

The two histograms come from the event stream, not from build snapshots:
a collector actor, started by the first scrape, folds the kept event
history (``rt.events()``), then follows ``rt.subscribe()`` live, and pairs

- a build's ``QUEUE`` event with its ``RUNNING`` event: the queue wait,
  i.e. admission through its concurrency group (a retried finished build
  waits again and counts again; a build that never starts counts nothing);
- a job attempt's ``QUEUE`` event with its ``RUNNING`` event: the dispatch
  latency, from the request for an agent to the agent starting the job.

Events see every wait exactly once, so the histograms are true cumulative
counters; counting from snapshots would miss builds the pipelines have
already forgotten and count the kept ones again at every scrape. Live, the
collector takes what its subscription holds in whole batches
(``Subscription.receive_kept``): the publishers' records with their float
times, one message to the collector per batch and no ``Event`` built for
it; a time is cut to whole microseconds as an event's text has it, so both
paths count alike. The cost is one dictionary entry per build or job
attempt while it waits, plus a few per cent of a build's CPU (the hub
handing each published batch to one more subscription); a runtime whose
``/metrics`` is never scraped pays nothing (waits older than the kept
history when the first scrape comes are not counted).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from actors.core import Actor, ActorError, Ref, Supervision
from actors.events import Kept
from actors.model.info import Event
from actors.model.vocab import BuildStatus, EventKind, JobStatus

if TYPE_CHECKING:
    from runtime._runtime import Runtime

__all__ = ["CONTENT_TYPE", "Histogram", "MetricsCollector", "render", "start_collector"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

QUEUE_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600)
DISPATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 600)
_MAX_PENDING = 200_000  # waits tracked at once; past it the oldest are forgotten
_BUILD, _JOB = EventKind.BUILD, EventKind.JOB
_QUEUED, _RUNNING = JobStatus.QUEUE, JobStatus.RUNNING  # builds say them alike

_HELP = {
    "builds_running": "Builds running now.",
    "builds_queued": "Builds waiting in a concurrency group.",
    "builds_finished": "Finished builds the runtime still counts.",
    "jobs_running": "Job attempts holding an agent.",
    "jobs_queued": "Job attempts waiting for a slot or an agent.",
    "slots_held": "Job slots held.",
    "agents": "Agents on all nodes.",
    "agents_busy": "Agents running a job.",
    "agents_locked": "Agents held by lock-resource-with, idle or not.",
}


class Histogram:
    """A cumulative Prometheus histogram with fixed upper bounds."""

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, help_text: str) -> list[str]:
        lines = [f"# HELP {name} {help_text}", f"# TYPE {name} histogram"]
        total = 0
        for bound, count in zip((*self.bounds, math.inf), self.counts):
            total += count
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            lines.append(f'{name}_bucket{{le="{le}"}} {total}')
        lines.append(f"{name}_sum {self.sum:.6f}")
        lines.append(f"{name}_count {self.count}")
        return lines


class _Observe(msgspec.Struct, frozen=True):
    batch: list[Kept]


class _Render(msgspec.Struct, frozen=True):
    pass


class MetricsCollector(Actor):
    """Folds the event stream into the histograms; ``_Render`` asks for their text."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.queue_wait = Histogram(QUEUE_WAIT_BUCKETS)
        self.dispatch = Histogram(DISPATCH_BUCKETS)
        self.build_queued: dict[str, float] = {}
        self.job_queued: dict[tuple[str | None, str | None, int | None], float] = {}
        self.last_id = 0

    async def started(self) -> None:
        # Fold what the hub still keeps before the first message (the first
        # scrape's _Render) is handled, then follow live from there.
        self._fold(await self.rt.events(after=self.last_id))
        self.start_task(self._follow, self.last_id)

    async def _follow(self, after: int) -> None:
        # Unbounded like a mailbox: this reader only forwards, never waits on anyone.
        async with self.rt.subscribe(after=after, buffer=math.inf) as events:
            while True:
                try:
                    batch = await events.receive_kept()  # all that is waiting: one message per batch
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    return
                self.ref.tell(_Observe(batch))

    def receive(self, message: Any) -> Any:
        if type(message) is _Observe:
            self._fold_kept(message.batch)
            return None
        if type(message) is _Render:
            return [
                *self.queue_wait.render("shunter_build_queue_wait_seconds",
                                        "Time builds waited in their concurrency group before running."),
                *self.dispatch.render("shunter_job_dispatch_latency_seconds",
                                      "Time from a job attempt's request for an agent until the agent started it."),
                "# HELP shunter_events_total State-change events published.",
                "# TYPE shunter_events_total counter",
                f"shunter_events_total {self.last_id}",
            ]  # fmt: skip
        raise TypeError(f"metrics collector got an unexpected {type(message).__name__}")

    def _fold(self, events: list[Event]) -> None:
        # The kept history, once, as events: their times are text.
        for event in events:
            self.last_id = max(self.last_id, event.id)
            if event.kind == _BUILD:
                self._pair(self.build_queued, event.build_id or "", event.status, event.time, _seconds,
                           self.queue_wait)  # fmt: skip
            elif event.kind == _JOB:
                self._pair(self.job_queued, (event.build_id, event.job_id, event.attempt), event.status,
                           event.time, _seconds, self.dispatch)  # fmt: skip

    def _fold_kept(self, batch: list[Kept]) -> None:
        # Live, as the hub keeps them: the publishers' records, their times floats. _pair inlined:
        # six build and job records per build pass here, and the call was a third of the cost.
        build_queued, job_queued, queue_wait, dispatch = self.build_queued, self.job_queued, self.queue_wait, self.dispatch
        for kept in batch:
            record = kept.record
            kind = record.kind
            if kind is _BUILD:
                pending: dict[Any, float] = build_queued
                key: Any = record.build_id or ""
                histogram = queue_wait
            elif kind is _JOB:
                pending, key, histogram = job_queued, (record.build_id, record.job_id, record.attempt), dispatch
            else:
                continue
            status = record.status
            if status == _QUEUED:
                pending[key] = _micro(record.time)
                if len(pending) > _MAX_PENDING:
                    del pending[next(iter(pending))]
                continue
            since = pending.pop(key, None)
            if since is not None and status == _RUNNING:
                histogram.observe(max(0.0, _micro(record.time) - since))
        if batch:
            self.last_id = max(self.last_id, batch[-1].id)

    @staticmethod
    def _pair(pending: dict[Any, float], key: Any, status: str | None, stamp: Any, seconds: Callable[[Any], float],
              histogram: Histogram) -> None:  # fmt: skip
        # builds and jobs say QUEUE and RUNNING alike; a time is converted only where it is used
        if status == JobStatus.QUEUE:
            pending[key] = seconds(stamp)
            if len(pending) > _MAX_PENDING:
                del pending[next(iter(pending))]
            return
        since = pending.pop(key, None)
        if since is not None and status == JobStatus.RUNNING:
            histogram.observe(max(0.0, seconds(stamp) - since))


def _seconds(rfc3339: str) -> float:
    try:
        return datetime.fromisoformat(rfc3339).timestamp()
    except ValueError:
        return 0.0


def _micro(timestamp: float) -> float:
    """A record's time as its event's text gives it back (``_seconds``): cut to whole microseconds.

    The same arithmetic as ``rfc3339`` (whole seconds, then the fraction
    truncated to microseconds) and as ``datetime.timestamp()`` (microseconds
    over 10**6), so the live and the history paths observe the same values.
    """
    seconds = int(timestamp)
    return (seconds * 1_000_000 + int((timestamp - seconds) * 1e6)) / 1_000_000


def start_collector(rt: Runtime) -> Ref | None:
    """Spawn the collector in the runtime's actor system (None if the runtime is closing)."""
    try:
        return rt.system.spawn(lambda: MetricsCollector(rt), supervision=Supervision(max_restarts=3, within=60,
                                                                                    escalate=False))  # fmt: skip
    except RuntimeError:
        return None


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _gauge(name: str, help_text: str, samples: Iterable[tuple[str, float]]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)
    return lines


async def render(rt: Runtime, collector: Ref | None, *, sse_clients: int = 0) -> str:
    """The whole exposition text for one scrape."""
    stats = await rt.stats()
    groups = await rt.groups()
    lines = _gauge("shunter_builds", "Builds by status (finished ones while the runtime keeps them).",
                   ((f'{{status="{status}"}}', stats.builds_by_status.get(status, 0)) for status in BuildStatus))
    for field in msgspec.structs.fields(type(stats)):
        value = getattr(stats, field.name)
        if isinstance(value, int) and not isinstance(value, bool):
            lines += _gauge(f"shunter_{field.name}", _HELP.get(field.name, field.name.replace("_", " ") + "."),
                            [("", value)])
    lines += _gauge("shunter_group_running", "Builds running in each concurrency group.",
                    ((f'{{group="{_escape(g.name)}"}}', len(g.running)) for g in groups))
    lines += _gauge("shunter_group_queue_depth", "Builds queued in each concurrency group.",
                    ((f'{{group="{_escape(g.name)}"}}', len(g.queue)) for g in groups))
    lines += _gauge("shunter_group_max_parallel", "max-parallel of each concurrency group.",
                    ((f'{{group="{_escape(g.name)}"}}', g.max_parallel) for g in groups))
    lines += _gauge("shunter_sse_clients", "Open /v1/events streams.", [("", sse_clients)])
    if collector is not None:
        try:
            lines += await collector.ask(_Render())
        except ActorError:
            pass  # the collector is restarting: this scrape goes without the histograms
    return "\n".join(lines) + "\n"
