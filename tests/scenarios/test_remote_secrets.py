"""Secrets on remote agents (docs/design.md §11, §12), with real shells.

The server sends a remote agent the values of the secrets a job references,
and only those, in the lease answer that carries the job; the agent's step
sees the real value, and the log the server keeps (and every event, the
build's JSON, reasons and outputs) reads ``***``. The agent forgets the
values when the attempt ends.
"""

from __future__ import annotations

import hashlib
from typing import Any, TypeVar

import msgspec
import pytest

import runtime
from actors.remote.protocol import LeaseReply

from .conftest import waiting_events
from .remote_helpers import AppTransport, remote_nodes

T = TypeVar("T")

SECRET = "s3cr3t-Value-42"
OTHER = "never-sent-to-the-agent"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()

# The step compares the value with its digest (the value itself is in no pipeline) and exits 1 if it differs.
PIPELINE = f"""\
name: remote-secrets
jobs:
  use:
    runs-on: {{node-name: mac}}
    env: {{JOB_TOKEN: "${{{{ secrets.TOKEN }}}}"}}
    steps:
      - id: shell
        run: |
          echo "token=${{{{ secrets.TOKEN }}}}"
          echo "env=$JOB_TOKEN"
          test "$(printf %s "${{{{ secrets.TOKEN }}}}" | sha256sum | cut -c1-64)" = "{DIGEST}"
          echo "out=$JOB_TOKEN" >> "$SHUNTER_OUTPUT"
      - id: fails-saying-it
        run: echo "bad $JOB_TOKEN" >&2; exit 3
        continue-on-error: true
"""


class Recording(AppTransport):
    """The protocol over the app, keeping every lease answer and what the agent sent."""

    leases: list[LeaseReply] = []
    sent: list[bytes] = []

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T:
        Recording.sent.append(msgspec.json.encode(message))
        answer = await super().post(path, message, reply, timeout)
        if isinstance(answer, LeaseReply):
            Recording.leases.append(answer)
        return answer


@pytest.mark.trio
async def test_a_remote_step_sees_its_secret_and_the_server_shows_stars() -> None:
    Recording.leases, Recording.sent = [], []
    config = {"pools": [{"name": "default", "nodes": []}], "secrets": {"TOKEN": SECRET, "OTHER": OTHER}}
    async with runtime.open_runtime(config) as rt:
        async with remote_nodes(rt, {"default": [{"name": "mac"}]}, transport=Recording):
            await rt.register_pipeline(PIPELINE)
            async with rt.subscribe(after=0, buffer=10_000) as events:
                build = await rt.submit("remote-secrets")
                done = await rt.wait(build.id, timeout=60)
                published = waiting_events(events)
            log = await rt.logs(build.id)
            nodes = await rt.nodes()
    job = done.stages[0].jobs[0]
    assert job.node == "mac" and [n.kind for n in nodes] == ["remote"]
    assert done.status == "SUCCEED", (job.steps, log)  # the shell compared the real value: exit 0
    assert "token=***" in log and "env=***" in log and "bad ***" in log
    assert job.steps[0].attempts[-1].outputs == {"out": "***"}
    shown = msgspec.json.encode([done, published, nodes]).decode() + log
    assert SECRET not in shown and OTHER not in shown
    # The lease carried the job's secret and no other; it is not in the assignment's repr either.
    sent = [job for lease in Recording.leases for job in lease.jobs]
    assert len(sent) == 1 and sent[0].secrets == {"TOKEN": SECRET}
    assert SECRET not in repr(sent[0])
    # The agent masked before sending: the server's own masking is a second line of defence.
    reported = b"".join(Recording.sent)
    assert b"token=***" in reported and SECRET.encode() not in reported


@pytest.mark.trio
async def test_a_job_without_secrets_gets_none() -> None:
    Recording.leases = []
    config = {"pools": [{"name": "default", "nodes": []}], "secrets": {"TOKEN": SECRET}}
    async with runtime.open_runtime(config) as rt:
        async with remote_nodes(rt, {"default": [{"name": "mac"}]}, transport=Recording):
            await rt.register_pipeline("name: plain\nsteps:\n  - run: echo \"[$SHUNTER_SECRET_TOKEN]\"\n")
            done = await rt.wait((await rt.submit("plain")).id, timeout=60)
            log = await rt.logs(done.id)
    assert done.status == "SUCCEED" and "[]" in log
    sent = [job for lease in Recording.leases for job in lease.jobs]
    assert len(sent) == 1 and sent[0].secrets == {}
    assert b"secrets" not in msgspec.json.encode(sent[0])  # absent from the wire, not an empty object


CHAIN = """\
name: chain
stages:
  - jobs:
      write:
        runs-on: {node-name: mac}
        steps:
          - run: printf '%s\\n' "${{ secrets.TOKEN }}" > left-behind
  - jobs:
      read:
        runs-on: {lock-resource-with: write}
        steps:
          - run: cat left-behind
"""


@pytest.mark.trio
async def test_the_agent_forgets_a_jobs_secrets_and_the_server_still_masks() -> None:
    """The second job references no secret: its agent no longer holds the first job's (it does
    not mask the line), and the server, which masks every secret in what a remote agent reports,
    shows ``***`` all the same."""
    Recording.leases, Recording.sent = [], []
    config = {"pools": [{"name": "default", "nodes": []}], "secrets": {"TOKEN": SECRET}}
    async with runtime.open_runtime(config) as rt:
        async with remote_nodes(rt, {"default": [{"name": "mac"}]}, transport=Recording):
            await rt.register_pipeline(CHAIN)
            done = await rt.wait((await rt.submit("chain")).id, timeout=60)
            log = await rt.logs(done.id)
    assert done.status == "SUCCEED", log
    assert [job.secrets for lease in Recording.leases for job in lease.jobs] == [{"TOKEN": SECRET}, {}]
    assert SECRET.encode() in b"".join(Recording.sent)  # the read job's agent had nothing to mask with
    assert SECRET not in log and log.count("***") == 1
