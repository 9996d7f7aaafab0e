"""Tokens, roles and protected mode (docs/design.md §12): who may do what.

Tokens come from the configuration (``auth: {tokens: [{name, token, role}]}``)
and from the ``SHUNTER_TOKEN`` environment variable, which adds an admin
token. A token is written as itself or as ``sha256:<hex>`` (its SHA-256, so
the configuration file need not hold the secret); either way only its digest
is kept, and a presented token is checked by hashing it and comparing the
digests with ``hmac.compare_digest`` against every known token, so the time
taken says nothing about how much of a token was right.

Roles nest: ``read`` (GET routes, events, metrics) < ``write`` (+ submit,
retry, cancel) < ``admin`` (+ pipelines and nodes); ``agent`` reaches only
the remote-agent routes under ``/v1/agent/`` (admin reaches them too).
Which role a request needs is decided by :data:`ROLE_RULES`, a table keyed by
path prefix and method, so a new family of routes is one new row.

Protected mode: without any token the API is open, which is allowed only on
a loopback address; :func:`protected_mode_problem` says why a bind is
refused, and ``shunter serve`` refuses before it binds.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "ENV_TOKEN",
    "ROLES",
    "ROLE_RULES",
    "PUBLIC_PATHS",
    "TokenConfig",
    "AuthConfig",
    "TokenTable",
    "digest_of",
    "new_token",
    "parse_token",
    "required_role",
    "grants",
    "is_loopback_host",
    "split_host",
    "protected_mode_problem",
]

ENV_TOKEN = "SHUNTER_TOKEN"
ROLES = ("read", "write", "admin", "agent")
# What each role may do: the roles whose rights it includes.
_GRANTS = {
    "read": frozenset({"read"}),
    "write": frozenset({"read", "write"}),
    "admin": frozenset({"read", "write", "admin", "agent"}),
    "agent": frozenset({"agent"}),
}
PUBLIC_PATHS = frozenset({"/healthz", "/", "/ui/app.js", "/ui/style.css", "/ui/icon.svg"})
"""Paths anyone may GET without a token: liveness, and the dashboard's page and files
(runtime/http/ui.py). These hold no data: a browser cannot send a token when it
opens a page, so the page asks for one and sends it with every API call."""

ROLE_RULES: tuple[tuple[str, frozenset[str] | None, str], ...] = (
    # (path prefix, methods (None: any), role needed); the first matching row wins.
    ("/v1/agent/", None, "agent"),  # remote build agents (docs/design.md §11)
    ("/", frozenset({"GET", "HEAD"}), "read"),
    ("/v1/pipelines/", frozenset({"POST"}), "write"),  # submit
    ("/v1/builds/", frozenset({"POST"}), "write"),  # retry, cancel
    ("/", None, "admin"),  # pipelines and nodes: PUT, DELETE; anything else that changes state
)
_SHA256 = re.compile(r"sha256:([0-9a-fA-F]{64})\Z")


class TokenConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One token: its name (for logs), its role, and the SHA-256 of the token (hex)."""

    name: str
    role: str
    digest: str

    def __repr__(self) -> str:
        return f"TokenConfig(name={self.name!r}, role={self.role!r})"


class AuthConfig(msgspec.Struct, frozen=True, kw_only=True):
    """The configured tokens (``SHUNTER_TOKEN`` is added by :meth:`TokenTable.build`)."""

    tokens: tuple[TokenConfig, ...] = ()


def digest_of(token: str) -> str:
    """The SHA-256 of a token, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return "shunter_" + secrets.token_urlsafe(32)


def parse_token(text: str) -> tuple[str | None, str | None]:
    """``(digest, None)`` for a token as given or ``sha256:<hex>``; ``(None, why)`` if it cannot be one."""
    if not text.strip():
        return None, "must not be empty"
    if text != text.strip() or any(ch.isspace() for ch in text):
        return None, "must not contain blanks"
    match = _SHA256.match(text)
    if match is not None:
        return match.group(1).lower(), None
    if text.startswith("sha256:"):
        return None, "a 'sha256:' token is followed by 64 hex digits (shunter token --hash prints it)"
    return digest_of(text), None


class TokenTable:
    """The tokens a server accepts: ``check(presented)`` gives the role, or None."""

    def __init__(self, tokens: Sequence[TokenConfig]) -> None:
        self.tokens = tuple(tokens)
        self._digests = [(bytes.fromhex(token.digest), token) for token in self.tokens]

    @classmethod
    def build(cls, auth: AuthConfig, environ: Mapping[str, str] | None = None) -> TokenTable:
        """The configured tokens plus ``SHUNTER_TOKEN`` (an admin token) when the environment sets it."""
        environ = os.environ if environ is None else environ
        tokens = list(auth.tokens)
        extra = environ.get(ENV_TOKEN, "").strip()
        if extra:
            tokens.append(TokenConfig(name=ENV_TOKEN, role="admin", digest=digest_of(extra)))
        return cls(tokens)

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def check(self, presented: str) -> TokenConfig | None:
        """The token ``presented`` is, or None. Every known digest is compared, in constant time each."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found = None
        for known, token in self._digests:
            if hmac.compare_digest(digest, known) and found is None:
                found = token
        return found


def required_role(method: str, path: str) -> str | None:
    """The role a request needs (None: anyone, the public paths)."""
    if path in PUBLIC_PATHS and method in ("GET", "HEAD"):
        return None
    for prefix, methods, role in ROLE_RULES:
        if path.startswith(prefix) and (methods is None or method in methods):
            return role
    return "admin"


def grants(role: str, needed: str) -> bool:
    """Whether a token of ``role`` may do what needs ``needed``."""
    return needed in _GRANTS.get(role, frozenset())


def split_host(text: str) -> tuple[str, str]:
    """``HOST[:PORT]`` (``[v6]:PORT`` for IPv6) as (host without brackets, lowercased; port or "")."""
    text = text.strip().lower()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, rest.removeprefix(":")
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return text.rstrip("."), ""
    return host.rstrip("."), port


def is_loopback_host(host: str) -> bool:
    """``localhost`` (and ``*.localhost``), or an address in 127.0.0.0/8 or ``::1``."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def protected_mode_problem(bind: str, tokens: TokenTable) -> str | None:
    """Why serving on ``bind`` is refused (a non-loopback address without a token), or None."""
    if tokens:
        return None
    host, _ = split_host(bind)
    if is_loopback_host(host):
        return None
    return (f"refusing to serve on {bind} without a token: anyone who reaches it could run commands; "
            f"set {ENV_TOKEN}=$(shunter token -q) or add auth.tokens to the config (shunter token "
            "prints one), or bind 127.0.0.1")  # fmt: skip


