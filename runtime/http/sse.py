"""``GET /v1/events``: the runtime's events as server-sent events.

Each event is sent as ``id:`` (the hub's event id), ``event:`` (its kind:
build, job, step, group, node: ``EventKind``) and ``data:`` (the ``Event`` as JSON). A
client resumes with the ``Last-Event-ID`` header (what EventSource sends when
it reconnects) or ``?after=ID``: the events the hub still keeps after that id
are replayed first, then live ones follow.

A comment line goes out every ``HEARTBEAT`` seconds of silence so proxies
keep the connection open.

Streams follow the hub's ``EventLog`` by position (a cursor each), not
through queues of their own: a replay of the whole history shares the kept
events with every other stream, and each event is encoded once for all of
them. A stream writes what has arrived every ``LINGER`` seconds at most,
several events per write, so a thousand open streams cost the runtime a
few writes per second each rather than one per event. A client that falls
more than ``BUFFER`` events behind (it reads too slowly) is disconnected
with a comment saying so; it may reconnect and resume. At most
``server.max-event-streams`` streams are open at once; past it a new one
gets 503. The stream also ends when the client disconnects or the app is
closed (server shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from actors.events import EventLog, Kept
from actors.model.errors import Overloaded
from actors.model.info import Event
from actors.model.vocab import EventKind

from .core import AppState, Param, Request, Unavailable, encode_json, enum_schema

__all__ = ["EVENT_PARAMS", "HEARTBEAT", "stream_events", "format_event", "parse_after"]

logger = logging.getLogger("shunter.http")

HEARTBEAT = 15.0  # seconds of silence before a keep-alive comment
BUFFER = 5_000  # events a stream may fall behind the newest before it is disconnected
BATCH = 512  # events per write at most
LINGER = 0.2  # seconds a caught-up stream lets events gather before it writes again
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
    """Answer one events request; returns when the stream is over. Refusals raise before anything is sent."""
    after = parse_after(request)
    keep = _filter(request)
    if app.sse_clients >= app.max_event_streams:
        raise Overloaded(f"{app.sse_clients} event streams are open (server.max-event-streams "
                         f"{app.max_event_streams}); try again later")  # fmt: skip
    log = app.rt.event_log
    if log.closed:
        raise Unavailable("the runtime has stopped")
    cursor = log.last_id if after is None else after
    headers = HEADERS + [(name.encode("latin-1"), value.encode("latin-1")) for name, value in request.response_headers]
    app.sse_clients += 1
    try:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"retry: %d\n: shunter events\n\n" % RETRY_MS,
                    "more_body": True})  # fmt: skip
        if request.method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, group.cancel_scope)
                group.start_soon(_until_closed, app, group.cancel_scope)
                await _pump(log, cursor, send, keep)
                group.cancel_scope.cancel()
        except Exception:
            # The answer has started: nothing to report to the client but the end of the stream.
            logger.exception("event stream failed")
    finally:
        app.sse_clients -= 1
    # The client may be gone; a final empty body is harmless then.
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _pump(log: EventLog, cursor: int, send: Send, keep: Callable[[Event], bool] | None) -> None:
    """Write the log's events after ``cursor`` as they come, until the reader falls too far behind."""
    if cursor + 1 < log.first_id:
        # The client asked for events the log no longer keeps.
        await send({"type": "http.response.body", "body": b": events %d to %d are no longer kept\n\n"
                    % (cursor + 1, log.first_id - 1), "more_body": True})  # fmt: skip
        cursor = log.first_id - 1
    caught_up = False
    while not log.closed:
        if log.last_id <= cursor:
            with anyio.move_on_after(HEARTBEAT) as quiet:
                await log.wait(cursor)
            if log.closed:
                break
            if quiet.cancelled_caught:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n", "more_body": True})
                continue
        if caught_up:
            # Let events gather: a stream that keeps up writes every LINGER seconds at most,
            # however fast they come; one that is behind (a replay) writes batch after batch.
            await anyio.sleep(LINGER)
        if log.last_id - cursor > BUFFER or cursor + 1 < log.first_id:
            await send({"type": "http.response.body", "more_body": True,
                        "body": b": too slow: more than %d events behind\n\n" % BUFFER})  # fmt: skip
            break
        batch: list[Kept] = log.read(cursor, BATCH)
        cursor = batch[-1].id
        caught_up = len(batch) < BATCH
        chunks = [kept.frame(format_event) for kept in batch if keep is None or keep(kept.event)]
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
