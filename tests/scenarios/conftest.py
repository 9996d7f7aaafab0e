"""Helpers for the scenario tests of docs/design.md §3.1 behaviours 1-5.

- :func:`scenario` opens a runtime (``runtime.open_runtime``) with one pool
  ``default`` of one node ``n1`` and registers the probe actions ``hold``
  and ``flaky``. Use it in ``@pytest.mark.trio`` tests that take the
  ``autojump_clock`` fixture: every wait is virtual time.
- :class:`Probe` records every start and end of its actions (which build,
  job and step; how it ended) and holds ``hold`` steps until the test
  releases them, so a test decides exactly when a job ends.
- :func:`pipeline` builds pipeline YAML from Python data (no template
  escaping), wiring the probe steps to their build and job.
- :class:`Scenario` wraps the runtime with polling waits that fail with a
  readable summary of the build instead of hanging.

Only ``uses:`` steps appear here: a real process would let the autojump
clock run past the timeouts under test.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
import yaml

import runtime
from actors.execution.actions import ActionFailed
from actors.model.vocab import BUILD_FINAL

BUILD_ID = "${{ ci.build_id }}"


# --- probe actions ----------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One call of a probe action.

    ``keys`` holds every build identity the step carried (its
    ``step.build_id`` and the rendered ``with.build``); a test matches a
    run to a build with ``build_id in run.keys``.
    """

    keys: frozenset[str]
    job: str
    step: str
    action: str
    seq: int

    @property
    def build(self) -> str:
        return min(self.keys) if self.keys else ""

    def of(self, build_id: str, job: str | None = None) -> bool:
        return build_id in self.keys and (job is None or self.job == job)


@dataclass
class Probe:
    """Actions that record what runs, and hold ``hold`` steps until released."""

    starts: list[Run] = field(default_factory=list)
    ends: list[tuple[Run, str]] = field(default_factory=list)
    """(run, outcome): ``succeeded``, ``failed``, ``cancelled``, ``raised X``,
    then ``stopped`` once a slow-stopping hold has finished its clean-up."""
    active: list[Run] = field(default_factory=list)
    max_active_builds: int = 0
    """Most builds that had a probe action running at the same instant."""
    flaky_calls: collections.Counter[tuple[str, str, str]] = field(
        default_factory=collections.Counter
    )
    _end_seq: list[int] = field(default_factory=list)
    _released: set[tuple[str, str | None]] = field(default_factory=set)
    _release_all: bool = False
    _changed: trio.Event = field(default_factory=trio.Event)
    _seq: int = 0

    # -- the actions ------------------------------------------------------------

    async def hold(self, step: Any) -> None:
        """``uses: hold``: runs until the test releases its build or job.

        With ``with.stop_seconds`` it takes that long (virtual time) to stop
        when cancelled, still counted as running meanwhile.
        """
        run = self._begin(step, "hold")
        stop = float(step.with_.get("stop_seconds", 0) or 0)
        try:
            while not self._is_released(run):
                await self._changed.wait()
        except BaseException as exc:
            outcome = "cancelled" if isinstance(exc, trio.Cancelled) else f"raised {type(exc).__name__}"
            self._note(run, outcome)
            if stop:
                with trio.CancelScope(shield=True):
                    await trio.sleep(stop)
                self._note(run, "stopped")
            self._finish(run)
            raise
        self._note(run, "succeeded")
        self._finish(run)

    async def flaky(self, step: Any) -> None:
        """``uses: flaky``: fails its first ``with.fails`` calls (default 1) per
        build, job and step, then succeeds."""
        run = self._begin(step, "flaky")
        key = (run.build, run.job, run.step)
        self.flaky_calls[key] += 1
        fails = int(step.with_.get("fails", 1))
        try:
            await trio.sleep(0)
        finally:
            self._finish(run)
        if self.flaky_calls[key] <= fails:
            self._note(run, "failed")
            raise ActionFailed(f"flaky failure {self.flaky_calls[key]} of {fails}")
        self._note(run, "succeeded")

    # -- what the test does -------------------------------------------------------

    def release(self, build_id: str, job: str | None = None) -> None:
        """Let the ``hold`` steps of ``build_id`` (of one ``job`` only, if given)
        finish, now and whenever they run again."""
        self._released.add((build_id, job))
        self._notify()

    def release_all(self) -> None:
        """Let every ``hold`` step finish, now and later."""
        self._release_all = True
        self._notify()

    def runs(self, build_id: str, job: str | None = None, action: str | None = None) -> list[Run]:
        """Starts of probe actions of a build (and job, action), in order."""
        return [
            r for r in self.starts if r.of(build_id, job) and (action is None or r.action == action)
        ]

    def started(self, build_id: str, job: str | None = None) -> bool:
        return bool(self.runs(build_id, job))

    def outcomes(self, build_id: str, job: str | None = None) -> list[str]:
        """How the probe actions of a build (and job) ended, in order."""
        return [outcome for run, outcome in self.ends if run.of(build_id, job)]

    def is_active(self, build_id: str, job: str | None = None) -> bool:
        return any(r.of(build_id, job) for r in self.active)

    def start_order(self, build_ids: Iterable[str]) -> list[str]:
        """``build_ids`` that have started, by the time of their first probe action."""
        ids = list(build_ids)
        order: list[str] = []
        for run in self.starts:
            for build_id in ids:
                if build_id in run.keys and build_id not in order:
                    order.append(build_id)
        return order

    def first_start(self, build_id: str) -> int:
        """Sequence number of the build's first probe action (for ordering)."""
        return min(r.seq for r in self.runs(build_id))

    def seq_of(self, build_id: str, outcome: str) -> int:
        """Sequence number at which a probe action of the build ended with ``outcome``."""
        for index, (run, got) in enumerate(self.ends):
            if run.of(build_id) and got == outcome:
                return self._end_seq[index]
        raise AssertionError(f"no probe action of {build_id} ended {outcome!r}: {self.ends}")

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        """Wait (virtual time) until ``predicate()`` holds after some probe event."""
        with trio.move_on_after(timeout):
            while not predicate():
                await self._changed.wait()
            return
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; probe: {self.summary()}")

    async def until_started(self, build_id: str, job: str | None = None, count: int = 1) -> None:
        what = f"{count} probe start(s) of build {build_id}" + (f" job {job}" if job else "")
        await self.until(lambda: len(self.runs(build_id, job)) >= count, what)

    def summary(self) -> str:
        starts = ", ".join(f"{r.build}/{r.job}/{r.step}:{r.action}" for r in self.starts)
        ends = ", ".join(f"{r.build}/{r.job}/{r.step}={o}" for r, o in self.ends)
        return f"starts=[{starts}] ends=[{ends}]"

    # -- internals --------------------------------------------------------------

    def _begin(self, step: Any, action: str) -> Run:
        self._seq += 1
        with_: Mapping[str, Any] = getattr(step, "with_", None) or {}
        keys = set()
        for candidate in (getattr(step, "build_id", None), with_.get("build")):
            if candidate and "${{" not in str(candidate):
                keys.add(str(candidate))
        job = str(with_.get("job") or getattr(step, "job_id", "") or "")
        step_id = str(getattr(step, "step_id", "") or with_.get("step") or "")
        run = Run(frozenset(keys), job, step_id, action, self._seq)
        self.starts.append(run)
        self.active.append(run)
        builds = {r.build for r in self.active}
        self.max_active_builds = max(self.max_active_builds, len(builds))
        self._notify()
        return run

    def _note(self, run: Run, outcome: str) -> None:
        self._seq += 1
        self.ends.append((run, outcome))
        self._end_seq.append(self._seq)
        self._notify()

    def _finish(self, run: Run) -> None:
        if run in self.active:
            self.active.remove(run)
        self._notify()

    def _is_released(self, run: Run) -> bool:
        if self._release_all:
            return True
        return any((key, None) in self._released or (key, run.job) in self._released for key in run.keys)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


# --- pipelines --------------------------------------------------------------------


def hold_step(id: str = "hold", *, stop_seconds: float | None = None) -> dict[str, Any]:
    """A step that runs until ``probe.release`` (see :meth:`Probe.hold`)."""
    step: dict[str, Any] = {"id": id, "uses": "hold@1", "with": {}}
    if stop_seconds:
        step["with"]["stop_seconds"] = stop_seconds
    return step


def flaky_step(id: str = "make", *, fails: int = 1) -> dict[str, Any]:
    """A step that fails its first ``fails`` runs per build, then succeeds."""
    return {"id": id, "uses": "flaky@1", "with": {"fails": fails}}


def noop_step(id: str) -> dict[str, Any]:
    return {"id": id, "uses": "noop@1"}


def echo_step(id: str, text: str = "hello") -> dict[str, Any]:
    return {"id": id, "uses": "echo@1", "with": {"text": text}}


JobsSpec = Mapping[str, Sequence[dict[str, Any]] | Mapping[str, Any]]


def _jobs(jobs: JobsSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for job_id, value in jobs.items():
        body: dict[str, Any] = {"steps": list(value)} if isinstance(value, Sequence) else dict(value)
        steps = []
        for step in body["steps"]:
            step = dict(step)
            if step.get("uses", "").split("@")[0] in ("hold", "flaky"):
                # Tie the probe step to its build and job, whatever the runtime
                # puts on the step context.
                step["with"] = {**step.get("with", {}), "build": BUILD_ID, "job": job_id}
                step["with"].setdefault("step", step.get("id", ""))
            steps.append(step)
        body["steps"] = steps
        out[job_id] = body
    return out


def pipeline(
    name: str,
    jobs: JobsSpec | None = None,
    *,
    stages: Sequence[tuple[str, JobsSpec]] | None = None,
    group: str | None = "${{ ci.pipeline_id }}",
    max_parallel: int = 1,
    queue_length: int = 10,
    queue_timeout_minutes: float = 480,
    cancel_in_progress: bool = False,
    on_queue_full: str = "reject",
    variables: Mapping[str, str] | None = None,
) -> str:
    """Pipeline YAML: either top-level ``jobs`` or named ``stages``; a
    concurrency group unless ``group`` is None."""
    doc: dict[str, Any] = {"version": "v3.0", "name": name}
    if variables:
        doc["variables"] = dict(variables)
    if group is not None:
        doc["concurrency"] = {
            "group": group,
            "max-parallel": max_parallel,
            "queue-length": queue_length,
            "queue-timeout-minutes": queue_timeout_minutes,
            "cancel-in-progress": cancel_in_progress,
            "on-queue-full": on_queue_full,
        }
    if stages is not None:
        doc["stages"] = [{"name": stage, "jobs": _jobs(js)} for stage, js in stages]
    else:
        doc["jobs"] = _jobs(jobs or {"work": [hold_step()]})
    return yaml.safe_dump(doc, sort_keys=False)


# --- the runtime --------------------------------------------------------------------


def ts(text: str) -> dt.datetime:
    """Parse an RFC 3339 time of the API."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def waiting_events(subscription: Any) -> list[Any]:
    """Every event a subscription holds now, without waiting for more."""
    events = []
    while True:
        try:
            events.append(subscription.receive_nowait())
        except Exception:  # anyio.WouldBlock: nothing more yet (or the stream ended)
            return events


def describe(build: Any) -> str:
    """A one-line summary of a BuildInfo for assertion messages."""
    parts = [
        f"{build.id} #{build.number} {build.status} exec={build.execute_count} "
        f"group={build.group} pos={build.queue_position} reason={build.reason!r}"
    ]
    for stage in build.stages:
        for job in stage.jobs:
            steps = ",".join(
                f"{s.id}:{'/'.join(a.status for a in s.attempts) or s.status}" for s in job.steps
            )
            parts.append(f"{job.id}={job.status}[{steps}]")
    return " ".join(parts)


class Scenario:
    """A runtime, its probe, and waits that explain themselves when they time out."""

    def __init__(self, rt: Any, probe: Probe) -> None:
        self.rt = rt
        self.probe = probe

    async def register(self, yaml_text: str, id: str) -> Any:
        return await self.rt.register_pipeline(yaml_text, id=id)

    async def submit(self, pipeline_id: str, variables: Mapping[str, str] | None = None) -> Any:
        if variables is None:
            return await self.rt.submit(pipeline_id)
        return await self.rt.submit(pipeline_id, variables=dict(variables))

    async def build(self, build_id: str) -> Any:
        return await self.rt.build(build_id)

    async def until(
        self, build_id: str, predicate: Callable[[Any], bool], what: str, timeout: float = 5.0
    ) -> Any:
        """Poll ``rt.build`` every virtual millisecond until ``predicate`` holds."""
        build = await self.rt.build(build_id)
        with trio.move_on_after(timeout):
            while not predicate(build):
                await trio.sleep(0.001)
                build = await self.rt.build(build_id)
            return build
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what}; build: {describe(build)}; "
            f"probe: {self.probe.summary()}"
        )

    async def until_status(self, build_id: str, *statuses: str, timeout: float = 5.0) -> Any:
        return await self.until(
            build_id, lambda b: b.status in statuses, f"status in {statuses}", timeout
        )

    async def running(self, build_id: str) -> Any:
        """Wait until the build is RUNNING and a probe action of it has started."""
        build = await self.until_status(build_id, "RUNNING")
        await self.probe.until_started(build_id)
        return build

    async def finished(self, build_id: str, timeout: float = 600.0) -> Any:
        """``rt.wait`` bounded in virtual time."""
        with trio.move_on_after(timeout):
            build = await self.rt.wait(build_id)
            assert build.status in BUILD_FINAL, describe(build)
            return build
        raise AssertionError(
            f"build {build_id} not finished after {timeout}s: {describe(await self.rt.build(build_id))}"
        )

    async def group(self, name: str) -> Any:
        groups = await self.rt.groups()
        for group in groups:
            if group.name == name:
                return group
        raise AssertionError(f"no group {name!r} in {[g.name for g in groups]}")

    async def queue(self, name: str) -> list[str]:
        """Build ids queued in a group, by position; checks positions are 1..n."""
        group = await self.group(name)
        entries = sorted(group.queue, key=lambda e: e.position)
        assert [e.position for e in entries] == list(range(1, len(entries) + 1)), group.queue
        return [e.build_id for e in entries]

    async def positions(self, *build_ids: str) -> list[int | None]:
        return [(await self.rt.build(b)).queue_position for b in build_ids]


def config(agents: int = 8) -> dict[str, Any]:
    return {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": agents}]}]}


@asynccontextmanager
async def scenario(*, agents: int = 8, limit: float = 3 * 3600.0) -> AsyncIterator[Scenario]:
    """A runtime with the probe actions registered, bounded by ``limit``
    virtual seconds (a deadlock fails the test instead of hanging it).

    On the way out every held step is released; builds still running are left
    to the runtime's shutdown.
    """
    probe = Probe()
    with trio.fail_after(limit):
        async with runtime.open_runtime(config(agents)) as rt:
            rt.register_action("hold", probe.hold)
            rt.register_action("flaky", probe.flaky)
            try:
                yield Scenario(rt, probe)
            finally:
                probe.release_all()
