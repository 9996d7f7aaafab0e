"""The runtime facade: the ``Runtime`` users hold (``open_runtime()`` in ``_open.py`` makes one).

It turns each API call into an ``ask`` to the actor that owns the answer
(pipelines, pools, groups, mutexes, the event hub) and holds no scheduling
state of its own. It knows nothing of HTTP: ``asgi_app`` is built by the
factory ``open_runtime()`` hands it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from enum import StrEnum
from typing import Any, TypeVar

import anyio
import msgspec

from actors.execution.actions import ActionInputs, ActionRegistry, StepContext
from actors.core import ActorStopped, ActorSystem, AskTimeout, Ref, Supervision
from actors.directory import Directory
from actors.model.errors import Conflict, InvalidRequest, NotFound, Overloaded, SpecError
from actors.events import Counters, Gauge, History, Subscribe, Subscription
from actors.admission.group import GroupSnapshot, QueuePosition
from actors.model.info import BuildInfo, Event, GroupInfo, NodeInfo, PipelineDeleted, PipelineInfo, Stats, WaitingJob
from actors.admission.mutex import ListMutexWaiters
from actors.dispatch.pool import (
    AddNode,
    HasNode,
    InjectFault,
    ListNodes,
    ListWaiting,
    PoolStats,
    RemoveNode,
    UpdateNode,
)
from actors.model.messages import (
    BuildKey,
    CancelRequest,
    DescribePipeline,
    GetBuild,
    GetLog,
    ListBuilds,
    ReplaceSpec,
    RetirePipeline,
    RetryRequest,
    SubmitBuild,
    WaitBuild,
)
from actors.builds.pipeline import PipelineActor
from actors.model.vocab import BUILD_FINAL, BuildStatus, FaultKind, values

from .config import RuntimeConfig
from .spec_loader import check_pipeline, read_source, slugify, validate_pipeline_id

__all__ = ["Runtime"]

logger = logging.getLogger("shunter")

# Pipeline state lives in its actor; a restarted instance would come back
# empty and lose builds, so a pipeline crash fails the runtime loudly instead.
_PIPELINE_SUPERVISION = Supervision(max_restarts=0, escalate=True)
W = TypeVar("W", bound=StrEnum)


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
        pools: Directory,
        groups: Directory,
        mutexes: Directory,
        app_factory: Callable[[Runtime], Any] | None = None,
    ) -> None:
        self.system = system
        self.config = config
        self.actions = actions
        self._hub = hub
        self._gauge = gauge
        self._pipelines = pipelines
        self._pools = pools
        self._groups = groups
        self._mutexes = mutexes
        self._app_factory = app_factory
        self._app: Any = None
        self._adding_nodes: set[str] = set()
        self._deleted: set[str] = set()  # their actors stay (builds readable, numbering kept), unlisted
        # Pipelines being deleted or revived: one change at a time, or the replies' order could leave _deleted wrong.
        self._changing: set[str] = set()
        self.interrupted: list[str] = []

    # -- pipelines -------------------------------------------------------------------

    async def register_pipeline(self, source: str | bytes | os.PathLike[str] | Mapping[str, Any],
                                id: str | None = None) -> PipelineInfo:  # fmt: skip
        """Register (or replace) a pipeline from YAML/JSON text, a file path or a mapping.

        Raises ``SpecError`` listing every problem by path: unknown actions
        and ``with:`` inputs the action does not declare included. Replacing
        keeps the pipeline's builds and numbering; running builds keep the
        definition they started with. Registering a deleted pipeline's id
        again brings its builds back and continues its numbering. The
        result's ``warnings`` name each ``runs-on`` that no node matches now
        (its jobs would wait for one).
        """
        nodes: dict[str, dict[str, frozenset[str]]] = {}
        for node in await self.nodes():
            if not node.draining:
                nodes.setdefault(node.pool, {})[node.name] = frozenset(node.labels)
        spec, warnings = check_pipeline(read_source(source), known_actions=self.actions.declared_inputs(),
                                        nodes=nodes)  # fmt: skip
        pipeline_id = id if id is not None else slugify(spec.name)
        problem = validate_pipeline_id(pipeline_id)
        if problem is not None:
            raise SpecError([{"path": "id", "message": problem}])
        if pipeline_id in self._changing:
            self._begin_change(pipeline_id)  # refused: a delete or revive of it is on its way
        ref = self._pipeline_or_none(pipeline_id)
        if ref is None:
            ref = self.system.spawn(
                lambda: PipelineActor(pipeline_id=pipeline_id, spec=spec, hub=self._hub, pools=self._pools,
                                      groups=self._groups, mutexes=self._mutexes),  # fmt: skip
                name=f"pipeline:{pipeline_id}",
                parent=self._pipelines,
                supervision=_PIPELINE_SUPERVISION,
            )
            info: PipelineInfo = await ref.ask(DescribePipeline())
        else:
            revive = pipeline_id in self._deleted
            if revive:
                self._begin_change(pipeline_id)
            try:
                info = await ref.ask(ReplaceSpec(spec))
            finally:
                if revive:
                    self._deleted.discard(pipeline_id)  # the actor took it: it is live whatever the ask said
                    self._changing.discard(pipeline_id)
        return msgspec.structs.replace(info, warnings=warnings) if warnings else info

    def has_pipeline(self, pipeline_id: str) -> bool:
        return pipeline_id not in self._deleted and self._pipeline_or_none(pipeline_id) is not None

    async def pipeline(self, pipeline_id: str) -> PipelineInfo:
        result: PipelineInfo = await self._pipeline(pipeline_id).ask(DescribePipeline())
        return result

    async def pipelines(self) -> list[PipelineInfo]:
        return [await ref.ask(DescribePipeline()) for ref in self._live_pipelines()]

    async def delete_pipeline(self, pipeline_id: str, cancel: bool = False) -> PipelineDeleted:
        """Delete a pipeline: no longer listed, new builds refused (``NotFound``); ``Conflict`` naming its
        unfinished builds unless ``cancel`` (then they are cancelled and named in ``cancelled``). Its builds
        stay readable by id, unlisted and not retryable; registering the id again revives it and its
        numbering goes on, so no build id is reused."""
        self._begin_change(pipeline_id)
        try:
            ref = self._pipeline(pipeline_id)
            cancelled: list[str] = await ref.ask(RetirePipeline(cancel=cancel))
            self._deleted.add(pipeline_id)
        finally:
            self._changing.discard(pipeline_id)
        return PipelineDeleted(id=pipeline_id, cancelled=cancelled)

    def _begin_change(self, pipeline_id: str) -> None:
        if pipeline_id in self._changing:
            raise Conflict(f"pipeline {pipeline_id!r} is being deleted or registered again; try again")
        self._changing.add(pipeline_id)

    # -- builds ------------------------------------------------------------------------

    async def submit(self, pipeline_id: str, variables: Mapping[str, Any] | None = None) -> BuildInfo:
        """Start a build; it runs at once or queues in its concurrency group.

        Raises ``QueueFull`` when the group's queue is full (policy reject),
        ``Overloaded`` past ``max-queued-builds`` unfinished builds,
        ``InvalidRequest`` for undeclared or ill-typed variables, ``NotFound``.
        """
        if variables is not None and not isinstance(variables, Mapping):
            raise InvalidRequest("variables must be a mapping of names to values")
        if self._gauge.unfinished >= self.config.max_queued_builds:
            raise Overloaded(
                f"{self._gauge.unfinished} builds are queued or running (max-queued-builds "
                f"{self.config.max_queued_builds}); try again later"
            )
        result: BuildInfo = await self._pipeline(pipeline_id).ask(SubmitBuild(dict(variables or {})))
        return result

    async def build(self, build_id: str) -> BuildInfo:
        """A snapshot of the build, with its queue position if it waits in a group."""
        info: BuildInfo = await self._owner(build_id).ask(GetBuild(build_id))
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
                     unfinished: bool = False, *, limit: int | None = None,
                     before: str | None = None) -> list[BuildInfo]:  # fmt: skip
        """Builds (of one pipeline, with one status, or only the unfinished), newest first; not those of
        deleted pipelines. ``status`` is a ``BuildStatus`` (or its name), else ``InvalidRequest``.
        ``limit`` keeps the newest; ``before`` (a build id, ``NotFound`` if unknown) those submitted
        before it, so the last id of one page gives the next."""
        wanted = None if status is None else _word(BuildStatus, status, "build status", "status")
        refs = [self._pipeline(pipeline)] if pipeline is not None else self._live_pipelines()
        return await self._with_positions(await self._list(refs, ListBuilds(wanted, unfinished, limit,
                                                                            await self._key(before))))  # fmt: skip

    async def _key(self, build_id: str | None) -> tuple[float, str, int] | None:
        if build_id is None:
            return None
        try:
            key: tuple[float, str, int] = await self._owner(build_id).ask(BuildKey(build_id))
        except NotFound:
            raise NotFound(f"no build {build_id!r} to list the builds before (it may have been forgotten)") from None
        return key

    @staticmethod
    async def _list(refs: list[Ref], request: ListBuilds) -> list[BuildInfo]:
        found: list[tuple[tuple[float, str, int], BuildInfo]] = []
        for ref in refs:
            found.extend(await ref.ask(request))
        found.sort(key=lambda pair: pair[0], reverse=True)
        return [info for _, info in found[: request.limit]]

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
        result: BuildInfo = await self._owner(build_id).ask(RetryRequest(build_id, job, step, failed_only))
        return result

    async def cancel(self, build_id: str) -> BuildInfo:
        """Cancel a queued or running build; ``Conflict`` if it has finished."""
        result: BuildInfo = await self._owner(build_id).ask(CancelRequest(build_id))
        return result

    async def logs(self, build_id: str, job: str | None = None, step: str | None = None) -> str:
        result: str = await self._owner(build_id).ask(GetLog(build_id, job, step))
        return result

    # -- groups, nodes, stats -------------------------------------------------------------

    async def groups(self) -> list[GroupInfo]:
        """A snapshot of every running group; one idle for five minutes has retired and is not listed."""
        result: list[GroupInfo] = await _ask_running(self._groups.all(), GroupSnapshot())
        return result

    async def add_node(self, name: str, pool: str = "default", agents: int = 1,
                       labels: list[str] | tuple[str, ...] = ()) -> NodeInfo:  # fmt: skip
        """Add a build node with ``agents`` agents; creates the pool if needed."""
        if not isinstance(name, str) or not name or "/" in name:
            raise InvalidRequest(f"node name must be a non-empty string without '/', got {name!r}")
        # Reserved before the first await: two concurrent adds of one name
        # (to different pools) cannot both pass the check below.
        if name in self._adding_nodes:
            raise Conflict(f"node {name!r} is being added")
        self._adding_nodes.add(name)
        try:
            for ref in self._pools.all():  # one cheap ask per pool, not a listing of every node
                if await ref.ask(HasNode(name)):
                    raise Conflict(f"node {name!r} already exists")
            result: NodeInfo = await self._pools.get(pool).ask(AddNode(name, pool, agents, tuple(labels)))
        finally:
            self._adding_nodes.discard(name)
        return result

    async def update_node(self, name: str, *, agents: int | None = None, labels: list[str] | tuple[str, ...] | None = None,
                          pool: str | None = None) -> NodeInfo:  # fmt: skip
        """Change a node's agents and/or labels (None keeps them). More agents start at once; with fewer,
        idle ones leave at once and busy ones after their job (or lock chain): no running job is stopped.
        New labels place waiting jobs at once. ``pool``, if given, must be the node's own (``Conflict``)."""
        if agents is not None and (not isinstance(agents, int) or isinstance(agents, bool) or agents < 1):
            raise InvalidRequest(f"agents must be an integer >= 1, got {agents!r}")
        if labels is not None and (isinstance(labels, str) or not all(isinstance(x, str) and x for x in labels)):
            raise InvalidRequest(f"labels must be a list of non-empty strings, got {labels!r}")
        change = UpdateNode(name, agents, None if labels is None else tuple(labels), pool)
        for ref in self._pools.all():
            if await ref.ask(HasNode(name)):
                result: NodeInfo = await ref.ask(change)
                return result
        raise NotFound(f"no node {name!r}")

    async def remove_node(self, name: str) -> NodeInfo:
        """Drain a node: running jobs finish, no new ones start, then it goes."""
        for ref in self._pools.all():
            if await ref.ask(HasNode(name)):
                result: NodeInfo = await ref.ask(RemoveNode(name))
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
        if self._app is None:
            if self._app_factory is None:
                raise RuntimeError("this Runtime was made without an app factory; use open_runtime()")
            self._app = self._app_factory(self)
        return self._app

    # -- internals ------------------------------------------------------------------------

    def _pipeline_or_none(self, pipeline_id: str) -> Ref | None:
        try:
            return self.system.lookup(f"pipeline:{pipeline_id}")
        except LookupError:
            return None

    def _pipeline(self, pipeline_id: str) -> Ref:
        """A live pipeline's actor; ``NotFound`` for an unknown or deleted one."""
        live = isinstance(pipeline_id, str) and pipeline_id not in self._deleted
        ref = self._pipeline_or_none(pipeline_id) if live else None
        if ref is None:
            raise NotFound(f"no pipeline {pipeline_id!r}")
        return ref

    def _owner(self, build_id: str) -> Ref:
        pipeline_id, _, number = build_id.rpartition(".") if isinstance(build_id, str) else ("", "", "")
        ref = self._pipeline_or_none(pipeline_id) if number.isdigit() else None
        if ref is None:
            raise NotFound(f"no build {build_id!r}")
        return ref

    def _live_pipelines(self) -> list[Ref]:
        return [ref for ref in self.system.children(self._pipelines)
                if ref.name.removeprefix("pipeline:") not in self._deleted]  # fmt: skip

    async def _close(self) -> None:
        """Cancel what still runs and wait (bounded) for it to end."""
        # Deleted pipelines' builds too: some may still be ending their cancel.
        unfinished = await self._list(self.system.children(self._pipelines), ListBuilds(unfinished=True))
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
