"""The agent protocol under /v1/agent/ (docs/design.md §11), spoken in-process on the MockClock.

The test plays the ``shunter agent`` process: it registers, leases, reports
and falls silent exactly when it wants, so heartbeats, fencing and rejoining
are checked to the virtual second. Real processes: tests/runtime/remote/.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from .conftest import Api, api

CONFIG = {"heartbeat-interval": 1, "heartbeat-timeout": 5,
          "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 1}]}]}  # fmt: skip
PINNED = """
version: v3.0
name: remote
jobs:
  j:
    runs-on: {node-name: m1}
    steps:
      - {id: one, run: echo one}
      - {id: two, uses: noop@1}
"""


async def _register(a: Api, name: str = "m1", agents: int = 1, **extra: Any) -> dict[str, Any]:
    response = await a.client.post("/v1/agent/register", json={"name": name, "agents": agents, **extra})
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _lease(a: Api, session: dict[str, Any], wait: float = 25, **body: Any) -> dict[str, Any]:
    response = await a.client.post("/v1/agent/lease", json={"node": session["node"], "session": session["session"],
                                                             "wait": wait, **body})  # fmt: skip
    assert response.status_code == 200, response.text
    return dict(response.json())


def _done(token: dict[str, Any], time: float = 1.0) -> dict[str, Any]:
    """A whole successful run of PINNED's job, as an agent reports it."""
    return {"token": token, "records": [
        {"type": "started", "context": {}, "time": time},
        {"type": "step_start", "index": 0, "time": time},
        {"type": "log", "index": 0, "lines": ["one"]},
        {"type": "step_end", "index": 0, "status": "SUCCEED", "reason": None, "exit_code": 0, "outputs": {},
         "exported_env": {}, "time": time},
        {"type": "step_start", "index": 1, "time": time},
        {"type": "step_end", "index": 1, "status": "SUCCEED", "reason": None, "exit_code": None, "outputs": {},
         "exported_env": {}, "time": time},
        {"type": "ended", "status": "SUCCEED", "reason": None, "time": time}]}  # fmt: skip


async def _node(a: Api, name: str) -> dict[str, Any]:
    node: dict[str, Any] = (await a.client.get(f"/v1/nodes/{name}")).json()
    return node


@pytest.mark.trio
async def test_register_lease_report_runs_a_job_and_shows_the_node(autojump_clock: trio.testing.MockClock) -> None:
    async with api(CONFIG) as a:
        session = await _register(a, labels=["linux"])
        assert session["agents"] == ["m1/0"] and session["lease_wait"] == 1 and session["heartbeat_timeout"] == 5
        node = await _node(a, "m1")
        assert (node["kind"], node["connected"], node["labels"]) == ("remote", True, ["linux"])
        assert (await _node(a, "n1"))["kind"] == "local"
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        reply = await _lease(a, session)
        [job] = reply["jobs"]
        assert job["agent"] == 0 and job["token"]["build_id"] == build["id"] and job["token"]["attempt"] == 1
        assert [step["id"] for step in job["payload"]["job"]["steps"]] == ["one", "two"]
        assert (await _lease(a, session, reports=[_done(job["token"])]))["jobs"] == []
        done = await a.until(build["id"], "SUCCEED", "FAILED")
        assert done["status"] == "SUCCEED" and done["stages"][0]["jobs"][0]["agent"] == "m1/0"
        assert "one" in (await a.client.get(f"/v1/builds/{build['id']}/logs")).text
        stats = (await a.client.get("/v1/stats")).json()
        assert (stats["jobs_running"], stats["slots_held"], stats["agents_busy"]) == (0, 0, 0)


@pytest.mark.trio
async def test_a_parked_lease_returns_with_the_job_as_soon_as_there_is_one(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        replies: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            async def poll() -> None:
                replies.append(await _lease(a, session, wait=25))

            start = trio.current_time()
            nursery.start_soon(poll)
            await trio.sleep(0.5)
            await a.submit("remote")
        assert len(replies[0]["jobs"]) == 1 and trio.current_time() - start < 1
        start = trio.current_time()
        assert await _lease(a, session, wait=25, running=[replies[0]["jobs"][0]["token"]]) == {
            "jobs": [], "cancel": [], "stale": [], "draining": False}
        assert trio.current_time() - start == pytest.approx(1)  # held for lease_wait, the heartbeat interval


@pytest.mark.trio
async def test_a_silent_agent_is_lost_fenced_off_and_rejoins(autojump_clock: trio.testing.MockClock) -> None:
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        silent_from = trio.current_time()
        done = await a.until(build["id"], "FAILED", "SUCCEED")  # the agent says nothing more
        attempt = done["stages"][0]["jobs"][0]["attempts"][0]
        assert attempt["status"] == "HEARTBEAT_TIMEOUT" and "heartbeat-timeout 5s" in attempt["reason"]
        assert 5 < trio.current_time() - silent_from <= 5 + 2  # past the timeout, within a check
        node = await _node(a, "m1")
        assert node["connected"] is False and node["agents"] == []
        # the late report is refused and changes nothing in the build
        before = (await a.client.get(f"/v1/builds/{build['id']}")).json()
        response = await a.client.post("/v1/agent/report", json={**{k: session[k] for k in ("node", "session")},
                                                                  "reports": [_done(job["token"])]})  # fmt: skip
        assert response.status_code == 409 and response.json()["error"] == "stale_attempt"
        assert response.json()["details"] == [job["token"]]
        assert (await a.client.get(f"/v1/builds/{build['id']}")).json() == before
        assert (await a.client.get("/v1/stats")).json()["slots_held"] == 0
        # the same session comes back: its old attempt is stale, the node rejoins, new work flows
        reply = await _lease(a, session, running=[job["token"]])
        assert reply["stale"] == [job["token"]]
        node = await _node(a, "m1")
        assert node["connected"] is True and [agent["name"] for agent in node["agents"]] == ["m1/0"]
        changes = [(event.status, event.data.get("agents", event.data.get("agent"))) for event in await a.rt.events()
                   if event.kind == "node" and event.node == "m1"]  # fmt: skip
        assert changes == [("ADDED", []), ("CONNECTED", ["m1/0"]), ("AGENT_LOST", "m1/0"), ("DISCONNECTED", None),
                           ("CONNECTED", ["m1/0"])], changes  # fmt: skip
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        await _lease(a, session, reports=[_done(job["token"])])
        assert (await a.until(build["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"


@pytest.mark.trio
async def test_cancel_reaches_the_agent_through_its_lease(autojump_clock: trio.testing.MockClock) -> None:
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        assert (await a.client.post(f"/v1/builds/{build['id']}/cancel")).status_code == 202
        reply = await _lease(a, session, running=[job["token"]])
        assert reply["cancel"] == [{"token": job["token"], "reason": "cancelled by a user"}]
        ended = {"token": job["token"], "records": [{"type": "ended", "status": "CANCELED",
                                                     "reason": "cancelled by a user", "time": 1.0}]}  # fmt: skip
        await _lease(a, session, reports=[ended])
        assert (await a.until(build["id"], "CANCELED"))["status"] == "CANCELED"
        assert (await a.client.get("/v1/stats")).json()["agents_busy"] == 0


@pytest.mark.trio
async def test_registering_again_ends_the_old_sessions_attempts(autojump_clock: trio.testing.MockClock) -> None:
    async with api(CONFIG) as a:
        old = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, old))["jobs"]
        new = await _register(a)  # the process restarted
        assert new["session"] != old["session"]
        done = await a.until(build["id"], "FAILED")
        assert done["stages"][0]["jobs"][0]["attempts"][0]["status"] == "HEARTBEAT_TIMEOUT"
        response = await a.client.post("/v1/agent/lease", json={"node": "m1", "session": old["session"], "wait": 0})
        assert response.status_code == 404 and response.json()["error"] == "unknown_session"
        assert (await _node(a, "m1"))["connected"] is True


@pytest.mark.trio
async def test_bad_agent_requests_get_a_clear_4xx_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with api(CONFIG) as a:
        session = await _register(a)
        before = await a.state()
        cases: list[tuple[str, Any, int, str]] = [
            ("/v1/agent/register", {"name": "n1"}, 409, "local node"),
            ("/v1/agent/register", {"name": "m1", "pool": "other"}, 409, "pool 'default'"),
            ("/v1/agent/register", {"name": "m1", "agents": 0}, 400, "$.agents"),
            ("/v1/agent/register", {"name": "bad/name"}, 400, "$.name"),
            ("/v1/agent/register", None, 400, "Register body is required"),
            ("/v1/agent/lease", {"node": "m1", "session": "nope"}, 404, "register again"),
            ("/v1/agent/lease", {"node": "zz", "session": "nope"}, 404, "no remote node 'zz'"),
            ("/v1/agent/lease", {"node": "m1", "session": session["session"], "wait": 26}, 400, "$.wait"),
            ("/v1/agent/report", {"node": "m1", "session": session["session"], "reports": [{"token": 1}]}, 400,
             "$.reports[0].token"),
            ("/v1/agent/leave", {"node": "m1"}, 400, "session"),
        ]  # fmt: skip
        for path, body, status, says in cases:
            response = await a.client.post(path, content=b"" if body is None else None,
                                           json=body)  # fmt: skip
            assert response.status_code == status, (path, body, response.text)
            assert says in response.json()["message"], (path, body, response.json())
        assert await a.state() == before


@pytest.mark.trio
async def test_a_remote_node_deleted_on_the_server_is_told_to_drain(autojump_clock: trio.testing.MockClock) -> None:
    """DELETE /v1/nodes/m1 while its job runs: the lease says ``draining`` (the agent then
    exits instead of registering again); the job finishes; the node goes; the session ends."""
    async with api(CONFIG) as a:
        session = await _register(a)
        await a.put_pipeline("remote", PINNED)
        build = await a.submit("remote")
        [job] = (await _lease(a, session))["jobs"]
        assert (await a.client.delete("/v1/nodes/m1")).json()["draining"] is True
        assert (await _lease(a, session, running=[job["token"]]))["draining"] is True
        await _lease(a, session, reports=[_done(job["token"])])
        assert (await a.until(build["id"], "SUCCEED"))["status"] == "SUCCEED"
        assert (await a.client.get("/v1/nodes/m1")).status_code == 404
        response = await a.client.post("/v1/agent/lease", json={"node": "m1", "session": session["session"]})
        assert response.status_code == 404 and response.json()["error"] == "unknown_session"


@pytest.mark.trio
async def test_an_attempt_lost_before_it_started_is_retried_when_retry_times_allows(
        autojump_clock: trio.testing.MockClock) -> None:  # fmt: skip
    """The agent took the attempt and died before saying it started: nothing ran, so
    the job runs again (the first step's retry-times is the budget), here on the
    restarted agent; without retry-times it ends HEARTBEAT_TIMEOUT."""
    async with api(CONFIG) as a:
        old = await _register(a)
        await a.put_pipeline("retried", PINNED.replace("name: remote", "name: retried").replace(
            "{id: one, run: echo one}", "{id: one, run: echo one, retry-times: 1}"))  # fmt: skip
        await a.put_pipeline("remote", PINNED)
        retried = await a.submit("retried")
        [first] = (await _lease(a, old))["jobs"]
        new = await _register(a)  # restarted before it reported anything
        [second] = (await _lease(a, new))["jobs"]
        assert second["token"]["attempt"] == 2 and second["payload"]["start_step"] == 0
        await _lease(a, new, reports=[_done(second["token"])])
        done = await a.until(retried["id"], "SUCCEED", "FAILED")
        assert [(t["status"], t["retry_of"]) for t in done["stages"][0]["jobs"][0]["attempts"]] == [
            ("HEARTBEAT_TIMEOUT", None), ("SUCCEED", 1)]
        plain = await a.submit("remote")
        await _lease(a, new)
        await _register(a)
        assert (await a.until(plain["id"], "FAILED", "SUCCEED"))["stages"][0]["jobs"][0]["status"] == \
            "HEARTBEAT_TIMEOUT"


@pytest.mark.trio
async def test_agents_authenticate_with_an_agent_token(autojump_clock: trio.testing.MockClock) -> None:
    """With tokens, /v1/agent/ wants one; an ``agent`` token reaches those routes and no others."""
    token = "agent-token-0123456789abcdef"
    config = {**CONFIG, "auth": {"tokens": [{"name": "builders", "token": token, "role": "agent"}]}}
    async with api(config) as a:
        body = {"name": "m1"}
        assert (await a.client.post("/v1/agent/register", json=body)).status_code == 401
        headers = {"authorization": f"Bearer {token}"}
        response = await a.client.post("/v1/agent/register", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert (await a.client.get("/v1/builds", headers=headers)).status_code == 403


WIDE = """
version: v3.0
name: wide
jobs:
""" + "".join(f"  j{index}: {{runs-on: {{node-name: m1}}, steps: [{{id: one, run: echo one}}, {{id: two, uses: noop@1}}]}}\n"
              for index in range(4))  # fmt: skip


@pytest.mark.trio
async def test_jobs_granted_together_leave_in_one_lease_answer(autojump_clock: trio.testing.MockClock) -> None:
    """A node of 2 agents, 4 jobs: a parked lease is answered with both agents' jobs, and the lease that
    brings both results back is answered with the next two (about half a lease per job, not one)."""
    async with api(CONFIG) as a:
        session = await _register(a, agents=2)
        await a.put_pipeline("wide", WIDE)
        replies: list[dict[str, Any]] = []
        async with trio.open_nursery() as nursery:
            async def poll() -> None:
                replies.append(await _lease(a, session, wait=25))

            nursery.start_soon(poll)
            await trio.sleep(0.5)
            build = await a.submit("wide")
        first = replies[0]["jobs"]
        assert len(first) == 2, replies
        second = (await _lease(a, session, wait=25, running=[job["token"] for job in first],
                               reports=[_done(job["token"]) for job in first]))["jobs"]  # fmt: skip
        assert len(second) == 2 and {job["token"]["job_id"] for job in first + second} == {"j0", "j1", "j2", "j3"}
        await _lease(a, session, wait=0, running=[job["token"] for job in second],
                     reports=[_done(job["token"]) for job in second])  # fmt: skip
        assert (await a.until(build["id"], "SUCCEED", "FAILED"))["status"] == "SUCCEED"
