"""Dispatch: pools place jobs on nodes and agents under the per-node and
total limits (the pure placement core in placement.py), nodes own their
agents, and one heartbeat timer per pool finds lost agents."""
