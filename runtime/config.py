"""Runtime configuration (DESIGN §5): server, pools of nodes, pipelines, heartbeats.

No configuration is needed: ``default_config()`` is one pool ``default``
with one node ``local`` of as many agents as the machine has cores. A YAML
(or JSON) file may override any part; keys are kebab-case::

    server:
      bind: 127.0.0.1:8000          # HOST:PORT ([::1]:8000 for IPv6)
      max-body-bytes: 1048576       # larger HTTP bodies are refused
    pools:                          # absent: the default pool; []: no pools
      - name: default
        nodes:
          - {name: n1, agents: 4, labels: [linux]}   # agents default to 1
    pipelines: [pipelines/*.yml]    # paths or globs registered at start
    heartbeat-interval: 5           # seconds between checks of the agents' heartbeats
    heartbeat-timeout: 30           # silence after which an agent is lost
    max-queued-builds: 100000       # past it, submissions are Overloaded
    shutdown-timeout: 10            # seconds to let cancelled builds stop on close

Every problem is reported at once, by path, as ``SpecError(errors,
what="config")``. Node names are unique across all pools, since nodes are
added and removed by name alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from actors.model.errors import SpecError
from runtime._validate import Checker, index_path, key_path, parse_document, type_name

__all__ = [
    "ServerConfig",
    "NodeConfig",
    "PoolConfig",
    "RuntimeConfig",
    "load_config",
    "default_config",
]

_TOP_KEYS = (
    "server", "pools", "pipelines", "heartbeat-interval", "heartbeat-timeout", "max-queued-builds",
    "shutdown-timeout",
)
_SERVER_KEYS = ("bind", "max-body-bytes")
_POOL_KEYS = ("name", "nodes")
_NODE_KEYS = ("name", "agents", "labels")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_NAME_RULE = "use letters, digits, '_', '.' and '-', not starting with '.' or '-'"


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP front door: where it listens and the largest body it reads."""

    bind: str = "127.0.0.1:8000"
    max_body_bytes: int = 1_048_576


class NodeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A build node: ``agents`` executors, and labels jobs can ask for."""

    name: str
    agents: int = 1
    labels: tuple[str, ...] = ()


class PoolConfig(msgspec.Struct, frozen=True, kw_only=True):
    """A named set of nodes (``runs-on: {pool-name: ...}`` picks one)."""

    name: str
    nodes: tuple[NodeConfig, ...] = ()


def _default_pools() -> tuple[PoolConfig, ...]:
    local = NodeConfig(name="local", agents=os.cpu_count() or 1)
    return (PoolConfig(name="default", nodes=(local,)),)


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the runtime is started with (see the module docstring).

    ``heartbeat_interval`` and ``heartbeat_timeout`` are in seconds; an
    agent silent for ``heartbeat_timeout`` is lost (DESIGN §3.1 behaviour
    11). ``max_queued_builds`` bounds admission: past it ``submit`` raises
    ``Overloaded``.
    """

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    pools: tuple[PoolConfig, ...] = msgspec.field(default_factory=_default_pools)
    pipelines: tuple[str, ...] = ()
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_queued_builds: int = 100_000
    shutdown_timeout: float = 10.0


def default_config() -> RuntimeConfig:
    """One pool ``default`` with one node ``local`` of ``os.cpu_count()`` agents."""
    return RuntimeConfig()


def load_config(
    source: str | bytes | os.PathLike[str] | Mapping[str, Any] | None,
) -> RuntimeConfig:
    """Read a configuration; raise ``SpecError(what="config")`` listing every problem.

    ``source`` is YAML or JSON text, a path to such a file, a parsed
    mapping, or None. None and an empty document give ``default_config()``;
    keys left out keep their defaults.
    """
    if source is None:
        return default_config()
    if isinstance(source, Mapping):
        data: Any = source
    else:
        data, _, problem = parse_document(source, "config")
        if problem is not None:
            raise SpecError([{"path": "$", "message": problem}], what="config")
        if data is None:
            return default_config()
    check = Checker()
    config = _read(check, data)
    if check.errors or config is None:
        raise SpecError(check.errors, what="config")
    return config


def _read(check: Checker, data: Any) -> RuntimeConfig | None:
    top = check.mapping(data, "$", _TOP_KEYS)
    if top is None:
        return None
    fields: dict[str, Any] = {"server": _server(check, top.get("server"))}
    if top.get("pools") is not None:
        fields["pools"] = _pools(check, top["pools"])
    fields["pipelines"] = check.string_list(top, "pipelines", "$")
    interval = check.positive(top, "heartbeat-interval", "$", default=5.0) or 5.0
    timeout = check.positive(top, "heartbeat-timeout", "$", default=30.0) or 30.0
    if timeout <= interval and top.get("heartbeat-timeout") is not None:
        check.error("$.heartbeat-timeout", f"must be more than heartbeat-interval ({interval:g})")
    elif timeout <= interval:
        check.error("$.heartbeat-interval", f"must be less than heartbeat-timeout ({timeout:g})")
    fields["heartbeat_interval"] = interval
    fields["heartbeat_timeout"] = timeout
    fields["max_queued_builds"] = check.integer(
        top, "max-queued-builds", "$", default=100_000, minimum=1
    )
    fields["shutdown_timeout"] = check.positive(top, "shutdown-timeout", "$", default=10.0) or 10.0
    return RuntimeConfig(**fields)


def _server(check: Checker, value: Any) -> ServerConfig:
    path = "$.server"
    data = None if value is None else check.mapping(value, path, _SERVER_KEYS)
    if data is None:
        return ServerConfig()
    bind = check.string(data, "bind", path, default="127.0.0.1:8000") or "127.0.0.1:8000"
    problem = _bind_problem(bind)
    if problem:
        check.error(key_path(path, "bind"), problem)
    max_body = check.integer(data, "max-body-bytes", path, default=1_048_576, minimum=1)
    return ServerConfig(bind=bind, max_body_bytes=max_body or 1_048_576)


def _bind_problem(bind: str) -> str | None:
    """Why ``bind`` is not ``HOST:PORT`` (IPv6 hosts in brackets), or None."""
    host, sep, port = bind.rpartition(":")
    if not sep or not host or not port.isdigit():
        return f"must be HOST:PORT (e.g. 127.0.0.1:8000), got {bind!r}"
    if not 0 <= int(port) <= 65535:
        return f"port must be 0..65535, got {port}"
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        return f"an IPv6 host goes in brackets (e.g. [::1]:8000), got {bind!r}"
    return None


def _pools(check: Checker, value: Any) -> tuple[PoolConfig, ...]:
    if not isinstance(value, list):
        check.error("$.pools", f"must be a list of pools, got {type_name(value)}")
        return ()
    pools = []
    pool_names: dict[str, str] = {}
    node_names: dict[str, str] = {}
    for index, item in enumerate(value):
        path = index_path("$.pools", index)
        data = check.mapping(item, path, _POOL_KEYS)
        if data is None:
            continue
        name = _unique_name(check, data, path, pool_names, "pool")
        nodes = []
        raw_nodes = data.get("nodes")
        if raw_nodes is not None and not isinstance(raw_nodes, list):
            got = type_name(raw_nodes)
            check.error(key_path(path, "nodes"), f"must be a list of nodes, got {got}")
            raw_nodes = None
        for node_index, node_item in enumerate(raw_nodes or ()):
            node_path = index_path(key_path(path, "nodes"), node_index)
            node = check.mapping(node_item, node_path, _NODE_KEYS)
            if node is None:
                continue
            nodes.append(
                NodeConfig(
                    name=_unique_name(check, node, node_path, node_names, "node"),
                    agents=check.integer(node, "agents", node_path, default=1, minimum=1) or 1,
                    labels=check.string_list(node, "labels", node_path),
                )
            )
        pools.append(PoolConfig(name=name, nodes=tuple(nodes)))
    return tuple(pools)


def _unique_name(
    check: Checker, data: Mapping[str, Any], path: str, seen: dict[str, str], what: str
) -> str:
    """Read a required ``name`` that must be well formed and unique among ``seen``."""
    name = check.string(data, "name", path, required=True) or ""
    where = key_path(path, "name")
    if not name:
        return name  # missing or not a string: already reported
    if not _NAME.match(name):
        check.error(where, f"invalid {what} name {name!r}: {_NAME_RULE}")
    elif name in seen:
        check.error(where, f"duplicate {what} name {name!r} (also {seen[name]})")
    seen.setdefault(name, path)
    return name
