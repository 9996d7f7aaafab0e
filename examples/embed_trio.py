"""A trio service with shunter inside it: the runtime and its HTTP API in the service's own nursery.

    python examples/embed_trio.py                  # demo: serve, run a build, read it over HTTP, stop
    python examples/embed_trio.py --serve          # keep serving on 127.0.0.1:8000 until Ctrl-C

The service owns the task group: hypercorn serves ``rt.asgi_app`` next to
the service's own tasks (here a reporter printing the runtime's counters),
and one shutdown event stops them all in order.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import urllib.request
from pathlib import Path

import hypercorn.config
import hypercorn.trio
import trio

import runtime

PIPELINE = Path(__file__).parent / "pipelines" / "build-and-deploy.yml"


async def report(rt: runtime.Runtime, every: float, scope: trio.CancelScope) -> None:
    """The service's own work: here, print the scheduler's counters now and then."""
    with scope:
        while True:
            stats = await rt.stats()
            print(f"[reporter] running={stats.builds_running} queued={stats.builds_queued} "
                  f"agents busy={stats.agents_busy}/{stats.agents}", flush=True)  # fmt: skip
            await trio.sleep(every)


def get_json(url: str) -> object:
    """A blocking HTTP GET (run in a thread): any HTTP client can talk to the API."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


async def stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            print("shutting down", flush=True)
            stop.set()
            return


async def main(bind: str, serve_forever: bool) -> None:
    config = hypercorn.config.Config()
    config.bind = [bind]
    stop = trio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        rt.asgi_app.close()  # open event streams end now, not after hypercorn's graceful timeout

    async with runtime.open_runtime() as rt:  # the default pool: one local node
        pipeline = await rt.register_pipeline(PIPELINE)
        async with trio.open_nursery() as nursery:
            serving = functools.partial(hypercorn.trio.serve, rt.asgi_app, config, shutdown_trigger=shutdown_trigger)
            url = (await nursery.start(serving))[0]
            print(f"shunter API on {url} (try {url}/v1/pipelines)", flush=True)
            reporter = trio.CancelScope()
            nursery.start_soon(report, rt, 0.5 if not serve_forever else 30, reporter)
            if serve_forever:
                await stop_on_signal(stop)
            else:
                build = await rt.submit(pipeline.id, {"DEPLOY_ENV": "demo"})
                build = await rt.wait(build.id, timeout=60)
                over_http = await trio.to_thread.run_sync(get_json, f"{url}/v1/builds/{build.id}")
                status = over_http["status"]  # type: ignore[index]
                print(f"build {build.id}: {build.status}; over HTTP: {status}", flush=True)
                stop.set()
            await stop.wait()
            reporter.cancel()  # hypercorn stops by itself: it finishes the requests in flight first
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", action="store_true", help="serve until Ctrl-C instead of the short demo")
    parser.add_argument("--bind", help="HOST:PORT (default 127.0.0.1:8000 with --serve, a free port otherwise)")
    args = parser.parse_args()
    trio.run(main, args.bind or ("127.0.0.1:8000" if args.serve else "127.0.0.1:0"), args.serve)
