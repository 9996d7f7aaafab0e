"""tell ordering, ask/reply, ask errors and mailbox statistics, on both backends."""

from __future__ import annotations

from typing import Any

import pytest
import anyio
import anyio.lowlevel

from actors.core import Actor, ActorStopped, AskTimeout, open_system

from .helpers import Hang, Recorder

pytestmark = pytest.mark.anyio


async def test_tell_delivers_in_order() -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Recorder(log), name="recorder")
        for i in range(1000):
            ref.tell(i)
        assert await ref.ask("sync") == "sync"
    assert log == [*range(1000), "sync"]


async def test_tell_from_many_senders_keeps_each_senders_order() -> None:
    log: list[Any] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Recorder(log))

        async def sender(tag: str) -> None:
            for i in range(100):
                ref.tell((tag, i))
                if i % 7 == 0:
                    await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            for tag in "abc":
                tg.start_soon(sender, tag)
        await ref.ask("sync")
    for tag in "abc":
        assert [i for t, i in log[:-1] if t == tag] == list(range(100))


async def test_ask_returns_what_receive_returns() -> None:
    class Doubler(Actor):
        def receive(self, message: int) -> int:
            return message * 2

    async with open_system() as system:
        ref = system.spawn(Doubler)
        assert [await ref.ask(i) for i in range(5)] == [0, 2, 4, 6, 8]


async def test_async_receive_replies_too() -> None:
    class Slow(Actor):
        async def receive(self, message: int) -> int:
            await anyio.lowlevel.checkpoint()
            return message + 1

    async with open_system() as system:
        assert await system.spawn(Slow).ask(41) == 42


async def test_ask_error_goes_to_asker_and_actor_survives() -> None:
    class Picky(Actor):
        def receive(self, message: int) -> int:
            if message < 0:
                raise ValueError(f"negative: {message}")
            return message

    async with open_system() as system:
        ref = system.spawn(Picky, name="picky")
        with pytest.raises(ValueError, match="negative: -1"):
            await ref.ask(-1)
        assert await ref.ask(3) == 3
        assert ref.statistics().restarts == 0


async def test_ask_timeout_names_actor_and_message() -> None:
    class Ping:
        pass

    async with open_system(shutdown_timeout=0.01) as system:  # Hang never stops by itself
        ref = system.spawn(Hang, name="hanger")
        with pytest.raises(AskTimeout) as caught:
            await ref.ask(Ping(), timeout=0.05)
        assert "hanger" in str(caught.value) and "Ping" in str(caught.value)
        assert caught.value.timeout == 0.05


async def test_ask_to_stopped_actor_fails_at_once() -> None:
    async with open_system() as system:
        ref = system.spawn(Recorder, name="gone")
        await system.stop(ref)
        assert ref.stopped
        with pytest.raises(ActorStopped, match="'gone'.*str"):
            await ref.ask("hello")


async def test_asks_pending_when_actor_is_cancelled_get_actor_stopped() -> None:
    async with open_system(shutdown_timeout=0.05) as system:
        ref = system.spawn(Hang, name="stuck")
        ref.tell("first")  # keeps receive busy forever
        errors: list[BaseException] = []

        async def asker() -> None:
            try:
                await ref.ask("second", timeout=100)
            except ActorStopped as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(asker)
            await anyio.lowlevel.checkpoint()
            await system.stop(ref)  # not stopped in time: cancelled
        assert system.interrupted == ["stuck"]
    assert len(errors) == 1 and "stuck" in str(errors[0])


async def test_mailbox_statistics() -> None:
    async with open_system() as system:
        ref = system.spawn(Recorder)
        for i in range(10):
            ref.tell(i)
        before = ref.statistics()
        assert before.depth == 10 and before.peak_depth == 10 and before.processed == 0
        await ref.ask("sync")
        after = ref.statistics()
        assert after.depth == 0 and after.processed == 11 and after.peak_depth >= 10
        assert after.state == "running"


class Batcher(Actor):
    """Collects what it is told; ``batch_done`` ships what the batch collected, or crashes on "boom"."""

    def __init__(self, shipped: list[list[Any]]) -> None:
        self.shipped = shipped
        self.pending: list[Any] = []

    def receive(self, message: Any) -> Any:
        if message == "boom":
            raise RuntimeError("boom")
        self.pending.append(message)
        return message

    def batch_done(self) -> None:
        if self.pending:
            self.shipped.append(self.pending)
            self.pending = []


async def test_batch_done_runs_once_per_batch_of_messages() -> None:
    shipped: list[list[Any]] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Batcher(shipped))
        for i in range(10):
            ref.tell(i)  # queued before the actor runs: one batch
        await ref.ask("sync")
        assert shipped == [[*range(10), "sync"]]
        await ref.ask("alone")
        assert shipped[-1] == ["alone"], "a lone message is a batch of one"


async def test_batch_done_still_ships_a_batch_whose_later_message_crashed_the_actor() -> None:
    shipped: list[list[Any]] = []
    async with open_system() as system:
        ref = system.spawn(lambda: Batcher(shipped))
        ref.tell("a")
        ref.tell("b")
        ref.tell("boom")  # crashes the actor; the default supervision restarts it
        ref.tell("c")
        await ref.ask("sync")
    assert shipped[0] == ["a", "b"], shipped
    assert ["c", "sync"] in shipped
