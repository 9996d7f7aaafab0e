"""The pure core of the HTTP door: requests, responses, errors, JSON bodies, routing.

Nothing here does I/O: ``app.py`` reads the ASGI messages into a
``Request``, calls a handler and writes the ``Response`` back. Keeping the
parsing and validation pure makes every refusal (404, 405, 413, 415, 400)
testable without a server.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote

import msgspec

from actors.core import Ref
from actors.model.errors import InvalidRequest, NotFound, ShunterError
from actors.model.vocab import values

if TYPE_CHECKING:
    import anyio

    from runtime._runtime import Runtime

__all__ = [
    "AppState",
    "BodyTooLarge",
    "ErrorBody",
    "Forbidden",
    "RequestTimeout",
    "Unauthorized",
    "json_too_deep",
    "Internal",
    "MethodNotAllowed",
    "Param",
    "Request",
    "Response",
    "Route",
    "Router",
    "Unavailable",
    "UnsupportedMediaType",
    "decode_json",
    "enum_schema",
    "error_response",
    "json_response",
    "parse_segments",
]

T = TypeVar("T")


JSON = "application/json"
TEXT = "text/plain; charset=utf-8"

# One encoder for every response; one decoder per request type (see decode_json).
_ENCODER = msgspec.json.Encoder()
_DECODERS: dict[Any, msgspec.json.Decoder[Any]] = {}


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """Every error answer: a stable ``error`` code, a message, and details (e.g. spec errors by path)."""

    error: str
    message: str
    details: list[Any] = msgspec.field(default_factory=list)


class MethodNotAllowed(ShunterError):
    """The path exists but not with this method; ``allow`` lists the methods it has."""

    code = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, allow: Sequence[str]) -> None:
        super().__init__(message)
        self.allow = tuple(allow)


class BodyTooLarge(ShunterError):
    """The request body is larger than ``server.max-body-bytes``."""

    code = "body_too_large"
    http_status = 413


class Unauthorized(ShunterError):
    """No valid ``Authorization: Bearer <token>`` (docs/design.md §12)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(ShunterError):
    """The token's role does not allow this, or the request comes from a foreign browser origin."""

    code = "forbidden"
    http_status = 403


class RequestTimeout(ShunterError):
    """The request body did not arrive within ``server.read-timeout``."""

    code = "request_timeout"
    http_status = 408


class UnsupportedMediaType(ShunterError):
    """The body's content type is not one this route reads."""

    code = "unsupported_media_type"
    http_status = 415


class Unavailable(ShunterError):
    """The runtime cannot answer now (shutting down, or an actor did not reply in time)."""

    code = "unavailable"
    http_status = 503


class Internal(ShunterError):
    """A bug: an unexpected exception. The message stays generic; the log has the rest."""

    code = "internal"
    http_status = 500


@dataclass
class Request:
    """One HTTP request as the handlers see it (the body already read and size-checked)."""

    method: str
    path: str
    segments: list[str]
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    response_headers: list[tuple[str, str]] = field(default_factory=list)  # CORS, for every answer

    @property
    def media_type(self) -> str:
        """The body's content type without parameters, lowercased ("" if none)."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()

    def query_value(self, name: str) -> str | None:
        """A query parameter; an empty value (``?job=``) counts as absent."""
        return self.query.get(name) or None


@dataclass
class Response:
    """What a handler answers: status, body bytes, content type and extra headers."""

    status: int
    body: bytes = b""
    content_type: str = JSON
    headers: list[tuple[str, str]] = field(default_factory=list)
    chunks: AsyncIterator[bytes] | None = None  # a body streamed in pieces instead of ``body`` (logs)


def json_response(status: int, value: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """Encode ``value`` (a msgspec Struct, list, dict...) as the JSON body."""
    return Response(status, _ENCODER.encode(value), JSON, list(headers))


def encode_json(value: Any) -> bytes:
    return _ENCODER.encode(value)


def error_response(error: ShunterError) -> Response:
    """The JSON error answer of docs/design.md §7, with the headers its status calls for."""
    headers: list[tuple[str, str]] = []
    if isinstance(error, MethodNotAllowed):
        headers.append(("allow", ", ".join(error.allow)))
    if error.http_status in (429, 503):
        headers.append(("retry-after", "1" if error.http_status == 503 else "5"))
    if error.http_status == 401:
        headers.append(("www-authenticate", 'Bearer realm="shunter"'))
    body = ErrorBody(error=error.code, message=error.message, details=list(error.details))
    return json_response(error.http_status, body, headers)


def decode_json(type_: type[T], body: bytes, *, what: str = "body") -> T:
    """Decode a JSON request body into ``type_``; an empty body is ``type_()``.

    A number with no fraction is an integer wherever one is expected (``31.0``).

    Raises ``InvalidRequest`` naming where the body is wrong
    (``$.variables.X: Expected `str | int | float | bool`, got `null```).
    """
    if not body.strip():
        return type_()
    if json_too_deep(body):
        message = f"nested deeper than {MAX_JSON_DEPTH} levels"
        raise InvalidRequest(f"invalid {what}: {message}", details=[{"path": "$", "message": message}])
    decoder = _DECODERS.get(type_)
    if decoder is None:
        decoder = _DECODERS[type_] = msgspec.json.Decoder(type_)
    try:
        try:
            return decoder.decode(body)
        except msgspec.ValidationError as error:
            if not str(error).startswith("Expected `int`, got `float`"):
                raise
            # JSON has one number type: 31.0 is the integer 31 (as JSON Schema's "integer" says).
            return msgspec.convert(_integral(msgspec.json.decode(body)), type_)
    except msgspec.ValidationError as error:
        message, path = split_validation_error(error)
        details = [{"path": path, "message": message}]
        raise InvalidRequest(f"invalid {what}: {path}: {message}", details=details) from None
    except msgspec.DecodeError as error:
        details = [{"path": "$", "message": str(error)}]
        raise InvalidRequest(f"malformed JSON {what}: {error}", details=details) from None


def _integral(value: Any) -> Any:
    """``value`` with every float that has no fraction made an int."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_integral(item) for item in value]
    if isinstance(value, dict):
        return {key: _integral(item) for key, item in value.items()}
    return value


MAX_JSON_DEPTH = 32
"""How deeply a JSON request body may nest (the API's bodies need 3 levels)."""
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


def json_too_deep(body: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests lists and objects deeper than ``limit``.

    Checked on the raw bytes before decoding: a decoder recurses once per
    level, and 1,000 levels are enough to exhaust Python's stack. Brackets
    inside strings do not count.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # the common case, at C speed
    depth = 0
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


def split_validation_error(error: msgspec.ValidationError) -> tuple[str, str]:
    """msgspec's ``"Expected `int`, got `str` - at `$.agents`"`` as (message, path)."""
    text = str(error)
    message, sep, where = text.rpartition(" - at `")
    if not sep:
        return text, "$"
    return message, where.rstrip("`")


def parse_segments(raw_path: bytes | None, path: str) -> list[str]:
    """The path's segments, each percent-decoded on its own.

    Splitting the raw path first keeps an encoded ``%2F`` inside an id from
    being taken for a separator.
    """
    if raw_path is None:
        return path.split("/")[1:]
    text = raw_path.decode("latin-1").split("?", 1)[0]
    if "%" not in text:
        return text.split("/")[1:]  # nothing to decode (the common case)
    return [unquote(part, errors="replace") for part in text.split("/")[1:]]


def parse_query(query_string: bytes) -> dict[str, str]:
    """Query parameters; a repeated one keeps its last value."""
    if not query_string:
        return {}
    text = query_string.decode("latin-1")
    return dict(parse_qsl(text, keep_blank_values=True, errors="replace"))


Handler = Callable[[Any, Request], Awaitable[Response]]


@dataclass(frozen=True)
class Param:
    """A path, query or header parameter: how it is read and checked, and how OpenAPI describes it.

    One object does both, so the document and the server cannot disagree:
    ``read`` accepts exactly what ``schema`` describes (``type`` string,
    integer or boolean; ``enum``, ``pattern``, ``minimum``, ``maximum``).
    An absent parameter is None; an empty one is absent too when the schema
    allows an empty string (a plain string) and refused (400) otherwise.
    """

    name: str
    description: str
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})
    where: str = "query"

    def read(self, request: Request) -> Any:
        """The parameter's value in ``request`` (None when absent); ``InvalidRequest`` naming it if bad."""
        if self.where == "header":
            raw = request.headers.get(self.name.lower())
        elif self.where == "path":
            raw = request.params.get(self.name)
        else:
            raw = request.query.get(self.name)
        if raw is None:
            return None
        kind = self.schema.get("type", "string")
        if kind == "string" and raw == "" and not ({"enum", "pattern", "minLength"} & set(self.schema)):
            return None
        try:
            return self._check(kind, raw)
        except ValueError as error:
            where = f"{self.where}.{self.name}"
            message = f"{error}, got {raw[:40]!r}"
            raise InvalidRequest(f"{where}: {message}", details=[{"path": where, "message": message}]) from None

    def _check(self, kind: str, raw: str) -> Any:
        schema = self.schema
        if kind == "boolean":
            if raw not in ("true", "false"):
                raise ValueError("must be true or false")
            return raw == "true"
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            value = int(raw) if _INTEGER.match(raw) else None
            if value is None or (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"must be an integer{_bounds(low, high)}")
            return value
        if "enum" in schema and raw not in schema["enum"]:
            empty = " (an empty value is none of them)" if not raw else ""
            raise ValueError(f"must be one of {', '.join(schema['enum'])}{empty}")
        if "pattern" in schema and not re.search(schema["pattern"], raw):
            raise ValueError(f"must match {schema['pattern']}")
        if len(raw) < schema.get("minLength", 0):
            raise ValueError("must not be empty")
        return raw


_INTEGER = re.compile(r"-?[0-9]{1,30}\Z")


def _bounds(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f" from {low} to {high}"
    return f" >= {low}" if low is not None else (f" <= {high}" if high is not None else "")


def enum_schema(words: type[StrEnum]) -> dict[str, Any]:
    """The JSON schema of a parameter taking one of ``words`` (a vocabulary type)."""
    return {"type": "string", "enum": values(words)}


class AppState(Protocol):
    """What a handler uses of the ASGI app (``app.App`` is one): handlers never import the app itself."""

    rt: Runtime
    closed: anyio.Event
    sse_clients: int
    max_event_streams: int
    log_followers: int

    @property
    def metrics(self) -> Ref | None: ...


@dataclass(frozen=True)
class Route:
    """One operation of the API: how it is matched, handled and described in OpenAPI."""

    method: str
    path: str  # "/v1/pipelines/{id}"
    handler: Handler
    summary: str
    status: int = 200
    result: Any = None  # msgspec type of the success body; None for non-JSON bodies
    content_type: str = JSON  # of the success body
    body: Any = None  # msgspec type of a JSON request body
    body_types: tuple[str, ...] = ()  # for bodies that are not a msgspec type (YAML pipelines)
    query: tuple[Param, ...] = ()  # query and header parameters
    errors: tuple[int, ...] = ()
    stream: bool = False  # answered by the server-sent events loop, not a handler's Response
    path_params: tuple[Param, ...] = ()  # schemas of path parameters (default: a non-empty string)
    also: tuple[tuple[int, str], ...] = ()  # other success statuses (status, description), same body
    headers: tuple[tuple[str, str], ...] = ()  # response headers (name, description)

    @property
    def template(self) -> list[str]:
        return self.path.split("/")[1:]


_PARAM = re.compile(r"\{(\w+)\}\Z")


class Router:
    """Matches a method and path segments to a route, or says why not (404, 405).

    Routes are tried in table order among those with as many segments as
    the path (the others cannot match), each template split once.
    """

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = list(routes)
        self._by_length: dict[int, list[tuple[Route, list[str], list[re.Match[str] | None]]]] = {}
        for route in self.routes:
            template = route.template
            parts = [_PARAM.match(part) for part in template]
            self._by_length.setdefault(len(template), []).append((route, template, parts))

    def match(self, method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
        allowed: list[str] = []
        for route, template, parts in self._by_length.get(len(segments), ()):
            params = _match(template, parts, segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if not allowed:
            raise NotFound(f"no such route: /{'/'.join(segments)} (see /openapi.json)")
        if "GET" in allowed:
            allowed.append("HEAD")
        raise MethodNotAllowed(f"method {method} is not allowed on /{'/'.join(segments)}; use {', '.join(allowed)}",
                               allowed)  # fmt: skip


def _match(template: list[str], parts: list[re.Match[str] | None], segments: list[str]) -> dict[str, str] | None:
    params: dict[str, str] = {}
    for literal, param, segment in zip(template, parts, segments):
        if param is not None:
            if not segment:
                return None
            params[param.group(1)] = segment
        elif literal != segment:
            return None
    return params
