"""The text side of a shell step: its output as lines, and the files it exports through.

``LineSplitter`` turns the bytes a step prints into lines for its log, in
bounded memory (a line longer than ``MAX_LINE_BYTES`` is delivered in
pieces, never cut inside a UTF-8 character). ``parse_exports`` reads the
``SHUNTER_ENV`` and ``SHUNTER_OUTPUT`` files a step wrote (``NAME=value``
lines and ``NAME<<DELIMITER`` blocks, as GitHub Actions does).
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MAX_LINE_BYTES", "LineSplitter", "OutputCallback", "parse_exports", "read_text"]

MAX_LINE_BYTES = 64 * 1024
"""Longer output lines are delivered in pieces of at most this many bytes."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

OutputCallback = Callable[[str], None]


def parse_exports(text: str, *, source: str, warn: OutputCallback) -> dict[str, str]:
    """Parse the contents of a ``SHUNTER_ENV`` or ``SHUNTER_OUTPUT`` file.

    Two forms, as in GitHub Actions: ``NAME=value`` (the value runs to the end
    of the line and may contain ``=``), and a multi-line value::

        NAME<<DELIMITER
        line one
        line two
        DELIMITER

    A line holding both ``=`` and ``<<`` uses whichever comes first. Blank
    lines are skipped, a later assignment replaces an earlier one, and a
    trailing ``\\r`` is dropped from each line. Names must match
    ``[A-Za-z_][A-Za-z0-9_]*``; anything malformed is reported through
    ``warn`` as one ``[shunter] warning: <source> line N: ...`` line and ignored.
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if lines[-1] == "":
        lines.pop()
    result: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        where = f"[shunter] warning: {source} line {index + 1}"
        index += 1
        if not line.strip():
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals != -1 and (heredoc == -1 or equals < heredoc):
            name, value = line[:equals], line[equals + 1 :]
        elif heredoc != -1:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not delimiter:
                warn(f"{where}: missing delimiter after '<<' in {_preview(line)}; ignored")
                continue
            try:
                end = lines.index(delimiter, index)
            except ValueError:
                warn(f"{where}: no line {_preview(delimiter)} closes {_preview(line)}; ignored")
                break
            value = "\n".join(lines[index:end])
            index = end + 1
        else:
            warn(f"{where}: expected NAME=value or NAME<<DELIMITER, got {_preview(line)}; ignored")
            continue
        if not _NAME.match(name):
            warn(
                f"{where}: invalid name {_preview(name)} "
                "(names match [A-Za-z_][A-Za-z0-9_]*); ignored"
            )
            continue
        result[name] = value
    return result


class LineSplitter:
    """Turns chunks of bytes into text lines for ``on_output``, in bounded memory.

    Lines longer than :data:`MAX_LINE_BYTES` are cut into pieces, never inside
    a UTF-8 character, and the pieces don't depend on how the reads happened
    to be chunked.
    """

    __slots__ = ("_emit", "_pending", "_chunk_done")

    def __init__(self, emit: OutputCallback, chunk_done: Callable[[], None] | None = None) -> None:
        self._emit = emit
        self._pending = bytearray()
        self._chunk_done = chunk_done  # called once the lines of each read have been delivered

    def feed(self, data: bytes) -> None:
        pending = self._pending
        pending += data
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            self._emit_line(pending[start:end])
            start = end + 1
        del pending[:start]
        # +1 keeps a possible '\r' (of a '\r\n' still to come) with its line.
        while len(pending) > MAX_LINE_BYTES + 1:
            cut = _utf8_cut(pending, MAX_LINE_BYTES)
            self._emit(pending[:cut].decode("utf-8", "replace"))
            del pending[:cut]
        if self._chunk_done is not None:
            self._chunk_done()

    def flush(self) -> None:
        """Deliver a last line that has no newline."""
        if self._pending:
            self._emit_line(self._pending)
            self._pending = bytearray()
            if self._chunk_done is not None:
                self._chunk_done()

    def _emit_line(self, raw: bytes | bytearray) -> None:
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        while len(raw) > MAX_LINE_BYTES:
            cut = _utf8_cut(raw, MAX_LINE_BYTES)
            self._emit(raw[:cut].decode("utf-8", "replace"))
            raw = raw[cut:]
        self._emit(raw.decode("utf-8", "replace"))


def _utf8_cut(data: bytes | bytearray, limit: int) -> int:
    """Where to cut ``data`` (longer than ``limit``) at most ``limit`` bytes in,
    backing up over UTF-8 continuation bytes so no character is split."""
    cut = limit
    while cut > limit - 3 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return cut


def read_text(path: str) -> str:
    with open(path, "rb") as file:
        return file.read().decode("utf-8", "replace")


def _preview(text: str, limit: int = 80) -> str:
    """``repr`` of text, shortened for a one-line warning."""
    return repr(text if len(text) <= limit else text[:limit] + "...")
