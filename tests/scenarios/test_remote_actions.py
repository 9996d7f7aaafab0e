"""Actions registered on the server only, and remote nodes (docs/design.md §11).

An action registered with ``Runtime.register_action`` is code in the
server's process: a local node can run it, a remote node only if its
``shunter agent`` offers an action of that name (``--actions``). Placement
never gives a job to a node that cannot run every action the job uses;
the built-ins run everywhere. A job that no node can run says why at once,
naming the node and the action.
"""

from __future__ import annotations

import pytest
import trio

from actors.execution.actions import ActionRegistry, StepContext
from actors.model.vocab import Blocker

from .conftest import hold_step, noop_step, pipeline
from .dispatch_helpers import DispatchScenario, dispatch_config, dispatch_scenario, job, node
from .remote_helpers import remote_nodes

DEPLOY = {"id": "deploy", "uses": "deploy@1"}


async def deploy(step: StepContext) -> None:
    step.log(f"deployed from {step.env['SHUNTER_NODE']}")


def remote_registry(s: DispatchScenario, *extra: str) -> ActionRegistry:
    """What a ``shunter agent`` offers: the built-ins, the probe ``hold`` (its machine has that
    code too) and ``extra`` actions registered on the server."""
    registry = ActionRegistry.with_builtins()
    registry.register("hold", s.probe.hold)
    for name in extra:
        registry.register(name, deploy)
    return registry


@pytest.mark.trio
async def test_a_job_using_a_server_action_waits_for_a_local_node_while_a_remote_one_is_idle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with dispatch_scenario(dispatch_config([node("linux", 1)])) as s:
        s.rt.register_action("deploy", deploy)  # after the local node was added: it can run it all the same
        async with remote_nodes(s.rt, {"default": [{"name": "mac"}]}, actions=remote_registry(s)):
            await s.register(pipeline("blocker", {"block": job([hold_step()], {"node-name": "linux"})}, group=None),
                             id="blocker")  # fmt: skip
            await s.register(pipeline("ship", {"ship": job([DEPLOY])}, group=None), id="ship")
            await s.register(pipeline("any", {"work": job([hold_step()])}, group=None), id="any")
            blocker = await s.submit("blocker")
            await s.job_running(blocker.id, "block")
            ship = await s.submit("ship")
            waiting = await s.until_waiting(ship.id, "ship")
            assert waiting.reason == "no free agent on 1 matching node(s) (uses deploy)"
            # The remote node is idle and takes work that it can run...
            other = await s.submit("any")
            await s.job_running(other.id, "work")
            assert (await s.job(other.id, "work")).node == "mac"
            # ...while the deploy job went nowhere, and runs on the local node once it is free.
            assert (await s.job(ship.id, "ship")).node is None
            s.probe.release(blocker.id)
            done = await s.finished(ship.id)
            assert done.status == "SUCCEED" and done.job("ship").node == "linux"
            assert "deployed from linux" in await s.rt.logs(ship.id)
            await s.finish_all([blocker.id, other.id])


@pytest.mark.trio
async def test_no_node_that_can_run_the_action_is_the_reason_at_once(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("linux", 1)])) as s:
        s.rt.register_action("deploy", deploy)
        async with remote_nodes(s.rt, {"default": [{"name": "mac", "labels": ["macos"]}]},
                                actions=remote_registry(s)):  # fmt: skip
            await s.register(pipeline("pinned", {"ship": job([noop_step("a"), DEPLOY], {"node-name": "mac"})},
                                      group=None), id="pinned")  # fmt: skip
            await s.register(pipeline("labelled", {"ship": job([DEPLOY], {"labels": ["macos"]})}, group=None),
                             id="labelled")  # fmt: skip
            pinned = await s.submit("pinned")
            labelled = await s.submit("labelled")
            first = await s.until_waiting(pinned.id, "ship")
            second = await s.until_waiting(labelled.id, "ship")
            assert first.reason.startswith("node 'mac' cannot run action 'deploy' (registered on the server only)")
            assert second.reason.startswith("no node in pool 'default' with labels [macos] can run action "
                                            "'deploy' (registered on the server only): node mac cannot")  # fmt: skip
            assert first.blocked_by == second.blocked_by == Blocker.NO_NODE
            # What the node shows stays its own labels.
            nodes = {n.name: n for n in await s.rt.nodes()}
            assert nodes["mac"].labels == ["macos"] and nodes["linux"].labels == []
            for build in (pinned, labelled):
                await s.rt.cancel(build.id)


@pytest.mark.trio
async def test_a_remote_node_that_offers_the_action_runs_it(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([node("linux", 1)])) as s:
        s.rt.register_action("deploy", deploy)
        async with remote_nodes(s.rt, {"default": [{"name": "mac", "labels": ["macos"]}]},
                                actions=remote_registry(s, "deploy")):  # fmt: skip
            await s.register(pipeline("labelled", {"ship": job([DEPLOY], {"labels": ["macos"]})}, group=None),
                             id="labelled")  # fmt: skip
            done = await s.finished((await s.submit("labelled")).id)
            assert done.status == "SUCCEED" and done.job("ship").node == "mac"
            assert "deployed from mac" in await s.rt.logs(done.id)


@pytest.mark.trio
async def test_registering_warns_and_a_local_node_added_later_runs_the_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A pipeline whose action no node of its pool can run now registers as before, with a
    warning in the words of the waiting reason; its job waits, and runs once a local node
    (which can run every action of the server) joins."""
    async with dispatch_scenario(dispatch_config([], pools={"mac": []})) as s:
        s.rt.register_action("deploy", deploy)
        async with remote_nodes(s.rt, {"mac": [{"name": "mac-01", "labels": ["macos"]}]},
                                actions=remote_registry(s)):  # fmt: skip
            source = pipeline("ship", {"ship": job([DEPLOY], {"pool-name": "mac", "labels": ["macos"]})}, group=None)
            info = await s.register(source, id="ship")
            assert [w["message"] for w in info.warnings] == [
                "no node in pool 'mac' with labels [macos] can run action 'deploy' (registered on the server only): "
                "node mac-01 cannot (a remote node's agent offers only the built-ins and its --actions)"]
            assert info.warnings[0]["path"].endswith("runs-on")
            build = await s.submit("ship")
            assert (await s.until_waiting(build.id, "ship")).reason == info.warnings[0]["message"]
            await s.rt.add_node("mac-local", pool="mac", labels=["macos"])
            done = await s.finished(build.id)
            assert done.status == "SUCCEED" and done.job("ship").node == "mac-local"
            assert not (await s.register(source, id="ship")).warnings  # a node that can run it is there now


@pytest.mark.trio
async def test_a_lock_chain_job_whose_agent_cannot_run_its_action_fails_saying_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """``lock-resource-with`` runs a job on the agent its chain began on; when that is a remote
    agent that does not offer the job's action, the job fails at once, naming both."""
    async with dispatch_scenario(dispatch_config([])) as s:
        s.rt.register_action("deploy", deploy)
        async with remote_nodes(s.rt, {"default": [{"name": "mac"}]}, actions=remote_registry(s)):
            await s.register(pipeline("chain", stages=[
                ("build", {"compile": [noop_step("c")]}),
                ("ship", {"ship": job([DEPLOY], {"lock-resource-with": "compile"})}),
            ], group=None), id="chain")  # fmt: skip
            done = await s.finished((await s.submit("chain")).id)
            ship = done.job("ship")
            assert (done.status, ship.status) == ("FAILED", "FAILED")
            assert ship.reason == ("agent mac/0 (lock-resource-with) cannot run action 'deploy' (registered on the "
                                   "server only): its node's shunter agent does not offer it")  # fmt: skip
            await s.assert_quiet()


@pytest.mark.trio
async def test_a_built_in_runs_anywhere_unless_the_server_replaced_it(autojump_clock: trio.testing.MockClock) -> None:
    async with dispatch_scenario(dispatch_config([])) as s:
        async with remote_nodes(s.rt, {"default": [{"name": "mac"}]}, actions=remote_registry(s)):
            echo = {"id": "say", "uses": "echo@1", "with": {"text": "hello"}}
            await s.register(pipeline("say", {"say": job([echo], {"node-name": "mac"})}, group=None), id="say")
            done = await s.finished((await s.submit("say")).id)
            assert done.status == "SUCCEED" and "hello" in await s.rt.logs(done.id)
            s.rt.register_action("echo", deploy)  # the server's echo is its own code now
            build = await s.submit("say")
            waiting = await s.until_waiting(build.id, "say")
            assert waiting.reason.startswith("node 'mac' cannot run action 'echo' (registered on the server only)")
            await s.rt.cancel(build.id)


@pytest.mark.trio
async def test_an_agent_registering_again_with_an_action_takes_the_waiting_job(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The node's actions are what its process said last: started again with ``--actions`` that
    provide ``deploy``, the same node offers it, and the job waiting for it runs there."""
    async with dispatch_scenario(dispatch_config([])) as s:
        s.rt.register_action("deploy", deploy)
        await s.register(pipeline("ship", {"ship": job([DEPLOY], {"node-name": "mac"})}, group=None), id="ship")
        async with remote_nodes(s.rt, {"default": [{"name": "mac"}]}, actions=remote_registry(s)):
            build = await s.submit("ship")
            assert (await s.until_waiting(build.id, "ship")).reason.startswith("node 'mac' cannot run")
            assert [n.actions for n in await s.rt.nodes()] == [["hold"]]
        async with remote_nodes(s.rt, {"default": [{"name": "mac"}]}, actions=remote_registry(s, "deploy")):
            done = await s.finished(build.id)
            assert done.status == "SUCCEED" and done.job("ship").node == "mac"
            assert [n.actions for n in await s.rt.nodes()] == [["deploy", "hold"]]
