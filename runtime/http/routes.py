"""The operations of docs/design.md §7: one small async handler each, and the route table.

A handler turns a ``Request`` into calls of the public ``Runtime`` API and
the result into a ``Response``. Runtime errors (``NotFound``, ``QueueFull``,
...) propagate and ``app.py`` answers them with their own status and code.
Every input is checked here before the runtime sees it, so bad input is
refused with a 4xx and changes nothing. Query and header parameters are
read through the same ``Param`` objects that describe them in OpenAPI.
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any
from urllib.parse import urlencode

import msgspec
from msgspec import UNSET, UnsetType

from actors.model.errors import InvalidRequest, NotFound, SpecError
from actors.model.info import BuildInfo, Event, GroupInfo, NodeInfo, PipelineDeleted, PipelineInfo, Stats, WaitingJob
from actors.model.vocab import BuildStatus
from runtime._validate import type_name
from runtime.spec_loader import validate_pipeline_id

from .agent_routes import AGENT_ROUTES
from . import metrics as metrics_module
from . import ui
from .core import (
    JSON,
    MAX_JSON_DEPTH,
    TEXT,
    AppState,
    Param,
    Request,
    Response,
    Route,
    decode_json,
    enum_schema,
    json_response,
    json_too_deep,
)
from .follow import FOLLOW
from .guard import YAML_TYPES, is_json
from .openapi import document
from .sse import EVENT_PARAMS

__all__ = ["ROUTES", "LOGS_PATH", "SubmitBody", "RetryBody", "CancelBody", "NodeBody", "Health"]

# Node and pool names follow the configuration file's rule (runtime/config.py).
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_NAME = re.compile(NAME_PATTERN)
LOGS_PATH = "/v1/builds/{id}/logs"
PIPELINE_ID_PATTERN = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$"
BUILD_ID_PATTERN = PIPELINE_ID_PATTERN[:-1] + r"\.[0-9]{1,18}$"  # "<pipeline id>.<number>"
DEFAULT_PAGE, MAX_PAGE = 100, 1000  # builds per GET /v1/builds page

Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]


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


# What the handler refuses, said in the schema too: failed_only with a job or a step.
_RetryRequest = Annotated[RetryBody, msgspec.Meta(extra_json_schema={
    "if": {"properties": {"failed_only": {"const": True}}, "required": ["failed_only"]},
    "then": {"properties": {"job": {"type": "null"}, "step": {"type": "null"}}},
})]  # fmt: skip


class CancelBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/builds/{id}/cancel`` takes no fields (an empty body or ``{}``)."""


class NodeBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``PUT /v1/nodes/{name}``: a new node's pool (created if needed), agents and labels, or an existing node's
    new agents and labels. A field left out is kept on an existing node and takes its default on a new one
    (pool ``default``, 1 agent, no labels); an existing node's ``pool``, if given, must be its own."""

    pool: Name | UnsetType = UNSET
    # The server's max-agents-per-node applies too (and is the document's maximum).
    agents: Annotated[int, msgspec.Meta(ge=1, le=100_000)] | UnsetType = UNSET
    labels: Annotated[list[Label], msgspec.Meta(max_length=64)] | UnsetType = UNSET


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str = "ok"


# -- parameters (read by the handlers, described by OpenAPI) --------------------------------------

_PIPELINE = Param("pipeline", "only builds of this pipeline")
_STATUS = Param("status", "only builds with this status", enum_schema(BuildStatus))
_LIMIT = Param("limit", f"at most this many builds (default {DEFAULT_PAGE})",
               {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE})  # fmt: skip
_BEFORE = Param("before", "only builds older than this one (a build id: the next page starts after the last "
                "build of this one; the Link header rel=next says so)", {"type": "string", "pattern": BUILD_ID_PATTERN})
_CANCEL = Param("cancel", "cancel the pipeline's queued and running builds and delete it; without it a pipeline "
                "with unfinished builds is not deleted (409)", {"type": "boolean", "default": False})
_JOB, _STEP = Param("job", "only this job"), Param("step", "only this step")
_WAITING_BUILD, _WAITING_POOL = Param("build", "only jobs of this build"), Param("pool", "only jobs waiting in this pool")
_PIPELINE_ID = Param("id", "the pipeline's id", {"type": "string", "pattern": PIPELINE_ID_PATTERN}, where="path")
_NODE_NAME = Param("name", "the node's name", {"type": "string", "pattern": NAME_PATTERN}, where="path")


# -- pipelines ------------------------------------------------------------------------------


async def put_pipeline(app: AppState, request: Request) -> Response:
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


async def list_pipelines(app: AppState, request: Request) -> Response:
    return json_response(200, await app.rt.pipelines())


async def get_pipeline(app: AppState, request: Request) -> Response:
    pipeline_id = request.params["id"]
    if not app.rt.has_pipeline(pipeline_id):
        raise NotFound(f"no pipeline {pipeline_id!r}")
    return json_response(200, await app.rt.pipeline(pipeline_id))


async def delete_pipeline(app: AppState, request: Request) -> Response:
    cancel = bool(_CANCEL.read(request))
    return json_response(200, await app.rt.delete_pipeline(request.params["id"], cancel=cancel))


async def submit(app: AppState, request: Request) -> Response:
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


async def list_builds(app: AppState, request: Request) -> Response:
    """Newest first, a page at a time; ``Link: <...>; rel="next"`` when there are older builds."""
    status, pipeline, before = _STATUS.read(request), _PIPELINE.read(request), _BEFORE.read(request)
    limit = _LIMIT.read(request) or DEFAULT_PAGE
    if pipeline is not None and not app.rt.has_pipeline(pipeline):
        raise NotFound(f"no pipeline {pipeline!r} (query.pipeline)")
    page = await app.rt.builds(pipeline=pipeline, status=status, limit=limit + 1, before=before)
    headers = []
    if len(page) > limit:
        page = page[:limit]
        query = {"pipeline": pipeline, "status": status, "limit": limit, "before": page[-1].id}
        link = "/v1/builds?" + urlencode({name: value for name, value in query.items() if value is not None})
        headers.append(("link", f'<{link}>; rel="next"'))
    return json_response(200, page, headers)


async def get_build(app: AppState, request: Request) -> Response:
    return json_response(200, await app.rt.build(request.params["id"]))


async def retry(app: AppState, request: Request) -> Response:
    body = decode_json(_RetryRequest, request.body)
    if body.failed_only and (body.job is not None or body.step is not None):
        message = "failed_only retries every failed job of a finished build; leave out job and step"
        raise InvalidRequest(f"$.failed_only: {message}", details=[{"path": "$.failed_only", "message": message}])
    build = await app.rt.retry(request.params["id"], job=body.job, step=body.step, failed_only=body.failed_only)
    return json_response(202, build)


async def cancel(app: AppState, request: Request) -> Response:
    decode_json(CancelBody, request.body)
    return json_response(202, await app.rt.cancel(request.params["id"]))


async def logs(app: AppState, request: Request) -> Response:
    # follow=true is streamed by follow.py before this handler is reached.
    pieces = await app.rt.log_chunks(request.params["id"], job=_JOB.read(request), step=_STEP.read(request))

    async def encoded() -> AsyncIterator[bytes]:
        async for piece in pieces:  # read from the log files as it goes, never the whole log at once
            yield piece.encode("utf-8", "replace")

    return Response(200, content_type=TEXT, chunks=encoded())


# -- groups, nodes, stats ---------------------------------------------------------------------


async def groups(app: AppState, request: Request) -> Response:
    return json_response(200, await app.rt.groups())


async def waiting_jobs(app: AppState, request: Request) -> Response:
    build, pool = _WAITING_BUILD.read(request), _WAITING_POOL.read(request)
    waiting = [job for job in await app.rt.waiting_jobs()
               if (build is None or job.build_id == build) and (pool is None or job.pool == pool)]  # fmt: skip
    return json_response(200, waiting)


async def list_nodes(app: AppState, request: Request) -> Response:
    return json_response(200, await app.rt.nodes())


async def get_node(app: AppState, request: Request) -> Response:
    return json_response(200, await _node(app, request.params["name"]))


async def put_node(app: AppState, request: Request) -> Response:
    """Add the node (201), or change an existing node's agents and labels (200)."""
    name = request.params["name"]
    if not _NAME.match(name):
        message = (f"invalid node name {name!r}: 1 to 128 letters, digits, '_', '.' and '-', "
                   "not starting with '.' or '-'")
        raise InvalidRequest(message, details=[{"path": "path.name", "message": message}])
    body = decode_json(NodeBody, request.body)
    pool = None if isinstance(body.pool, UnsetType) else body.pool
    agents = None if isinstance(body.agents, UnsetType) else body.agents
    labels = None if isinstance(body.labels, UnsetType) else body.labels
    try:
        return json_response(200, await app.rt.update_node(name, agents=agents, labels=labels, pool=pool))
    except NotFound:
        pass
    node = await app.rt.add_node(name, pool=pool or "default", agents=agents or 1, labels=labels or [])
    return json_response(201, node, [("location", f"/v1/nodes/{name}")])


async def delete_node(app: AppState, request: Request) -> Response:
    """200 when the node is gone at once; 202 while it drains (listed with ``draining: true`` until then)."""
    name = request.params["name"]
    await _node(app, name)  # a clear 404 before asking the dispatcher
    node = await app.rt.remove_node(name)
    return json_response(202 if node.agents else 200, node)


async def _node(app: AppState, name: str) -> NodeInfo:
    for node in await app.rt.nodes():
        if node.name == name:
            return node
    raise NotFound(f"no node named {name!r}")


async def stats(app: AppState, request: Request) -> Response:
    return json_response(200, await app.rt.stats())


# -- service --------------------------------------------------------------------------------


async def healthz(app: AppState, request: Request) -> Response:
    return json_response(200, Health())


async def metrics(app: AppState, request: Request) -> Response:
    text = await metrics_module.render(app.rt, app.metrics, sse_clients=app.sse_clients)
    return Response(200, text.encode(), metrics_module.CONTENT_TYPE)


async def openapi(app: AppState, request: Request) -> Response:
    return Response(200, _document(app.rt.config.max_agents_per_node))


@functools.cache
def _document(max_agents_per_node: int) -> bytes:
    return document(ROUTES, max_agents_per_node)


async def _streamed(app: AppState, request: Request) -> Response:  # pragma: no cover - never called
    raise AssertionError("the events route is streamed by app.py")


# -- the table (paths, statuses, types: also the source of /openapi.json) ----------------------

_LOCATION = ("location", "where the resource is")

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/pipelines", list_pipelines, "List the registered pipelines", result=list[PipelineInfo]),
    Route("PUT", "/v1/pipelines/{id}", put_pipeline, "Register (201) or replace (200) a pipeline from YAML or JSON",
          status=201, result=PipelineInfo, body_types=(*YAML_TYPES, JSON), errors=(400, 409, 413, 415),
          path_params=(_PIPELINE_ID,), also=((200, "Replaced"),), headers=(_LOCATION,)),
    Route("GET", "/v1/pipelines/{id}", get_pipeline, "One pipeline", result=PipelineInfo, errors=(404,)),
    Route("DELETE", "/v1/pipelines/{id}", delete_pipeline,
          "Delete a pipeline: no longer listed or submittable; its builds stay readable by id, and registering "
          "the id again continues its build numbers", result=PipelineDeleted, query=(_CANCEL,),
          errors=(400, 404, 409)),
    Route("POST", "/v1/pipelines/{id}/builds", submit, "Submit a build (it runs, or queues in its group)",
          status=201, result=BuildInfo, body=SubmitBody, errors=(400, 404, 409, 413, 429, 503),
          headers=(_LOCATION,)),
    Route("GET", "/v1/builds", list_builds, "List builds, newest first, a page at a time", result=list[BuildInfo],
          query=(_PIPELINE, _STATUS, _LIMIT, _BEFORE), errors=(400, 404),
          headers=(("link", '<URL>; rel="next": the next (older) page, when there is one'),)),
    Route("GET", "/v1/builds/{id}", get_build, "A build with its stages, jobs, steps and attempts",
          result=BuildInfo, errors=(404,)),
    Route("POST", "/v1/builds/{id}/retry", retry, "Retry a build, its failed jobs, a job or a step", status=202,
          result=BuildInfo, body=_RetryRequest, errors=(400, 404, 409, 413, 429, 503)),
    Route("POST", "/v1/builds/{id}/cancel", cancel, "Cancel a queued or running build", status=202,
          result=BuildInfo, body=CancelBody, errors=(400, 404, 409, 413)),
    Route("GET", LOGS_PATH, logs, "The build's log as plain text (one job or step with job=, step=); with "
          "follow=true streamed as it is written until the step, job or build has ended", content_type=TEXT,
          query=(_JOB, _STEP, FOLLOW), errors=(400, 404, 503)),
    Route("GET", "/v1/groups", groups, "Every concurrency group in use (idle 5 min: retired): limits, running, queue",
          result=list[GroupInfo]),
    Route("GET", "/v1/jobs/waiting", waiting_jobs, "Jobs waiting for a slot, an agent or a mutex: pool, position, "
          "what blocks each and its deadline", result=list[WaitingJob],
          query=(_WAITING_BUILD, _WAITING_POOL)),
    Route("GET", "/v1/nodes", list_nodes, "Every node with its agents", result=list[NodeInfo]),
    Route("GET", "/v1/nodes/{name}", get_node, "One node", result=NodeInfo, errors=(404,)),
    Route("PUT", "/v1/nodes/{name}", put_node,
          "Add a node (201; its pool too if new), or change an existing node's agents and labels (200): fewer "
          "agents retire idle ones first and busy ones once their job (or lock-resource-with chain) ends",
          status=201, result=NodeInfo, body=NodeBody, errors=(400, 409, 413), path_params=(_NODE_NAME,),
          also=((200, "Changed"),), headers=(_LOCATION,)),
    Route("DELETE", "/v1/nodes/{name}", delete_node,
          "Remove a node (200), or drain it while jobs still run on it (202: listed with draining true until "
          "they end, then gone)", result=NodeInfo, errors=(404,), also=((202, "Draining"),)),
    Route("GET", "/v1/events", _streamed, "Server-sent events of every state change (resume with Last-Event-ID)",
          result=Event, content_type="text/event-stream", stream=True, errors=(400,), query=EVENT_PARAMS),
    Route("GET", "/v1/stats", stats, "Counters: builds and jobs running and queued, slots held, agents", result=Stats),
    Route("GET", "/healthz", healthz, "Liveness", result=Health),
    Route("GET", "/metrics", metrics, "Prometheus metrics", content_type="text/plain; version=0.0.4"),
    Route("GET", "/openapi.json", openapi, "This document (OpenAPI 3.1)", result=dict[str, Any]),
    *AGENT_ROUTES,
    *ui.ROUTES,
)  # fmt: skip
