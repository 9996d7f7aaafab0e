"""The ASGI 3 application of the HTTP API (docs/design.md §7), without a web framework.

``App(runtime)`` (or ``runtime.asgi_app``) answers ``http`` and ``lifespan``
scopes. For each request it runs the checks of ``guard.py`` (Host, Origin,
token and role, body type: 400/403/401/403/415), matches the route (404
``not_found``, 405 with ``Allow``), reads the body incrementally up to
``server.max-body-bytes`` (413 ``body_too_large``, stopping at the first
byte too many) within ``server.read-timeout`` (408 ``request_timeout``),
calls the route's handler and writes its answer. Every refusal is a JSON
``{"error", "message", "details"}`` with the error's own status; an
unexpected exception is logged and answered 500 ``internal`` with a generic
message. ``GET /v1/events`` is streamed by ``sse.py``.

``close()`` ends the open event streams at once (servers call it before
their graceful shutdown, which would otherwise wait for them); the
lifespan shutdown calls it too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import trio

from actors.core import ActorError, Ref
from actors.model.errors import ShunterError

from .core import (
    BodyTooLarge,
    Internal,
    Request,
    RequestTimeout,
    Response,
    Router,
    Unavailable,
    error_response,
    parse_query,
    parse_segments,
)
from .follow import follow_logs, wants_follow
from .guard import Guard
from .metrics import start_collector
from .routes import LOGS_PATH, ROUTES
from .sse import Receive, Send, stream_events

if TYPE_CHECKING:
    from runtime._runtime import Runtime

__all__ = ["App"]

logger = logging.getLogger("shunter.http")

_ROUTER = Router(ROUTES)
_METHODS_WITH_BODY = frozenset({"PUT", "POST", "DELETE", "PATCH"})


class App:
    """The HTTP API of one runtime, as an ASGI 3 callable. See the module docstring."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.max_body_bytes = rt.config.server.max_body_bytes
        self.read_timeout = rt.config.server.read_timeout
        self.max_event_streams = rt.config.server.max_event_streams
        self.guard = Guard(rt.config)
        self.closed = anyio.Event()
        self.sse_clients = 0
        self.log_followers = 0
        self._metrics: Ref | None = None

    @property
    def metrics(self) -> Ref | None:
        """The metrics collector, started by the first ``/metrics`` scrape (None if the runtime is closing)."""
        if self._metrics is None:
            self._metrics = start_collector(self.rt)
        return self._metrics

    def close(self) -> None:
        """End every open event stream now, and any opened later at once."""
        self.closed.set()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1003})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        method = scope["method"]
        request = Request(
            method=method,
            path=scope["path"],
            segments=parse_segments(scope.get("raw_path"), scope["path"]),
            query=parse_query(scope.get("query_string", b"")),
            headers={name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]},
        )
        cors: list[tuple[str, str]] = []
        try:
            scheme = scope.get("scheme", "http")
            self.guard.check(request, scheme)
            cors = request.response_headers = self.guard.cors_headers(request, scheme)
            preflight = self.guard.preflight(request, scheme)
            if preflight is not None:
                await _send(send, preflight, head=False)
                return
            route, request.params = _ROUTER.match(method, request.segments)
            if route.stream:
                await stream_events(self, request, receive, send)
                return
            if route.path == LOGS_PATH and wants_follow(request):
                await follow_logs(self, request, receive, send)
                return
            if method in _METHODS_WITH_BODY:
                yaml_allowed = bool(route.body_types)
                self.guard.check_media(request, yaml_allowed)
                request.body = await self._read_body(request, receive)
                self.guard.check_untyped_body(request, request.body, yaml_allowed)
            response = await route.handler(self, request)
        except _ClientGone:
            return  # a body cut short is never acted upon, and there is nobody to answer
        except ShunterError as error:
            response = error_response(error)
        except ActorError as error:
            # The runtime is closing, or an actor did not answer within its ask deadline.
            response = error_response(Unavailable(f"the runtime cannot answer now: {error}"))
        except Exception:
            logger.exception("internal error answering %s %s", method, scope["path"])
            response = error_response(Internal("internal error; the server log has the details"))
        response.headers.extend(cors)
        await _send(send, response, head=method == "HEAD")

    async def _read_body(self, request: Request, receive: Receive) -> bytes:
        """The whole body, refused as soon as it is known to be too large (413) or late (408).

        What the server has queued already is taken without waiting (see
        ``_ready``): a small body usually arrives with its headers, and then
        no timeout needs arming (a cancel scope, and the scheduling pass
        each awaited message costs, are a sizeable share of a submission).
        Only a body still on its way is awaited, within ``server.read-timeout``.
        """
        limit = self.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyTooLarge(f"request body of {declared} bytes is larger than the limit of {limit} bytes "
                               "(server.max-body-bytes)")  # fmt: skip
        body = bytearray()
        ready = _ready(receive)
        if ready is not None:
            # hypercorn (h11, h2) never hands on more bytes than Content-Length says: a body of that
            # length is whole, though the message saying so may not have been queued yet.
            expected = int(declared) if declared.isdigit() else -1
            while len(body) != expected and (message := ready()) is not None:
                if self._take(message, body):
                    return bytes(body)
            if len(body) == expected:
                return bytes(body)
        with anyio.move_on_after(self.read_timeout) as late:
            while not self._take(await receive(), body):
                pass
            return bytes(body)
        assert late.cancelled_caught
        raise RequestTimeout(f"the request body did not arrive within {self.read_timeout:g} s (server.read-timeout)")

    def _take(self, message: dict[str, Any], body: bytearray) -> bool:
        """Add a message's part of the body; True once the body is complete."""
        if message["type"] == "http.disconnect":
            raise _ClientGone
        body += message.get("body", b"")
        if len(body) > self.max_body_bytes:
            raise BodyTooLarge(f"request body is larger than the limit of {self.max_body_bytes} bytes "
                               "(server.max-body-bytes)")  # fmt: skip
        return not message.get("more_body", False)


def _ready(receive: Receive) -> Callable[[], dict[str, Any] | None] | None:
    """A way to take what ``receive`` has queued without waiting (None once nothing is), when ``receive``
    is a trio memory channel's, as hypercorn's trio worker gives every request; None for other servers."""
    channel = getattr(receive, "__self__", None)
    if not isinstance(channel, trio.MemoryReceiveChannel) or getattr(receive, "__name__", "") != "receive":
        return None

    def take() -> dict[str, Any] | None:
        try:
            message: dict[str, Any] = channel.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return None  # nothing yet (or never: the awaited receive says so as it always did)
        return message

    return take


class _ClientGone(Exception):
    """The client disconnected before its request body was complete."""


async def _send(send: Send, response: Response, *, head: bool) -> None:
    headers = [(b"content-type", response.content_type.encode("latin-1"))]
    if response.chunks is None:  # a streamed body has no length up front (chunked transfer)
        headers.append((b"content-length", str(len(response.body)).encode("latin-1")))
    headers.extend((name.encode("latin-1"), value.encode("latin-1")) for name, value in response.headers)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    if response.chunks is not None and not head:
        async for chunk in response.chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"" if head or response.chunks is not None else response.body})
