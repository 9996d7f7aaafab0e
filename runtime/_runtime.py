"""The runtime facade: the ``Runtime`` users hold (``open_runtime()`` in ``_open.py`` makes one).

It turns each API call into an ``ask`` to the actor that owns the answer
(pipelines here; pools, groups and mutexes in ``_cluster.py``; the event
hub) and holds no scheduling state of its own. With durable state
(``_state.py``) it also writes what an answered call changed and reads
builds the pipelines no longer hold back from the store. It knows nothing
of HTTP: ``asgi_app`` is built by the factory ``open_runtime()`` hands it.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.lowlevel
import msgspec

from actors.admission.group import GroupSnapshot, QueuePosition
from actors.builds.build import Build
from actors.builds.listing import build_key
from actors.builds.pipeline import PipelineActor
from actors.builds.records import StepLog
from actors.builds.resume import GetLogSources, NotHeld, Restore, log_sources
from actors.builds.snapshot import build_info
from actors.core import ActorStopped, ActorSystem, AskTimeout, Ref, Supervision
from actors.directory import Directory
from actors.dispatch.matching import action_label
from actors.dispatch.remote import ActionsChanged, needs
from actors.events import EventLog, Gauge, History, Subscribe, Subscription
from actors.execution.actions import ActionInputs, ActionRegistry, StepContext
from actors.model.errors import Conflict, InvalidRequest, NotFound, Overloaded, SpecError
from actors.model.info import BuildInfo, Event, PipelineDeleted, PipelineInfo
from actors.model.messages import (
    BuildKey,
    CancelRequest,
    DescribePipeline,
    GetBuild,
    ListBuilds,
    ReplaceSpec,
    RetirePipeline,
    RetryRequest,
    SubmitBuild,
    WaitBuild,
)
from actors.model.spec import PipelineSpec
from actors.model.vocab import BuildStatus
from actors.state.durable import Durable
from actors.state.store import Batch

from ._closing import Closing
from ._logs import LogFollowing
from ._cluster import Cluster, ask_running, word
from ._state import FINISHED_CACHE, State, definition_key
from .config import RuntimeConfig
from .spec_loader import check_pipeline, read_source, slugify, validate_pipeline_id

__all__ = ["Runtime"]

logger = logging.getLogger("shunter")

STORE_LISTING = 1_000  # finished builds a listing without a limit reads back from the store

# Pipeline state lives in its actor; a restarted instance would come back
# empty and lose builds, so a pipeline crash fails the runtime loudly instead.
_PIPELINE_SUPERVISION = Supervision(max_restarts=0, escalate=True)


class Runtime(Cluster, Closing, LogFollowing):
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
        app_factory: Callable[[Runtime], Any] | None = None,
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
        self._deleted: set[str] = set()  # their actors stay (builds readable, numbering kept), unlisted
        # submit's pipeline actors by id, found through ``_pipeline`` once: its look-up was five calls per build.
        # A deleted pipeline's entry goes with the deletion; a stopped actor's ref is looked up again.
        self._submit_to: dict[str, Ref] = {}
        # Pipelines being deleted or revived: one change at a time, or the replies' order could leave _deleted wrong.
        self._changing: set[str] = set()
        self._app_factory = app_factory
        self._app: Any = None
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
        definition they started with. Registering a deleted pipeline's id
        again brings its builds back and continues its numbering. The
        result's ``warnings`` name each ``runs-on`` that no node matches now
        (its jobs would wait for one).
        """
        nodes: dict[str, dict[str, frozenset[str]]] = {}
        everywhere = self.actions.names()  # a local node runs every action; a remote one those it offers
        for node in await self.nodes():
            if not node.draining:
                actions = everywhere if node.actions is None else node.actions
                nodes.setdefault(node.pool, {})[node.name] = frozenset(node.labels).union(map(action_label, actions))
        raw = read_source(source)
        spec, warnings = check_pipeline(raw, known_actions=self.actions.declared_inputs(), nodes=nodes,
                                        secrets=self.config.secrets.names(),
                                        needs=lambda job: needs(self.actions, job, frozenset()))  # fmt: skip
        pipeline_id = id if id is not None else slugify(spec.name)
        problem = validate_pipeline_id(pipeline_id)
        if problem is not None:
            raise SpecError([{"path": "id", "message": problem}])
        state = self._state
        text = spec.source or json.dumps(raw, default=str)  # a mapping is stored as JSON (which is YAML)
        key = definition_key(pipeline_id, text) if state is not None else ""
        if pipeline_id in self._changing:
            self._begin_change(pipeline_id)  # refused: a delete or revive of it is on its way
        ref = self._pipeline_or_none(pipeline_id)
        revive = ref is not None and pipeline_id in self._deleted
        if revive:
            self._begin_change(pipeline_id)
        try:
            if ref is not None:
                info: PipelineInfo = await ref.ask(ReplaceSpec(spec, key))
            else:
                ref = self._spawn_pipeline(pipeline_id, spec, key)
                info = await ref.ask(DescribePipeline())
            if state is not None:
                batch = state.pipeline_batch(pipeline_id, key, text)
                batch.deleted[pipeline_id] = False
                await state.write(batch)
        finally:
            if revive:
                self._deleted.discard(pipeline_id)  # the actor took it: it is live whatever the ask said
                self._changing.discard(pipeline_id)
        return msgspec.structs.replace(info, warnings=warnings) if warnings else info

    def _spawn_pipeline(self, pipeline_id: str, spec: PipelineSpec, key: str, next_number: int = 1) -> Ref:
        state, config = self._state, self.config
        durable = None if state is None else Durable(
            state.journal, f"{state.logs}/{pipeline_id}", config.max_log_bytes)  # type: ignore[arg-type]  # fmt: skip
        history = FINISHED_CACHE if state is not None else config.retention.builds_per_pipeline or 1_000_000_000
        return self.system.spawn(
            lambda: PipelineActor(pipeline_id=pipeline_id, spec=spec, hub=self._hub, pools=self._pools,
                                  groups=self._groups, mutexes=self._mutexes, history=history, durable=durable,
                                  definition=key, next_number=next_number,
                                  mask=config.secrets.mask if config.secrets else None),  # fmt: skip
            name=f"pipeline:{pipeline_id}",
            parent=self._pipelines,
            supervision=_PIPELINE_SUPERVISION,
        )

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
        numbering goes on, so no build id is reused. With a store, the deletion survives a restart."""
        self._begin_change(pipeline_id)
        try:
            ref = self._pipeline(pipeline_id)
            cancelled: list[str] = await ref.ask(RetirePipeline(cancel=cancel))
            self._deleted.add(pipeline_id)
            self._submit_to.pop(pipeline_id, None)
            if self._state is not None:
                await self._state.write(Batch(deleted={pipeline_id: True}))
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
        if self._draining:
            raise Overloaded("shunter is stopping: it admits no new builds; try again once it has restarted")
        if self._gauge.unfinished >= self.config.max_queued_builds:
            raise Overloaded(
                f"{self._gauge.unfinished} builds are queued or running (max-queued-builds "
                f"{self.config.max_queued_builds}); try again later"
            )
        ref = self._submit_to.get(pipeline_id) if type(pipeline_id) is str else None
        if ref is None or ref.stopped:
            ref = self._submit_to[pipeline_id] = self._pipeline(pipeline_id)
        result: BuildInfo = await ref.ask(SubmitBuild(dict(variables or {})))
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
                     unfinished: bool = False, *, limit: int | None = None,
                     before: str | None = None) -> list[BuildInfo]:  # fmt: skip
        """Builds (of one pipeline, with one status, or only the unfinished), newest first; not those of
        deleted pipelines. ``status`` is a ``BuildStatus`` (or its name), else ``InvalidRequest``.
        ``limit`` keeps the newest; ``before`` (a build id, ``NotFound`` if unknown) those submitted
        before it, so the last id of one page gives the next. With a store, finished builds that left
        the pipelines' caches are read back from it: ``limit`` of them, or ``STORE_LISTING`` without a
        limit; page with ``before`` to reach older ones."""
        wanted = None if status is None else word(BuildStatus, status, "build status", "status")
        refs = [self._pipeline(pipeline)] if pipeline is not None else self._live_pipelines()
        request = ListBuilds(wanted, unfinished, limit, await self._key(before))
        found: list[tuple[tuple[float, str, int], BuildInfo]] = []
        for ref in refs:
            found.extend(await ref.ask(request))
        if self._state is not None and not unfinished and wanted not in (BuildStatus.QUEUE, BuildStatus.RUNNING):
            held = {info.id for _, info in found}
            page = limit if limit is not None else STORE_LISTING
            for build in await self._state.read_builds(pipeline, wanted, page + len(held), request.before):
                key = build_key(build)
                if build.id not in held and build.pipeline_id not in self._deleted:
                    found.append((key, build_info(build)))
        found.sort(key=lambda pair: pair[0], reverse=True)
        return await self._with_positions([info for _, info in found[:limit]])

    async def _key(self, build_id: str | None) -> tuple[float, str, int] | None:
        """The listing key of ``build_id`` (held by its pipeline, or in the store)."""
        if build_id is None:
            return None
        try:
            key: tuple[float, str, int] = await self._owner(build_id).ask(BuildKey(build_id))
        except NotHeld:
            key = build_key(await self._stored(build_id))
        except NotFound:
            raise NotFound(f"no build {build_id!r} to list the builds before (it may have been forgotten)") from None
        return key

    async def _with_positions(self, builds: list[BuildInfo]) -> list[BuildInfo]:
        """Fill in queue positions, asking each group concerned once."""
        groups = {build.group for build in builds if build.status == BuildStatus.QUEUE and build.group is not None}
        positions: dict[str, int] = {}
        refs = [ref for ref in map(self._groups.find, groups) if ref is not None]
        for snapshot in await ask_running(refs, GroupSnapshot()):
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
        return await self._cancel(CancelRequest(build_id))

    async def _cancel(self, request: CancelRequest) -> BuildInfo:
        build_id = request.build_id
        try:
            result: BuildInfo = await self._owner(build_id).ask(request)
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

    # -- actions and events --------------------------------------------------------------

    def register_action(self, name: str, fn: Callable[[StepContext], Awaitable[None]],
                        inputs: ActionInputs | None = None) -> None:  # fmt: skip
        """Make ``fn`` available to ``uses: name@1`` steps.

        ``inputs`` (input name → ``ActionInput``) declares what ``with:`` may
        hold: pipelines registered afterwards are refused when a step's
        ``with:`` does not fit. None accepts anything.
        """
        self.actions.register(name, fn, inputs)
        for pool in self._pools.all():  # local nodes can run it now (docs/design.md §11)
            pool.tell(ActionsChanged())

    @asynccontextmanager
    async def subscribe(self, *, after: int | None = None, buffer: int | float = 10_000
                        ) -> AsyncIterator[Subscription]:  # fmt: skip
        """Live events (and, with ``after``, the kept history after that id first).

        ``async with rt.subscribe() as events: async for event in events: ...``.
        A subscriber with more than ``buffer`` events waiting to be read
        (``math.inf``: never) is dropped: its iteration ends after the events
        that fitted. See ``actors.subscription.Subscription``.
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
        """The HTTP API of docs/design.md §7 for this runtime, as an ASGI 3 app (built on first use).

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

    def _live_pipelines(self) -> list[Ref]:
        return [ref for ref in self.system.children(self._pipelines)
                if ref.name.removeprefix("pipeline:") not in self._deleted]  # fmt: skip

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


async def _log_pieces(sources: list[tuple[str, StepLog]]) -> AsyncIterator[str]:
    """Each attempt's header and its log, read a piece at a time."""
    for header, log in sources:
        yield header
        ends_with_newline = True
        for piece in log.chunks():
            if not piece:
                continue  # an empty log in memory: no blank line under its header
            yield piece
            ends_with_newline = piece.endswith("\n")
            await anyio.lowlevel.checkpoint()
        if not ends_with_newline:
            yield "\n"
