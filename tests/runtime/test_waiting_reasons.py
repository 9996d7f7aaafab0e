"""``blocked_by``: what holds a waiting job, read from the reasons the pool and the mutexes give."""

from __future__ import annotations

import pytest

from actors.dispatch.matching import no_node_reason
from runtime._cluster import blocked_by

NODES = {"n1": {"linux"}, "n2": {"linux", "gpu"}}


@pytest.mark.parametrize(("reason", "kind"), [
    ("concurrency-limit-total 1 reached for app/build (1 running)", "total"),
    ("concurrency-limit-per-node 2 reached for app/build on every matching node", "per-node"),
    ("no free agent on 2 matching node(s)", "no-free-agent"),
    ("no free agent on 1 matching node(s) with labels [total]", "no-free-agent"),
    ("agent n1/0 (lock-resource-with) is busy", "agent"),
    ("agent n1/0 (lock-resource-with) is locked by build app.3", "agent"),
    ("mutex 'deploy-total' held by app.1/deploy#1", "mutex"),
    ("no node matches", "no-node"),
    (no_node_reason("default", None, frozenset({"arm64"}), NODES), "no-node"),
    (no_node_reason("default", "n9", frozenset(), NODES), "no-node"),
    (no_node_reason("default", "n1", frozenset({"gpu"}), NODES), "no-node"),
    (no_node_reason("empty", None, frozenset(), {}), "no-node"),
    ("something new", None),
])  # fmt: skip
def test_every_reason_names_what_holds_the_job(reason: str | None, kind: str | None) -> None:
    assert reason is not None
    assert blocked_by(reason) == kind
