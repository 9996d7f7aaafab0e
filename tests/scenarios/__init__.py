"""Scenario tests: the behaviours of DESIGN §3.1, driven through ``runtime.open_runtime``."""
