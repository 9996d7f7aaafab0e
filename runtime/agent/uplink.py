"""The agent process's link to the server: an actor that plays pool and pipeline
for the local agents, and two lanes of HTTP requests.

The local agents are the server's own ``AgentActor``: the same step code
(shell steps in a process group of their own, built-in actions,
``SHUNTER_ENV``/``SHUNTER_OUTPUT``, a workspace per agent, context reset
between builds, snapshot restore on retry). Their ``AgentReport`` and
``AgentIdle`` come here instead of to a pipeline and a pool, and go out as
protocol records.

Two lanes, each a task of this actor with its own connection:

- the lease lane polls for work; a poll is also the heartbeat, and the
  reports ready when it leaves ride on it (then it waits only briefly, so
  that the next job of a busy agent comes back in the same round trip);
- the report lane sends step events and log chunks while the lease waits
  for work (a poll that carries nothing); between polls it leaves them to
  the next lease.

Only one lane has reports in flight at a time, so an attempt's records
arrive in order. An attempt the server calls stale (lease ``stale``, or a
409 ``stale_attempt``) is abandoned: its agent is told to cancel it (which
kills its process group) and nothing more is said about it. When the server
cannot be reached the lanes retry with a backoff of at most 5 s, one line
per failed attempt; when it no longer knows the session (it restarted) the
agent registers again, naming the attempts it still runs (``running``) with
their agents: those the server still has carry on (their reports, kept
meanwhile, are delivered), the others come back stale and are abandoned.
An assignment the agent already has (a lease reply that was lost is sent
again) is not run twice.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable
from typing import Any

import anyio
import msgspec

from actors.builds.records import StepLog
from actors.core import Actor, Ref
from actors.model.messages import (
    AgentIdle,
    AgentReport,
    CancelJob,
    InstantJob,
    JobEnded,
    JobStarted,
    JobToken,
    RunJob,
    StepEnded,
    StepNotRun,
    StepStarted,
)
from actors.execution.secrets import Secrets
from actors.model.vocab import JobStatus
from actors.remote.protocol import (
    Ended,
    Holding,
    LeaseBody,
    LeaseReply,
    LeaveBody,
    Log,
    Record,
    Register,
    Report,
    ReportBody,
    ReportReply,
    Session,
    Started,
    StepEnd,
    StepSkip,
    StepStart,
)

from .http import Refused, Transport, Unreachable

__all__ = ["Uplink", "Drain", "BACKOFF"]

BACKOFF = (0.25, 0.5, 1.0, 2.0, 4.0, 5.0)
"""Seconds between attempts to reach the server: growing, never more than 5."""

_CARRY_WAIT = 0.02  # a lease that carries reports waits this long for the next job (it holds back other reports)
_LOG_EVERY = 0.25  # how often running steps' new output lines are sent
_COALESCE = 0.02  # let reports that come together leave together
_BODY_BUDGET = 256 * 1024  # bytes of reports per request: well under the server's max-body-bytes (1 MiB)


class Drain(msgspec.Struct, frozen=True):
    """SIGTERM: take no new work, let running attempts finish up to ``timeout``, leave."""

    timeout: float


class _DrainTimeout(msgspec.Struct, frozen=True):
    pass


class _GiveUp(msgspec.Struct, frozen=True):
    pass


_SEEN = 4096  # assignments remembered, so that one sent again is not run twice
_GIVE_UP = 10.0  # seconds after the drain timeout: leave even if the last reports could not be delivered


class Uplink(Actor):
    """See the module docstring."""

    def __init__(self, *, register: Register, server: str, connect: Callable[[], Transport], agents: list[Ref],
                 out: Callable[[str], None], done: anyio.Event) -> None:  # fmt: skip
        self.register = register
        self.server = server
        self.connect = connect  # a new connection for each lane
        self.agents = agents  # filled by the caller right after spawning this actor
        self.out = out
        self.done = done
        self.session: Session | None = None
        self.busy: dict[int, JobToken] = {}
        self.queued: dict[int, collections.deque[RunJob]] = collections.defaultdict(collections.deque)
        self.index_of: dict[JobToken, int] = {}  # accepted, not ended
        self.pending: dict[JobToken, list[Record]] = {}
        self.live_logs: dict[tuple[JobToken, int], list[Any]] = {}  # (token, step) -> [StepLog, lines sent]
        self.abandoned: set[JobToken] = set()
        self.seen: dict[JobToken, int] = {}  # the latest assignments (with their agent), oldest first
        self.wake = anyio.Event()
        self.sending = False
        self.sent = anyio.Event()
        self.polling = False  # the lease lane waits for work with nothing to carry: the report lane's turn
        self.draining = False
        self.failures = 0

    async def started(self) -> None:
        self.start_task(self._lease_lane)
        self.start_task(self._report_lane)

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is AgentReport:
            self._agent_report(message)
        elif kind is AgentIdle:
            self._agent_idle(message)
        elif kind is Drain:
            self._drain(message)
        elif kind is _DrainTimeout:
            for token in list(self.busy.values()):
                self.agents[self.index_of[token]].tell(CancelJob(token, "the agent was stopped (drain-timeout)"))
            self.send_after(_GIVE_UP, _GiveUp())
        elif kind is _GiveUp:
            if not self.done.is_set():
                self.out(f"shunter agent: leaving without telling the server about {len(self.pending)} attempt(s): "
                         f"it could not be reached")  # fmt: skip
                self.done.set()
        else:
            raise TypeError(f"uplink got an unexpected {kind.__name__}")

    # -- from the local agents ------------------------------------------------------------------

    def _agent_report(self, report: AgentReport) -> None:
        token = report.token
        if token in self.abandoned or token not in self.index_of:
            return
        out = self.pending.setdefault(token, [])
        for item in report.records:
            # the wire knows the ordinary records: an attempt run inline goes as those it stands for
            for record in item.records() if isinstance(item, InstantJob) else (item,):
                self._record(token, record, out)
        self._wake()

    def _record(self, token: JobToken, record: Any, out: list[Record]) -> None:
        """One record of a local agent's report, as the wire says it."""
        if isinstance(record, StepStarted):
            out.append(StepStart(record.index, record.time))
            self.live_logs[(token, record.index)] = [record.log, 0]
        elif isinstance(record, StepEnded):
            self._log_chunk(token, record.index, out, final=True)
            out.append(StepEnd(record.index, record.status, record.reason, record.exit_code, record.outputs,
                               record.exported_env, record.time))  # fmt: skip
        elif isinstance(record, StepNotRun):
            out.append(StepSkip(record.index, record.status, record.reason))
        elif isinstance(record, JobStarted):
            out.append(Started(record.context, record.time))
        elif isinstance(record, JobEnded):
            for key in [key for key in self.live_logs if key[0] == token]:
                self._log_chunk(token, key[1], out, final=True)
            out.append(Ended(record.status, record.reason, record.time))

    def _agent_idle(self, message: AgentIdle) -> None:
        index = int(message.agent.rsplit("/", 1)[1])
        if self.busy.get(index) != message.token:
            return
        del self.busy[index]
        self.index_of.pop(message.token, None)
        self.abandoned.discard(message.token)
        queue = self.queued.get(index)
        if queue:
            self._start(index, queue.popleft())
        self._wake()

    def _log_chunk(self, token: JobToken, index: int, out: list[Record], final: bool = False) -> None:
        entry = self.live_logs.get((token, index))
        if entry is None:
            return
        log: StepLog = entry[0]
        # entry[1] counts the lines appended so far. A very chatty step's log
        # keeps its first half and drops from the middle of the rest: unsent
        # head lines stay where they are, and the other new ones are its last.
        lines, sent = log.lines, entry[1]
        new = len(lines) + log.dropped - sent
        if new <= 0:
            pass
        elif not log.dropped:
            out.append(Log(index, lines[sent:]))
        else:
            half = StepLog.MAX_LINES // 2
            head = lines[sent:half] if sent < half else []
            tail = min(new - len(head), len(lines) - half)
            out.append(Log(index, head + (lines[len(lines) - tail:] if tail > 0 else [])))
        entry[1] = sent + max(new, 0)
        if final:
            del self.live_logs[(token, index)]

    def _wake(self) -> None:
        self.wake.set()

    # -- work in -----------------------------------------------------------------------------------

    def _handle(self, reply: LeaseReply) -> list[JobToken]:
        for token in reply.stale:
            self._abandon(token, "the server ended this attempt (stale_attempt)")
        for cancel in reply.cancel:
            index = self.index_of.get(cancel.token)
            if index is None:
                continue
            if self.busy.get(index) == cancel.token:
                self.agents[index].tell(CancelJob(cancel.token, cancel.reason))
            else:  # still queued behind an abandoned attempt: it never started
                self._unqueue(index, cancel.token)
                self.pending.setdefault(cancel.token, []).append(Ended(JobStatus.CANCELED, cancel.reason, time.time()))
                self.index_of.pop(cancel.token)
        jobs = [job for job in reply.jobs if job.token not in self.seen]  # sent again: it has them
        for job in jobs:
            self.seen[job.token] = job.agent
            if len(self.seen) > _SEEN:
                del self.seen[next(iter(self.seen))]
            self.index_of[job.token] = job.agent
            # logs are kept in memory here and sent; the server writes its own (log_dir is its path).
            # The job's secrets go to its agent alone, which masks them and drops them when it ends.
            run = RunJob(job.token, self.name, msgspec.structs.replace(job.payload, log_dir=None),
                         Secrets(job.secrets) if job.secrets else None)  # fmt: skip
            if job.agent in self.busy:
                self.queued[job.agent].append(run)
            else:
                self._start(job.agent, run)
        return [job.token for job in jobs]

    def _start(self, index: int, run: RunJob) -> None:
        self.busy[index] = run.token
        self.agents[index].tell(run)

    def _unqueue(self, index: int, token: JobToken) -> None:
        queue = self.queued.get(index)
        if queue:
            self.queued[index] = collections.deque(run for run in queue if run.token != token)

    def _abandon(self, token: JobToken, why: str) -> None:
        index = self.index_of.get(token)
        if index is None or token in self.abandoned:
            return
        self.pending.pop(token, None)
        for key in [key for key in self.live_logs if key[0] == token]:
            del self.live_logs[key]
        if self.busy.get(index) == token:
            self.abandoned.add(token)
            self.agents[index].tell(CancelJob(token, why))
            self.out(f"shunter agent: attempt {token} abandoned: {why}; its processes are stopped")
        else:
            self._unqueue(index, token)
            del self.index_of[token]

    def _abandon_all(self, why: str) -> None:
        for token in list(self.index_of):
            self._abandon(token, why)

    # -- reports out ---------------------------------------------------------------------------------

    def _take(self) -> list[Report]:
        """What is ready to send, at most about ``_BODY_BUDGET`` bytes of it (the server
        caps request bodies); the rest stays pending, in order, for the next request."""
        for (token, index) in list(self.live_logs):
            self._log_chunk(token, index, self.pending.setdefault(token, []))
        budget = _BODY_BUDGET
        reports: list[Report] = []
        for token, records in list(self.pending.items()):
            taken: list[Record] = []
            while records and budget > 0:
                record = records[0]
                if isinstance(record, Log):
                    count, size = 0, 0
                    for line in record.lines:
                        if count and size + len(line) + 8 > budget:
                            break
                        count, size = count + 1, size + len(line) + 8
                    if count < len(record.lines):
                        taken.append(Log(record.index, record.lines[:count]))
                        records[0] = Log(record.index, record.lines[count:])
                        budget = 0
                        break
                    budget -= size
                else:
                    budget -= 256
                taken.append(records.pop(0))
            if taken:
                reports.append(Report(token=token, records=taken))
            if not records:
                del self.pending[token]
        if self.pending:
            self._wake()  # the rest goes with the next request
        return reports

    def _put_back(self, reports: list[Report]) -> None:
        """Reports that may not have arrived go out again first (the server drops repeats of an ended attempt)."""
        later = self.pending
        self.pending = {}
        for report in reports:
            if report.token not in self.abandoned and report.token in self.index_of or any(
                type(record) is Ended for record in report.records
            ):
                self.pending.setdefault(report.token, []).extend(report.records)
        for token, records in later.items():
            self.pending.setdefault(token, []).extend(records)

    def _held(self) -> dict[JobToken, int]:
        """What runs, and what ended with results not delivered yet (both count if the server still has
        them), with their agents."""
        held = {**{token: self.seen[token] for token in self.pending if token in self.seen}, **self.index_of}
        return {token: index for token, index in held.items() if token not in self.abandoned}

    def _running(self) -> list[JobToken]:
        return [token for token in self.index_of if token not in self.abandoned]

    # -- the lanes -------------------------------------------------------------------------------------

    async def _lease_lane(self) -> None:
        client = self.connect()
        while True:
            if self.draining and not self.index_of and not self.pending:
                self.done.set()
                return
            session = self.session
            if session is None:
                await self._register(client)
                continue
            reports: list[Report] = []
            if not self.sending:
                reports = self._take()
                self.sending = bool(reports)
            wait = _CARRY_WAIT if reports else session.lease_wait
            if self.draining:
                wait = min(wait, _LOG_EVERY)
            body = LeaseBody(node=session.node, session=session.session, reports=reports, running=self._running(),
                             wait=wait)  # fmt: skip
            self.polling = not reports
            try:
                reply = await client.post("/v1/agent/lease", body, LeaseReply, timeout=wait + 30)
            except Unreachable as error:
                self._put_back(reports)
                self.polling = True  # backing off: the report lane may get through meanwhile
                await self._trouble("lease", str(error))
                continue
            except Refused as error:
                self._put_back(reports)
                self.polling = True
                await self._refused(error)
                continue
            finally:
                self.polling = False
                if reports:
                    self._sent()
            self.failures = 0
            if reply.draining and not self.draining:
                self.draining = True
                self.out(f"shunter agent: the server drains node {session.node}: no new work; leaving once idle")
            started = self._handle(reply)
            # let the agents start (instant jobs end here): their first report rides on the next lease
            for _ in range(4):
                if all(token in self.pending or token not in self.index_of for token in started):
                    break
                await anyio.sleep(0)

    async def _report_lane(self) -> None:
        client = self.connect()
        while True:
            with anyio.move_on_after(_LOG_EVERY if self.live_logs else math.inf):
                await self.wake.wait()
            self.wake = anyio.Event()
            await anyio.sleep(_COALESCE)
            while self.sending:
                await self.sent.wait()
            session = self.session
            if session is None or not self.polling:
                # Between polls, or on one that carries reports: what is ready goes with the next lease.
                # Sent here, it took that lease's reports: measured once agents ended instant jobs a
                # scheduling pass sooner, 15 reports per 350 leases (not 1) and a fifth fewer remote jobs/s.
                continue
            reports = self._take()
            if not reports:
                continue
            self.sending = True
            try:
                await client.post("/v1/agent/report", ReportBody(node=session.node, session=session.session,
                                                                 reports=reports), ReportReply, timeout=30)  # fmt: skip
            except Refused as error:
                if error.code == "stale_attempt":
                    for item in error.details:
                        token = msgspec.convert(item, JobToken)
                        self._abandon(token, "the server ended this attempt (409 stale_attempt)")
                else:
                    self._put_back(reports)
            except Unreachable:
                self._put_back(reports)  # the lease lane says so and backs off
                await anyio.sleep(BACKOFF[min(self.failures, len(BACKOFF) - 1)])
            finally:
                self._sent()

    def _sent(self) -> None:
        self.sending = False
        self.sent.set()
        self.sent = anyio.Event()

    async def _register(self, client: Transport) -> None:
        running = [Holding(agent=index, token=token) for token, index in self._held().items()]
        register = msgspec.structs.replace(self.register, running=running)
        try:
            session = await client.post("/v1/agent/register", register, Session, timeout=30)
        except Unreachable as error:
            await self._trouble("register", str(error))
            return
        except Refused as error:
            self.failures += 1
            delay = BACKOFF[min(self.failures, len(BACKOFF)) - 1]
            self.out(f"shunter agent: {self.server} refused to register node {self.register.name!r}: "
                     f"{error}; trying again in {delay:g} s")  # fmt: skip
            await anyio.sleep(delay)
            return
        self.failures = 0
        self.session = session
        self.out(f"shunter agent: node {session.node} joined pool {self.register.pool!r} at {self.server} "
                 f"with agents {', '.join(session.agents)}")  # fmt: skip

    async def _trouble(self, what: str, error: str) -> None:
        self.failures += 1
        delay = BACKOFF[min(self.failures, len(BACKOFF)) - 1]
        self.out(f"shunter agent: cannot reach {self.server} ({what}): {error}; trying again in {delay:g} s")
        await anyio.sleep(delay)

    async def _refused(self, error: Refused) -> None:
        if error.code == "unknown_session":
            if self.draining:
                self._abandon_all("the node left the server")
                self.pending = {}
                self.done.set()
                return
            self.out(f"shunter agent: the server does not know this session ({error.message}); registering again "
                     f"with the {len(self._held())} attempt(s) it still holds")  # fmt: skip
            self.session = None
            return
        self.failures += 1
        delay = BACKOFF[min(self.failures, len(BACKOFF)) - 1]
        self.out(f"shunter agent: the server refused a lease: {error}; trying again in {delay:g} s")
        await anyio.sleep(delay)

    # -- leaving -----------------------------------------------------------------------------------------

    def _drain(self, message: Drain) -> None:
        if self.draining:
            return
        self.draining = True
        running = len(self.index_of)
        self.out(f"shunter agent: draining: no new work; {running} running attempt(s) may take up to "
                 f"{message.timeout:g} s")  # fmt: skip
        self.send_after(message.timeout, _DrainTimeout())
        self.start_task(self._leave)

    async def _leave(self) -> None:
        session = self.session
        if session is None:
            return
        try:
            await self.connect().post(
                "/v1/agent/leave", LeaveBody(node=session.node, session=session.session), ReportReply, timeout=30)
        except (Unreachable, Refused) as error:
            self.out(f"shunter agent: could not tell the server it leaves: {error}")
