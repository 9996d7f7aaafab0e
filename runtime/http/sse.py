"""``GET /v1/events``: the runtime's events as server-sent events.

Each event is sent as ``id:`` (the hub's event id), ``event:`` (its kind:
build, job, step, group, node: ``EventKind``) and ``data:`` (the ``Event`` as JSON). A
client resumes with the ``Last-Event-ID`` header (what EventSource sends when
it reconnects) or ``?after=ID``: the events the hub still keeps after that id
are replayed first, then live ones follow.

A comment line goes out every ``HEARTBEAT`` seconds of silence so proxies
keep the connection open. The stream reads the hub's subscription as fast
as the socket takes it, several events per write; a client too slow to keep
up makes the subscription's buffer fill, the hub drops it, and the stream
ends (the client may reconnect and resume). The stream also ends when the
client disconnects or the app is closed (server shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from actors.events import Subscription
from actors.model.info import Event
from actors.model.vocab import EventKind

from .core import AppState, Param, Request, encode_json, enum_schema

__all__ = ["EVENT_PARAMS", "HEARTBEAT", "stream_events", "format_event", "parse_after"]

logger = logging.getLogger("shunter.http")

HEARTBEAT = 15.0  # seconds of silence before a keep-alive comment
BUFFER = 10_000  # events a stream may fall behind before the hub drops it
BATCH = 512  # events per write at most
RETRY_MS = 1000  # what EventSource should wait before reconnecting

MAX_EVENT_ID = 2**53 - 1  # what a JavaScript client holds exactly

_EVENT_ID = {"type": "integer", "minimum": 0, "maximum": MAX_EVENT_ID}
_AFTER = Param("after", "replay the kept events after this id first", _EVENT_ID)
_LAST_EVENT_ID = Param("Last-Event-ID", "resume after this event id (what EventSource sends on reconnect; "
                       "?after= wins)", _EVENT_ID, where="header")  # fmt: skip
_PIPELINE = Param("pipeline", "only events of this pipeline")
_BUILD = Param("build", "only events of this build")
_KIND = Param("kind", "only events of this kind", enum_schema(EventKind))
EVENT_PARAMS = (_AFTER, _PIPELINE, _BUILD, _KIND, _LAST_EVENT_ID)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]

HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
]


def format_event(event: Event) -> bytes:
    """One event in the text/event-stream format (JSON never contains a newline)."""
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (event.id, event.kind.encode(), encode_json(event))


def parse_after(request: Request) -> int | None:
    """The id to resume after: ``?after=`` wins over ``Last-Event-ID``; None for live only.

    Both are checked when both are sent: a bad one is refused even if the other would do.
    """
    after, last = _AFTER.read(request), _LAST_EVENT_ID.read(request)
    return after if after is not None else last


def _filter(request: Request) -> Callable[[Event], bool] | None:
    kind, pipeline, build = _KIND.read(request), _PIPELINE.read(request), _BUILD.read(request)
    if kind is None and pipeline is None and build is None:
        return None
    return lambda e: ((kind is None or e.kind == kind) and (pipeline is None or e.pipeline_id == pipeline)
                      and (build is None or e.build_id == build))  # fmt: skip


async def stream_events(app: AppState, request: Request, receive: Receive, send: Send) -> None:
    """Answer one events request; returns when the stream is over. Bad parameters raise before anything is sent."""
    after = parse_after(request)
    keep = _filter(request)
    async with app.rt.subscribe(after=after, buffer=BUFFER) as events:
        await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
        await send({"type": "http.response.body", "body": b"retry: %d\n: shunter events\n\n" % RETRY_MS,
                    "more_body": True})  # fmt: skip
        if request.method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        app.sse_clients += 1
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, group.cancel_scope)
                group.start_soon(_until_closed, app, group.cancel_scope)
                await _pump(events, send, keep, after)
                group.cancel_scope.cancel()
        except Exception:
            # The answer has started: nothing to report to the client but the end of the stream.
            logger.exception("event stream failed")
        finally:
            app.sse_clients -= 1
    # The client may be gone; a final empty body is harmless then.
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(events: Subscription, send: Send, keep: Callable[[Event], bool] | None, after: int | None) -> None:
    expected = None if after is None else after + 1
    while True:
        with anyio.move_on_after(HEARTBEAT) as quiet:
            try:
                first = await events.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                break  # dropped by the hub (too slow) or the runtime closed
        if quiet.cancelled_caught:
            await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
            continue
        batch = [first]
        while len(batch) < BATCH:
            try:
                batch.append(events.receive_nowait())
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
        chunks = []
        if expected is not None and batch[0].id > expected:
            # The hub no longer keeps the events the client asked for.
            chunks.append(b": events %d to %d are no longer kept\n\n" % (expected, batch[0].id - 1))
        expected = None
        chunks.extend(format_event(event) for event in batch if keep is None or keep(event))
        if chunks:
            await send({"type": "http.response.body", "body": b"".join(chunks), "more_body": True})
    await send({"type": "http.response.body", "body": b": stream ended; reconnect with Last-Event-ID\n\n",
                "more_body": True})  # fmt: skip


async def _until_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _until_closed(app: AppState, scope: anyio.CancelScope) -> None:
    await app.closed.wait()
    scope.cancel()
