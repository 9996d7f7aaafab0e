"""``shunter agent``: run a node's agents here and serve a remote server (docs/design.md §11).

The process runs a small actor system of its own: ``N`` ``AgentActor``
(the server's agent code, unchanged), each with a workspace
``WORK_DIR/<index>``, and the ``Uplink`` that talks to the server. SIGTERM
(or Ctrl-C) drains: no new work, running attempts finish (cancelled after
``drain_timeout``), then the node leaves and the process exits 0.
``serve_node`` is the same without signals and with any transport and
action registry: an embedder (or a test) can run a remote node in-process.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from actors.core import Ref, open_system
from actors.execution.actions import ActionRegistry
from actors.execution.agent import AgentActor
from actors.remote.protocol import Register

from .http import AgentHTTP, Transport
from .plugins import load_actions
from .uplink import Drain, Uplink

__all__ = ["AgentOptions", "RemoteNode", "run_agent", "serve_node"]


@dataclass(frozen=True)
class AgentOptions:
    server: str
    name: str
    pool: str = "default"
    labels: list[str] = field(default_factory=list)
    agents: int = 1
    work_dir: Path | None = None  # default: ./shunter-work/<name>
    token: str | None = None
    drain_timeout: float = 600.0
    kill_grace: float = 5.0
    actions: tuple[str, ...] = ()  # --actions MODULE[:ATTR] (plugins.py)


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class RemoteNode:
    """A running remote node: ``drain()`` it, or wait until it has ``left``."""

    uplink: Ref
    left: anyio.Event
    drain_timeout: float

    def drain(self) -> None:
        self.uplink.tell(Drain(self.drain_timeout))


@asynccontextmanager
async def serve_node(options: AgentOptions, *, connect: Callable[[], Transport] | None = None,
                     actions: ActionRegistry | None = None,
                     out: Callable[[str], None] = _print) -> AsyncIterator[RemoteNode]:  # fmt: skip
    """Run the node's agents and its uplink until the block ends (which stops them at once)."""
    if connect is None:
        AgentHTTP(options.server)  # a bad URL fails here, before anything starts

        def connect() -> Transport:
            return AgentHTTP(options.server, options.token)

    registry = actions if actions is not None else load_actions(options.actions)
    extra = sorted(name for name in registry.names() if not registry.builtin(name))  # the built-ins run anywhere
    register = Register(name=options.name, pool=options.pool, labels=list(options.labels), agents=options.agents,
                        actions=extra)  # fmt: skip
    work_dir = (options.work_dir or Path("shunter-work") / options.name).resolve()
    left = anyio.Event()
    async with open_system() as system:
        agents: list[Ref] = []
        uplink = system.spawn(lambda: Uplink(register=register, server=options.server, connect=connect,
                                             agents=agents, out=out, done=left), name="uplink")  # fmt: skip
        for index in range(options.agents):
            name = f"{options.name}/{index}"

            def factory(name: str = name, index: int = index) -> AgentActor:
                return AgentActor(node=options.name, agent=name, workspace=work_dir / str(index), pool=uplink,
                                  actions=registry, kill_grace=options.kill_grace)  # fmt: skip

            agents.append(system.spawn(factory, name=f"agent:{name}"))
        out(f"shunter agent: node {options.name}, {options.agents} agent(s), work dir {work_dir}, "
            f"server {options.server}" + (f", actions {', '.join(extra)}" if extra else ""))  # fmt: skip
        yield RemoteNode(uplink, left, options.drain_timeout)


async def run_agent(options: AgentOptions, out: Callable[[str], None] = _print,
                    actions: ActionRegistry | None = None) -> int:  # fmt: skip
    """Serve ``options.server`` until drained (SIGTERM, SIGINT, or the server drains the node); 0 then."""
    async with serve_node(options, out=out, actions=actions) as node:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:

                async def drain_on_signal() -> None:
                    async for signum in signals:
                        out(f"shunter agent: got {signal.Signals(signum).name}")
                        node.drain()

                group.start_soon(drain_on_signal)
                await node.left.wait()
                group.cancel_scope.cancel()
    out(f"shunter agent: node {options.name} left {options.server}")
    return 0
