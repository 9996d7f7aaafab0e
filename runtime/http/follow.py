"""``GET /v1/builds/{id}/logs?follow=true``: the log streamed as it is written.

The answer is ``text/plain`` sent in pieces (chunked): first everything
written so far, then new lines every ``Runtime.follow_logs`` poll, until the
step (or job, or build, when none is named) has ended; then the answer
ends. For what has already ended it is the whole plain log at once. The
text is ``actors.builds.logfollow``'s: one ``=== job / step attempt N ===``
header per attempt, repeated when parallel jobs interleave, and an
``... ended: STATUS ===`` line when an attempt that was followed ends.

Bounds: a follower that does not take a piece within ``SEND_TIMEOUT``
seconds is disconnected (the server holds one piece per follower, never a
backlog); at most ``MAX_FOLLOWERS`` follow at once (503 ``overloaded`` past that). The
stream also ends when the client goes away or the app closes.
"""

from __future__ import annotations

import logging

import anyio

from actors.model.errors import Overloaded, ShunterError

from .core import TEXT, AppState, Param, Request
from .sse import Receive, Send, _until_closed, _until_disconnect

__all__ = ["FOLLOW", "follow_logs", "wants_follow", "SEND_TIMEOUT", "MAX_FOLLOWERS"]

logger = logging.getLogger("shunter.http")

SEND_TIMEOUT = 30.0  # seconds a follower may take to accept one piece
MAX_FOLLOWERS = 256

HEADERS = [
    (b"content-type", TEXT.encode()),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each piece on at once
    (b"x-content-type-options", b"nosniff"),
]


FOLLOW = Param("follow", "stream the log as it is written; the answer ends when the step, job or build ends",
               {"type": "boolean"})


def wants_follow(request: Request) -> bool:
    """``follow=true``; 400 naming the parameter for anything but true or false."""
    return bool(FOLLOW.read(request))


async def follow_logs(app: AppState, request: Request, receive: Receive, send: Send) -> None:
    """Answer one follow request. Errors found before the first byte (unknown build, job or step) raise."""
    rt = app.rt
    build_id, job, step = request.params["id"], request.query_value("job"), request.query_value("step")
    if app.log_followers >= MAX_FOLLOWERS:
        raise Overloaded(f"{MAX_FOLLOWERS} clients are following logs already; try again later")
    app.log_followers += 1  # counted from here: the first read below may take a while
    slow = None
    try:
        chunk = await rt.read_log(build_id, job, step)  # NotFound is answered 404 by app.py
        headers = HEADERS + [(name.encode("latin-1"), value.encode("latin-1"))
                             for name, value in request.response_headers]  # CORS, for an allowed origin
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        if request.method == "HEAD":
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_until_disconnect, receive, group.cancel_scope)
                group.start_soon(_until_closed, app, group.cancel_scope)
                while True:
                    if chunk.text:
                        with anyio.move_on_after(SEND_TIMEOUT) as slow:
                            await send({"type": "http.response.body", "more_body": True,
                                        "body": chunk.text.encode("utf-8", "replace")})  # fmt: skip
                        if slow.cancelled_caught:
                            logger.warning("log follower of %s too slow (a piece not taken in %gs): disconnected",
                                           build_id, SEND_TIMEOUT)  # fmt: skip
                            break
                    if chunk.finished:
                        break
                    if not chunk.more:
                        await anyio.sleep(rt.log_poll)
                    chunk = await rt.read_log(build_id, job, step, chunk.cursor)
                group.cancel_scope.cancel()
        except ShunterError as error:
            logger.info("log follow of %s ended: %s", build_id, error.message)  # e.g. the build is gone
        except Exception:
            logger.exception("log follow failed")  # the answer has started: only its end can be sent
    finally:
        app.log_followers -= 1
    if slow is None or not slow.cancelled_caught:  # else leave the answer unfinished: the connection closes
        await send({"type": "http.response.body", "body": b"", "more_body": False})
