"""The same service as embed_trio.py, under asyncio: shunter runs on anyio, served by hypercorn.asyncio.

    python examples/embed_asyncio.py               # demo: serve, run a build, read it over HTTP, stop
    python examples/embed_asyncio.py --serve       # keep serving on 127.0.0.1:8000 until Ctrl-C

``hypercorn.asyncio.serve`` does not report the address it listens on, so
the socket is bound here first (which also makes port 0 usable) and
handed to hypercorn as ``fd://N``.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import urllib.request
from pathlib import Path

import anyio
import hypercorn.asyncio
import hypercorn.config

import runtime

PIPELINE = Path(__file__).parent / "pipelines" / "build-and-deploy.yml"


def listen(bind: str) -> tuple[str, str]:
    """Bind ``HOST:PORT`` now; returns hypercorn's ``fd://`` bind and the URL to reach it."""
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), int(port)), family=family)
    address = sock.getsockname()
    return f"fd://{sock.detach()}", f"http://{bind.rpartition(':')[0]}:{address[1]}"


def get_json(url: str) -> object:
    """A blocking HTTP GET (run in a thread): any HTTP client can talk to the API."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def report(rt: runtime.Runtime, every: float, scope: anyio.CancelScope) -> None:
    """The service's own work: here, print the scheduler's counters now and then."""
    with scope:
        while True:
            stats = await rt.stats()
            print(f"[reporter] running={stats.builds_running} agents busy={stats.agents_busy}/{stats.agents}",
                  flush=True)  # fmt: skip
            await anyio.sleep(every)


async def stop_on_signal(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("shutting down", flush=True)
            stop.set()
            return


async def main(bind: str, serve_forever: bool) -> None:
    config = hypercorn.config.Config()
    fd_bind, url = listen(bind)
    config.bind = [fd_bind]
    stop = anyio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        rt.asgi_app.close()  # open event streams end now, not after hypercorn's graceful timeout

    async with runtime.open_runtime() as rt:
        pipeline = await rt.register_pipeline(PIPELINE)
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: hypercorn.asyncio.serve(rt.asgi_app, config, shutdown_trigger=shutdown_trigger))
            print(f"shunter API on {url} (try {url}/v1/pipelines)", flush=True)
            reporter = anyio.CancelScope()
            group.start_soon(report, rt, 0.5 if not serve_forever else 30, reporter)
            if serve_forever:
                await stop_on_signal(stop)
            else:
                build = await rt.submit(pipeline.id, {"DEPLOY_ENV": "demo"})
                build = await rt.wait(build.id, timeout=60)
                over_http = await anyio.to_thread.run_sync(get_json, f"{url}/v1/builds/{build.id}")
                status = over_http["status"]  # type: ignore[index]
                print(f"build {build.id}: {build.status}; over HTTP: {status}", flush=True)
                stop.set()
            reporter.cancel()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C instead of the short demo")
    parser.add_argument("--bind", help="HOST:PORT (default 127.0.0.1:8000 with --serve, a free port otherwise)")
    args = parser.parse_args()
    anyio.run(main, args.bind or ("127.0.0.1:8000" if args.serve else "127.0.0.1:0"), args.serve, backend="asyncio")
