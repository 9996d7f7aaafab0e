"""``GET /v1/builds/{id}/logs?follow=true`` and ``GET /v1/jobs/waiting`` through the ASGI app.

The follow answer is read with the in-process streaming client of
conftest.py (``sse``), which sees every piece the app sends.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from runtime.http import follow

from .conftest import Api, api, pipeline_yaml, sse

TALK = pipeline_yaml("talk", steps="[{id: talk, uses: talk, with: {say: 'one,@a,two,@b,three'}}, {id: after, uses: noop}]")


def with_talk(a: Api) -> None:
    async def talk(step: Any) -> None:
        for item in str(step.with_["say"]).split(","):
            if item.startswith("@"):
                await a.gate(item[1:]).wait()
            else:
                step.log(item)

    a.rt.register_action("talk", talk)


async def settle() -> None:
    await trio.sleep(1)  # virtual: the agents run until they wait on a gate


@pytest.mark.trio
async def test_follow_streams_the_step_as_it_writes_and_ends_with_it(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        await settle()
        async with sse(a.rt.asgi_app, f"/v1/builds/{build['id']}/logs?job=build&step=talk&follow=true") as reader:
            assert await reader.start() == 200
            assert reader.headers["content-type"] == "text/plain; charset=utf-8"
            assert "content-length" not in reader.headers  # sent in pieces
            await reader._more()
            assert reader.buffer == "=== build / talk attempt 1 ===\none\n"
            a.open("a")
            await reader._more()
            assert reader.buffer.endswith("one\ntwo\n") and not reader.ended
            a.open("b")
            rest = await reader.body()
            assert rest.endswith("three\n=== build / talk attempt 1 ended: SUCCEED ===\n") and reader.ended
        assert a.rt.asgi_app.log_followers == 0
        await a.until(build["id"], "SUCCEED")


@pytest.mark.trio
async def test_follow_of_what_has_ended_is_the_whole_plain_log(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        a.open("a")
        a.open("b")
        await a.until(build["id"], "SUCCEED")
        for query in ("", "&job=build", "&job=build&step=talk", "&step=after"):
            plain = await a.client.get(f"/v1/builds/{build['id']}/logs?{query}")
            followed = await a.client.get(f"/v1/builds/{build['id']}/logs?follow=true{query}")
            assert followed.status_code == 200 and followed.text == plain.text
        whole = (await a.client.get(f"/v1/builds/{build['id']}/logs")).text
        assert "=== build / talk attempt 1 (SUCCEED) ===\none\ntwo\nthree\n" in whole
        # follow=false is the plain answer
        assert (await a.client.get(f"/v1/builds/{build['id']}/logs?follow=false")).text == whole


@pytest.mark.trio
async def test_follow_refuses_bad_input_before_streaming(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        cases = [(f"/v1/builds/{build['id']}/logs?follow=maybe", 400, "query.follow"),
                 (f"/v1/builds/{build['id']}/logs?follow=true&job=nope", 404, "nope"),
                 (f"/v1/builds/{build['id']}/logs?follow=true&step=nope", 404, "nope"),
                 ("/v1/builds/talk.9/logs?follow=true", 404, "talk.9")]  # fmt: skip
        for target, status, words in cases:
            response = await a.client.get(target)
            assert response.status_code == status, (target, response.text)
            assert response.headers["content-type"] == "application/json" and words in response.json()["message"]
        assert a.rt.asgi_app.log_followers == 0


@pytest.mark.trio
async def test_a_follower_that_stops_reading_is_disconnected(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        await settle()
        stuck = trio.Event()  # never set while the stream runs: the client reads nothing after the start
        app = a.rt.asgi_app
        async with sse(app, f"/v1/builds/{build['id']}/logs?step=talk&follow=true", send_gate=stuck) as reader:
            assert await reader.start() == 200
            await reader._more()  # the first piece
            assert app.log_followers == 1
            a.open("a")  # a second piece the client never takes
            began = trio.current_time()
            while app.log_followers:
                await trio.sleep(1)
            assert trio.current_time() - began >= follow.SEND_TIMEOUT
        assert app.log_followers == 0


@pytest.mark.trio
async def test_a_client_that_leaves_ends_its_follower(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        app = a.rt.asgi_app
        async with sse(app, f"/v1/builds/{build['id']}/logs?step=talk&follow=true") as reader:
            assert await reader.start() == 200
            await settle()
            assert app.log_followers == 1
        await settle()
        assert app.log_followers == 0


@pytest.mark.trio
async def test_followers_are_capped(autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(follow, "MAX_FOLLOWERS", 1)
    async with api() as a:
        with_talk(a)
        await a.put_pipeline("talk", TALK)
        build = await a.submit("talk")
        target = f"/v1/builds/{build['id']}/logs?step=talk&follow=true"
        async with sse(a.rt.asgi_app, target) as first:
            assert await first.start() == 200
            await settle()
            refused = await a.client.get(target)
            assert refused.status_code == 503 and refused.json()["error"] == "overloaded"
            assert refused.headers["retry-after"]


# -- GET /v1/jobs/waiting ---------------------------------------------------------------------------


@pytest.mark.trio
async def test_waiting_jobs_say_where_they_stand_and_why(autojump_clock: trio.testing.MockClock) -> None:
    limited = ("version: v3.0\nname: limited\njobs:\n  build:\n    runs-on: {pool-name: default, "
               "concurrency-limit-total: 1, queue-timeout-minutes: 5}\n"
               "    steps: [{id: wait, uses: gate, with: {gate: g}}]\n")  # fmt: skip
    mutexed = ("version: v3.0\nname: mutexed\njobs:\n  deploy:\n    mutex: {label: prod, timeout-minutes: 7}\n"
               "    steps: [{id: wait, uses: gate, with: {gate: m}}]\n")  # fmt: skip
    nowhere = pipeline_yaml("nowhere").replace("  build:\n", "  build:\n    runs-on: {labels: [gpu]}\n")
    async with api() as a:
        for name, text in (("limited", limited), ("mutexed", mutexed), ("nowhere", nowhere)):
            await a.put_pipeline(name, text)
        running = [await a.submit("limited") for _ in range(3)]
        held = [await a.submit("mutexed") for _ in range(2)]
        stray = await a.submit("nowhere")
        await settle()
        waiting = (await a.client.get("/v1/jobs/waiting")).json()
        by_build = {w["build_id"]: w for w in waiting}
        assert set(by_build) == {running[1]["id"], running[2]["id"], held[1]["id"], stray["id"]}
        second, third = by_build[running[1]["id"]], by_build[running[2]["id"]]
        assert (second["pool"], second["job_id"], second["position"], second["blocked_by"]) == \
            ("default", "build", 1, "total")  # fmt: skip
        assert third["position"] == 2 and "concurrency-limit-total 1" in third["reason"]
        assert second["deadline"] > second["since"] and second["deadline"].endswith("Z")
        mutex = by_build[held[1]["id"]]
        assert (mutex["blocked_by"], mutex["position"]) == ("mutex", 1) and "prod" in mutex["reason"]
        assert by_build[stray["id"]]["blocked_by"] == "no-node" and "gpu" in by_build[stray["id"]]["reason"]
        only = (await a.client.get(f"/v1/jobs/waiting?build={running[2]['id']}")).json()
        assert [w["build_id"] for w in only] == [running[2]["id"]]
        assert (await a.client.get("/v1/jobs/waiting?pool=elsewhere")).json() == []
        a.open("g")
        a.open("m")
        for build in running + held:
            await a.until(build["id"], "SUCCEED")
        assert [w["build_id"] for w in (await a.client.get("/v1/jobs/waiting")).json()] == [stray["id"]]
