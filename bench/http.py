"""HTTP benchmark: build submissions per second through hypercorn on loopback.

    python -m bench.http [--quick] [--client wrk|httpx]

The server is `shunter serve`'s own code (``runtime.server.serve``) in a
child process. The load client is ``wrk`` (Debian's package: ``apt-get
install -y wrk``), a compiled load generator with a Lua script that POSTs
``{"variables": {}}`` over 16 keep-alive connections from one thread, so
that the client is not the bottleneck: the server's one core is. Without
``wrk`` the client is httpx in this process (said so in the output); httpx
costs as much CPU per request as the server, so its figures say little.

The baseline is a hello-world ASGI app answering the same POST with a small
JSON body, in a child process set up exactly like the shunter server
(``runtime.server.hypercorn_config`` and ``collector_tuned``), measured
by the same client in the same run, the loads taking turns: the ratio is
the share of the HTTP stack's throughput that shunter keeps while it
admits and runs every build.

Figures:
- submit+run: ``POST /v1/pipelines/run/builds``, a one-``noop``-step
  pipeline without a group: each build is admitted and runs on the
  default pool's agents (one node of 8, as in ``bench.dispatch``) while
  the load goes on. The figure is builds that reached ``SUCCEED`` per
  second, from the first request to the end of the last build; every
  round checks the server's own account (``GET /v1/stats``, builds by
  status, once requests still in flight have been taken): every 201 is
  a build and every build submitted ended ``SUCCEED`` (the run fails
  otherwise).
- submit into a queue: a group with ``max-parallel: 1`` held by a long
  first build and a queue long enough for every submission: admission
  through the group actor only. The round checks that every 201 is a
  queued build, then deletes the pipeline (cancelling them) and
  registers it again for the next round.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx
import trio

from ._report import Row, print_table, save

RUN = "version: v3.0\nname: run\nsteps: [{uses: noop@1}]\n"
QUEUE = ("version: v3.0\nname: queue\nconcurrency: {group: q, max-parallel: 1, queue-length: 1000000}\n"
         "steps: [{uses: sleep@1, with: {seconds: 3600}}]\n")  # fmt: skip
POOLS = [{"name": "default", "nodes": [{"name": "n1", "agents": 8}]}]
BODY = b'{"variables": {}}'
CONNECTIONS = 16

# wrk's Lua script: the POST, and a JSON line of the figures at the end (durations are in µs).
WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = '{"variables": {}}'
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %d, "micros": %d, "status_errors": %d, "socket_errors": %d, ' ..
    '"p50_ms": %.3f, "p99_ms": %.3f}\\n', summary.requests, summary.duration, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


# -- the servers (child processes) ------------------------------------------------------------------


async def _hello(scope: Any, receive: Any, send: Any) -> None:
    """The baseline: reads the body, answers 201 with a small JSON document."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    while (await receive()).get("more_body"):
        pass
    body = b'{"hello":"world"}'
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


async def _serve_hello() -> None:
    from runtime.config import load_config
    from runtime.server import collector_tuned, hypercorn_config

    stop = trio.Event()
    settings = hypercorn_config(load_config({"server": {"bind": "127.0.0.1:0"}}))
    with collector_tuned():  # as serve() does
        await _serve_app(settings, stop)


async def _serve_app(settings: Any, stop: trio.Event) -> None:
    import hypercorn.trio

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, stop)
        binds = await nursery.start(functools.partial(hypercorn.trio.serve, _hello, settings,
                                                      shutdown_trigger=stop.wait))  # fmt: skip
        print(f"ready {binds[0]}", flush=True)
        await stop.wait()
        nursery.cancel_scope.cancel()


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _serve_shunter(workdir: str) -> None:
    import logging

    from runtime.config import load_config
    from runtime.server import serve

    logging.getLogger("shunter").setLevel(logging.ERROR)  # not the list of queued builds cancelled at the end

    Path(workdir, "run.yml").write_text(RUN)
    Path(workdir, "queue.yml").write_text(QUEUE)
    # The node layout of the dispatch scenario (one node of 8 agents), not as many agents as this machine
    # has cores: the figure then adds the HTTP door to what `dispatch` measures, on any machine.
    config = load_config({"server": {"bind": "127.0.0.1:0"}, "pipelines": [f"{workdir}/*.yml"], "pools": POOLS,
                          "max-queued-builds": 1_000_000})  # the queued load's rounds stay under it

    def out(line: str) -> None:
        if "serving on" in line:
            print(f"ready {line.split('serving on ', 1)[1].split()[0]}", flush=True)

    await serve(config, out=out)


# -- the load clients ---------------------------------------------------------------------------------


def wrk_path() -> str | None:
    """Where ``wrk`` is (None if it is not installed)."""
    return shutil.which("wrk")


def _wrk_load(url: str, path: str, seconds: float, connections: int = CONNECTIONS) -> dict[str, float]:
    """``wrk`` POSTing for ``seconds`` (whole seconds) on ``connections`` connections from one thread."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="shunter-wrk-") as script:
        script.write(WRK_SCRIPT)
        script.flush()
        wrk = wrk_path()
        assert wrk is not None
        command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
                   "-s", script.name, url + path]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"wrk printed no figures: {done.stdout!r} {done.stderr!r}")
    figures = json.loads(lines[-1])
    elapsed = figures["micros"] / 1e6
    ok = figures["requests"] - figures["status_errors"]
    return {"per_second": ok / elapsed, "ok": ok, "refused": figures["status_errors"],
            "socket_errors": figures["socket_errors"], "seconds": elapsed,
            "p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"]}  # fmt: skip


async def _load(url: str, path: str, count: int, seconds: float, connections: int) -> dict[str, float]:
    """The httpx client (the fallback without ``wrk``; ``bench.remote`` and ``bench.abuse`` use it too)."""
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        headers = {"content-type": "application/json"}
        warm_up = 0
        for _ in range(connections * 2):  # open the connections and warm up
            warm_up += (await client.post(path, content=BODY, headers=headers)).status_code == 201
        issued = ok = refused = 0
        latencies: list[float] = []
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal issued, ok, refused
            while issued < count and time.perf_counter() < deadline:
                issued += 1
                began = time.perf_counter()
                response = await client.post(path, content=BODY, headers=headers)
                latencies.append(time.perf_counter() - began)
                if response.status_code == 201:
                    ok += 1
                else:
                    refused += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"per_second": ok / elapsed, "ok": ok, "refused": refused, "seconds": elapsed, "warm_up": warm_up,
            "p50_ms": statistics.median(latencies) * 1e3, "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3}


# -- the server's own account ------------------------------------------------------------------------


def _call(url: str, method: str = "GET", body: bytes | None = None, media: str = "application/json") -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": media})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def _totals(url: str) -> tuple[int, int, int]:
    """From ``GET /v1/stats``: builds ever taken (every status counted), builds that ended ``SUCCEED``,
    builds queued or running."""
    stats = _call(f"{url}/v1/stats")
    by_status = stats["builds_by_status"]
    return sum(by_status.values()), int(by_status.get("SUCCEED", 0)), stats["builds_running"] + stats["builds_queued"]


def _settle(url: str, what: str, *, idle: bool) -> tuple[tuple[int, int, int], float]:
    """The totals once the server has taken every request still in flight when the client stopped (two
    reads 20 ms apart agree) and, with ``idle``, every build has ended; and when they first read so."""
    deadline = time.perf_counter() + 120
    last, since = (-1, -1, -1), 0.0
    while True:
        read = time.perf_counter()
        totals = _totals(url)
        if totals == last and (not idle or totals[2] == 0):
            return totals, since
        if read > deadline:
            raise RuntimeError(f"{what}: the server has not settled 120 s after the load: {_call(f'{url}/v1/stats')}")
        if totals != last:
            last, since = totals, read
        time.sleep(0.02 if totals[2] == 0 or not idle else 0.002)


def _check_taken(figures: dict[str, float], taken: int, what: str, connections: int) -> None:
    """Every 201 the client counted (its warm-up's too) is a build the server took; it may have taken up
    to one more per connection (requests in flight when the client stopped, whose answers it did not count)."""
    answered = figures["ok"] + figures.get("warm_up", 0)
    if not answered <= taken <= answered + connections:
        raise RuntimeError(f"{what}: the client counted {answered:.0f} builds accepted (201), "
                           f"the server took {taken}")  # fmt: skip


def _submit_and_run(measure: Any, server: _Server, connections: int) -> dict[str, float]:
    """The submit+run load, then wait for every build it submitted to end: builds/s first request to last end.

    The server's CPU time per build counts the end of the last builds too.
    """
    url = server.url
    (taken, succeeded, _), _ = _settle(url, "submit+run", idle=True)
    cpu = server.cpu_seconds()
    figures = measure(url, "/v1/pipelines/run/builds")
    answered = time.perf_counter()
    (total, ended, _), settled = _settle(url, "submit+run", idle=True)
    cpu = server.cpu_seconds() - cpu
    taken, succeeded = total - taken, ended - succeeded
    _check_taken(figures, taken, "submit+run", connections)
    if succeeded != taken:
        raise RuntimeError(f"submit+run: {taken} builds submitted, {succeeded} ended SUCCEED")
    drain = max(0.0, settled - answered)  # from the client's end to the last build's
    return {**figures, "per_second": taken / (figures["seconds"] + drain), "submitted": taken,
            "drain_seconds": drain, "cpu_us": cpu * 1e6 / max(taken, 1)}  # fmt: skip


def _submit_into_queue(measure: Any, server: _Server, connections: int) -> dict[str, float]:
    """The queued load; then its builds are cancelled (the pipeline deleted and registered again)."""
    url = server.url
    (before, _, _), _ = _settle(url, "submit into a queue", idle=False)
    cpu = server.cpu_seconds()
    figures = measure(url, "/v1/pipelines/queue/builds")
    cpu = server.cpu_seconds() - cpu
    (after, _, _), _ = _settle(url, "submit into a queue", idle=False)
    taken = after - before
    _check_taken(figures, taken, "submit into a queue", connections)
    _call(f"{url}/v1/pipelines/queue?cancel=true", "DELETE")
    _settle(url, "submit into a queue (cancelled)", idle=True)
    _call(f"{url}/v1/pipelines/queue", "PUT", QUEUE.encode(), "application/yaml")
    return {**figures, "queued": taken, "cpu_us": cpu * 1e6 / max(taken, 1)}


def cpu_seconds(pid: int) -> float:
    """CPU time process ``pid`` has used so far (user + system; 0 where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _Server:
    """A server child process (``--server NAME``), stopped with SIGINT."""

    def __init__(self, name: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "bench.http", "--server", name],
                                        cwd=Path(__file__).resolve().parents[1], stdout=subprocess.PIPE)  # fmt: skip
        self.url = self._ready()

    def _ready(self) -> str:
        assert self.process.stdout is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"\n" not in seen or not seen.startswith(b"ready "):
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                raise RuntimeError(f"the benchmark server did not start: {seen!r}")
            if select.select([self.process.stdout], [], [], left)[0]:
                seen += os.read(self.process.stdout.fileno(), 4096)
        return seen.split()[1].decode()

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (user + system; 0 where /proc is missing)."""
        return cpu_seconds(self.process.pid)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run(quick: bool = False, client: str | None = None) -> list[Row]:
    """Both servers stay up; the three loads take turns, and each keeps its best round.

    On a shared machine the load of the moment moves every figure; taking
    turns and keeping the best round of each (the least disturbed) makes
    the figure and its baseline comparable. ``client`` is ``wrk`` (the
    default when installed) or ``httpx``.
    """
    client = client or ("wrk" if wrk_path() else "httpx")
    if client == "wrk" and not wrk_path():
        raise RuntimeError("wrk is not installed (Debian: apt-get install -y wrk)")
    if client == "httpx":
        print("wrk is not installed: the load client is httpx, which costs as much CPU per request as the server, "
              "so these figures say little (Debian: apt-get install -y wrk)")  # fmt: skip
    seconds = 3.0 if quick else 10.0
    rounds = 2 if quick else 3
    count = 600 if quick else 10_000  # httpx: requests per round, so that --quick stays short
    connections = CONNECTIONS

    def measure(url: str, path: str, span: float = seconds) -> dict[str, float]:
        if client == "wrk":
            return _wrk_load(url, path, span, connections)
        return trio.run(_load, url, path, count, span, connections)

    def hello_load(span: float) -> dict[str, float]:
        cpu = hello.cpu_seconds()
        figures = measure(hello.url, "/v1/pipelines/run/builds", span)
        answered = figures["ok"] + figures.get("warm_up", 0)
        return {**figures, "cpu_us": (hello.cpu_seconds() - cpu) * 1e6 / max(answered, 1)}

    hello, shunter = _Server("hello"), _Server("shunter")
    servers = [hello, shunter]
    loads = {
        "hello": hello_load,
        "submit+run": lambda span: _submit_and_run(functools.partial(measure, span=span), shunter, connections),
        "submit into a queue": lambda span: _submit_into_queue(functools.partial(measure, span=span), shunter,
                                                               connections),
    }  # fmt: skip
    turns: list[dict[str, dict[str, float]]] = []
    try:
        for load in loads.values():
            load(1.0)  # warm up (and check the accounting once)
        for _ in range(rounds):
            turns.append({name: load(seconds) for name, load in loads.items()})
    finally:
        for server in servers:
            server.stop()
    best = {name: max((turn[name] for turn in turns), key=lambda figures: figures["per_second"]) for name in loads}
    least = {name: min(turn[name]["cpu_us"] for turn in turns) for name in loads}
    baseline = f"hello-world ASGI POST, {client}"
    hello_rate = best["hello"]["per_second"]
    rows = [
        Row("HTTP submit+run: builds/s", best["submit+run"]["per_second"], "/s", baseline, hello_rate, "ratio >= 0.7"),
        Row("HTTP submit into a queue: builds/s", best["submit into a queue"]["per_second"], "/s", baseline, hello_rate,
            "ratio >= 0.7"),
        # Less moved by other work on the machine than the rates: the server is CPU-bound.
        Row("server CPU per submit+run", least["submit+run"], "µs", "server CPU per hello-world POST", least["hello"],
            "(about 1 / the rate ratio)"),
    ]  # fmt: skip
    print_table(f"http (hypercorn on loopback, {client} with {connections} connections, best of {rounds} rounds)", rows)
    for name, figures in best.items():
        extra = (f"; {figures['submitted']:.0f} builds, all SUCCEED, the last {figures['drain_seconds'] * 1e3:.0f} ms "
                 "after the last answer" if "submitted" in figures else "")  # fmt: skip
        print(f"  {name:<20} {figures['ok']:>6.0f} answered 201, {figures['refused']:.0f} refused in "
              f"{figures['seconds']:.1f} s; latency p50 {figures['p50_ms']:.1f} ms, "
              f"p99 {figures['p99_ms']:.1f} ms; server CPU {figures['cpu_us']:.0f} µs each{extra}")
    for number, turn in enumerate(turns, 1):
        shown = ", ".join(f"{name} {figures['per_second']:.0f}/s ({figures['cpu_us']:.0f} µs)"
                          for name, figures in turn.items())  # fmt: skip
        ratio = turn["submit+run"]["per_second"] / turn["hello"]["per_second"]
        print(f"  round {number}: {shown}; submit+run/hello {ratio:.2f}x")
    print(f"wrote {save('http', rows, {'client': client, 'connections': connections, 'rounds': turns, **best})}")
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests, shorter time limit")
    parser.add_argument("--client", choices=["wrk", "httpx"], help="the load client (default: wrk if installed)")
    parser.add_argument("--server", choices=["hello", "shunter"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server == "hello":
        trio.run(_serve_hello)
    elif args.server == "shunter":
        with tempfile.TemporaryDirectory(prefix="shunter-bench-") as workdir:
            trio.run(_serve_shunter, workdir)
    else:
        run(quick=args.quick, client=args.client)


if __name__ == "__main__":
    main()
