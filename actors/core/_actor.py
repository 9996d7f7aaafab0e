"""The ``Actor`` base class: private state, one message entry, lifecycle hooks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from ._cell import Cell, Ref, Reply
    from ._system import ActorSystem, Supervision
    from ._timers import TimerHandle

__all__ = ["Actor", "ActorFactory"]

ActorFactory: TypeAlias = "Callable[[], Actor]"


class Actor:
    """Subclass this and implement ``receive``.

    The kernel calls ``receive(message)`` for each message, one at a time;
    nothing else touches the actor's attributes. A plain ``def receive`` is
    the fast path: the system's dispatcher task drains the mailbox in
    batches, with no task switch between messages or between actors (so it
    must not rely on which task runs it). An ``async def receive`` is
    allowed for actors that must await while handling; it runs in the
    actor's own task, and the mailbox waits meanwhile. ``started`` and
    ``stopping`` always run in the actor's own task.

    For an ``ask`` the return value of ``receive`` is the reply, and an
    exception goes back to the asker. For a ``tell`` an exception crashes the
    actor: its supervisor restarts it (a fresh instance from the same factory,
    same mailbox, the failing message dropped) or escalates.
    """

    _cell: Cell
    _batches = False  # the class has its own batch_done (set for each subclass)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._batches = cls.batch_done is not Actor.batch_done

    # -- identity -----------------------------------------------------------

    @property
    def ref(self) -> Ref:
        """This actor's own ref, to hand to others."""
        return self._cell.ref

    @property
    def name(self) -> str:
        return self._cell.name

    @property
    def system(self) -> ActorSystem:
        return self._cell.system

    # -- hooks ----------------------------------------------------------------

    async def started(self) -> None:
        """Runs in the actor's task before the first message (and after each restart)."""

    async def stopping(self) -> None:
        """Runs after the last message of an orderly stop, after the children stopped."""

    def receive(self, message: Any) -> Any:
        """Handle one message; return the reply for an ``ask``."""
        raise NotImplementedError(f"{type(self).__name__} does not handle {type(message).__name__}")

    def batch_done(self) -> None:
        """Runs after each batch of messages (a plain ``receive`` only), before the actor yields.

        A batch is what the mailbox held, up to a bound: under load many
        messages, when idle one. Work that can serve a whole batch at once
        goes here: one ``Publish`` of the batch's events, one journal write
        of the builds it changed. It also runs when a message crashed the
        actor, so what the batch's earlier messages did is not lost.
        """

    def child_crashed(self, child: Ref, error: BaseException, restarting: bool) -> None:
        """A child crashed. Release here what it held; it restarts if ``restarting``."""

    # -- tools ----------------------------------------------------------------

    def spawn(
        self,
        factory: ActorFactory,
        *,
        name: str | None = None,
        supervision: Supervision | None = None,
    ) -> Ref:
        """Start a child actor supervised by this one."""
        return self.system.spawn(factory, name=name, supervision=supervision, parent=self.ref)

    def send_after(self, delay: float, message: Any) -> TimerHandle:
        """Tell ``message`` to this actor after ``delay`` seconds; cancel the handle to abort."""
        return self.system.timers.call_later(delay, self._cell.ref.tell, message)

    def send_at(self, deadline: float, message: Any) -> TimerHandle:
        """Tell ``message`` to this actor when the clock reaches ``deadline``."""
        return self.system.timers.call_at(deadline, self._cell.ref.tell, message)

    def now(self) -> float:
        """The system clock (trio's MockClock in tests)."""
        return self._cell.system.now()

    def start_task(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task owned by this actor.

        The task is cancelled when the actor stops or crashes; an exception
        escaping it crashes the actor.
        """
        task_group = self._cell.task_group
        if task_group is None:
            raise RuntimeError(f"actor {self.name!r} is not running")
        task_group.start_soon(fn, *args)  # type: ignore[arg-type]  # any awaitable-returning callable

    def defer_reply(self) -> Reply:
        """Take the reply slot of the ``ask`` being handled, to answer it later.

        ``receive``'s return value is then ignored; complete the slot with
        ``set_result``/``set_error`` (possibly from another actor it was passed to).
        """
        slot = self._cell.ask_slot
        if slot is None:
            raise RuntimeError("defer_reply() is only possible while handling an ask")
        self._cell.ask_slot = None
        return slot

    def stop(self) -> None:
        """Ask this actor to stop after handling what is already queued."""
        self._cell.request_stop()
