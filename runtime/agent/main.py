"""``shunter agent``: run a node's agents here and serve a remote server (DESIGN §11).

The process runs a small actor system of its own: ``N`` ``AgentActor``
(the server's agent code, unchanged), each with a workspace
``WORK_DIR/<index>``, and the ``Uplink`` that talks to the server. SIGTERM
(or Ctrl-C) drains: no new work, running attempts finish (cancelled after
``drain_timeout``), then the node leaves and the process exits 0.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from actors.core import Ref, open_system
from actors.execution.actions import ActionRegistry
from actors.execution.agent import AgentActor
from actors.remote.protocol import Register

from .http import AgentHTTP
from .uplink import Drain, Uplink

__all__ = ["AgentOptions", "run_agent"]


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


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_agent(options: AgentOptions, out: Callable[[str], None] = _print) -> int:
    """Serve ``options.server`` until drained; 0 when the node left in order."""
    AgentHTTP(options.server)  # a bad URL fails here, before anything starts
    register = Register(name=options.name, pool=options.pool, labels=list(options.labels), agents=options.agents)
    work_dir = (options.work_dir or Path("shunter-work") / options.name).resolve()
    actions = ActionRegistry.with_builtins()
    done = anyio.Event()
    async with open_system() as system:
        agents: list[Ref] = []
        uplink = system.spawn(lambda: Uplink(register=register, server=options.server, token=options.token,
                                             agents=agents, out=out, done=done), name="uplink")  # fmt: skip
        for index in range(options.agents):
            name = f"{options.name}/{index}"

            def factory(name: str = name, index: int = index) -> AgentActor:
                return AgentActor(node=options.name, agent=name, workspace=work_dir / str(index), pool=uplink,
                                  actions=actions, kill_grace=options.kill_grace)  # fmt: skip

            agents.append(system.spawn(factory, name=f"agent:{name}"))
        out(f"shunter agent: node {options.name}, {options.agents} agent(s), work dir {work_dir}, "
            f"server {options.server}")  # fmt: skip
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with anyio.create_task_group() as group:

                async def drain_on_signal() -> None:
                    async for signum in signals:
                        out(f"shunter agent: got {signal.Signals(signum).name}")
                        uplink.tell(Drain(options.drain_timeout))

                group.start_soon(drain_on_signal)
                await done.wait()
                group.cancel_scope.cancel()
        out(f"shunter agent: node {options.name} left {options.server}")
    return 0
