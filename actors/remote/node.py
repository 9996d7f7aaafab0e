"""A remote node: the actor that owns one ``shunter agent`` connection (docs/design.md §11).

It stands where a local ``NodeActor`` stands: child of its pool, supervisor
of its agents. Its agents are ``RemoteAgentActor`` proxies that the pool
places, limits and retires exactly like local agents; what they are told
(``RunJob``, ``CancelJob``) lands here, waits in an outbox, and leaves with
the next lease. Reports coming back are turned into the ``AgentReport`` and
``AgentIdle`` messages a local agent would send, so the pipeline and the
pool cannot tell the difference.

Connection state, all private to this actor: the session, when the agent
was last heard (every request counts; a parked lease counts until it is
answered), the attempts it holds, and the parked lease. Heartbeats use the
pool's machinery: once the agent has been silent for a heartbeat interval,
the node tells the pool when the silence began (``RemoteSilent``); the pool
declares its agents lost past ``heartbeat-timeout`` (``HEARTBEAT_TIMEOUT``,
slots freed, retried elsewhere when allowed) and tells the node
``Disconnected``. The node then forgets those attempts (late reports get 409
``stale_attempt``) and shows ``connected: false``; the next request of the
agent — the same session after a pause, or a new one after a restart —
makes the pool add its agents again.

Sessions outlive a server restart (docs/design.md §11): a remote node is
stored, comes back disconnected, and the pool hands it the attempts its
agents were running (``Adopt``). They stay running for ``heartbeat-timeout``
from the node's start; an agent process that registers again in time and
says it still runs them (``Register.running``) carries on with them, and
whatever else the node held is lost as a lost agent's work is
(``RemoteLost``). Assignments are delivered at least once: one that no later
request of the agent names (its lease reply was lost) goes out again with
the next lease, under the same token.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from ..builds.records import StepLog, step_log
from ..core import Actor, Ref, Reply, TimerHandle
from ..execution.secrets import Secrets, referenced
from ..model.errors import Conflict, NotFound, ShunterError
from ..model.messages import (
    AgentIdle,
    AgentLost,
    AgentReport,
    JobEnded,
    JobPayload,
    JobStarted,
    JobToken,
    StepEnded,
    StepNotRun,
    StepStarted,
)
from ..model.vocab import JobStatus
from ..names import Names
from .protocol import (
    MAX_LEASE_WAIT,
    Assignment,
    Cancel,
    Ended,
    LeaseBody,
    LeaseReply,
    LeaveBody,
    Log,
    Report,
    ReportBody,
    ReportReply,
    Session,
    Started,
    StepEnd,
    StepSkip,
    StepStart,
    mask_record,
)
from .messages import (
    Adopt,
    Assign,
    CancelAttempt,
    Connect,
    Disconnected,
    Draining,
    Hang,
    RemoteHeard,
    RemoteJoin,
    RemoteLeave,
    RemoteLost,
    RemoteSeen,
    RemoteSilent,
)

__all__ = [
    "RemoteNodeActor", "StaleAttempt", "UnknownSession", "Connect", "Assign", "Adopt", "CancelAttempt", "Hang",
    "Disconnected", "Draining",
    "RemoteJoin", "RemoteLost", "RemoteSilent", "RemoteHeard", "RemoteSeen", "RemoteLeave",
]  # fmt: skip


class StaleAttempt(ShunterError):
    """A report about an attempt that is over on the server (fenced off by its token)."""

    code = "stale_attempt"
    http_status = 409


class UnknownSession(NotFound):
    """The node has no such session (the server restarted, or the node left): register again."""

    code = "unknown_session"


class _Check(msgspec.Struct, frozen=True):
    pass


class _Expire(msgspec.Struct, frozen=True):
    poll: int


class _BackInTime(msgspec.Struct, frozen=True):
    """``heartbeat-timeout`` after the node's start: adopted attempts of an agent not back are lost."""


_CHECK = _Check()


class _Attempt:
    __slots__ = ("index", "pipeline", "payload", "logs", "job", "sent", "acked")

    def __init__(self, index: int, pipeline: str, payload: JobPayload, token: JobToken,
                 secrets: dict[str, str] | None = None) -> None:  # fmt: skip
        self.index = index
        self.pipeline = pipeline  # its actor's name
        self.payload = payload
        self.logs: dict[int, StepLog] = {}
        self.job = Assignment(agent=index, token=token, payload=payload, secrets=secrets or {})
        self.sent = False  # in a lease reply
        self.acked = False  # a later request of the agent named it: the reply arrived


class RemoteNodeActor(Actor):
    """See the module docstring."""

    def __init__(self, *, node: str, pool: Ref, heartbeat_interval: float, heartbeat_timeout: float,
                 secrets: Secrets | None = None) -> None:  # fmt: skip
        self.node = node
        self.secrets = secrets if secrets is not None else Secrets()
        self.pool = pool
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.lease_wait = min(MAX_LEASE_WAIT, heartbeat_interval)
        self.session: str | None = None
        self.agents = 0
        self.labels: tuple[str, ...] | None = None
        self.claims: dict[JobToken, int] = {}  # what the agent said it runs when it registered
        self.born = 0.0
        self.waiting_back = False  # adopted attempts wait for their agent (after a restart)
        self.connected = False
        self.leaving = False
        self.last_seen = 0.0
        self.silent = False  # told the pool
        self.attempts: dict[JobToken, _Attempt] = {}
        self.outbox: list[Assignment] = []
        self.cancels: list[Cancel] = []
        self.ended: set[JobToken] = set()  # ended by the pool before the proxy's Assign arrived
        self.hung: set[int] = set()  # agents whose reports are dropped (the injected hang fault)
        self.parked: tuple[Reply, TimerHandle, int] | None = None
        self.polls = 0
        self.names = Names(self)  # the pipelines' actors, by the names the attempts carry

    async def started(self) -> None:
        self.born = self.now()
        self.send_after(self.heartbeat_interval, _CHECK)

    async def stopping(self) -> None:
        self._answer()  # the node left: the parked lease ends now, the next request gets 404

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        """An agent's stand-in crashed: the pool ends its job ``FAILED`` as for a local agent, and the
        node forgets the attempt (``Disconnected``); the agent comes back with the process's next request."""
        agent = child.name.removeprefix("agent:").rsplit("@", 1)[0]
        self.pool.tell(AgentLost(agent, JobStatus.FAILED, f"agent {agent} crashed: {error!r}"))

    def receive(self, message: Any) -> Any:
        kind = type(message)
        if kind is LeaseBody:
            return self._lease(message)
        if kind is ReportBody:
            return self._report(message)
        if kind is Assign:
            self._assign(message)
        elif kind is CancelAttempt:
            if message.token in self.attempts:
                self.cancels.append(Cancel(token=message.token, reason=message.reason))
                self._answer()
        elif kind is Disconnected:
            self._disconnected(message)
        elif kind is Hang:
            self.hung.add(message.index)
        elif kind is Adopt:
            self._adopt(message)
        elif kind is _BackInTime:
            self._back_in_time()
        elif kind is Draining:
            self.leaving = True
            self._answer()
        elif kind is _Check:
            self._check()
            self.send_after(self.heartbeat_interval, _CHECK)
        elif kind is _Expire:
            if self.parked is not None and self.parked[2] == message.poll:
                self._answer()
        elif kind is Connect:
            return self._connect(message)
        elif kind is LeaveBody:
            self._session(message.session)
            self._contact()
            self.leaving = True
            self.pool.tell(RemoteLeave(self.node))
            return ReportReply(accepted=0)
        else:
            raise TypeError(f"remote node {self.node!r} got an unexpected {kind.__name__}")
        return None

    # -- sessions and heartbeats ----------------------------------------------------------------

    def _connect(self, message: Connect) -> Session:
        if self.leaving:
            raise Conflict(f"node {self.node!r} is draining; register again once it has left")
        if self.session is not None and self.connected:  # the old session ends here
            self.pool.tell(RemoteSeen(self.node, False, time.time() - (self.now() - self.last_seen)))
        self.hung.clear()
        self._answer(empty=True)
        self.claims = dict(message.running)
        self._settle(message.agents)
        self.session = uuid.uuid4().hex
        self.agents = message.agents
        if message.labels is not None:
            self.labels = message.labels
        self.connected = False  # _contact joins the agents
        self._contact()
        return Session(node=self.node, session=self.session, agents=[f"{self.node}/{i}" for i in range(self.agents)],
                       heartbeat_interval=self.heartbeat_interval, heartbeat_timeout=self.heartbeat_timeout,
                       lease_wait=self.lease_wait)  # fmt: skip

    def _settle(self, agents: int) -> None:
        """A new session: attempts the agent still runs on the same agent carry on; those never sent
        go to the new session; the others are lost (their agents too, as a lost agent's are)."""
        lost: dict[int, list[str]] = {}
        for token, attempt in list(self.attempts.items()):
            if attempt.index < agents and self.claims.get(token) == attempt.index:
                attempt.sent = attempt.acked = True
            elif attempt.index < agents and not attempt.sent and token not in self.claims:
                pass  # still in the outbox: it goes with the new session's first lease
            else:
                del self.attempts[token]
                lost.setdefault(attempt.index, []).append(str(token))
        self.outbox = [job for job in self.outbox if job.token in self.attempts]
        self.cancels = [cancel for cancel in self.cancels if cancel.token in self.attempts]
        self.waiting_back = False
        for index, tokens in sorted(lost.items()):
            self.pool.tell(RemoteLost(self.node, f"the agent process of node {self.node} registered again (a new "
                                                 f"session) without attempt {', '.join(tokens)}: it is lost",
                                      (index,)))  # fmt: skip

    def _adopt(self, message: Adopt) -> None:
        if self.session is not None and self.claims.get(message.token) != message.index:
            # the agent registered before this came and did not say it runs it (a start's race)
            self.pool.tell(RemoteLost(self.node, f"the agent process of node {self.node} registered again "
                                                 f"without attempt {message.token}: it is lost", (message.index,)))  # fmt: skip
            return
        attempt = self.attempts[message.token] = _Attempt(message.index, message.pipeline, message.payload,
                                                          message.token)  # fmt: skip
        attempt.logs.update(message.logs)
        attempt.sent = attempt.acked = True
        if self.session is None and not self.waiting_back:
            self.waiting_back = True
            self.send_after(max(0.0, self.born + self.heartbeat_timeout - self.now()), _BackInTime())

    def _back_in_time(self) -> None:
        if not self.waiting_back:
            return  # the agent registered in time
        self.waiting_back = False
        indexes = tuple(sorted({attempt.index for attempt in self.attempts.values()}))
        self.attempts.clear()
        if indexes:
            self.pool.tell(RemoteLost(self.node, f"interrupted: the server restarted while it ran, and the agent "
                                                 f"process of node {self.node} did not come back within "
                                                 f"heartbeat-timeout {self.heartbeat_timeout:g}s", indexes))  # fmt: skip

    def _session(self, session: str) -> None:
        if session != self.session:
            raise UnknownSession(f"node {self.node!r} has no session {session!r}: register again")

    def _contact(self) -> None:
        self.last_seen = self.now()
        if self.silent:
            self.silent = False
            self.pool.tell(RemoteHeard(self.node))
        if not self.connected and not self.leaving:
            self.connected = True
            self.ended.clear()
            self.pool.tell(RemoteJoin(self.node, self.agents, self.labels))
        self.pool.tell(RemoteSeen(self.node, self.connected, time.time()))

    def _check(self) -> None:
        if (self.connected and not self.silent and self.parked is None
                and self.now() - self.last_seen > self.heartbeat_interval):  # fmt: skip
            self.silent = True
            self.pool.tell(RemoteSilent(self.node, self.last_seen))

    def _disconnected(self, message: Disconnected) -> None:
        if message.token is not None:
            self.ended.add(message.token)
        self.hung.discard(message.index)  # its next stand-in is heard again
        for token, attempt in list(self.attempts.items()):
            if attempt.index == message.index:
                del self.attempts[token]
        self.outbox = [job for job in self.outbox if job.token in self.attempts]
        self.cancels = [cancel for cancel in self.cancels if cancel.token in self.attempts]
        self.silent = False
        if self.connected:
            self.connected = False
            self.pool.tell(RemoteSeen(self.node, False, time.time() - (self.now() - self.last_seen)))
        # A process that is there after all (a lease is parked: its agent's stand-in crashed, or only the
        # server's watch thought it silent) polls again at once: it hears the attempt is stale and rejoins.
        self._answer()

    # -- work out --------------------------------------------------------------------------------

    def _assign(self, message: Assign) -> None:
        if message.token in self.ended:
            return  # the pool already ended it (the agent was lost meanwhile)
        # Only the secrets the job references travel, over the token-authenticated lease answer.
        secrets = self.secrets.only(referenced(message.payload.job)).values() if self.secrets else {}
        attempt = self.attempts[message.token] = _Attempt(message.index, message.pipeline, message.payload,
                                                          message.token, secrets)  # fmt: skip
        self.outbox.append(attempt.job)  # sent when this batch of messages is done (batch_done)

    def batch_done(self) -> None:
        """Assignments leave together: the pool grants a node's free agents in one turn, so their
        ``Assign`` messages arrive here in one batch, and one lease answer carries them all rather
        than the first alone (measured with 2 agents per process: 1.00 lease per job before)."""
        if self.outbox and self.parked is not None:
            self._answer()

    def _lease(self, body: LeaseBody) -> Any:
        self._session(body.session)
        self._contact()
        if self.parked is not None:
            self._answer(empty=True)  # an older poll of this node: its client gave up on it (see _resend)
        gone = [token for token in body.running if token not in self.attempts]  # not those that end now
        stale = self._apply(body.reports)
        stale.extend(token for token in gone if token not in stale)  # each stale attempt named once
        self._resend(body.running)
        if self.outbox or self.cancels or stale or body.wait <= 0:
            return self._reply(stale)
        self.polls += 1
        timer = self.send_after(min(body.wait, self.lease_wait), _Expire(self.polls))
        self.parked = (self.defer_reply(), timer, self.polls)
        return None

    def _resend(self, running: list[JobToken]) -> None:
        """Assignments sent that this lease neither runs nor reported: the reply that carried them was
        lost (the agent polls again only once it has handled a reply). Again, same token."""
        named = set(running)
        for token, attempt in self.attempts.items():
            if token in named:
                attempt.acked = True
            elif attempt.sent and not attempt.acked:
                attempt.sent = False
                self.outbox.append(attempt.job)

    def _reply(self, stale: list[JobToken] | None = None) -> LeaseReply:
        reply = LeaseReply(jobs=self.outbox, cancel=self.cancels, stale=stale or [], draining=self.leaving)
        for job in self.outbox:
            attempt = self.attempts.get(job.token)
            if attempt is not None:
                attempt.sent = True
        self.outbox, self.cancels = [], []
        return reply

    def _answer(self, empty: bool = False) -> None:
        """Answer the parked lease, if any, with what there is now (``empty``: with nothing)."""
        if self.parked is None:
            return
        slot, timer, _ = self.parked
        self.parked = None
        timer.cancel()
        slot.set_result(LeaseReply(draining=self.leaving) if empty else self._reply())
        self.last_seen = self.now()  # the agent polls again at once: its silence starts now

    # -- reports in ------------------------------------------------------------------------------

    def _report(self, body: ReportBody) -> ReportReply:
        self._session(body.session)
        self._contact()
        stale = self._apply(body.reports)
        if stale:
            names = ", ".join(map(str, stale))
            raise StaleAttempt(f"attempt(s) {names} are over on the server (fenced off): abandon them",
                               details=[{"build_id": t.build_id, "job_id": t.job_id, "attempt": t.attempt}
                                        for t in stale])  # fmt: skip
        return ReportReply(accepted=len(body.reports))

    def _apply(self, reports: list[Report]) -> list[JobToken]:
        """Deliver reports as the agent's own messages; return the tokens that are stale."""
        stale = []
        for report in reports:
            attempt = self.attempts.get(report.token)
            if attempt is None:
                stale.append(report.token)
                continue
            attempt.acked = True
            if attempt.index in self.hung:
                continue  # as a hung local agent: no word until it is declared lost
            agent = f"{self.node}/{attempt.index}"
            records: list[Any] = []
            ended = False
            steps = attempt.payload.job.steps
            for record in report.records:
                if self.secrets:  # masked again here, every secret: the machine may hold what a job left
                    record = mask_record(record, self.secrets)
                if isinstance(record, Started):
                    records.append(JobStarted(self.node, agent, record.context, record.time))
                    continue
                if isinstance(record, Ended):
                    records.append(JobEnded(record.status, record.reason, record.time))
                    ended = True
                    break
                if record.index >= len(steps):
                    continue  # no such step: nothing to apply it to
                if isinstance(record, StepSkip):
                    records.append(StepNotRun(record.index, record.status, record.reason))
                    continue
                log = attempt.logs.get(record.index)
                if log is None or isinstance(record, StepStart):
                    # the server's own log (a file with durable state), as a local agent makes it; a step
                    # whose start never reached the store (a server killed meanwhile) is started here
                    log = attempt.logs[record.index] = step_log(attempt.payload, steps[record.index])
                    records.append(StepStarted(record.index, log, time.time() if isinstance(record, Log) else record.time))
                if isinstance(record, Log):
                    for line in record.lines:
                        log.append(line)
                    log.sync()  # what the agent sent survives a kill -9 of the server
                elif isinstance(record, StepEnd):
                    records.append(StepEnded(record.index, record.status, record.reason, record.exit_code,
                                             record.outputs, record.exported_env, record.time))  # fmt: skip
            if records:
                self.names.tell(attempt.pipeline, AgentReport(report.token, tuple(records)))
            if ended:
                del self.attempts[report.token]
                self.pool.tell(AgentIdle(agent, report.token))
        return stale

