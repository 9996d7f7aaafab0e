"""The pure placement core of a pool: limits, fairness, locks, reasons."""

from __future__ import annotations

from typing import Any

from actors.dispatch.placement import Grant, Placement, Request


def pool(nodes: dict[str, int], labels: dict[str, set[str]] | None = None) -> Placement:
    placement = Placement()
    for node, agents in nodes.items():
        placement.add_node(node, frozenset((labels or {}).get(node, set())))
        for index in range(agents):
            placement.add_agent(node, f"{node}/{index}")
    return placement


def request(token: Any, key: str = "job", build: str = "b", **kwargs: Any) -> Request:
    return Request(token=token, build_id=build, key=("p", key), **kwargs)


def tokens(grants: list[Grant]) -> list[Any]:
    return [grant.request.token for grant in grants]


def test_grant_takes_agent_node_slot_and_total_slot_together() -> None:
    placement = pool({"n1": 1})
    grant = placement.request(request(1))
    assert grant is not None and (grant.node, grant.agent) == ("n1", "n1/0")
    assert placement.total[("p", "job")] == 1 and placement.nodes["n1"].running[("p", "job")] == 1
    held, grants = placement.release(1)
    assert held is not None and grants == []
    assert not placement.total and not placement.nodes["n1"].running and not placement.granted


def test_total_limit_parks_the_class_until_a_slot_frees() -> None:
    placement = pool({"n1": 2, "n2": 2})
    assert placement.request(request(1, total=2)) is not None
    assert placement.request(request(2, total=2)) is not None
    assert placement.request(request(3, total=2)) is None
    assert "total" in placement.why_waiting(placement.waiting[3])
    other = placement.request(request(4, key="other"))  # a different key is not held back
    assert other is not None
    held, grants = placement.release(1)
    assert tokens(grants) == [3]


def test_per_node_limit_spreads_and_then_waits() -> None:
    placement = pool({"n1": 3, "n2": 3})
    first, second = placement.request(request(1, per_node=1)), placement.request(request(2, per_node=1))
    assert first is not None and second is not None and {first.node, second.node} == {"n1", "n2"}
    assert placement.request(request(3, per_node=1)) is None
    assert "per-node" in placement.why_waiting(placement.waiting[3])
    _, grants = placement.release(1)
    assert tokens(grants) == [3] and grants[0].node == first.node


def test_fifo_within_a_class_and_oldest_head_across_classes() -> None:
    placement = pool({"n1": 1})
    assert placement.request(request("running")) is not None
    for token, key in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")]:
        assert placement.request(request(token, key=key)) is None
    order = []
    token: Any = "running"
    for _ in range(4):
        _, grants = placement.release(token)
        token = grants[0].request.token
        order.append(token)
    assert order == ["a1", "b1", "a2", "b2"]


def test_a_head_that_cannot_be_placed_does_not_block_other_classes() -> None:
    placement = pool({"n1": 1, "n2": 1})
    assert placement.request(request("busy", node_pin="n1")) is not None
    assert placement.request(request("pinned", node_pin="n1")) is None  # waits for n1
    later = placement.request(request("free"))
    assert later is not None and later.node == "n2"


def test_labels_select_nodes_and_no_node_is_reported() -> None:
    placement = pool({"n1": 1, "gpu1": 1}, labels={"gpu1": {"gpu", "linux"}})
    grant = placement.request(request(1, labels=frozenset({"gpu"})))
    assert grant is not None and grant.node == "gpu1"
    assert placement.request(request(2, labels=frozenset({"gpu"}))) is None
    assert "no free agent" in placement.why_waiting(placement.waiting[2])
    assert placement.request(request(3, labels=frozenset({"arm"}))) is None
    assert "no node" in placement.why_waiting(placement.waiting[3])


def test_lock_keeps_the_agent_for_its_build_until_unlocked() -> None:
    placement = pool({"n1": 1})
    first = placement.request(request("compile", build="b1", lock=True))
    assert first is not None
    placement.release("compile")
    assert placement.agents_locked() == 1
    assert placement.request(request("other-build", build="b2")) is None  # locked for b1
    chained = placement.request(request("package", build="b1", agent_pin="n1/0", lock=True))
    assert chained is not None and chained.agent == "n1/0"
    placement.release("package")
    grants = placement.unlock("b1", "n1/0")
    assert tokens(grants) == ["other-build"] and placement.agents_locked() == 0


def test_pinned_request_waits_for_its_agent_and_says_why() -> None:
    placement = pool({"n1": 2})
    assert placement.request(request("compile", build="b1", lock=True)) is not None
    assert placement.request(request("package", build="b1", agent_pin="n1/0", lock=True)) is None
    assert "busy" in placement.why_waiting(placement.waiting["package"])
    _, grants = placement.release("compile")
    assert tokens(grants) == ["package"] and grants[0].agent == "n1/0"


def test_removing_a_busy_agent_releases_its_slots() -> None:
    placement = pool({"n1": 1, "n2": 1})
    assert placement.request(request(1, total=1)) is not None
    assert placement.request(request(2, total=1)) is None
    held, grants = placement.remove_agent(placement.granted[1].name)
    assert held is not None and held.token == 1
    assert tokens(grants) == [2]  # the freed total slot went to the waiter at once
    assert placement.total[("p", "job")] == 1


def test_draining_node_takes_no_new_work() -> None:
    placement = pool({"n1": 1, "n2": 1})
    assert placement.request(request(1)) is not None
    idle = placement.drain_node("n2") if placement.granted[1].node.name == "n1" else placement.drain_node("n1")
    assert len(idle) == 1
    assert placement.request(request(2)) is None
    assert "no" in placement.why_waiting(placement.waiting[2])


def test_withdraw_forgets_a_waiting_request() -> None:
    placement = pool({"n1": 1})
    assert placement.request(request(1)) is not None
    assert placement.request(request(2)) is None
    assert placement.withdraw(2) is not None and placement.withdraw(2) is None
    _, grants = placement.release(1)
    assert grants == [] and not placement.waiting


def test_saturated_nodes_are_skipped_without_scanning_the_pool() -> None:
    placement = pool({f"n{i}": 1 for i in range(1000)})
    # 999 nodes busy with another key; one free node far down the index
    for i in range(999):
        assert placement.request(request(("x", i), key="x", node_pin=f"n{i}")) is not None
    grant = placement.request(request("y", per_node=1))
    assert grant is not None and grant.node == "n999"


def test_many_waiting_classes_are_served_oldest_first_without_a_scan() -> None:
    placement = pool({"n1": 1})
    assert placement.request(request("running")) is not None
    keys = [f"k{i}" for i in range(500)]
    for index, key in enumerate(keys):
        assert placement.request(request(("w", index), key=key)) is None
    order = []
    token: Any = "running"
    for _ in keys:
        _, grants = placement.release(token)
        token = grants[0].request.token
        order.append(token[1])
    assert order == list(range(500))
    assert len(placement._ready_any) <= 2 * len(placement._ready) + 500  # stale entries are dropped as they surface


def test_whether_any_node_matches_follows_nodes_coming_draining_and_going() -> None:
    placement = Placement("build-pool")
    gpu = request("gpu", labels=frozenset({"gpu"}))
    pinned = request("pinned", node_pin="g1")
    assert placement.request(gpu) is None and placement.request(pinned) is None
    assert not placement.has_match(gpu) and not placement.has_match(pinned)
    assert placement.why_waiting(gpu) == "no node in pool 'build-pool' matches (the pool has no nodes)"
    assert placement.unmatched() == {gpu.class_key, pinned.class_key}

    placement.add_node("n1", frozenset({"linux"}))
    placement.add_agent("n1", "n1/0")
    assert placement.why_waiting(gpu) == "no node in pool 'build-pool' has labels [gpu]"
    assert placement.why_waiting(pinned) == "no node 'g1' in pool 'build-pool'"
    placement.add_node("g1", frozenset({"gpu"}))  # no agent yet: it matches, nothing is free
    assert placement.has_match(gpu) and placement.has_match(pinned) and placement.unmatched() == set()
    assert placement.why_waiting(gpu).startswith("no free agent on 1 matching node(s)")
    assert placement.waiting_in(gpu.class_key) == [gpu]

    placement.drain_node("g1")  # a draining node takes nothing new
    assert not placement.has_match(gpu)
    assert placement.why_waiting(pinned) == "no node 'g1' in pool 'build-pool'"
    assert placement.remove_node_if_empty("g1")
    assert placement.unmatched() == {gpu.class_key, pinned.class_key}
    assert placement.has_match(request("any"))  # n1 runs a job that asks for nothing
    assert placement.has_match(request("locked", agent_pin="n1/0"))  # pinned to an agent: not this question
    assert placement.withdraw("gpu") is gpu and placement.waiting_in(gpu.class_key) == []


def test_a_class_queue_keeps_arrival_order_through_removals_anywhere() -> None:
    from actors.dispatch.records import RequestQueue

    queue = RequestQueue()
    requests = [request(token) for token in range(200)]
    for item in requests:
        queue.append(item)
    assert queue.pop(0) is requests[0] and queue.head() is requests[1]  # the head leaves: the next one
    for token in range(2, 200, 2):  # from the middle, enough to compact the order
        assert queue.pop(token) is requests[token]
    assert queue.pop(2) is None and len(queue) == 100
    assert list(queue.values()) == requests[1::2] and queue.head() is requests[1]
    again = request(1)  # the same token queued again after leaving: its old entry is not it
    assert queue.pop(1) is requests[1]
    queue.append(again)
    assert list(queue.values()) == requests[3::2] + [again] and queue.head() is requests[3]
    for item in requests[3::2]:
        queue.pop(item.token)
    assert queue.head() is again and queue.pop(1) is again and queue.head() is None and len(queue) == 0


def test_a_request_given_its_class_key_waits_in_the_class_placement_would_make_for_it() -> None:
    """The pool passes one class key for every unpinned attempt of a job (``remote.JobLabels``);
    placement makes it for a request without one. Both wait in one class, in arrival order."""
    placement = pool({"n1": 1})
    assert placement.request(request(1, total=1)) is not None
    made = request(2, total=1)
    given = request(3, total=1, class_key=(("p", "job"), None, frozenset(), None, None, 1))
    assert placement.request(made) is None and placement.request(given) is None
    assert made.class_key == given.class_key == made.constraints()
    assert [r.token for r in placement.waiting_in(made.class_key)] == [2, 3]
    assert tokens(placement.release(1)[1]) == [2]
    assert tokens(placement.release(2)[1]) == [3]
