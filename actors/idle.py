"""Idle retirement: an actor started on first use stops itself once unused.

Concurrency groups and job mutexes are started by their ``Directory`` the
first time a name is used. Names rendered per build (``group:
deploy-${{ ci.build_num }}``) would otherwise leave one actor (a task, a
mailbox, its state) behind per build, forever.

The actor owns one ``IdleRetirement``. After each message that may change
whether it is idle it calls ``settle(idle)``: becoming idle arms ONE timer
(``IDLE_AFTER`` later), becoming busy cancels it. When the timer's message
arrives the actor calls ``fire``, which stops it if it is still idle and
its mailbox is empty; otherwise it re-arms (something queued, e.g. an
``ask`` for a snapshot, may or may not make it busy) or waits for the next
idle moment. The check and the stop happen in one handler, without an
await in between, and the kernel frees the name at the stop request:

- a message told before is in the mailbox, so the actor does not stop and
  handles it;
- a message told after goes through the directory, which no longer finds
  the stopping actor and starts a fresh one under the same name.

No message is lost, and the fresh actor needs nothing from the old one:
it was idle, so it held nothing, and the limits come with each request.
"""

from __future__ import annotations

from typing import Any

from .core import Actor, TimerHandle

__all__ = ["IDLE_AFTER", "IdleCheck", "IdleRetirement"]

# Five minutes: long enough that a group or mutex in steady use (builds
# every few minutes) keeps its actor, so restarting one is rare and cheap
# (a spawn is tens of µs); short enough that names rendered per build do
# not pile up: at 1,000 builds a minute at most ~5,000 idle actors remain.
IDLE_AFTER = 300.0


class IdleCheck:
    """The idle timer fired. Each arming sends a new one: a stale one is not ``is`` the pending one."""

    __slots__ = ()


class IdleRetirement:
    """One actor's idle timer (at most one armed) and its stop decision."""

    __slots__ = ("after", "_timer", "_pending")

    def __init__(self, after: float = IDLE_AFTER) -> None:
        self.after = after  # seconds idle before the actor stops
        self._timer: TimerHandle | None = None
        self._pending: IdleCheck | None = None  # the check the armed timer sends

    def settle(self, actor: Actor, idle: bool) -> None:
        """Call after a message that may have changed whether ``actor`` is idle."""
        if not idle:
            if self._timer is not None:
                self._timer.cancel()  # harmless if it fired: _pending is cleared, its check is stale
                self._timer = self._pending = None
        elif self._timer is None:
            self._arm(actor)

    def fire(self, actor: Actor, check: Any, idle: bool) -> None:
        """Handle an ``IdleCheck``: stop ``actor`` if it is idle with an empty mailbox.

        Synchronous on purpose: between the mailbox check and the stop
        request nothing else runs, so nothing can be told to it meanwhile.
        """
        if check is not self._pending:
            return  # cancelled after it fired, or sent to an earlier incarnation
        self._timer = self._pending = None
        if not idle:
            return  # settle() arms again when it next becomes idle
        if actor.ref.statistics().depth:
            self._arm(actor)  # something is queued: look again a full period later
            return
        actor.stop()

    @property
    def armed(self) -> bool:
        """True while a check is pending (for tests and introspection)."""
        return self._pending is not None

    def _arm(self, actor: Actor) -> None:
        self._pending = check = IdleCheck()
        self._timer = actor.send_after(self.after, check)
