"""Helpers for the dispatch scenarios of docs/design.md §3.1 behaviours 6-12 (issue 4).

- :func:`dispatch_scenario` opens a runtime with any pools, nodes and
  heartbeat settings, and registers the probe actions of
  :mod:`.conftest` (``hold``, ``flaky``) plus ``export``, ``peek`` and
  ``touch`` (agent context and workspace probes).
- :class:`DispatchProbe` is the conftest :class:`Probe` that also records
  where every probe action ran (``SHUNTER_NODE``, ``SHUNTER_AGENT``) and
  keeps, at every instant, how many actions of each job key run per node
  and in total, with the maxima reached. An action runs inside its job's
  slot, so these counts never exceed the slots held: a maximum above a
  limit proves the limit was broken at some instant.
- :class:`DispatchScenario` adds polling waits on jobs, nodes, waiting jobs
  and stats that explain themselves when they time out, and
  :meth:`DispatchScenario.assert_quiet`, the "nothing leaked" check of
  behaviour 8.

Only ``uses:`` steps under the autojump clock (see conftest).
"""

from __future__ import annotations

import collections
import datetime as dt
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

import runtime
from actors.execution.actions import ActionFailed
from actors.model.vocab import AgentStatus

from .conftest import Probe, Run, Scenario, describe, ts
from .remote_helpers import KINDS, remote_nodes

AGENTS = ["local"]


@pytest.fixture(params=KINDS)
def agent_kind(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a test module's scenarios on local agents and on remote ones (docs/design.md §11): a
    module opts in with ``pytestmark = pytest.mark.usefixtures("agent_kind")``, importing it."""
    AGENTS[0] = request.param
    try:
        yield request.param
    finally:
        AGENTS[0] = "local"
"""Where ``dispatch_scenario`` puts the configured nodes: ``local``, or ``remote``
(served by in-process agent processes); a test module's fixture switches it."""

# --- configuration ------------------------------------------------------------------


def node(name: str, agents: int = 1, labels: Sequence[str] = ()) -> dict[str, Any]:
    return {"name": name, "agents": agents, "labels": list(labels)}


def dispatch_config(
    nodes: Sequence[Mapping[str, Any]] = (),
    *,
    pools: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    heartbeat_interval: float = 5.0,
    heartbeat_timeout: float = 30.0,
) -> dict[str, Any]:
    """A runtime config: ``nodes`` in pool ``default`` (plus ``pools`` by name)."""
    all_pools: dict[str, list[dict[str, Any]]] = {"default": [dict(n) for n in nodes]}
    for name, members in (pools or {}).items():
        all_pools.setdefault(name, []).extend(dict(n) for n in members)
    return {
        "pools": [{"name": name, "nodes": members} for name, members in all_pools.items()],
        "heartbeat-interval": heartbeat_interval,
        "heartbeat-timeout": heartbeat_timeout,
    }


def job(steps: Sequence[Mapping[str, Any]], runs_on: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A job body for conftest's ``pipeline()``; ``extra`` keys use YAML spelling
    with ``_`` for ``-`` (``depend_on``, ``continue_on_error``)."""
    body: dict[str, Any] = {"steps": [dict(s) for s in steps]}
    if runs_on is not None:
        body["runs-on"] = dict(runs_on)
    for key, value in extra.items():
        body[key.replace("_", "-")] = value
    return body


def export_step(id: str, name: str, value: str, *, fails: int = 0) -> dict[str, Any]:
    """A step that exports ``name=value`` (``step.exported_env``); it also fails
    its first ``fails`` calls per build, job and step (after exporting)."""
    return {"id": id, "uses": "export@1", "with": {"name": name, "value": value, "fails": fails}}


def peek_step(id: str = "peek") -> dict[str, Any]:
    """A step that records the env it sees and the files in its workspace."""
    return {"id": id, "uses": "peek@1"}


def touch_step(id: str, filename: str, text: str = "x") -> dict[str, Any]:
    """A step that writes ``filename`` in the agent's workspace."""
    return {"id": id, "uses": "touch@1", "with": {"name": filename, "text": text}}


def dwell_step(id: str = "dwell", seconds: float | str = 1) -> dict[str, Any]:
    """A step that runs ``seconds`` virtual seconds, counted by the probe."""
    return {"id": id, "uses": "dwell@1", "with": {"seconds": seconds}}


def fail_step(id: str = "broken", message: str = "broken on purpose") -> dict[str, Any]:
    return {"id": id, "uses": "fail@1", "with": {"message": message}}


# --- probes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    node: str
    agent: str
    key: str  # "pipeline_id/job_id"
    attempt: str


@dataclass(frozen=True)
class Peek:
    """What a ``peek`` step saw."""

    build: str
    job: str
    step: str
    attempt: str
    node: str
    agent: str
    env: dict[str, str]
    files: list[str]


@dataclass
class DispatchProbe(Probe):
    """Probe that also knows where each action ran and the concurrency per job key."""

    placement: dict[Run, Placement] = field(default_factory=dict)
    live_per_node: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    live_total: collections.Counter[str] = field(default_factory=collections.Counter)
    max_per_node: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    max_total: collections.Counter[str] = field(default_factory=collections.Counter)
    peeks: list[Peek] = field(default_factory=list)
    export_calls: collections.Counter[tuple[str, str, str]] = field(default_factory=collections.Counter)
    _live: set[Run] = field(default_factory=set)

    # -- extra actions ------------------------------------------------------------

    async def export(self, step: Any) -> None:
        """``uses: export``: ``with.name=with.value`` into ``step.exported_env``;
        fails its first ``with.fails`` calls per build, job and step."""
        await trio.sleep(0)
        name, value = str(step.with_["name"]), str(step.with_["value"])
        step.exported_env[name] = value
        key = (step.build_id, step.job_id, step.step_id)
        self.export_calls[key] += 1
        fails = int(step.with_.get("fails", 0) or 0)
        if self.export_calls[key] <= fails:
            raise ActionFailed(f"export {name}: failure {self.export_calls[key]} of {fails}")

    async def peek(self, step: Any) -> None:
        """``uses: peek``: record the env and the workspace's files."""
        await trio.sleep(0)
        env = dict(step.env)
        workspace = os.fspath(step.workspace)
        files = sorted(os.listdir(workspace)) if os.path.isdir(workspace) else []
        self.peeks.append(
            Peek(
                build=step.build_id,
                job=step.job_id,
                step=step.step_id,
                attempt=env.get("SHUNTER_JOB_ATTEMPT", ""),
                node=env.get("SHUNTER_NODE", ""),
                agent=env.get("SHUNTER_AGENT", ""),
                env=env,
                files=files,
            )
        )
        self._notify()

    async def touch(self, step: Any) -> None:
        """``uses: touch``: write ``with.name`` (``with.text``) in the workspace."""
        await trio.sleep(0)
        path = os.path.join(os.fspath(step.workspace), str(step.with_["name"]))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as out:
            out.write(str(step.with_.get("text", "x")))

    async def dwell(self, step: Any) -> None:
        """``uses: dwell``: a tracked action that runs ``with.seconds`` (virtual) seconds."""
        run = self._begin(step, "dwell")
        try:
            await trio.sleep(float(step.with_.get("seconds", 1) or 0))
        finally:
            self._finish(run)
        self._note(run, "succeeded")

    def peeks_of(self, build_id: str, job: str | None = None) -> list[Peek]:
        return [p for p in self.peeks if p.build == build_id and (job is None or p.job == job)]

    # -- where things ran -----------------------------------------------------------

    def where(self, build_id: str, job: str | None = None) -> list[Placement]:
        """Placements of the probe actions of a build (and job), in start order."""
        return [self.placement[r] for r in self.runs(build_id, job) if r in self.placement]

    def _begin(self, step: Any, action: str) -> Run:
        env: Mapping[str, str] = getattr(step, "env", None) or {}
        build_id = str(getattr(step, "build_id", "") or env.get("SHUNTER_BUILD_ID", ""))
        pipeline_id = env.get("SHUNTER_PIPELINE_ID") or build_id.rpartition(".")[0]
        run = super()._begin(step, action)
        placement = Placement(
            node=env.get("SHUNTER_NODE", "?"),
            agent=env.get("SHUNTER_AGENT", "?"),
            key=f"{pipeline_id}/{run.job}",
            attempt=env.get("SHUNTER_JOB_ATTEMPT", ""),
        )
        self.placement[run] = placement
        self._live.add(run)
        per_node = (placement.node, placement.key)
        self.live_per_node[per_node] += 1
        self.live_total[placement.key] += 1
        self.max_per_node[per_node] = max(self.max_per_node[per_node], self.live_per_node[per_node])
        self.max_total[placement.key] = max(self.max_total[placement.key], self.live_total[placement.key])
        return run

    def _finish(self, run: Run) -> None:
        if run in self._live:
            self._live.discard(run)
            placement = self.placement[run]
            self.live_per_node[(placement.node, placement.key)] -= 1
            self.live_total[placement.key] -= 1
        super()._finish(run)

    def max_on_any_node(self, key: str) -> int:
        return max((count for (_, k), count in self.max_per_node.items() if k == key), default=0)


# --- the scenario -------------------------------------------------------------------------


ZERO_STATS = ("builds_running", "builds_queued", "jobs_running", "jobs_queued", "slots_held",
              "agents_busy", "agents_locked")  # fmt: skip


def seconds(value: Any) -> float:
    """A time of the API as seconds: RFC 3339 text or a number."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.timestamp()
    return ts(str(value)).timestamp()


def mentions_wait(reason: str | None, minutes: float) -> bool:
    """Whether ``reason`` states a wait of ``minutes`` (as minutes or seconds)."""
    text = reason or ""
    candidates = {f"{minutes:g}", f"{minutes * 60:g}", f"{minutes:.1f}", f"{minutes * 60:.0f}"}
    return any(c in text for c in candidates)


class DispatchScenario(Scenario):
    probe: DispatchProbe

    async def job(self, build_id: str, job_id: str) -> Any:
        return (await self.rt.build(build_id)).job(job_id)

    async def poll(
        self,
        check: Callable[[], Awaitable[Any]],
        what: str,
        *,
        timeout: float = 5.0,
        step: float = 0.001,
        explain: Callable[[], Awaitable[str]] | None = None,
    ) -> Any:
        """Call ``check`` every ``step`` virtual seconds until it returns a truthy value."""
        with trio.move_on_after(timeout):
            while True:
                result = await check()
                if result:
                    return result
                await trio.sleep(step)
        detail = await explain() if explain is not None else await self.state()
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; {detail}")

    async def until_job(
        self,
        build_id: str,
        job_id: str,
        predicate: Callable[[Any], bool],
        what: str,
        *,
        timeout: float = 5.0,
        step: float = 0.001,
    ) -> Any:
        async def check() -> Any:
            info = await self.rt.build(build_id)
            return info if predicate(info.job(job_id)) else None

        async def explain() -> str:
            return f"build: {describe(await self.rt.build(build_id))}; {await self.state()}"

        return await self.poll(check, f"{build_id} {job_id}: {what}", timeout=timeout, step=step, explain=explain)

    async def until_job_status(self, build_id: str, job_id: str, *statuses: str, timeout: float = 5.0,
                               step: float = 0.001) -> Any:  # fmt: skip
        return await self.until_job(
            build_id, job_id, lambda j: j.status in statuses, f"status in {statuses}", timeout=timeout, step=step
        )

    async def job_running(self, build_id: str, job_id: str) -> Any:
        """Wait until the job is RUNNING and its first probe action has started."""
        await self.probe.until(
            lambda: self.probe.started(build_id, job_id), f"a probe action of {build_id} {job_id}"
        )
        return await self.until_job_status(build_id, job_id, "RUNNING")

    async def node(self, name: str) -> Any | None:
        for info in await self.rt.nodes():
            if info.name == name:
                return info
        return None

    async def agent(self, name: str) -> Any | None:
        for info in await self.rt.nodes():
            for agent in info.agents:
                if agent.name == name:
                    return agent
        return None

    async def waiting(self, build_id: str | None = None, job_id: str | None = None) -> list[Any]:
        return [
            w for w in await self.rt.waiting_jobs()
            if (build_id is None or w.build_id == build_id) and (job_id is None or w.job_id == job_id)
        ]  # fmt: skip

    async def until_waiting(self, build_id: str, job_id: str, timeout: float = 5.0) -> Any:
        """Wait until ``rt.waiting_jobs()`` lists the job; return its entry."""

        async def check() -> Any:
            found = await self.waiting(build_id, job_id)
            return found[0] if found else None

        return await self.poll(check, f"{build_id} {job_id} in waiting_jobs()", timeout=timeout)

    async def state(self) -> str:
        """Stats, nodes and waiting jobs in one line, for assertion messages."""
        try:
            stats = await self.rt.stats()
            nodes = await self.rt.nodes()
            waiting = await self.rt.waiting_jobs()
        except Exception as error:  # noqa: BLE001 - only for a message
            return f"(state unavailable: {error!r}); probe: {self.probe.summary()}"
        node_text = "; ".join(
            f"{n.name}[{n.pool}{' draining' if n.draining else ''}] running={dict(n.running)} agents="
            + ",".join(f"{a.name}:{a.status}:{a.job}:{a.locked_by}" for a in n.agents)
            for n in nodes
        )
        wait_text = "; ".join(f"{w.build_id}/{w.job_id}#{w.attempt}: {w.reason}" for w in waiting)
        return f"stats={stats}; nodes={node_text}; waiting={wait_text}; probe: {self.probe.summary()}"

    async def check_limits(self, limits: Mapping[str, tuple[int | None, int | None]]) -> None:
        """From ``rt.nodes()``: no job key runs more than its per-node limit on a
        node or its total limit across nodes (``limits``: key -> (per-node, total));
        every agent busy with at most one job; a locked agent runs only its build's jobs."""
        nodes = await self.rt.nodes()
        totals: collections.Counter[str] = collections.Counter()
        for info in nodes:
            for key, count in info.running.items():
                assert count >= 0, (info.name, key, count)
                totals[key] += count
                per_node = limits.get(key, (None, None))[0]
                if per_node is not None:
                    assert count <= per_node, (
                        f"{key} runs {count} times on {info.name} (per-node limit {per_node}): {await self.state()}"
                    )
            for agent in info.agents:
                if agent.locked_by and agent.job and agent.status == AgentStatus.BUSY:
                    assert agent.job.startswith(agent.locked_by + "/"), (
                        f"agent {agent.name} locked by {agent.locked_by} runs {agent.job}"
                    )
        for key, count in totals.items():
            total = limits.get(key, (None, None))[1]
            if total is not None:
                assert count <= total, f"{key} runs {count} times in all (total limit {total}): {await self.state()}"

    async def leaks(self) -> list[str]:
        """What is still held, queued or running (empty when everything is clear)."""
        problems: list[str] = []
        stats = await self.rt.stats()
        for name in ZERO_STATS:
            value = getattr(stats, name)
            if value != 0:
                problems.append(f"stats.{name}={value}")
        for info in await self.rt.nodes():
            running = {k: v for k, v in info.running.items() if v}
            if running:
                problems.append(f"node {info.name} running={running}")
            for agent in info.agents:
                if agent.locked_by is not None:
                    problems.append(f"agent {agent.name} locked by {agent.locked_by}")
                if agent.status != AgentStatus.IDLE or agent.job is not None:
                    problems.append(f"agent {agent.name} {agent.status} job={agent.job}")
        for group in await self.rt.groups():
            if group.running or group.queue:
                problems.append(f"group {group.name} running={group.running} queue={group.queue}")
        waiting = await self.rt.waiting_jobs()
        if waiting:
            problems.append(f"waiting_jobs={[(w.build_id, w.job_id, w.reason) for w in waiting]}")
        return problems

    async def assert_quiet(self, timeout: float = 5.0) -> None:
        """Behaviour 8: (within ``timeout`` virtual seconds, for messages in
        flight) every counter is zero, every agent idle and unlocked, every
        group and wait queue empty."""
        with trio.move_on_after(timeout):
            while await self.leaks():
                await trio.sleep(0.01)
            return
        raise AssertionError(f"still held after {timeout}s: {await self.leaks()}; {await self.state()}")

    async def finish_all(self, build_ids: Iterable[str], timeout: float = 3600.0) -> list[Any]:
        """Release every hold and wait until every build has finished."""
        self.probe.release_all()
        return [await self.finished(b, timeout=timeout) for b in build_ids]


@asynccontextmanager
async def dispatch_scenario(
    config: Mapping[str, Any], *, limit: float = 3 * 3600.0, actions: Mapping[str, Any] | None = None
) -> AsyncIterator[DispatchScenario]:
    """A runtime on ``config`` with every probe action (and ``actions``) registered, bounded by
    ``limit`` seconds (virtual under the autojump clock). Remote nodes join after that: a
    ``shunter agent`` offers the actions it has when it registers (docs/design.md §11)."""
    probe = DispatchProbe()
    remote = {pool["name"]: pool["nodes"] for pool in config.get("pools", ())} if AGENTS[0] == "remote" else {}
    if remote:  # the same nodes, served by in-process `shunter agent`s instead (remote_helpers.py)
        config = {**config, "pools": [{"name": pool["name"], "nodes": []} for pool in config["pools"]]}
    with trio.fail_after(limit):
        async with runtime.open_runtime(dict(config)) as rt:
            rt.register_action("hold", probe.hold)
            rt.register_action("flaky", probe.flaky)
            rt.register_action("export", probe.export)
            rt.register_action("peek", probe.peek)
            rt.register_action("touch", probe.touch)
            rt.register_action("dwell", probe.dwell)
            for name, action in (actions or {}).items():
                rt.register_action(name, action)
            try:
                async with remote_nodes(rt, remote):
                    yield DispatchScenario(rt, probe)
            finally:
                probe.release_all()


def agent_names(nodes: Iterable[Any], *, include_lost: bool = False) -> list[str]:
    return [a.name for n in nodes for a in n.agents if include_lost or a.status != "lost"]
