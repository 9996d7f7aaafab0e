"""A small blocking HTTP client for the agent protocol, run in worker threads.

The standard library only (``http.client``): one keep-alive connection per
caller (each lane of the agent has its own), so requests of one lane never
wait behind another lane's long poll. Every call runs in a worker thread via
``anyio.to_thread`` and is abandoned if the caller is cancelled.
"""

from __future__ import annotations

import http.client
import urllib.parse
from typing import Any, Protocol, TypeVar

import anyio.to_thread
import msgspec

from actors.remote.protocol import decode, encode

__all__ = ["AgentHTTP", "Transport", "Unreachable", "Refused"]

T = TypeVar("T")


class Unreachable(Exception):
    """No answer from the server (refused, reset, timed out, not HTTP)."""


class Refused(Exception):
    """The server answered with an error status: ``status``, ``code``, ``message``, ``details``."""

    def __init__(self, status: int, code: str, message: str, details: list[Any]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


class Transport(Protocol):
    """How the agent's lanes reach the server: ``AgentHTTP``, or an in-process app in tests."""

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T: ...


class _ErrorBody(msgspec.Struct):
    error: str = "error"
    message: str = ""
    details: list[Any] = msgspec.field(default_factory=list)


class AgentHTTP:
    """POSTs protocol messages to one server; see the module docstring."""

    def __init__(self, server: str, token: str | None = None) -> None:
        url = urllib.parse.urlsplit(server)
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"--server must be an http:// or https:// URL, got {server!r}")
        self.server = server
        self._https = url.scheme == "https"
        self._host = url.hostname
        self._port = url.port
        self._prefix = url.path.rstrip("/")
        self._headers = {"content-type": "application/json", "accept": "application/json"}
        if token:
            self._headers["authorization"] = f"Bearer {token}"
        self._conn: http.client.HTTPConnection | None = None

    async def post(self, path: str, message: Any, reply: type[T], timeout: float) -> T:
        data = await anyio.to_thread.run_sync(self._post, path, encode(message), timeout, abandon_on_cancel=True)
        return decode(reply, data)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, path: str, body: bytes, timeout: float) -> bytes:
        conn = self._conn
        if conn is None:
            kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            conn = self._conn = kind(self._host, self._port, timeout=timeout)
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        try:
            conn.request("POST", self._prefix + path, body=body, headers=self._headers)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise Unreachable(str(error) or type(error).__name__) from None
        if response.status >= 400:
            try:
                error_body = msgspec.json.decode(data, type=_ErrorBody)
            except msgspec.DecodeError:
                error_body = _ErrorBody("error", data[:200].decode("utf-8", "replace"))
            raise Refused(response.status, error_body.error, error_body.message, error_body.details)
        return data
