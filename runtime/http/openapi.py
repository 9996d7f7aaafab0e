"""``GET /openapi.json``: an OpenAPI 3.1 document generated from the route table.

Schemas of bodies and results are the msgspec types themselves, through
``msgspec.json.schema_components``; only the operations (paths, parameters,
statuses) come from ``routes.ROUTES``, the same table the router serves. A
client generated from this document, or a fuzzer, sees exactly what the
server checks: id patterns, the status enum, body fields and their bounds.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec

from .core import JSON, ErrorBody, Route, encode_json
from .routes import NAME_PATTERN, PIPELINE_ID_PATTERN, ROUTES, YAML_TYPES

__all__ = ["document", "build_document"]

_REF = "#/components/schemas/{name}"
_DESCRIPTIONS = {
    200: "OK", 201: "Created", 202: "Accepted", 400: "Bad request (the message and details say what and where)",
    401: "No valid token (Authorization: Bearer <token>)", 403: "The token's role does not allow this, or a foreign Origin",
    404: "Not found", 405: "Method not allowed", 408: "The body did not arrive within server.read-timeout",
    409: "Conflict with the current state", 413: "Body too large",
    415: "Unsupported media type", 429: "Queue full (policy reject)", 431: "Request headers too large",
    503: "Overloaded or unavailable; retry later",
}  # fmt: skip
# What every operation may answer at the door (DESIGN §12): a Host an open server does not
# answer to (400), no token (401), a role or Origin refused (403), headers too large (431,
# from the HTTP server), the runtime stopping (503). Bodies add 408, 413 and 415.
_DOOR = (400, 401, 403, 405, 431, 503)
_BODY = (408, 413, 415)
# Only these paths constrain their parameter: they create what the name names.
_PATH_PATTERNS = {("PUT", "/v1/pipelines/{id}"): PIPELINE_ID_PATTERN, ("PUT", "/v1/nodes/{name}"): NAME_PATTERN}


@functools.cache
def document(max_agents_per_node: int = 256) -> bytes:
    """The document as JSON bytes (built once per process and cap)."""
    return encode_json(build_document(max_agents_per_node))


def build_document(max_agents_per_node: int = 256) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for route in ROUTES:
        for type_ in (route.result, route.body):
            if type_ is not None and type_ not in types:
                types.append(type_)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(repr, types), schemas))
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schema_of)
    # The schema says what this server accepts: its own cap, not the type's widest bound.
    node = components.get("NodeBody", {}).get("properties", {})
    if "agents" in node:
        node["agents"] = {"type": "integer", "minimum": 1, "maximum": max_agents_per_node, "default": 1}
    retry = components.get("RetryBody")
    if retry is not None:  # failed_only is for finished builds as a whole: never with a job or a step
        retry["anyOf"] = [
            {"properties": {"failed_only": {"const": False}}},
            {"properties": {"failed_only": {"const": True}, "job": {"type": "null"}, "step": {"type": "null"}},
             "required": ["failed_only"]},
        ]  # fmt: skip
    components_doc: dict[str, Any] = {"schemas": components,
                                      "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "shunter",
            "version": "1",
            "description": "An actor-model CI/CD build scheduler. Errors are "
            '{"error": code, "message": text, "details": [...]}.',
        },
        "paths": paths,
        "components": components_doc,
        # Without tokens the server is open (loopback only); with them every route but /healthz needs one.
        "security": [{"bearer": []}, {}],
    }


def _operation(route: Route, schema_of: dict[str, Any]) -> dict[str, Any]:
    name = route.handler.__name__.strip("_")
    operation: dict[str, Any] = {
        "operationId": "events" if route.stream else name,
        "summary": route.summary,
        "parameters": _parameters(route),
        "responses": _responses(route, schema_of),
    }
    if route.path == "/healthz":
        operation["security"] = [{}]
    if route.body is not None:
        operation["requestBody"] = {
            "required": False,
            "description": "JSON; an empty body means every field at its default",
            "content": {JSON: {"schema": schema_of[repr(route.body)]}},
        }
    elif route.body_types:
        yaml = {"schema": {"type": "string", "description": "pipeline YAML (DESIGN §4)"}}
        operation["requestBody"] = {
            "required": True,
            "content": {**{media: yaml for media in YAML_TYPES}, JSON: {"schema": {"type": "object"}}},
        }
    return operation


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters = []
    for part in route.template:
        if part.startswith("{"):
            schema: dict[str, Any] = {"type": "string", "minLength": 1}
            pattern = _PATH_PATTERNS.get((route.method, route.path))
            if pattern is not None:
                schema = {"type": "string", "pattern": pattern}
            parameters.append({"name": part[1:-1], "in": "path", "required": True, "schema": schema})
    for param in route.query:
        parameters.append({"name": param.name, "in": param.where, "required": False,
                           "description": param.description, "schema": param.schema})  # fmt: skip
    return parameters


def _responses(route: Route, schema_of: dict[str, Any]) -> dict[str, Any]:
    if route.result is not None:
        content = {route.content_type: {"schema": schema_of[repr(route.result)]}}
    elif route.stream:
        content = {route.content_type: {"schema": {"type": "string", "description": "id:, event:, data: lines"}}}
    else:
        content = {route.content_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(route.status): {"description": _DESCRIPTIONS.get(route.status, "OK"),
                                                     "content": content}}  # fmt: skip
    if route.method == "PUT" and route.path == "/v1/pipelines/{id}":
        responses["200"] = {"description": "Replaced", "content": content}
    error = {JSON: {"schema": schema_of[repr(ErrorBody)]}}
    statuses = (*route.errors, *_DOOR, *(_BODY if route.method in ("PUT", "POST", "DELETE") else ()))
    for status in sorted(set(statuses)):
        responses[str(status)] = {"description": _DESCRIPTIONS[status], "content": error}
    return responses
