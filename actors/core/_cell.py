"""The machinery behind one actor: its mailbox, its task loop and its ref.

A cell owns the mailbox (a deque plus a wake-up: the cheapest mailbox on both
backends, docs/design.md §2) and runs the actor's own task. The mailbox is
drained in batches, yielding once per batch rather than once per message:
by the system's dispatcher (``_dispatcher``) for a plain ``receive``, while
the own task waits for a stop or a crash; by the own task for an async one.
That is where the kernel's throughput comes from.
"""

from __future__ import annotations

import inspect
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from ._backend import Backend, Parker, Waker
from ._errors import ActorCrashed, ActorStopped, AskTimeout
from ._timers import Lane

if TYPE_CHECKING:
    from ._actor import Actor, ActorFactory
    from ._system import ActorSystem, Supervision

__all__ = ["Ref", "Reply", "MailboxStatistics", "DEFAULT_ASK_TIMEOUT"]

logger = logging.getLogger("actors")

DEFAULT_ASK_TIMEOUT = 30.0
# Messages handled before a fairness checkpoint. Large enough that the
# checkpoint (~5 µs) is noise per message, small enough that one busy actor
# cannot starve the others for long.
BATCH = 256

_RUNNING, _STOPPING, _STOPPED = "running", "stopping", "stopped"


class MailboxStatistics(msgspec.Struct, frozen=True):
    """A snapshot of one actor's mailbox."""

    depth: int
    processed: int
    peak_depth: int
    state: str
    restarts: int


class Reply:
    """One-shot reply slot of an ``ask``: never travels through the asker's mailbox.

    An actor that cannot answer at once takes the slot with
    ``Actor.defer_reply()``, may pass it along in messages, and completes it
    later with ``set_result`` or ``set_error``. Only the first completion counts.
    """

    __slots__ = ("parker", "done", "value", "error")

    def __init__(self, parker: Parker) -> None:
        self.parker = parker
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None

    def set_result(self, value: Any) -> None:
        if not self.done:
            self.done = True
            self.value = value
            self.parker.unpark()

    def set_error(self, error: BaseException) -> None:
        if not self.done:
            self.done = True
            self.error = error
            self.parker.unpark()



class _Ask(Reply):
    """An ask: the message in the mailbox, its reply slot, and its deadline in a timer lane (``Expiring``).

    One object, not three (message, slot, timer entry): an ask allocates it and a parker, nothing else.
    """

    __slots__ = ("message", "actor", "timeout", "deadline")

    def __init__(self, parker: Parker, message: Any, actor: str, timeout: float, deadline: float) -> None:
        self.parker = parker
        self.done = False
        self.value = None
        self.error = None
        self.message = message
        self.actor = actor
        self.timeout = timeout
        self.deadline = deadline

    @property
    def settled(self) -> bool:
        return self.done

    def expire(self) -> None:
        self.set_error(AskTimeout(self.actor, type(self.message).__name__, self.timeout))


class _ChildExit:
    """Kernel signal to a parent: a child crashed (and is or is not restarting)."""

    __slots__ = ("child", "error", "restarting")

    def __init__(self, child: Ref, error: BaseException, restarting: bool) -> None:
        self.child = child
        self.error = error
        self.restarting = restarting


class _Escalation:
    """Kernel signal to a parent: a child crashed past its restart limit."""

    __slots__ = ("child", "error")

    def __init__(self, child: Ref, error: BaseException) -> None:
        self.child = child
        self.error = error


class Ref:
    """The only handle other code gets to an actor: ``tell`` and ``ask``."""

    __slots__ = ("_cell",)

    def __init__(self, cell: Cell) -> None:
        self._cell = cell

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def stopped(self) -> bool:
        """True once the actor no longer accepts messages."""
        return self._cell.state is not _RUNNING

    def tell(self, message: Any) -> None:
        """Queue ``message`` for the actor. Never blocks.

        A message told to a stopped or stopping actor is dropped and counted
        as a dead letter in the system's statistics.
        """
        cell = self._cell
        if cell.state is not _RUNNING:
            cell.system._dead_letter(cell.name, message)
            return
        queue = cell.queue
        queue.append(message)
        if len(queue) > cell.peak_depth:
            cell.peak_depth = len(queue)
        cell.parker.unpark()

    async def ask(self, message: Any, *, timeout: float = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``message`` and wait for the actor's reply (what its ``receive`` returns).

        An exception raised by the actor while handling the message is raised
        here (and the actor keeps running). Raises ``AskTimeout`` past
        ``timeout`` seconds and ``ActorStopped`` if the actor stops first.
        """
        cell = self._cell
        if cell.state is not _RUNNING:
            raise ActorStopped(cell.name, type(message).__name__)
        backend = cell.backend
        slot = _Ask(backend.new_parker(), message, cell.name, timeout, cell.system.now() + timeout)
        cell.queue.append(slot)
        cell.parker.unpark()
        # The deadline is a timer-service entry, not a cancel scope: a scope
        # enter+exit costs as much as the rest of the round trip (docs/design.md §2).
        expiry = cell.system.timers.expire_later(timeout, slot)
        try:
            await slot.parker.park()
        finally:
            slot.done = True  # a late reply is dropped
            if isinstance(expiry, Lane):
                expiry.settle()
            else:
                expiry.cancel()
        if slot.error is not None:
            raise slot.error
        return slot.value

    def statistics(self) -> MailboxStatistics:
        """Depth, processed count and peak depth of the actor's mailbox."""
        cell = self._cell
        return MailboxStatistics(
            depth=len(cell.queue),
            processed=cell.processed,
            peak_depth=cell.peak_depth,
            state=cell.state,
            restarts=cell.restarts,
        )

    def __repr__(self) -> str:
        return f"<Ref {self._cell.name} {self._cell.state}>"


class Cell:
    """Runs one actor: its incarnations (restarts), mailbox and child list."""

    def __init__(
        self,
        system: ActorSystem,
        name: str,
        factory: ActorFactory,
        supervision: Supervision,
        parent: Cell | None,
    ) -> None:
        self.system = system
        self.backend: Backend = system.backend
        self.name = name
        self.factory = factory
        self.supervision = supervision
        self.parent = parent
        self.children: list[Cell] = []
        self.queue: deque[Any] = deque()
        self.own_parker = self.backend.new_parker()  # the cell's own task sleeps on it
        self.parker: Waker = self.own_parker  # what a message wakes (``_incarnate``)
        self.lent = False  # the dispatcher serves the mailbox (the own task waits for a stop or a crash)
        self.scheduled = False  # on the dispatcher's ready list
        self.crash: BaseException | None = None  # what crashed the actor in the dispatcher's hands
        self.state = _RUNNING
        self.processed = 0
        self.peak_depth = 0
        self.restarts = 0
        self.restart_times: deque[float] = deque()
        self.ref = Ref(self)
        self.ask_slot: Reply | None = None  # the reply of the ask being handled
        self.actor: Actor = self._incarnate()
        self.task_group: anyio.abc.TaskGroup | None = None
        self.cancel_scope = anyio.CancelScope()
        self.stopped_event = anyio.Event()

    def _incarnate(self) -> Actor:
        actor = self.factory()
        actor._cell = self
        self.async_receive = inspect.iscoroutinefunction(actor.receive)
        # a plain receive is handed its mail by the dispatcher; an async one by the actor's own task
        self.parker = self.own_parker if self.async_receive else self.system.dispatcher.waker(self)
        return actor

    # -- control ----------------------------------------------------------

    def request_stop(self) -> None:
        """Stop accepting messages; the loop handles what is queued, then stops.

        The name is released at once: ``lookup`` finds only running actors,
        so a new actor may take the name while this one finishes its queue.
        """
        if self.state is _RUNNING:
            self.state = _STOPPING
            self.system._release_name(self)
            self.own_parker.unpark()

    def signal(self, message: _ChildExit | _Escalation) -> None:
        """Deliver a kernel signal; dropped if this actor is already stopping."""
        if self.state is _RUNNING:
            self.queue.append(message)
            self.parker.unpark()

    async def stop_children(self, timeout: float) -> None:
        for child in reversed(list(self.children)):
            await self.system._stop_cell(child, timeout)

    # -- the task ---------------------------------------------------------

    async def main(self) -> None:
        """The actor's task: incarnations until it stops or escalates."""
        with self.cancel_scope:
            try:
                while True:
                    error = await self._incarnation()
                    if error is None or self.state is not _RUNNING:
                        break  # stopped, or crashed while stopping: no restart
                    if not self._may_restart():
                        self._escalate(error)
                        break
                    self.restarts += 1
                    if self.parent is not None:
                        self.parent.signal(_ChildExit(self.ref, error, True))
                    try:
                        self.actor = self._incarnate()
                    except Exception as exc:
                        logger.exception("actor %s could not be restarted", self.name)
                        self._escalate(exc)
                        break
            finally:
                self._close()

    async def _incarnation(self) -> BaseException | None:
        """Run one instance of the actor; return the error that crashed it, if any."""
        try:
            async with anyio.create_task_group() as task_group:
                self.task_group = task_group
                await self.actor.started()
                error = await self._serve()
                await self.stop_children(self.system.shutdown_timeout)
                if error is None:
                    await self.actor.stopping()
                task_group.cancel_scope.cancel()
        except Exception as exc:  # started(), stopping() or one of the actor's tasks
            error = _unwrap(exc)
            logger.error("actor %s crashed: %r", self.name, error, exc_info=error)
            await self.stop_children(self.system.shutdown_timeout)
        finally:
            self.task_group = None
        return error

    async def _serve(self) -> BaseException | None:
        """Handle messages until the actor is asked to stop or crashes: the error, if it crashed."""
        if self.async_receive:
            return await self._serve_async()
        queue = self.queue
        # A crash the dispatcher met while the last incarnation was already being cancelled (one of its
        # helper tasks crashed) was never taken: it is that incarnation's, not this one's.
        self.crash = None
        self.lent = True
        try:
            while self.crash is None and self.state is _RUNNING:
                if queue:  # mail that came before it was lent (while starting): the dispatcher's now
                    self.parker.unpark()
                await self.own_parker.park()
        finally:
            self.lent = False
        error, self.crash = self.crash, None
        if error is not None:
            return error
        while queue:  # asked to stop: the rest of the mailbox, here
            error = self.drain(BATCH)
            if error is not None:
                return error
            if queue:
                await self.backend.checkpoint()
        return None

    def lend(self, budget: int) -> None:
        """One batch (at most ``budget`` messages, and ``BATCH``) in the dispatcher's hands; a crash goes
        to the actor's own task."""
        error = self.drain(min(budget, BATCH))
        if error is not None:
            self.lent = False
            self.crash = error
            self.own_parker.unpark()

    def drain(self, budget: int) -> BaseException | None:
        """Handle up to ``budget`` queued messages of a plain ``receive``, then ``batch_done``.

        Returns the error that crashed the actor, if one did (a ``tell``'s;
        an ``ask``'s goes back to the asker).
        """
        queue = self.queue
        actor = self.actor
        receive = actor.receive
        left = budget
        while queue and left:
            left -= 1
            message = queue.popleft()
            kind = type(message)
            if kind is _Ask:
                self.ask_slot = message
                try:
                    result = receive(message.message)
                except Exception as exc:
                    message.set_error(exc)
                else:
                    if self.ask_slot is message:  # not deferred
                        message.set_result(result)
                self.ask_slot = None
            elif kind is _ChildExit or kind is _Escalation:
                error = self._signalled(message)
                if error is not None:
                    self.processed += budget - left
                    return error
            else:
                try:
                    receive(message)
                except Exception as exc:
                    self.processed += budget - left
                    return self._crashed(exc, message, actor.batch_done if actor._batches else None)
        self.processed += budget - left  # counted once per batch: the statistics are read between batches
        if actor._batches:
            try:
                actor.batch_done()
            except Exception as exc:
                return self._crashed(exc, "batch_done")
        return None

    async def _serve_async(self) -> BaseException | None:
        """``_serve`` for an ``async def receive``: the actor's own task handles every message."""
        queue = self.queue
        checkpoint = self.backend.checkpoint
        receive = self.actor.receive
        while True:
            if not queue:
                if self.state is not _RUNNING:
                    return None
                await self.own_parker.park()
                continue
            budget = BATCH
            while queue and budget:
                budget -= 1
                message = queue.popleft()
                self.processed += 1
                kind = type(message)
                if kind is _Ask:
                    self.ask_slot = message
                    try:
                        result = await receive(message.message)
                    except Exception as exc:
                        message.set_error(exc)
                    else:
                        if self.ask_slot is message:
                            message.set_result(result)
                    self.ask_slot = None
                elif kind is _ChildExit or kind is _Escalation:
                    error = self._signalled(message)
                    if error is not None:
                        return error
                else:
                    try:
                        await receive(message)
                    except Exception as exc:
                        return self._crashed(exc, message)
            if queue:
                await checkpoint()

    def _signalled(self, signal: _ChildExit | _Escalation) -> BaseException | None:
        """A kernel signal from a child: the error that crashes this actor, if it does."""
        actor = self.actor
        batch_done = actor.batch_done if actor._batches and not self.async_receive else None
        if type(signal) is _Escalation:
            return self._crashed(ActorCrashed(signal.child.name, signal.error), signal, batch_done)
        try:
            actor.child_crashed(signal.child, signal.error, signal.restarting)  # type: ignore[union-attr]
        except Exception as exc:
            return self._crashed(exc, signal, batch_done)
        return None

    def _crashed(self, error: BaseException, message: Any,
                 batch_done: Callable[[], None] | None = None) -> BaseException:  # fmt: skip
        if batch_done is not None:  # what the batch's earlier messages did still goes out
            try:
                batch_done()
            except Exception:
                logger.exception("actor %s: batch_done failed after a crash", self.name)
        logger.error(
            "actor %s crashed handling %s: %r", self.name, type(message).__name__, error, exc_info=error
        )
        return error

    def _may_restart(self) -> bool:
        policy = self.supervision
        if policy.max_restarts <= 0:
            return False
        now = self.system.now()
        times = self.restart_times
        while times and now - times[0] > policy.within:
            times.popleft()
        if len(times) >= policy.max_restarts:
            return False
        times.append(now)
        return True

    def _escalate(self, error: BaseException) -> None:
        if self.parent is not None:
            self.parent.signal(_ChildExit(self.ref, error, False))
            if self.supervision.escalate:
                self.parent.signal(_Escalation(self.ref, error))
        elif self.supervision.escalate:
            self.system._fatal(ActorCrashed(self.name, error))

    def _close(self) -> None:
        self.state = _STOPPED
        while self.queue:
            message = self.queue.popleft()
            if type(message) is _Ask:
                message.set_error(ActorStopped(self.name, type(message.message).__name__))
            else:
                self.system._dead_letter(self.name, message)
        self.system._forget(self)
        if self.parent is not None and self in self.parent.children:
            self.parent.children.remove(self)
        self.stopped_event.set()


def _unwrap(error: BaseException) -> BaseException:
    """anyio task groups wrap errors in groups; report the single cause when there is one."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
