"""``open_runtime()``: wire an actor system, the ``Runtime`` facade and its HTTP door.

It opens the actor system (and, with a state directory, the journal and
what the store recovered: nodes, pipelines, deleted ones too, unfinished
builds), starts the event hub, the directories of pools, groups and mutexes
and the supervisor of pipelines, adds the configured nodes and loads the
configured pipelines, and hands the ``Runtime`` to the ``async with``
block. The facade itself (``_runtime.py``) knows nothing of HTTP: this
module gives it the factory of its ASGI app, so the dependencies point one
way, ``_open -> http -> _runtime``.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from actors.admission.group import GroupActor, GroupSnapshot
from actors.admission.mutex import MutexActor
from actors.builds.resume import Resume
from actors.core import Actor, Supervision, open_system
from actors.directory import Directory
from actors.dispatch.pool import AddNode, PoolActor, PoolStats
from actors.events import EventHub, EventLog, Gauge
from actors.execution.actions import ActionRegistry
from actors.model.errors import SpecError
from actors.model.messages import DescribePipeline, RetirePipeline
from actors.state.journal import JournalActor

from ._runtime import Runtime
from ._state import State, tell_admissions
from .config import RuntimeConfig, default_config, load_config
from .http import App

__all__ = ["open_runtime"]

logger = logging.getLogger("shunter")

# The journal holds every answered change: a crash past its limit fails the runtime loudly.
_JOURNAL_SUPERVISION = Supervision(max_restarts=0, escalate=True)


class _Supervisor(Actor):
    """Parent of a family of actors (pipelines, groups); handles no messages itself."""


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
    actions: ActionRegistry | None = None,
) -> AsyncIterator[Runtime]:
    """Run shunter inside the ``async with`` block (trio or asyncio).

    ``config`` is a ``RuntimeConfig``, a mapping, YAML text or a path (see
    README); None is one pool ``default`` with one local node of as many
    agents as the machine has cores. Agents' workspaces live under
    ``workdir`` (by default the state directory's ``work/``, emptied at
    start, or in memory a temporary directory removed at the end).
    ``actions`` is the registry the runtime's agents run actions from (by
    default the built-ins; ``shunter serve --actions`` passes one with
    plugins loaded, so the configuration's pipelines may use them).

    In memory unless the config names a ``state-dir`` (docs/design.md §10; see
    ``_state``). On exit, in memory, builds still running are cancelled and
    awaited (bounded), then every actor stops; ``Runtime.interrupted``
    lists what was cancelled. With a state directory running builds get
    ``drain-timeout`` to finish, then what still runs is interrupted and
    queued builds stay queued for the next start (``Runtime.left_queued``).
    """
    settings = _config(config)
    mask = settings.secrets.mask if settings.secrets else None
    state = State(settings.state_dir, mask) if settings.state_dir is not None else None
    own_workdir = workdir is None and state is None
    if workdir is not None:
        root = Path(workdir)
    else:
        root = state.work if state is not None else _fresh_workdir()
    actions = actions if actions is not None else ActionRegistry.with_builtins()
    try:
        recovered = await state.recovered() if state is not None else None
        async with open_system(shutdown_timeout=settings.shutdown_timeout) as system:
            gauge = Gauge()
            if state is not None:
                store = state.store
                # A store that cannot commit breaks the promise of every answer: fail loudly, like a pipeline.
                state.journal = system.spawn(lambda: JournalActor(store, retention=settings.retention,
                                                                  log_root=state.logs), name="journal",
                                             supervision=_JOURNAL_SUPERVISION)  # fmt: skip
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
                              event_log=event_log, state=state, app_factory=App)  # fmt: skip
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


async def _settled(runtime: Runtime) -> None:
    """Wait until the attempts remote agents ran are with their nodes (``AdoptJob``), before an agent
    can register: groups admit the running builds, their pipelines tell the pools, the pools the nodes.
    Each ask is answered after the messages told to that actor before it."""
    for group in runtime._groups.all():
        await group.ask(GroupSnapshot())
    for pipeline in runtime.system.children(runtime._pipelines):
        await pipeline.ask(DescribePipeline())
    for pool in runtime._pools.all():
        await pool.ask(PoolStats())


async def _recover(runtime: Runtime, state: State, recovered: Any, configured: set[str]) -> None:
    """Bring back nodes, pipelines and unfinished builds from the store (docs/design.md §10; see ``_state``)."""
    remote = frozenset(node.name for node in recovered.nodes if node.remote and node.name not in configured)
    for node in recovered.nodes:
        if node.name in remote:  # back disconnected; its agent process registers again (docs/design.md §11)
            await runtime._pools.get(node.pool).ask(AddNode(node.name, node.pool, node.agents, node.labels, True))
            runtime._node_names.add(node.name)
        elif node.name not in configured:  # the config's own nodes win
            await runtime.add_node(node.name, node.pool, node.agents, node.labels, persist=False)
    for row in recovered.pipelines:
        spec = state.shape(row.definition, recovered.definitions.get(row.definition)).spec
        runtime._spawn_pipeline(row.id, spec, row.definition, row.next_number)
    admits: list[Any] = []
    for pipeline_id, builds in state.group_unfinished(recovered).items():
        ref = runtime._pipeline_or_none(pipeline_id)
        if ref is not None:
            admits.extend(await ref.ask(Resume(builds, remote)))
    await tell_admissions(runtime._groups, admits)
    if remote:
        await _settled(runtime)
    for pipeline_id in recovered.deleted:  # deleted before the restart: so again (builds still ending are cancelled)
        ref = runtime._pipeline_or_none(pipeline_id)
        if ref is not None:
            await ref.ask(RetirePipeline(cancel=True))
            runtime._deleted.add(pipeline_id)
    if recovered.pipelines or recovered.unfinished:
        logger.info("recovered %d pipeline(s), %d unfinished build(s), %d finished in the store",
                    len(recovered.pipelines), len(recovered.unfinished), recovered.finished)  # fmt: skip
