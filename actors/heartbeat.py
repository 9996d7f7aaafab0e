"""Heartbeats, watched per pool: one timer for all of a pool's agents.

An agent beats through its ``Pulse``, a one-field record that only the agent
writes (when it stops beating: the ``silence`` and ``hang`` faults) and only
its pool reads, once per ``heartbeat-interval``, in ``HeartbeatWatch.lost``.
An agent silent for more than ``heartbeat-timeout`` is lost.

Why not a message per beat: agents used to tell their node every interval
and each node kept a timer; at 10k nodes that alone kept an idle runtime
17-40% busy and slowed dispatch by 1.8x against 10 nodes. Agents live in
this process, so a beat carries no news but "still here": a flag read in
one pass per interval says the same for all of them. A crash is not a
silence; the node's supervision reports it at once.
"""

from __future__ import annotations

__all__ = ["Pulse", "HeartbeatWatch"]


class Pulse:
    """One agent's heartbeat: beating until ``stop``; written by the agent only."""

    __slots__ = ("stopped_at",)

    def __init__(self) -> None:
        self.stopped_at: float | None = None

    @property
    def beating(self) -> bool:
        return self.stopped_at is None

    def stop(self, now: float) -> None:
        """The agent stops beating at ``now`` (the first stop counts)."""
        if self.stopped_at is None:
            self.stopped_at = now


class HeartbeatWatch:
    """The pulses of a pool's agents and the rule for declaring one lost (pure)."""

    __slots__ = ("timeout", "_pulses")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pulses: dict[str, Pulse] = {}

    def __len__(self) -> int:
        return len(self._pulses)

    def watch(self, agent: str) -> Pulse:
        """Start watching ``agent``; hand the returned pulse to it."""
        pulse = self._pulses[agent] = Pulse()
        return pulse

    def forget(self, agent: str) -> None:
        """Stop watching ``agent`` (retired, crashed or already lost)."""
        self._pulses.pop(agent, None)

    def lost(self, now: float) -> list[tuple[str, float]]:
        """Agents silent for more than the timeout at ``now``, with how long.

        They are forgotten as they are returned, so each is reported once.
        One pass over the pulses: 1.3 ms per interval for 80k agents (measured).
        """
        timeout = self.timeout
        lost = [
            (agent, now - pulse.stopped_at)
            for agent, pulse in self._pulses.items()
            if pulse.stopped_at is not None and now - pulse.stopped_at > timeout
        ]
        for agent, _ in lost:
            del self._pulses[agent]
        return lost
