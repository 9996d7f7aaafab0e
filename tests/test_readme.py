"""Every code block of README.md runs as written; the blocks and links of docs/ are checked.

How each kind of fenced block is run, the way a reader would run it:

- ```python blocks are complete scripts: each is saved to a file and run with
  this interpreter from the repository root. In a script that binds
  ``127.0.0.1:8000`` that port becomes 0 (the system picks a free one): tests
  never take a fixed port on this shared machine.
- ```yaml blocks are validated: configurations (their top-level keys are
  configuration keys) by ``runtime.config.load_config``, pipelines by
  ``runtime.spec_loader.load_pipeline`` with the built-in actions.
- ```json blocks must parse; one shaped like a build must decode as a ``BuildInfo``.
- ```sh blocks run in order, command by command (a ``\\`` continues a line),
  each with ``bash -c`` from the repository root:

  - ``.venv/bin/`` stands for the directory of this interpreter (the same
    virtualenv when ``.ci/run`` runs the suite);
  - the block that installs shunter and runs the tests is exactly what
    ``.ci/run`` runs, so it is checked against that script rather than run
    here (it would reinstall the package and run this suite inside itself);
  - ``shunter serve`` starts the real server, with ``--bind 127.0.0.1:0``
    added so that the system chooses a free port; ``localhost:8000`` in the
    later commands becomes the address it printed. The test stops it with
    SIGINT, as Ctrl-C would, and checks that it exits 0;
  - ``curl -N`` reads an event stream ("Ctrl-C to stop"): it runs in the
    background, is read until it has shown what the walk expects, then stopped;
  - ``export NAME=value`` sets NAME for the commands after it (``localhost:8000``
    in the value becomes the server's address too);
  - every other command must exit 0, and an answer that is JSON must not be
    an error body (``{"error": ...}``), since curl exits 0 on HTTP errors too.

- ```text and unlabelled blocks are not code (a tree, a sample output).

docs/*.md get the same treatment where it is cheap: YAML and JSON blocks are
validated, Python blocks run, shell blocks are syntax-checked (``bash -n``).
Every relative link and every path named in README.md, docs/*.md,
pyproject.toml and the example pipelines must exist in the repository, and every "DESIGN §N" cited in
the code must be a section of docs/design.md.
"""

from __future__ import annotations

import glob
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actors.execution.actions import ActionRegistry
from actors.model.info import BuildInfo
from runtime.config import load_config
from runtime.spec_loader import load_pipeline

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
BIN = Path(sys.executable).parent
CONFIG_KEYS = {"server", "pools", "pipelines", "heartbeat-interval", "heartbeat-timeout", "max-queued-builds",
               "shutdown-timeout", "auth", "secrets", "max-nodes", "max-agents-per-node", "state-dir", "retention",
               "max-log-bytes", "drain-timeout"}  # fmt: skip
KNOWN_LANGUAGES = {"python", "yaml", "json", "sh", "text", ""}
WAIT = 30.0  # seconds: the bound of every poll of a real process below


@dataclass
class Block:
    path: Path
    line: int
    language: str
    text: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} ({self.language or 'plain'})"


_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)


def code_blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    return [Block(path, text.count("\n", 0, match.start()) + 1, match.group(1), match.group(2))
            for match in _FENCE.finditer(text)]  # fmt: skip


def commands(block: Block) -> list[str]:
    """The block's commands: ``\\`` joins lines; blank and comment-only lines are left out."""
    joined = re.sub(r"\\\n\s*", " ", block.text)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _env(exported: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(exported or {})
    return env


def _local(command: str, address: str | None = None) -> str:
    command = command.replace(".venv/bin/", f"{BIN}/")
    if address is not None:
        command = command.replace("localhost:8000", address)
    return command


def _is_setup(block: Block) -> bool:
    return any(word in block.text for word in ("python3 -m venv", "pip install", "-m pytest"))


def _is_config(data: Any) -> bool:
    return isinstance(data, dict) and bool(data) and set(data) <= CONFIG_KEYS


# -- every block is fenced and labelled -------------------------------------------------------------


def test_readme_has_only_fenced_blocks_with_known_languages() -> None:
    blocks = code_blocks(README)
    assert blocks, "README.md has no code block"
    for block in blocks:
        assert block.language in KNOWN_LANGUAGES, f"{block}: label it python, yaml, json, sh or text"
    # An indented block would escape this test: a line indented 4 spaces after a blank line, outside fences.
    outside = _FENCE.sub("", README.read_text(encoding="utf-8")).splitlines()
    for before, line in zip(outside, outside[1:]):
        assert not (before.strip() == "" and line.startswith("    ") and line.strip()), f"indented block: {line!r}"


# -- setup: the block .ci/run runs -------------------------------------------------------------------


def test_the_setup_block_is_what_ci_runs() -> None:
    setup = [block for block in code_blocks(README) if block.language == "sh" and _is_setup(block)]
    assert len(setup) == 1, "one block installs shunter and runs the tests"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").replace(" --quiet", "")
    ci_lines = {line.strip() for line in ci.splitlines()}
    for command in commands(setup[0]):
        assert command in ci_lines, f".ci/run does not run {command!r} (it proves the README's setup block)"


# -- yaml and json ------------------------------------------------------------------------------------


def _check_data_block(block: Block) -> None:
    if block.language == "yaml":
        import yaml

        data = yaml.safe_load(block.text)
        if _is_config(data):
            config = load_config(block.text)
            for pattern in config.pipelines:
                assert glob.glob(str(ROOT / pattern)), f"{block}: {pattern} matches no file in the repository"
        else:
            load_pipeline(block.text, known_actions=ActionRegistry.with_builtins().names())
    elif block.language == "json":
        data = json.loads(block.text)
        if isinstance(data, dict) and {"pipeline_id", "stages"} <= set(data):
            msgspec.json.decode(block.text, type=BuildInfo, strict=True)


def _data_blocks() -> list[Block]:
    return [block for path in (README, *DOCS) for block in code_blocks(path) if block.language in ("yaml", "json")]


@pytest.mark.parametrize("block", _data_blocks(), ids=str)
def test_yaml_and_json_blocks_are_valid(block: Block) -> None:
    _check_data_block(block)


# -- python -------------------------------------------------------------------------------------------

# What a script must print, found by a line of the block.
EXPECTED_OUTPUT = {
    'rt.retry(b.id, job="package")': ["build-and-deploy.1 SUCCEED", "build-and-deploy.1 SUCCEED execute_count 2"],
    'print(build.id, build.status)': ["build-and-deploy.1 SUCCEED"],
}


def _python_blocks() -> list[Block]:
    return [block for path in (README, *DOCS) for block in code_blocks(path) if block.language == "python"]


@pytest.mark.parametrize("block", _python_blocks(), ids=str)
def test_python_blocks_run_as_scripts(block: Block, tmp_path: Path) -> None:
    script = tmp_path / "block.py"
    script.write_text(block.text.replace("127.0.0.1:8000", "127.0.0.1:0"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, f"{block}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, f"{block}\n{done.stderr}"
    for marker, lines in EXPECTED_OUTPUT.items():
        if marker in block.text:
            for line in lines:
                assert line in done.stdout.splitlines(), f"{block}: expected {line!r} in\n{done.stdout}"


# -- sh: against a real `shunter serve` ---------------------------------------------------------------


class Stream:
    """A background ``curl -N``: its output so far, read without blocking."""

    def __init__(self, command: str) -> None:
        self.command = command
        self.process = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
        self.output = b""

    def read_until(self, *needles: str) -> str:
        """Read until every needle has appeared (bounded by WAIT seconds)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + WAIT
        while not all(needle.encode() in self.output for needle in needles):
            left = deadline - time.monotonic()
            assert left > 0, f"{self.command!r} never showed {needles}; got:\n{self.output.decode()}"
            ready, _, _ = select.select([self.process.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"{self.command!r} ended early:\n{self.output.decode()}"
                self.output += chunk
        return self.output.decode()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # Ctrl-C
            try:
                self.process.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class Server:
    """``shunter serve`` as README.md writes it, on a free loopback port."""

    def __init__(self, command: str) -> None:
        argv = shlex.split(_local(command), comments=True)
        assert argv[-1] == "serve", f"expected a plain `shunter serve`, got {command!r}"
        self.process = subprocess.Popen([*argv, "--bind", "127.0.0.1:0"], cwd=ROOT, env=_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        self.lines: list[str] = []
        assert self.process.stdout is not None
        deadline = time.monotonic() + WAIT
        while not any(line.startswith("shunter serving on http://127.0.0.1:") for line in self.lines):
            assert time.monotonic() < deadline, f"the server did not start:\n{self.lines}"
            ready, _, _ = select.select([self.process.stdout], [], [], 0.5)
            if ready:
                line = self.process.stdout.readline().decode()
                assert line, f"the server exited: {self.process.wait()}\n{self.process.stderr.read()!r}"  # type: ignore[union-attr]
                self.lines.append(line.rstrip("\n"))
        url = next(line for line in self.lines if line.startswith("shunter serving on"))
        self.address = re.search(r"http://(127\.0\.0\.1:\d+)", url).group(1)  # type: ignore[union-attr]

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.address}{path}", timeout=10) as response:
            return json.load(response)

    def stop(self) -> tuple[int, str, str]:
        """Ctrl-C, then what it printed; killed if it does not stop in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:  # running builds get drain-timeout (30 s) to finish; a second Ctrl-C interrupts them now
            stdout, stderr = self.process.communicate(timeout=2)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
        try:
            stdout, stderr = self.process.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            stdout, stderr = self.process.communicate()
        return self.process.returncode, "\n".join(self.lines) + stdout.decode(), stderr.decode()


def _run(command: str, exported: dict[str, str] | None = None) -> str:
    done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=_env(exported), capture_output=True, timeout=120)
    out, err = done.stdout.decode(), done.stderr.decode()
    assert done.returncode == 0, f"{command!r} exited {done.returncode}\n{out}\n{err}"
    try:
        answer = json.loads(out)
    except ValueError:
        answer = None
    assert not (isinstance(answer, dict) and "error" in answer), f"{command!r} was refused: {out}"
    return out


def test_shell_blocks_run_against_a_real_server() -> None:
    blocks = [block for block in code_blocks(README) if block.language == "sh" and not _is_setup(block)]
    server: Server | None = None
    streams: list[Stream] = []
    outputs: dict[str, str] = {}
    exported: dict[str, str] = {}
    try:
        for block in blocks:
            for command in commands(block):
                if re.search(r"\bshunter serve\b", command):
                    assert server is None, "one server"
                    server = Server(command)
                    continue
                address = server.address if server is not None else None
                assert address is not None or "localhost:8000" not in command, f"{command!r} before the server"
                local = _local(command, address)
                export = re.fullmatch(r"export (\w+)=(\S+)(?:\s+#.*)?", local)
                if export:
                    exported[export.group(1)] = export.group(2)
                elif re.search(r"\bcurl\b.*\s-N\b", command):
                    streams.append(Stream(local))
                else:
                    outputs[command] = _run(local, exported)
        assert server is not None, "README.md starts no server"
        _check_walk(server, outputs, streams)
    finally:
        for stream in streams:
            stream.stop()
        if server is not None:
            status, out, err = server.stop()
            assert status == 0, f"the server exited {status}\n{out}\n{err}"
            assert "stopped: " in out, out


def _answer(outputs: dict[str, str], *words: str) -> Any:
    """The JSON printed by the one command containing every word."""
    found = [out for command, out in outputs.items() if all(word in command for word in words)]
    assert len(found) == 1, (words, list(outputs))
    return json.loads(found[0])


def _check_walk(server: Server, outputs: dict[str, str], streams: list[Stream]) -> None:
    """What the README's comments say each step of the walk shows, checked on the server's answers."""
    validated = next(out for command, out in outputs.items() if "shunter validate" in command)
    assert validated.count(": ok (") == len(glob.glob(str(ROOT / "examples/pipelines/*.yml"))), validated
    assert _answer(outputs, "PUT", "step-retry")["id"] == "step-retry"
    first = _answer(outputs, "POST", "/builds", "variables")
    assert (first["id"], first["status"]) == ("step-retry.1", "RUNNING")
    build = _answer(outputs, "curl localhost:8000/v1/builds/step-retry.1")
    jobs = {job["id"]: job["status"] for stage in build["stages"] for job in stage["jobs"]}
    assert jobs == {"flaky": "FAILED", "long": "RUNNING"}, jobs
    log = outputs["curl 'localhost:8000/v1/builds/step-retry.1/logs?job=flaky'"]
    assert "=== flaky / flaky-step attempt 2 (FAILED) ===" in log, log  # after its automatic retry
    retried = _answer(outputs, "/retry")
    flaky = next(job for stage in retried["stages"] for job in stage["jobs"] if job["id"] == "flaky")
    assert retried["execute_count"] == 1 and flaky["attempts"][-1]["retry_of"] == 1, flaky
    second = json.loads(outputs["curl -X POST localhost:8000/v1/pipelines/step-retry/builds"])
    assert (second["id"], second["status"]) == ("step-retry.2", "QUEUE"), second
    assert _answer(outputs, "/v1/groups")[0]["queue"][0]["build_id"] == "step-retry.2"
    assert _answer(outputs, "/cancel")["id"] == "step-retry.1"
    assert "builds_running" in _answer(outputs, "/v1/stats")

    # The command-line client, against the same server (SHUNTER_SERVER).
    cli = {command.split("#")[0].split("shunter ", 1)[1].strip(): out for command, out in outputs.items()
           if "bin/shunter " in command and "validate" not in command and " run " not in command}  # fmt: skip
    assert cli["apply examples/pipelines/build-and-deploy.yml"] == \
        "examples/pipelines/build-and-deploy.yml: pipeline 'build-and-deploy' created (3 jobs)\n"  # fmt: skip
    waited = cli["submit build-and-deploy --var DEPLOY_ENV=prod --wait"].splitlines()
    assert waited[0] == "build build-and-deploy.1 RUNNING" and waited[-1].startswith("build build-and-deploy.1 SUCCEED")
    followed = cli["submit build-and-deploy --follow"]
    assert "packaging for test" in followed and followed.splitlines()[-1].startswith("build build-and-deploy.2 SUCCEED")
    assert "=== compile / " in cli["logs build-and-deploy.1 --job compile"]
    assert cli["cancel step-retry.2"] == "build step-retry.2 cancelling (was RUNNING)\n"
    assert cli["nodes"].splitlines()[0].split()[:3] == ["NODE", "POOL", "KIND"]

    replay, live = [s for s in streams if "build=step-retry.2" in s.command], [s for s in streams if "?" not in s.command]
    assert len(replay) == 1 and len(live) == 1
    replay[0].read_until('"status":"RUNNING","reason":null,"pipeline_id":"step-retry","build_id":"step-retry.2",'
                         '"job_id":null')  # the build event: it was let in
    text = live[0].read_until('"build_id":"step-retry.1"', '"status":"CANCELED"', '"build_id":"step-retry.2"')
    assert "event: build" in text and "event: step" in text

    # The step retry is linked to the attempt it retries, all inside execution 1.
    build = server.get("/v1/builds/step-retry.1")
    step = next(job for stage in build["stages"] for job in stage["jobs"] if job["id"] == "flaky")["steps"][1]
    assert [(a["number"], a["retry_of"], a["execute_count"]) for a in step["attempts"]] == [
        (1, None, 1), (2, 1, 1), (3, 2, 1), (4, 3, 1)]  # fmt: skip


def test_docs_shell_blocks_parse() -> None:
    for path in DOCS:
        for block in code_blocks(path):
            if block.language == "sh":
                done = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True)
                assert done.returncode == 0, f"{block}: {done.stderr}"


# -- references ---------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")
_PATH = re.compile(r"`((?:actors|runtime|tests|bench|examples|docs|\.ci)/[^`\s]*)`")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+\s+(.*?)\s*$", _FENCE.sub("", path.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


REFERRING = [README, *DOCS, ROOT / "pyproject.toml", *sorted(ROOT.glob("examples/pipelines/*.yml"))]


@pytest.mark.parametrize("path", REFERRING, ids=lambda p: str(p.relative_to(ROOT)))
def test_references_point_into_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text
    assert "DESIGN.md" not in text, f"{path.name}: cite docs/design.md, which is in the repository"
    if path.parent != ROOT / "docs":  # inside docs/, "DESIGN §N" is how design.md says code cites it
        assert "DESIGN §" not in text, f"{path.name}: cite docs/design.md §N, which is in the repository"
    for target in _LINK.findall(_FENCE.sub("", text)):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: link to {target}, which does not exist"
        if anchor:
            assert anchor in _anchors(linked), f"{path.name}: no heading for #{anchor} in {linked.name}"
    for named in _PATH.findall(text):
        named = re.sub(r"[),.:;]+$", "", named)
        if named.startswith("bench/results/") or "<" in named:
            continue  # written by the benchmarks, git-ignored
        assert glob.glob(str(ROOT / named)), f"{path.name} names {named}, which is not in the repository"
    for section in re.findall(r"docs/design\.md §(\d+(?:\.\d+)?)", text):
        assert section in _design_sections(), f"{path.name} cites docs/design.md §{section}, which has no such section"


def _design_sections() -> set[str]:
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    return set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))


def test_design_sections_cited_by_the_code_exist() -> None:
    cited: dict[str, str] = {}
    for file in [*ROOT.glob("actors/**/*.py"), *ROOT.glob("runtime/**/*.py"), *ROOT.glob("tests/**/*.py"),
                 *ROOT.glob("bench/**/*.py"), *ROOT.glob("examples/**/*.py")]:  # fmt: skip
        for section in re.findall(r"(?:DESIGN|docs/design\.md) §(\d+(?:\.\d+)?)", file.read_text(encoding="utf-8")):
            cited.setdefault(section, str(file.relative_to(ROOT)))
    assert cited, "no citation found: has the citation form changed?"
    missing = {section: file for section, file in cited.items() if section not in _design_sections()}
    assert not missing, f"cited but not in docs/design.md: {missing}"


def test_code_cites_the_design_by_its_path_in_the_repository() -> None:
    """A bare "DESIGN §N" names a file a reader of the repository cannot find."""
    bare = [
        str(file.relative_to(ROOT))
        for pattern in ("actors/**/*.py", "runtime/**/*.py", "tests/**/*.py", "bench/**/*.py", "examples/**/*.py")
        for file in ROOT.glob(pattern)
        if file != Path(__file__) and re.search(r"\bDESIGN\s+§", file.read_text(encoding="utf-8"))
    ]
    assert not bare, f"cite docs/design.md §N instead of DESIGN §N in: {bare}"


# -- the reference pages cover what the code has ------------------------------------------------------


def _page(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def test_reference_pages_name_every_key_route_error_and_method() -> None:
    """A key, route, error code or method added to the code without its line in docs/ fails here."""
    import inspect

    from actors.model import errors
    from actors.model.info import BUILD_FINAL, JOB_FINAL, STEP_FINAL
    from runtime import Runtime, _spec_steps, config, spec_loader
    from runtime.http import core
    from runtime.http.routes import ROUTES

    yaml_page = _page("yaml.md")
    pipeline_keys: list[tuple[str, ...]] = [
        spec_loader._TOP_KEYS, spec_loader._CONCURRENCY_KEYS, spec_loader._STAGE_KEYS, spec_loader._JOB_KEYS,
        spec_loader._RUNS_ON_KEYS, spec_loader._MUTEX_KEYS, _spec_steps._STEP_KEYS]  # fmt: skip
    for keys in pipeline_keys:
        for key in keys:
            assert f"`{key}`" in yaml_page, f"docs/yaml.md does not describe the pipeline key {key!r}"
    config_page = _page("configuration.md")
    config_keys: list[tuple[str, tuple[str, ...]]] = [
        ("", config._TOP_KEYS), ("server.", config._SERVER_KEYS), ("pools[].", config._POOL_KEYS),
        ("pools[].nodes[].", config._NODE_KEYS)]  # fmt: skip
    for prefix, keys in config_keys:
        for key in keys:
            assert f"`{prefix}{key}`" in config_page, f"docs/configuration.md does not describe {prefix}{key}"
    http_page = _page("http-api.md")
    for route in ROUTES:
        row = re.search(rf"^\| `{route.method} {re.escape(route.path)}[`?].*$", http_page, re.M)
        assert row is not None, f"docs/http-api.md has no row for {route.method} {route.path}"
        cells = [cell.strip() for cell in row.group(0).strip("|").split("|")]
        assert cells[2].startswith(str(route.status)), f"{route.method} {route.path} answers {route.status}"
        assert set(re.findall(r"\d{3}", cells[3])) == {str(status) for status in route.errors}, (
            f"docs/http-api.md: {route.method} {route.path} may answer {route.errors}, the row says {cells[3]!r}")
    shunter_errors = [value for module in (errors, core) for value in vars(module).values()
                      if inspect.isclass(value) and issubclass(value, errors.ShunterError)]  # fmt: skip
    for error in shunter_errors:
        if error is not errors.ShunterError:
            assert f"`{error.code}` | {error.http_status} |" in http_page, f"error code {error.code} in http-api.md"
    python_page = _page("python-api.md")
    for name, _ in inspect.getmembers(Runtime):
        if not name.startswith("_") and name not in ("system", "config", "actions"):
            assert f"rt.{name}" in python_page, f"docs/python-api.md does not describe Runtime.{name}"
    statuses_page = _page("statuses.md")
    for status in {*BUILD_FINAL, *JOB_FINAL, *STEP_FINAL, "QUEUE", "RUNNING", "DEPENDENT_WAITING"}:
        assert f"| `{status}` |" in statuses_page, f"docs/statuses.md does not describe {status}"
