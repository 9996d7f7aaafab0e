"""Actions a build machine offers with ``shunter agent --actions tests.runtime.remote.plugin_actions``."""

from __future__ import annotations

from actors.execution.actions import StepContext

__all__ = ["ACTIONS", "register", "NOT_ACTIONS"]


async def deploy(step: StepContext) -> None:
    step.log(f"deployed {step.with_.get('what', 'it')} from {step.env['SHUNTER_NODE']}")


def register(registry: object) -> None:
    """The other form: a function that registers on the agent's registry."""
    registry.register("notify", deploy)  # type: ignore[attr-defined]


ACTIONS = {"deploy": deploy}
NOT_ACTIONS = 42
