"""``PUT /v1/nodes/{name}`` on an existing node changes it; ``DELETE`` answers what it did.

PUT adds a node (201) or changes an existing one's agents and labels (200,
fields left out are kept). DELETE answers 200 when the node is gone at
once, 202 while it drains: it is listed, ``draining: true``, until its jobs
end, and then it is gone (404, not listed). The scheduling side of a change
is covered by tests/scenarios/test_node_update.py.
"""

from __future__ import annotations

import pytest
import trio

from .conftest import GATED, api
from .test_routes import _error


@pytest.mark.trio
async def test_put_changes_an_existing_node(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        grown = await a.client.put("/v1/nodes/n1", json={"agents": 4, "labels": ["linux", "x86"]})
        assert grown.status_code == 200, grown.text
        node = grown.json()
        assert ([x["name"] for x in node["agents"]], node["labels"], node["agents_wanted"]) == (
            ["n1/0", "n1/1", "n1/2", "n1/3"], ["linux", "x86"], 4)
        kept = await a.client.put("/v1/nodes/n1", json={"agents": 2})  # labels left out: kept
        assert kept.status_code == 200 and kept.json()["labels"] == ["linux", "x86"], kept.text
        assert len(kept.json()["agents"]) == 2
        same = await a.client.put("/v1/nodes/n1", json={"pool": "default"})
        assert same.status_code == 200 and len(same.json()["agents"]) == 2
        # JSON has one number type: 3.0 is the integer 3, as the schema's "integer" says.
        integral = await a.client.put("/v1/nodes/n1", content=b'{"agents": 3.0}',
                                      headers={"content-type": "application/json"})  # fmt: skip
        assert integral.status_code == 200 and len(integral.json()["agents"]) == 3, integral.text
        created = await a.client.put("/v1/nodes/n2", content=b'{"agents": 31.0}',
                                     headers={"content-type": "application/json"})  # fmt: skip
        assert created.status_code == 201 and len(created.json()["agents"]) == 31, created.text
        assert (await a.client.get("/v1/stats")).json()["agents"] == 3 + 31


@pytest.mark.trio
async def test_bad_changes_are_refused_and_change_nothing(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        before = await a.state()
        put = a.client.put
        _error(await put("/v1/nodes/n1", json={"pool": "gpu"}), 409, "conflict", "'default'", "gpu")
        _error(await put("/v1/nodes/n1", json={"agents": 2.5}), 400, "invalid_request", "$.agents", "int")
        _error(await put("/v1/nodes/n1", json={"agents": 0}), 400, "invalid_request", "$.agents")
        _error(await put("/v1/nodes/n1", json={"agents": None}), 400, "invalid_request", "$.agents")
        _error(await put("/v1/nodes/n1", json={"labels": "linux"}), 400, "invalid_request", "$.labels")
        _error(await put("/v1/nodes/n1", json={"labels": [1]}), 400, "invalid_request", "$.labels[0]")
        assert await a.state() == before


@pytest.mark.trio
async def test_delete_is_200_when_gone_202_while_draining(autojump_clock: trio.testing.MockClock) -> None:
    async with api({"pools": [{"name": "default", "nodes": [{"name": "n1"}, {"name": "n2"}]}]}) as a:
        await a.put_pipeline("gated", GATED.replace("jobs:\n  build:\n", "jobs:\n  build:\n    runs-on: {node-name: n1}\n"))
        build = await a.submit("gated")
        await a.until(build["id"], "RUNNING")

        idle = await a.client.delete("/v1/nodes/n2")
        assert idle.status_code == 200 and idle.json()["agents"] == [], idle.text
        _error(await a.client.get("/v1/nodes/n2"), 404, "not_found", "n2")

        draining = await a.client.delete("/v1/nodes/n1")
        assert draining.status_code == 202, draining.text
        assert draining.json()["draining"] is True and len(draining.json()["agents"]) == 1
        listed = (await a.client.get("/v1/nodes")).json()
        assert [(n["name"], n["draining"]) for n in listed] == [("n1", True)]
        _error(await a.client.put("/v1/nodes/n1", json={"agents": 2}), 409, "conflict", "draining")

        a.open("g")
        await a.until(build["id"], "SUCCEED")
        with trio.fail_after(5):  # drained: gone, not listed
            while (await a.client.get("/v1/nodes/n1")).status_code != 404:
                await trio.sleep(0.01)
        assert (await a.client.get("/v1/nodes")).json() == []
        _error(await a.client.delete("/v1/nodes/n1"), 404, "not_found", "n1")
        again = await a.client.put("/v1/nodes/n1", json={"agents": 2})
        assert again.status_code == 201 and [x["name"] for x in again.json()["agents"]] == ["n1/0", "n1/1"]
