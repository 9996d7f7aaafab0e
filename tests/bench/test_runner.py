"""The benchmark runner: argument parsing, scenario discovery, target reading, the SVG plot.

The scenarios themselves are never run here (they take seconds to minutes);
only that each module imports and exposes ``run(quick)``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import xml.etree.ElementTree as ET

import pytest

from bench import __main__ as runner
from bench import plot
from bench._report import Row


def test_default_is_every_available_scenario_in_order() -> None:
    args = runner.parse_args([])
    assert args.scenarios == runner.available()
    assert not args.quick
    has_http = importlib.util.find_spec("bench.http") is not None
    assert ("http" in args.scenarios) is has_http
    assert [name for name in runner.SCENARIOS if name in args.scenarios] == args.scenarios


def test_named_scenarios_and_quick() -> None:
    args = runner.parse_args(["scale", "groups", "scale", "--quick"])
    assert args.scenarios == ["scale", "groups"]
    assert args.quick


def test_unknown_scenario_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        runner.parse_args(["nope"])
    assert stop.value.code == 2
    assert "unknown scenario(s) nope" in capsys.readouterr().err
    assert runner.main(["nope"]) == 2


def test_help_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert runner.main(["--help"]) == 0
    assert "--quick" in capsys.readouterr().out


@pytest.mark.parametrize("name", runner.available())
def test_each_scenario_imports_and_exposes_run(name: str) -> None:
    module = importlib.import_module(f"bench.{name}")
    assert callable(module.run)
    assert "quick" in inspect.signature(module.run).parameters


@pytest.mark.parametrize(
    ("target", "figure", "baseline", "met"),
    [
        ("ratio <= 1.3", 1.2, 1.0, True),
        ("ratio <= 1.3", 1.4, 1.0, False),
        (">= 1.0", 60_000, 50_000, True),
        ("figure <= 2048", 2500, 2600, False),
        ("figure <= 1", 0.4, 2.0, True),
        ("ratio == 1", 300, 300, True),
        ("ratio <= 2.0 (>= 0.5x throughput)", 1.0, 1.0, True),
        ("flat (no issue target)", 5, 1, None),
        ("", 1, 1, None),
    ],
)
def test_target_met(target: str, figure: float, baseline: float, met: bool | None) -> None:
    assert runner.target_met(Row("x", figure, "µs", "y", baseline, target)) is met


def test_plot_is_well_formed_svg() -> None:
    curves = [
        plot.Curve("admission", "builds queued", "µs", [(1_000, 90.0), (10_000, 95.0), (1_000_000, 99.0)], 117.0, "1.3x"),
        plot.Curve("empty", "nodes", "µs", []),
    ]
    root = ET.fromstring(plot.render(curves, "title <&>"))
    assert root.tag.endswith("svg")
    namespace = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f".//{namespace}polyline")) == 1
    assert len(root.findall(f".//{namespace}circle")) == 3
    texts = [element.text for element in root.iter(f"{namespace}text")]
    assert "1M" in texts and "title <&>" in texts and "no data" in texts


def test_an_optional_scenario_whose_needs_are_missing_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(runner.OPTIONAL, "http", ("shunter_no_such_module",))
    assert "http" not in runner.available()
    assert runner.main(["http"]) == 2
