"""The agent protocol's routes, under ``/v1/agent/`` (docs/design.md §11; the messages are
``actors.remote.protocol``). A token with the ``agent`` role (docs/design.md §12)
reaches these routes and no others."""

from __future__ import annotations

from typing import Any, TypeVar

from actors.model.errors import InvalidRequest
from actors.remote.protocol import LeaseBody, LeaseReply, LeaveBody, Register, ReportBody, ReportReply, Session
from runtime import _remote

from .core import AppState, Request, Response, Route, decode_json, json_response

__all__ = ["AGENT_ROUTES"]

T = TypeVar("T")


def _body(kind: type[T], request: Request) -> T:
    if not request.body.strip():
        message = f"a JSON {kind.__name__} body is required (see /openapi.json)"
        raise InvalidRequest(message, details=[{"path": "$", "message": message}])
    return decode_json(kind, request.body)


async def agent_register(app: AppState, request: Request) -> Response:
    return json_response(200, await _remote.register(app.rt, _body(Register, request)))


async def agent_lease(app: AppState, request: Request) -> Response:
    return json_response(200, await _remote.lease(app.rt, _body(LeaseBody, request)))


async def agent_report(app: AppState, request: Request) -> Response:
    return json_response(200, await _remote.report(app.rt, _body(ReportBody, request)))


async def agent_leave(app: AppState, request: Request) -> Response:
    body: Any = await _remote.leave(app.rt, _body(LeaveBody, request))
    return json_response(200, body)


AGENT_ROUTES: tuple[Route, ...] = (
    Route("POST", "/v1/agent/register", agent_register, "A build machine's agent process joins (or rejoins) "
          "its pool as a remote node; answers its session", result=Session, body=Register,
          errors=(400, 409, 413)),
    Route("POST", "/v1/agent/lease", agent_lease, "Long poll for work; carries reports and is a heartbeat",
          result=LeaseReply, body=LeaseBody, errors=(400, 404, 413)),
    Route("POST", "/v1/agent/report", agent_report, "Step events and log chunks of running attempts "
          "(409 stale_attempt for an attempt that is over on the server)", result=ReportReply, body=ReportBody,
          errors=(400, 404, 409, 413)),
    Route("POST", "/v1/agent/leave", agent_leave, "Drain the node: running attempts finish, then it is removed",
          result=ReportReply, body=LeaveBody, errors=(400, 404, 413)),
)  # fmt: skip
