"""Pipelines and their builds: the pipeline actor, the build state machine
over its job and step records, and what is derived from a build (the job
payload an agent runs, the snapshot a client reads)."""
