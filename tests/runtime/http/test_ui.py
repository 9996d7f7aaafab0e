"""The dashboard's files: served at fixed paths with their types and a strict CSP, shipped as package data.

What the page does is tested in a real browser (tests/runtime/test_dashboard_browser.py).
"""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from runtime.http import ui

from .conftest import CONFIG, api

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.trio
async def test_the_page_and_its_files_are_served(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        page = await a.client.get("/")
        assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>shunter</title>" in page.text
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
        assert page.headers["x-content-type-options"] == "nosniff"
        for path, kind in (("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css"),
                           ("/ui/icon.svg", "image/svg+xml")):  # fmt: skip
            response = await a.client.get(path)
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind), path
            assert response.content == ui.asset(ui.FILES[path][0])
        # Every file the page refers to is served; nothing else under /ui is.
        for ref in re.findall(r'(?:src|href)="(ui/[^"]+)"', page.text):
            assert (await a.client.get("/" + ref)).status_code == 200, ref
        missing = await a.client.get("/ui/../../pyproject.toml")
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"
        assert (await a.client.get("/ui/app.js.map")).status_code == 404
        head = await a.client.head("/")
        assert head.status_code == 200 and head.content == b""
        refused = await a.client.post("/")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"


@pytest.mark.trio
async def test_with_tokens_the_page_loads_without_one_and_its_data_needs_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A browser cannot send a token when it opens a page: the files are open, the API is not."""
    token = "read-token-0123456789"
    secured = {**CONFIG, "auth": {"tokens": [{"name": "reader", "role": "read", "token": token}]}}
    async with api(secured) as a:
        for path in ui.FILES:
            assert (await a.client.get(path)).status_code == 200, path
        for path in ("/v1/stats", "/v1/jobs/waiting", "/v1/builds/app.1/logs?follow=true"):
            assert (await a.client.get(path)).status_code == 401, path
            answered = await a.client.get(path, headers={"authorization": f"Bearer {token}"})
            assert answered.status_code in (200, 404), path  # past the door: no build app.1
    paths = document_paths()
    for path in ui.FILES:
        assert paths[path]["get"]["security"] == [{}], path  # the document says so too
    assert "security" not in paths["/v1/stats"]["get"]


def document_paths() -> dict[str, Any]:
    from runtime.http.openapi import build_document
    from runtime.http.routes import ROUTES

    return dict(build_document(ROUTES)["paths"])


@pytest.mark.trio
async def test_the_openapi_document_lists_the_new_routes(autojump_clock: trio.testing.MockClock) -> None:
    async with api() as a:
        paths = (await a.client.get("/openapi.json")).json()["paths"]
    assert paths["/"]["get"]["responses"]["200"]["content"].keys() == {"text/html; charset=utf-8"}
    assert {"/ui/app.js", "/ui/style.css", "/ui/icon.svg"} <= paths.keys()
    waiting = paths["/v1/jobs/waiting"]["get"]
    assert {p["name"] for p in waiting["parameters"]} == {"build", "pool"}
    logs = paths["/v1/builds/{id}/logs"]["get"]
    assert {"name": "follow", "in": "query", "required": False, "schema": {"type": "boolean"},
            "description": logs["parameters"][-1]["description"]} in logs["parameters"]  # fmt: skip


def test_every_dashboard_file_is_package_data() -> None:
    """A wheel holds what pyproject's package-data names: every file of the page must match it."""
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    globs = patterns["runtime.http"]
    files = [entry.name for entry in resources.files("runtime.http").joinpath("dashboard").iterdir()]
    assert sorted(files) == sorted(name for name, _, _ in ui.FILES.values())
    for name in files:
        assert any(fnmatch(f"dashboard/{name}", glob) for glob in globs), name
