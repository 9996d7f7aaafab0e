"""Run the benchmark suite: ``python -m bench [SCENARIO ...] [--quick]`` (or ``shunter bench``).

Each scenario prints its table (figure, baseline measured in the same run,
ratio, target) and writes ``bench/results/<scenario>.json``; at the end every
row is summarised, with targets checked where they can be read as
``[ratio|figure] <= x`` or ``>= x``, and written to ``summary.json``. A
scenario that fails (an unverified FIFO order, a leak after chaos) is
reported and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import importlib.util
import re
import sys
import time
import traceback
from collections.abc import Sequence

from ._report import Row, save

__all__ = ["SCENARIOS", "available", "parse_args", "target_met", "main"]

# In the order they run by default. ``http``, ``abuse`` and ``store`` are optional: they run
# when their module exists and their HTTP client (httpx, of the ``test`` extra) is installed.
SCENARIOS = ("kernel", "dispatch", "groups", "scale", "timeouts", "chaos", "http", "dispatch_scale", "abuse",
             "store")  # fmt: skip
OPTIONAL = {"http": ("httpx",), "abuse": ("httpx",), "store": ("httpx",)}
_TARGET = re.compile(r"^\s*(ratio|figure)?\s*(<=|>=|==)\s*([0-9.]+)")


def available() -> list[str]:
    """The scenarios that can run here (an optional one without its module or its needs is left out)."""
    return [name for name in SCENARIOS if name not in OPTIONAL or all(
        importlib.util.find_spec(module) for module in (f"bench.{name}", *OPTIONAL[name]))]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``scenarios`` (default: all available, in order) and ``quick``. Unknown names exit 2."""
    names = available()
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"any of: {', '.join(names)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes: the whole suite in under a minute")
    args = parser.parse_args(argv)
    unknown = [name for name in args.scenarios if name not in names]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    args.scenarios = list(dict.fromkeys(args.scenarios)) or names
    return args


def target_met(row: Row) -> bool | None:
    """Whether the row meets its target, when the target reads ``[ratio|figure] <=|>=|== x``; else None."""
    match = _TARGET.match(row.target)
    if match is None:
        return None
    subject, operator, bound = match.group(1) or "ratio", match.group(2), float(match.group(3))
    value = row.figure if subject == "figure" else row.ratio
    if operator == "<=":
        return value <= bound
    if operator == ">=":
        return value >= bound
    return abs(value - bound) < 1e-9


def _summary(results: list[tuple[str, Row]], failed: list[str], seconds: dict[str, float], total: float,
             quick: bool) -> None:  # fmt: skip
    timing = ", ".join(f"{name} {spent:.0f}" for name, spent in seconds.items())
    print(f"\n== summary ({'quick' if quick else 'full'} run, {total:.0f} s: {timing}) ==")
    header = f"{'scenario':<15}{'figure':<36}{'value':>13}  {'baseline':<32}{'value':>13}  {'ratio':>8}  target"
    print(header)
    print("-" * len(header))
    for scenario, row in results:
        met = target_met(row)
        verdict = "" if met is None else ("  ok" if met else "  MISSED")
        print(f"{scenario:<15}{row.name:<36}{row.figure:>10.2f} {row.unit:<2}  {row.baseline_name:<32}"
              f"{row.baseline:>10.2f} {row.unit:<2}  {row.ratio:>7.2f}x  {row.target}{verdict}")  # fmt: skip
    for scenario in failed:
        print(f"{scenario:<15}FAILED (see the traceback above)")
    rows = [dataclasses.replace(row, name=f"{scenario}: {row.name}") for scenario, row in results]
    extra = {"quick": quick, "seconds": total, "scenario_seconds": seconds, "failed": failed}
    print(f"wrote {save('summary', rows, extra)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenarios; 0 if all ran to the end, 1 if any failed (2 for bad arguments)."""
    try:
        args = parse_args(argv)
    except SystemExit as stop:  # --help, or bad arguments
        return int(stop.code or 0)
    results: list[tuple[str, Row]] = []
    failed: list[str] = []
    start = time.perf_counter()
    seconds: dict[str, float] = {}
    for name in args.scenarios:
        print(f"\n### {name}{' (quick)' if args.quick else ''}", flush=True)
        gc.collect()  # what the previous scenario left must not be collected on this one's time
        began = time.perf_counter()
        try:
            rows = importlib.import_module(f"bench.{name}").run(quick=args.quick)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        else:
            results.extend((name, row) for row in rows)
        seconds[name] = time.perf_counter() - began
        print(f"### {name}: {seconds[name]:.1f} s", flush=True)
    _summary(results, failed, seconds, time.perf_counter() - start, args.quick)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
