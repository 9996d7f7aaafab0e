"""What the HTTP door checks before any handler runs (docs/design.md §12).

In this order, each refusal in the error shape of docs/design.md §7:

1. ``Host`` (open servers only): a server without tokens answers only
   requests addressed to a loopback name (``localhost``, ``127.0.0.1``,
   ``[::1]``), the address it is bound to, or the host of an allowed origin;
   anything else is 400 ``invalid_host``. A web page cannot then reach a
   loopback server by pointing a DNS name of its own at 127.0.0.1 (DNS
   rebinding).
2. ``Origin``: a browser sends it on cross-site requests; unless it is the
   server's own (scheme and ``Host``) or listed in ``server.allowed-origins``
   the answer is 403 ``forbidden``. Allowed origins get CORS headers, and
   their preflight ``OPTIONS`` requests an answer.
3. The token: ``Authorization: Bearer <token>`` when the server has tokens
   (401 ``unauthorized`` without a valid one), and its role for the route
   (403 ``forbidden``; ``runtime.auth.ROLE_RULES``). ``/healthz`` and the dashboard's files are open.
4. The body's type, for methods that carry one: JSON, or YAML for a
   pipeline ``PUT``, declared by ``Content-Type`` (415 otherwise, also for
   ``text/plain`` and form types, which a browser may send cross-site
   without asking first). A request without a body needs no type.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

from runtime.auth import TokenConfig, TokenTable, grants, is_loopback_host, required_role, split_host
from runtime.config import RuntimeConfig

from .core import Forbidden, Request, Response, Unauthorized, UnsupportedMediaType
from actors.model.errors import InvalidRequest

__all__ = ["Guard", "InvalidHost", "JSON_TYPES", "YAML_TYPES", "is_json"]

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
JSON_TYPES = ("application/json",)
_PREFLIGHT_HEADERS = "authorization, content-type, last-event-id"
_HOSTS_REMEMBERED = 256  # Host verdicts kept; a client sending ever new names cannot grow the table past it
_DEFAULT_PORTS = {"http": "80", "https": "443"}


class InvalidHost(InvalidRequest):
    """An open server was addressed by a name that is not its own (DNS rebinding)."""

    code = "invalid_host"


def is_json(media: str) -> bool:
    return media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json"))


class Guard:
    """The checks of the module docstring for one server's configuration."""

    def __init__(self, config: RuntimeConfig, environ: Mapping[str, str] | None = None) -> None:
        self.tokens = TokenTable.build(config.auth, os.environ if environ is None else environ)
        origins = config.server.allowed_origins
        self.any_origin = "*" in origins
        self.origins = frozenset(_origin(origin) for origin in origins if origin != "*")
        bind_host, _ = split_host(config.server.bind)
        self.hosts = frozenset({bind_host, *(split_host(urlsplit(origin).netloc)[0] for origin in self.origins)})
        self._host_verdicts: dict[str, bool] = {}  # Host header -> answered (the same few on every request)

    @property
    def open(self) -> bool:
        """No token configured: anyone who reaches the server may do anything (loopback only)."""
        return not self.tokens

    def check(self, request: Request, scheme: str) -> TokenConfig | None:
        """Raise the refusal the request deserves (steps 1-3), or return its token (None when open)."""
        host = request.headers.get("host")
        if self.open and host is not None and not self._host_allowed(host):
            message = (f"this server has no tokens and answers only to loopback names or its bind address, "
                       f"not Host {host[:100]!r}")  # fmt: skip
            raise InvalidHost(message, details=[{"path": "header.Host", "message": message}])
        origin = request.headers.get("origin")
        if origin is not None and not self.origin_allowed(origin, host, scheme):
            raise Forbidden(f"requests from origin {origin[:100]!r} are not allowed "
                            "(server.allowed-origins lists the origins that are)")  # fmt: skip
        if self.open:
            return None  # no token to check: every role is granted
        needed = required_role(request.method, request.path)
        if needed is None:
            return None
        scheme_name, _, presented = request.headers.get("authorization", "").partition(" ")
        token = self.tokens.check(presented.strip()) if scheme_name.lower() == "bearer" else None
        if token is None:
            raise Unauthorized("a valid token is required: send 'Authorization: Bearer <token>'")
        if not grants(token.role, needed):
            raise Forbidden(f"token {token.name!r} has role {token.role!r}; {request.method} {request.path} "
                            f"needs {needed!r}")  # fmt: skip
        return token

    def _host_allowed(self, host: str) -> bool:
        """A loopback name or one of ``hosts`` (remembered: parsing an address costs more than the rest of
        the checks together)."""
        verdict = self._host_verdicts.get(host)
        if verdict is None:
            name, _ = split_host(host)
            verdict = is_loopback_host(name) or name in self.hosts
            if len(self._host_verdicts) >= _HOSTS_REMEMBERED:
                self._host_verdicts.clear()
            self._host_verdicts[host] = verdict
        return verdict

    def origin_allowed(self, origin: str, host: str | None, scheme: str) -> bool:
        """The server's own origin, or one that ``server.allowed-origins`` lists."""
        normal = _origin(origin)
        if host is not None and normal == _origin(f"{scheme}://{host}"):
            return True
        return self.any_origin or normal in self.origins

    def cors_headers(self, request: Request, scheme: str) -> list[tuple[str, str]]:
        """CORS headers for a request from an allowed foreign origin (none for the server's own)."""
        origin = request.headers.get("origin")
        host = request.headers.get("host")
        if origin is None or (host is not None and _origin(origin) == _origin(f"{scheme}://{host}")):
            return []
        return [("access-control-allow-origin", origin), ("vary", "origin")]

    def preflight(self, request: Request, scheme: str) -> Response | None:
        """The answer to a CORS preflight (``OPTIONS`` with ``Access-Control-Request-Method``), else None."""
        if request.method != "OPTIONS" or "access-control-request-method" not in request.headers:
            return None
        if request.headers.get("origin") is None:
            return None
        headers = [*self.cors_headers(request, scheme), ("access-control-allow-methods", "GET, HEAD, POST, PUT, DELETE"),
                   ("access-control-allow-headers", _PREFLIGHT_HEADERS), ("access-control-max-age", "600")]  # fmt: skip
        return Response(204, b"", "text/plain", headers)

    @staticmethod
    def check_media(request: Request, yaml_allowed: bool) -> None:
        """Step 4: a declared body type must be JSON (or YAML where allowed); see the module docstring."""
        media = request.media_type
        if not media:
            return  # checked once the body is read: none is fine, one without a type is not
        if is_json(media) or (yaml_allowed and media in YAML_TYPES):
            return
        accepted = "JSON (application/json)" + (f" or YAML ({', '.join(YAML_TYPES)})" if yaml_allowed else "")
        raise UnsupportedMediaType(f"the body must be {accepted}, not {media!r}")

    @staticmethod
    def check_untyped_body(request: Request, body: bytes, yaml_allowed: bool) -> None:
        if body and not request.media_type:
            kind = "application/json" + (" or application/yaml" if yaml_allowed else "")
            raise UnsupportedMediaType(f"a request body needs a Content-Type ({kind})")


def _origin(text: str) -> str:
    """``scheme://host[:port]`` lowercased, without a default port or a trailing slash."""
    parts = urlsplit(text.strip().lower())
    if not parts.scheme or not parts.netloc:
        return text.strip().lower()  # "null" and other opaque origins match nothing but themselves
    host, port = split_host(parts.netloc)
    if port == _DEFAULT_PORTS.get(parts.scheme):
        port = ""
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{shown}" + (f":{port}" if port else "")
