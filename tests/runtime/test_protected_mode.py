"""``shunter serve`` without a token refuses any bind but loopback, before binding; ``shunter token``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.auth import TokenTable, digest_of
from runtime.cli import main
from runtime.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_serve_refuses_a_public_bind_without_a_token_before_binding() -> None:
    # A port that is taken: had the server tried to bind it, it would say so instead.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "SHUNTER_TOKEN"}
        done = subprocess.run([sys.executable, "-m", "runtime.cli", "serve", "--bind", f"0.0.0.0:{port}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0] and "SHUNTER_TOKEN" in lines[0], done.stderr
    assert "serving" not in done.stdout and "in use" not in done.stderr


def test_shunter_token_prints_a_token_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["token", "--role", "write", "--name", "deploy"]) == 0
    out = capsys.readouterr().out
    token = out.split("SHUNTER_TOKEN): ", 1)[1].split()[0]
    digest = f"sha256:{digest_of(token)}"
    assert digest in out and "role: write" in out and "name: deploy" in out
    # The printed snippet is a working configuration for that token.
    snippet = out.split("config:\n", 1)[1]
    config = load_config(snippet)
    found = TokenTable(config.auth.tokens).check(token)
    assert found is not None and found.role == "write"
    assert main(["token", "-q"]) == 0
    quiet = capsys.readouterr().out.strip()
    assert quiet.startswith("shunter_") and len(quiet) > 40 and "\n" not in quiet
