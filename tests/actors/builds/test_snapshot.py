"""Build snapshots (actors/builds/snapshot.py): what a caller is given cannot change the runtime's state."""

from __future__ import annotations

import pytest

import runtime

PIPELINE = """
name: p
steps:
  - id: out
    run: echo "answer=42" >> "$SHUNTER_OUTPUT"
"""


@pytest.mark.trio
async def test_changing_an_answers_variables_or_outputs_changes_no_build() -> None:
    """Builds without variables share one empty mapping inside, and empty outputs share it too: the
    snapshots hand out copies, so a caller that writes into one changes nothing else."""
    async with runtime.open_runtime() as rt:
        await rt.register_pipeline(PIPELINE)
        first = await rt.submit("p")
        first.variables["X"] = "leaked"
        done = await rt.wait(first.id, timeout=10)
        assert done.variables == {}
        done.variables["Y"] = "leaked"
        attempt = done.stages[0].jobs[0].steps[0].attempts[0]
        assert attempt.outputs == {"answer": "42"}
        attempt.outputs["answer"] = "changed"
        second = await rt.submit("p")
        assert second.variables == {}
        assert (await rt.build(first.id)).stages[0].jobs[0].steps[0].attempts[0].outputs == {"answer": "42"}
        finished = await rt.wait(second.id, timeout=10)
        assert finished.variables == {}
