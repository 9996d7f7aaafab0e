"""Abuse: issue 14's resource probes against a real server, each beside a quiet baseline of the same run.

    python -m bench abuse [--quick]      (or python -m bench.abuse)

The server is ``shunter serve``'s own code in a child process on loopback
(``server.max-event-streams`` raised to fit the SSE probe,
``server.read-timeout`` 5 s so the slow bodies end within the run); its
memory is its resident set (``VmRSS``). The load clients are other
processes, so their own work is not the server's:

- quiet: 1,000 submits of a one-``noop`` pipeline, 16 connections: submit
  latency p50/p99; ``/healthz`` latency.
- 500 SSE clients (``GET /v1/events?after=0``: each replays the whole kept
  history, then follows), raw sockets in a child process that reads and
  discards: the same 1,000 submits while they are connected, and the server's
  memory growth over the quiet run. Targets: p99 <= 2x quiet, growth <= 100 MB.
- slow bodies: 200 connections that declare 100,000 bytes and send 8:
  ``/healthz`` latency while they hang, and how many got 408 at the read timeout.
- chatty log: a step printing 300,000 lines while the submits run: their
  latency and the server's memory (a step's log is bounded).
- concurrent submits: 2,000 connections opened at once, one submit each:
  how many were refused at the socket (resets; the listen backlog).
"""

from __future__ import annotations

import argparse
import os
import resource
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from ._report import Row, print_table, save
from .http import _load

RUN = "version: v3.0\nname: run\nsteps: [{uses: noop@1}]\n"
CHATTY = "version: v3.0\nname: chatty\nsteps: [{run: 'seq 1 300000'}]\n"
READ_TIMEOUT = 5


# -- child processes ---------------------------------------------------------------------------------


async def _serve(workdir: str) -> None:
    import logging

    from runtime.config import load_config
    from runtime.server import serve

    logging.getLogger("shunter").setLevel(logging.ERROR)
    Path(workdir, "run.yml").write_text(RUN)
    Path(workdir, "chatty.yml").write_text(CHATTY)
    config = load_config({"server": {"bind": "127.0.0.1:0", "max-event-streams": 1000, "read-timeout": READ_TIMEOUT},
                          "pipelines": [f"{workdir}/*.yml"], "max-queued-builds": 1_000_000})  # fmt: skip

    def out(line: str) -> None:
        if "serving on" in line:
            print(f"ready {line.split('serving on ', 1)[1].split()[0]} {os.getpid()}", flush=True)

    await serve(config, out=out)


async def _sse_clients(url: str, count: int) -> None:
    """``count`` event streams that read and discard; 'ready' once all have their answer started."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    started = 0
    all_started = trio.Event()

    async def client() -> None:
        nonlocal started
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"GET /v1/events?after=0 HTTP/1.1\r\nHost: %s\r\n\r\n" % f"{host}:{port}".encode())
        first = await stream.receive_some(65536)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        started += 1
        if started == count:
            all_started.set()
        while await stream.receive_some(65536):
            pass

    with trio.move_on_after(600):  # bounded: it stops by itself
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(client)
            await all_started.wait()
            print("ready", flush=True)
            await trio.sleep_forever()


class _Child:
    """A child process of this module, 'ready ...' on its first line; stopped with SIGINT."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.abuse", *args],
                                        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE)  # fmt: skip
        assert self.process.stdout is not None
        seen = b""
        deadline = time.monotonic() + 120
        while not seen.startswith(b"ready") or b"\n" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"bench.abuse {' '.join(args)} did not start: {seen!r}")
            if select.select([self.process.stdout], [], [], left)[0]:
                seen += os.read(self.process.stdout.fileno(), 4096)
        self.words = seen.split(b"\n", 1)[0].decode().split()[1:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# -- probes -------------------------------------------------------------------------------------------


async def _healthz(url: str, count: int) -> dict[str, float]:
    import httpx

    latencies = []
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(count):
            began = time.perf_counter()
            response = await client.get("/healthz")
            latencies.append(time.perf_counter() - began)
            assert response.status_code == 200
    latencies.sort()
    return {"p50_ms": statistics.median(latencies) * 1e3, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}


async def _slow_bodies(url: str, count: int) -> dict[str, float]:
    """``count`` bodies that never finish; /healthz meanwhile; how many got 408 at the read timeout."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    statuses: list[bytes] = []

    async def slow() -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        await stream.send_all(b"POST /v1/pipelines/run/builds HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: "
                              b"application/json\r\nContent-Length: 100000\r\n\r\n{\"varia" % (host.encode(),
                                                                                            port.encode()))  # fmt: skip
        answer = b""
        with trio.move_on_after(READ_TIMEOUT + 30):
            while b"\r\n" not in answer:
                data = await stream.receive_some(4096)
                if not data:
                    break
                answer += data
        statuses.append(answer[9:12])
        await stream.aclose()

    began = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(slow)
        await trio.sleep(0.5)
        health = await _healthz(url, 50)
    return {**health, "answered_408": statuses.count(b"408"), "seconds": time.perf_counter() - began}


async def _burst(url: str, count: int) -> dict[str, float]:
    """``count`` connections opened at once, one submit each: how many failed at the socket."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    body = b"{}"
    request = (b"POST /v1/pipelines/run/builds HTTP/1.1\r\nHost: %s:%s\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\nConnection: close\r\n\r\n%s") % (host.encode(), port.encode(), len(body), body)  # fmt: skip
    results = {"ok": 0, "refused": 0, "errors": 0}

    async def one() -> None:
        try:
            stream = await trio.open_tcp_stream(host, int(port))
            await stream.send_all(request)
            answer = b""
            while b"\r\n" not in answer:
                data = await stream.receive_some(4096)
                if not data:
                    break
                answer += data
            await stream.aclose()
        except OSError:
            results["errors"] += 1
            return
        results["ok" if answer[9:12] == b"201" else "refused"] += 1

    began = time.perf_counter()
    with trio.move_on_after(120):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    return {**results, "seconds": time.perf_counter() - began}


def _more_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65_536 if hard == resource.RLIM_INFINITY else min(65_536, hard)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def run(quick: bool = False) -> list[Row]:
    _more_files()
    submits, connections = (300 if quick else 1000), 16
    sse_count = 200 if quick else 500
    slow_count = 100 if quick else 200
    burst_count = 1000 if quick else 2000
    path = "/v1/pipelines/run/builds"
    server = _Child("--server")
    url, pid = server.words[0], int(server.words[1])
    facts: dict[str, Any] = {}
    try:
        trio.run(_load, url, path, 200, 30.0, connections)  # warm up (and fill part of the history)
        quiet = trio.run(_load, url, path, submits, 60.0, connections)
        quiet_health = trio.run(_healthz, url, 100)
        rss_quiet = _rss_mb(pid)

        clients = _Child("--sse", url, str(sse_count))
        try:
            time.sleep(3)  # every stream's replay of the kept history is over: what is measured is following
            rss_connected = _rss_mb(pid)
            with_sse = trio.run(_load, url, path, submits, 60.0, connections)
            rss_sse = max(rss_connected, _rss_mb(pid))
        finally:
            clients.stop()

        slow = trio.run(_slow_bodies, url, slow_count)
        chatty_build = trio.run(_submit_chatty, url)
        chatty = trio.run(_load, url, path, submits, 60.0, connections)
        rss_chatty = _rss_mb(pid)
        trio.run(_wait_build, url, chatty_build)
        burst = trio.run(_burst, url, burst_count)
        facts = {"quiet": quiet, "sse": with_sse, "slow": slow, "chatty": chatty, "burst": burst,
                 "rss_mb": {"quiet": rss_quiet, "sse_connected": rss_connected, "sse": rss_sse,
                            "chatty": rss_chatty}}  # fmt: skip
    finally:
        server.stop()
    rows = [
        Row(f"submit p99, {sse_count} SSE clients", with_sse["p99_ms"], "ms", "submit p99, quiet", quiet["p99_ms"],
            "ratio <= 2"),
        Row(f"server RSS growth, {sse_count} SSE", rss_sse - rss_quiet, "MB", "server RSS, quiet", rss_quiet,
            "figure <= 100"),
        Row(f"healthz p99, {slow_count} slow bodies", slow["p99_ms"], "ms", "healthz p99, quiet",
            quiet_health["p99_ms"], "(no target)"),
        Row("slow bodies answered 408", slow["answered_408"], "", "slow bodies", slow_count, "ratio == 1"),
        Row("submit p99, chatty step", chatty["p99_ms"], "ms", "submit p99, quiet", quiet["p99_ms"], "(no target)"),
        Row("server RSS growth, chatty step", rss_chatty - rss_quiet, "MB", "server RSS, quiet", rss_quiet,
            "figure <= 100"),
        Row(f"connection errors, {burst_count} at once", burst["errors"], "", "connections", burst_count,
            "figure == 0"),
    ]  # fmt: skip
    print_table(f"abuse ({submits} submits over {connections} connections per round; server RSS in MB)", rows)
    for name in ("quiet", "sse", "chatty"):
        figures = facts[name]
        print(f"  {name:<8} submits: {figures['ok']:.0f} ok in {figures['seconds']:.2f}s, "
              f"p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms")  # fmt: skip
    print(f"  slow bodies: {slow['answered_408']} of {slow_count} answered 408 after {READ_TIMEOUT}s; healthz p50 "
          f"{slow['p50_ms']:.1f} ms meanwhile (quiet {quiet_health['p50_ms']:.1f} ms)")  # fmt: skip
    print(f"  burst: {burst['ok']} created, {burst['refused']} refused (503/429), {burst['errors']} connection "
          f"errors in {burst['seconds']:.1f}s")  # fmt: skip
    print(f"  server RSS: {facts['rss_mb']}")
    print(f"wrote {save('abuse', rows, facts)}")
    return rows


async def _submit_chatty(url: str) -> str:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        response = await client.post("/v1/pipelines/chatty/builds", json={})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])


async def _wait_build(url: str, build_id: str) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        with trio.move_on_after(120):
            while (await client.get(f"/v1/builds/{build_id}")).json()["status"] in ("QUEUE", "RUNNING"):
                await trio.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer clients and requests")
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sse", nargs=2, metavar=("URL", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server:
        _more_files()
        with tempfile.TemporaryDirectory(prefix="shunter-abuse-") as workdir:
            trio.run(_serve, workdir)
    elif args.sse:
        _more_files()
        trio.run(_sse_clients, args.sse[0], int(args.sse[1]))
    else:
        run(quick=args.quick)


if __name__ == "__main__":
    main()
