"""``shunter serve``: the runtime and its HTTP API on hypercorn, in one trio task group.

``serve(config)`` opens the runtime (its pools and the pipelines the config
names), serves ``rt.asgi_app`` with hypercorn's trio worker and, on SIGINT
or SIGTERM (or when ``shutdown`` is set), shuts down gracefully:

1. the app closes its event streams and hypercorn stops accepting
   connections, finishing the requests in flight;
2. the runtime closes: it admits nothing new and lets running jobs finish
   for up to ``drain-timeout``; then, with a state directory, running jobs
   are interrupted (their steps stopped) and queued builds stay queued for
   the next start (docs/design.md §10); in memory, what is left is cancelled;
3. every build is accounted for: the report lists the interrupted ones and
   those left queued.

While it serves, CPython's cyclic garbage collector runs its young-object
pass every ``GC_THRESHOLD`` allocations instead of every 700
(``collector_tuned``; restored when ``serve`` returns). The runtime keeps
thousands of finished builds and events; at the default every tenth
middle pass became a full pass over all of them, about a fifth of the
server's CPU time under a load of submissions (``python -m bench http``).
Nearly all per-request garbage is freed by reference counting anyway.

A second signal during shutdown cuts the drain short: running builds are
interrupted at once (the rest is bounded by hypercorn's graceful timeout and
the runtime's ``shutdown-timeout``).

Start-up errors come out as one exception, never as a group of nested
task-group errors: ``StartupError`` when the address cannot be listened on
(the socket is bound before the runtime opens, so nothing else starts) or
the state directory is in use by another server, ``SpecError`` when a
pipeline the configuration names is invalid or cannot be read.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import resource
import signal
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import hypercorn.config
import msgspec
import trio
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app

from actors.execution.actions import ActionRegistry
from actors.model.errors import SpecError

from .auth import TokenTable, protected_mode_problem
from .config import RuntimeConfig
from ._closing import some
from ._open import open_runtime
from ._state import StateDirInUse

__all__ = ["GC_THRESHOLD", "ProtectedMode", "ServeReport", "StartupError", "collector_tuned", "hypercorn_config",
           "serve"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)
BACKLOG = 2048  # connections the kernel holds for accept(): a burst of 5,000 clients is not reset
SEND_TIMEOUT = 60  # seconds sent data may stay unacknowledged before the kernel drops the connection
GC_THRESHOLD = 20_000  # allocations between the collector's young passes while serving (CPython: 700)
_FILES = 65_536  # open files wanted (each connection is one): slow clients do not exhaust the default 1,024


class StartupError(Exception):
    """``serve`` could not start; the message says why in one line."""


class ProtectedMode(StartupError):
    """Serving without a token on an address other than loopback (docs/design.md §12)."""


class _Settings(hypercorn.config.Config):
    """hypercorn's configuration, whose listening sockets give up on peers that stop reading.

    hypercorn writes to a connection in a shielded scope, so an event stream
    whose client stopped reading (a zero TCP window) would hold its task
    forever; ``TCP_USER_TIMEOUT`` (inherited by accepted sockets) makes the
    kernel drop such a connection after ``SEND_TIMEOUT`` seconds.
    """

    def create_sockets(self) -> Any:
        sockets = super().create_sockets()
        option = getattr(socket, "TCP_USER_TIMEOUT", None)
        for sock in sockets.insecure_sockets:
            if option is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, option, SEND_TIMEOUT * 1000)
                except OSError:
                    pass  # not supported here: streams still end when the app closes
        return sockets


@dataclass
class ServeReport:
    """What a server run did: where it listened, which signal stopped it, what it interrupted."""

    binds: list[str] = field(default_factory=list)
    signal: str | None = None
    builds: int = 0
    interrupted: list[str] = field(default_factory=list)
    left_queued: list[str] = field(default_factory=list)
    hurry: Callable[[], None] | None = field(default=None, repr=False)  # cuts the drain short


def hypercorn_config(config: RuntimeConfig, **overrides: Any) -> hypercorn.config.Config:
    """A hypercorn configuration for ``config.server`` (bind, body limit, backlog), quiet by default."""
    settings = _Settings()
    settings.bind = [config.server.bind]
    settings.backlog = BACKLOG
    settings.accesslog = None
    settings.loglevel = "WARNING"  # the CLI prints where it listens itself
    # hypercorn's own limit for WSGI only; the app enforces max-body-bytes on every request.
    settings.wsgi_max_body_size = config.server.max_body_bytes
    for name, value in overrides.items():
        setattr(settings, name, value)
    return settings


def with_bind(config: RuntimeConfig, bind: str | None) -> RuntimeConfig:
    """``config`` listening on ``bind`` instead (None keeps it)."""
    if bind is None:
        return config
    return msgspec.structs.replace(config, server=msgspec.structs.replace(config.server, bind=bind))


async def serve(
    config: RuntimeConfig,
    *,
    shutdown: trio.Event | None = None,
    handle_signals: bool = True,
    out: Callable[[str], None] = print,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    actions: ActionRegistry | None = None,
) -> ServeReport:
    """Serve until a signal (or ``shutdown``), then shut down as the module docstring says.

    ``task_status.started`` receives the addresses hypercorn listens on
    (``http://127.0.0.1:8000``; with port 0 the port the system chose).
    ``out`` receives the human progress lines. Raises ``StartupError`` or
    ``SpecError`` if it cannot start (see the module docstring), and
    ``ProtectedMode`` (a ``StartupError``) before binding when ``config``
    has no token and binds an address other than loopback.
    """
    problem = protected_mode_problem(config.server.bind, TokenTable.build(config.auth))
    if problem is not None:
        raise ProtectedMode(problem)
    _raise_file_limit()
    try:
        with collector_tuned():
            return await _serve_until_stopped(config, shutdown, handle_signals, out, task_status, actions)
    except BaseExceptionGroup as group:
        cause = _startup_cause(group)
        if cause is None:
            raise
        raise cause from None


def _startup_cause(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The start-up error a group of task-group errors holds, if it holds only that."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        error = pending.pop()
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        elif not isinstance(error, trio.Cancelled):
            leaves.append(error)
    if len(leaves) == 1 and isinstance(leaves[0], (StartupError, SpecError)):
        return leaves[0]
    return None


async def _serve_until_stopped(config: RuntimeConfig, shutdown: trio.Event | None, handle_signals: bool,
                               out: Callable[[str], None], task_status: trio.TaskStatus[list[str]],
                               actions: ActionRegistry | None) -> ServeReport:  # fmt: skip
    stop = shutdown if shutdown is not None else trio.Event()
    report = ServeReport()
    if not handle_signals:
        await _serve(config, stop, report, out, task_status, actions, handle_signals=False)
        return report
    # Installed before the runtime starts, so an early Ctrl-C is a clean shutdown too.
    with trio.open_signal_receiver(*SIGNALS) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_signals, signals, stop, report, out)
            try:
                await _serve(config, stop, report, out, task_status, actions, handle_signals=True)
            finally:
                nursery.cancel_scope.cancel()
    return report


def _listen(config: RuntimeConfig, settings: hypercorn.config.Config) -> hypercorn.config.Sockets:
    """Bind and listen on ``server.bind`` now, before anything else starts."""
    try:
        sockets = settings.create_sockets()
    except OSError as error:
        why = error.strerror or str(error)
        raise StartupError(f"cannot listen on {config.server.bind}: {why[:1].lower()}{why[1:]}") from None
    for sock in sockets.insecure_sockets:
        sock.listen(settings.backlog)
    return sockets


async def _serve(config: RuntimeConfig, stop: trio.Event, report: ServeReport, out: Callable[[str], None],
                 task_status: trio.TaskStatus[list[str]], actions: ActionRegistry | None, *,
                 handle_signals: bool) -> None:  # fmt: skip
    settings = hypercorn_config(config)
    sockets = _listen(config, settings)
    try:
        await _serve_on(sockets, settings, config, stop, report, out, task_status, actions,
                        handle_signals=handle_signals)  # fmt: skip
    finally:
        for sock in sockets.insecure_sockets:
            sock.close()  # hypercorn's listeners closed them already, unless it never started


async def _serve_on(sockets: hypercorn.config.Sockets, settings: hypercorn.config.Config, config: RuntimeConfig,
                    stop: trio.Event, report: ServeReport, out: Callable[[str], None],
                    task_status: trio.TaskStatus[list[str]], actions: ActionRegistry | None, *,
                    handle_signals: bool) -> None:  # fmt: skip
    try:
        await _run(config, stop, report, out, settings, sockets, task_status, actions, handle_signals=handle_signals)
    except StateDirInUse as error:
        raise StartupError(f"cannot serve: {error}") from None


async def _run(config: RuntimeConfig, stop: trio.Event, report: ServeReport, out: Callable[[str], None],
               settings: hypercorn.config.Config, sockets: hypercorn.config.Sockets,
               task_status: trio.TaskStatus[list[str]], actions: ActionRegistry | None, *,
               handle_signals: bool) -> None:  # fmt: skip
    async with open_runtime(config, actions=actions) as rt:
        report.hurry = rt.stop_draining
        for pipeline in await rt.pipelines():
            out(f"pipeline {pipeline.id!r} registered ({pipeline.name})")
        app = rt.asgi_app

        async def trigger() -> None:
            await stop.wait()
            app.close()  # end event streams now rather than after the graceful timeout

        async with trio.open_nursery() as nursery:
            serving = functools.partial(_http, app, settings, sockets, trigger, nursery.cancel_scope)
            report.binds = await nursery.start(serving)
            nodes = await rt.nodes()
            agents = sum(len(node.agents) for node in nodes)
            out(f"shunter serving on {', '.join(report.binds)} ({len(nodes)} node(s), {agents} agent(s))"
                + ("; Ctrl-C to stop" if handle_signals else ""))  # fmt: skip
            if config.state_dir is not None:
                out(f"state: {config.state_dir} (pipelines, builds and logs survive a restart)")
            else:
                out("state: in memory (--ephemeral): everything is lost when the server stops")
            task_status.started(report.binds)
        builds = await rt.builds()
        report.builds = len(builds)
    report.interrupted = list(rt.interrupted)
    report.left_queued = list(rt.left_queued)
    finished = report.builds - len(report.interrupted) - len(report.left_queued)
    out(f"stopped: {report.builds} build(s), {finished} finished, {len(report.interrupted)} interrupted"
        + (f": {some(report.interrupted)}" if report.interrupted else ""))  # fmt: skip
    if report.left_queued:
        out(f"left queued for the next start: {len(report.left_queued)}: {some(report.left_queued)}")


async def _http(app: Any, settings: hypercorn.config.Config, sockets: hypercorn.config.Sockets,
                trigger: Callable[[], Any], scope: trio.CancelScope,
                *, task_status: trio.TaskStatus[list[str]]) -> None:  # fmt: skip
    try:
        # What hypercorn.trio.serve does, on the sockets bound already (as its own workers are given).
        await worker_serve(wrap_app(app, settings.wsgi_max_body_size, "asgi"), settings, sockets=sockets,
                           shutdown_trigger=trigger, task_status=task_status)  # fmt: skip
    finally:
        scope.cancel()  # hypercorn has stopped: nothing else in the server's nursery should outlive it


@contextlib.contextmanager
def collector_tuned() -> Iterator[None]:
    """Run the cyclic collector's young pass every ``GC_THRESHOLD`` allocations (at most that often) inside.

    The older generations' thresholds stay; a collector disabled (threshold
    0) stays disabled. The thresholds found are put back on the way out.
    """
    previous = gc.get_threshold()
    if previous[0]:
        gc.set_threshold(max(previous[0], GC_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


def _raise_file_limit() -> None:
    """Let this process hold more connections than the usual 1,024 open files, up to what it may."""
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = _FILES if hard == resource.RLIM_INFINITY else min(_FILES, hard)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        pass  # keep what we have


async def _watch_signals(signals: Any, stop: trio.Event, report: ServeReport, out: Callable[[str], None]) -> None:
    async for signum in signals:
        name = signal.Signals(signum).name
        if stop.is_set():
            if report.hurry is not None:
                report.hurry()
                out(f"{name} again: interrupting the running builds now")
            else:
                out(f"{name}: already shutting down")
            continue
        report.signal = name
        out(f"{name}: shutting down (finishing requests, draining running builds)")
        stop.set()
