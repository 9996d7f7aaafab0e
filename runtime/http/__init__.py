"""The HTTP front door (docs/design.md §7): a hand-written ASGI 3 app over the public ``Runtime`` API.

``core`` (requests, responses, errors, routing; no I/O), ``routes`` (the
handlers and the route table), ``app`` (the ASGI callable), ``sse``
(``/v1/events``), ``metrics`` (``/metrics``), ``openapi`` (``/openapi.json``).
Use ``runtime.asgi_app`` rather than building an ``App`` yourself.
"""

from .app import App

__all__ = ["App"]
