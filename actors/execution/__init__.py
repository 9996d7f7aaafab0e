"""Execution: an agent runs one job at a time in its own workspace; shell
steps run in their own process group; actions are the built-in and
registered `uses:` steps."""
