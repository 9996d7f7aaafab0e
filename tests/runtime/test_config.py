"""Runtime configuration: defaults, the YAML form, and errors by path."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import pytest

from actors.model.errors import SpecError
from runtime.config import (
    NodeConfig,
    PoolConfig,
    RuntimeConfig,
    ServerConfig,
    default_config,
    load_config,
)

FULL = textwrap.dedent(
    """\
    server:
      bind: 0.0.0.0:9000
      max-body-bytes: 2048
    pools:
      - name: default
        nodes:
          - {name: n1, agents: 4, labels: [linux, docker]}
          - {name: n2}
      - name: gpu
        nodes:
          - {name: g1, agents: 2, labels: gpu}
      - name: empty
    pipelines: [pipelines/*.yml, extra.yml]
    heartbeat-interval: 0.5
    heartbeat-timeout: 3
    max-queued-builds: 1000
    """
)


def errors_of(source: Any) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as info:
        load_config(source)
    assert "invalid config" in info.value.message
    return info.value.errors


def test_default_config() -> None:
    config = default_config()
    assert config.server == ServerConfig(bind="127.0.0.1:8000", max_body_bytes=1_048_576)
    assert config.pools == (
        PoolConfig(name="default", nodes=(NodeConfig(name="local", agents=os.cpu_count() or 1),)),
    )
    assert config.pipelines == ()
    assert (config.heartbeat_interval, config.heartbeat_timeout) == (5.0, 30.0)
    assert config.max_queued_builds == 100_000


@pytest.mark.parametrize("source", [None, "", "# only a comment\n", b"", {}])
def test_nothing_gives_the_default(source: Any) -> None:
    assert load_config(source) == default_config()


def test_full_config() -> None:
    config = load_config(FULL)
    assert config == RuntimeConfig(
        server=ServerConfig(bind="0.0.0.0:9000", max_body_bytes=2048),
        pools=(
            PoolConfig(
                name="default",
                nodes=(
                    NodeConfig(name="n1", agents=4, labels=("linux", "docker")),
                    NodeConfig(name="n2", agents=1, labels=()),
                ),
            ),
            PoolConfig(name="gpu", nodes=(NodeConfig(name="g1", agents=2, labels=("gpu",)),)),
            PoolConfig(name="empty", nodes=()),
        ),
        pipelines=("pipelines/*.yml", "extra.yml"),
        heartbeat_interval=0.5,
        heartbeat_timeout=3.0,
        max_queued_builds=1000,
    )


def test_partial_config_keeps_other_defaults() -> None:
    config = load_config("server: {bind: '[::1]:8080'}\n")
    assert config.server.bind == "[::1]:8080" and config.server.max_body_bytes == 1_048_576
    assert config.pools == default_config().pools


def test_empty_pool_list_means_no_pools() -> None:
    assert load_config("pools: []\n").pools == ()


def test_json_mapping_and_path(tmp_path: Path) -> None:
    assert load_config('{"heartbeat-timeout": 60}').heartbeat_timeout == 60.0
    assert load_config({"max-queued-builds": 5}).max_queued_builds == 5
    path = tmp_path / "shunter.yml"
    path.write_text(FULL)
    assert load_config(path) == load_config(FULL)


def test_every_error_by_path() -> None:
    source = textwrap.dedent(
        """\
        server: {bind: localhost, max-body-byte: 10}
        pools:
          - name: default
            nodes:
              - {name: n1, agents: 0}
              - {name: n1, agents: true, lables: [x]}
              - {agents: 2}
          - {name: default, nodes: {n3: 1}}
          - {name: 'a b'}
        pipelines: {a: b}
        heartbeat-interval: 0
        max-queued-builds: 0
        """
    )
    assert errors_of(source) == [
        {
            "path": "$.server.max-body-byte",
            "message": "unknown key 'max-body-byte' (did you mean 'max-body-bytes'?)",
        },
        {
            "path": "$.server.bind",
            "message": "must be HOST:PORT (e.g. 127.0.0.1:8000), got 'localhost'",
        },
        {"path": "$.pools[0].nodes[0].agents", "message": "must be >= 1"},
        {
            "path": "$.pools[0].nodes[1].lables",
            "message": "unknown key 'lables' (did you mean 'labels'?)",
        },
        {
            "path": "$.pools[0].nodes[1].name",
            "message": "duplicate node name 'n1' (also $.pools[0].nodes[0])",
        },
        {"path": "$.pools[0].nodes[1].agents", "message": "must be an integer, got boolean"},
        {"path": "$.pools[0].nodes[2].name", "message": "is required"},
        {"path": "$.pools[1].name", "message": "duplicate pool name 'default' (also $.pools[0])"},
        {"path": "$.pools[1].nodes", "message": "must be a list of nodes, got mapping"},
        {
            "path": "$.pools[2].name",
            "message": "invalid pool name 'a b': use letters, digits, '_', '.' and '-', "
            "not starting with '.' or '-'",
        },
        {"path": "$.pipelines", "message": "must be a list of strings, got mapping"},
        {"path": "$.heartbeat-interval", "message": "must be > 0"},
        {"path": "$.max-queued-builds", "message": "must be >= 1"},
    ]


def test_node_names_are_unique_across_pools() -> None:
    source = "pools:\n  - {name: a, nodes: [{name: n}]}\n  - {name: b, nodes: [{name: n}]}\n"
    (error,) = errors_of(source)
    assert error == {
        "path": "$.pools[1].nodes[0].name",
        "message": "duplicate node name 'n' (also $.pools[0].nodes[0])",
    }


@pytest.mark.parametrize(
    ("bind", "ok"),
    [
        ("127.0.0.1:8000", True),
        ("0.0.0.0:0", True),
        ("localhost:65535", True),
        ("[::1]:8000", True),
        ("localhost", False),
        (":8000", False),
        ("host:http", False),
        ("host:70000", False),
        ("::1:8000", False),
        ("[::1:8000", False),
    ],
)
def test_bind_must_be_host_port(bind: str, ok: bool) -> None:
    source = {"server": {"bind": bind}}
    if ok:
        assert load_config(source).server.bind == bind
    else:
        (error,) = errors_of(source)
        assert error["path"] == "$.server.bind"


def test_heartbeat_timeout_must_exceed_interval() -> None:
    assert errors_of("heartbeat-interval: 10\nheartbeat-timeout: 10\n") == [
        {"path": "$.heartbeat-timeout", "message": "must be more than heartbeat-interval (10)"}
    ]
    assert errors_of("heartbeat-interval: 60\n") == [
        {"path": "$.heartbeat-interval", "message": "must be less than heartbeat-timeout (30)"}
    ]


def test_invalid_yaml_and_non_mapping() -> None:
    (error,) = errors_of("pools: [\n")
    assert error["path"] == "$" and "invalid YAML at line" in error["message"]
    (error,) = errors_of("- a\n- b\n")
    assert error == {"path": "$", "message": "must be a mapping, got list"}


def test_unknown_top_level_key_is_suggested() -> None:
    (error,) = errors_of("heartbeat_timeout: 60\n")
    assert error["message"] == (
        "unknown key 'heartbeat_timeout' (did you mean 'heartbeat-timeout'?)"
    )
