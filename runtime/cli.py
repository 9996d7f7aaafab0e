"""The ``shunter`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from actors.errors import SpecError


def _validate(args: argparse.Namespace) -> int:
    from .spec_loader import load_pipeline

    status = 0
    for path in args.files:
        try:
            spec = load_pipeline(_read(path))
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
            print(f"{path}: ok ({spec.name!r}: {len(spec.stages)} stage(s), {jobs} job(s))")
    return status


def _bench(args: argparse.Namespace) -> int:
    from bench.kernel import main as kernel_main

    kernel_main(["--quick"] if args.quick else [])
    return 0


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shunter", description="An actor-model CI/CD build scheduler.")
    commands = parser.add_subparsers(dest="command", required=True)

    validate = commands.add_parser("validate", help="check pipeline YAML files and print every error by path")
    validate.add_argument("files", nargs="+", metavar="PIPELINE.yml")
    validate.set_defaults(handler=_validate)

    bench = commands.add_parser("bench", help="run the kernel benchmarks (from a source checkout)")
    bench.add_argument("--quick", action="store_true")
    bench.set_defaults(handler=_bench)

    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
