"""Printing and saving benchmark rows: figure, same-run baseline, ratio.

These machines are shared and noisy, so every figure is reported beside a
baseline measured in the same run, and the ratio is what to read.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path



def _results_dir() -> Path:
    """``$SHUNTER_BENCH_RESULTS``; else ``bench/results`` in a source checkout; else
    ``./bench-results`` (an installed package's directory is no place for output)."""
    chosen = os.environ.get("SHUNTER_BENCH_RESULTS")
    if chosen:
        return Path(chosen)
    here = Path(__file__).resolve().parent
    return here / "results" if (here.parent / "pyproject.toml").is_file() else Path.cwd() / "bench-results"


RESULTS_DIR = _results_dir()


@dataclass(frozen=True)
class Row:
    """One measured figure beside its baseline. ``ratio`` = figure / baseline."""

    name: str
    figure: float
    unit: str
    baseline_name: str
    baseline: float
    target: str = ""

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("inf")


def best_of(repeats: int, measure: Callable[[], float]) -> float:
    """The smallest of ``repeats`` measurements: the least disturbed by noise."""
    return min(measure() for _ in range(repeats))


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n== {title} ==")
    header = f"{'figure':<34}{'value':>14}  {'baseline':<30}{'value':>14}  {'ratio':>7}  target"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.name:<34}{row.figure:>11.2f} {row.unit:<2}  {row.baseline_name:<30}"
            f"{row.baseline:>11.2f} {row.unit:<2}  {row.ratio:>6.2f}x  {row.target}"
        )


def save(scenario: str, rows: Sequence[Row], extra: dict[str, object] | None = None) -> Path:
    """Write the rows (with machine facts) to ``RESULTS_DIR/<scenario>.json`` (``bench/results/`` in a checkout)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{scenario}.json"
    payload = {
        "scenario": scenario,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
