"""The heartbeat watch behind a pool's one heartbeat timer: a stopped pulse
is lost once it has been silent past the timeout, reported once; a beating
or forgotten one never is."""

from __future__ import annotations

from actors.heartbeat import HeartbeatWatch


def test_a_beating_pulse_is_never_lost_however_long_it_is_watched() -> None:
    watch = HeartbeatWatch(timeout=30.0)
    pulse = watch.watch("n1/0")
    assert pulse.beating
    assert watch.lost(now=1e9) == []
    assert len(watch) == 1


def test_a_stopped_pulse_is_lost_only_past_the_timeout_and_only_once() -> None:
    watch = HeartbeatWatch(timeout=30.0)
    watch.watch("n1/0").stop(100.0)
    healthy = watch.watch("n1/1")
    assert watch.lost(now=130.0) == [], "silent for exactly the timeout is not yet lost"
    assert watch.lost(now=131.5) == [("n1/0", 31.5)]
    assert watch.lost(now=500.0) == [], "a lost agent is reported once"
    assert len(watch) == 1 and healthy.beating


def test_the_first_stop_counts() -> None:
    watch = HeartbeatWatch(timeout=10.0)
    pulse = watch.watch("a")
    pulse.stop(5.0)
    pulse.stop(50.0)  # e.g. silence, then hang
    assert watch.lost(now=16.0) == [("a", 11.0)]


def test_a_forgotten_agent_is_never_reported() -> None:
    watch = HeartbeatWatch(timeout=10.0)
    watch.watch("a").stop(0.0)
    watch.forget("a")
    watch.forget("never-watched")
    assert watch.lost(now=100.0) == [] and len(watch) == 0


def test_several_lost_at_once_in_watch_order() -> None:
    watch = HeartbeatWatch(timeout=1.0)
    for index, stopped in enumerate([3.0, None, 1.0, 2.5]):
        pulse = watch.watch(f"a{index}")
        if stopped is not None:
            pulse.stop(stopped)
    assert [agent for agent, _ in watch.lost(now=3.6)] == ["a2", "a3"]
    assert [agent for agent, _ in watch.lost(now=4.1)] == ["a0"]
