"""``StepLog.read``: reading on from a position, in bounded pieces, across dropped lines."""

from __future__ import annotations

from typing import ClassVar

from hypothesis import given
from hypothesis import strategies as st

from actors.builds.records import StepLog


class SmallLog(StepLog, gc=False):
    MAX_LINES: ClassVar[int] = 10  # head 5 lines, then the newest 5


def test_reads_on_from_a_position() -> None:
    log = StepLog()
    assert log.read(0, 100) == ([], 0)
    for line in ("a", "b", "c"):
        log.append(line)
    assert log.read(0, 100) == (["a", "b", "c"], 3)
    assert log.read(1, 1) == (["b"], 2)
    assert log.read(3, 100) == ([], 3)
    assert log.read(0, 0) == ([], 0)
    log.append("d")
    assert log.read(3, 100) == (["d"], 4) and log.written == 4


def test_lines_dropped_before_they_were_read_read_as_one_marker() -> None:
    log = SmallLog()
    for i in range(14):
        log.append(f"l{i}")
    assert log.dropped == 4 and log.written == 14
    lines, end = log.read(0, 100)
    assert lines == ["l0", "l1", "l2", "l3", "l4", "[shunter] 4 line(s) dropped", "l9", "l10", "l11", "l12", "l13"]
    assert end == 14
    assert "\n".join(lines) + "\n" == log.text()
    assert log.read(6, 100) == (["[shunter] 3 line(s) dropped", "l9", "l10", "l11", "l12", "l13"], 14)
    assert log.read(10, 2) == (["l10", "l11"], 12)


@given(st.integers(0, 40), st.integers(1, 7))
def test_reading_in_pieces_gives_what_the_whole_text_gives(count: int, piece: int) -> None:
    log = SmallLog()
    for i in range(count):
        log.append(f"l{i}")
    position, lines = 0, []
    while True:
        found, position = log.read(position, piece)
        if not found:
            break
        lines.extend(found)
    assert position == log.written
    assert ("\n".join(lines) + "\n" if lines else "") == log.text()
