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
)

__all__ = [
    "RemoteNodeActor", "StaleAttempt", "UnknownSession", "Connect", "Assign", "CancelAttempt", "Hang", "Disconnected",
    "Draining",
    "RemoteJoin", "RemoteLost", "RemoteSilent", "RemoteHeard", "RemoteSeen", "RemoteLeave",
]  # fmt: skip


class StaleAttempt(ShunterError):
    """A report about an attempt that is over on the server (fenced off by its token)."""

    code = "stale_attempt"
    http_status = 409


class UnknownSession(NotFound):
    """The node has no such session (the server restarted, or the node left): register again."""

    code = "unknown_session"


# -- HTTP door -> node (asks) ------------------------------------------------------------------


class Connect(msgspec.Struct, frozen=True):
    agents: int


# -- proxy agent -> node ---------------------------------------------------------------------


class Assign(msgspec.Struct, frozen=True):
    index: int
    token: JobToken
    pipeline: Ref
    payload: JobPayload


class CancelAttempt(msgspec.Struct, frozen=True):
    token: JobToken
    reason: str


class Hang(msgspec.Struct, frozen=True):
    """The injected ``hang`` fault: nothing more is heard from agent ``index`` until the pool declares it lost."""

    index: int


# -- pool -> node ----------------------------------------------------------------------------


class Draining(msgspec.Struct, frozen=True):
    """The pool drains the node (its agent left, or ``DELETE /v1/nodes``)."""


class Disconnected(msgspec.Struct, frozen=True):
    """The pool declared agent ``index`` lost; ``token`` is the attempt it ended."""

    index: int
    token: JobToken | None


# -- node -> pool ----------------------------------------------------------------------------


class RemoteJoin(msgspec.Struct, frozen=True):
    """Add the agents ``node/0`` … ``node/agents-1`` that the pool does not have."""

    node: str
    agents: int


class RemoteLost(msgspec.Struct, frozen=True):
    """The agent process restarted (a new session): every agent of the node is lost."""

    node: str
    reason: str


class RemoteSilent(msgspec.Struct, frozen=True):
    """Nothing heard from the node since ``since`` (system clock)."""

    node: str
    since: float


class RemoteHeard(msgspec.Struct, frozen=True):
    node: str


class RemoteSeen(msgspec.Struct, frozen=True):
    node: str
    connected: bool
    last_seen: float  # wall clock


class RemoteLeave(msgspec.Struct, frozen=True):
    node: str


class _Check(msgspec.Struct, frozen=True):
    pass


class _Expire(msgspec.Struct, frozen=True):
    poll: int


_CHECK = _Check()


class _Attempt:
    __slots__ = ("index", "pipeline", "payload", "logs")

    def __init__(self, index: int, pipeline: Ref, payload: JobPayload) -> None:
        self.index = index
        self.pipeline = pipeline
        self.payload = payload
        self.logs: dict[int, StepLog] = {}


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

    async def started(self) -> None:
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
        if self.session is not None and self.attempts:
            self.pool.tell(RemoteLost(self.node, f"the agent process of node {self.node} registered again "
                                                 "(a new session): the attempts of its old session are lost"))  # fmt: skip
            self.attempts.clear()
        self.outbox.clear()
        self.cancels.clear()
        self.hung.clear()
        self._answer()
        self.session = uuid.uuid4().hex
        self.agents = message.agents
        self.connected = False  # _contact joins the agents
        self._contact()
        return Session(node=self.node, session=self.session, agents=[f"{self.node}/{i}" for i in range(self.agents)],
                       heartbeat_interval=self.heartbeat_interval, heartbeat_timeout=self.heartbeat_timeout,
                       lease_wait=self.lease_wait)  # fmt: skip

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
            self.pool.tell(RemoteJoin(self.node, self.agents))
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
        secrets = self.secrets.only(referenced(message.payload.job)) if self.secrets else None
        self.attempts[message.token] = _Attempt(message.index, message.pipeline, message.payload)
        self.outbox.append(Assignment(agent=message.index, token=message.token, payload=message.payload,
                                      secrets=secrets.values() if secrets else {}))  # fmt: skip
        self._answer()

    def _lease(self, body: LeaseBody) -> Any:
        self._session(body.session)
        self._contact()
        stale = self._apply(body.reports)
        stale.extend(token for token in body.running if token not in self.attempts)
        if self.parked is not None:
            self._answer()  # an older poll of this node (its client gave up on it)
        if self.outbox or self.cancels or stale or body.wait <= 0:
            return self._reply(stale)
        self.polls += 1
        timer = self.send_after(min(body.wait, self.lease_wait), _Expire(self.polls))
        self.parked = (self.defer_reply(), timer, self.polls)
        return None

    def _reply(self, stale: list[JobToken] | None = None) -> LeaseReply:
        reply = LeaseReply(jobs=self.outbox, cancel=self.cancels, stale=stale or [], draining=self.leaving)
        self.outbox, self.cancels = [], []
        return reply

    def _answer(self) -> None:
        """Answer the parked lease, if any, with what there is now."""
        if self.parked is None:
            return
        slot, timer, _ = self.parked
        self.parked = None
        timer.cancel()
        slot.set_result(self._reply())
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
            if attempt.index in self.hung:
                continue  # as a hung local agent: no word until it is declared lost
            agent = f"{self.node}/{attempt.index}"
            records: list[Any] = []
            ended = False
            for record in report.records:
                if self.secrets:  # masked again here, every secret: the machine may hold what a job left
                    record = _masked(record, self.secrets)
                if isinstance(record, Log):
                    log = attempt.logs.get(record.index)
                    if log is not None:
                        for line in record.lines:
                            log.append(line)
                elif isinstance(record, StepStart):
                    steps = attempt.payload.job.steps
                    if record.index >= len(steps):
                        continue  # no such step: nothing to log it to (the build ignores it too)
                    # the server's own log (a file with durable state), as a local agent makes it
                    log = attempt.logs[record.index] = step_log(attempt.payload, steps[record.index])
                    records.append(StepStarted(record.index, log, record.time))
                elif isinstance(record, StepEnd):
                    records.append(StepEnded(record.index, record.status, record.reason, record.exit_code,
                                             record.outputs, record.exported_env, record.time))  # fmt: skip
                elif isinstance(record, StepSkip):
                    records.append(StepNotRun(record.index, record.status, record.reason))
                elif isinstance(record, Started):
                    records.append(JobStarted(self.node, agent, record.context, record.time))
                elif isinstance(record, Ended):
                    records.append(JobEnded(record.status, record.reason, record.time))
                    ended = True
                    break
            if records:
                attempt.pipeline.tell(AgentReport(report.token, tuple(records)))
            if ended:
                del self.attempts[report.token]
                self.pool.tell(AgentIdle(agent, report.token))
        return stale


def _masked(record: Any, secrets: Secrets) -> Any:
    """``record`` with the attempt's secrets masked, should its agent not have masked them itself."""
    mask = secrets.mask
    if isinstance(record, Log):
        return Log(record.index, secrets.mask_all(record.lines))
    if isinstance(record, StepEnd):
        return msgspec.structs.replace(record, reason=record.reason and mask(record.reason),
                                       outputs=secrets.mask_values(record.outputs))  # fmt: skip
    if isinstance(record, (StepSkip, Ended)) and record.reason:
        return msgspec.structs.replace(record, reason=mask(record.reason))
    return record
