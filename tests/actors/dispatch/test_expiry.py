"""The pool's queue timeouts (actors/dispatch/expiry.py): arrival order kept lazily beside the
placement's ``waiting``, one timer, memory bounded whatever order requests leave in."""

from __future__ import annotations

from collections.abc import Hashable

from actors.dispatch.expiry import QueueTimeouts
from actors.dispatch.records import Request

from ..queues.test_deadlines import Handle


class Rig:
    def __init__(self) -> None:
        self.waiting: dict[Hashable, Request] = {}
        self.armed: list[Handle] = []
        self.timeouts = QueueTimeouts(self.waiting, self._send_at)  # type: ignore[arg-type]

    def _send_at(self, deadline: float) -> Handle:
        self.armed.append(Handle(deadline))
        return self.armed[-1]

    def wait(self, token: int, deadline: float) -> Request:
        request = Request(token, "b", ("p", "j"), deadline=deadline)
        self.waiting[token] = request
        self.timeouts.add(request)
        return request

    def leave(self, token: int) -> None:
        self.timeouts.left(self.waiting.pop(token))

    def timer(self) -> float | None:
        """When the pending timer fires (None: no timer pending)."""
        live = [handle for handle in self.armed if handle.active]
        assert len(live) <= 1, "one timer at most"
        return live[0].deadline if live else None

    def fire(self, now: float) -> list[int]:
        """The timer's message at ``now``: what is due, ended by the pool as ``_queue_timeout`` does."""
        assert self.timer() is not None and self.timer() <= now  # type: ignore[operator]
        self.armed[-1].active = False
        due = self.timeouts.due(now)
        for request in due:
            self.leave(request.token)  # type: ignore[arg-type]
        return [request.token for request in due]  # type: ignore[misc]


def test_requests_expire_at_their_own_deadlines_in_order_and_those_that_left_never_do() -> None:
    rig = Rig()
    for token in range(10):
        rig.wait(token, 100.0 + token)
    assert rig.timer() == 100.0
    rig.leave(0)  # the oldest: dropped at once
    rig.leave(5)  # from the middle: skipped later
    assert rig.fire(100.0) == [], "fires early for one that left, and re-arms"
    assert rig.timer() == 101.0
    assert rig.fire(106.5) == [1, 2, 3, 4, 6]
    assert rig.timer() == 107.0
    assert rig.fire(200.0) == [7, 8, 9]
    assert rig.timer() is None and not rig.waiting


def test_a_lowered_timeout_still_expires_first() -> None:
    rig = Rig()
    for token in range(5):
        rig.wait(token, 200.0)
    rig.wait(99, 150.0)
    assert rig.timer() == 150.0, "re-armed for the earlier deadline"
    rig.leave(2)
    assert rig.fire(150.0) == [99]
    assert rig.fire(200.0) == [0, 1, 3, 4]
    assert rig.timer() is None


def test_the_timer_is_cancelled_and_everything_forgotten_once_nothing_waits() -> None:
    rig = Rig()
    rig.wait(1, 10.0)
    rig.wait(2, 5.0)  # out of order: a heap is kept beside the arrival order
    rig.leave(1)
    assert rig.timer() is not None
    rig.leave(2)
    assert rig.timer() is None, "no timer left pending"
    assert len(rig.timeouts._order) == 0 and rig.timeouts._heap is None
    rig.wait(3, 1.0)  # in order again from here: no heap
    assert rig.timeouts._heap is None and rig.timer() == 1.0


def test_memory_stays_bounded_whatever_order_requests_leave_in() -> None:
    """The oldest keeps waiting while thousands of others come and go (another class was served), with
    and without the heap: stale entries never outnumber the live ones by more than a constant."""
    for lowered in (False, True):
        rig = Rig()
        rig.wait(0, 1e9)
        if lowered:
            rig.wait(1, 1e8)
        for token in range(2, 5000):
            rig.wait(token, 1e9 + token)
            rig.leave(token)
            heap = rig.timeouts._heap
            assert len(rig.timeouts._order) <= 2 * len(rig.waiting) + 40
            assert heap is None or len(heap) <= 2 * len(rig.waiting) + 40
        assert (rig.timeouts._heap is not None) == lowered
        assert rig.fire(1e9) == ([1, 0] if lowered else [0])
