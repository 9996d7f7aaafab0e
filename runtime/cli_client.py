"""The CLI commands that talk to a running server (docs/design.md §13).

``apply``, ``submit``, ``builds``, ``logs``, ``retry``, ``cancel``, ``nodes``.

Each takes ``--server URL`` (else ``$SHUNTER_SERVER``, else
``http://127.0.0.1:8000``) and ``--token T`` (else ``$SHUNTER_TOKEN``), sent
as ``Authorization: Bearer``. A failure is one line on stderr, and the exit
code says what kind: 1 the server refused (its message is shown) or a build
did not succeed (``--wait``, ``--follow``); 2 a usage error or an
unreadable file; 3 no server could be reached.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from actors.model.errors import SpecError

from .client import Client, ClientError, Refused, Unreachable

__all__ = ["add_commands", "REFUSED", "UNREACHABLE"]

REFUSED = 1
USAGE = 2
UNREACHABLE = 3


def add_commands(commands: Any) -> None:
    """Add the client commands to the ``shunter`` parser's subcommands."""
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--server", metavar="URL", help="the server (default: $SHUNTER_SERVER or "
                                                            "http://127.0.0.1:8000)")  # fmt: skip
    connection.add_argument("--token", metavar="TOKEN", help="API token (default: $SHUNTER_TOKEN)")

    def command(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(name, help=help, parents=[connection])
        parser.set_defaults(handler=lambda args: _guarded(handler, args))
        return parser

    apply = command("apply", _apply, "register or replace pipelines on a server (id: the slug of their name)")
    apply.add_argument("files", nargs="+", metavar="PIPELINE.yml")

    submit = command("submit", _submit, "submit a build of a registered pipeline")
    submit.add_argument("pipeline", metavar="PIPELINE")
    submit.add_argument("--var", action="append", type=_variable, metavar="NAME=VALUE",
                        help="a value for a declared variable (repeatable)")  # fmt: skip
    submit.add_argument("--wait", action="store_true", help="wait until it finishes; exit 1 unless it succeeded")
    submit.add_argument("--follow", "-f", action="store_true", help="print its log as it runs (implies --wait)")

    builds = command("builds", _builds, "list builds, oldest first")
    builds.add_argument("--pipeline", metavar="PIPELINE")
    builds.add_argument("--status", metavar="STATUS", help="QUEUE, RUNNING, SUCCEED, FAILED, CANCELED, QUEUE_TIMEOUT")

    logs = command("logs", _logs, "print a build's log (of one job or step with --job, --step)")
    logs.add_argument("build", metavar="BUILD")
    logs.add_argument("--job", metavar="JOB")
    logs.add_argument("--step", metavar="STEP")
    logs.add_argument("--follow", "-f", action="store_true", help="keep printing until the step (job, build) ends")

    retry = command("retry", _retry, "retry a build, its failed jobs, a job or a step")
    retry.add_argument("build", metavar="BUILD")
    retry.add_argument("--job", metavar="JOB")
    retry.add_argument("--step", metavar="STEP")
    retry.add_argument("--failed-only", action="store_true", help="only the failed jobs of a finished build")

    cancel = command("cancel", _cancel, "cancel a queued or running build")
    cancel.add_argument("build", metavar="BUILD")

    command("nodes", _nodes, "list build nodes and their agents")


def _guarded(handler: Any, args: argparse.Namespace) -> int:
    client = Client(args.server, args.token)
    try:
        return int(handler(client, args))
    except Unreachable as error:
        print(f"shunter: {error} (is `shunter serve` running? set --server or SHUNTER_SERVER)", file=sys.stderr)
        return UNREACHABLE
    except Refused as error:
        hint = " (set --token or SHUNTER_TOKEN)" if error.status == 401 else ""
        print(f"shunter: {error}{hint}", file=sys.stderr)
        if error.code == SpecError.code:  # every error of a refused pipeline, by path
            for item in error.details:
                if isinstance(item, dict) and "path" in item:
                    print(f"  {item['path']}: {item.get('message', '')}", file=sys.stderr)
        return REFUSED
    except ClientError as error:
        print(f"shunter: {error}", file=sys.stderr)
        return REFUSED
    except BrokenPipeError:
        return 0  # `shunter logs ... | head`


def _variable(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


# -- the commands -----------------------------------------------------------------------------------


def _apply(client: Client, args: argparse.Namespace) -> int:
    import yaml

    from .spec_loader import slugify

    status = 0
    for path in args.files:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            print(f"{path}: cannot read: {error.strerror or error}", file=sys.stderr)
            status = USAGE
            continue
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None  # the server says what is wrong, by line
        name = data.get("name") if isinstance(data, dict) else None
        pipeline_id = slugify(name) if isinstance(name, str) and name.strip() else slugify(Path(path).stem)
        try:
            code, pipeline = client.put_pipeline(pipeline_id, text)
        except Refused as error:
            if error.code != SpecError.code:
                raise
            print(f"{path}: {len(error.details)} error(s)", file=sys.stderr)
            for item in error.details:
                print(f"  {item.get('path', '$')}: {item.get('message', '')}", file=sys.stderr)
            status = status or REFUSED
            continue
        jobs = len(pipeline.get("jobs", []))
        print(f"{path}: pipeline {pipeline_id!r} {'created' if code == 201 else 'replaced'} "
              f"({jobs} job{'s' if jobs != 1 else ''})")  # fmt: skip
        for warning in pipeline.get("warnings", []):  # a runs-on no node of the server matches
            print(f"  warning: {warning.get('path', '$')}: {warning.get('message', '')}")
    return status


def _submit(client: Client, args: argparse.Namespace) -> int:
    build = client.submit(args.pipeline, dict(args.var or []))
    where = f" (position {build['queue_position']} in group {build['group']})" if build.get("queue_position") else ""
    print(f"build {build['id']} {build['status']}{where}", flush=True)
    if args.follow:
        for piece in client.follow_logs(build["id"]):
            sys.stdout.write(piece)
            sys.stdout.flush()
    if not (args.wait or args.follow):
        return 0
    build = client.wait(build["id"])  # at once after a follow: the log ended with the build
    print(f"build {build['id']} {build['status']}{_took(build)}{_reason(build)}", flush=True)
    return 0 if build["status"] == "SUCCEED" else 1


def _builds(client: Client, args: argparse.Namespace) -> int:
    # Oldest first, whatever order the server lists them in (the newest come last, next to the prompt).
    found = sorted(client.builds(args.pipeline, args.status), key=lambda b: (b.get("queued_at") or "", b["number"]))
    rows = [(b["id"], b["status"] + (f" #{b['queue_position']}" if b.get("queue_position") else ""),
             str(b.get("execute_count", 1)), _clock(b.get("queued_at")), _took(b).strip() or "-",
             b.get("reason") or "") for b in found]  # fmt: skip
    _table(("BUILD", "STATUS", "RUN", "QUEUED", "TOOK", "REASON"), rows, empty="no builds")
    return 0


def _logs(client: Client, args: argparse.Namespace) -> int:
    if args.follow:
        for piece in client.follow_logs(args.build, args.job, args.step):
            sys.stdout.write(piece)
            sys.stdout.flush()
    else:
        sys.stdout.write(client.logs(args.build, args.job, args.step))
    return 0


def _retry(client: Client, args: argparse.Namespace) -> int:
    build = client.retry(args.build, args.job, args.step, args.failed_only)
    what = f"step {args.step}" if args.step else f"job {args.job}" if args.job else \
        "failed jobs" if args.failed_only else "build"  # fmt: skip
    print(f"build {build['id']} {build['status']} (run {build['execute_count']}): retrying {what}")
    return 0


def _cancel(client: Client, args: argparse.Namespace) -> int:
    build = client.cancel(args.build)
    if build["status"] in ("QUEUE", "RUNNING"):  # its running steps are being stopped
        print(f"build {build['id']} cancelling (was {build['status']})")
    else:
        print(f"build {build['id']} {build['status']}{_reason(build)}")
    return 0


def _nodes(client: Client, args: argparse.Namespace) -> int:
    rows = []
    for node in client.nodes():
        agents = node.get("agents", [])
        busy = sum(1 for agent in agents if agent.get("status") != "idle")
        locked = sum(1 for agent in agents if agent.get("locked_by"))
        state = "draining" if node.get("draining") else ("connected" if node.get("connected", True) else "lost")
        rows.append((node["name"], node["pool"], node.get("kind", "local"), str(len(agents)), str(busy), str(locked),
                     ",".join(node.get("labels", [])) or "-", state))  # fmt: skip
    _table(("NODE", "POOL", "KIND", "AGENTS", "BUSY", "LOCKED", "LABELS", "STATE"), rows, empty="no nodes")
    return 0


# -- formatting ------------------------------------------------------------------------------------


def _table(head: tuple[str, ...], rows: Sequence[tuple[str, ...]], empty: str) -> None:
    if not rows:
        print(empty)
        return
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head))]
    for row in (head, *rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _clock(text: Any) -> str:
    moment = _time(text)
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _took(build: dict[str, Any]) -> str:
    began, ended = _time(build.get("started_at")), _time(build.get("finished_at"))
    if began is None or ended is None:
        return ""
    return f" in {(ended - began).total_seconds():.1f}s"


def _reason(build: dict[str, Any]) -> str:
    reason = build.get("reason")
    return f": {reason}" if reason and build.get("status") != "SUCCEED" else ""

