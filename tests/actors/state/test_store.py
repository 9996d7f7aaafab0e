"""The SQLite store, the build codec and the journal actor's group commit (docs/design.md §10)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import pytest
import trio

from actors.builds.build import Build, new_build
from actors.builds.records import BuildShape, StepLog
from actors.builds.snapshot import build_info
from actors.core import Actor, open_system
from actors.state.codec import build_row, decode_build
from actors.state.journal import Committed, Flush, JournalActor, Seal, Write
from actors.state.sqlite import SQLiteStore
from actors.state.store import Batch, BuildRow, NodeRow, Retention
from runtime.spec_loader import load_pipeline

PIPELINE = {
    "name": "p",
    "concurrency": {"group": "g"},
    "stages": [{"name": "build", "jobs": {
        "compile": {"steps": [{"id": "make", "run": "make"}, {"id": "pack", "uses": "noop"}]},
        "lint": {"steps": [{"uses": "noop"}]},
    }}],
}  # fmt: skip


@pytest.fixture
def shape() -> BuildShape:
    return BuildShape(load_pipeline(PIPELINE), "def1")


def row(number: int, status: str = "SUCCEED", pipeline: str = "p", finished_at: float | None = 2000.0,
        queued_at: float = 1000.0) -> BuildRow:  # fmt: skip
    return BuildRow(f"{pipeline}.{number}", pipeline, number, status, "g", queued_at,
                    finished_at if status in ("SUCCEED", "FAILED") else None, "def1", b"x")  # fmt: skip


def test_a_commit_is_read_back_after_reopening(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.commit(Batch(pipelines={"p": ("def1", "name: p")}, definitions={"def1": ("p", "name: p")},
                       builds={"p.1": row(1), "p.2": row(2, "QUEUE", queued_at=1002.0),
                               "p.3": row(3, "RUNNING", queued_at=1001.0)},
                       nodes={"n2": NodeRow("n2", "default", 2, ("linux",))}, meta={"event_id": 100}))  # fmt: skip
    store.close()
    again = SQLiteStore(tmp_path)
    recovered = again.recover()
    assert [(p.id, p.definition, p.source, p.next_number) for p in recovered.pipelines] == [("p", "def1", "name: p", 4)]
    assert [b.id for b in recovered.unfinished] == ["p.3", "p.2"]  # by queued_at
    assert recovered.definitions == {"def1": "name: p"}
    assert recovered.nodes == [NodeRow("n2", "default", 2, ("linux",))]
    assert recovered.meta == {"event_id": 100}
    assert recovered.finished == 1
    assert again.build("p.1") == row(1)
    assert again.build("p.9") is None
    again.close()


def test_later_writes_replace_earlier_ones_and_counters_only_grow(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.commit(Batch(pipelines={"p": ("def1", "a")}, builds={"p.1": row(1, "RUNNING")}, meta={"event_id": 50}))
    store.commit(Batch(builds={"p.1": row(1, "FAILED")}, meta={"event_id": 10},
                       nodes={"n1": NodeRow("n1", "default", 1, ())}))  # fmt: skip
    store.commit(Batch(nodes={"n1": None}))
    recovered = store.recover()
    assert recovered.unfinished == [] and recovered.finished == 1
    assert store.build("p.1").status == "FAILED"  # type: ignore[union-attr]
    assert recovered.meta == {"event_id": 50}
    assert recovered.nodes == []
    store.close()


def test_the_file_is_sqlite_in_wal_mode(tmp_path: Path) -> None:
    SQLiteStore(tmp_path).close()
    with sqlite3.connect(tmp_path / "shunter.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_failed_commit_changes_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.commit(Batch(builds={"p.1": row(1)}))
    bad = BuildRow("p.2", "p", 2, "SUCCEED", None, None, None, "def1", None)  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError):
        store.commit(Batch(builds={"p.3": row(3), "p.2": bad}))
    assert store.build("p.3") is None and store.build("p.1") is not None
    store.close()


def test_listing_and_retention(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.commit(Batch(pipelines={"p": ("def1", "a"), "q": ("def2", "b")}))
    builds = {f"p.{n}": row(n, finished_at=1000.0 + n) for n in range(1, 11)}
    builds |= {f"q.{n}": row(n, "FAILED", pipeline="q", finished_at=5000.0 + n) for n in range(1, 4)}
    builds["p.11"] = row(11, "RUNNING")
    store.commit(Batch(builds=builds))
    assert [b.id for b in store.builds("p", None, 3)] == ["p.10", "p.9", "p.8"]
    assert [b.id for b in store.builds(None, "FAILED", 10)] == ["q.3", "q.2", "q.1"]
    removed = store.prune(Retention(days=None, builds_per_pipeline=4), now=6000.0)
    assert removed == [f"p.{n}" for n in range(1, 7)]
    removed = store.prune(Retention(days=1, builds_per_pipeline=None), now=5000.0 + 86_400 + 2.5)
    assert removed == ["p.10", "p.7", "p.8", "p.9", "q.1", "q.2"]
    assert store.build("p.11") is not None  # unfinished builds are never pruned
    assert store.recover().pipelines[0].next_number == 12  # numbering never goes back
    store.close()


def test_a_build_round_trips_through_the_codec(shape: BuildShape, tmp_path: Path) -> None:
    build = new_build(build_id="p.7", spec=shape, number=7, variables={"X": "1"}, group="g", now=1000.0)
    jobs = build.start(1001.0)
    compile_job = build.jobs["compile"]
    assert compile_job in jobs
    build.job_started(compile_job, "n1", "n1/0", {"A": "b"}, 1002.0)
    log = StepLog(str(tmp_path / "make.log"))
    log.append("hello")
    build.step_started(compile_job, 0, log, 1003.0)
    build.step_ended(compile_job, 0, "FAILED", "exit 2", 2, {"out": "v"}, {}, 1004.0)
    build.job_ended(compile_job, "FAILED", "step make failed", 1005.0)
    decoded = decode_build(build_row(build, "def1"), shape)
    assert build_info(decoded) == build_info(build)
    assert decoded.jobs["compile"].steps[0].attempts[0].log.text() == "hello\n"
    assert decoded.jobs["compile"].attempts[0].context_before == {"A": "b"}
    queued = new_build(build_id="p.8", spec=shape, number=8, variables={}, group="g", now=1000.0)
    assert build_info(decode_build(build_row(queued, "def1"), shape)) == build_info(queued)


def test_a_step_log_file_is_capped_with_a_marker(tmp_path: Path) -> None:
    log = StepLog(str(tmp_path / "logs" / "a.log"), max_bytes=100)
    assert log.text() == ""  # no line yet: no file
    for index in range(50):
        log.append(f"line {index}")
    log.close()
    text = log.text()
    assert text.startswith("line 0\nline 1\n")
    assert "log truncated: it reached max-log-bytes (100)" in text
    assert len(text) < 250
    assert "".join(log.chunks(size=7)) == text


def test_an_in_memory_log_is_capped_too() -> None:
    log = StepLog(max_bytes=1000)
    for _ in range(1000):
        log.append("x" * 99)
    assert len(log.text()) < 1200 and "max-log-bytes (1000)" in log.text()


class Writer(Actor):
    """Sends writes to the journal and records the Committed acks it gets."""

    def __init__(self) -> None:
        self.acks: list[int] = []

    def receive(self, message: object) -> object:
        if isinstance(message, Committed):
            self.acks.append(message.seq)
        return None


@pytest.mark.trio
async def test_the_journal_commits_many_writes_in_few_transactions(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    async with open_system() as system:
        journal_actor = JournalActor(store)
        journal = system.spawn(lambda: journal_actor, name="journal")
        writer_actor = Writer()
        writer = system.spawn(lambda: writer_actor, name="writer")
        for number in range(1, 501):
            journal.tell(Write(Batch(builds={f"p.{number}": row(number)}), writer, number))
        await journal.ask(Flush())
        assert journal_actor.writes == 500
        assert 1 <= journal_actor.commits < 50  # group commit: writes piled up while a commit ran
        assert store.build("p.500") is not None
        for _ in range(100):
            if writer_actor.acks and writer_actor.acks[-1] == 500:
                break
            await trio.sleep(0)
        assert writer_actor.acks[-1] == 500 and writer_actor.acks == sorted(writer_actor.acks)
        # an ask is answered once its write is committed
        await journal.ask(Write(Batch(builds={"p.501": row(501)})))
        assert SQLiteStore(tmp_path).build("p.501") is not None
        await journal.ask(Seal())
        journal.tell(Write(Batch(builds={"p.502": row(502)})))
        await journal.ask(Flush())
        assert store.build("p.502") is None  # sealed: the stopping server writes nothing more
    store.close()


def test_retention_removes_a_chunk_at_a_time(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    store.commit(Batch(pipelines={"p": ("def1", "a")}, builds={f"p.{n}": row(n) for n in range(1, 8)}))
    keep_two = Retention(days=None, builds_per_pipeline=2)
    assert store.prune(keep_two, now=0.0, limit=3) == ["p.1", "p.2", "p.3"]
    assert store.prune(keep_two, now=0.0, limit=3) == ["p.4", "p.5"]
    assert store.prune(keep_two, now=0.0, limit=3) == []
    assert [b.id for b in store.builds("p", None, 10)] == ["p.7", "p.6"]
    store.close()


def test_a_store_made_before_listings_paged_in_it_gets_its_creation_column(tmp_path: Path) -> None:
    """An older store has no ``created_at`` column: opening it adds one, filled with each build's
    ``queued_at`` (a build was created when it was first queued), and pages read in that order."""
    db = sqlite3.connect(tmp_path / "shunter.db")
    db.execute("CREATE TABLE builds (id TEXT PRIMARY KEY, pipeline_id TEXT NOT NULL, number INTEGER NOT NULL, "
               "status TEXT NOT NULL, grp TEXT, queued_at REAL, finished_at REAL, definition TEXT NOT NULL, "
               "data BLOB NOT NULL, finished INTEGER NOT NULL)")  # fmt: skip
    db.executemany("INSERT INTO builds VALUES (?, 'p', ?, 'SUCCEED', NULL, ?, 3000.0, 'def1', x'00', 1)",
                   [(f"p.{number}", number, 1000.0 + number) for number in (1, 2, 3)])  # fmt: skip
    db.commit()
    db.close()
    store = SQLiteStore(tmp_path)
    assert [(r.id, r.created_at) for r in store.builds(None, None, 10)] == [
        ("p.3", 1003.0), ("p.2", 1002.0), ("p.1", 1001.0)]  # fmt: skip
    assert [r.id for r in store.builds("p", None, 10, before=(1003.0, "p", 3))] == ["p.2", "p.1"]
    store.close()


def test_listing_pages_by_creation_and_skips_deleted_pipelines(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    rows = {f"{p}.{n}": msgspec.structs.replace(row(n, pipeline=p), created_at=float(n * 10 + (p == "q")))
            for p in ("p", "q", "gone") for n in (1, 2, 3)}  # fmt: skip
    store.commit(Batch(builds=rows, deleted={"gone": True}))
    newest = [r.id for r in store.builds(None, None, 10)]
    assert newest == ["q.3", "p.3", "q.2", "p.2", "q.1", "p.1"]  # by created_at; "gone" is deleted
    assert [r.id for r in store.builds(None, None, 2, before=(20.0, "p", 2))] == ["q.1", "p.1"]
    assert [r.id for r in store.builds(None, "SUCCEED", 3, before=(31.0, "q", 3))] == ["p.3", "q.2", "p.2"]
    store.close()


def test_builds_created_in_the_same_instant_page_by_pipeline_and_number(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)
    same = {f"p.{n}": msgspec.structs.replace(row(n), created_at=10.0) for n in (1, 2, 3)}
    store.commit(Batch(builds=same))
    for pipeline in ("p", None):  # the per-pipeline index and the all-pipelines one
        assert [r.id for r in store.builds(pipeline, None, 10, before=(10.0, "p", 3))] == ["p.2", "p.1"]
    store.close()
