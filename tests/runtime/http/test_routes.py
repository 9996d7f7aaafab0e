"""Every route of docs/design.md §7 through the ASGI app in-process: statuses, bodies, error shapes.

Each refusal is checked for its status, its ``error`` code and a message
that names what is wrong; requests that are refused must change nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import trio

from .conftest import FAILING, GATED, api, pipeline_yaml


def _error(response: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message", "details"}, body
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"] or word in str(body["details"]), (word, body)
    return dict(body)


# -- pipelines ------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_put_pipeline_creates_then_replaces(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        created = await a.client.put("/v1/pipelines/app", content=pipeline_yaml(),
                                     headers={"content-type": "application/yaml"})  # fmt: skip
        assert created.status_code == 201
        assert created.headers["location"] == "/v1/pipelines/app"
        assert created.json()["id"] == "app" and created.json()["jobs"] == ["build"]
        replaced = await a.client.put("/v1/pipelines/app", content=pipeline_yaml(name="renamed"),
                                      headers={"content-type": "text/yaml"})  # fmt: skip
        assert replaced.status_code == 200 and replaced.json()["name"] == "renamed"
        listed = (await a.client.get("/v1/pipelines")).json()
        assert [p["id"] for p in listed] == ["app"]
        one = await a.client.get("/v1/pipelines/app")
        assert one.status_code == 200 and one.json()["name"] == "renamed"


@pytest.mark.trio
@pytest.mark.parametrize("content_type", ["text/yaml", "application/yaml; charset=utf-8", "application/x-yaml"])
async def test_put_pipeline_reads_yaml_content_types(autojump_clock: trio.testing.MockClock,
                                                     content_type: str | None) -> None:  # fmt: skip
    async with api() as a:
        headers = {"content-type": content_type} if content_type else {}
        response = await a.client.put("/v1/pipelines/app", content=pipeline_yaml().encode(), headers=headers)
        assert response.status_code == 201, response.text


@pytest.mark.trio
@pytest.mark.parametrize("content_type", ["text/plain; charset=utf-8", None, "application/x-www-form-urlencoded"])
async def test_put_pipeline_refuses_bodies_not_typed_yaml_or_json(autojump_clock: trio.testing.MockClock,
                                                                  content_type: str | None) -> None:  # fmt: skip
    # A type a browser may send cross-site without asking first is never read as a pipeline (docs/design.md §12).
    async with api() as a:
        headers = {"content-type": content_type} if content_type else {}
        response = await a.client.put("/v1/pipelines/app", content=pipeline_yaml().encode(), headers=headers)
        assert response.status_code == 415, response.text
        assert response.json()["error"] == "unsupported_media_type"
        assert not a.rt.has_pipeline("app")


@pytest.mark.trio
async def test_put_pipeline_reads_json(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        spec = {"version": "v3.0", "name": "json", "steps": [{"uses": "noop@1"}]}
        response = await a.client.put("/v1/pipelines/from-json", json=spec)
        assert response.status_code == 201, response.text
        assert response.json()["id"] == "from-json"


@pytest.mark.trio
async def test_bad_pipelines_are_refused_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        yaml_type = {"content-type": "application/yaml"}
        json_type = {"content-type": "application/json"}
        _error(await a.client.put("/v1/pipelines/app", content="name: [unclosed", headers=yaml_type),
               400, "invalid_spec", "invalid YAML", "line ")
        body = _error(await a.client.put("/v1/pipelines/app", content=pipeline_yaml().replace("steps:", "stepz:"),
                                         headers=yaml_type), 400, "invalid_spec", "stepz")
        assert any(d["path"] == "$.jobs.build.stepz" for d in body["details"]), body
        _error(await a.client.put("/v1/pipelines/app", content='{"name": ', headers=json_type),
               400, "invalid_spec", "malformed JSON")
        _error(await a.client.put("/v1/pipelines/app", content="[1, 2]", headers=json_type),
               400, "invalid_spec", "mapping")
        _error(await a.client.put("/v1/pipelines/app", content=pipeline_yaml(), headers={"content-type": "image/png"}),
               415, "unsupported_media_type", "image/png")
        _error(await a.client.put("/v1/pipelines/.hidden", content=pipeline_yaml(), headers=yaml_type),
               400, "invalid_request", ".hidden")
        _error(await a.client.put("/v1/pipelines/" + "x" * 65, content=pipeline_yaml(), headers=yaml_type),
               400, "invalid_request")
        _error(await a.client.put("/v1/pipelines/app", content=b"\xff\xfe bad", headers=yaml_type),
               400, "invalid_spec", "UTF-8")
        # A one-line body that looks like a file name is YAML text, never a path to read.
        _error(await a.client.put("/v1/pipelines/app", content="examples/pipelines/step-retry.yml", headers=yaml_type),
               400, "invalid_spec", "mapping")
        assert await a.state() == before


@pytest.mark.trio
async def test_unknown_pipeline_is_404(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        _error(await a.client.get("/v1/pipelines/nope"), 404, "not_found", "nope")
        _error(await a.client.get("/v1/pipelines/%2E%2E"), 404, "not_found")
        _error(await a.client.post("/v1/pipelines/nope/builds"), 404, "not_found", "nope")


# -- bodies and their limit -----------------------------------------------------------------------


@pytest.mark.trio
async def test_huge_bodies_get_413_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    config = {"server": {"max-body-bytes": 1000}, "pools": [{"name": "default", "nodes": [{"name": "n1"}]}]}
    async with api(config) as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        big = pipeline_yaml() + "#" * 2000
        yaml_type, json_type = {"content-type": "application/yaml"}, {"content-type": "application/json"}
        _error(await a.client.put("/v1/pipelines/app", content=big, headers=yaml_type), 413, "body_too_large", "1000")

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(100):  # no content-length: the limit holds while reading
                yield b" " * 100

        _error(await a.client.post("/v1/pipelines/app/builds", content=chunks(), headers=json_type),
               413, "body_too_large")
        _error(await a.client.put("/v1/nodes/big", content=b"{" + b" " * 5000 + b"}", headers=json_type),
               413, "body_too_large")
        assert await a.state() == before
        assert (await a.client.put("/v1/pipelines/app", content=pipeline_yaml(), headers=yaml_type)).status_code == 200


# -- builds ---------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_submit_answers_201_with_the_build(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(variables="{X: one, N: '1'}"))
        response = await a.client.post("/v1/pipelines/app/builds", json={"variables": {"X": "two", "N": 3}})
        assert response.status_code == 201, response.text
        build = response.json()
        assert response.headers["location"] == f"/v1/builds/{build['id']}"
        assert build["pipeline_id"] == "app" and build["number"] == 1
        assert build["variables"] == {"X": "two", "N": "3"}
        empty = await a.client.post("/v1/pipelines/app/builds")  # no body at all: defaults
        assert empty.status_code == 201 and empty.json()["variables"] == {"X": "one", "N": "1"}
        done = await a.until(build["id"], "SUCCEED")
        assert done["stages"][0]["jobs"][0]["steps"][0]["status"] == "SUCCEED"
        assert done["finished_at"] is not None


@pytest.mark.trio
async def test_bad_submissions_get_400_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(variables="{X: one}"))
        before = await a.state()
        post = a.client.post
        url = "/v1/pipelines/app/builds"
        body = _error(await post(url, json={"variables": {"X": None}}), 400, "invalid_request", "$.variables.X")
        message = "must be a string, number or boolean, got null"
        assert body["details"] == [{"path": "$.variables.X", "message": message}]
        _error(await post(url, json={"variables": {"X": {"a": 1}}}), 400, "invalid_request", "$.variables.X", "mapping")
        # Well-formed, but the pipeline's definition does not declare Y: a conflict with its state.
        _error(await post(url, json={"variables": {"Y": "1"}}), 409, "undeclared_variable", "$.variables.Y")
        _error(await post(url, json={"variables": ["X"]}), 400, "invalid_request", "$.variables", "array")
        _error(await post(url, json={"vars": {}}), 400, "invalid_request", "vars")
        _error(await post(url, json=[1]), 400, "invalid_request", "array")
        json_type = {"content-type": "application/json"}
        _error(await post(url, content=b'{"variables": ', headers=json_type), 400, "invalid_request", "malformed JSON")
        _error(await post(url, content=b"\x00\xff", headers=json_type), 400, "invalid_request", "malformed JSON")
        _error(await post(url, content=b'{"variables": {}}'), 415, "unsupported_media_type", "Content-Type")
        assert await a.state() == before


@pytest.mark.trio
async def test_queue_full_is_429_with_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        gated = GATED.replace("jobs:", "concurrency: {group: g, max-parallel: 1, queue-length: 0}\njobs:")
        await a.put_pipeline("gated", gated)
        first = await a.submit("gated")
        before = await a.state()
        response = await a.client.post("/v1/pipelines/gated/builds")
        _error(response, 429, "queue_full", "g")
        assert response.headers["retry-after"].isdigit()
        assert await a.state() == before
        a.open("g")
        await a.until(first["id"], "SUCCEED")


@pytest.mark.trio
async def test_overloaded_is_503_with_retry_after(autojump_clock: trio.testing.MockClock) -> None:
    config = {"max-queued-builds": 1, "pools": [{"name": "default", "nodes": [{"name": "n1"}]}]}
    async with api(config) as a:
        await a.put_pipeline("gated", GATED)
        await a.submit("gated")
        await a.rt.stats()  # the hub has counted the first build
        response = await a.client.post("/v1/pipelines/gated/builds")
        _error(response, 503, "overloaded", "max-queued-builds")
        assert response.headers["retry-after"].isdigit()
        a.open("g")


@pytest.mark.trio
async def test_get_and_list_builds(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        await a.put_pipeline("gated", GATED)
        done = await a.submit("app")
        running = await a.submit("gated")
        await a.until(done["id"], "SUCCEED")
        await a.until(running["id"], "RUNNING")
        everything = (await a.client.get("/v1/builds")).json()
        assert {b["id"] for b in everything} == {done["id"], running["id"]}
        assert [b["id"] for b in (await a.client.get("/v1/builds?pipeline=gated")).json()] == [running["id"]]
        assert [b["id"] for b in (await a.client.get("/v1/builds?status=SUCCEED")).json()] == [done["id"]]
        assert (await a.client.get("/v1/builds?status=RUNNING&pipeline=app")).json() == []
        assert len((await a.client.get("/v1/builds?pipeline=")).json()) == 2
        every = ("QUEUE", "RUNNING", "SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT")
        _error(await a.client.get("/v1/builds?status=DONE"), 400, "invalid_request", "query.status", "DONE", *every)
        # present but empty is not "any status": the OpenAPI enum has no empty value
        _error(await a.client.get("/v1/builds?status="), 400, "invalid_request", "query.status", "empty", *every)
        _error(await a.client.get("/v1/builds?status=&pipeline="), 400, "invalid_request", "query.status")
        _error(await a.client.get("/v1/builds?status=succeed"), 400, "invalid_request", "query.status", "succeed")
        _error(await a.client.get("/v1/builds?pipeline=nope"), 404, "not_found", "nope")
        _error(await a.client.get("/v1/builds/nope.1"), 404, "not_found", "nope.1")
        _error(await a.client.get("/v1/builds/app.99"), 404, "not_found")
        _error(await a.client.get("/v1/builds/garbage"), 404, "not_found")
        a.open("g")


@pytest.mark.trio
async def test_retry_a_failed_step_is_202(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("failing", FAILING)
        build = await a.submit("failing")
        a.open("f")
        failed = await a.until(build["id"], "FAILED")
        assert failed["stages"][0]["jobs"][0]["steps"][1]["status"] == "FAILED"
        before = await a.state()
        _error(await a.client.post(f"/v1/builds/{build['id']}/retry", json={"failed_only": True, "job": "build"}),
               400, "invalid_request", "failed_only")
        _error(await a.client.post(f"/v1/builds/{build['id']}/retry", json={"failed_only": "yes"}),
               400, "invalid_request", "$.failed_only")
        _error(await a.client.post(f"/v1/builds/{build['id']}/retry", json={"step": 3}),
               400, "invalid_request", "$.step")
        _error(await a.client.post(f"/v1/builds/{build['id']}/retry", json={"job": "nope"}), 404, "not_found", "nope")
        _error(await a.client.post("/v1/builds/failing.9/retry"), 404, "not_found")
        assert await a.state() == before
        retried = await a.client.post(f"/v1/builds/{build['id']}/retry", json={"job": "build", "step": "bad"})
        assert retried.status_code == 202, retried.text
        assert retried.json()["execute_count"] == 2
        await a.until(build["id"], "FAILED")  # the gate still says fail
        again = await a.client.post(f"/v1/builds/{build['id']}/retry", json={"step": "bad"})
        assert again.status_code == 202 and again.json()["execute_count"] == 3
        await a.until(build["id"], "FAILED")
        whole = await a.client.post(f"/v1/builds/{build['id']}/retry", json={})
        assert whole.status_code == 202 and whole.json()["execute_count"] == 4
        await a.until(build["id"], "FAILED")
        only = await a.client.post(f"/v1/builds/{build['id']}/retry", json={"failed_only": True})
        assert only.status_code == 202 and only.json()["execute_count"] == 5


@pytest.mark.trio
async def test_whole_retry_of_a_running_build_is_409(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("gated", GATED)
        build = await a.submit("gated")
        await a.until(build["id"], "RUNNING")
        before = await a.state()
        _error(await a.client.post(f"/v1/builds/{build['id']}/retry"), 409, "not_retryable", build["id"])
        assert await a.state() == before
        a.open("g")


@pytest.mark.trio
async def test_cancel_is_202_then_409(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("gated", GATED)
        build = await a.submit("gated")
        await a.until(build["id"], "RUNNING")
        _error(await a.client.post(f"/v1/builds/{build['id']}/cancel", json={"reason": "x"}), 400, "invalid_request")
        response = await a.client.post(f"/v1/builds/{build['id']}/cancel")
        assert response.status_code == 202, response.text
        await a.until(build["id"], "CANCELED")
        before = await a.state()
        _error(await a.client.post(f"/v1/builds/{build['id']}/cancel", json={}), 409, "conflict", "finished")
        _error(await a.client.post("/v1/builds/gated.7/cancel"), 404, "not_found")
        assert await a.state() == before


@pytest.mark.trio
async def test_logs_are_plain_text(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(steps="[{id: say, uses: echo@1, with: {text: hello there}}]"))
        build = await a.submit("app")
        await a.until(build["id"], "SUCCEED")
        response = await a.client.get(f"/v1/builds/{build['id']}/logs")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert "hello there" in response.text
        step = await a.client.get(f"/v1/builds/{build['id']}/logs?job=build&step=say")
        assert "hello there" in step.text
        _error(await a.client.get(f"/v1/builds/{build['id']}/logs?job=nope"), 404, "not_found", "nope")
        _error(await a.client.get(f"/v1/builds/{build['id']}/logs?step=nope"), 404, "not_found", "nope")
        _error(await a.client.get("/v1/builds/app.5/logs"), 404, "not_found")


# -- groups, nodes, stats, service ------------------------------------------------------------------


@pytest.mark.trio
async def test_groups_show_running_and_queue(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("gated", GATED.replace("jobs:", "concurrency: {group: g1, queue-length: 3}\njobs:"))
        first = await a.submit("gated")
        second = await a.submit("gated")
        groups = (await a.client.get("/v1/groups")).json()
        assert [g["name"] for g in groups] == ["g1"]
        assert groups[0]["running"] == [first["id"]] and groups[0]["max_parallel"] == 1
        assert [(q["build_id"], q["position"]) for q in groups[0]["queue"]] == [(second["id"], 1)]
        assert (await a.client.get(f"/v1/builds/{second['id']}")).json()["queue_position"] == 1
        a.open("g")


@pytest.mark.trio
async def test_nodes_add_get_remove(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        assert [n["name"] for n in (await a.client.get("/v1/nodes")).json()] == ["n1"]
        created = await a.client.put("/v1/nodes/n2", json={"pool": "linux", "agents": 3, "labels": ["x86"]})
        assert created.status_code == 201, created.text
        assert created.headers["location"] == "/v1/nodes/n2"
        node = created.json()
        assert (node["pool"], len(node["agents"]), node["labels"]) == ("linux", 3, ["x86"])
        assert (await a.client.put("/v1/nodes/n3")).status_code == 201  # every field has a default
        got = await a.client.get("/v1/nodes/n2")
        assert got.status_code == 200 and got.json()["name"] == "n2"
        stats = (await a.client.get("/v1/stats")).json()
        assert stats["agents"] == 2 + 3 + 1
        removed = await a.client.delete("/v1/nodes/n2")
        assert removed.status_code == 200 and removed.json()["name"] == "n2"
        with trio.fail_after(5):
            while "n2" in [n["name"] for n in (await a.client.get("/v1/nodes")).json()]:
                await trio.sleep(0.01)


@pytest.mark.trio
async def test_bad_node_requests_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        before = await a.state()
        _error(await a.client.put("/v1/nodes/n1", json={"pool": "other"}), 409, "conflict", "n1", "default")
        _error(await a.client.put("/v1/nodes/-bad"), 400, "invalid_request", "-bad")
        _error(await a.client.put("/v1/nodes/a%2Fb"), 400, "invalid_request", "a/b")
        _error(await a.client.put("/v1/nodes/n9", json={"agents": 0}), 400, "invalid_request", "$.agents", ">= 1")
        _error(await a.client.put("/v1/nodes/n9", json={"agents": 10**6}), 400, "invalid_request", "$.agents")
        _error(await a.client.put("/v1/nodes/n9", json={"agents": "2"}), 400, "invalid_request", "$.agents")
        _error(await a.client.put("/v1/nodes/n9", json={"labels": [""]}), 400, "invalid_request", "$.labels[0]")
        _error(await a.client.put("/v1/nodes/n9", json={"pool": "a b"}), 400, "invalid_request", "$.pool")
        _error(await a.client.put("/v1/nodes/n9", json={"cpus": 2}), 400, "invalid_request", "cpus")
        _error(await a.client.get("/v1/nodes/n9"), 404, "not_found", "n9")
        _error(await a.client.delete("/v1/nodes/n9"), 404, "not_found", "n9")
        assert await a.state() == before


@pytest.mark.trio
async def test_stats_healthz_and_unknown_routes(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        stats = (await a.client.get("/v1/stats")).json()
        for name in ("builds_running", "builds_queued", "jobs_running", "jobs_queued", "slots_held", "agents_busy",
                     "agents_locked"):  # fmt: skip
            assert stats[name] == 0, name
        health = await a.client.get("/healthz")
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        _error(await a.client.get("/v2/pipelines"), 404, "not_found", "/v2/pipelines")
        _error(await a.client.get("/v1/pipelines/"), 404, "not_found")
        response = await a.client.delete("/v1/stats")
        _error(response, 405, "method_not_allowed", "DELETE")
        assert response.headers["allow"] == "GET, HEAD"
        put_or_get = await a.client.post("/v1/nodes/n1")
        assert set(put_or_get.headers["allow"].split(", ")) == {"GET", "PUT", "DELETE", "HEAD"}
        head = await a.client.head("/v1/stats")
        assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0


@pytest.mark.trio
async def test_unexpected_errors_are_500_without_details(autojump_clock: trio.testing.MockClock,
                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    async with api() as a:
        async def broken() -> None:
            raise RuntimeError("secret internals")

        a.rt.stats = broken  # type: ignore[method-assign, assignment]
        body = _error(await a.client.get("/v1/stats"), 500, "internal")
        assert "secret" not in body["message"]
        assert "secret internals" in caplog.text


@pytest.mark.trio
async def test_a_closed_runtime_answers_503(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        app = a.rt.asgi_app
        await a.put_pipeline("app", pipeline_yaml())
    async with client_for(app) as late:
        _error(await late.get("/v1/stats"), 503, "unavailable")
        _error(await late.get("/v1/events"), 503, "unavailable")


def client_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


@pytest.mark.trio
async def test_a_body_cut_short_by_a_disconnect_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        before = await a.state()
        text = pipeline_yaml().encode()
        parts: list[dict[str, Any]] = [{"type": "http.request", "body": text[:40], "more_body": True},
                                       {"type": "http.disconnect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return parts.pop(0)

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "PUT", "path": "/v1/pipelines/cut", "raw_path": b"/v1/pipelines/cut",
                 "query_string": b"", "headers": [(b"content-type", b"application/yaml")]}  # fmt: skip
        await a.rt.asgi_app(scope, receive, send)
        assert sent == []
        assert await a.state() == before
