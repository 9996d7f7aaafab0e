"""Idle retirement: an actor started on first use stops itself once unused.

Concurrency groups and job mutexes are started by their ``Directory`` the
first time a name is used. Names rendered per build (``group:
deploy-${{ ci.build_num }}``) would otherwise leave one actor (a task, a
mailbox, its state) behind per build, forever.

The actor owns one ``IdleRetirement`` and calls ``settle(idle)`` after each
message that may change whether it is idle. Becoming idle notes the time
and, unless a check is pending already, arms ONE timer for ``IDLE_AFTER``
later; becoming busy only forgets the idle time. The timer is not cancelled
when the actor gets busy: a group that goes idle between builds (say
``max-parallel: 1`` and builds one after the other) would otherwise push
and cancel a timer per build, which tripled the group's own work per
build; ignoring it when it fires costs one clock read per idle moment. When the check arrives,
``fire`` drops it if the actor is busy (the next idle moment arms anew),
re-arms it for the end of the idle period if the actor became idle again
meanwhile, re-arms it a full period later if the mailbox is not empty
(something is queued: e.g. an ``Admit``, or an ``ask`` for a snapshot),
and otherwise stops the actor. The check and the stop happen in one
handler, without an await in between, and the kernel frees the name at
the stop request:

- a message told before is in the mailbox, so the actor does not stop and
  handles it;
- a message told after goes through the directory, which no longer finds
  the stopping actor and starts a fresh one under the same name.

No message is lost, and the fresh actor needs nothing from the old one:
it was idle, so it held nothing, and the limits come with each request.
"""

from __future__ import annotations

import math
from typing import Any

from ..core import Actor

__all__ = ["IDLE_AFTER", "IdleCheck", "IdleRetirement"]

# Five minutes: long enough that a group or mutex in steady use (builds
# every few minutes) keeps its actor, so restarting one is rare and cheap
# (a spawn is tens of µs); short enough that names rendered per build do
# not pile up: at 1,000 builds a minute at most ~5,000 idle actors remain.
IDLE_AFTER = 300.0


class IdleCheck:
    """The idle timer fired. Each arming sends a new one, so a check armed by
    an earlier incarnation of the actor (before a restart) is not ``is`` the
    pending one and is ignored."""

    __slots__ = ()


class IdleRetirement:
    """One actor's idle time, its one pending check and its stop decision.

    ``after=math.inf`` never arms a timer: the actor never retires.
    """

    __slots__ = ("after", "_idle_since", "_pending")

    def __init__(self, after: float = IDLE_AFTER) -> None:
        self.after = after  # seconds idle before the actor stops
        self._idle_since: float | None = None  # when it last became idle; None while busy
        self._pending: IdleCheck | None = None  # the check the one armed timer sends

    def settle(self, actor: Actor, idle: bool) -> None:
        """Call after a message that may have changed whether ``actor`` is idle."""
        if not idle:
            self._idle_since = None  # a pending check will find it busy and drop itself
        elif self._idle_since is None:
            self._idle_since = now = actor.now()
            if self._pending is None:
                self._arm(actor, now + self.after)

    def fire(self, actor: Actor, check: Any) -> None:
        """Handle an ``IdleCheck``: stop ``actor`` if it has been idle long enough and its mailbox is empty.

        Synchronous on purpose: between the mailbox check and the stop
        request nothing else runs, so nothing can be told to it meanwhile.
        """
        if check is not self._pending:
            return  # sent to an earlier incarnation of the actor
        self._pending = None
        idle_since = self._idle_since
        if idle_since is None:
            return  # busy: settle() arms again at its next idle moment
        now = actor.now()
        due = idle_since + self.after
        if now < due:
            self._arm(actor, due)  # busy and idle again since this check was armed
        elif actor.ref.statistics().depth:
            self._arm(actor, now + self.after)  # something is queued: look again a full period later
        else:
            actor.stop()

    def _arm(self, actor: Actor, deadline: float) -> None:
        if deadline == math.inf:
            return
        self._pending = check = IdleCheck()
        actor.send_at(deadline, check)
