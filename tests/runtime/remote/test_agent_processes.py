"""Remote build agents with real ``shunter serve`` and ``shunter agent`` processes (docs/design.md §11).

Heartbeats are small here (interval 0.2 s, timeout 1.5 s). A step that must
be found afterwards writes its process group id to ``<name>.pgid`` in the
test's directory; the cluster kills those groups at the end (an agent killed
with -9 cannot).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from .cluster import HEARTBEAT_TIMEOUT, Cluster, pid_alive, step_running


def _sleeper(tmp: Path, name: str, first_attempt_only: bool = False) -> str:
    """A shell line that records its process group, then sleeps (on the first job attempt only, if asked)."""
    condition = '[ "$SHUNTER_JOB_ATTEMPT" = 1 ] && ' if first_attempt_only else ""
    return f"echo $(ps -o pgid= $$) > {tmp / name}-$SHUNTER_JOB_ATTEMPT.pgid; echo started on $SHUNTER_AGENT; {condition}sleep 30; echo awake"


def _pgid(cluster: Cluster, name: str) -> int:
    """The process group a step wrote to ``name`` (once it has written it)."""
    path = cluster.tmp / name
    cluster.until(lambda: path.exists() and path.read_text().endswith("\n"), f"the step wrote {name}")
    return int(path.read_text())


def _clean(cluster: Cluster) -> None:
    """Invariant 8 of docs/design.md §3.1, as the server reports it."""
    stats = cluster.stats()
    assert (stats["jobs_running"], stats["jobs_queued"], stats["slots_held"], stats["agents_busy"],
            stats["agents_locked"], stats["builds_running"], stats["builds_queued"]) == (0, 0, 0, 0, 0, 0, 0), stats  # fmt: skip


def test_a_pipeline_runs_on_two_remote_agents(cluster: Cluster) -> None:
    cluster.start_server()
    cluster.start_agent("m1", "--agents", "2", "--labels", "linux,big")
    cluster.start_agent("m2", "--labels", "linux")
    cluster.wait_connected("m1", agents=2)
    cluster.wait_connected("m2", agents=1)
    cluster.put_pipeline("app", """
version: v3.0
name: app
stages:
  - name: build
    jobs:
      compile:
        runs-on: {labels: [big]}
        steps:
          - run: echo VERSION=7 >> $SHUNTER_ENV; echo built > artefact.txt; echo "compiled on $SHUNTER_NODE"
      package:
        depend-on: [compile]
        runs-on: {lock-resource-with: compile}
        steps:
          - run: test "$VERSION" = 7 && cat artefact.txt && echo "packaged on $SHUNTER_AGENT"
      lint:
        runs-on: {node-name: m2}
        steps:
          - uses: echo@1
            with: {text: linted}
          - run: echo result=clean >> $SHUNTER_OUTPUT
""")
    build = cluster.wait_build(cluster.submit("app"))
    assert build["status"] == "SUCCEED", build
    jobs = {job["id"]: job for job in build["stages"][0]["jobs"]}
    assert jobs["compile"]["node"] == "m1" and jobs["lint"]["node"] == "m2"
    assert jobs["package"]["agent"] == jobs["compile"]["agent"]  # lock-resource-with: the same remote agent
    assert jobs["lint"]["steps"][1]["attempts"][0]["outputs"] == {"result": "clean"}
    log = cluster.log(build["id"])
    assert "compiled on m1" in log and "built" in log and f"packaged on {jobs['compile']['agent']}" in log
    assert "linted" in log
    index = jobs["compile"]["agent"].split("/")[1]
    assert (cluster.tmp / "work-m1" / index / "artefact.txt").read_text() == "built\n"  # the agent's own workspace
    nodes = cluster.nodes()
    assert {nodes[name]["kind"] for name in nodes} == {"remote"}
    assert all(node["connected"] and node["last_seen"] for node in nodes.values())
    _clean(cluster)


def test_kill_9_mid_step_times_out_retries_elsewhere_and_the_agent_rejoins(cluster: Cluster) -> None:
    cluster.start_server()
    cluster.start_agent("m1")
    cluster.start_agent("m2")
    cluster.wait_connected("m1", "m2", agents=1)
    cluster.put_pipeline("slow", f"""
version: v3.0
name: slow
jobs:
  work:
    runs-on: {{concurrency-limit-total: 1}}
    steps:
      - run: {_sleeper(cluster.tmp, "slow", first_attempt_only=True)}
        retry-times: 1
""")
    build_id = cluster.submit("slow")
    running: list[dict] = []
    cluster.until(lambda: bool(running.append(step_running(cluster, build_id)) or running[-1]), "the step runs")
    victim = running[-1]["node"]
    other = "m2" if victim == "m1" else "m1"
    killed_at = time.monotonic()
    cluster.agents[victim].kill()
    cluster.agents[victim].wait(5)
    build = cluster.wait_build(build_id)
    assert time.monotonic() - killed_at >= HEARTBEAT_TIMEOUT - 0.1
    assert build["status"] == "SUCCEED", build
    attempts = build["stages"][0]["jobs"][0]["attempts"]
    assert [(a["status"], a["node"]) for a in attempts] == [("HEARTBEAT_TIMEOUT", victim), ("SUCCEED", other)]
    assert "heartbeat-timeout 1.5s" in attempts[0]["reason"]
    assert cluster.nodes()[victim]["connected"] is False and cluster.nodes()[victim]["agents"] == []
    _clean(cluster)
    # the machine comes back under the same name
    cluster.start_agent(victim)
    cluster.wait_connected(victim, agents=1)
    cluster.put_pipeline("pinned", f"version: v3.0\nname: pinned\njobs:\n  j:\n    runs-on: {{node-name: {victim}}}\n"
                                   "    steps: [{run: echo back}]\n")  # fmt: skip
    assert cluster.wait_build(cluster.submit("pinned"))["status"] == "SUCCEED"
    _clean(cluster)


def test_an_agent_paused_past_the_timeout_is_fenced_off_kills_its_step_and_takes_new_work(cluster: Cluster) -> None:
    cluster.start_server()
    agent = cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    cluster.put_pipeline("paused", f"""
version: v3.0
name: paused
jobs:
  j:
    steps: [{{run: "{_sleeper(cluster.tmp, 'paused')}"}}]
""")
    build_id = cluster.submit("paused")
    cluster.until(lambda: step_running(cluster, build_id) is not None, "the step runs")
    pgid = _pgid(cluster, "paused-1.pgid")
    os.kill(agent.pid, signal.SIGSTOP)
    build = cluster.wait_build(build_id)
    assert build["status"] == "FAILED"
    job = build["stages"][0]["jobs"][0]
    assert [a["status"] for a in job["attempts"]] == ["HEARTBEAT_TIMEOUT"]
    cluster.until(lambda: cluster.nodes()["m1"]["connected"] is False, "m1 shows disconnected")
    assert pid_alive(pgid)  # the step's shell went on while its agent was stopped
    os.kill(agent.pid, signal.SIGCONT)
    cluster.until(lambda: not pid_alive(pgid), "the abandoned step is killed")
    cluster.wait_connected("m1", agents=1)
    assert "abandoned" in cluster.agent_log("m1")
    after = cluster.build(build_id)
    assert after["status"] == "FAILED" and len(after["stages"][0]["jobs"][0]["attempts"]) == 1  # counted once
    assert after["stages"][0]["jobs"][0]["steps"][0]["attempts"][0]["status"] == "FAILED"
    cluster.put_pipeline("next", "version: v3.0\nname: next\njobs:\n  j:\n    steps: [{run: echo next}]\n")
    build = cluster.wait_build(cluster.submit("next"))
    assert build["status"] == "SUCCEED" and build["stages"][0]["jobs"][0]["node"] == "m1"
    _clean(cluster)


def test_sigterm_drains_the_agent(cluster: Cluster) -> None:
    cluster.start_server()
    agent = cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    gate = cluster.tmp / "drain-gate"  # the step ends when the test says, not after a sleep a slow machine outlasts
    cluster.put_pipeline("short", "version: v3.0\nname: short\njobs:\n  j:\n"
                                  f"    steps: [{{run: 'echo before; while [ ! -e {gate} ]; do sleep 0.05; done; "
                                  "echo finished'}]\n")  # fmt: skip
    build_id = cluster.submit("short")
    # the log streams while the step runs
    cluster.until(lambda: "before" in cluster.log(build_id) and step_running(cluster, build_id) is not None,
                  "the first line of the running step is in its log")  # fmt: skip
    assert "finished" not in cluster.log(build_id)
    agent.send_signal(signal.SIGTERM)
    cluster.until(lambda: "draining" in cluster.agent_log("m1"), "the agent says it drains")
    assert agent.poll() is None, "a draining agent waits for its running job"
    gate.touch()
    assert agent.wait(30) == 0
    build = cluster.build(build_id)
    assert build["status"] == "SUCCEED", build
    assert "finished" in cluster.log(build_id)
    assert "m1" not in cluster.nodes()
    assert "draining" in cluster.agent_log("m1")
    _clean(cluster)


def test_an_agent_started_before_the_server_keeps_trying_and_joins(cluster: Cluster) -> None:
    cluster.start_agent("early")
    cluster.until(lambda: cluster.agent_log("early").count("cannot reach") >= 2, "two failed attempts are said")
    lines = [line for line in cluster.agent_log("early").splitlines() if "cannot reach" in line]
    assert all(cluster.url in line and "trying again in" in line for line in lines), lines
    cluster.start_server()
    cluster.wait_connected("early", agents=1)
    cluster.put_pipeline("hello", "version: v3.0\nname: hello\njobs:\n  j:\n    steps: [{run: echo hello}]\n")
    assert cluster.wait_build(cluster.submit("hello"))["status"] == "SUCCEED"


def test_a_drain_past_its_timeout_cancels_the_running_job(cluster: Cluster) -> None:
    cluster.start_server()
    agent = cluster.start_agent("m1", "--drain-timeout", "0.5")
    cluster.wait_connected("m1", agents=1)
    cluster.put_pipeline("long", f"version: v3.0\nname: long\njobs:\n  j:\n"
                                 f"    steps: [{{run: \"{_sleeper(cluster.tmp, 'long')}\"}}]\n")  # fmt: skip
    build_id = cluster.submit("long")
    cluster.until(lambda: step_running(cluster, build_id) is not None, "the step runs")
    pgid = _pgid(cluster, "long-1.pgid")
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(15) == 0
    build = cluster.wait_build(build_id)
    job = build["stages"][0]["jobs"][0]
    assert job["status"] == "CANCELED" and build["status"] in ("CANCELED", "FAILED"), build
    assert "drain-timeout" in (job["reason"] or ""), job
    assert not pid_alive(pgid)
    _clean(cluster)


def test_the_agent_reconnects_by_itself_when_the_server_restarts(cluster: Cluster) -> None:
    """A server without durable state forgets the session: the agent, which kept
    trying at most 5 s apart, registers again and takes work."""
    cluster.start_server()
    cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    assert cluster.server is not None
    cluster.server.terminate()
    assert cluster.server.wait(15) == 0
    cluster.until(lambda: "cannot reach" in cluster.agent_log("m1"), "the agent says it cannot reach the server")
    cluster.start_server()
    cluster.wait_connected("m1", agents=1)
    assert "registering again" in cluster.agent_log("m1")
    cluster.put_pipeline("hello", "version: v3.0\nname: hello\njobs:\n  j:\n    steps: [{run: echo hello}]\n")
    assert cluster.wait_build(cluster.submit("hello"))["status"] == "SUCCEED"


def test_a_log_larger_than_a_request_body_arrives_in_pieces(cluster: Cluster) -> None:
    """1.2 MB of output (the server takes bodies up to 1 MiB): it is sent in several reports."""
    cluster.start_server()
    cluster.start_agent("m1")
    cluster.wait_connected("m1", agents=1)
    cluster.put_pipeline("chatty", "version: v3.0\nname: chatty\njobs:\n  j:\n    steps:\n"
                                   "      - run: seq -f 'line %05g of a long and chatty step....' 1 15000\n")  # fmt: skip
    build = cluster.wait_build(cluster.submit("chatty"))
    assert build["status"] == "SUCCEED", build
    log = cluster.log(build["id"]).splitlines()
    assert "line 00001 of a long and chatty step...." in log and "line 15000 of a long and chatty step...." in log
    assert len([line for line in log if line.startswith("line ")]) == 15000
