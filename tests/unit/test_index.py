"""The FTS5 index: search results, query injection, incremental folder sync, persistence, threads."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from rag.index import FtsIndex, FtsUnavailableError, _require_fts5, build_match_query
from rag.ingest import Document, Section
from rag.types import Passage, Retriever


def doc(doc_id: str, text: str, *, title: str = "Guide", heading: tuple[str, ...] = ()) -> Document:
    """A one-section document."""
    return Document(doc_id, title, doc_id, (Section(heading, text),), doc_id)


@pytest.fixture
def index() -> FtsIndex:
    """A small in-memory index."""
    idx = FtsIndex.open(":memory:")
    idx.add_document(
        doc("redis.md", "Set REDIS_URL so that several instances share breaker state.", heading=("Deploy",))
    )
    idx.add_document(doc("run.md", "Run make run to start the app on port 8000.", heading=("Setup",)))
    idx.add_document(doc("cafe.md", "The café serves coffee near the station.", title="Café"))
    return idx


def test_search_returns_passages_best_first(index: FtsIndex) -> None:
    """A query returns Passage objects with metadata, snippet and descending scores."""
    results = index.search("how do instances share state with redis?")
    assert results[0].doc_id == "redis.md"
    assert results[0].chunk_id == "redis.md#0"
    assert results[0].heading == "Deploy"
    assert results[0].source == "redis.md"
    assert "instances" in results[0].snippet
    assert all(isinstance(p, Passage) for p in results)
    scores = [p.score for p in results]
    assert scores == sorted(scores, reverse=True)


def test_fts_index_is_a_retriever(index: FtsIndex) -> None:
    """FtsIndex satisfies the Retriever protocol the app depends on."""
    retriever: Retriever = index
    assert retriever.search("coffee", k=1)[0].doc_id == "cafe.md"


def test_stemming_and_diacritics(index: FtsIndex) -> None:
    """Porter stemming and diacritic folding: 'running' finds 'Run', 'cafe' finds 'café'."""
    assert index.search("running")[0].doc_id == "run.md"
    assert index.search("cafe")[0].doc_id == "cafe.md"


def test_title_and_heading_are_searchable() -> None:
    """A word only in the title or heading path still finds the chunk, and outranks a body mention."""
    idx = FtsIndex()
    idx.add_document(doc("a.md", "Nothing relevant in this body text at all.", title="Troubleshooting"))
    idx.add_document(doc("b.md", "A long body that mentions troubleshooting once " + "filler " * 40))
    assert [p.doc_id for p in idx.search("troubleshooting")] == ["a.md", "b.md"]


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        'say "hello" world"',
        "redis AND",
        "OR",
        "AND OR NOT",
        "NEAR(redis state, 2)",
        "redis NEAR state",
        "red*",
        "*",
        "-redis",
        "redis - state",
        "^redis",
        "(redis",
        "redis)",
        "((()))",
        "title:redis",
        "{title heading}: redis",
        "body:",
        "chunks:redis",
        "rank:1",
        "redis + state",
        "'; DROP TABLE chunks; --",
        "\x00redis",
        "e\u0301",
        "\u200b",
        "🙂 redis",
        "a" * 5000,
        " ".join(f"w{i}" for i in range(500)),
    ],
)
def test_injection_attempts_never_raise(index: FtsIndex, query: str) -> None:
    """FTS5 operators, quotes, column filters and odd characters are plain words, never syntax errors."""
    results = index.search(query)
    assert isinstance(results, list)
    assert len(index) == 3  # nothing was dropped


def test_operator_words_are_matched_literally() -> None:
    """'NOT' and 'title:' in a query match those words; they do not filter."""
    idx = FtsIndex()
    idx.add_document(doc("x.md", "apples and pears"))
    assert [p.doc_id for p in idx.search("pears NOT apples")] == ["x.md"]
    assert [p.doc_id for p in idx.search("title:apples")] == ["x.md"]


@pytest.mark.parametrize("query", ["", "   ", "?!.,;", "___"])
def test_empty_queries_return_nothing(index: FtsIndex, query: str) -> None:
    """A query without words returns an empty list."""
    assert index.search(query) == []


def test_no_match_and_bad_k(index: FtsIndex) -> None:
    """Unknown words give []; k < 1 gives []; k bounds the result length."""
    assert index.search("zebra quasar") == []
    assert index.search("redis", k=0) == []
    assert len(index.search("the redis run café", k=2)) == 2


def test_stop_words_dropped_unless_all_stop_words() -> None:
    """Common words are dropped from the query, but a query of only common words is kept."""
    assert build_match_query("What is the REDIS url?") == '"redis" OR "url"'
    assert build_match_query("what is it") == '"what" OR "is" OR "it"'
    assert build_match_query('say "x" x') == '"say" OR "x"'
    assert build_match_query("") == ""
    idx = FtsIndex()
    idx.add_document(doc("w.md", "What it is."))
    assert [p.doc_id for p in idx.search("what is it")] == ["w.md"]


def test_add_replace_and_remove_single_documents(tmp_path: Path) -> None:
    """Adding a file indexes it; re-adding the same id replaces it; remove drops it."""
    path = tmp_path / "note.md"
    path.write_text("# Note\n\nfirst version mentions walrus\n")
    idx = FtsIndex()
    assert idx.add_file(path).doc_id == "note.md"
    assert idx.search("walrus")[0].title == "Note"
    path.write_text("# Note\n\nsecond version mentions penguin\n")
    idx.add_file(path)
    assert idx.search("walrus") == []
    assert idx.search("penguin")[0].doc_id == "note.md"
    assert idx.doc_ids() == ["note.md"]
    assert idx.remove("note.md") is True
    assert idx.remove("note.md") is False
    assert idx.search("penguin") == []
    assert len(idx) == 0


def test_sync_folder_is_incremental(tmp_path: Path) -> None:
    """Changed files are re-indexed, removed ones dropped, new ones added, unchanged ones untouched."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("# A\n\nalpha walrus\n")
    (kb / "b.md").write_text("# B\n\nbravo penguin\n")
    (kb / "c.txt").write_text("charlie otter\n")
    idx = FtsIndex(tmp_path / "index.sqlite")
    first = idx.sync_folder(kb)
    assert (first.added, first.updated, first.removed) == (["a.md", "b.md", "c.txt"], [], [])
    rowid_a = idx._writer.execute("SELECT id FROM chunk_meta WHERE doc_id = 'a.md'").fetchone()
    (kb / "b.md").write_text("# B\n\nbravo seal\n")
    (kb / "c.txt").unlink()
    (kb / "d.md").write_text("delta heron\n")
    second = idx.sync_folder(kb)
    assert second.added == ["d.md"]
    assert second.updated == ["b.md"]
    assert second.removed == ["c.txt"]
    assert second.unchanged == ["a.md"]
    assert second.changed
    # Unchanged really means untouched: same chunk row.
    assert idx._writer.execute("SELECT id FROM chunk_meta WHERE doc_id = 'a.md'").fetchone() == rowid_a
    assert idx.search("penguin") == []
    assert idx.search("seal")[0].doc_id == "b.md"
    assert idx.search("otter") == []
    assert idx.search("heron")[0].doc_id == "d.md"
    third = idx.sync_folder(kb)
    assert not third.changed
    assert third.unchanged == ["a.md", "b.md", "d.md"]


def test_sync_keeps_previous_version_of_a_file_that_breaks(tmp_path: Path) -> None:
    """A file that becomes unreadable is reported and keeps its indexed version; other files still sync."""
    (tmp_path / "a.txt").write_text("alpha walrus\n")
    (tmp_path / "b.txt").write_text("bravo penguin\n")
    idx = FtsIndex()
    idx.sync_folder(tmp_path)
    (tmp_path / "a.txt").write_bytes(b"\x00\x01binary now")
    (tmp_path / "b.txt").write_text("bravo seal\n")
    report = idx.sync_folder(tmp_path)
    assert [e.path.endswith("a.txt") for e in report.failed] == [True]
    assert report.removed == []
    assert idx.search("walrus")[0].doc_id == "a.txt"
    assert idx.search("seal")[0].doc_id == "b.txt"


def test_sync_only_removes_documents_of_that_folder(tmp_path: Path) -> None:
    """Documents added one by one (or from another folder) survive a folder sync."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("alpha\n")
    single = tmp_path / "single.txt"
    single.write_text("lonely walrus\n")
    idx = FtsIndex()
    idx.add_file(single)
    idx.sync_folder(kb)
    (kb / "a.md").unlink()
    assert idx.sync_folder(kb).removed == ["a.md"]
    assert idx.doc_ids() == ["single.txt"]


def test_sync_missing_folder_raises(tmp_path: Path) -> None:
    """Syncing a folder that does not exist is a clear IngestError."""
    from rag.ingest import IngestError

    with pytest.raises(IngestError, match="not found"):
        FtsIndex().sync_folder(tmp_path / "nope")


def test_persists_across_reopen(tmp_path: Path) -> None:
    """Everything lives in one file: a reopened index finds the same chunks and syncs nothing."""
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "a.md").write_text("# Alpha\n\nthe walrus sleeps\n")
    path = tmp_path / "index.sqlite"
    with FtsIndex.open(path) as idx:
        idx.sync_folder(kb)
    with FtsIndex.open(path) as again:
        assert again.search("walrus")[0].title == "Alpha"
        assert again.sync_folder(kb).unchanged == ["a.md"]
    assert {p.name for p in tmp_path.iterdir()} >= {"index.sqlite"}


def test_closed_index_raises(tmp_path: Path) -> None:
    """Using a closed index raises RuntimeError; close is idempotent."""
    idx = FtsIndex(tmp_path / "i.sqlite")
    idx.search("warm up this thread's reader")
    idx.close()
    idx.close()
    with pytest.raises(RuntimeError, match="closed"):
        idx.search("walrus")
    with pytest.raises(RuntimeError, match="closed"):
        idx.remove("x")


def test_missing_fts5_is_a_clear_error() -> None:
    """Without FTS5 the index refuses to open with a message that says what to do."""

    class NoFts:
        def execute(self, sql: str) -> None:
            raise sqlite3.OperationalError("no such module: fts5")

    with pytest.raises(FtsUnavailableError, match="no FTS5"):
        _require_fts5(NoFts())  # type: ignore[arg-type]


def test_bad_weights_rejected() -> None:
    """Column weights must be three positive numbers."""
    with pytest.raises(ValueError, match="weights"):
        FtsIndex(weights=(1.0, -1.0, 1.0))


@pytest.mark.parametrize("where", ["memory", "file"])
def test_concurrent_search_and_sync(tmp_path: Path, where: str) -> None:
    """Searches from several threads during writes all succeed and see whole documents only."""
    idx = FtsIndex(":memory:" if where == "memory" else tmp_path / "i.sqlite")
    idx.add_document(doc("base.md", "walrus " * 5))
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                for p in idx.search("walrus penguin", k=10):
                    assert p.text.startswith(("walrus", "penguin"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for i in range(50):
        idx.add_document(doc(f"d{i}.md", f"penguin number {i}"))
        if i % 3 == 0:
            idx.remove(f"d{i}.md")
    stop.set()
    for t in threads:
        t.join()
    assert errors == []
    assert len(idx) == 1 + 50 - 17
    idx.close()
