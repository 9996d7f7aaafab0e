"""The real server: hypercorn on a free loopback port, driven by httpx; graceful shutdown.

These tests use the wall clock (real sockets), with short ``uses:`` steps
and a deadline on every wait.
"""

from __future__ import annotations

import functools
import gc
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import hypercorn.config
import hypercorn.trio
import msgspec
import pytest
import trio

import runtime
from runtime.config import load_config
from runtime.server import GC_THRESHOLD, collector_tuned, serve

ROOT = Path(__file__).resolve().parents[2]
PIPELINE = """\
version: v3.0
name: loop
jobs:
  build:
    steps:
      - {id: say, uses: echo@1, with: {text: over loopback}}
      - {id: nap, uses: sleep@1, with: {seconds: 0.05}}
"""
SLOW = "version: v3.0\nname: slow\njobs:\n  build:\n    steps: [{id: nap, uses: sleep@1, with: {seconds: 600}}]\n"
CONFIG = {"server": {"bind": "127.0.0.1:0"}, "pools": [{"name": "default", "nodes": [{"name": "n1", "agents": 2}]}]}


@pytest.mark.trio
async def test_serve_on_a_free_port_over_loopback() -> None:
    shutdown = trio.Event()
    lines: list[str] = []
    thresholds = gc.get_threshold()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(serve, load_config(CONFIG), shutdown=shutdown,
                                                          handle_signals=False, out=lines.append))  # fmt: skip
            url = binds[0]
            assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
            assert gc.get_threshold() == (max(thresholds[0], GC_THRESHOLD), *thresholds[1:])
            async with httpx.AsyncClient(base_url=url) as client:
                assert (await client.get("/healthz")).json() == {"status": "ok"}
                created = await client.put("/v1/pipelines/loop", content=PIPELINE,
                                           headers={"content-type": "application/yaml"})  # fmt: skip
                assert created.status_code == 201, created.text
                async with client.stream("GET", "/v1/events", params={"after": 0}) as events:
                    assert events.headers["content-type"].startswith("text/event-stream")
                    build = (await client.post("/v1/pipelines/loop/builds", json={})).json()
                    statuses = []
                    async for line in events.aiter_lines():
                        if line.startswith("data: "):
                            event = msgspec.json.decode(line[6:])
                            if event["kind"] == "build":
                                statuses.append(event["status"])
                                if event["status"] == "SUCCEED":
                                    break
                assert statuses == ["QUEUE", "RUNNING", "SUCCEED"]
                log = await client.get(f"/v1/builds/{build['id']}/logs")
                assert "over loopback" in log.text
                missing = await client.get("/v1/nope")
                assert missing.status_code == 404 and missing.json()["error"] == "not_found"
            shutdown.set()
    assert any("serving on" in line for line in lines)
    assert lines[-1].startswith("stopped: 1 build(s), 1 finished, 0 interrupted")
    assert gc.get_threshold() == thresholds  # put back


def test_collector_tuned_keeps_a_higher_threshold_and_a_disabled_collector() -> None:
    thresholds = gc.get_threshold()
    try:
        gc.set_threshold(100_000, 7, 9)
        with collector_tuned():
            assert gc.get_threshold() == (100_000, 7, 9)
        gc.set_threshold(0, 7, 9)
        with collector_tuned():
            assert gc.get_threshold() == (0, 7, 9)
        gc.set_threshold(500, 7, 9)
        with pytest.raises(RuntimeError):
            with collector_tuned():
                assert gc.get_threshold() == (GC_THRESHOLD, 7, 9)
                raise RuntimeError("out through an error")
        assert gc.get_threshold() == (500, 7, 9)
    finally:
        gc.set_threshold(*thresholds)


@pytest.mark.trio
async def test_embedding_hypercorn_in_your_own_nursery() -> None:
    """What examples/embed_trio.py does: the user's nursery runs the runtime's HTTP door."""
    with trio.fail_after(20):
        async with runtime.open_runtime(CONFIG) as rt:
            config = hypercorn.config.Config()
            config.bind = ["127.0.0.1:0"]
            stop = trio.Event()
            async with trio.open_nursery() as nursery:
                binds = await nursery.start(functools.partial(hypercorn.trio.serve, rt.asgi_app, config,
                                                              shutdown_trigger=stop.wait))  # fmt: skip
                async with httpx.AsyncClient(base_url=binds[0]) as client:
                    await client.put("/v1/pipelines/loop", content=PIPELINE, headers={"content-type": "application/yaml"})
                    build = (await client.post("/v1/pipelines/loop/builds")).json()
                    assert (await rt.wait(build["id"], timeout=10)).status == "SUCCEED"
                    async with client.stream("GET", "/v1/events") as events:
                        assert events.status_code == 200
                        began = trio.current_time()
                        rt.asgi_app.close()  # open streams end now, not after the graceful timeout
                        stop.set()
                        async for _ in events.aiter_bytes():
                            pass
                        assert trio.current_time() - began < config.graceful_timeout
            assert trio.current_time() - began < config.graceful_timeout


# -- `shunter serve` as a process ----------------------------------------------------------------


def _read_until(process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """Read the process's stdout until ``marker`` appears (or fail after ``timeout``)."""
    assert process.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout}s; stdout so far: {seen!r}"
        ready, _, _ = select.select([process.stdout], [], [], left)
        if ready:
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                stderr = process.stderr.read() if process.stderr else b""
                raise AssertionError(f"the server exited early: {seen!r}; stderr: {stderr!r}")
            seen += chunk
    return seen


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_shunter_serve_shuts_down_gracefully(signum: int, tmp_path: Path) -> None:
    config = tmp_path / "shunter.yml"
    pipeline = tmp_path / "slow.yml"
    pipeline.write_text(SLOW)
    config.write_text(f"pools: [{{name: default, nodes: [{{name: n1, agents: 2}}]}}]\npipelines: [{pipeline}]\n"
                      "drain-timeout: 0.5\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "serve", "--config", str(config), "--bind", "127.0.0.1:0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        started = _read_until(process, b"Ctrl-C to stop", timeout=30).decode()
        assert "pipeline 'slow' registered" in started
        url = started.split("serving on ", 1)[1].split()[0]
        with httpx.Client(base_url=url, timeout=10) as client:
            build = client.post("/v1/pipelines/slow/builds").json()
            assert build["status"] in ("QUEUE", "RUNNING")
            process.send_signal(signum)
            stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = started + stdout.decode()
    assert process.returncode == 0, (output, stderr.decode())
    assert f"{signal.Signals(signum).name}: shutting down" in output
    assert f"1 interrupted: {build['id']}" in output
    assert b"Traceback" not in stderr, stderr.decode()



DEPLOY = "version: v3.0\nname: ship\njobs:\n  j:\n    steps: [{id: go, uses: deploy, with: {what: the site}}]\n"


@pytest.mark.trio
async def test_serve_with_plugin_actions_registers_and_runs_a_configured_pipeline_using_them(
        tmp_path: Path) -> None:  # fmt: skip
    """``shunter serve --actions MODULE`` (here ``serve(actions=...)``): the configuration's pipeline
    uses a plugin action, registers at start and runs on the server's own agents."""
    from runtime.agent.plugins import load_actions

    (tmp_path / "ship.yml").write_text(DEPLOY)
    config = load_config({**CONFIG, "pipelines": [str(tmp_path / "ship.yml")]})
    shutdown = trio.Event()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(functools.partial(
                serve, config, shutdown=shutdown, handle_signals=False, out=lambda line: None,
                actions=load_actions(["tests.runtime.remote.plugin_actions"])))  # fmt: skip
            async with httpx.AsyncClient(base_url=binds[0]) as client:
                build = (await client.post("/v1/pipelines/ship/builds", json={})).json()
                while build["status"] not in ("SUCCEED", "FAILED"):
                    await trio.sleep(0.02)
                    build = (await client.get(f"/v1/builds/{build['id']}")).json()
                assert build["status"] == "SUCCEED", build
                log = (await client.get(f"/v1/builds/{build['id']}/logs")).text
                assert "deployed the site from n1" in log
            shutdown.set()


def test_serve_with_a_bad_actions_module_says_so_in_one_line_and_exits_2() -> None:
    done = subprocess.run([sys.executable, "-m", "runtime.cli", "serve", "--ephemeral", "--bind", "127.0.0.1:0",
                           "--actions", "no_such_module_anywhere"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == 2, done
    assert done.stderr.splitlines() == [
        "--actions no_such_module_anywhere: cannot import 'no_such_module_anywhere': ModuleNotFoundError: "
        "No module named 'no_such_module_anywhere'"], done.stderr  # fmt: skip
    assert done.stdout == ""
