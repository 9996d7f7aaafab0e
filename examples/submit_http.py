"""Register a pipeline, submit a build over HTTP and follow its server-sent events until it ends.

    python examples/submit_http.py                                   # starts its own server for the demo
    python examples/submit_http.py --url http://127.0.0.1:8000       # talks to `shunter serve`
    python examples/submit_http.py --url http://127.0.0.1:8000 --var DEPLOY_ENV=prod
    python examples/submit_http.py --url http://127.0.0.1:8000 --pipeline examples/pipelines/agent-reuse.yml

The default pipeline is ``examples/pipelines/build-and-deploy.yml``, which
declares the variable ``DEPLOY_ENV``; ``--var`` sets a declared variable
(the server refuses any other). HTTP is the standard library's (urllib):
nothing to install beyond shunter itself.

The event stream is read with ``?build=ID`` (only this build's events) and
``Last-Event-ID``: if the connection drops, it reconnects and the server
replays what was missed. Exits 0 if the build succeeded, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

FINAL = {"SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"}
DEFAULT = Path(__file__).parent / "pipelines" / "build-and-deploy.yml"
READ_TIMEOUT = 60  # seconds without a byte; the server sends a keep-alive comment every 15


def call(url: str, method: str = "GET", body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, Any]:  # fmt: skip
    """One request; returns (status, decoded JSON body). Error statuses are returned, not raised."""
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:  # 4xx and 5xx: shunter's error body says why
        with error:
            return error.code, json.loads(error.read() or b"null")


def follow(url: str, build_id: str) -> str:
    """Print the build's events as they come; return its final status."""
    last_id = 0
    while True:
        query = urllib.parse.urlencode({"build": build_id})
        # Last-Event-ID 0 the first time: everything kept for this build.
        request = urllib.request.Request(f"{url}/v1/events?{query}", headers={"Last-Event-ID": str(last_id)})
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as stream:
                fields: dict[str, str] = {}
                for raw in stream:  # one line at a time, as the server sends them
                    line = raw.decode("utf-8").rstrip("\r\n")
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
        except OSError as error:  # dropped or silent too long: resume where it stopped
            print(f"(the event stream failed: {error})", flush=True)
        print(f"(the event stream ended; resuming after event {last_id})", flush=True)
        time.sleep(0.5)


def show(event: dict[str, Any]) -> None:
    what = {"build": "build", "job": f"  job {event['job_id']}",
            "step": f"    step {event['job_id']}/{event['step_id']}"}.get(event["kind"], event["kind"])  # fmt: skip
    reason = f"  ({event['reason']})" if event.get("reason") and event["status"] != "SUCCEED" else ""
    print(f"[{event['id']:>4}] {what} {event['status']}{reason}", flush=True)


def submit(url: str, pipeline: Path, variables: dict[str, str]) -> int:
    pipeline_id = pipeline.stem
    status, body = call(f"{url}/v1/pipelines/{pipeline_id}", "PUT", pipeline.read_bytes(), "application/yaml")
    if status >= 400:
        print(f"PUT /v1/pipelines/{pipeline_id}: {status} {body}", file=sys.stderr)
        return 1
    print(f"pipeline {pipeline_id}: {'registered' if status == 201 else 'replaced'}")
    for warning in body.get("warnings", []):
        print(f"  warning: {warning['path']}: {warning['message']}")
    status, build = call(f"{url}/v1/pipelines/{pipeline_id}/builds", "POST",
                         json.dumps({"variables": variables}).encode())  # fmt: skip
    if status != 201:
        print(f"submit refused ({status} {build['error']}): {build['message']}", file=sys.stderr)
        return 1
    print(f"build {build['id']} submitted: {build['status']}", flush=True)
    final_status = follow(url, build["id"])
    _, final = call(f"{url}/v1/builds/{build['id']}")
    print(f"build {build['id']} finished {final_status} ({final['queued_at']} → {final['finished_at']})")
    return 0 if final_status == "SUCCEED" else 1


async def demo(pipeline: Path, variables: dict[str, str]) -> int:
    """No --url: serve on a free loopback port in this process, run the client against it, stop."""
    import trio

    from runtime.config import load_config
    from runtime.server import serve

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        config = load_config({"server": {"bind": "127.0.0.1:0"}})

        def out(line: str) -> None:
            print(f"(server) {line}", flush=True)

        binds = await nursery.start(functools.partial(serve, config, shutdown=stop, handle_signals=False, out=out))
        try:
            # The client blocks (urllib): in a thread, while the server runs here.
            return await trio.to_thread.run_sync(submit, binds[0], pipeline, variables)
        finally:
            stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running shunter (default: start one in this process)")
    parser.add_argument("--pipeline", type=Path, default=DEFAULT, help="pipeline YAML (default: %(default)s)")
    parser.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                        help="a value for a variable the pipeline declares (repeatable)")  # fmt: skip
    args = parser.parse_args()
    variables = dict(item.split("=", 1) for item in args.var)
    if args.url:
        return submit(args.url.rstrip("/"), args.pipeline, variables)
    import trio

    return int(trio.run(demo, args.pipeline, variables))


if __name__ == "__main__":
    sys.exit(main())
