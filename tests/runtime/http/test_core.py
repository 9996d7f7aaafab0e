"""The pure core: routing, path and query parsing, JSON bodies, error answers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.model.errors import InvalidRequest, NotFound, QueueFull
from runtime.http.core import (
    MethodNotAllowed,
    Param,
    Request,
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


@pytest.mark.parametrize(("schema", "raw", "expected"), [
    ({"type": "string"}, None, None),
    ({"type": "string"}, "", None),  # a plain string filter: empty is no filter
    ({"type": "string"}, "x", "x"),
    ({"type": "string", "enum": ["A", "B"]}, "B", "B"),
    ({"type": "string", "enum": ["A", "B"]}, "", InvalidRequest),
    ({"type": "string", "enum": ["A", "B"]}, "a", InvalidRequest),
    ({"type": "string", "pattern": r"^[a-z]+\.[0-9]+$"}, "app.3", "app.3"),
    ({"type": "string", "pattern": r"^[a-z]+\.[0-9]+$"}, "app", InvalidRequest),
    ({"type": "integer", "minimum": 1, "maximum": 10}, "10", 10),
    ({"type": "integer", "minimum": 1, "maximum": 10}, "11", InvalidRequest),
    ({"type": "integer", "minimum": 1, "maximum": 10}, "0", InvalidRequest),
    ({"type": "integer", "minimum": 1, "maximum": 10}, "2.0", InvalidRequest),
    ({"type": "integer", "minimum": 1, "maximum": 10}, "", InvalidRequest),
    ({"type": "integer", "minimum": 0}, "9" * 40, InvalidRequest),
    ({"type": "boolean"}, "true", True),
    ({"type": "boolean"}, "false", False),
    ({"type": "boolean"}, "1", InvalidRequest),
    ({"type": "boolean"}, "", InvalidRequest),
])  # fmt: skip
def test_a_param_reads_what_its_schema_allows(schema: dict[str, Any], raw: str | None, expected: Any) -> None:
    param = Param("p", "a parameter", schema)
    request = Request("GET", "/", [], query={} if raw is None else {"p": raw})
    if expected is InvalidRequest:
        with pytest.raises(InvalidRequest) as refused:
            param.read(request)
        assert refused.value.details == [{"path": "query.p", "message": refused.value.message.split(": ", 1)[1]}]
    else:
        assert param.read(request) == expected


def test_headers_are_read_case_insensitively() -> None:
    param = Param("Last-Event-ID", "resume", {"type": "integer", "minimum": 0}, where="header")
    assert param.read(Request("GET", "/", [], headers={"last-event-id": "7"})) == 7
    with pytest.raises(InvalidRequest, match="header.Last-Event-ID"):
        param.read(Request("GET", "/", [], headers={"last-event-id": "x"}))


def test_a_number_without_fraction_is_an_integer() -> None:
    assert decode_json(NodeBody, b'{"agents": 31.0}').agents == 31
    assert decode_json(NodeBody, b'{"labels": ["a"], "agents": 2e1}').agents == 20
    with pytest.raises(InvalidRequest, match=r"\$\.agents"):
        decode_json(NodeBody, b'{"agents": 31.5}')
    with pytest.raises(InvalidRequest, match=r"\$\.agents"):
        decode_json(NodeBody, b'{"agents": 1e9}')  # an integer, past the bound
