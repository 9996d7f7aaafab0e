"""Remote nodes in-process, for running the seed scenarios on remote agents too.

``remote_nodes(rt, nodes)`` serves each configured node the way ``shunter
agent`` does (``runtime.agent.serve_node``: the uplink, the agent protocol,
the agent's own actor system), except that requests reach the runtime's
ASGI app in-process, so the MockClock still drives every wait. The agents
share the runtime's action registry, so the probe actions work on them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import trio

import runtime
from actors.execution.actions import ActionRegistry
from actors.remote.protocol import decode, encode
from runtime.agent import AgentOptions, serve_node
from runtime.agent.http import Refused, Transport, Unreachable

__all__ = ["AppTransport", "remote_nodes", "KINDS"]

KINDS = ("local", "remote")
T = TypeVar("T")


class AppTransport:
    """The agent protocol over an in-process ASGI app."""

    def __init__(self, app: Any) -> None:
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T:
        with trio.move_on_after(timeout):
            response = await self.client.post(path, content=encode(message),
                                              headers={"content-type": "application/json"})  # fmt: skip
            if response.status_code >= 400:
                body = response.json()
                raise Refused(response.status_code, body["error"], body["message"], body.get("details", []))
            return decode(reply, response.content)
        raise Unreachable(f"no answer within {timeout:g}s")


@asynccontextmanager
async def remote_nodes(rt: runtime.Runtime, pools: Mapping[str, Sequence[Mapping[str, Any]]], *,
                       transport: Callable[[Any], Transport] = AppTransport,
                       actions: ActionRegistry | None = None) -> AsyncIterator[None]:  # fmt: skip
    """Serve these nodes (pool -> node specs) as remote nodes until the block ends.

    ``transport`` makes each lane's connection from the app (a test may record what passes);
    ``actions`` is the agents' registry (default: the runtime's own, probes included).
    """
    root = Path(tempfile.mkdtemp(prefix="shunter-remote-"))
    expected: dict[str, int] = {}
    try:
        async with AsyncExitStack() as stack:
            for pool, nodes in pools.items():
                for spec in nodes:
                    options = AgentOptions(server="http://127.0.0.1", name=spec["name"], pool=pool,
                                           labels=list(spec.get("labels", ())), agents=spec.get("agents", 1),
                                           work_dir=root / spec["name"])  # fmt: skip

                    def connect() -> Transport:
                        return transport(rt.asgi_app)

                    await stack.enter_async_context(serve_node(options, connect=connect,
                                                               actions=actions if actions is not None else rt.actions,
                                                               out=lambda line: None))  # fmt: skip
                    expected[spec["name"]] = spec.get("agents", 1)
            with trio.fail_after(60):
                while {n.name: len(n.agents) for n in await rt.nodes() if n.kind == "remote" and n.connected} != expected:
                    await trio.sleep(0.01)
            yield
    finally:
        shutil.rmtree(root, ignore_errors=True)
