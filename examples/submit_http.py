"""Register a pipeline, submit a build over HTTP and follow its server-sent events until it ends.

    python examples/submit_http.py                                   # starts its own server for the demo
    python examples/submit_http.py --url http://127.0.0.1:8000       # talks to `shunter serve`
    python examples/submit_http.py --pipeline examples/pipelines/step-retry.yml --var DEPLOY_ENV=prod

The event stream is read with ``?build=ID`` (only this build's events) and
``Last-Event-ID``: if the connection drops, it reconnects and the server
replays what was missed. Exits 0 if the build succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import trio

FINAL = {"SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"}
DEFAULT = Path(__file__).parent / "pipelines" / "build-and-deploy.yml"


async def follow(http: httpx.AsyncClient, build_id: str) -> str:
    """Print the build's events as they come; return its final status."""
    last_id = 0
    while True:
        headers = {"Last-Event-ID": str(last_id)}  # 0 the first time: everything kept for this build
        async with http.stream("GET", "/v1/events", params={"build": build_id}, headers=headers,
                               timeout=httpx.Timeout(10, read=60)) as stream:  # fmt: skip
            fields: dict[str, str] = {}
            async for line in stream.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.strip()
                    continue
                if "data" in fields:  # a blank line ends an event (comment-only blocks have no data)
                    event = json.loads(fields["data"])
                    last_id = event["id"]
                    show(event)
                    if event["kind"] == "build" and event["status"] in FINAL:
                        return str(event["status"])
                fields = {}
        print(f"(the event stream ended; resuming after event {last_id})", flush=True)
        await trio.sleep(0.5)


def show(event: dict[str, Any]) -> None:
    what = {"build": "build", "job": f"  job {event['job_id']}",
            "step": f"    step {event['job_id']}/{event['step_id']}"}.get(event["kind"], event["kind"])  # fmt: skip
    reason = f"  ({event['reason']})" if event.get("reason") and event["status"] != "SUCCEED" else ""
    print(f"[{event['id']:>4}] {what} {event['status']}{reason}", flush=True)


async def submit(url: str, pipeline: Path, variables: dict[str, str]) -> int:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        pipeline_id = pipeline.stem
        registered = await http.put(f"/v1/pipelines/{pipeline_id}", content=pipeline.read_bytes(),
                                    headers={"content-type": "application/yaml"})  # fmt: skip
        if registered.status_code >= 400:
            print(f"PUT /v1/pipelines/{pipeline_id}: {registered.status_code} {registered.text}", file=sys.stderr)
            return 1
        print(f"pipeline {pipeline_id}: {'registered' if registered.status_code == 201 else 'replaced'}")
        submitted = await http.post(f"/v1/pipelines/{pipeline_id}/builds", json={"variables": variables})
        if submitted.status_code != 201:
            error = submitted.json()
            print(f"submit refused ({submitted.status_code} {error['error']}): {error['message']}", file=sys.stderr)
            return 1
        build = submitted.json()
        print(f"build {build['id']} submitted: {build['status']}", flush=True)
        status = await follow(http, build["id"])
        final = (await http.get(f"/v1/builds/{build['id']}")).json()
        print(f"build {build['id']} finished {status} ({final['queued_at']} → {final['finished_at']})")
        return 0 if status == "SUCCEED" else 1


async def demo(pipeline: Path, variables: dict[str, str]) -> int:
    """No --url: serve on a free loopback port in this process, run the client against it, stop."""
    from runtime.config import load_config
    from runtime.server import serve

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        config = load_config({"server": {"bind": "127.0.0.1:0"}})
        def out(line: str) -> None:
            print(f"(server) {line}", flush=True)

        binds = await nursery.start(functools.partial(serve, config, shutdown=stop, handle_signals=False, out=out))
        try:
            return await submit(binds[0], pipeline, variables)
        finally:
            stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running shunter (default: start one in this process)")
    parser.add_argument("--pipeline", type=Path, default=DEFAULT, help="pipeline YAML (default: %(default)s)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    variables = dict(item.split("=", 1) for item in args.var)
    if args.url:
        return trio.run(submit, args.url.rstrip("/"), args.pipeline, variables)
    return trio.run(demo, args.pipeline, variables)


if __name__ == "__main__":
    sys.exit(main())
