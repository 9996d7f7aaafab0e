"""A server with durable state restarted under a running remote job (docs/design.md §11), with real
``shunter serve`` and ``shunter agent`` processes on loopback.

The server is killed with ``kill -9`` (or stopped with SIGTERM: its drain
cannot wait for a remote job, whose reports no longer reach it) mid-step
and started again on the same state directory and port. An agent back within ``heartbeat-timeout``
of the server's start carries on with its attempt: it ends once, its log
written on. One that is not back in time loses it, with a reason; when it
does come back, its late attempt is fenced off and its step killed.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from .cluster import Cluster, HEARTBEAT_INTERVAL, pid_alive, step_running
from .test_agent_processes import _clean, _pgid


def _stop(cluster: Cluster, how: str = "kill") -> None:
    assert cluster.server is not None
    if how == "kill":
        cluster.server.kill()
    else:
        cluster.server.terminate()
    cluster.server.wait(20)


def _restart(cluster: Cluster, how: str = "kill") -> None:
    _stop(cluster, how)
    cluster.start_server()


@pytest.mark.parametrize("how, ends_while_down", [("kill", False), ("term", False), ("kill", True)])
def test_a_job_carries_on_across_a_server_restart(cluster: Cluster, how: str, ends_while_down: bool) -> None:
    """``ends_while_down``: the step ends while no server runs; its result, kept by the agent, counts."""
    # The agent backs off up to 5 s between tries: a heartbeat-timeout that leaves it time to come back,
    # even on a loaded machine (10 s was outlasted once); nothing here waits for it to pass.
    cluster.config.write_text(f"heartbeat-interval: {HEARTBEAT_INTERVAL}\nheartbeat-timeout: 30\n"
                              "drain-timeout: 0.3\npools: [{name: default, nodes: []}]\n")  # fmt: skip
    cluster.start_server()
    cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    go = cluster.tmp / "go"
    cluster.put_pipeline("long", f"""
version: v3.0
name: long
jobs:
  j:
    steps:
      - run: echo first half; while [ ! -f {go} ]; do sleep 0.05; done; echo second half; touch {go}.done
""")
    build_id = cluster.submit("long")
    cluster.until(lambda: "first half" in cluster.log(build_id), "the step printed its first line")
    _stop(cluster, how)
    if ends_while_down:
        go.write_text("")
        cluster.until(lambda: (cluster.tmp / "go.done").exists(), "the step ends on the agent")
    cluster.start_server()
    running = cluster.build(build_id)["stages"][0]["jobs"][0]
    assert running["status"] == "RUNNING" and len(running["attempts"]) == 1, running
    if not ends_while_down:
        cluster.wait_connected("m1", agents=1)
        assert step_running(cluster, build_id) is not None  # taken back, not lost
        go.write_text("")
    build = cluster.wait_build(build_id)
    assert build["status"] == "SUCCEED" and build["execute_count"] == 1, build
    job = build["stages"][0]["jobs"][0]
    assert [(a["status"], a["agent"]) for a in job["attempts"]] == [("SUCCEED", "m1/0")]
    assert len(job["steps"][0]["attempts"]) == 1
    assert "first half\nsecond half\n" in cluster.log(build_id)
    log = cluster.agent_log("m1")
    assert "registering again with the 1 attempt(s) it still holds" in log and "abandoned" not in log, log
    _clean(cluster)


def test_an_agent_not_back_in_time_loses_its_attempt_and_its_late_step_is_killed(cluster: Cluster) -> None:
    cluster.start_server()
    agent = cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    cluster.put_pipeline("late", f"""
version: v3.0
name: late
jobs:
  j:
    steps:
      - run: echo $(ps -o pgid= $$) > {cluster.tmp / 'late.pgid'}; sleep 30
""")
    build_id = cluster.submit("late")
    cluster.until(lambda: step_running(cluster, build_id) is not None, "the step runs")
    pgid = _pgid(cluster, "late.pgid")
    os.kill(agent.pid, signal.SIGSTOP)  # it will be late
    _restart(cluster)
    started = time.monotonic()
    build = cluster.wait_build(build_id)
    assert time.monotonic() - started < 1.5 + 3  # heartbeat-timeout of the server's start, not more
    attempt = build["stages"][0]["jobs"][0]["attempts"][0]
    assert build["status"] == "FAILED" and attempt["status"] == "HEARTBEAT_TIMEOUT", build
    assert "server restarted" in attempt["reason"] and "heartbeat-timeout 1.5s" in attempt["reason"], attempt
    assert cluster.nodes()["m1"]["connected"] is False
    assert pid_alive(pgid)
    os.kill(agent.pid, signal.SIGCONT)
    cluster.until(lambda: not pid_alive(pgid), "the late attempt's step is killed")
    cluster.wait_connected("m1", agents=1)
    assert "abandoned" in cluster.agent_log("m1")
    assert len(cluster.build(build_id)["stages"][0]["jobs"][0]["attempts"]) == 1
    cluster.put_pipeline("next", "version: v3.0\nname: next\njobs:\n  j:\n    steps: [{run: echo next}]\n")
    assert cluster.wait_build(cluster.submit("next"))["status"] == "SUCCEED"
    _clean(cluster)
