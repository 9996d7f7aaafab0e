"""Scenario tests: the behaviours of docs/design.md §3.1, driven through ``runtime.open_runtime``."""
