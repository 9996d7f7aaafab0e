"""The deadline queue behind a concurrency group's (and a pool's) one timer: FIFO
order, the earliest deadline and the due entries, whether or not queue order
is deadline order; and ``EarliestTimer``, that one timer."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.queues.deadlines import DeadlineQueue


@dataclass(eq=False)
class Entry:
    key: str
    deadline: float


def queue_of(*entries: tuple[str, float]) -> DeadlineQueue[Entry]:
    queue: DeadlineQueue[Entry] = DeadlineQueue()
    for key, deadline in entries:
        queue.append(Entry(key, deadline))
    return queue


def keys(entries: Iterable[Entry]) -> list[str]:
    return [entry.key for entry in entries]


def test_ascending_deadlines_need_no_heap_and_expire_as_a_prefix() -> None:
    queue = queue_of(("a", 10), ("b", 10), ("c", 20), ("d", 30))
    assert queue.ordered and queue.earliest() == 10
    assert queue.pop_due(9.999) == []
    assert keys(queue.pop_due(10)) == ["a", "b"]  # at the deadline exactly, in queue order
    assert queue.earliest() == 20 and keys(queue) == ["c", "d"]
    assert keys(queue.pop_due(100)) == ["c", "d"]
    assert not queue and queue.earliest() is None


def test_a_lowered_timeout_expires_each_entry_at_its_own_deadline() -> None:
    queue = queue_of(("long", 600), ("short", 120), ("mid", 300), ("short2", 120))
    assert not queue.ordered
    assert keys(queue) == ["long", "short", "mid", "short2"]  # FIFO order is untouched
    assert queue.earliest() == 120
    assert keys(queue.pop_due(120)) == ["short", "short2"]
    assert queue.earliest() == 300
    assert keys(queue.pop_due(599)) == ["mid"]
    assert keys(queue.pop_due(600)) == ["long"]
    assert queue.ordered, "an empty queue is in order again"


def test_front_insert_keeps_the_fast_path_only_when_it_is_not_later_than_the_head() -> None:
    queue = queue_of(("b", 50))
    queue.appendleft(Entry("a", 40))
    assert queue.ordered and keys(queue) == ["a", "b"] and queue.earliest() == 40
    queue.appendleft(Entry("z", 90))  # at the front, but due after the others
    assert not queue.ordered and keys(queue) == ["z", "a", "b"]
    assert queue.earliest() == 40
    assert keys(queue.pop_due(60)) == ["a", "b"]
    head = queue.head()
    assert head is not None and head.key == "z"
    assert queue.earliest() == 90


@pytest.mark.parametrize("ordered", [True, False])
def test_entries_that_left_never_expire_and_a_key_queued_again_has_its_new_deadline(ordered: bool) -> None:
    queue = queue_of(("a", 10), ("b", 20), ("c", 30))
    if not ordered:
        queue.append(Entry("early", 5))
        assert keys(queue.pop_due(5)) == ["early"]
        queue.append(Entry("x", 1))  # breaks the order
        assert not queue.ordered
    assert queue.popleft().key == "a"  # admitted
    assert queue.pop("b") is not None  # withdrawn
    assert queue.pop("b") is None
    queue.append(Entry("b", 40))  # queued again: a new deadline
    due = queue.pop_due(35)
    assert "a" not in keys(due) and "b" not in keys(due) and "c" in keys(due)
    assert queue.earliest() == 40
    assert keys(queue.pop_due(40)) == ["b"]
    assert not queue


def test_removal_keeps_the_order_deque_and_the_heap_bounded() -> None:
    queue = queue_of(("first", 10_000))
    queue.append(Entry("unordered", 1))
    for index in range(5_000):
        queue.append(Entry(f"k{index}", 100 + index))
        queue.pop(f"k{index}")
    assert len(queue) == 2
    assert len(queue._order) <= 2 * len(queue) + 33
    assert queue._heap is not None and len(queue._heap) <= 2 * len(queue) + 33


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 9), st.integers(0, 50)),
        st.tuples(st.just("appendleft"), st.integers(0, 9), st.integers(0, 50)),
        st.tuples(st.just("pop"), st.integers(0, 9), st.just(0)),
        st.tuples(st.just("popleft"), st.just(0), st.just(0)),
        st.tuples(st.just("due"), st.just(0), st.integers(0, 50)),
    ),
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(OPS)
def test_matches_a_reference_model(ops: list[tuple[str, int, int]]) -> None:
    """Against a plain list: same order, same earliest deadline, exactly the
    due entries (earliest first), whatever mix of fast path and heap."""
    queue: DeadlineQueue[Entry] = DeadlineQueue()
    model: list[Entry] = []
    for op, number, value in ops:
        key = f"k{number}"
        present = any(entry.key == key for entry in model)
        if op == "append" and not present:
            entry = Entry(key, float(value))
            queue.append(entry)
            model.append(entry)
        elif op == "appendleft" and not present:
            entry = Entry(key, float(value))
            queue.appendleft(entry)
            model.insert(0, entry)
        elif op == "pop":
            expected = next((entry for entry in model if entry.key == key), None)
            assert queue.pop(key) is expected
            if expected is not None:
                model.remove(expected)
        elif op == "popleft" and model:
            assert queue.popleft() is model.pop(0)
        elif op == "due":
            due = queue.pop_due(float(value))
            expected_due = [entry for entry in model if entry.deadline <= value]
            assert sorted(map(id, due)) == sorted(map(id, expected_due))
            assert [entry.deadline for entry in due] == sorted(entry.deadline for entry in due)
            model = [entry for entry in model if entry.deadline > value]
        assert list(queue) == model
        assert len(queue) == len(model)
        assert queue.earliest() == min((entry.deadline for entry in model), default=None)
        if queue.ordered:
            deadlines = [entry.deadline for entry in model]
            assert deadlines == sorted(deadlines), "the fast path is only used while queue order is deadline order"


class Handle:
    """Stands in for a TimerHandle: when it fires, and whether it was cancelled."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.active = True

    def cancel(self) -> None:
        self.active = False


def test_the_earliest_timer_follows_the_earliest_deadline_and_is_cancelled_once_the_queue_is_empty() -> None:
    from actors.queues.deadlines import EarliestTimer

    armed: list[Handle] = []

    def send_at(deadline: float) -> Handle:
        armed.append(Handle(deadline))
        return armed[-1]

    queue: DeadlineQueue[Entry] = DeadlineQueue()
    timer = EarliestTimer(queue, send_at)  # type: ignore[arg-type]
    queue.append(Entry("a", 10.0))
    timer.queued(10.0)
    queue.append(Entry("b", 20.0))
    timer.queued(20.0)
    assert [h.deadline for h in armed] == [10.0], "a later deadline keeps the armed timer"
    queue.appendleft(Entry("c", 5.0))
    timer.queued(5.0)
    assert [(h.deadline, h.active) for h in armed] == [(10.0, False), (5.0, True)], "an earlier one re-arms"
    queue.pop("c")
    timer.shrank()
    assert armed[-1].active, "an entry left: the timer may fire early rather than be re-armed"
    timer.fired()  # at 5.0: nothing due; its owner re-arms for the earliest left
    assert queue.pop_due(5.0) == []
    timer.arm()
    assert [(h.deadline, h.active) for h in armed][-1] == (10.0, True)
    queue.pop("a")
    queue.pop("b")
    timer.shrank()
    assert not armed[-1].active and timer.handle is None, "nothing queued: no timer left pending"
