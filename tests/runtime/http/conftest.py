"""Helpers for the HTTP API tests: a runtime on the MockClock and clients for its app.

- :func:`api` opens a runtime (one pool ``default`` with one node ``n1`` of
  two agents), registers the ``gate`` action and yields an :class:`Api`:
  the runtime, an ``httpx.AsyncClient`` wired to ``rt.asgi_app`` in-process,
  and the gates. Use it in ``@pytest.mark.trio`` tests with ``autojump_clock``.
- ``uses: gate`` with ``with: {gate: NAME}`` runs until the test calls
  ``api.open(NAME)``; with ``fail: true`` it then fails. A test decides
  exactly when a job ends, with no wall-clock waits.
- :func:`sse` drives one ``GET /v1/events`` request in-process: httpx's
  ASGITransport collects a whole response before returning it, which an
  endless event stream never finishes.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec
import trio

import runtime
from actors.execution.actions import ActionFailed

CONFIG = {"pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}


def pipeline_yaml(name: str = "app", *, steps: str = "[{id: hello, uses: echo@1, with: {text: hi}}]",
                  variables: str = "{}", concurrency: str = "") -> str:  # fmt: skip
    """A one-job pipeline ``build`` whose steps are given as a YAML flow list."""
    extra = f"concurrency: {concurrency}\n" if concurrency else ""
    return (f"version: v3.0\nname: {name}\nvariables: {variables}\n{extra}"
            f"jobs:\n  build:\n    steps: {steps}\n")  # fmt: skip


GATED = pipeline_yaml("gated", steps="[{id: wait, uses: gate, with: {gate: g}}, {id: after, uses: noop@1}]")
FAILING = pipeline_yaml("failing", steps="[{id: ok, uses: noop@1}, {id: bad, uses: gate, with: {gate: f, fail: true}}]")


@dataclass
class Api:
    rt: runtime.Runtime
    client: httpx.AsyncClient
    gates: dict[str, trio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> trio.Event:
        return self.gates.setdefault(name, trio.Event())

    def open(self, name: str) -> None:
        self.gate(name).set()

    async def gate_action(self, step: Any) -> None:
        await self.gate(str(step.with_["gate"])).wait()
        if step.with_.get("fail"):
            raise ActionFailed("the gate said fail")

    async def put_pipeline(self, pipeline_id: str, text: str) -> httpx.Response:
        response = await self.client.put(f"/v1/pipelines/{pipeline_id}", content=text,
                                         headers={"content-type": "application/yaml"})  # fmt: skip
        assert response.status_code in (200, 201), response.text
        return response

    async def submit(self, pipeline_id: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.client.post(f"/v1/pipelines/{pipeline_id}/builds", json={"variables": variables or {}})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def until(self, build_id: str, *statuses: str) -> dict[str, Any]:
        """Wait (virtual time) until the build has one of ``statuses``."""
        with trio.fail_after(60):
            while True:
                build = (await self.client.get(f"/v1/builds/{build_id}")).json()
                if build["status"] in statuses:
                    return dict(build)
                await trio.sleep(0.01)

    async def state(self) -> bytes:
        """Everything a request could change, to compare before and after."""
        rt = self.rt
        stats = msgspec.structs.replace(await rt.stats())
        return msgspec.json.encode([await rt.pipelines(), await rt.builds(), await rt.nodes(), await rt.groups(),
                                    stats])  # fmt: skip


@asynccontextmanager
async def api(config: Any = CONFIG) -> AsyncIterator[Api]:
    async with runtime.open_runtime(config) as rt:
        transport = httpx.ASGITransport(app=rt.asgi_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            handle = Api(rt, client)
            rt.register_action("gate", handle.gate_action)
            yield handle
            for gate in list(handle.gates.values()):
                gate.set()


# -- an in-process server-sent events client --------------------------------------------------


@dataclass
class SSEEvent:
    id: int | None
    event: str | None
    data: Any


class SSEReader:
    """Reads the body of one streamed answer, message by message."""

    def __init__(self, messages: Any) -> None:
        self.messages = messages
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.buffer = ""
        self.comments: list[str] = []
        self.ended = False

    async def start(self) -> int:
        message = await self.messages.receive()
        assert message["type"] == "http.response.start", message
        self.status = message["status"]
        self.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        return int(message["status"])

    async def _more(self) -> bool:
        if self.ended:
            return False
        try:
            message = await self.messages.receive()
        except anyio.EndOfStream:
            self.ended = True
            return False
        self.buffer += message.get("body", b"").decode()
        if not message.get("more_body", False):
            self.ended = True
        return True

    async def block(self) -> list[str] | None:
        """The next non-empty block of lines, or None at the end of the stream."""
        while "\n\n" not in self.buffer:
            if not await self._more():
                return None
        block, self.buffer = self.buffer.split("\n\n", 1)
        return block.split("\n")

    async def event(self) -> SSEEvent:
        """The next event; comments on the way are kept in ``comments``."""
        while True:
            lines = await self.block()
            if lines is None:
                raise EOFError("the stream ended")
            fields: dict[str, str] = {}
            for line in lines:
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif ":" in line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
            if "data" in fields:
                event_id = int(fields["id"]) if "id" in fields else None
                return SSEEvent(event_id, fields.get("event"), msgspec.json.decode(fields["data"]))

    async def comment(self, text: str) -> None:
        """Read on until a comment containing ``text`` has been seen."""
        while not any(text in comment for comment in self.comments):
            lines = await self.block()
            if lines is None:
                raise EOFError(f"the stream ended before a comment with {text!r}; comments: {self.comments}")
            self.comments.extend(line[1:].strip() for line in lines if line.startswith(":"))

    async def body(self) -> str:
        """The whole remaining body (for answers that are not streams)."""
        while await self._more():
            pass
        text, self.buffer = self.buffer, ""
        return text

    async def rest(self) -> list[SSEEvent]:
        """Every event until the stream ends."""
        events = []
        while True:
            try:
                events.append(await self.event())
            except EOFError:
                return events


@asynccontextmanager
async def sse(app: Any, target: str = "/v1/events", headers: Iterable[tuple[str, str]] = (),
              method: str = "GET", send_gate: trio.Event | None = None) -> AsyncIterator[SSEReader]:  # fmt: skip
    """Run one request against ``app`` in-process; the reader sees what the app sends.

    Leaving the block disconnects the client. With ``send_gate`` every send
    after the first two waits for it: a client that stopped reading.
    """
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers], "client": ("127.0.0.1", 1),
        "server": ("shunter", 80),
    }  # fmt: skip
    to_reader, messages = anyio.create_memory_object_stream[dict[str, Any]](math.inf)
    disconnected = trio.Event()
    requested = False
    sent = 0

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal sent
        sent += 1
        if send_gate is not None and sent > 2:
            await send_gate.wait()
        to_reader.send_nowait(message)

    async def run() -> None:
        async with to_reader:
            await app(scope, receive, send)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        try:
            yield SSEReader(messages)
        finally:
            disconnected.set()
            if send_gate is not None:
                send_gate.set()
