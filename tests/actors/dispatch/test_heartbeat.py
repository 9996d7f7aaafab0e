"""Heartbeats: the watch behind a pool's one heartbeat timer (an agent that
fell silent is lost once it has been silent past the timeout, reported
once; a forgotten one never is), and the pool driving it."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.execution.actions import ActionRegistry
from actors.core import open_system
from actors.dispatch.heartbeat import HeartbeatWatch
from actors.dispatch.pool import AddNode, InjectFault, ListNodes, PoolActor, PoolStats, RemoveNode


def test_nobody_is_lost_until_a_heartbeat_stops() -> None:
    watch = HeartbeatWatch(timeout=30.0)
    assert watch.lost(now=1e9) == [] and len(watch) == 0


def test_a_silent_agent_is_lost_only_past_the_timeout_and_only_once() -> None:
    watch = HeartbeatWatch(timeout=30.0)
    watch.stop("n1/0", 100.0)
    assert watch.lost(now=130.0) == [], "silent for exactly the timeout is not yet lost"
    assert "n1/0" in watch
    assert watch.lost(now=131.5) == [("n1/0", 31.5)]
    assert watch.lost(now=500.0) == [], "a lost agent is reported once"
    assert "n1/0" not in watch and len(watch) == 0


def test_the_first_stop_counts() -> None:
    watch = HeartbeatWatch(timeout=10.0)
    watch.stop("a", 5.0)
    watch.stop("a", 50.0)  # e.g. silence, then hang
    assert watch.lost(now=16.0) == [("a", 11.0)]


def test_a_forgotten_agent_is_never_reported() -> None:
    watch = HeartbeatWatch(timeout=10.0)
    watch.stop("a", 0.0)
    watch.forget("a")
    watch.forget("never-silent")
    assert watch.lost(now=100.0) == [] and len(watch) == 0


def test_several_lost_at_once_in_the_order_they_fell_silent() -> None:
    watch = HeartbeatWatch(timeout=1.0)
    for agent, stopped in [("a2", 1.0), ("a3", 2.5), ("a0", 3.0)]:
        watch.stop(agent, stopped)
    assert list(watch) == ["a2", "a3", "a0"]
    assert [agent for agent, _ in watch.lost(now=3.6)] == ["a2", "a3"]
    assert [agent for agent, _ in watch.lost(now=4.1)] == ["a0"]


# --- the pool's heartbeat check, driven directly on trio's MockClock -----------------------

INTERVAL, TIMEOUT = 1.0, 3.0


@pytest.mark.trio
async def test_the_pool_checks_heartbeats_every_interval_and_forgets_every_agent_that_leaves(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """One pool timer, checked again and again: a silenced agent is lost within
    (timeout, timeout + interval] of its silence, every time, and reported once
    even if it then crashes; every way out of the pool (heartbeat loss, crash,
    drain, remove_node) forgets the agent, so the watch never names an agent
    the pool no longer has."""
    pools: list[PoolActor] = []

    def make() -> PoolActor:
        pools.append(PoolActor(pool="default", workdir=tmp_path, actions=ActionRegistry.with_builtins(),
                               heartbeat_interval=INTERVAL, heartbeat_timeout=TIMEOUT))  # fmt: skip
        return pools[-1]

    async with open_system() as system:
        ref = system.spawn(make, name="pool:default")
        await ref.ask(AddNode("n1", agents=3))
        await ref.ask(AddNode("n2", agents=1))
        (pool,) = pools

        async def settle() -> dict[str, int]:
            await trio.sleep(0.001)  # the fault reaches the agent, a crash its node, then the pool
            stats: dict[str, int] = await ref.ask(PoolStats())
            assert stats["agents"] == len(pool.agents)
            assert all(agent in pool.agents for agent in pool.heartbeats), "the watch names a departed agent"
            assert system.statistics().timers_pending == 1, "one heartbeat timer per pool, always rescheduled"
            return stats

        async def names() -> set[str]:
            return {a.name for n in await ref.ask(ListNodes()) for a in n.agents}

        assert (await settle())["agents"] == 4

        # Heartbeat loss, three times over: the check keeps running after each.
        for count, victim in enumerate(["n1/0", "n1/3", "n1/4"], start=1):
            await trio.sleep(0.37 * count)  # off the check grid
            t0 = trio.current_time()
            ref.tell(InjectFault(victim, "silence"))
            await trio.sleep(TIMEOUT - 0.01)
            assert (await settle())["agents_lost"] == count - 1, f"{victim} lost before heartbeat-timeout"
            assert victim in await names()
            await trio.sleep(INTERVAL + 0.02)
            stats = await settle()
            assert stats["agents_lost"] == count and stats["agents"] == 4, (victim, trio.current_time() - t0, stats)
            assert victim not in await names()

        # A crash: reported at once.
        ref.tell(InjectFault("n1/1", "crash"))
        assert (await settle())["agents_lost"] == 4
        # Silence, then a crash of the same agent: lost once, not again at the timeout.
        ref.tell(InjectFault("n1/2", "silence"))
        ref.tell(InjectFault("n1/2", "crash"))
        assert (await settle())["agents_lost"] == 5
        await trio.sleep(TIMEOUT + 2 * INTERVAL)
        assert (await settle())["agents_lost"] == 5

        # A silent agent retired by a drain is forgotten, never reported lost.
        ref.tell(InjectFault("n2/0", "silence"))
        await trio.sleep(INTERVAL)
        await ref.ask(RemoveNode("n2"))
        stats = await settle()
        assert stats["agents"] == 3 and "n2/0" not in pool.agents
        await trio.sleep(TIMEOUT + 2 * INTERVAL)
        assert (await settle())["agents_lost"] == 5

        await ref.ask(RemoveNode("n1"))
        assert (await settle())["agents"] == 0 and len(pool.heartbeats) == 0, "a drained silent agent stays watched"
