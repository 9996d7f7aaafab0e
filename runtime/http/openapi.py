"""``GET /openapi.json``: an OpenAPI 3.1 document generated from a route table.

Schemas of bodies and results are the msgspec types themselves, through
``msgspec.json.schema_components``; the operations (paths, parameters,
statuses, headers) come from the ``Route`` objects the router serves, and
parameters from the same ``Param`` objects that read them. A client
generated from this document, or a fuzzer, sees exactly what the server
checks: id patterns, enums, integer bounds, body fields and their bounds.

This module knows the table only as an argument (``document(ROUTES)``), so
it imports nothing of the handlers and the handlers may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from actors.model.info import BuildInfo, Event, NodeInfo, PipelineInfo
from actors.model.vocab import EventKind
from runtime.auth import PUBLIC_PATHS

from .core import JSON, ErrorBody, Route, encode_json, enum_schema

__all__ = ["document", "build_document"]

_REF = "#/components/schemas/{name}"
_DESCRIPTIONS = {
    200: "OK", 201: "Created", 202: "Accepted", 400: "Bad request (the message and details say what and where)",
    401: "No valid token (Authorization: Bearer <token>)", 403: "The token's role does not allow this, or a foreign Origin",
    404: "Not found", 405: "Method not allowed (the Allow header lists the methods of the path)",
    408: "The body did not arrive within server.read-timeout",
    409: "Conflict with the current state (the message says which)", 413: "Body too large",
    415: "Unsupported media type", 429: "Queue full (policy reject)", 503: "Overloaded or unavailable; retry later",
}  # fmt: skip
# What every operation may answer at the door (docs/design.md §12): a Host an open server does not
# answer to (400), no token (401), a role or Origin refused (403), the runtime stopping (503);
# 431 (headers too large) comes from the HTTP server itself. Bodies add 408, 413 and 415.
_DOOR = (400, 401, 403, 405, 503)
_BODY = (408, 413, 415)
_HEADER_LIMIT = (
    "Request header fields too large: the server (hypercorn) refuses a request whose headers exceed its limit "
    "before the API sees it; the body is not the API's JSON error"
)
_EVENT_STREAM = (
    "One server-sent event (text/event-stream, WHATWG HTML; as OpenAPI 3.2 reads a stream's schema, this "
    "describes each event). The stream does not end by itself: it opens with `retry: 1000` and a comment, then "
    "each event is an `id:` line (the event id: resume after it with Last-Event-ID or ?after=), an `event:` "
    "line (its kind) and a `data:` line (the Event as one line of JSON), ended by a blank line. Lines starting "
    "with ':' are comments: keep-alives every 15 s of silence, a note when events asked for are no longer "
    "kept, and one when the stream ends."
)


def document(routes: Sequence[Route], max_agents_per_node: int = 256) -> bytes:
    """The document for ``routes`` (and this server's cap on agents per node) as JSON bytes."""
    return encode_json(build_document(routes, max_agents_per_node))


def build_document(routes: Sequence[Route], max_agents_per_node: int = 256) -> dict[str, Any]:
    types: list[Any] = [ErrorBody, Event]
    for route in routes:
        for type_ in (route.result, route.body):
            if type_ is not None and type_ not in types:
                types.append(type_)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(repr, types), schemas))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation = paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
        links = _links(route, routes)
        for status in (route.status, *(status for status, _ in route.also)):
            if links and route.content_type == JSON:
                operation["responses"][str(status)]["links"] = links
    # The schema says what this server accepts: its own cap, not the type's widest bound.
    node = components.get("NodeBody", {}).get("properties", {})
    if "agents" in node:
        node["agents"] = {"type": "integer", "minimum": 1, "maximum": max_agents_per_node}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shunter",
            "version": "1",
            "description": "An actor-model CI/CD build scheduler. Errors are "
            '{"error": code, "message": text, "details": [...]}.',
        },
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        # Without tokens the server is open (loopback only); with them every route but /healthz needs one.
        "security": [{"bearer": []}, {}],
    }


# What an answer names, where that thing lives, and the path parameter that takes it.
_NAMED = {BuildInfo: ("/v1/builds/{id}", "id"), PipelineInfo: ("/v1/pipelines/{id}", "id"),
          NodeInfo: ("/v1/nodes/{name}", "name")}  # fmt: skip


def _links(route: Route, routes: Sequence[Route]) -> dict[str, Any]:
    """OpenAPI links from an answer that is one build, pipeline or node to the operations on it."""
    if route.result not in _NAMED:
        return {}
    home, param = _NAMED[route.result]
    field = "name" if param == "name" else "id"
    return {_operation_id(target): {"operationId": _operation_id(target),
                                    "parameters": {param: f"$response.body#/{field}"}}
            for target in routes
            if (target.path == home or target.path.startswith(home + "/")) and target is not route}  # fmt: skip


def _operation_id(route: Route) -> str:
    return "events" if route.stream else route.handler.__name__.strip("_")


def _operation(route: Route, schema_of: dict[str, Any]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "parameters": _parameters(route),
        "responses": _responses(route, schema_of),
    }
    if route.path in PUBLIC_PATHS:  # liveness and the dashboard's files: no token
        operation["security"] = [{}]
    if route.body is not None:
        operation["requestBody"] = {
            "required": False,
            "description": "JSON; an empty body means every field at its default",
            "content": {JSON: {"schema": schema_of[repr(route.body)]}},
        }
    elif route.body_types:
        yaml = {"schema": {"type": "string", "description": "pipeline YAML (docs/design.md §4)"}}
        pipeline = {"schema": {"type": "object", "description": "the pipeline YAML's mapping, as JSON"}}
        operation["requestBody"] = {
            "required": True,
            "description": "A pipeline; one that is not valid is refused with 400 and every error by path",
            "content": {media: pipeline if media == JSON else yaml for media in route.body_types},
        }
    return operation


def _event_schema(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "description": _EVENT_STREAM,
        "required": ["id", "event", "data"],
        "properties": {
            "id": {"type": "string", "pattern": "^[0-9]+$", "description": "the event id"},
            "event": {**enum_schema(EventKind), "description": "the event's kind"},
            "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data,
                     "description": "the Event, as one line of JSON"},  # fmt: skip
            "retry": {"type": "integer", "minimum": 0, "description": "milliseconds to wait before reconnecting"},
        },
    }


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters = []
    declared = {param.name: param for param in route.path_params}
    for part in route.template:
        if part.startswith("{"):
            param = declared.get(part[1:-1])
            schema = param.schema if param is not None else {"type": "string", "minLength": 1}
            parameters.append({"name": part[1:-1], "in": "path", "required": True, "schema": schema})
    for param in route.query:
        parameters.append({"name": param.name, "in": param.where, "required": False,
                           "description": param.description, "schema": param.schema})  # fmt: skip
    return parameters


def _responses(route: Route, schema_of: dict[str, Any]) -> dict[str, Any]:
    if route.stream:
        content = {route.content_type: {"schema": _event_schema(schema_of[repr(route.result)])}}
    elif route.result is not None:
        content = {route.content_type: {"schema": schema_of[repr(route.result)]}}
    else:
        content = {route.content_type: {"schema": {"type": "string"}}}
    headers = {name: {"description": text, "schema": {"type": "string"}} for name, text in route.headers}
    responses: dict[str, Any] = {}
    for status, description in ((route.status, _DESCRIPTIONS.get(route.status, "OK")), *route.also):
        responses[str(status)] = {"description": description, "content": content}
        if headers:
            responses[str(status)]["headers"] = headers
    error = {JSON: {"schema": schema_of[repr(ErrorBody)]}}
    statuses = (*route.errors, *_DOOR, *(_BODY if route.method in ("PUT", "POST", "DELETE") else ()))
    for status in sorted(set(statuses)):
        responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
        if status == 405:
            responses["405"]["headers"] = {"allow": {"description": "the methods of this path",
                                                     "schema": {"type": "string"}}}  # fmt: skip
    responses["431"] = {"description": _HEADER_LIMIT}
    return responses
