"""``DELETE /v1/pipelines/{id}`` and ``rt.delete_pipeline``: what a CI user expects of deleting a pipeline.

- an idle pipeline goes (200): not listed, not gettable, not submittable
  (404); its finished builds stay readable by id (build, logs) but are not
  listed and cannot be retried;
- one with queued or running builds is refused (409 ``conflict`` naming
  them) and nothing changes, unless ``?cancel=true``: they are cancelled and
  named in the answer;
- registering the id again revives it: its old builds are listed again and
  numbering goes on, so no build id is ever used twice;
- a delete and a register of one id at once: the second is refused.

A build still on its way to its group counts as unfinished: see
tests/actors/builds/test_pipeline_retire.py.
"""

from __future__ import annotations

import pytest
import trio

import runtime

from .conftest import GATED, api, pipeline_yaml
from .test_routes import _error

GROUPED = GATED.replace("jobs:", "concurrency: {group: g, max-parallel: 1, queue-length: 5}\njobs:")


@pytest.mark.trio
async def test_deleting_an_idle_pipeline_keeps_its_builds_readable(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        await a.put_pipeline("other", pipeline_yaml("other"))
        first = await a.submit("app")
        await a.until(first["id"], "SUCCEED")
        other = await a.submit("other")

        response = await a.client.delete("/v1/pipelines/app")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": "app", "cancelled": []}
        _error(await a.client.get("/v1/pipelines/app"), 404, "not_found", "app")
        assert [p["id"] for p in (await a.client.get("/v1/pipelines")).json()] == ["other"]
        _error(await a.client.post("/v1/pipelines/app/builds"), 404, "not_found", "app")
        _error(await a.client.get("/v1/builds?pipeline=app"), 404, "not_found", "app")
        assert [b["id"] for b in (await a.client.get("/v1/builds")).json()] == [other["id"]]
        # Links to its builds still work; retrying one needs the pipeline back.
        build = await a.client.get(f"/v1/builds/{first['id']}")
        assert build.status_code == 200 and build.json()["status"] == "SUCCEED"
        assert "hi" in (await a.client.get(f"/v1/builds/{first['id']}/logs")).text
        _error(await a.client.post(f"/v1/builds/{first['id']}/retry"), 409, "not_retryable", "deleted")
        _error(await a.client.delete("/v1/pipelines/app"), 404, "not_found", "app")  # already gone
        with pytest.raises(runtime.NotFound):
            await a.rt.submit("app")

        again = await a.client.put("/v1/pipelines/app", content=pipeline_yaml(), headers={"content-type": "application/yaml"})
        assert again.status_code == 201, again.text  # created again, as far as a client can tell
        second = await a.submit("app")
        assert (second["id"], second["number"]) == ("app.2", 2), "a build id is never used twice"
        listed = [b["id"] for b in (await a.client.get("/v1/builds?pipeline=app")).json()]
        assert listed == ["app.2", "app.1"]
        await a.until(second["id"], "SUCCEED")


@pytest.mark.trio
async def test_unfinished_builds_refuse_the_delete_unless_cancel(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("gated", GROUPED)
        running = await a.submit("gated")
        queued = await a.submit("gated")
        await a.until(running["id"], "RUNNING")
        before = await a.state()
        body = _error(await a.client.delete("/v1/pipelines/gated"), 409, "conflict", running["id"], queued["id"],
                      "cancel=true")  # fmt: skip
        assert body["details"] == [{"build_id": running["id"]}, {"build_id": queued["id"]}]
        _error(await a.client.delete("/v1/pipelines/gated?cancel=yes"), 400, "invalid_request", "query.cancel")
        _error(await a.client.delete("/v1/pipelines/gated?cancel="), 400, "invalid_request", "query.cancel")
        _error(await a.client.delete("/v1/pipelines/gated?cancel=false"), 409, "conflict")
        assert await a.state() == before

        response = await a.client.delete("/v1/pipelines/gated?cancel=true")
        assert response.status_code == 200, response.text
        assert response.json() == {"id": "gated", "cancelled": [running["id"], queued["id"]]}
        for build in (running, queued):
            done = await a.until(build["id"], "CANCELED")
            assert "deleted" in done["reason"], done
        stats = (await a.client.get("/v1/stats")).json()
        assert (stats["jobs_running"], stats["slots_held"], stats["agents_busy"], stats["builds_queued"]) == (0,) * 4
        for group in (await a.client.get("/v1/groups")).json():
            assert group["running"] == [] and group["queue"] == [], group


@pytest.mark.trio
async def test_delete_and_register_at_once_leave_one_clear_state(autojump_clock: trio.testing.MockClock) -> None:
    """A delete and a register of the same id at the same time: the second to
    reach the pipeline is refused (409), so the listing always says what the
    actor is."""
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.rt.delete_pipeline, "app")
            await _in_flight(a.rt, "app")
            try:  # it checks the nodes first: by then the delete may be over, and this revives it
                await a.rt.register_pipeline(pipeline_yaml(), id="app")
                registered = True
            except runtime.Conflict as refused:
                assert "being deleted or registered" in str(refused)
                registered = False
        assert a.rt.has_pipeline("app") is registered
        if registered:
            await a.rt.delete_pipeline("app")
        with pytest.raises(runtime.NotFound):
            await a.rt.submit("app")
        async with trio.open_nursery() as nursery:  # reviving it
            nursery.start_soon(lambda: a.rt.register_pipeline(pipeline_yaml(), id="app"))
            await _in_flight(a.rt, "app")
            with pytest.raises(runtime.Conflict, match="being deleted or registered"):
                await a.rt.delete_pipeline("app")
        assert a.rt.has_pipeline("app")
        assert (await a.submit("app"))["id"] == "app.1"


async def _in_flight(rt: runtime.Runtime, pipeline_id: str) -> None:
    """Until the other task's change has been sent to the actor and awaits its answer."""
    with trio.fail_after(5):
        while pipeline_id not in rt._changing:  # the one state that says so; a sleep(0) may not be enough
            await trio.sleep(0)
