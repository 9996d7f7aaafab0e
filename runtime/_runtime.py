"""The runtime facade: ``open_runtime()`` and the ``Runtime`` users hold.

It opens an actor system, starts the event hub, the dispatcher (with the
configured pools and nodes) and the supervisors of pipelines and groups,
and turns each API call into an ``ask`` to the actor that owns the answer.
It holds no scheduling state of its own.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from enum import StrEnum
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import msgspec

from actors.execution.actions import ActionInputs, ActionRegistry, StepContext
from actors.core import Actor, ActorStopped, ActorSystem, AskTimeout, Ref, Supervision, open_system
from actors.directory import Directory
from actors.model.errors import Conflict, InvalidRequest, NotFound, Overloaded, SpecError
from actors.events import Counters, EventHub, EventLog, Gauge, History, Subscribe, Subscription
from actors.admission.group import GroupActor, GroupSnapshot, QueuePosition
from actors.model.info import BuildInfo, Event, GroupInfo, NodeInfo, PipelineInfo, Stats, WaitingJob
from actors.admission.mutex import ListMutexWaiters, MutexActor
from actors.dispatch.pool import AddNode, HasNode, InjectFault, ListNodes, ListWaiting, PoolActor, PoolStats, RemoveNode
from actors.model.messages import (
    CancelRequest,
    DescribePipeline,
    GetBuild,
    GetLog,
    ListBuilds,
    ReplaceSpec,
    RetryRequest,
    SubmitBuild,
    WaitBuild,
)
from actors.builds.build import Build
from actors.builds.pipeline import PipelineActor
from actors.model.vocab import BUILD_FINAL, BuildStatus, FaultKind, values
from actors.builds.records import StepLog
from actors.builds.resume import Drain, GetLogSources, NotHeld, Restore, Resume, log_sources
from actors.builds.snapshot import build_info
from actors.model.spec import PipelineSpec
from actors.state.durable import Durable
from actors.state.journal import JournalActor
from actors.state.store import NodeRow

from ._state import FINISHED_CACHE, State, definition_key, tell_admissions
from .config import RuntimeConfig, default_config, load_config
from .spec_loader import check_pipeline, slugify, validate_pipeline_id

__all__ = ["Runtime", "open_runtime"]

logger = logging.getLogger("shunter")

STORE_LISTING = 1_000  # finished builds a listing reads back from the store at most

# Pipeline state lives in its actor; a restarted instance would come back
# empty and lose builds, so a pipeline crash fails the runtime loudly instead.
_PIPELINE_SUPERVISION = Supervision(max_restarts=0, escalate=True)
W = TypeVar("W", bound=StrEnum)


class _Supervisor(Actor):
    """Parent of a family of actors (pipelines, groups); handles no messages itself."""


class Runtime:
    """A running shunter. Get one from ``open_runtime()``."""

    def __init__(
        self,
        *,
        system: ActorSystem,
        config: RuntimeConfig,
        actions: ActionRegistry,
        hub: Ref,
        gauge: Gauge,
        pipelines: Ref,
        event_log: EventLog | None = None,
        pools: Directory,
        groups: Directory,
        mutexes: Directory,
        state: State | None = None,
    ) -> None:
        self.system = system
        self.config = config
        self.actions = actions
        self._hub = hub
        self._gauge = gauge
        self.event_log = event_log if event_log is not None else EventLog()
        """The hub's kept events, read by position (``EventLog``): what the HTTP event streams follow."""
        self._pipelines = pipelines
        self._pools = pools
        self._groups = groups
        self._mutexes = mutexes
        self._adding_nodes: set[str] = set()
        self._node_names: set[str] = set()  # for max-nodes; a node stops counting when its removal is asked
        self._state = state
        self._draining = False
        self._drain_scope: anyio.CancelScope | None = None
        self._hurry = False
        self.interrupted: list[str] = []
        self.left_queued: list[str] = []  # with durable state: builds a stop left queued for the next start

    # -- pipelines -------------------------------------------------------------------

    async def register_pipeline(self, source: str | bytes | os.PathLike[str] | Mapping[str, Any],
                                id: str | None = None) -> PipelineInfo:  # fmt: skip
        """Register (or replace) a pipeline from YAML/JSON text, a file path or a mapping.

        Raises ``SpecError`` listing every problem by path: unknown actions
        and ``with:`` inputs the action does not declare included. Replacing
        keeps the pipeline's builds and numbering; running builds keep the
        definition they started with. The result's ``warnings`` name each
        ``runs-on`` that no node matches now (its jobs would wait for one).
        """
        nodes: dict[str, dict[str, frozenset[str]]] = {}
        for node in await self.nodes():
            if not node.draining:
                nodes.setdefault(node.pool, {})[node.name] = frozenset(node.labels)
        raw = _read_source(source)
        spec, warnings = check_pipeline(raw, known_actions=self.actions.declared_inputs(), nodes=nodes,
                                        secrets=self.config.secrets.names())  # fmt: skip
        pipeline_id = id if id is not None else slugify(spec.name)
        problem = validate_pipeline_id(pipeline_id)
        if problem is not None:
            raise SpecError([{"path": "id", "message": problem}])
        state = self._state
        text = spec.source or json.dumps(raw, default=str)  # a mapping is stored as JSON (which is YAML)
        key = definition_key(pipeline_id, text) if state is not None else ""
        ref = self._pipeline_or_none(pipeline_id)
        if ref is not None:
            info: PipelineInfo = await ref.ask(ReplaceSpec(spec, key))
        else:
            ref = self._spawn_pipeline(pipeline_id, spec, key)
            info = await ref.ask(DescribePipeline())
        if state is not None:
            await state.write(state.pipeline_batch(pipeline_id, key, text))
        return msgspec.structs.replace(info, warnings=warnings) if warnings else info

    def _spawn_pipeline(self, pipeline_id: str, spec: PipelineSpec, key: str, next_number: int = 1) -> Ref:
        state, config = self._state, self.config
        durable = None if state is None else Durable(
            state.journal, f"{state.logs}/{pipeline_id}", config.max_log_bytes)  # type: ignore[arg-type]  # fmt: skip
        history = FINISHED_CACHE if state is not None else config.retention.builds_per_pipeline or 1_000_000_000
        return self.system.spawn(
            lambda: PipelineActor(pipeline_id=pipeline_id, spec=spec, hub=self._hub, pools=self._pools,
                                  groups=self._groups, mutexes=self._mutexes, history=history, durable=durable,
                                  definition=key, next_number=next_number),  # fmt: skip
            name=f"pipeline:{pipeline_id}",
            parent=self._pipelines,
            supervision=_PIPELINE_SUPERVISION,
        )

    def has_pipeline(self, pipeline_id: str) -> bool:
        return self._pipeline_or_none(pipeline_id) is not None

    async def pipeline(self, pipeline_id: str) -> PipelineInfo:
        result: PipelineInfo = await self._pipeline(pipeline_id).ask(DescribePipeline())
        return result

    async def pipelines(self) -> list[PipelineInfo]:
        return [await ref.ask(DescribePipeline()) for ref in self.system.children(self._pipelines)]

    # -- builds ------------------------------------------------------------------------

    async def submit(self, pipeline_id: str, variables: Mapping[str, Any] | None = None) -> BuildInfo:
        """Start a build; it runs at once or queues in its concurrency group.

        Raises ``QueueFull`` when the group's queue is full (policy reject),
        ``Overloaded`` past ``max-queued-builds`` unfinished builds,
        ``InvalidRequest`` for undeclared or ill-typed variables, ``NotFound``.
        """
        if variables is not None and not isinstance(variables, Mapping):
            raise InvalidRequest("variables must be a mapping of names to values")
        if self._draining:
            raise Overloaded("shunter is stopping: it admits no new builds; try again once it has restarted")
        if self._gauge.unfinished >= self.config.max_queued_builds:
            raise Overloaded(
                f"{self._gauge.unfinished} builds are queued or running (max-queued-builds "
                f"{self.config.max_queued_builds}); try again later"
            )
        result: BuildInfo = await self._pipeline(pipeline_id).ask(SubmitBuild(dict(variables or {})))
        return result

    async def build(self, build_id: str) -> BuildInfo:
        """A snapshot of the build, with its queue position if it waits in a group."""
        try:
            info: BuildInfo = await self._owner(build_id).ask(GetBuild(build_id))
        except NotHeld:
            return build_info(await self._stored(build_id))
        if info.status == BuildStatus.QUEUE and info.group is not None:
            group = self._groups.find(info.group)
            if group is not None:
                try:
                    position = await group.ask(QueuePosition(build_id))
                except ActorStopped:  # stopped meanwhile: the build has left its queue
                    position = None
                info = msgspec.structs.replace(info, queue_position=position)
        return info

    async def builds(self, pipeline: str | None = None, status: BuildStatus | str | None = None,
                     unfinished: bool = False) -> list[BuildInfo]:  # fmt: skip
        """Builds (of one pipeline, with one status, or only the unfinished), oldest first per pipeline.

        ``status`` is a ``BuildStatus`` (or its name); anything else is ``InvalidRequest``.
        """
        wanted = None if status is None else _word(BuildStatus, status, "build status", "status")
        refs = [self._pipeline(pipeline)] if pipeline is not None else self.system.children(self._pipelines)
        found: list[BuildInfo] = []
        for ref in refs:
            found.extend(await ref.ask(ListBuilds(wanted, unfinished)))
        if self._state is not None and not unfinished and wanted not in (BuildStatus.QUEUE, BuildStatus.RUNNING):
            # finished builds that left the pipelines' caches, read back from the store (the latest ones)
            held = {build.id for build in found}
            older = [build_info(b) for b in await self._state.read_builds(pipeline, wanted, STORE_LISTING)
                     if b.id not in held]  # fmt: skip
            older.sort(key=lambda b: (b.pipeline_id, b.number))
            found = older + found
        return await self._with_positions(found)

    async def _with_positions(self, builds: list[BuildInfo]) -> list[BuildInfo]:
        """Fill in queue positions, asking each group concerned once."""
        groups = {build.group for build in builds if build.status == BuildStatus.QUEUE and build.group is not None}
        positions: dict[str, int] = {}
        refs = [ref for ref in map(self._groups.find, groups) if ref is not None]
        for snapshot in await _ask_running(refs, GroupSnapshot()):
            positions.update((entry.build_id, entry.position) for entry in snapshot.queue)
        if not positions:
            return builds
        return [msgspec.structs.replace(b, queue_position=positions[b.id]) if b.id in positions else b
                for b in builds]  # fmt: skip

    async def wait(self, build_id: str, timeout: float | None = None) -> BuildInfo:
        """Wait until the build has finished; ``TimeoutError`` after ``timeout`` seconds."""
        try:
            result: BuildInfo = await self._owner(build_id).ask(
                WaitBuild(build_id), timeout=math.inf if timeout is None else timeout
            )
        except NotHeld:
            return build_info(await self._stored(build_id))
        except AskTimeout:
            raise TimeoutError(f"build {build_id!r} did not finish within {timeout:g}s") from None
        return result

    async def retry(self, build_id: str, job: str | None = None, step: str | None = None,
                    failed_only: bool = False) -> BuildInfo:  # fmt: skip
        """Retry a failed job or step of a running build, or (part of) a finished build.

        Inside a running build the retry is part of that run (no admission);
        a finished build is admitted again (``QueueFull`` possible).
        Raises ``NotRetryable`` with the reason when there is nothing to retry.
        """
        if self._draining:
            raise Overloaded("shunter is stopping: it admits no retries; try again once it has restarted")
        owner = self._owner(build_id)
        try:
            result: BuildInfo = await owner.ask(RetryRequest(build_id, job, step, failed_only))
        except NotHeld:
            owner.tell(Restore(await self._stored(build_id)))  # back from the store, then as usual
            result = await owner.ask(RetryRequest(build_id, job, step, failed_only))
        return result

    async def cancel(self, build_id: str) -> BuildInfo:
        """Cancel a queued or running build; ``Conflict`` if it has finished."""
        try:
            result: BuildInfo = await self._owner(build_id).ask(CancelRequest(build_id))
        except NotHeld:
            build = await self._stored(build_id)
            raise Conflict(f"build {build_id!r} has already finished ({build.status})") from None
        return result

    async def logs(self, build_id: str, job: str | None = None, step: str | None = None) -> str:
        """The log text (see ``log_chunks`` to stream it instead)."""
        return "".join([chunk async for chunk in await self.log_chunks(build_id, job, step)])

    async def log_chunks(self, build_id: str, job: str | None = None, step: str | None = None
                         ) -> AsyncIterator[str]:  # fmt: skip
        """The log of a build (one job or step) in pieces, read from the log files as it goes.

        Raises ``NotFound`` before the first piece for an unknown build, job or step.
        """
        owner = self._owner(build_id)
        try:
            sources: list[tuple[str, StepLog]] = await owner.ask(GetLogSources(build_id, job, step))
        except NotHeld:
            if self._state is None:
                raise
            sources = log_sources(await self._stored(build_id), job, step)
        return _log_pieces(sources)

    # -- groups, nodes, stats -------------------------------------------------------------

    async def groups(self) -> list[GroupInfo]:
        """A snapshot of every running group; one idle for five minutes has retired and is not listed."""
        result: list[GroupInfo] = await _ask_running(self._groups.all(), GroupSnapshot())
        return result

    async def add_node(self, name: str, pool: str = "default", agents: int = 1,
                       labels: list[str] | tuple[str, ...] = (), *, persist: bool = True) -> NodeInfo:  # fmt: skip
        """Add a build node with ``agents`` agents; creates the pool if needed.

        With durable state the node comes back after a restart (``persist``; nodes of the config need not).
        """
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidRequest(f"node name must be a non-empty string without '/', got {name!r}")
        limit = self.config.max_agents_per_node
        if isinstance(agents, bool) or not isinstance(agents, int) or not 1 <= agents <= limit:
            message = f"must be an integer from 1 to {limit} (max-agents-per-node), got {agents!r}"
            raise InvalidRequest(f"agents: {message}", details=[{"path": "$.agents", "message": message}])
        # Reserved before the first await: two concurrent adds of one name
        # (to different pools) cannot both pass the check below.
        if name in self._adding_nodes:
            raise Conflict(f"node {name!r} is being added")
        self._adding_nodes.add(name)
        try:
            for ref in self._pools.all():  # one cheap ask per pool, not a listing of every node
                if await ref.ask(HasNode(name)):
                    raise Conflict(f"node {name!r} already exists")
            if len(self._node_names) + len(self._adding_nodes) > self.config.max_nodes:
                raise Conflict(f"there are {len(self._node_names)} nodes already (max-nodes "
                               f"{self.config.max_nodes}); remove one first")  # fmt: skip
            result: NodeInfo = await self._pools.get(pool).ask(AddNode(name, pool, agents, tuple(labels)))
            self._node_names.add(name)
        finally:
            self._adding_nodes.discard(name)
        if persist and self._state is not None:
            await self._state.write(self._state.node_batch(name, NodeRow(name, pool, agents, tuple(labels))))
        return result

    async def remove_node(self, name: str) -> NodeInfo:
        """Drain a node: running jobs finish, no new ones start, then it goes."""
        for ref in self._pools.all():
            if await ref.ask(HasNode(name)):
                result: NodeInfo = await ref.ask(RemoveNode(name))
                self._node_names.discard(name)
                if self._state is not None:
                    await self._state.write(self._state.node_batch(name, None))
                return result
        raise NotFound(f"no node {name!r}")

    async def nodes(self) -> list[NodeInfo]:
        found: list[NodeInfo] = []
        for ref in self._pools.all():
            found.extend(await ref.ask(ListNodes()))
        return found

    async def waiting_jobs(self) -> list[WaitingJob]:
        """Job attempts waiting for a slot, an agent or a mutex, each with its reason and deadline."""
        found: list[WaitingJob] = []
        for ref in self._pools.all():
            found.extend(await ref.ask(ListWaiting()))
        for waiters in await _ask_running(self._mutexes.all(), ListMutexWaiters()):
            found.extend(waiters)
        return found

    def inject_fault(self, agent: str, kind: FaultKind | str) -> None:
        """Make an agent ``crash``, ``hang`` or go silent (``silence``): tests, benchmarks, drills (``FaultKind``)."""
        fault = _word(FaultKind, kind, "fault", "kind")
        for ref in self._pools.all():
            ref.tell(InjectFault(agent, fault))

    async def stats(self) -> Stats:
        counters = await self._hub.ask(Counters())
        pools = [await ref.ask(PoolStats()) for ref in self._pools.all()]
        builds = {status: count for status, count in counters["builds"].items() if count}
        mutex_waiters = [len(waiters) for waiters in await _ask_running(self._mutexes.all(), ListMutexWaiters())]

        def total(field: str) -> int:
            return sum(pool[field] for pool in pools)

        return Stats(
            builds_running=builds.get(BuildStatus.RUNNING, 0),
            builds_queued=builds.get(BuildStatus.QUEUE, 0),
            builds_finished=sum(count for status, count in builds.items() if status in BUILD_FINAL),
            jobs_running=total("jobs_running"),
            jobs_queued=total("jobs_queued") + sum(mutex_waiters),
            slots_held=total("slots_held"),
            agents=total("agents"),
            agents_busy=total("agents_busy"),
            agents_locked=total("agents_locked"),
            agents_lost=total("agents_lost"),
            builds_by_status=builds,
        )

    # -- actions and events --------------------------------------------------------------

    def register_action(self, name: str, fn: Callable[[StepContext], Awaitable[None]],
                        inputs: ActionInputs | None = None) -> None:  # fmt: skip
        """Make ``fn`` available to ``uses: name@1`` steps.

        ``inputs`` (input name → ``ActionInput``) declares what ``with:`` may
        hold: pipelines registered afterwards are refused when a step's
        ``with:`` does not fit. None accepts anything.
        """
        self.actions.register(name, fn, inputs)

    @asynccontextmanager
    async def subscribe(self, *, after: int | None = None, buffer: int | float = 10_000
                        ) -> AsyncIterator[Subscription]:  # fmt: skip
        """Live events (and, with ``after``, the kept history after that id first).

        ``async with rt.subscribe() as events: async for event in events: ...``.
        A subscriber that falls ``buffer`` events behind (``math.inf``: never)
        is dropped: its iteration ends. See ``actors.events.Subscription``.
        """
        subscription: Subscription = await self._hub.ask(Subscribe(buffer=buffer, after=after))
        try:
            yield subscription
        finally:
            subscription.close()

    async def events(self, after: int = 0) -> list[Event]:
        result: list[Event] = await self._hub.ask(History(after))
        return result

    # -- HTTP ----------------------------------------------------------------------------

    @property
    def asgi_app(self) -> Any:
        """The HTTP API of DESIGN §7 for this runtime, as an ASGI 3 app (built on first use).

        Serve it with ``hypercorn.trio.serve(rt.asgi_app, config)`` (or
        ``hypercorn.asyncio.serve``); call ``rt.asgi_app.close()`` before
        shutting the server down so open event streams end at once.
        """
        app = self.__dict__.get("_asgi_app")
        if app is None:
            from .http import App

            app = self.__dict__["_asgi_app"] = App(self)
        return app

    # -- internals ------------------------------------------------------------------------

    def _pipeline_or_none(self, pipeline_id: str) -> Ref | None:
        try:
            return self.system.lookup(f"pipeline:{pipeline_id}")
        except LookupError:
            return None

    def _pipeline(self, pipeline_id: str) -> Ref:
        ref = self._pipeline_or_none(pipeline_id) if isinstance(pipeline_id, str) else None
        if ref is None:
            raise NotFound(f"no pipeline {pipeline_id!r}")
        return ref

    async def _stored(self, build_id: str) -> Build:
        """A build no pipeline holds any more, from the store; ``NotFound`` without one."""
        build = await self._state.read_build(build_id) if self._state is not None else None
        if build is None:
            raise NotFound(f"no build {build_id!r}")
        return build

    def _owner(self, build_id: str) -> Ref:
        pipeline_id, _, number = build_id.rpartition(".") if isinstance(build_id, str) else ("", "", "")
        ref = self._pipeline_or_none(pipeline_id) if number.isdigit() else None
        if ref is None:
            raise NotFound(f"no build {build_id!r}")
        return ref

    async def _close(self) -> None:
        """Drain (DESIGN §10), then cancel what still runs (in memory) or leave it to the next start (durable)."""
        drain = self.config.drain_timeout
        if self._state is not None or drain is not None:
            self._draining = True
            for ref in self.system.children(self._pipelines):
                ref.tell(Drain())
            await self._drain(30.0 if drain is None else drain)
        if self._state is not None:
            # Durable: what is left stays as the store has it; the next start re-queues the queued
            # builds and treats the interrupted jobs as lost (DESIGN §10).
            unfinished = await self.builds(unfinished=True)
            self.interrupted = [build.id for build in unfinished if build.status == "RUNNING"]
            self.left_queued = [build.id for build in unfinished if build.status == "QUEUE"]
            await self._state.seal()
            if unfinished:
                logger.warning("runtime closed; %d build(s) interrupted, %d left queued for the next start",
                               len(self.interrupted), len(self.left_queued))  # fmt: skip
            return
        unfinished = await self.builds(unfinished=True)
        for build in unfinished:
            try:
                await self.cancel(build.id)
            except Exception:  # it may have finished meanwhile
                pass
        self.interrupted = [build.id for build in unfinished]
        # One deadline for all of them, not one each: 12k queued builds must
        # not mean 12k timeouts in a row.
        with anyio.move_on_after(self.config.shutdown_timeout):
            for build in unfinished:
                try:
                    await self.wait(build.id)
                except NotFound:
                    pass
        if unfinished:
            logger.warning("runtime closed; cancelled %d build(s): %s", len(unfinished),
                           ", ".join(self.interrupted))  # fmt: skip


    def stop_draining(self) -> None:
        """Cut a graceful stop's drain short (a second Ctrl-C): running builds are interrupted now."""
        self._hurry = True
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def _drain(self, timeout: float) -> None:
        """Let running builds finish for up to ``timeout`` seconds (nothing new is admitted meanwhile)."""
        running = [build.id for build in await self.builds(status="RUNNING", unfinished=True)]
        with anyio.move_on_after(0 if self._hurry else timeout) as self._drain_scope:
            for build_id in running:
                try:
                    await self.wait(build_id)
                except NotFound:
                    pass


async def _log_pieces(sources: list[tuple[str, StepLog]]) -> AsyncIterator[str]:
    """Each attempt's header and its log, read a piece at a time."""
    for header, log in sources:
        yield header
        ends_with_newline = True
        for piece in log.chunks():
            yield piece
            ends_with_newline = piece.endswith("\n")
            await anyio.lowlevel.checkpoint()
        if not ends_with_newline:
            yield "\n"


def _word(words: type[W], value: str, what: str, argument: str) -> W:
    """``value`` as a member of the vocabulary ``words``, or ``InvalidRequest`` naming every allowed value."""
    try:
        return words(value)
    except ValueError:
        raise InvalidRequest(f"{argument}: unknown {what} {value!r} (expected one of "
                             f"{', '.join(values(words))})") from None  # fmt: skip


async def _ask_running(refs: list[Ref], message: Any) -> list[Any]:
    """Ask each actor in turn, skipping those that stopped since they were listed.

    A group or mutex may stop between the listing and its ask; it is left
    out rather than failing the whole call.
    """
    replies = []
    for ref in refs:
        try:
            replies.append(await ref.ask(message))
        except ActorStopped:
            continue
    return replies


async def _register_configured(runtime: Runtime, path: str, where: str) -> None:
    """Register a pipeline file the configuration names; its warnings are logged.

    Raises ``SpecError``: the pipeline's own errors (``what`` names the
    file), or a configuration error at ``where`` if the file cannot be read.
    """
    try:
        info = await runtime.register_pipeline(Path(path))
    except SpecError as error:
        raise SpecError(error.errors, what=f"pipeline {path}") from None
    except OSError as error:
        problem = f"cannot read pipeline file {path!r}: {error.strerror or error}"
        raise SpecError([{"path": where, "message": problem}], what="config") from None
    for warning in info.warnings:
        logger.warning("pipeline %s: %s: %s", path, warning["path"], warning["message"])


def _read_source(source: str | bytes | os.PathLike[str] | Mapping[str, Any]) -> Any:
    if isinstance(source, os.PathLike):
        return Path(source).read_text(encoding="utf-8")
    if isinstance(source, str) and "\n" not in source and source.endswith((".yml", ".yaml", ".json")):
        path = Path(source)
        if path.is_file():
            return path.read_text(encoding="utf-8")
    return source


def _config(config: RuntimeConfig | str | bytes | os.PathLike[str] | Mapping[str, Any] | None) -> RuntimeConfig:
    if config is None:
        return default_config()
    if isinstance(config, RuntimeConfig):
        return config
    return load_config(config)


@asynccontextmanager
async def open_runtime(
    config: RuntimeConfig | str | bytes | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    workdir: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Runtime]:
    """Run shunter inside the ``async with`` block (trio or asyncio).

    ``config`` is a ``RuntimeConfig``, a mapping, YAML text or a path (see
    README); None is one pool ``default`` with one local node of as many
    agents as the machine has cores. Agents' workspaces live under
    ``workdir`` (by default the state directory's ``work/``, emptied at
    start, or in memory a temporary directory removed at the end).

    In memory unless the config names a ``state-dir`` (DESIGN §10; see
    ``_state``). On exit, in memory, builds still running are cancelled and
    awaited (bounded), then every actor stops; ``Runtime.interrupted``
    lists what was cancelled. With a state directory running builds get
    ``drain-timeout`` to finish, then what still runs is interrupted and
    queued builds stay queued for the next start (``Runtime.left_queued``).
    """
    settings = _config(config)
    state = State(settings.state_dir) if settings.state_dir is not None else None
    own_workdir = workdir is None and state is None
    if workdir is not None:
        root = Path(workdir)
    else:
        root = state.work if state is not None else _fresh_workdir()
    actions = ActionRegistry.with_builtins()
    try:
        recovered = await state.recovered() if state is not None else None
        async with open_system(shutdown_timeout=settings.shutdown_timeout) as system:
            gauge = Gauge()
            if state is not None:
                store = state.store
                # A store that cannot commit breaks the promise of every answer: fail loudly, like a pipeline.
                state.journal = system.spawn(lambda: JournalActor(store, retention=settings.retention,
                                                                  log_root=state.logs), name="journal",
                                             supervision=_PIPELINE_SUPERVISION)  # fmt: skip
            first_event = recovered.meta.get("event_id", 0) + 1 if recovered is not None else 1
            event_log = EventLog(first_id=first_event)
            reserve = state.reserve_events if state is not None else None
            finished = recovered.finished_by_status if recovered is not None else None
            hub = system.spawn(lambda: EventHub(gauge=gauge, log=event_log, reserve=reserve, finished=finished),
                               name="events")  # fmt: skip

            def pool(name: str) -> Callable[[], PoolActor]:
                return lambda: PoolActor(pool=name, workdir=root / name, actions=actions,
                                         heartbeat_interval=settings.heartbeat_interval,
                                         heartbeat_timeout=settings.heartbeat_timeout, hub=hub,
                                         secrets=settings.secrets)  # fmt: skip

            # Pools hold slots and agents: a crash past its limit fails the runtime loudly.
            pools = Directory(system, "pool", system.spawn(_Supervisor, name="pools"), pool,
                              Supervision(max_restarts=0))  # fmt: skip
            groups = Directory(system, "group", system.spawn(_Supervisor, name="groups"),
                               lambda name: lambda: GroupActor(name, hub=hub), Supervision(max_restarts=0))  # fmt: skip
            mutexes = Directory(system, "mutex", system.spawn(_Supervisor, name="mutexes"),
                                lambda name: lambda: MutexActor(name), Supervision(max_restarts=0))  # fmt: skip
            pipelines = system.spawn(_Supervisor, name="pipelines")
            runtime = Runtime(system=system, config=settings, actions=actions, hub=hub, gauge=gauge,
                              pipelines=pipelines, pools=pools, groups=groups, mutexes=mutexes,
                              event_log=event_log, state=state)  # fmt: skip
            configured = set()
            for pool_config in settings.pools:
                pools.get(pool_config.name)
                for node in pool_config.nodes:
                    configured.add(node.name)
                    await runtime.add_node(node.name, pool_config.name, node.agents, node.labels, persist=False)
            if state is not None and recovered is not None:
                await _recover(runtime, state, recovered, configured)
            for index, pattern in enumerate(settings.pipelines):
                for path in sorted(glob.glob(pattern)) or [pattern]:
                    await _register_configured(runtime, path, f"$.pipelines[{index}]")
            try:
                yield runtime
            finally:
                try:
                    await runtime._close()
                finally:
                    event_log.close()  # the event streams end
    finally:
        if state is not None:
            state.close()
        if own_workdir:
            shutil.rmtree(root, ignore_errors=True)


def _fresh_workdir() -> Path:
    """A temporary work directory named after this process; those of dead processes are removed
    (a server killed with ``kill -9`` leaves its own behind)."""
    temp = Path(tempfile.gettempdir())
    for old in temp.glob("shunter-pid*-*"):
        pid = old.name[len("shunter-pid"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"shunter-pid{os.getpid()}-"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _recover(runtime: Runtime, state: State, recovered: Any, configured: set[str]) -> None:
    """Bring back nodes, pipelines and unfinished builds from the store (DESIGN §10; see ``_state``)."""
    for node in recovered.nodes:
        if node.name not in configured:  # the config's own nodes win
            await runtime.add_node(node.name, node.pool, node.agents, node.labels, persist=False)
    for row in recovered.pipelines:
        spec = state.shape(row.definition, recovered.definitions.get(row.definition)).spec
        runtime._spawn_pipeline(row.id, spec, row.definition, row.next_number)
    admits: list[Any] = []
    for pipeline_id, builds in state.group_unfinished(recovered).items():
        ref = runtime._pipeline_or_none(pipeline_id)
        if ref is not None:
            admits.extend(await ref.ask(Resume(builds)))
    await tell_admissions(runtime._groups, admits)
    if recovered.pipelines or recovered.unfinished:
        logger.info("recovered %d pipeline(s), %d unfinished build(s), %d finished in the store",
                    len(recovered.pipelines), len(recovered.unfinished), recovered.finished)  # fmt: skip
