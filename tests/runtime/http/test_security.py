"""docs/design.md §12 at the HTTP door: tokens and roles, browsers (body type, Origin, Host), limits.

Each probe of issue 14 that concerns the door has its regression here:
a submit with ``text/plain`` from a foreign origin, a PUT with a foreign
``Host``, JSON nested 1,000 deep, ``queue-timeout-minutes: 1e29``, a body
that never finishes, unauthenticated node removal, too many agents.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
import pytest
import trio

import runtime
from runtime.auth import TokenTable, digest_of, protected_mode_problem, required_role
from runtime.config import load_config
from runtime.http.core import Request
from runtime.http.guard import Guard, InvalidHost

from .conftest import CONFIG, GATED, api, pipeline_yaml, sse

TOKENS = {
    "reader": "read-token-0123456789",
    "writer": "write-token-0123456789",
    "admin": "admin-token-0123456789",
    "agent": "agent-token-0123456789",
}
SECURED = {
    **CONFIG,
    "auth": {"tokens": [
        {"name": "reader", "role": "read", "token": TOKENS["reader"]},
        {"name": "writer", "role": "write", "token": TOKENS["writer"]},
        # Stored as its hash: the config file never holds the secret itself.
        {"name": "admin", "role": "admin", "token": "sha256:" + hashlib.sha256(TOKENS["admin"].encode()).hexdigest()},
        {"name": "agent", "role": "agent", "token": TOKENS["agent"]},
    ]},
}  # fmt: skip
YAML = {"content-type": "application/yaml"}


def bearer(who: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[who]}"}


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error", "message", "details"} and body["error"] == code, body
    return dict(body)


# -- tokens and roles -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_without_a_valid_token_everything_but_healthz_is_401(autojump_clock: trio.testing.MockClock) -> None:
    async with api(SECURED) as a:
        assert (await a.client.get("/healthz")).status_code == 200
        before = await a.state()
        for method, path in [("GET", "/v1/pipelines"), ("GET", "/v1/events"), ("GET", "/metrics"),
                             ("GET", "/openapi.json"), ("PUT", "/v1/pipelines/rce"), ("DELETE", "/v1/nodes/n1"),
                             ("POST", "/v1/pipelines/rce/builds"), ("GET", "/v1/nowhere")]:  # fmt: skip
            for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": TOKENS["admin"]},
                            {"authorization": f"Basic {TOKENS['admin']}"}):  # fmt: skip
                response = await a.client.request(method, path, headers=headers)
                body = _error(response, 401, "unauthorized")
                assert "Bearer" in body["message"] and response.headers["www-authenticate"].startswith("Bearer")
        assert await a.state() == before  # the node is still there; nothing registered


@pytest.mark.trio
async def test_roles_nest_read_write_admin_and_agent_reaches_only_agent_routes(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    async with api(SECURED) as a:
        rce = pipeline_yaml("rce", steps="[{run: 'id > proof'}]")
        for who in ("reader", "writer", "agent"):
            _error(await a.client.put("/v1/pipelines/rce", content=rce, headers={**YAML, **bearer(who)}),
                   403, "forbidden")  # fmt: skip
            _error(await a.client.delete("/v1/nodes/n1", headers=bearer(who)), 403, "forbidden")
        created = await a.client.put("/v1/pipelines/app", content=pipeline_yaml(), headers={**YAML, **bearer("admin")})
        assert created.status_code == 201, created.text
        for who in ("reader", "agent"):
            _error(await a.client.post("/v1/pipelines/app/builds", json={}, headers=bearer(who)), 403, "forbidden")
        build = await a.client.post("/v1/pipelines/app/builds", json={}, headers=bearer("writer"))
        assert build.status_code == 201
        assert (await a.client.post("/v1/pipelines/app/builds", json={}, headers=bearer("admin"))).status_code == 201
        for who in ("reader", "writer", "admin"):
            assert (await a.client.get("/v1/builds", headers=bearer(who))).status_code == 200
            assert (await a.client.get("/metrics", headers=bearer(who))).status_code == 200
        for path in ("/v1/builds", "/metrics", "/v1/stats"):
            body = _error(await a.client.get(path, headers=bearer("agent")), 403, "forbidden")
            assert "agent" in body["message"]
        cancel = await a.client.post(f"/v1/builds/{build.json()['id']}/cancel", headers=bearer("reader"))
        _error(cancel, 403, "forbidden")
        async with sse(a.rt.asgi_app, "/v1/events", [("authorization", f"Bearer {TOKENS['reader']}")]) as reader:
            assert await reader.start() == 200


def test_the_role_table_is_keyed_by_route_prefix() -> None:
    assert required_role("GET", "/healthz") is None
    assert required_role("GET", "/v1/builds/x") == "read"
    assert required_role("POST", "/v1/pipelines/x/builds") == "write"
    assert required_role("POST", "/v1/builds/x/retry") == "write"
    assert required_role("PUT", "/v1/pipelines/x") == "admin"
    assert required_role("DELETE", "/v1/nodes/x") == "admin"
    assert required_role("POST", "/v1/agent/lease") == "agent"
    assert required_role("GET", "/v1/agent/anything") == "agent"


def test_shunter_token_adds_an_admin_token_and_tokens_are_kept_as_digests() -> None:
    table = TokenTable.build(runtime.load_config(SECURED).auth, {"SHUNTER_TOKEN": "from-the-env-0123"})
    found = table.check("from-the-env-0123")
    assert found is not None and found.role == "admin"
    assert table.check(TOKENS["admin"]) is not None and table.check(TOKENS["admin"] + "x") is None
    assert table.check("") is None
    config = runtime.load_config(SECURED)
    assert TOKENS["reader"] not in repr(config) and digest_of(TOKENS["reader"]) in str(config.auth.tokens[0].digest)


@pytest.mark.trio
async def test_shunter_token_protects_an_embedded_server(autojump_clock: trio.testing.MockClock,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("SHUNTER_TOKEN", "env-token-0123456789")
    async with api() as a:
        _error(await a.client.get("/v1/stats"), 401, "unauthorized")
        ok = await a.client.get("/v1/stats", headers={"authorization": "Bearer env-token-0123456789"})
        assert ok.status_code == 200


@pytest.mark.parametrize("bind, refused", [
    ("127.0.0.1:8000", False), ("localhost:8000", False), ("[::1]:8000", False), ("127.8.9.1:0", False),
    ("0.0.0.0:8000", True), ("[::]:8000", True), ("192.168.1.5:8000", True), ("ci.example.com:80", True),
])  # fmt: skip
def test_protected_mode_allows_only_loopback_without_a_token(bind: str, refused: bool) -> None:
    problem = protected_mode_problem(bind, TokenTable([]))
    assert (problem is not None) == refused
    if problem:
        assert "SHUNTER_TOKEN" in problem and "\n" not in problem
    assert protected_mode_problem(bind, TokenTable.build(runtime.load_config(SECURED).auth, {})) is None


@pytest.mark.parametrize("tokens, where", [
    ([{"name": "x", "role": "root", "token": "abcdef"}], "role"),
    ([{"name": "x", "role": "read", "token": "sha256:1234"}], "token"),
    ([{"name": "x", "role": "read"}], "token"),
    ([{"name": "x", "role": "read", "token": "a b"}], "token"),
    ([{"role": "read", "token": "abcdef"}], "name"),
])  # fmt: skip
def test_bad_tokens_are_refused_without_repeating_them(tokens: list[dict[str, str]], where: str) -> None:
    with pytest.raises(runtime.SpecError) as refused:
        runtime.load_config({"auth": {"tokens": tokens}})
    assert any(error["path"].endswith(where) for error in refused.value.errors), refused.value.errors
    assert "abcdef" not in str(refused.value) and "a b" not in refused.value.message.replace("a boolean", "")


# -- browsers -------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_state_changing_bodies_must_be_json(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                      "application/yaml"):  # fmt: skip
            response = await a.client.post("/v1/pipelines/app/builds", content=b'{"variables": {}}',
                                           headers={"content-type": media})  # fmt: skip
            _error(response, 415, "unsupported_media_type")
            _error(await a.client.put("/v1/nodes/n9", content=b"{}", headers={"content-type": media}),
                   415, "unsupported_media_type")  # fmt: skip
        _error(await a.client.post("/v1/pipelines/app/builds", content=b"{}"), 415, "unsupported_media_type")
        assert await a.state() == before
        # No body needs no type; JSON with parameters or a +json type is JSON.
        assert (await a.client.post("/v1/pipelines/app/builds")).status_code == 201
        typed = await a.client.post("/v1/pipelines/app/builds", content=b"{}",
                                    headers={"content-type": "application/json; charset=utf-8"})  # fmt: skip
        assert typed.status_code == 201


@pytest.mark.trio
async def test_a_foreign_origin_is_403_unless_allowed(autojump_clock: trio.testing.MockClock) -> None:
    config = {**CONFIG, "server": {"allowed-origins": ["https://dash.example.com"]}}
    async with api(config) as a:
        await a.put_pipeline("app", pipeline_yaml())
        before = await a.state()
        for origin in ("http://evil.example", "null", "http://localhost.evil.example", "https://localhost"):
            response = await a.client.post("/v1/pipelines/app/builds", content=b"{}",
                                           headers={"origin": origin, "content-type": "application/json"})  # fmt: skip
            _error(response, 403, "forbidden")
            _error(await a.client.get("/v1/builds", headers={"origin": origin}), 403, "forbidden")
        assert await a.state() == before
        own = await a.client.post("/v1/pipelines/app/builds", json={}, headers={"origin": "http://localhost"})
        assert own.status_code == 201 and "access-control-allow-origin" not in own.headers
        allowed = await a.client.post("/v1/pipelines/app/builds", json={},
                                      headers={"origin": "https://dash.example.com"})  # fmt: skip
        assert allowed.status_code == 201
        assert allowed.headers["access-control-allow-origin"] == "https://dash.example.com"
        preflight = await a.client.options("/v1/pipelines/app/builds", headers={
            "origin": "https://dash.example.com", "access-control-request-method": "POST"})  # fmt: skip
        assert preflight.status_code == 204 and "authorization" in preflight.headers["access-control-allow-headers"]
        refused = await a.client.options("/v1/pipelines/app/builds", headers={
            "origin": "http://evil.example", "access-control-request-method": "POST"})  # fmt: skip
        _error(refused, 403, "forbidden")


@pytest.mark.trio
async def test_an_open_server_answers_only_loopback_host_names(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        before = await a.state()
        for host in ("attacker.example", "attacker.example:8000", "10.0.0.5", "localhost.attacker.example"):
            response = await a.client.put("/v1/pipelines/rce", content=pipeline_yaml(),
                                          headers={**YAML, "host": host})  # fmt: skip
            body = _error(response, 400, "invalid_host")
            assert body["details"][0]["path"] == "header.Host"
        assert await a.state() == before
        for host in ("localhost:8000", "127.0.0.1", "127.0.0.1:9", "[::1]:8000", "LOCALHOST"):
            assert (await a.client.get("/v1/stats", headers={"host": host})).status_code == 200, host
    async with api(SECURED) as a:  # with tokens the Host is the operator's business
        response = await a.client.get("/v1/stats", headers={"host": "ci.example.com", **bearer("reader")})
        assert response.status_code == 200


def test_host_verdicts_are_remembered_within_a_bound() -> None:
    guard = Guard(load_config({"server": {"bind": "127.0.0.1:8000"}}), environ={})

    def allowed(host: str) -> bool:
        request = Request(method="GET", path="/v1/stats", segments=["v1", "stats"], headers={"host": host})
        try:
            guard.check(request, "http")
        except InvalidHost:
            return False
        return True

    for _ in range(2):  # the second time from the table, with the same verdicts
        assert allowed("localhost:8000") and allowed("127.0.0.1:8000")
        assert not allowed("attacker.example") and not allowed("attacker.example:8000")
    for number in range(1000):  # a client sending ever new names
        assert not allowed(f"x{number}.attacker.example")
        assert len(guard._host_verdicts) <= 256
    assert allowed("localhost:8000") and not allowed("attacker.example")


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.trio
async def test_deep_json_is_400_not_500(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml(variables="{X: one}"))
        before = await a.state()
        deep = b'{"variables": {"X": ' + b"[" * 1000 + b"]" * 1000 + b"}}"
        response = await a.client.post("/v1/pipelines/app/builds", content=deep,
                                       headers={"content-type": "application/json"})  # fmt: skip
        assert "nested deeper" in _error(response, 400, "invalid_request")["message"]
        spec = b'{"version": "v3.0", "name": "deep", "steps": [{"uses": "echo@1", "with": {"x": ' + \
            b"[" * 1000 + b"]" * 1000 + b"}}]}"  # fmt: skip
        response = await a.client.put("/v1/pipelines/deep", content=spec, headers={"content-type": "application/json"})
        _error(response, 400, "invalid_spec")
        yaml_deep = pipeline_yaml("deep", steps="[{uses: echo@1, with: {x: " + "[" * 1000 + "]" * 1000 + "}}]")
        _error(await a.client.put("/v1/pipelines/deep", content=yaml_deep, headers=YAML), 400, "invalid_spec")
        _error(await a.client.put("/v1/nodes/n9", content=b"[" * 5000, headers={"content-type": "application/json"}),
               400, "invalid_request")  # fmt: skip
        assert await a.state() == before


@pytest.mark.trio
async def test_absurd_numbers_are_refused_at_registration(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        for concurrency in ("{group: g, queue-timeout-minutes: 1e29}", "{group: g, max-parallel: 10000000000}",
                            "{group: g, queue-length: 1e400}"):  # fmt: skip
            response = await a.client.put("/v1/pipelines/huge", content=pipeline_yaml(concurrency=concurrency),
                                          headers=YAML)  # fmt: skip
            body = _error(response, 400, "invalid_spec")
            assert body["details"][0]["path"].startswith("$.concurrency."), body
        steps = "[{uses: noop@1, timeout-minutes: 1e29}]"
        _error(await a.client.put("/v1/pipelines/huge", content=pipeline_yaml(steps=steps), headers=YAML),
               400, "invalid_spec")  # fmt: skip
        # The largest accepted value is still formatted fine where the 1e29 one was a 500.
        await a.put_pipeline("year", pipeline_yaml("year", steps="[{id: wait, uses: gate, with: {gate: g}}]",
                                                   concurrency="{group: y, queue-timeout-minutes: 525600}"))  # fmt: skip
        await a.submit("year")
        queued = await a.submit("year")
        assert queued["status"] == "QUEUE"
        assert (await a.client.get("/v1/groups")).status_code == 200
        assert (await a.client.get("/metrics")).status_code == 200
        a.open("g")


@pytest.mark.parametrize("config, where", [
    ({"shutdown-timeout": 1e29}, "$.shutdown-timeout"),
    ({"heartbeat-timeout": 1e300}, "$.heartbeat-timeout"),
    ({"max-queued-builds": 10**30}, "$.max-queued-builds"),
    ({"server": {"max-body-bytes": 10**20}}, "$.server.max-body-bytes"),
    ({"server": {"read-timeout": 1e9}}, "$.server.read-timeout"),
    ({"server": {"max-event-streams": 0}}, "$.server.max-event-streams"),
    ({"pools": [{"name": "p", "nodes": [{"name": "n", "agents": 10**9}]}]}, "$.pools[0].nodes[0].agents"),
    ({"max-agents-per-node": 2, "pools": [{"name": "p", "nodes": [{"name": "n", "agents": 3}]}]},
     "$.pools[0].nodes[0].agents"),
    ({"max-nodes": 1, "pools": [{"name": "p", "nodes": [{"name": "a"}, {"name": "b"}]}]}, "$.pools"),
])  # fmt: skip
def test_config_numbers_have_upper_bounds(config: dict[str, Any], where: str) -> None:
    with pytest.raises(runtime.SpecError) as refused:
        runtime.load_config(config)
    assert [error["path"] for error in refused.value.errors] == [where], refused.value.errors


@pytest.mark.trio
async def test_nodes_and_agents_per_node_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    config = {**CONFIG, "max-nodes": 2, "max-agents-per-node": 4}
    async with api(config) as a:
        before = await a.state()
        body = _error(await a.client.put("/v1/nodes/big", json={"agents": 5}), 400, "invalid_request")
        assert "max-agents-per-node" in body["message"] and body["details"][0]["path"] == "$.agents"
        _error(await a.client.put("/v1/nodes/big", json={"agents": 1024}), 400, "invalid_request")
        assert await a.state() == before
        assert (await a.client.put("/v1/nodes/n2", json={"agents": 4})).status_code == 201
        body = _error(await a.client.put("/v1/nodes/n3", json={}), 409, "conflict")
        assert "max-nodes" in body["message"]
        assert (await a.client.delete("/v1/nodes/n2")).status_code == 200
        assert (await a.client.put("/v1/nodes/n3", json={})).status_code == 201


@pytest.mark.trio
async def test_a_body_that_never_finishes_is_408(autojump_clock: trio.testing.MockClock) -> None:
    config = {**CONFIG, "server": {"read-timeout": 5}}
    async with api(config) as a:
        before = await a.state()
        sent: list[dict[str, Any]] = []
        started = trio.current_time()
        calls = 0

        async def receive() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            if calls == 1:
                return {"type": "http.request", "body": b'{"varia', "more_body": True}
            await trio.sleep_forever()  # 8 bytes of 100,000, then nothing
            raise AssertionError

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/v1/pipelines/app/builds", "query_string": b"",
                 "raw_path": b"/v1/pipelines/app/builds",
                 "headers": [(b"content-type", b"application/json"), (b"content-length", b"100000")]}  # fmt: skip
        await a.rt.asgi_app(scope, receive, send)
        assert trio.current_time() - started == pytest.approx(5)
        assert sent[0]["status"] == 408 and b"request_timeout" in sent[1]["body"]
        assert await a.state() == before


@pytest.mark.trio
async def test_event_streams_are_capped(autojump_clock: trio.testing.MockClock) -> None:
    config = {**CONFIG, "server": {"max-event-streams": 2}}
    async with api(config) as a:
        async with sse(a.rt.asgi_app) as one, sse(a.rt.asgi_app) as two:
            assert await one.start() == 200 and await two.start() == 200
            async with sse(a.rt.asgi_app) as three:
                assert await three.start() == 503
                assert b"max-event-streams" in (await three.body()).encode()
        async with sse(a.rt.asgi_app) as again:  # the slots are given back
            assert await again.start() == 200


@pytest.mark.trio
async def test_many_streams_replaying_the_history_share_its_events(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        for _ in range(3):
            build = await a.submit("app")
        await a.until(build["id"], "SUCCEED")
        log = a.rt.event_log
        async with sse(a.rt.asgi_app, "/v1/events?after=0") as one, sse(a.rt.asgi_app, "/v1/events?after=0") as two:
            await one.start()
            await two.start()
            first = [await one.event() for _ in range(log.last_id)]
            second = [await two.event() for _ in range(log.last_id)]
        assert [e.id for e in first] == [e.id for e in second] == list(range(1, log.last_id + 1))
        kept = log.read(0, log.capacity)
        # One encoding per event, held by the log itself and shared by both streams.
        frames = [k.frame(lambda e: b"") for k in kept]
        assert all(frame.startswith(b"id: ") for frame in frames)
        assert all(k.event is k.event for k in kept)


@pytest.mark.trio
async def test_gated_pipeline_still_runs_with_tokens(autojump_clock: trio.testing.MockClock) -> None:
    async with api(SECURED) as a:
        put = await a.client.put("/v1/pipelines/gated", content=GATED, headers={**YAML, **bearer("admin")})
        assert put.status_code == 201
        build = (await a.client.post("/v1/pipelines/gated/builds", json={}, headers=bearer("writer"))).json()
        a.open("g")
        await a.rt.wait(build["id"])
