"""The agent protocol under ``/v1/agent/`` (docs/design.md §11): what a ``shunter agent``
process and the server say to each other, as msgspec Structs.

The server never connects to an agent; the agent makes every request:

1. ``POST /v1/agent/register`` (``Register`` → ``Session``): the node joins
   (or rejoins, under the same name) its pool with ``agents`` agents named
   ``NODE/0`` … ``NODE/N-1``. A new session replaces the node's old one:
   the attempts it still runs (``running``: after a server restart, or a
   lost session) carry on when the server still has them on those agents
   (their results count, their logs go on); the other attempts the node
   held are lost. Registering again with other ``agents`` or ``labels``
   changes the node: agents past the new count leave, new ones join.
2. ``POST /v1/agent/lease`` (``LeaseBody`` → ``LeaseReply``): a long poll.
   It carries the reports the agent has ready (a finished attempt's result
   rides on the next lease) and the attempts it is running; the server
   answers as soon as it has work (``jobs``, possibly several) or something
   to stop (``cancel``, ``stale``), else after ``wait`` seconds with nothing.
   An assignment counts as delivered once a later request names it (in
   ``running`` or in a report): a lease that does not is answered with it
   again, with the same token (a reply lost on the way), and the agent
   ignores an assignment it already has. Delivery is at least once;
   running is once.
   Every request is a heartbeat; a lease waits at most ``lease_wait``
   (never longer than the heartbeat interval), so a live agent is heard at
   least that often.
3. ``POST /v1/agent/report`` (``ReportBody`` → ``ReportReply``): step events
   and log chunks while a lease is parked. An attempt the server no longer
   knows (its agent was declared lost, it was retried elsewhere) gets 409
   ``stale_attempt``, naming the attempts; the others in the body are applied.
4. ``POST /v1/agent/leave`` (``LeaveBody``): the node drains; running
   attempts finish, then it is removed. A node drained on the server
   (``DELETE /v1/nodes/{name}``) says ``draining`` in its lease replies: the
   agent finishes what it runs and exits instead of registering again.

Every report names its attempt by ``JobToken`` — the attempt number is the
fencing token. An attempt listed in ``stale`` (or in a 409) is over on the
server: the agent kills its processes and drops what it would still say
about it. One encoder and one decoder per type serve every message.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

from ..execution.secrets import Secrets
from ..model.messages import JobPayload, JobToken
from ..model.vocab import JobStatus, StepStatus

__all__ = [
    "Register", "Holding", "Session", "Started", "StepStart", "Log", "StepEnd", "StepSkip", "Ended", "Record",
    "Report", "LeaseBody", "Assignment", "Cancel", "LeaseReply", "ReportBody", "ReportReply", "LeaveBody",
    "MAX_LEASE_WAIT", "encode", "decode", "NAME_PATTERN", "mask_record",
]  # fmt: skip

MAX_LEASE_WAIT = 25.0
"""The longest a lease is held open (seconds); the server shortens it to its heartbeat interval."""

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_Name = Annotated[str, msgspec.Meta(pattern=NAME_PATTERN)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Action = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]{1,128}$")]
_Session = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Index = Annotated[int, msgspec.Meta(ge=0, le=1023)]
_Lines = Annotated[list[str], msgspec.Meta(max_length=100_000)]
_Many = Annotated[int, msgspec.Meta(ge=0)]


class Holding(msgspec.Struct, frozen=True, kw_only=True):
    """An attempt an agent process still runs (or has results of to deliver) on its agent ``NODE/agent``."""

    agent: Annotated[int, msgspec.Meta(ge=0, le=1023)]
    token: JobToken


class Register(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """``POST /v1/agent/register``: the node this agent process serves, and what it still runs
    (defaults are left out, so that an agent holding nothing registers with a server that predates
    ``running``).

    ``actions`` names the actions its agents can run besides the built-ins
    (those its ``--actions`` modules add). A job that uses an action the
    node does not offer (one registered on the server only) is never placed
    on it.
    """

    name: _Name
    pool: _Name = "default"
    labels: Annotated[list[_Label], msgspec.Meta(max_length=64)] = msgspec.field(default_factory=list)
    agents: Annotated[int, msgspec.Meta(ge=1, le=1024)] = 1
    running: Annotated[list[Holding], msgspec.Meta(max_length=1024)] = msgspec.field(default_factory=list)
    actions: Annotated[list[_Action], msgspec.Meta(max_length=1024)] = msgspec.field(default_factory=list)


class Session(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to ``register``: send ``session`` with every later request."""

    node: str
    session: str
    agents: list[str]
    heartbeat_interval: float
    heartbeat_timeout: float
    lease_wait: float


# -- what an agent says about an attempt (in order) ---------------------------------------


class Started(msgspec.Struct, frozen=True, tag="started"):
    """The attempt started, with the agent's context snapshot."""

    context: dict[str, str]
    time: float


class StepStart(msgspec.Struct, frozen=True, tag="step_start"):
    index: _Index
    time: float


class Log(msgspec.Struct, frozen=True, tag="log"):
    """Output lines of a running step, in order, after those sent before."""

    index: _Index
    lines: _Lines


class StepEnd(msgspec.Struct, frozen=True, tag="step_end"):
    index: _Index
    status: StepStatus
    reason: str | None
    exit_code: int | None
    outputs: dict[str, str]
    exported_env: dict[str, str]
    time: float


class StepSkip(msgspec.Struct, frozen=True, tag="step_skip"):
    """A step that did not run (``SKIP`` or ``UNEXEC``)."""

    index: _Index
    status: StepStatus  # SKIP or UNEXEC
    reason: str


class Ended(msgspec.Struct, frozen=True, tag="ended"):
    """The attempt is over; the agent is free."""

    status: JobStatus
    reason: str | None
    time: float


Record = Started | StepStart | Log | StepEnd | StepSkip | Ended


class Report(msgspec.Struct, frozen=True, kw_only=True):
    """What one agent says about one attempt since its last report."""

    token: JobToken
    records: Annotated[list[Record], msgspec.Meta(max_length=10_000)]


# -- requests and answers ---------------------------------------------------------------------


class LeaseBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/agent/lease``: reports to deliver, attempts running, how long to wait for work."""

    node: _Name
    session: _Session
    reports: Annotated[list[Report], msgspec.Meta(max_length=4096)] = msgspec.field(default_factory=list)
    running: Annotated[list[JobToken], msgspec.Meta(max_length=1024)] = msgspec.field(default_factory=list)
    wait: Annotated[float, msgspec.Meta(ge=0, le=MAX_LEASE_WAIT)] = MAX_LEASE_WAIT


class Assignment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One attempt to run on agent ``NODE/agent``.

    ``secrets`` holds the values of the secrets the job references (``${{ secrets.NAME }}``) and
    no others: the agent uses them for this attempt only, masks them as ``***`` in all it reports,
    and forgets them when the attempt ends. They never appear in a log, event or error message.
    """

    agent: int
    token: JobToken
    payload: JobPayload
    secrets: dict[str, str] = msgspec.field(default_factory=dict)

    def __repr__(self) -> str:  # the secrets' values stay out of any trace or log line
        return f"Assignment(agent={self.agent}, token={self.token}, secrets={sorted(self.secrets)})"


class Cancel(msgspec.Struct, frozen=True, kw_only=True):
    """Stop this attempt (cancelled by a user, timed out): the agent reports it ``CANCELED``."""

    token: JobToken
    reason: str


class LeaseReply(msgspec.Struct, frozen=True, kw_only=True):
    """Work (``jobs``), attempts to cancel, and attempts that are over on the server
    (``stale``: kill them and say nothing more about them)."""

    jobs: list[Assignment] = msgspec.field(default_factory=list)
    cancel: list[Cancel] = msgspec.field(default_factory=list)
    stale: list[JobToken] = msgspec.field(default_factory=list)
    draining: bool = False  # the node is leaving (its agent asked, or DELETE /v1/nodes): finish, then exit


class ReportBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/agent/report``: step events and log chunks of running attempts."""

    node: _Name
    session: _Session
    reports: Annotated[list[Report], msgspec.Meta(max_length=4096)]


class ReportReply(msgspec.Struct, frozen=True, kw_only=True):
    accepted: _Many


class LeaveBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``POST /v1/agent/leave``: drain this node (running attempts finish), then remove it."""

    node: _Name
    session: _Session


_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}
T = TypeVar("T")


def mask_record(record: Record, secrets: Secrets) -> Record:
    """``record`` with every secret value masked (``***``): the server's own check on what an agent
    reports, which the agent masked already (docs/design.md §11)."""
    if isinstance(record, Log):
        return Log(record.index, secrets.mask_all(record.lines))
    if isinstance(record, StepEnd):
        return msgspec.structs.replace(record, reason=record.reason and secrets.mask(record.reason),
                                       outputs=secrets.mask_values(record.outputs))  # fmt: skip
    if isinstance(record, (StepSkip, Ended)) and record.reason:
        return msgspec.structs.replace(record, reason=secrets.mask(record.reason))
    return record


def encode(message: Any) -> bytes:
    """JSON bytes of a protocol message (one encoder for all)."""
    return _ENCODER.encode(message)


def decode(kind: type[T], data: bytes) -> T:
    """Decode ``data`` as ``kind`` (one decoder per type, made once)."""
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.json.Decoder(kind)
    result: T = decoder.decode(data)
    return result
