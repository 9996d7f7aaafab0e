"""Errors that cross the public API (re-exported by ``runtime``).

Each carries a stable ``code`` (the HTTP error code of docs/design.md §7) and a human
message that names what is wrong and where.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ShunterError",
    "SpecError",
    "QueueFull",
    "NotRetryable",
    "NotFound",
    "Overloaded",
    "InvalidRequest",
    "Conflict",
    "UndeclaredVariable",
]


class ShunterError(Exception):
    """Base of every error shunter reports to its users."""

    code = "error"
    http_status = 400

    def __init__(self, message: str, *, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: list[Any] = details or []

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "details": self.details}


class SpecError(ShunterError):
    """A pipeline or configuration was refused; ``errors`` lists every problem.

    Each entry is ``{"path": "$.stages[0].jobs.x.runs-on", "message": "..."}``.
    """

    code = "invalid_spec"
    http_status = 400

    def __init__(self, errors: list[dict[str, str]], *, what: str = "pipeline") -> None:
        self.errors = errors
        self.what = what  # what was refused: "pipeline", "config", "pipeline FILE"
        lines = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(f"invalid {what}: {lines}{more}", details=errors)


class QueueFull(ShunterError):
    """A concurrency group's queue is full and its policy is ``reject``."""

    code = "queue_full"
    http_status = 429


class NotRetryable(ShunterError):
    """The build, job or step cannot be retried now; the message says why."""

    code = "not_retryable"
    http_status = 409


class NotFound(ShunterError):
    """An id (pipeline, build, job, step, node) names nothing."""

    code = "not_found"
    http_status = 404


class Overloaded(ShunterError):
    """Admission is saturated; try again later."""

    code = "overloaded"
    http_status = 503


class InvalidRequest(ShunterError):
    """A request is malformed: wrong types, unknown variables, bad ids."""

    code = "invalid_request"
    http_status = 400


class Conflict(ShunterError):
    """The request conflicts with the current state (e.g. cancel a finished build)."""

    code = "conflict"
    http_status = 409


class UndeclaredVariable(InvalidRequest):
    """A submission names a variable its pipeline does not declare.

    The body is well formed (any names are valid JSON); what refuses it is the
    pipeline's current definition, so HTTP answers 409 like other conflicts
    with the current state. Still an ``InvalidRequest`` for Python callers.
    """

    code = "undeclared_variable"
    http_status = 409
