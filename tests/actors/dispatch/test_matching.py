"""The words for a job no node of its pool can run, and the memo of whether one can."""

from __future__ import annotations

from types import SimpleNamespace

from actors.dispatch.matching import Matches, no_node_reason

NODES = {"n1": frozenset({"linux"}), "n2": frozenset({"linux", "gpu"})}


def test_no_node_reason_names_what_is_missing() -> None:
    assert no_node_reason("p", None, frozenset(), {}) == "no node in pool 'p' matches (the pool has no nodes)"
    assert no_node_reason("p", None, frozenset({"linux"}), NODES) is None
    assert no_node_reason("p", None, frozenset({"gpu", "arm"}), NODES) == "no node in pool 'p' has labels [arm, gpu]"
    assert no_node_reason("p", "n9", frozenset(), NODES) == "no node 'n9' in pool 'p'"
    assert no_node_reason("p", "n1", frozenset({"gpu"}), NODES) == "node 'n1' in pool 'p' does not have labels [gpu]"
    assert no_node_reason("p", "n2", frozenset({"gpu"}), NODES) is None


def test_matches_remembers_and_follows_node_changes() -> None:
    nodes = [SimpleNamespace(name="n1", labels=frozenset({"linux"}), draining=False)]
    matches = Matches()
    gpu, n2 = (None, frozenset({"gpu"})), ("n2", frozenset[str]())
    assert not matches.exists(gpu, nodes) and not matches.exists(n2, nodes)
    nodes.append(SimpleNamespace(name="n2", labels=frozenset({"gpu"}), draining=False))
    assert not matches.exists(gpu, nodes)  # remembered: only ``added`` says otherwise
    matches.added("n2", frozenset({"gpu"}))
    assert matches.exists(gpu, nodes) and matches.exists(n2, nodes)
    nodes[1].draining = True
    matches.removed("n2", frozenset({"gpu"}))
    assert not matches.exists(gpu, nodes) and not matches.exists(n2, nodes)
    assert matches.exists((None, frozenset({"linux"})), nodes)


def test_a_jobs_placement_labels_are_remembered_until_its_job_or_the_registry_changes() -> None:
    from actors.dispatch.matching import action_label
    from actors.dispatch.remote import JobLabels
    from actors.execution.actions import ActionRegistry
    from runtime.spec_loader import load_pipeline

    async def action(step: object) -> None:
        pass

    def job(runs_on: dict[str, object]) -> object:
        steps = [{"uses": "deploy@2"}, {"uses": "echo"}]
        return load_pipeline({"name": "p", "jobs": {"j": {"runs-on": runs_on, "steps": steps}}}).stages[0].jobs[0]

    actions = ActionRegistry.with_builtins()
    actions.register("deploy", action)
    labels = JobLabels(actions)
    first = job({"labels": ["linux"]})
    got, class_key = labels.of(("p", "j"), first, first.runs_on)
    assert got == {"linux", action_label("deploy")}
    assert class_key == (("p", "j"), None, got, None, None, None), "an unpinned attempt's Request.constraints()"
    assert labels.of(("p", "j"), first, first.runs_on)[0] is got  # asked again: the same answer, not made anew
    actions.register("echo", action)  # over a built-in: a node must now offer it
    assert labels.of(("p", "j"), first, first.runs_on)[0] == {"linux", action_label("deploy"), action_label("echo")}
    second = job({})  # the pipeline registered again: its job is another object under the same key
    assert labels.of(("p", "j"), second, second.runs_on)[0] == {action_label("deploy"), action_label("echo")}
    for index in range(JobLabels.LIMIT + 5):  # many jobs: at most LIMIT are kept
        labels.of(("p", f"j{index}"), second, second.runs_on)
    assert len(labels._known) <= JobLabels.LIMIT
