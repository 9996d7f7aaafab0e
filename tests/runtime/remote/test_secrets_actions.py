"""Secrets and the actions a machine offers, with real ``shunter serve`` and ``shunter agent`` processes
(docs/design.md §11, §12)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

from .cluster import ROOT, Cluster

SECRET = "s3cr3t-Value-42"


def test_a_real_agent_gets_the_secret_its_job_uses_and_offers_its_actions(cluster: Cluster) -> None:
    cluster.config.write_text(cluster.config.read_text() + f"secrets: {{TOKEN: {SECRET}, OTHER: other-secret}}\n")
    cluster.start_server()
    cluster.start_agent("mac", "--actions", "tests.runtime.remote.plugin_actions")
    cluster.wait_connected("mac")
    assert cluster.nodes()["mac"]["actions"] == ["deploy"]  # besides the built-ins, which run anywhere
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    cluster.put_pipeline("secret", f"""
name: secret
steps:
  - run: |
      echo "token=${{{{ secrets.TOKEN }}}}"
      test "$(printf %s "${{{{ secrets.TOKEN }}}}" | sha256sum | cut -c1-64)" = "{digest}"
""")
    build = cluster.wait_build(cluster.submit("secret"))
    log = cluster.log(build["id"])
    assert build["status"] == "SUCCEED", (build, log)
    assert "token=***" in log and SECRET not in log
    assert SECRET not in cluster.agent_log("mac") and SECRET not in (cluster.tmp / "server.log").read_text()


def test_a_bad_actions_module_stops_the_agent_with_one_line(cluster: Cluster) -> None:
    result = subprocess.run([sys.executable, "-m", "runtime.cli", "agent", "--server", cluster.url, "--name", "m",
                             "--actions", "no_such_module_anywhere"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == ("--actions no_such_module_anywhere: cannot import 'no_such_module_anywhere': "
                                     "ModuleNotFoundError: No module named 'no_such_module_anywhere'")  # fmt: skip
