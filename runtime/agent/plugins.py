"""``shunter agent --actions MODULE[:ATTR]``: actions a build machine can run besides the built-ins.

An action registered in the server's Python process (``Runtime.register_action``)
is code in that process: a remote machine cannot run it. A machine that has
the same code installed says so by loading it: ``ATTR`` (``ACTIONS`` when not
given) is either a mapping of action names to actions (``async def
action(step) -> None``, or ``(action, inputs)`` pairs), or a function that
takes the agent's ``ActionRegistry`` and registers them. The agent offers
every name it then holds when it registers, and the server places a job
that uses an action only on nodes that offer it (docs/design.md §11).

The current directory is importable, as it is for ``python -m``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping

from actors.execution.actions import ActionRegistry

__all__ = ["load_actions"]


def load_actions(specs: Iterable[str], registry: ActionRegistry | None = None) -> ActionRegistry:
    """A registry with the built-ins and the actions of each ``MODULE[:ATTR]`` in ``specs``.

    Raises ValueError, naming the ``--actions`` value, when a module cannot be
    imported or its attribute is missing or holds no actions.
    """
    registry = registry if registry is not None else ActionRegistry.with_builtins()
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        where = f"--actions {spec}"
        if not module_name:
            raise ValueError(f"{where}: expected MODULE or MODULE:ATTR")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(module_name)
        except Exception as error:  # an import runs the module's code: any error is the module's
            raise ValueError(f"{where}: cannot import {module_name!r}: {type(error).__name__}: {error}") from None
        target = getattr(module, attr or "ACTIONS", None)
        if target is None:
            raise ValueError(f"{where}: module {module_name!r} has no {attr or 'ACTIONS'!r}")
        try:
            if isinstance(target, Mapping):
                for name, action in target.items():
                    if isinstance(action, tuple):
                        registry.register(name, *action)
                    else:
                        registry.register(name, action)
            elif callable(target):
                target(registry)
            else:
                raise TypeError(f"expected a mapping of names to actions, or a function taking the registry, "
                                f"got {type(target).__name__}")  # fmt: skip
        except Exception as error:  # a bad name or action, or the function's own failure
            raise ValueError(f"{where}: {error}") from None
    return registry
