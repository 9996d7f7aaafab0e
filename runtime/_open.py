"""``open_runtime()``: wire an actor system, the ``Runtime`` facade and its HTTP door.

It opens the actor system, starts the event hub, the directories of pools,
groups and mutexes and the supervisor of pipelines, adds the configured
nodes and loads the configured pipelines, and hands the ``Runtime`` to the
``async with`` block. The facade itself (``_runtime.py``) knows nothing of
HTTP: this module gives it the factory of its ASGI app, so the dependencies
point one way, ``_open -> http -> _runtime``.
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

from actors.admission.group import GroupActor
from actors.admission.mutex import MutexActor
from actors.core import Actor, Supervision, open_system
from actors.directory import Directory
from actors.dispatch.pool import PoolActor
from actors.events import EventHub, Gauge
from actors.execution.actions import ActionRegistry
from actors.model.errors import SpecError

from ._runtime import Runtime
from .config import RuntimeConfig, default_config, load_config
from .http import App

__all__ = ["open_runtime"]

logger = logging.getLogger("shunter")


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
) -> AsyncIterator[Runtime]:
    """Run shunter inside the ``async with`` block (trio or asyncio).

    ``config`` is a ``RuntimeConfig``, a mapping, YAML text or a path (see
    README); None is one pool ``default`` with one local node of as many
    agents as the machine has cores. Agents' workspaces live under
    ``workdir`` (a temporary directory, removed at the end, by default).
    On exit, builds still running are cancelled and awaited (bounded), then
    every actor stops; ``Runtime.interrupted`` lists what was cancelled.
    """
    settings = _config(config)
    own_workdir = workdir is None
    root = Path(tempfile.mkdtemp(prefix="shunter-")) if workdir is None else Path(workdir)
    actions = ActionRegistry.with_builtins()
    try:
        async with open_system(shutdown_timeout=settings.shutdown_timeout) as system:
            gauge = Gauge()
            hub = system.spawn(lambda: EventHub(gauge=gauge), name="events")

            def pool(name: str) -> Callable[[], PoolActor]:
                return lambda: PoolActor(pool=name, workdir=root / name, actions=actions,
                                         heartbeat_interval=settings.heartbeat_interval,
                                         heartbeat_timeout=settings.heartbeat_timeout, hub=hub)  # fmt: skip

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
                              app_factory=App)  # fmt: skip
            for pool_config in settings.pools:
                pools.get(pool_config.name)
                for node in pool_config.nodes:
                    await runtime.add_node(node.name, pool_config.name, node.agents, node.labels)
            for index, pattern in enumerate(settings.pipelines):
                for path in sorted(glob.glob(pattern)) or [pattern]:
                    await _register_configured(runtime, path, f"$.pipelines[{index}]")
            try:
                yield runtime
            finally:
                await runtime._close()
    finally:
        if own_workdir:
            shutil.rmtree(root, ignore_errors=True)
