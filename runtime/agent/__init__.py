"""``shunter agent``: a build machine's process that joins a server (docs/design.md §11)."""

from .main import AgentOptions, RemoteNode, run_agent, serve_node

__all__ = ["AgentOptions", "RemoteNode", "run_agent", "serve_node"]
