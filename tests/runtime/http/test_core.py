"""The pure core: routing, path and query parsing, JSON bodies, error answers."""

from __future__ import annotations

import msgspec
import pytest

from actors.model.errors import InvalidRequest, NotFound, QueueFull
from runtime.http.core import (
    MethodNotAllowed,
    Router,
    decode_json,
    error_response,
    parse_query,
    parse_segments,
)
from runtime.http.routes import ROUTES, NodeBody, RetryBody

ROUTER = Router(ROUTES)


def test_routes_match_exact_paths_and_capture_ids() -> None:
    route, params = ROUTER.match("POST", ["v1", "pipelines", "app", "builds"])
    assert (route.path, params) == ("/v1/pipelines/{id}/builds", {"id": "app"})
    route, params = ROUTER.match("HEAD", ["v1", "builds", "app.1"])
    assert (route.method, params) == ("GET", {"id": "app.1"})
    with pytest.raises(NotFound):
        ROUTER.match("GET", ["v1", "pipelines", ""])
    with pytest.raises(NotFound):
        ROUTER.match("GET", ["v1", "builds", "app.1", "nope"])
    with pytest.raises(MethodNotAllowed) as refused:
        ROUTER.match("PATCH", ["v1", "pipelines", "app"])
    assert set(refused.value.allow) == {"PUT", "GET", "DELETE", "HEAD"}


def test_segments_are_decoded_one_by_one() -> None:
    assert parse_segments(b"/v1/nodes/a%2Fb", "/v1/nodes/a/b") == ["v1", "nodes", "a/b"]
    assert parse_segments(None, "/v1/nodes/x") == ["v1", "nodes", "x"]
    assert parse_segments(b"/v1/nodes/%C3%A9", "") == ["v1", "nodes", "é"]
    assert parse_query(b"status=RUNNING&status=QUEUE&job=") == {"status": "QUEUE", "job": ""}


def test_json_bodies_are_decoded_with_paths_in_errors() -> None:
    assert decode_json(RetryBody, b"") == RetryBody()
    assert decode_json(RetryBody, b'{"job": "a"}').job == "a"
    with pytest.raises(InvalidRequest) as bad:
        decode_json(NodeBody, b'{"labels": ["ok", 3]}')
    assert bad.value.details == [{"path": "$.labels[1]", "message": "Expected `str`, got `int`"}]
    with pytest.raises(InvalidRequest, match="malformed JSON"):
        decode_json(NodeBody, b"{,}")


def test_error_answers_have_the_design_shape() -> None:
    response = error_response(QueueFull("group 'g' is full", details=[{"path": "x"}]))
    assert response.status == 429 and ("retry-after", "5") in response.headers
    assert msgspec.json.decode(response.body) == {"error": "queue_full", "message": "group 'g' is full",
                                                  "details": [{"path": "x"}]}  # fmt: skip
    allow = error_response(MethodNotAllowed("no", ["GET", "HEAD"]))
    assert allow.status == 405 and ("allow", "GET, HEAD") in allow.headers
