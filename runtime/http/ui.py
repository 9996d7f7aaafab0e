"""The dashboard (docs/design.md §13): ``GET /`` and its three files, shipped in the package.

Plain HTML, CSS and JavaScript in ``runtime/http/dashboard/`` (package data;
no build step). The page holds no data of its own: it reads the same API a
script would (``/v1/...``), follows ``/v1/events`` for live changes and
``/v1/builds/{id}/logs?follow=true`` for the running step's output, and sends
the token pasted into its token field as ``Authorization: Bearer``.

Each file has a route of its own, so the OpenAPI document says exactly what
is served, and no name from a request ever reaches the file system. Answers
carry a Content-Security-Policy that allows only this origin's scripts,
styles and connections.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

from .core import Handler, Request, Response, Route

__all__ = ["ROUTES", "asset"]

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")  # fmt: skip
HEADERS = [
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-cache"),  # small files: always check, so an upgraded server serves its own page
]
# path -> (file in dashboard/, content type, operation id)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8", "dashboard"),
    "/ui/app.js": ("app.js", "text/javascript; charset=utf-8", "dashboard_script"),
    "/ui/style.css": ("style.css", "text/css; charset=utf-8", "dashboard_style"),
    "/ui/icon.svg": ("icon.svg", "image/svg+xml", "dashboard_icon"),
}


@functools.cache
def asset(name: str) -> bytes:
    """One file of the dashboard, read from the package once."""
    return resources.files(__package__).joinpath("dashboard", name).read_bytes()


def _handler(path: str) -> Handler:
    name, content_type, operation = FILES[path]

    async def serve(app: Any, request: Request) -> Response:  # the files need nothing of the app
        return Response(200, asset(name), content_type, list(HEADERS))

    serve.__name__ = serve.__qualname__ = operation
    return serve


ROUTES: tuple[Route, ...] = tuple(
    Route("GET", path, _handler(path), "The dashboard (HTML)" if path == "/" else f"The dashboard's {name}",
          content_type=content_type)
    for path, (name, content_type, _) in FILES.items()
)
