"""``GET /v1/builds`` a page at a time: newest first, ``limit`` and ``before``, ``Link: rel="next"``.

The body stays a JSON list (as before pagination); the next page is in the
``Link`` header, and the last build of a page is the ``before`` of the next.
Following the links visits every build once, in order, whatever the
filters; a retry does not move a build (the order is the time submitted).
"""

from __future__ import annotations

import re
import httpx
import pytest
import trio

from .conftest import FAILING, api, pipeline_yaml
from .test_routes import _error


def _next(response: httpx.Response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


async def _walk(client: httpx.AsyncClient, url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url is not None:
        response = await client.get(next_url)
        assert response.status_code == 200, response.text
        pages.append([build["id"] for build in response.json()])
        next_url = _next(response)
    return pages


@pytest.mark.trio
async def test_pages_walk_every_build_newest_first(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        await a.put_pipeline("failing", FAILING)
        a.open("f")
        order: list[str] = []
        for index in range(7):
            build = await a.submit("app" if index % 3 else "failing")
            order.append(build["id"])
            await a.until(build["id"], "SUCCEED", "FAILED")
            await trio.sleep(1)  # submitted one second apart
        newest_first = order[::-1]
        everything = await a.client.get("/v1/builds")
        assert [b["id"] for b in everything.json()] == newest_first and _next(everything) is None
        assert everything.json()[0]["created_at"] > everything.json()[-1]["created_at"]

        pages = await _walk(a.client, "/v1/builds?limit=3")
        assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
        first = await a.client.get("/v1/builds?limit=3")
        assert _next(first) == f"/v1/builds?limit=3&before={newest_first[2]}"
        assert await _walk(a.client, f"/v1/builds?before={order[3]}") == [order[:3][::-1]]
        assert await _walk(a.client, "/v1/builds?limit=7") == [newest_first]  # exactly full: no next page

        # Filters stay in the links.
        apps = [build_id for build_id in newest_first if build_id.startswith("app.")]
        assert await _walk(a.client, "/v1/builds?pipeline=app&limit=2") == [apps[:2], apps[2:]]
        failed = [build_id for build_id in newest_first if build_id.startswith("failing.")]
        assert sum(await _walk(a.client, "/v1/builds?status=FAILED&limit=1"), []) == failed

        # A retry makes an old build run again; it keeps its place.
        retried = await a.client.post(f"/v1/builds/{order[0]}/retry")
        assert retried.status_code == 202, retried.text
        await a.until(order[0], "FAILED")
        assert [b["id"] for b in (await a.client.get("/v1/builds")).json()] == newest_first

        # The Python API pages the same way.
        page = await a.rt.builds(limit=2, before=order[4])
        assert [b.id for b in page] == [order[3], order[2]]


@pytest.mark.trio
async def test_the_default_page_is_100_builds(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        for _ in range(101):
            await a.submit("app")
        response = await a.client.get("/v1/builds")
        assert len(response.json()) == 100 and response.json()[0]["id"] == "app.101"
        assert _next(response) == "/v1/builds?limit=100&before=app.2"
        assert [b["id"] for b in (await a.client.get(_next(response) or "")).json()] == ["app.1"]


@pytest.mark.trio
@pytest.mark.parametrize(("query", "where", "words"), [
    ("limit=0", "query.limit", ["from 1 to 1000"]),
    ("limit=1001", "query.limit", ["from 1 to 1000"]),
    ("limit=ten", "query.limit", ["integer"]),
    ("limit=", "query.limit", ["integer"]),
    ("limit=2.5", "query.limit", ["integer"]),
    ("before=nope", "query.before", ["must match"]),
    ("before=", "query.before", ["must match"]),
    ("status=", "query.status", ["one of"]),
])  # fmt: skip
async def test_bad_page_parameters_are_400_naming_them(autojump_clock: trio.testing.MockClock, query: str,
                                                      where: str, words: list[str]) -> None:  # fmt: skip
    async with api() as a:
        _error(await a.client.get(f"/v1/builds?{query}"), 400, "invalid_request", where, *words)


@pytest.mark.trio
async def test_paging_from_an_unknown_build_is_404(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        await a.put_pipeline("app", pipeline_yaml())
        _error(await a.client.get("/v1/builds?before=app.7"), 404, "not_found", "app.7")
        _error(await a.client.get("/v1/builds?before=nope.1"), 404, "not_found", "nope.1")
