"""``shunter agent``: a build machine's process that joins a server (DESIGN §11)."""

from .main import AgentOptions, run_agent

__all__ = ["AgentOptions", "run_agent"]
