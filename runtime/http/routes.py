"""The operations of DESIGN §7: one small async handler each, and the route table.

A handler turns a ``Request`` into calls of the public ``Runtime`` API and
the result into a ``Response``. Runtime errors (``NotFound``, ``QueueFull``,
...) propagate and ``app.py`` answers them with their own status and code.
Every input is checked here before the runtime sees it, so bad input is
refused with a 4xx and changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec

from actors.model.errors import InvalidRequest, NotFound, SpecError
from actors.model.info import BuildInfo, GroupInfo, NodeInfo, PipelineInfo, Stats
from actors.model.vocab import BuildStatus, EventKind, values
from runtime._validate import type_name
from runtime.spec_loader import validate_pipeline_id

from .agent_routes import AGENT_ROUTES
from .core import MAX_JSON_DEPTH, TEXT, Param, Request, Response, Route, decode_json, json_response, json_too_deep
from .guard import YAML_TYPES, is_json

if TYPE_CHECKING:
    from .app import App

__all__ = ["ROUTES", "SubmitBody", "RetryBody", "CancelBody", "NodeBody", "Health", "choice", "enum_schema"]

# Node and pool names follow the configuration file's rule (runtime/config.py).
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
PIPELINE_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
E = TypeVar("E", bound=StrEnum)


# -- request and answer bodies ------------------------------------------------------------


class SubmitBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/pipelines/{id}/builds``: values for the pipeline's declared variables."""

    variables: dict[str, str | int | float | bool] = msgspec.field(default_factory=dict)


class _LooseSubmit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    # Decoded loosely so a bad value is reported by its key ($.variables.X), which
    # msgspec's own message ($.variables[...]) does not name.
    variables: dict[str, Any] = msgspec.field(default_factory=dict)


class RetryBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/builds/{id}/retry``: ``{}`` (whole build), ``failed_only``, a ``job`` and/or a ``step``."""

    failed_only: bool = False
    job: str | None = None
    step: str | None = None


class CancelBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/builds/{id}/cancel`` takes no fields (an empty body or ``{}``)."""


class NodeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/nodes/{name}``: the node's pool (created if needed), agents and labels."""

    pool: Name = "default"
    # A whole number, also written 4.0 (JSON Schema's integer); the server's max-agents-per-node applies too.
    agents: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | Annotated[float, msgspec.Meta(ge=1, le=100_000)] = 1
    labels: Annotated[list[Label], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=list)


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "ok"


# -- query parameters from a vocabulary ----------------------------------------------------


def choice(request: Request, name: str, words: type[E], what: str) -> E | None:
    """Query parameter ``name`` as a member of ``words``; None if absent.

    Present but empty (``?status=``) or not one of the words: 400 naming the
    parameter and every allowed value, as the OpenAPI enum says.
    """
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return words(text)
    except ValueError:
        problem = f"unknown {what} {text[:64]!r}" if text else f"an empty {what}"
        message = f"{problem} (expected one of {', '.join(values(words))})"
        where = f"query.{name}"
        raise InvalidRequest(f"{where}: {message}", details=[{"path": where, "message": message}]) from None


def enum_schema(words: type[StrEnum]) -> dict[str, Any]:
    """The JSON schema of a query parameter taking one of ``words``."""
    return {"type": "string", "enum": values(words)}


# -- pipelines ------------------------------------------------------------------------------


async def put_pipeline(app: App, request: Request) -> Response:
    pipeline_id = request.params["id"]
    problem = validate_pipeline_id(pipeline_id)
    if problem is not None:
        raise InvalidRequest(problem, details=[{"path": "path.id", "message": problem}])
    # The door has checked the type: JSON or YAML (guard.py).
    if is_json(request.media_type):
        if json_too_deep(request.body):
            raise SpecError([{"path": "$", "message": f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels"}])
        try:
            msgspec.json.decode(request.body)
        except msgspec.DecodeError as error:
            raise SpecError([{"path": "$", "message": f"malformed JSON: {error}"}]) from None
    existed = app.rt.has_pipeline(pipeline_id)
    # The raw bytes, never text: a one-line text body ending in .yml would be read as a path.
    info = await app.rt.register_pipeline(request.body, id=pipeline_id)
    return json_response(200 if existed else 201, info, [("location", f"/v1/pipelines/{pipeline_id}")])


async def list_pipelines(app: App, request: Request) -> Response:
    return json_response(200, await app.rt.pipelines())


async def get_pipeline(app: App, request: Request) -> Response:
    pipeline_id = request.params["id"]
    if not app.rt.has_pipeline(pipeline_id):
        raise NotFound(f"no pipeline {pipeline_id!r}")
    return json_response(200, await app.rt.pipeline(pipeline_id))


async def submit(app: App, request: Request) -> Response:
    pipeline_id = request.params["id"]
    body = decode_json(_LooseSubmit, request.body)
    for name, value in body.variables.items():
        if isinstance(value, (dict, list)) or value is None:
            message = f"must be a string, number or boolean, got {type_name(value)}"
            raise InvalidRequest(f"$.variables.{name}: {message}",
                                 details=[{"path": f"$.variables.{name}", "message": message}])  # fmt: skip
    if not app.rt.has_pipeline(pipeline_id):
        raise NotFound(f"no pipeline {pipeline_id!r}")
    build = await app.rt.submit(pipeline_id, body.variables)
    return json_response(201, build, [("location", f"/v1/builds/{build.id}")])


# -- builds ---------------------------------------------------------------------------------


async def list_builds(app: App, request: Request) -> Response:
    status = choice(request, "status", BuildStatus, "build status")
    pipeline = request.query_value("pipeline")
    if pipeline is not None and not app.rt.has_pipeline(pipeline):
        raise NotFound(f"no pipeline {pipeline!r} (query.pipeline)")
    return json_response(200, await app.rt.builds(pipeline=pipeline, status=status))


async def get_build(app: App, request: Request) -> Response:
    return json_response(200, await app.rt.build(request.params["id"]))


async def retry(app: App, request: Request) -> Response:
    body = decode_json(RetryBody, request.body)
    if body.failed_only and (body.job is not None or body.step is not None):
        message = "failed_only retries every failed job of a finished build; leave out job and step"
        raise InvalidRequest(f"$.failed_only: {message}", details=[{"path": "$.failed_only", "message": message}])
    build = await app.rt.retry(request.params["id"], job=body.job, step=body.step, failed_only=body.failed_only)
    return json_response(202, build)


async def cancel(app: App, request: Request) -> Response:
    decode_json(CancelBody, request.body)
    return json_response(202, await app.rt.cancel(request.params["id"]))


async def logs(app: App, request: Request) -> Response:
    pieces = await app.rt.log_chunks(request.params["id"], job=request.query_value("job"),
                                     step=request.query_value("step"))  # fmt: skip

    async def encoded() -> AsyncIterator[bytes]:
        async for piece in pieces:  # read from the log files as it goes, never the whole log at once
            yield piece.encode("utf-8", "replace")

    return Response(200, content_type=TEXT, chunks=encoded())


# -- groups, nodes, stats ---------------------------------------------------------------------


async def groups(app: App, request: Request) -> Response:
    return json_response(200, await app.rt.groups())


async def list_nodes(app: App, request: Request) -> Response:
    return json_response(200, await app.rt.nodes())


async def get_node(app: App, request: Request) -> Response:
    return json_response(200, await _node(app, request.params["name"]))


async def put_node(app: App, request: Request) -> Response:
    name = request.params["name"]
    if not _NAME.match(name):
        message = (f"invalid node name {name!r}: 1 to 128 letters, digits, '_', '.' and '-', "
                   "not starting with '.' or '-'")
        raise InvalidRequest(message, details=[{"path": "path.name", "message": message}])
    body = decode_json(NodeBody, request.body)
    if not float(body.agents).is_integer():
        message = f"must be a whole number, got {body.agents!r}"
        raise InvalidRequest(f"$.agents: {message}", details=[{"path": "$.agents", "message": message}])
    node = await app.rt.add_node(name, pool=body.pool, agents=int(body.agents), labels=body.labels)
    return json_response(201, node, [("location", f"/v1/nodes/{name}")])


async def delete_node(app: App, request: Request) -> Response:
    name = request.params["name"]
    await _node(app, name)  # a clear 404 before asking the dispatcher
    return json_response(200, await app.rt.remove_node(name))


async def _node(app: App, name: str) -> NodeInfo:
    for node in await app.rt.nodes():
        if node.name == name:
            return node
    raise NotFound(f"no node named {name!r}")


async def stats(app: App, request: Request) -> Response:
    return json_response(200, await app.rt.stats())


# -- service --------------------------------------------------------------------------------


async def healthz(app: App, request: Request) -> Response:
    return json_response(200, Health())


async def metrics(app: App, request: Request) -> Response:
    from .metrics import CONTENT_TYPE, render

    return Response(200, (await render(app.rt, app.metrics, sse_clients=app.sse_clients)).encode(), CONTENT_TYPE)


async def openapi(app: App, request: Request) -> Response:
    from .openapi import document

    return Response(200, document(app.rt.config.max_agents_per_node))


async def _streamed(app: App, request: Request) -> Response:  # pragma: no cover - never called
    raise AssertionError("the events route is streamed by app.py")


# -- the table (paths, statuses, types: also the source of /openapi.json) ----------------------

_PIPELINE = Param("pipeline", "only builds of this pipeline", {"type": "string"})
_STATUS = Param("status", "only builds with this status", enum_schema(BuildStatus))

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/pipelines", list_pipelines, "List the registered pipelines", result=list[PipelineInfo]),
    Route("PUT", "/v1/pipelines/{id}", put_pipeline, "Register (201) or replace (200) a pipeline from YAML or JSON",
          status=201, result=PipelineInfo, body_types=("application/yaml", "application/json"),
          errors=(400, 413, 415)),
    Route("GET", "/v1/pipelines/{id}", get_pipeline, "One pipeline", result=PipelineInfo, errors=(404,)),
    Route("POST", "/v1/pipelines/{id}/builds", submit, "Submit a build (it runs, or queues in its group)",
          status=201, result=BuildInfo, body=SubmitBody, errors=(400, 404, 413, 429, 503)),
    Route("GET", "/v1/builds", list_builds, "List builds", result=list[BuildInfo], query=(_PIPELINE, _STATUS),
          errors=(400, 404)),
    Route("GET", "/v1/builds/{id}", get_build, "A build with its stages, jobs, steps and attempts",
          result=BuildInfo, errors=(404,)),
    Route("POST", "/v1/builds/{id}/retry", retry, "Retry a build, its failed jobs, a job or a step", status=202,
          result=BuildInfo, body=RetryBody, errors=(400, 404, 409, 413, 429, 503)),
    Route("POST", "/v1/builds/{id}/cancel", cancel, "Cancel a queued or running build", status=202,
          result=BuildInfo, body=CancelBody, errors=(400, 404, 409, 413)),
    Route("GET", "/v1/builds/{id}/logs", logs, "The build's log as plain text (one job or step with job=, step=)",
          content_type=TEXT, query=(Param("job", "only this job"), Param("step", "only this step")), errors=(404,)),
    Route("GET", "/v1/groups", groups, "Every concurrency group in use (idle 5 min: retired): limits, running, queue",
          result=list[GroupInfo]),
    Route("GET", "/v1/nodes", list_nodes, "Every node with its agents", result=list[NodeInfo]),
    Route("GET", "/v1/nodes/{name}", get_node, "One node", result=NodeInfo, errors=(404,)),
    Route("PUT", "/v1/nodes/{name}", put_node, "Add a node (and its pool if new)", status=201, result=NodeInfo,
          body=NodeBody, errors=(400, 409, 413)),
    Route("DELETE", "/v1/nodes/{name}", delete_node, "Drain and remove a node: running jobs finish first",
          result=NodeInfo, errors=(404,)),
    Route("GET", "/v1/events", _streamed, "Server-sent events of every state change (resume with Last-Event-ID)",
          content_type="text/event-stream", stream=True, errors=(400,), query=(
              Param("after", "replay the kept events after this id first", {"type": "integer", "minimum": 0}),
              Param("pipeline", "only events of this pipeline"), Param("build", "only events of this build"),
              Param("kind", "only events of this kind", enum_schema(EventKind)),
              Param("Last-Event-ID", "resume after this event id (what EventSource sends on reconnect)",
                    {"type": "integer", "minimum": 0}, where="header"))),
    Route("GET", "/v1/stats", stats, "Counters: builds and jobs running and queued, slots held, agents", result=Stats),
    Route("GET", "/healthz", healthz, "Liveness", result=Health),
    Route("GET", "/metrics", metrics, "Prometheus metrics", content_type="text/plain; version=0.0.4"),
    Route("GET", "/openapi.json", openapi, "This document (OpenAPI 3.1)", result=dict[str, Any]),
    *AGENT_ROUTES,
)  # fmt: skip
