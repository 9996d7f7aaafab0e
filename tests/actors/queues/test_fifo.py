"""The keyed FIFO used by group, mutex and pool queues."""

from __future__ import annotations

import random

import pytest

from actors.queues.fifo import Fifo


def test_order_head_and_removal_anywhere() -> None:
    fifo: Fifo[str, int] = Fifo()
    for index, key in enumerate("abcde"):
        fifo.append(key, index)
    assert fifo.pop("c") == 2 and fifo.pop("c") is None
    assert fifo.head() == ("a", 0)
    assert fifo.popleft() == ("a", 0)
    assert list(fifo.items()) == [("b", 1), ("d", 3), ("e", 4)]
    fifo.appendleft("z", 9)
    assert list(fifo) == ["z", "b", "d", "e"] and len(fifo) == 4 and "d" in fifo and "a" not in fifo


def test_a_key_queued_again_is_not_confused_with_its_removed_entry() -> None:
    fifo: Fifo[str, object] = Fifo()
    first, second = object(), object()
    fifo.append("k", first)
    fifo.append("other", 1)
    fifo.pop("k")
    fifo.append("k", second)
    assert list(fifo.items()) == [("other", 1), ("k", second)]


def test_empty_behaviour() -> None:
    fifo: Fifo[int, int] = Fifo()
    assert fifo.head() is None and not fifo
    with pytest.raises(IndexError):
        fifo.popleft()


def test_matches_a_reference_model_under_random_operations() -> None:
    rng = random.Random(7)
    fifo: Fifo[int, int] = Fifo()
    model: list[int] = []
    next_key = 0
    for _ in range(20_000):
        action = rng.random()
        if action < 0.5:
            fifo.append(next_key, next_key * 10)
            model.append(next_key)
            next_key += 1
        elif action < 0.75 and model:
            key = rng.choice(model)
            assert fifo.pop(key) == key * 10
            model.remove(key)
        elif model:
            assert fifo.popleft() == (model[0], model[0] * 10)
            model.pop(0)
        assert len(fifo) == len(model)
    assert list(fifo) == model
    assert len(fifo._order) <= 2 * len(model) + 33  # stale entries stay bounded
