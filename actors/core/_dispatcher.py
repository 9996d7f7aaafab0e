"""The dispatcher: one task that hands waiting actors their mail.

An actor with a plain ``def receive`` cannot await while it handles a
message, so which task calls ``receive`` makes no difference to it. While
such an actor waits for mail its own task sleeps, and a ``tell`` puts the
actor on the dispatcher's ready list instead of waking that task. The
dispatcher drains the ready actors' mailboxes one after another, each in a
batch followed by its ``batch_done``, so a chain of tells (a pipeline to a
pool to an agent and back) runs as calls in one pass of one task, not as a
task switch and an event-loop pass per actor.

An actor's own task keeps everything else: ``started`` before the first
message, a crash and the restart after it, the task group of its helper
tasks, and, once it is asked to stop, the rest of its mailbox and
``stopping``. An actor is served by one of the two at a time (``Cell.lent``),
and each batch runs to its end without awaiting, so its messages are still
handled one at a time, in order.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from ._backend import Backend

if TYPE_CHECKING:
    from ._cell import Cell

__all__ = ["Dispatcher", "MailWaker"]

# Messages handled in one pass before the dispatcher lets other tasks run
# (clients, sockets, timers): a checkpoint costs ~5 µs, and a pass this long
# keeps the event loop waiting ~1 ms at most.
PASS = 512


class MailWaker:
    """What a ``tell`` wakes for an actor the dispatcher serves: the actor goes on the ready list, once."""

    __slots__ = ("cell", "ready", "dispatcher")

    def __init__(self, cell: Cell, dispatcher: Dispatcher) -> None:
        self.cell = cell
        self.ready = dispatcher.ready
        self.dispatcher = dispatcher.parker

    def unpark(self) -> None:
        cell = self.cell
        if not cell.scheduled:
            cell.scheduled = True
            self.ready.append(cell)
            self.dispatcher.unpark()


class Dispatcher:
    """The system's task that runs ready actors' batches (see the module docstring)."""

    __slots__ = ("ready", "parker", "checkpoint", "passes")

    def __init__(self, backend: Backend) -> None:
        self.ready: deque[Cell] = deque()
        self.parker = backend.new_parker()
        self.checkpoint = backend.checkpoint
        self.passes = 0

    def waker(self, cell: Cell) -> MailWaker:
        return MailWaker(cell, self)

    async def run(self) -> None:
        ready, park, checkpoint = self.ready, self.parker.park, self.checkpoint
        while True:
            if not ready:
                await park()
                continue
            self.passes += 1
            spent = 0
            while ready and spent < PASS:
                cell = ready.popleft()
                cell.scheduled = False  # a tell from here on (its own batch's too) puts it back
                if not cell.lent:
                    continue  # its own task serves it now (starting, stopping or crashed)
                processed = cell.processed
                cell.lend(PASS - spent)
                spent += cell.processed - processed + 1  # +1: a visit costs something even when it handles nothing
                if cell.queue and cell.lent and not cell.scheduled:  # more than one batch was waiting
                    cell.scheduled = True
                    ready.append(cell)
            if ready:
                await checkpoint()
