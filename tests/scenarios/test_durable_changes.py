"""Durable state (docs/design.md §10) for the changes of issue 11: a deleted pipeline, a changed node, pages of builds.

- A deleted pipeline stays deleted after a restart: not listed, not
  submittable, its builds readable by id; registering it again goes on
  numbering from where it was, so no build id is used twice.
- A node changed by ``update_node`` (agents, labels) comes back changed.
- Pages of builds are in one order across what the pipelines hold and what
  they have left to the store (finished builds past their cache), and a
  page may start after a build only the store still has.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import runtime
import runtime._runtime

NOOP = "name: app\nsteps: [{id: hello, uses: noop@1}]\n"


def settings(state: Path) -> dict[str, Any]:
    return {"state-dir": str(state), "drain-timeout": 0.05,
            "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}  # fmt: skip


@pytest.mark.trio
async def test_a_deleted_pipeline_stays_deleted_and_its_numbers_go_on(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(NOOP, id="app")
        submitted = await rt.wait((await rt.submit("app")).id, timeout=10)
        await rt.retry(submitted.id)  # queued again: queued_at moves, created_at does not
        first = await rt.wait(submitted.id, timeout=10)
        assert first.created_at == submitted.created_at != first.queued_at
        await rt.delete_pipeline("app")
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        assert await rt.pipelines() == [] and not rt.has_pipeline("app")
        with pytest.raises(runtime.NotFound):
            await rt.submit("app")
        assert await rt.build(first.id) == first  # still readable by id
        assert await rt.builds() == []
        await rt.register_pipeline(NOOP, id="app")
        second = await rt.wait((await rt.submit("app")).id, timeout=10)
        assert second.id == "app.2"
    async with runtime.open_runtime(settings(tmp_path)) as rt:  # registered again: live after a restart too
        assert [p.id for p in await rt.pipelines()] == ["app"]
        assert [b.id for b in await rt.builds("app")] == ["app.2", "app.1"]


@pytest.mark.trio
async def test_a_changed_node_comes_back_changed(tmp_path: Path) -> None:
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.add_node("extra", agents=1, labels=["linux"])
        await rt.update_node("extra", agents=3, labels=["gpu"])
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        node = next(n for n in await rt.nodes() if n.name == "extra")
        assert (len(node.agents), node.labels) == (3, ["gpu"])


@pytest.mark.trio
async def test_pages_read_past_the_pipelines_cache_in_one_order(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setattr(runtime._runtime, "FINISHED_CACHE", 3)  # pipelines keep 3 finished builds, the store all
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(NOOP, id="app")
        ids = [(await rt.wait((await rt.submit("app")).id, timeout=10)).id for _ in range(8)]
        newest_first = ids[::-1]
        assert [b.id for b in await rt.builds()] == newest_first
        pages, before = [], None
        while True:
            page = [b.id for b in await rt.builds(limit=3, before=before)]
            if not page:
                break
            pages.append(page)
            before = page[-1]
        assert pages == [newest_first[:3], newest_first[3:6], newest_first[6:]]
        assert [b.id for b in await rt.builds(limit=2, before=ids[2])] == [ids[1], ids[0]]  # held by the store only


@pytest.mark.trio
async def test_paging_reaches_every_stored_build_past_what_one_unbounded_listing_reads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listing without a limit reads back STORE_LISTING finished builds from the store; pages with
    ``before`` go on below them, in the store's query, to the very first build (and no further)."""
    monkeypatch.setattr(runtime._runtime, "FINISHED_CACHE", 2)
    monkeypatch.setattr(runtime._runtime, "STORE_LISTING", 3)
    async with runtime.open_runtime(settings(tmp_path)) as rt:
        await rt.register_pipeline(NOOP, id="app")
        await rt.register_pipeline(NOOP.replace("name: app", "name: other"), id="other")
        ids = []
        for number in range(12):  # two pipelines interleaved: the order is by creation, across pipelines
            ids.append((await rt.wait((await rt.submit("app" if number % 3 else "other")).id, timeout=10)).id)
        newest_first = ids[::-1]
        assert len(await rt.builds()) < len(ids)  # the unbounded listing stops at STORE_LISTING from the store
        seen, before = [], None
        while page := [b.id for b in await rt.builds(limit=4, before=before)]:
            assert len(page) == 4 or len(seen) + len(page) == len(ids)  # full pages until the last
            seen.extend(page)
            before = page[-1]
        assert seen == newest_first
        app_only = [b.id for b in await rt.builds("app", limit=100, before=ids[7])]
        assert app_only == [i for i in newest_first if i.startswith("app.") and ids.index(i) < 7]
