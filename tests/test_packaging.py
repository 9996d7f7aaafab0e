"""The project as a user installs it: a wheel (``pip install .``, not ``-e``).

The wheel is built from a copy of the source tree and installed into a new
virtualenv that borrows only the dependencies (trio, hypercorn, ...) from the
test environment, so ``actors``, ``runtime`` and ``bench`` can only come
from the wheel. About 5 s: a build, an install and two short commands.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("actors", "runtime", "bench")


def _run(args: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "SHUNTER_BENCH_RESULTS", "VIRTUAL_ENV")}  # fmt: skip
    result = subprocess.run([str(arg) for arg in args], cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def test_the_wheel_holds_every_package_and_its_commands_run(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "dist", source],
         tmp_path)  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("shunter-*.whl")

    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".py")}
    expected = {path.relative_to(source).as_posix() for name in PACKAGES for path in (source / name).rglob("*.py")}
    assert expected <= shipped, sorted(expected - shipped)
    assert not any(name.startswith(("tests/", "examples/")) for name in shipped), sorted(shipped)

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
                .stdout.strip())  # fmt: skip
    # The dependencies from this environment: a path line in a .pth file adds
    # the directory but not the editable install's own .pth hooks inside it.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index", wheel],
         tmp_path)  # fmt: skip

    work = tmp_path / "work"
    work.mkdir()
    where = _run([python, "-c", "import actors, bench, runtime; print(actors.__file__, bench.__file__, runtime.__file__)"],
                 work).stdout.split()  # fmt: skip
    assert all(Path(path).is_relative_to(site) for path in where), where

    shunter = venv / "bin" / "shunter"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert _run([shunter, "--version"], work).stdout == f"shunter {version}\n"
    bench = _run([shunter, "bench", "kernel", "--quick"], work)
    assert "tell: µs per message" in bench.stdout, bench.stdout
    assert (work / "bench-results" / "kernel.json").is_file(), bench.stdout
