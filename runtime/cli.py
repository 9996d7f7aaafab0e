"""The ``shunter`` command line: ``serve``, ``agent``, ``run``, ``validate``, ``token``, ``bench``,
``--version``, and the client commands of ``cli_client`` (``apply``, ``submit``, ``builds``, ``logs``,
``retry``, ``cancel``, ``nodes``) that talk to a running server.

Exit codes: 0 success; 1 a build did not succeed (``run``, ``submit --wait``), a file had
spec errors (``validate``), the server could not start (``serve``: a bad
or unreadable configuration, an invalid or unreadable pipeline it names, an
address it cannot listen on; each said in one line, or spec errors by
path) or a server refused a request (client commands); 2 a usage error, or a
spec or configuration error before a build (``run``); 3 no server could be
reached (client commands); 130 interrupted before anything started.
"""

from __future__ import annotations

import argparse
import functools
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from actors.model.errors import InvalidRequest, ShunterError, SpecError
from actors.model.vocab import BuildStatus

from ._progress import Progress
from .cli_client import add_commands as add_client_commands

USAGE_ERROR = 2


def _validate(args: argparse.Namespace) -> int:
    """What registering checks (``check_pipeline``, with the built-in actions and their
    inputs); with ``--config``, warnings for each ``runs-on`` no configured node matches."""
    from actors.execution.actions import ActionRegistry

    from ._node_warnings import NodeMap
    from .spec_loader import check_pipeline

    nodes: NodeMap | None = None
    if args.config is not None:
        try:
            config = _load_config(args.config)
        except SpecError as error:
            _print_spec_error(args.config, error)
            return 1
        except OSError as error:
            print(f"cannot read config file {args.config}: {error.strerror or error}", file=sys.stderr)
            return 1
        nodes = {pool.name: {node.name: frozenset(node.labels) for node in pool.nodes} for pool in config.pools}
    actions = ActionRegistry.with_builtins().declared_inputs()
    status = 0
    for path in args.files:
        try:
            spec, warnings = check_pipeline(_read(path), known_actions=actions, nodes=nodes)
        except SpecError as error:
            status = 1
            print(f"{path}: {len(error.errors)} error(s)")
            for item in error.errors:
                print(f"  {item['path']}: {item['message']}")
        except OSError as error:
            status = 1
            print(f"{path}: cannot read: {error.strerror or error}")
        else:
            jobs = sum(1 for _ in spec.all_jobs())
            also = f", {len(warnings)} warning(s)" if warnings else ""
            print(f"{path}: ok ({spec.name!r}: {len(spec.stages)} stage(s), {jobs} job(s)){also}")
            for item in warnings:
                print(f"  warning: {item['path']}: {item['message']}")
    return status


def _bench(args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main  # the suite, shipped in the wheel: python -m bench

    return int(bench_main([*args.scenarios, *(["--quick"] if args.quick else [])]))


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _print_spec_error(where: str, error: SpecError) -> None:
    print(f"{where}: {len(error.errors)} error(s)", file=sys.stderr)
    for item in error.errors:
        print(f"  {item['path']}: {item['message']}", file=sys.stderr)


def _load_config(path: str | None, bind: str | None = None) -> Any:
    """The runtime configuration of ``--config`` (and ``--bind``); SpecError/OSError if bad."""
    from .config import default_config, load_config
    from .server import with_bind

    config = default_config() if path is None else load_config(_read(path))
    if bind is not None:
        load_config({"server": {"bind": bind}})  # the same checks as the file's server.bind
    return with_bind(config, bind)


# -- serve ---------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    """Serve until stopped; a start-up error is one line (or spec errors by path) and exit 1."""
    import trio

    from .server import StartupError, serve

    try:
        config = _load_config(args.config, args.bind)
    except SpecError as error:
        _print_spec_error(args.config or "--bind", error)
        return 1
    except OSError as error:
        print(f"cannot read config file {args.config}: {error.strerror or error}", file=sys.stderr)
        return 1
    if args.ephemeral and args.state_dir:
        print("--ephemeral and --state-dir exclude each other: keep state in memory or in a directory",
              file=sys.stderr)  # fmt: skip
        return USAGE_ERROR
    config = _with_state_dir(config, args)
    from .agent.plugins import load_actions

    try:
        actions = load_actions(args.actions)
    except ValueError as error:
        print(error, file=sys.stderr)
        return USAGE_ERROR

    def out(line: str) -> None:
        print(line, flush=True)

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    try:
        trio.run(lambda: serve(config, out=out, actions=actions))
    except StartupError as error:
        print(error, file=sys.stderr)
        return 1
    except SpecError as error:  # a pipeline the configuration names
        _print_spec_error((args.config or "config") if error.what == "config" else error.what, error)
        return 1
    return 0


# -- token ---------------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> int:
    from .auth import digest_of, new_token

    if args.hash:
        token = sys.stdin.readline().strip()
        if not token:
            print("shunter token --hash reads a token on standard input", file=sys.stderr)
            return USAGE_ERROR
    else:
        token = new_token()
    digest = f"sha256:{digest_of(token)}"
    if args.quiet:
        print(digest if args.hash else token)
        return 0
    if not args.hash:
        print(f"token (for the client: Authorization: Bearer ..., or SHUNTER_TOKEN): {token}")
    print(f"sha256 form (for the server's config; only the hash is stored there): {digest}")
    print("config:")
    print("  auth:")
    print(f"    tokens: [{{name: {args.name}, role: {args.role}, token: \"{digest}\"}}]")
    return 0


# -- state ---------------------------------------------------------------------------------------


def _with_state_dir(config: Any, args: argparse.Namespace) -> Any:
    """Where ``serve`` keeps its state (docs/design.md §10): ``--state-dir``, else the config's ``state-dir``,
    else ``$SHUNTER_HOME``, else ``~/.shunter``; ``--ephemeral``: in memory."""
    import os

    import msgspec

    from ._state import default_state_dir

    if args.ephemeral:
        return msgspec.structs.replace(config, state_dir=None)
    chosen = args.state_dir or config.state_dir or default_state_dir()
    return msgspec.structs.replace(config, state_dir=os.path.abspath(os.path.expanduser(chosen)))


# -- run -----------------------------------------------------------------------------------------


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _run(args: argparse.Namespace) -> int:
    import trio

    try:
        config = _load_config(args.config)
    except SpecError as error:
        _print_spec_error(args.config, error)
        return USAGE_ERROR
    except OSError as error:
        print(f"{args.config}: cannot read: {error.strerror or error}", file=sys.stderr)
        return USAGE_ERROR
    return int(trio.run(_run_build, args.pipeline, dict(args.var or []), config, args.verbose))


async def _run_build(path: str, variables: dict[str, str], config: Any, verbose: bool = False) -> int:
    import trio

    from ._open import open_runtime

    async with open_runtime(config) as rt:
        try:
            pipeline = await rt.register_pipeline(Path(path))
        except SpecError as error:
            _print_spec_error(path, error)
            return USAGE_ERROR
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror or error}", file=sys.stderr)
            return USAGE_ERROR
        for warning in pipeline.warnings:  # its job would wait for a node
            print(f"{path}: warning: {warning['path']}: {warning['message']}", file=sys.stderr)
        async with rt.subscribe(buffer=math.inf) as events:
            try:
                build = await rt.submit(pipeline.id, variables)
            except InvalidRequest as error:
                print(f"{path}: {error.message}", file=sys.stderr)
                return USAGE_ERROR
            print(f"build {build.id} of {path}", flush=True)
            progress = Progress(rt, build.id, verbose)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, rt, build.id)
                async for event in events:
                    if event.build_id == build.id and await progress.show(event):
                        break
                nursery.cancel_scope.cancel()
        return 0 if progress.status == BuildStatus.SUCCEED else 1


async def _cancel_on_signal(rt: Any, build_id: str) -> None:
    import signal

    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            print(f"{signal.Signals(signum).name}: cancelling build {build_id}", flush=True)
            try:
                await rt.cancel(build_id)
            except ShunterError:
                pass  # it has just finished


# -- main ----------------------------------------------------------------------------------------


def _version() -> str:
    """The installed distribution's version (a source tree run without installing has none)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shunter")
    except PackageNotFoundError:
        return "(not installed)"



def _agent_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--agents must be a whole number, got {text!r}") from None
    if not 1 <= value <= 1024:
        raise argparse.ArgumentTypeError(f"--agents must be between 1 and 1024, got {value}")
    return value


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _agent(args: argparse.Namespace) -> int:
    """Serve a remote server as node ``--name`` until SIGTERM drains it (docs/design.md §11)."""
    import os
    import re

    import trio

    from .agent import AgentOptions, run_agent
    from .agent.plugins import load_actions

    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$", args.name):
        print(f"invalid --name {args.name!r}: 1 to 128 letters, digits, '_', '.' and '-'", file=sys.stderr)
        return USAGE_ERROR
    if not args.server.startswith(("http://", "https://")):
        print(f"--server must be an http:// or https:// URL, got {args.server!r}", file=sys.stderr)
        return USAGE_ERROR
    labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    try:
        actions = load_actions(args.actions)
    except ValueError as error:
        print(error, file=sys.stderr)
        return USAGE_ERROR
    options = AgentOptions(server=args.server, name=args.name, pool=args.pool, labels=labels, agents=args.agents,
                           work_dir=Path(args.work_dir) if args.work_dir else None,
                           token=args.token or os.environ.get("SHUNTER_AGENT_TOKEN") or None,
                           drain_timeout=args.drain_timeout, actions=tuple(args.actions))  # fmt: skip
    return int(trio.run(functools.partial(run_agent, options, actions=actions)))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shunter", description="An actor-model CI/CD build scheduler.")
    parser.add_argument("--version", action="version", version=f"shunter {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the scheduler and its HTTP API until Ctrl-C or SIGTERM")
    serve.add_argument("--config", metavar="FILE", help="runtime configuration (YAML); default: one local pool")
    serve.add_argument("--bind", metavar="HOST:PORT", help="listen here (default: server.bind, 127.0.0.1:8000)")
    serve.add_argument("--state-dir", metavar="DIR",
                       help="keep pipelines, builds and logs here (default: config state-dir, $SHUNTER_HOME, "
                            "~/.shunter)")  # fmt: skip
    serve.add_argument("--ephemeral", action="store_true", help="keep everything in memory (lost on exit)")
    serve.add_argument("--actions", action="append", default=[], metavar="MODULE[:ATTR]",
                       help="also run these actions (as shunter agent --actions); repeatable")
    serve.set_defaults(handler=_serve)

    token = commands.add_parser("token", help="make an API token and the sha256 form the server's config stores")
    token.add_argument("--name", default="ci", help="its name in the config snippet (default: ci)")
    token.add_argument("--role", default="admin", choices=["read", "write", "admin", "agent"],
                       help="its role in the config snippet (default: admin)")  # fmt: skip
    token.add_argument("--hash", action="store_true", help="hash a token read on standard input instead")
    token.add_argument("-q", "--quiet", action="store_true", help="print only the token (with --hash: the hash)")
    token.set_defaults(handler=_token)

    run = commands.add_parser("run", help="run one build of a pipeline locally, with live progress")
    run.add_argument("pipeline", metavar="PIPELINE.yml")
    run.add_argument("--var", action="append", type=_variable, metavar="NAME=VALUE",
                     help="a value for a declared variable (repeatable)")  # fmt: skip
    run.add_argument("--config", metavar="FILE", help="runtime configuration (YAML); default: one local pool")
    run.add_argument("-v", "--verbose", action="store_true", help="print every step's output (not only a failed "
                                                                  "step's last lines)")  # fmt: skip
    run.set_defaults(handler=_run)

    validate = commands.add_parser("validate", help="check pipeline YAML files as registering does; "
                                                   "print every error by path")  # fmt: skip
    validate.add_argument("files", nargs="+", metavar="PIPELINE.yml")
    validate.add_argument("--config", metavar="FILE",
                          help="also warn about each runs-on that no node of this configuration matches")  # fmt: skip
    validate.set_defaults(handler=_validate)

    agent = commands.add_parser("agent", help="run this machine's agents for a shunter server (a remote node)")
    agent.add_argument("--server", required=True, metavar="URL", help="the server, e.g. http://ci.example:8000")
    agent.add_argument("--name", required=True, metavar="NODE", help="this node's name (rejoins under it)")
    agent.add_argument("--pool", default="default", metavar="POOL", help="the pool to join (default: default)")
    agent.add_argument("--labels", default="", metavar="A,B", help="labels for runs-on matching, comma-separated")
    agent.add_argument("--agents", type=_agent_count, default=1, metavar="N", help="jobs run at once (default 1)")
    agent.add_argument("--work-dir", metavar="DIR", help="workspaces, one per agent (default ./shunter-work/NODE)")
    agent.add_argument("--token", metavar="T", help="a token with the agent role (default: $SHUNTER_AGENT_TOKEN)")
    agent.add_argument("--actions", action="append", default=[], metavar="MODULE[:ATTR]",
                       help="also offer these actions (ATTR, default ACTIONS: name -> async action); repeatable")
    agent.add_argument("--drain-timeout", type=_duration, default=600.0, metavar="S",
                       help="on SIGTERM, how long running jobs may take before they are cancelled (default 600)")
    agent.set_defaults(handler=_agent)

    add_client_commands(commands)

    bench = commands.add_parser("bench", help="run the benchmark suite (results in bench/results/ of a checkout, "
                                             "else in ./bench-results/)")  # fmt: skip
    bench.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="kernel, dispatch, groups, ... (default: all)")
    bench.add_argument("--quick", action="store_true", help="smaller sizes: the whole suite in about a minute")
    bench.set_defaults(handler=_bench)

    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
