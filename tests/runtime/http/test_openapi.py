"""``GET /openapi.json``: generated from the route table and the msgspec types, and fuzzed.

The fuzz test draws requests from the document itself (every operation,
path parameters, query parameters and bodies, valid-looking or not) and
asserts that none is answered with a 5xx.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.model.vocab import AgentStatus, BuildStatus, EventKind, JobStatus, OnQueueFull, StageStatus, StepStatus, values
from runtime.http.openapi import build_document
from runtime.http.routes import ROUTES

from .conftest import FAILING, api, pipeline_yaml

DOC = build_document(ROUTES)


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    return _resolve(DOC["components"]["schemas"][ref.rsplit("/", 1)[1]])


def test_every_route_is_documented() -> None:
    assert DOC["openapi"] == "3.1.0"
    documented = {(method.upper(), path) for path, item in DOC["paths"].items() for method in item}
    assert documented == {(route.method, route.path) for route in ROUTES}
    ids = [op["operationId"] for item in DOC["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_schemas_come_from_the_msgspec_types() -> None:
    schemas = DOC["components"]["schemas"]
    build = schemas["BuildInfo"]
    for name in ("id", "pipeline_id", "number", "status", "execute_count", "group", "queue_position", "reason",
                 "variables", "queued_at", "started_at", "finished_at", "stages"):  # fmt: skip
        assert name in build["properties"], name
    assert schemas["NodeBody"]["properties"]["agents"]["minimum"] == 1
    assert schemas["ErrorBody"]["required"] == ["error", "message"]
    text = json.dumps(DOC)
    for ref in set(part.split('"')[0] for part in text.split('"$ref": "')[1:]):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_enums_come_from_the_vocabulary() -> None:
    schemas = DOC["components"]["schemas"]
    for record, words in (("BuildInfo", BuildStatus), ("JobInfo", JobStatus), ("StepInfo", StepStatus),
                          ("StageInfo", StageStatus), ("AgentInfo", AgentStatus)):  # fmt: skip
        assert sorted(_resolve(schemas[record]["properties"]["status"])["enum"]) == sorted(values(words)), record
    assert sorted(_resolve(schemas["GroupInfo"]["properties"]["on_queue_full"])["enum"]) == sorted(values(OnQueueFull))

    def parameter(path: str, name: str) -> dict[str, Any]:
        (found,) = [p for p in DOC["paths"][path]["get"]["parameters"] if p["name"] == name]
        return dict(found["schema"])

    assert parameter("/v1/builds", "status") == {"type": "string", "enum": values(BuildStatus)}
    assert parameter("/v1/events", "kind") == {"type": "string", "enum": values(EventKind)}


def test_statuses_match_the_design() -> None:
    def statuses(method: str, path: str) -> set[str]:
        return set(DOC["paths"][path][method]["responses"])

    assert {"201", "200", "400"} <= statuses("put", "/v1/pipelines/{id}")
    assert {"201", "429", "503"} <= statuses("post", "/v1/pipelines/{id}/builds")
    assert {"202", "409"} <= statuses("post", "/v1/builds/{id}/retry")
    assert {"202", "409"} <= statuses("post", "/v1/builds/{id}/cancel")
    assert {"201", "409"} <= statuses("put", "/v1/nodes/{name}")


def test_the_new_operations_are_described() -> None:
    paths = DOC["paths"]
    delete = paths["/v1/pipelines/{id}"]["delete"]
    assert {"200", "400", "404", "409"} <= set(delete["responses"])
    assert [(p["name"], p["in"], p["schema"]["type"]) for p in delete["parameters"]][1:] == [
        ("cancel", "query", "boolean")]
    assert _resolve(delete["responses"]["200"]["content"]["application/json"]["schema"])["required"] == ["id"]
    put_node = paths["/v1/nodes/{name}"]["put"]["responses"]
    assert {"200", "201", "409"} <= set(put_node) and "location" in put_node["201"]["headers"]
    assert {"200", "202", "404"} <= set(paths["/v1/nodes/{name}"]["delete"]["responses"])
    builds = paths["/v1/builds"]["get"]
    params = {p["name"]: p["schema"] for p in builds["parameters"]}
    assert params["limit"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}
    assert params["before"]["pattern"].endswith(r"\.[0-9]{1,18}$")
    assert "link" in builds["responses"]["200"]["headers"]
    assert "409" in paths["/v1/pipelines/{id}/builds"]["post"]["responses"]  # an undeclared variable


def test_what_the_handlers_refuse_the_schemas_exclude() -> None:
    retry = DOC["paths"]["/v1/builds/{id}/retry"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert retry["if"] == {"properties": {"failed_only": {"const": True}}, "required": ["failed_only"]}
    assert retry["then"] == {"properties": {"job": {"type": "null"}, "step": {"type": "null"}}}
    status = next(p for p in DOC["paths"]["/v1/builds"]["get"]["parameters"] if p["name"] == "status")
    assert "" not in status["schema"]["enum"]  # and ?status= is refused (test_routes)
    events = {p["name"]: p for p in DOC["paths"]["/v1/events"]["get"]["parameters"]}
    assert events["Last-Event-ID"]["in"] == "header"
    assert events["after"]["schema"]["maximum"] == events["Last-Event-ID"]["schema"]["maximum"] == 2**53 - 1


def test_the_event_stream_is_described_event_by_event() -> None:
    content = DOC["paths"]["/v1/events"]["get"]["responses"]["200"]["content"]
    schema = content["text/event-stream"]["schema"]
    assert schema["type"] == "object" and schema["required"] == ["id", "event", "data"]
    assert schema["properties"]["event"]["enum"] == ["build", "job", "step", "group", "node"]
    data = schema["properties"]["data"]
    assert data["contentMediaType"] == "application/json"
    assert _resolve(data["contentSchema"])["title"] == "Event"


def test_answers_link_to_the_operations_on_what_they_name() -> None:
    submit = DOC["paths"]["/v1/pipelines/{id}/builds"]["post"]["responses"]["201"]["links"]
    assert set(submit) == {"get_build", "retry", "cancel", "logs"}
    assert submit["retry"] == {"operationId": "retry", "parameters": {"id": "$response.body#/id"}}
    assert set(DOC["paths"]["/v1/pipelines/{id}"]["put"]["responses"]["200"]["links"]) == {
        "get_pipeline", "delete_pipeline", "submit"}
    node = DOC["paths"]["/v1/nodes/{name}"]["put"]["responses"]["201"]["links"]
    assert node["delete_node"]["parameters"] == {"name": "$response.body#/name"}
    ids = {op["operationId"] for item in DOC["paths"].values() for op in item.values()}
    for item in DOC["paths"].values():
        for operation in item.values():
            for response in operation["responses"].values():
                assert {link["operationId"] for link in response.get("links", {}).values()} <= ids


def test_every_operation_documents_405_and_the_servers_431() -> None:
    for path, item in DOC["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            assert "allow" in responses["405"]["headers"], (method, path)
            assert "content" not in responses["431"] and "hypercorn" in responses["431"]["description"]


@pytest.mark.trio
async def test_served_document_is_the_generated_one(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        response = await a.client.get("/openapi.json")
        assert response.status_code == 200 and response.json() == json.loads(json.dumps(DOC))


# -- a fuzzer driven by the document ---------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_ids = st.sampled_from(["app", "failing", "app.1", "failing.1", "app.999", "n1", "nope", ".x", "%2F", "a b", "é"]) | \
    st.text(min_size=1, max_size=12)  # fmt: skip


def _from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values shaped like ``schema`` (loosely: the point is to reach deep code, not to be valid)."""
    schema = _resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"]) | st.text(max_size=5)
    if "anyOf" in schema:
        return st.one_of([_from_schema(option) for option in schema["anyOf"]])
    kind = schema.get("type")
    if kind == "object":
        properties = schema.get("properties", {})
        if not properties:
            return st.dictionaries(st.sampled_from(["X", "Y", "a"]), _json, max_size=3)
        return st.fixed_dictionaries({}, optional={name: _from_schema(sub) | _json for name, sub in properties.items()})
    if kind == "array":
        return st.lists(_from_schema(schema.get("items", {})), max_size=3)
    if kind == "integer":
        return st.integers(-3, 2000) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return st.sampled_from(["default", "build", "bad", "ok", "wait", ""]) | st.text(max_size=10)
    return _json


_OPERATIONS = [(path, method, op) for path, item in DOC["paths"].items() for method, op in item.items()
               if op["operationId"] != "events"]  # fmt: skip


@st.composite
def _requests(draw: st.DrawFn) -> tuple[str, str, dict[str, Any], bytes, dict[str, str]]:
    path, method, op = draw(st.sampled_from(_OPERATIONS))
    query: dict[str, Any] = {}
    for param in op["parameters"]:
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", quote(draw(_ids), safe="%"))
        elif param["in"] == "query" and draw(st.booleans()):
            query[param["name"]] = draw(_from_schema(param["schema"]) | st.text(max_size=5))
    body, headers = b"", {}
    request_body = op.get("requestBody")
    if request_body is not None:
        media = draw(st.sampled_from(sorted(request_body["content"])))
        headers["content-type"] = media
        if media == "application/json":
            value = draw(_from_schema(request_body["content"][media]["schema"]) | _json)
            body = json.dumps(value).encode()
        else:
            body = draw(st.sampled_from([pipeline_yaml().encode(), b"name: [", b"a: b", b""]) | st.binary(max_size=40))
    return method.upper(), path, query, body, headers


@pytest.mark.trio
async def test_fuzzing_from_the_document_finds_no_5xx(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(variables="{X: x}"))
        await a.put_pipeline("failing", FAILING)
        a.open("f")
        await a.until((await a.submit("failing"))["id"], "FAILED")
        await a.until((await a.submit("app"))["id"], "SUCCEED")
        seen: list[tuple[str, str, int]] = []

        # Many requests per example: one thread hop per batch rather than per request.
        @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)  # fmt: skip
        @given(st.lists(_requests(), min_size=25, max_size=25))
        def check(requests: list[tuple[str, str, dict[str, Any], bytes, dict[str, str]]]) -> None:
            for request, status in zip(requests, trio.from_thread.run(_send_all, a, requests)):
                seen.append((request[0], request[1], status))
                assert status < 500, request

        await trio.to_thread.run_sync(check)
        assert {200, 400, 404} <= {status for _, _, status in seen}, sorted(set(seen))[:50]  # it reached deep
        assert (await a.client.get("/healthz")).status_code == 200


async def _send_all(a: Any, requests: list[tuple[str, str, dict[str, Any], bytes, dict[str, str]]]) -> list[int]:
    return [await _send(a, *request) for request in requests]


async def _send(a: Any, method: str, path: str, query: dict[str, Any], body: bytes, headers: dict[str, str]) -> int:
    params = {key: str(value) for key, value in query.items()}
    response = await a.client.request(method, path, params=params, content=body, headers=headers)
    return int(response.status_code)
