"""Runtime configuration (docs/design.md §5): server, pools of nodes, pipelines, heartbeats.

No configuration is needed: ``default_config()`` is one pool ``default``
with one node ``local`` of as many agents as the machine has cores. A YAML
(or JSON) file may override any part; keys are kebab-case::

    server:
      bind: 127.0.0.1:8000          # HOST:PORT ([::1]:8000 for IPv6)
      max-body-bytes: 1048576       # larger HTTP bodies are refused
      read-timeout: 30              # seconds a request body may take to arrive (then 408)
      max-event-streams: 256        # open GET /v1/events streams (then 503)
      allowed-origins: []           # browser origins besides the server's own (CORS)
    auth:                           # no token: open access, on a loopback bind only
      tokens: [{name: ci, role: write, token: "sha256:<hex>"}]   # read | write | admin | agent
    secrets:                        # ${{ secrets.NAME }} in env, with and run; masked as ***
      DEPLOY_KEY: {file: /etc/shunter/deploy-key}   # or {env: VAR}, or the value itself
    pools:                          # absent: the default pool; []: no pools
      - name: default
        nodes:
          - {name: n1, agents: 4, labels: [linux]}   # agents default to 1
    pipelines: [pipelines/*.yml]    # paths or globs registered at start
    heartbeat-interval: 5           # seconds between checks of the agents' heartbeats
    heartbeat-timeout: 30           # silence after which an agent is lost
    max-queued-builds: 100000       # past it, submissions are Overloaded
    shutdown-timeout: 10            # seconds to let cancelled builds stop on close
    max-nodes: 1000                 # nodes across all pools (PUT /v1/nodes past it: 409)
    max-agents-per-node: 256        # agents of one node (more: 400)
    state-dir: ~/.shunter           # durable state (docs/design.md §10); absent: in memory
    retention: {days: 90, builds-per-pipeline: 10000}   # finished builds kept in the store
    max-log-bytes: 33554432         # per step attempt; past it a truncation marker
    drain-timeout: 30               # on a graceful stop, how long running jobs may finish

Every number has an upper bound (a timeout of 1e29 seconds is refused here,
not met later as an overflow).

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

from actors.execution.secrets import MIN_MASKED, Secrets
from actors.model.errors import SpecError
from actors.state.store import Retention
from runtime._validate import Checker, index_path, key_path, parse_document, type_name
from runtime.auth import ROLES, AuthConfig, TokenConfig, parse_token

__all__ = [
    "ServerConfig",
    "NodeConfig",
    "PoolConfig",
    "RuntimeConfig",
    "AuthConfig",
    "TokenConfig",
    "Retention",
    "load_config",
    "default_config",
]

_TOP_KEYS = (
    "server", "pools", "pipelines", "heartbeat-interval", "heartbeat-timeout", "max-queued-builds",
    "shutdown-timeout", "auth", "secrets", "max-nodes", "max-agents-per-node", "state-dir", "retention",
    "max-log-bytes", "drain-timeout",
)
_RETENTION_KEYS = ("days", "builds-per-pipeline")
_SERVER_KEYS = ("bind", "max-body-bytes", "read-timeout", "max-event-streams", "allowed-origins")
_AUTH_KEYS = ("tokens",)
_TOKEN_KEYS = ("name", "token", "role")
_SECRET_KEYS = ("env", "file")
_ORIGIN = re.compile(r"https?://[^/?#\s]+\Z")
# Upper bounds: generous, but far from where arithmetic on them overflows.
MAX_SECONDS = 86_400.0
MAX_BODY_BYTES = 1 << 30
MAX_QUEUED_BUILDS = 1_000_000_000
MAX_EVENT_STREAMS = 100_000
MAX_NODES = 1_000_000
MAX_AGENTS_PER_NODE = 100_000
MAX_SECRET_BYTES = 1 << 20
MAX_LOG_BYTES = 1 << 40
MAX_RETENTION_DAYS = 36_500.0
MAX_RETAINED_BUILDS = 1_000_000_000
_POOL_KEYS = ("name", "nodes")
_NODE_KEYS = ("name", "agents", "labels")
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
_NAME_RULE = "use letters, digits, '_', '.' and '-', not starting with '.' or '-'"
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The HTTP front door: where it listens and the largest body it reads."""

    bind: str = "127.0.0.1:8000"
    max_body_bytes: int = 1_048_576
    read_timeout: float = 30.0
    max_event_streams: int = 256
    allowed_origins: tuple[str, ...] = ()


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
    local = NodeConfig(name="local", agents=min(os.cpu_count() or 1, 256))
    return (PoolConfig(name="default", nodes=(local,)),)


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the runtime is started with (see the module docstring).

    ``heartbeat_interval`` and ``heartbeat_timeout`` are in seconds; an
    agent silent for ``heartbeat_timeout`` is lost (docs/design.md §3.1 behaviour
    11). ``max_queued_builds`` bounds admission: past it ``submit`` raises
    ``Overloaded``. ``auth`` holds the tokens' digests only; ``secrets``
    never shows its values.
    """

    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    pools: tuple[PoolConfig, ...] = msgspec.field(default_factory=_default_pools)
    pipelines: tuple[str, ...] = ()
    heartbeat_interval: float = 5.0
    heartbeat_timeout: float = 30.0
    max_queued_builds: int = 100_000
    shutdown_timeout: float = 10.0
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    secrets: Secrets = msgspec.field(default_factory=Secrets)
    max_nodes: int = 1000
    max_agents_per_node: int = 256
    # Durable state (docs/design.md §10): None keeps everything in memory.
    state_dir: str | None = None
    retention: Retention = msgspec.field(default_factory=Retention)
    max_log_bytes: int = 32 * 1024 * 1024
    # None: 30 s with a state dir; in memory, close() cancels at once as before.
    drain_timeout: float | None = None


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
    interval = check.positive(top, "heartbeat-interval", "$", default=5.0, maximum=MAX_SECONDS) or 5.0
    timeout = check.positive(top, "heartbeat-timeout", "$", default=30.0, maximum=MAX_SECONDS) or 30.0
    if timeout <= interval and top.get("heartbeat-timeout") is not None:
        check.error("$.heartbeat-timeout", f"must be more than heartbeat-interval ({interval:g})")
    elif timeout <= interval:
        check.error("$.heartbeat-interval", f"must be less than heartbeat-timeout ({timeout:g})")
    fields["heartbeat_interval"] = interval
    fields["heartbeat_timeout"] = timeout
    fields["max_queued_builds"] = check.integer(
        top, "max-queued-builds", "$", default=100_000, minimum=1, maximum=MAX_QUEUED_BUILDS
    )
    fields["shutdown_timeout"] = check.positive(top, "shutdown-timeout", "$", default=10.0,
                                                maximum=MAX_SECONDS) or 10.0  # fmt: skip
    state_dir = check.string(top, "state-dir", "$", non_empty=True)
    fields["state_dir"] = os.path.expanduser(state_dir) if state_dir else None
    fields["retention"] = _retention(check, top.get("retention"))
    fields["max_log_bytes"] = check.integer(top, "max-log-bytes", "$", default=32 * 1024 * 1024, minimum=1024,
                                            maximum=MAX_LOG_BYTES) or 32 * 1024 * 1024  # fmt: skip
    fields["drain_timeout"] = check.positive(top, "drain-timeout", "$", default=None, maximum=MAX_SECONDS)
    fields["max_nodes"] = check.integer(top, "max-nodes", "$", default=1000, minimum=1, maximum=MAX_NODES) or 1000
    per_node = check.integer(top, "max-agents-per-node", "$", default=256, minimum=1, maximum=MAX_AGENTS_PER_NODE)
    fields["max_agents_per_node"] = per_node = per_node or 256
    fields["auth"] = _auth(check, top.get("auth"))
    fields["secrets"] = _secrets(check, top.get("secrets"))
    if "pools" not in fields:  # the default local node: one agent per core, within the cap
        local = NodeConfig(name="local", agents=min(os.cpu_count() or 1, per_node))
        fields["pools"] = (PoolConfig(name="default", nodes=(local,)),)
    _check_nodes(check, fields["pools"], fields["max_nodes"], per_node)
    return RuntimeConfig(**fields)


def _check_nodes(check: Checker, pools: tuple[PoolConfig, ...], max_nodes: int, per_node: int) -> None:
    """The configured nodes within ``max-nodes`` and ``max-agents-per-node``."""
    count = 0
    for index, pool in enumerate(pools):
        for node_index, node in enumerate(pool.nodes):
            count += 1
            if node.agents > per_node:
                where = index_path(key_path(index_path("$.pools", index), "nodes"), node_index)
                check.error(key_path(where, "agents"), f"must be <= {per_node} (max-agents-per-node)")
    if count > max_nodes:
        check.error("$.pools", f"{count} nodes is more than max-nodes ({max_nodes})")


def _auth(check: Checker, value: Any) -> AuthConfig:
    """``auth: {tokens: [{name, token, role}]}``: tokens kept as digests, names unique."""
    if value is None:
        return AuthConfig()
    data = check.mapping(value, "$.auth", _AUTH_KEYS)
    if data is None or data.get("tokens") is None:
        return AuthConfig()
    raw = data["tokens"]
    if not isinstance(raw, list):
        check.error("$.auth.tokens", f"must be a list of {{name, token, role}}, got {type_name(raw)}")
        return AuthConfig()
    tokens = []
    names: dict[str, str] = {}
    for index, item in enumerate(raw):
        path = index_path("$.auth.tokens", index)
        entry = check.mapping(item, path, _TOKEN_KEYS)
        if entry is None:
            continue
        name = _unique_name(check, entry, path, names, "token")
        role = check.choice(entry, "role", path, ROLES, default="")
        if entry.get("role") is None:
            check.error(key_path(path, "role"), f"is required (one of {', '.join(ROLES)})")
        text = check.string(entry, "token", path, required=True)
        if text is None:
            continue
        digest, problem = parse_token(text)
        if problem is not None:
            # The message never repeats the token: error messages must not leak it.
            check.error(key_path(path, "token"), problem)
        elif role:
            tokens.append(TokenConfig(name=name, role=role, digest=digest or ""))
    return AuthConfig(tokens=tuple(tokens))


def _secrets(check: Checker, value: Any) -> Secrets:
    """``secrets: {NAME: value | {env: VAR} | {file: PATH}}``, resolved now; messages never show a value."""
    if value is None:
        return Secrets()
    data = check.mapping(value, "$.secrets", None)
    if data is None:
        return Secrets()
    resolved: dict[str, str] = {}
    for name, item in data.items():
        where = key_path("$.secrets", name)
        if not _SECRET_NAME.match(name):
            check.error(where, f"invalid secret name {name!r}: use a letter or '_' then letters, digits or '_'")
            continue
        text = _secret_value(check, item, where)
        if text is None:
            continue
        if len(text) < MIN_MASKED:
            check.error(where, f"a secret must be at least {MIN_MASKED} characters (shorter ones cannot be masked)")
        elif len(text.encode("utf-8", "surrogateescape")) > MAX_SECRET_BYTES:
            check.error(where, f"a secret must be at most {MAX_SECRET_BYTES} bytes")
        else:
            resolved[name] = text
    return Secrets(resolved)


def _secret_value(check: Checker, item: Any, where: str) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        return str(item)
    if not isinstance(item, Mapping):
        check.error(where, f"must be a value, {{env: VAR}} or {{file: PATH}}, got {type_name(item)}")
        return None
    entry = check.entries(item, where, _SECRET_KEYS)
    if len(entry) != 1:
        check.error(where, "must name exactly one of env or file")
        return None
    if "env" in entry:
        variable = check.string(entry, "env", where, non_empty=True)
        if not variable:
            return None
        if variable not in os.environ:
            check.error(key_path(where, "env"), f"environment variable {variable!r} is not set")
            return None
        return os.environ[variable]
    path = check.string(entry, "file", where, non_empty=True)
    if not path:
        return None
    try:
        with open(os.path.expanduser(path), "rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as error:
        check.error(key_path(where, "file"), f"cannot read {path!r}: {error.strerror or error}")
        return None
    # A file written by an editor or `echo` ends with a newline that is no part of the secret.
    return raw.decode("utf-8", "surrogateescape").removesuffix("\n").removesuffix("\r")


def _retention(check: Checker, value: Any) -> Retention:
    """``retention: {days, builds-per-pipeline}``; either may be null for no limit."""
    path = "$.retention"
    data = None if value is None else check.mapping(value, path, _RETENTION_KEYS)
    if data is None:
        return Retention()
    days = check.positive(data, "days", path, default=None, maximum=MAX_RETENTION_DAYS)
    count = check.integer(data, "builds-per-pipeline", path, default=None, minimum=1, maximum=MAX_RETAINED_BUILDS)
    return Retention(days=days if "days" in data else Retention().days,
                     builds_per_pipeline=count if "builds-per-pipeline" in data else Retention().builds_per_pipeline)


def _server(check: Checker, value: Any) -> ServerConfig:
    path = "$.server"
    data = None if value is None else check.mapping(value, path, _SERVER_KEYS)
    if data is None:
        return ServerConfig()
    bind = check.string(data, "bind", path, default="127.0.0.1:8000") or "127.0.0.1:8000"
    problem = _bind_problem(bind)
    if problem:
        check.error(key_path(path, "bind"), problem)
    max_body = check.integer(data, "max-body-bytes", path, default=1_048_576, minimum=1, maximum=MAX_BODY_BYTES)
    read_timeout = check.positive(data, "read-timeout", path, default=30.0, maximum=3600.0) or 30.0
    streams = check.integer(data, "max-event-streams", path, default=256, minimum=1, maximum=MAX_EVENT_STREAMS)
    origins = []
    for origin, where in check.string_items(data, "allowed-origins", path):
        if origin != "*" and not _ORIGIN.match(origin):
            check.error(where, f"must be an origin like https://ci.example.com (scheme://host[:port]), got {origin!r}")
        else:
            origins.append(origin.lower().rstrip("/"))
    return ServerConfig(bind=bind, max_body_bytes=max_body or 1_048_576, read_timeout=read_timeout,
                        max_event_streams=streams or 256, allowed_origins=tuple(origins))  # fmt: skip


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
                    agents=check.integer(node, "agents", node_path, default=1, minimum=1,
                                         maximum=MAX_AGENTS_PER_NODE) or 1,  # fmt: skip
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
