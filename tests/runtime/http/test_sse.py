"""``GET /v1/events``: the stream's format, resuming, heartbeats, filters, and its ends."""

from __future__ import annotations

import msgspec
import pytest
import trio

from runtime.http import sse as sse_module

from .conftest import GATED, SSEEvent, SSEReader, api, pipeline_yaml, sse


async def _events_until_finished(reader: SSEReader, build_id: str) -> list[SSEEvent]:
    seen = []
    while True:
        event = await reader.event()
        seen.append(event)
        if event.event == "build" and event.data["build_id"] == build_id and event.data["status"] == "SUCCEED":
            return seen


@pytest.mark.trio
async def test_events_stream_every_change_with_ids(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        async with sse(a.rt.asgi_app) as reader:
            assert await reader.start() == 200
            assert reader.headers["content-type"].startswith("text/event-stream")
            assert reader.headers["cache-control"] == "no-cache"
            build = await a.submit("app")
            seen = await _events_until_finished(reader, build["id"])
        ids = [event.id or 0 for event in seen]
        assert all(event.id is not None for event in seen)
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        assert all(event.event == event.data["kind"] and event.id == event.data["id"] for event in seen)
        kinds = [(e.event, e.data["status"]) for e in seen]
        assert kinds[:2] == [("build", "QUEUE"), ("build", "RUNNING")]
        assert ("job", "RUNNING") in kinds and ("step", "SUCCEED") in kinds


@pytest.mark.trio
@pytest.mark.parametrize("how", ["header", "query"])
async def test_resume_after_an_event_id(autojump_clock: trio.testing.MockClock, how: str) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        build = await a.submit("app")
        await a.until(build["id"], "SUCCEED")
        history = await a.rt.events()
        middle = history[len(history) // 2].id
        headers = [("Last-Event-ID", str(middle))] if how == "header" else []
        target = "/v1/events" if how == "header" else f"/v1/events?after={middle}"
        async with sse(a.rt.asgi_app, target, headers) as reader:
            await reader.start()
            replayed = [await reader.event() for _ in range(len(history) - len([e for e in history if e.id <= middle]))]
            assert [e.id for e in replayed] == [e.id for e in history if e.id > middle]
            live = await a.submit("app")  # then live events follow
            event = await reader.event()
            assert event.id == history[-1].id + 1 and event.data["build_id"] == live["id"]


@pytest.mark.trio
async def test_heartbeat_comment_every_15_seconds(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        async with sse(a.rt.asgi_app) as reader:
            await reader.start()
            started = trio.current_time()
            await reader.comment("keep-alive")
            assert trio.current_time() - started >= sse_module.HEARTBEAT


@pytest.mark.trio
async def test_filters_by_build_and_kind(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        first = await a.submit("app")
        await a.until(first["id"], "SUCCEED")
        async with sse(a.rt.asgi_app, "/v1/events?after=0&kind=build&build=app.2") as reader:
            await reader.start()
            second = await a.submit("app")
            seen = await _events_until_finished(reader, second["id"])
        assert {(e.event, e.data["build_id"]) for e in seen} == {("build", "app.2")}


@pytest.mark.trio
async def test_group_and_node_events_are_streamed_and_filtered(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("lane", pipeline_yaml("lane", concurrency="{group: lane, max-parallel: 1}"))
        async with sse(a.rt.asgi_app, "/v1/events?after=0&kind=group") as groups, \
                sse(a.rt.asgi_app, "/v1/events?after=0&kind=node") as nodes:  # fmt: skip
            assert (await groups.start(), await nodes.start()) == (200, 200)
            build = await a.submit("lane")
            await a.until(build["id"], "SUCCEED")
            assert (await a.client.put("/v1/nodes/n9", json={"agents": 1})).status_code == 201
            admitted, released = await groups.event(), await groups.event()
            added_n1, added_n9 = await nodes.event(), await nodes.event()
    assert (admitted.event, admitted.data["status"], admitted.data["group"], admitted.data["build_id"]) == (
        "group", "ADMITTED", "lane", build["id"])
    assert (released.data["status"], released.data["data"]) == ("RELEASED", {"running": 0, "queued": 0})
    assert [(e.event, e.data["status"], e.data["node"]) for e in (added_n1, added_n9)] == [
        ("node", "ADDED", "n1"), ("node", "ADDED", "n9")]
    assert added_n9.data["data"] == {"pool": "default", "agents": ["n9/0"], "labels": [], "kind": "local"}
    assert added_n1.id is not None and admitted.id is not None and added_n1.id < admitted.id < added_n9.id


@pytest.mark.trio
@pytest.mark.parametrize("target, headers, where", [
    ("/v1/events?after=-1", [], "query.after"),
    ("/v1/events", [("Last-Event-ID", "abc")], "header.Last-Event-ID"),
    ("/v1/events?kind=stage", [], "query.kind"),
    ("/v1/events?kind=", [], "query.kind"),  # present but empty is not "every kind"
    ("/v1/events?kind=BUILD", [], "query.kind"),
    ("/v1/events?after=", [], "query.after"),
    ("/v1/events?after=9007199254740992", [], "query.after"),  # past the documented maximum (2**53 - 1)
    # ?after= wins, but a bad Last-Event-ID is refused all the same, as the document says it must be valid.
    ("/v1/events?after=0", [("Last-Event-ID", "-1")], "header.Last-Event-ID"),
])  # fmt: skip
async def test_bad_parameters_are_400_before_streaming(autojump_clock: trio.testing.MockClock, target: str,
                                                       headers: list[tuple[str, str]], where: str) -> None:  # fmt: skip
    async with api() as a:
        async with sse(a.rt.asgi_app, target, headers) as reader:
            assert await reader.start() == 400
            body = msgspec.json.decode(await reader.body())
        assert body["error"] == "invalid_request" and body["details"][0]["path"] == where, body
        if where == "query.kind":
            assert "build, job, step, group, node" in body["message"], body


@pytest.mark.trio
async def test_close_ends_open_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        async with sse(a.rt.asgi_app) as reader:
            await reader.start()
            await reader.comment("shunter events")
            a.rt.asgi_app.close()
            assert await reader.rest() == []
            assert reader.ended
        async with sse(a.rt.asgi_app) as later:  # a stream opened after close ends at once
            assert await later.start() == 200
            await later.rest()
            assert later.ended


@pytest.mark.trio
async def test_a_client_that_stops_reading_is_dropped(autojump_clock: trio.testing.MockClock,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(sse_module, "BUFFER", 5)
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        stalled = trio.Event()
        async with sse(a.rt.asgi_app, send_gate=stalled) as reader:
            await reader.start()
            for _ in range(5):  # far more than 5 events while the client reads nothing
                build = await a.submit("app")
            await a.until(build["id"], "SUCCEED")
            assert (await a.client.get("/v1/stats")).json()["builds_running"] == 0  # the runtime did not wait
            stalled.set()
            await reader.rest()
            assert reader.ended
            assert any("stream ended" in comment for comment in reader.comments)


@pytest.mark.trio
async def test_disconnect_ends_the_stream_and_unsubscribes(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("gated", GATED)
        app = a.rt.asgi_app
        async with sse(app) as reader:
            await reader.start()
            await reader.comment("shunter events")
            assert app.sse_clients == 1
        assert app.sse_clients == 0
        build = await a.submit("gated")  # publishing to nobody is fine
        a.open("g")
        await a.until(build["id"], "SUCCEED")


@pytest.mark.trio
async def test_head_answers_headers_only(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        async with sse(a.rt.asgi_app, method="HEAD") as reader:
            assert await reader.start() == 200
            await reader.rest()
            assert reader.ended
