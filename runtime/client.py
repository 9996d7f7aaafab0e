"""A small client of the HTTP API (docs/design.md §7, §13), on the standard library alone (urllib).

``Client(server, token)`` sends requests with ``Authorization: Bearer`` when
it has a token and turns every failure into one exception with a one-line
message: ``Unreachable`` (no server answers at that address) or
``Refused`` (the server answered 4xx/5xx; its ``error`` code and
``message`` are kept). The CLI (``shunter submit``, ``logs -f``, ...) is
built on it; scripts may use it too::

    client = Client("http://127.0.0.1:8000")
    build = client.submit("app", {"TARGET": "prod"})
    for piece in client.follow_logs(build["id"]):
        print(piece, end="")
    print(client.wait(build["id"])["status"])
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["Client", "ClientError", "Refused", "Unreachable", "DEFAULT_SERVER", "BUILD_FINAL", "server_url"]

DEFAULT_SERVER = "http://127.0.0.1:8000"
BUILD_FINAL = frozenset({"SUCCEED", "FAILED", "CANCELED", "QUEUE_TIMEOUT"})
TIMEOUT = 30.0  # seconds for an answer (a followed log may be silent longer: it has none)
EVENTS_TIMEOUT = 60.0  # the event stream sends a keep-alive every 15 s


class ClientError(Exception):
    """A request that did not succeed; ``str()`` is one line for a person."""


class Unreachable(ClientError):
    """No server answered at the address."""


class Refused(ClientError):
    """The server answered with an error status."""

    def __init__(self, status: int, code: str, message: str, details: list[Any]) -> None:
        super().__init__(f"{message} ({status} {code})")
        self.status = status
        self.code = code
        self.message = message
        self.details = details


def server_url(text: str | None) -> str:
    """The base URL: ``text`` (``HOST:PORT`` gets ``http://``), else ``$SHUNTER_SERVER``, else the default."""
    url = (text or os.environ.get("SHUNTER_SERVER") or DEFAULT_SERVER).strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    return url


class Client:
    """The API of one server. See the module docstring."""

    def __init__(self, server: str | None = None, token: str | None = None) -> None:
        self.server = server_url(server)
        self.token = token if token is not None else os.environ.get("SHUNTER_TOKEN") or None

    # -- pipelines and builds ---------------------------------------------------------------

    def put_pipeline(self, pipeline_id: str, yaml_text: str) -> tuple[int, dict[str, Any]]:
        """Register or replace; (201 created or 200 replaced, the pipeline)."""
        status, body = self._call("PUT", f"/v1/pipelines/{_quote(pipeline_id)}", body=yaml_text.encode("utf-8"),
                                  content_type="application/yaml")  # fmt: skip
        return status, body

    def submit(self, pipeline_id: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        return self._json("POST", f"/v1/pipelines/{_quote(pipeline_id)}/builds", {"variables": dict(variables or {})})

    def build(self, build_id: str) -> dict[str, Any]:
        return self._json("GET", f"/v1/builds/{_quote(build_id)}")

    def builds(self, pipeline: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        query = {key: value for key, value in (("pipeline", pipeline), ("status", status)) if value}
        found = self._json("GET", "/v1/builds", query=query)
        return list(found["items"] if isinstance(found, dict) and "items" in found else found)

    def retry(self, build_id: str, job: str | None = None, step: str | None = None,
              failed_only: bool = False) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {key: value for key, value in (("job", job), ("step", step)) if value}
        if failed_only:
            body["failed_only"] = True
        return self._json("POST", f"/v1/builds/{_quote(build_id)}/retry", body)

    def cancel(self, build_id: str) -> dict[str, Any]:
        return self._json("POST", f"/v1/builds/{_quote(build_id)}/cancel", {})

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._json("GET", "/v1/nodes"))

    def logs(self, build_id: str, job: str | None = None, step: str | None = None) -> str:
        _, text = self._call("GET", f"/v1/builds/{_quote(build_id)}/logs", query=_selection(job, step))
        return str(text)

    def follow_logs(self, build_id: str, job: str | None = None, step: str | None = None) -> Iterator[str]:
        """The log as it is written, piece by piece, until the step (job, build) has ended."""
        query = {**_selection(job, step), "follow": "true"}
        response = self._open("GET", f"/v1/builds/{_quote(build_id)}/logs", query=query, timeout=None)
        with response, self._cut_off():
            while True:
                piece = response.read1(65536)
                if not piece:
                    return
                yield piece.decode("utf-8", "replace")

    def wait(self, build_id: str) -> dict[str, Any]:
        """The build once it has finished, watching its events (no polling)."""
        after: int | None = None
        while True:
            query = {"build": build_id, **({"after": str(after)} if after is not None else {})}
            response = self._open("GET", "/v1/events", query=query, timeout=EVENTS_TIMEOUT)
            with response, self._cut_off():
                # The stream's first lines are sent once the server has subscribed: from
                # here on no change is missed, so a finished build is seen either way.
                response.readline()
                build = self.build(build_id)
                if build["status"] in BUILD_FINAL:
                    return build
                for event_id, event in _events(response):
                    after = event_id
                    if event.get("kind") == "build" and event.get("status") in BUILD_FINAL:
                        return self.build(build_id)
            # The stream ended (the server dropped a slow reader, or restarts): resume after the last event.

    # -- plumbing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _cut_off(self) -> Iterator[None]:
        """A stream that breaks off (the server died, or went silent past the timeout) is ``Unreachable``."""
        try:
            yield
        except (OSError, http.client.HTTPException) as error:
            detail = "no answer in time" if isinstance(error, TimeoutError) else str(error) or type(error).__name__
            raise Unreachable(f"the server at {self.server} broke off the answer: {detail}") from None

    def _json(self, method: str, path: str, body: Any = None, query: Mapping[str, str] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        _, answer = self._call(method, path, body=data, query=query,
                               content_type="application/json" if data is not None else None)  # fmt: skip
        return answer

    def _call(self, method: str, path: str, *, body: bytes | None = None, query: Mapping[str, str] | None = None,
              content_type: str | None = None) -> tuple[int, Any]:  # fmt: skip
        with self._open(method, path, body=body, query=query, content_type=content_type) as response:
            data = response.read()
            kind = response.headers.get("content-type", "")
            status = response.status
        if kind.startswith("application/json"):
            return status, json.loads(data)
        return status, data.decode("utf-8", "replace")

    def _open(self, method: str, path: str, *, body: bytes | None = None, query: Mapping[str, str] | None = None,
              content_type: str | None = None, timeout: float | None = TIMEOUT) -> Any:  # fmt: skip
        url = self.server + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, data=body, method=method)
        if content_type is not None:
            request.add_header("Content-Type", content_type)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json, text/plain, text/event-stream")
        try:
            return urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            raise _refused(error) from None
        except urllib.error.URLError as error:
            reason = error.reason
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror
            raise Unreachable(f"cannot reach the server at {self.server}: {reason}") from None
        except (socket.timeout, TimeoutError):
            raise Unreachable(f"the server at {self.server} did not answer within {timeout:g}s") from None
        except (ConnectionError, OSError) as error:
            raise Unreachable(f"cannot reach the server at {self.server}: {error.strerror or error}") from None


def _refused(error: urllib.error.HTTPError) -> Refused:
    raw = error.read()
    try:
        body = json.loads(raw)
        return Refused(error.code, str(body.get("error", "error")), str(body.get("message", "")),
                       list(body.get("details", [])))  # fmt: skip
    except (ValueError, AttributeError):
        text = raw.decode("utf-8", "replace").strip().splitlines()
        return Refused(error.code, "error", text[0] if text else str(error.reason), [])


def _events(response: Any) -> Iterator[tuple[int | None, dict[str, Any]]]:
    """(id, event) for each ``data:`` message of a server-sent event stream, until it ends."""
    event_id: int | None = None
    data: list[str] = []
    for raw in response:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                yield event_id, json.loads("\n".join(data))
            event_id, data = None, []
        elif line.startswith("id:"):
            value = line[3:].strip()
            event_id = int(value) if value.isdigit() else None
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _selection(job: str | None, step: str | None) -> dict[str, str]:
    return {key: value for key, value in (("job", job), ("step", step)) if value}


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")
