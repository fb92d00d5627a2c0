"""The embedded retriever: chunks in an SQLite FTS5 table, ranked by BM25, persisted in one file.

Schema (one SQLite database, a file or ``:memory:``)::

    documents(doc_id PK, title, source, fingerprint, origin, n_chunks)   one row per source document
    chunk_meta(id PK = chunks.rowid, doc_id, chunk_id UNIQUE)            chunk -> document
    chunks   FTS5(title, heading, body), porter + unicode61 (diacritics folded)
    chunk_vectors(id PK = chunks.rowid, model, dim, vector BLOB)          optional embeddings (float32)

Invariants:
- A document and all its chunks are written or removed in one transaction: a reader never sees half
  a document, and a crash mid-sync leaves the previous state.
- ``doc_id`` is unique in the index: adding a document whose id exists replaces it.
- ``fingerprint`` is ``sha256/CHUNKER_VERSION``; :meth:`FtsIndex.sync_folder` re-indexes a file only
  when it differs, drops documents of that folder whose file is gone, and leaves the rest untouched.
  A file that fails to parse keeps its previously indexed version (and is reported).
- User text never reaches ``MATCH`` as syntax: every query word is a quoted FTS5 string, OR-ed, so
  operators (``AND``, ``NEAR``, ``*``, ``-``, ``^``, column filters, parentheses) are plain words.
- Embeddings are optional (an :class:`~rag.embeddings.Embedder` given to the index). A chunk's vector
  is dropped with the chunk; after each write, chunks without a vector of the current model are
  embedded (so a sync embeds only new and changed chunks, and retries those a failed call left out).
  Search then fuses BM25 and cosine rankings with RRF; when embedding the query fails it answers with
  BM25 alone and says so (:meth:`FtsIndex.search_detailed`).
- Thread safety: writes go through one connection under ``_lock``. A file index gives each reading
  thread its own connection (WAL mode, so reads run in parallel with each other and with a write);
  ``:memory:`` cannot be shared between connections, so its reads take the same lock.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sqlite3
import threading
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from resilience import CircuitOpenError

from .fusion import DEFAULT_RRF_K, rrf, top_by_cosine
from .ingest import (
    CHUNKER_VERSION,
    Chunk,
    Document,
    IngestError,
    chunk_document,
    iter_files,
    load_file,
    parse_bytes,
)
from .types import Passage

if TYPE_CHECKING:
    from .embeddings import Embedder

__all__ = [
    "DEFAULT_WEIGHTS",
    "STOP_WORDS",
    "FtsIndex",
    "FtsUnavailableError",
    "SearchResult",
    "SyncReport",
    "build_match_query",
]

logger = logging.getLogger(__name__)

TOKENIZER = "porter unicode61 remove_diacritics 2"
# BM25 weights of the (title, heading, body) columns: a word in the title or heading path says more
# about a chunk than the same word once in its body (tuned on XQuAD, see bench/bench_retrieval.py).
DEFAULT_WEIGHTS = (2.0, 2.0, 1.0)
SNIPPET_TOKENS = 24
MAX_QUERY_TERMS = 32
SCHEMA_VERSION = "1"
# Each ranking fused by RRF is this deep: a chunk ranked below it by both BM25 and cosine is not returned.
FUSION_DEPTH = 50
EMBED_BATCH = 64

# Very common English words: OR-ing them in costs time (long posting lists) and adds noise to the
# ranking. Dropped from a query unless the query has nothing else.
_STOP_TEXT = """
a about above after again against all am an and any are as at be because been before being below
between both but by can could did do does doing down during each few for from further had has have
having he her here hers herself him himself his how i if in into is it its itself just me more most
my myself no nor not of off on once only or other our ours ourselves out over own same she should so
some such than that the their theirs them themselves then there these they this those through to too
under until up very was we were what when where which while who whom whose why will with would you
your yours yourself yourselves s t don
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

# Word characters as the unicode61 tokenizer sees them (letters, digits; ``_`` separates words).
_WORD = re.compile(r"[^\W_]+", re.UNICODE)


class FtsUnavailableError(RuntimeError):
    """This Python's SQLite was built without FTS5, so the embedded index cannot work."""


@dataclass(slots=True)
class SyncReport:
    """What :meth:`FtsIndex.sync_folder` did, by document id."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    failed: list[IngestError] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """True when the sync wrote anything."""
        return bool(self.added or self.updated or self.removed)


@dataclass(frozen=True, slots=True)
class SearchResult:
    """What :meth:`FtsIndex.search_detailed` found, and why it is worse than usual (None when it is not)."""

    passages: list[Passage]
    degraded: str | None = None


def build_match_query(query: str, *, stop_words: frozenset[str] = STOP_WORDS) -> str:
    """An FTS5 ``MATCH`` expression for free text: each distinct word quoted, OR-ed ('' when no words).

    Stop words are dropped unless nothing else is left; at most ``MAX_QUERY_TERMS`` words are kept.
    """
    words = list(dict.fromkeys(w.lower() for w in _WORD.findall(query)))
    content = [w for w in words if w not in stop_words]
    chosen = (content or words)[:MAX_QUERY_TERMS]
    # \w-only words hold no '"', but double any anyway: that is FTS5's escape inside a string.
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in chosen)


def _require_fts5(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("CREATE VIRTUAL TABLE temp._fts5_probe USING fts5(x)")
        conn.execute("DROP TABLE temp._fts5_probe")
    except sqlite3.OperationalError as exc:
        raise FtsUnavailableError(
            f"SQLite {sqlite3.sqlite_version} has no FTS5 ({exc}); the embedded index needs a Python whose "
            "sqlite3 is built with FTS5 (python.org and distribution builds are), or a remote RAG service"
        ) from None


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents(
    doc_id TEXT PRIMARY KEY, title TEXT NOT NULL, source TEXT NOT NULL,
    fingerprint TEXT NOT NULL, origin TEXT NOT NULL, n_chunks INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_origin ON documents(origin);
CREATE TABLE IF NOT EXISTS chunk_meta(
    id INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, chunk_id TEXT NOT NULL UNIQUE
);
CREATE INDEX IF NOT EXISTS chunk_meta_doc ON chunk_meta(doc_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks USING fts5(title, heading, body, tokenize='{TOKENIZER}');
CREATE TABLE IF NOT EXISTS chunk_vectors(
    id INTEGER PRIMARY KEY, model TEXT NOT NULL, dim INTEGER NOT NULL, vector BLOB NOT NULL
);
"""


class FtsIndex:
    """BM25 search over chunks stored in SQLite FTS5; implements the :class:`~rag.types.Retriever` protocol.

    Args:
        path: the database file (created if missing), or ``":memory:"``.
        weights: BM25 weights of the title, heading and body columns.
        snippet_markers: text put before and after each matched word in ``Passage.snippet``.
        per_thread_readers: give each searching thread its own connection (file indexes only);
            False makes every search share the writer connection under the lock.
        embedder: embeds chunks (at write time) and queries (at search time) for hybrid search;
            None (the default) is BM25 only.
        rrf_k: the RRF constant of hybrid search.
    """

    def __init__(
        self,
        path: str | Path = ":memory:",
        *,
        weights: tuple[float, float, float] = DEFAULT_WEIGHTS,
        snippet_markers: tuple[str, str] = ("", ""),
        per_thread_readers: bool = True,
        embedder: Embedder | None = None,
        rrf_k: int = DEFAULT_RRF_K,
    ) -> None:
        self.path = str(path)
        self._memory = self.path == ":memory:" or self.path.startswith("file::memory:")
        if len(weights) != 3 or not all(isinstance(w, int | float) and w > 0 for w in weights):
            raise ValueError(f"weights: expected three positive numbers, got {weights!r}")
        self._weights = tuple(float(w) for w in weights)
        self._markers = snippet_markers
        self._lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._shared_reads = self._memory or not per_thread_readers
        self._closed = False
        self.embedder = embedder
        self._rrf_k = rrf_k
        self._generation = 0  # bumped by every write: the vector cache is valid for one generation
        self._vector_cache: tuple[tuple[int, int], list[tuple[int, array[float]]], set[int]] | None = None
        self._writer = self._connect()
        try:
            _require_fts5(self._writer)
            self._init_schema()
        except BaseException:
            self._writer.close()
            raise
        # Weights are numbers we validated, so they can be SQL literals (FTS5 wants constants here).
        w_title, w_heading, w_body = self._weights
        rank = f"bm25(chunks, {w_title!r}, {w_heading!r}, {w_body!r})"
        self._search_sql = (
            f"SELECT m.doc_id, m.chunk_id, c.title, c.heading, c.body, d.source, {rank} AS r, "
            f"snippet(chunks, 2, ?, ?, '…', {SNIPPET_TOKENS}), m.id "
            "FROM chunks AS c JOIN chunk_meta AS m ON m.id = c.rowid JOIN documents AS d ON d.doc_id = m.doc_id "
            "WHERE chunks MATCH ? ORDER BY r LIMIT ?"
        )

    @classmethod
    def open(cls, path: str | Path = ":memory:", **options: object) -> FtsIndex:
        """Open (or create) the index at ``path``; raises :class:`FtsUnavailableError` without FTS5."""
        return cls(path, **options)  # type: ignore[arg-type]

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread=False: the writer is used from whichever thread holds the lock, and
        # close() may run on another thread than the one that opened a reader.
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if not self._memory:
            conn.execute("PRAGMA busy_timeout = 5000")
        return conn

    def _init_schema(self) -> None:
        conn = self._writer
        if not self._memory:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
        with self._transaction() as tx:
            tx.executescript_compat(_SCHEMA)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta(key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            elif row[0] != SCHEMA_VERSION:
                raise RuntimeError(
                    f"{self.path}: index schema {row[0]!r}, this code reads {SCHEMA_VERSION!r}; "
                    "delete the file to rebuild it"
                )

    @contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        with self._lock:
            self._check_open()
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _Tx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            finally:
                self._generation += 1
            conn.execute("COMMIT")

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"index {self.path!r} is closed")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only = 1")
            with self._lock:
                self._check_open()
                self._readers.append(conn)
            self._local.conn = conn
        return conn

    # ---------------------------------------------------------------------------------------------
    # Reading

    def search(self, query: str, k: int = 5) -> list[Passage]:
        """The ``k`` best chunks for ``query``, best first; ``[]`` when nothing matches or ``k < 1``."""
        return self.search_detailed(query, k).passages

    def search_detailed(self, query: str, k: int = 5) -> SearchResult:
        """Like :meth:`search`, and with an embedder, BM25 and cosine rankings fused by RRF.

        When the query cannot be embedded (endpoint down, breaker open, bad answer) or the stored
        vectors have another size than the query's, the BM25 results come back with ``degraded`` set.
        """
        if self.embedder is None:
            return SearchResult([p for _, p in self._bm25(query, k)])
        if not build_match_query(query) or k < 1:
            return SearchResult([])
        keyword = self._bm25(query, max(k, FUSION_DEPTH))
        try:
            query_vector = self.embedder.embed([query])[0]
        except Exception as exc:
            logger.warning("rag.embeddings_query_failed %s: %s", type(exc).__name__, exc)
            reason = "circuit open" if isinstance(exc, CircuitOpenError) else type(exc).__name__
            return SearchResult([p for _, p in keyword[:k]], f"embeddings unavailable ({reason}) — keyword search only")
        vectors, dims = self._vectors(self.embedder.model)
        if vectors and dims != {len(query_vector)}:
            logger.warning(
                "rag.embeddings_dimension_mismatch model=%s index=%s query=%d",
                self.embedder.model,
                sorted(dims),
                len(query_vector),
            )
            return SearchResult(
                [p for _, p in keyword[:k]],
                f"embeddings of another size in the index ({'/'.join(map(str, sorted(dims)))}, the query has "
                f"{len(query_vector)}; re-sync the index) — keyword search only",
            )
        nearest = top_by_cosine(query_vector, vectors, FUSION_DEPTH)
        fused = rrf([[rowid for rowid, _ in keyword], nearest], k=self._rrf_k)[:k]
        found = dict(keyword)
        missing = [rowid for rowid, _ in fused if rowid not in found]
        found.update(self._passages_by_rowid(missing))
        return SearchResult(
            [
                Passage(**{**found[rowid].to_dict(), "score": score})
                for rowid, score in fused
                if rowid in found  # a chunk removed since the vectors were cached
            ]
        )

    def _read(self, sql: str, params: Sequence[object]) -> list[Any]:
        if self._shared_reads:
            with self._lock:
                self._check_open()
                return self._writer.execute(sql, params).fetchall()
        self._check_open()
        return self._reader().execute(sql, params).fetchall()

    def _bm25(self, query: str, k: int) -> list[tuple[int, Passage]]:
        """``(chunk rowid, passage)`` of the ``k`` best chunks by BM25."""
        match = build_match_query(query)
        if not match or k < 1:
            return []
        rows = self._read(self._search_sql, (*self._markers, match, int(k)))
        return [
            (
                rowid,
                Passage(
                    doc_id=doc_id,
                    chunk_id=chunk_id,
                    title=title,
                    heading=heading,
                    text=body,
                    score=-rank,  # bm25() is lower-is-better; Passage.score is higher-is-better
                    source=source,
                    snippet=snippet,
                ),
            )
            for doc_id, chunk_id, title, heading, body, source, rank, snippet, rowid in rows
        ]

    def _passages_by_rowid(self, rowids: Sequence[int]) -> dict[int, Passage]:
        """Chunks found only by their vector (no BM25 snippet: the start of the body stands in)."""
        if not rowids:
            return {}
        marks = ",".join("?" * len(rowids))
        rows = self._read(
            "SELECT m.id, m.doc_id, m.chunk_id, c.title, c.heading, c.body, d.source "
            "FROM chunks AS c JOIN chunk_meta AS m ON m.id = c.rowid JOIN documents AS d ON d.doc_id = m.doc_id "
            f"WHERE c.rowid IN ({marks})",
            rowids,
        )
        out: dict[int, Passage] = {}
        for rowid, doc_id, chunk_id, title, heading, body, source in rows:
            words = str(body).split()
            snippet = " ".join(words[:SNIPPET_TOKENS]) + (" …" if len(words) > SNIPPET_TOKENS else "")
            out[int(rowid)] = Passage(
                doc_id=str(doc_id),
                chunk_id=str(chunk_id),
                title=str(title),
                heading=str(heading),
                text=str(body),
                score=0.0,
                source=str(source),
                snippet=snippet,
            )
        return out

    def _vectors(self, model: str) -> tuple[list[tuple[int, array[float]]], set[int]]:
        """The stored ``(rowid, vector)`` of ``model`` and their sizes, cached until the next write.

        The cache key includes SQLite's ``data_version``, so writes by another connection count too.
        """
        with self._lock:
            self._check_open()
            version: int = self._writer.execute("PRAGMA data_version").fetchone()[0]
            key = (self._generation, version)
            cached = self._vector_cache
            if cached is not None and cached[0] == key:
                return cached[1], cached[2]
            rows = self._writer.execute(
                "SELECT id, dim, vector FROM chunk_vectors WHERE model = ? ORDER BY id", (model,)
            ).fetchall()
        vectors: list[tuple[int, array[float]]] = []
        dims: set[int] = set()
        for rowid, dim, blob in rows:
            vector = array("f")
            vector.frombytes(blob)
            vectors.append((rowid, vector))
            dims.add(dim)
        with self._lock:
            self._vector_cache = (key, vectors, dims)
        return vectors, dims

    def doc_ids(self) -> list[str]:
        """Ids of the indexed documents, sorted."""
        with self._lock:
            self._check_open()
            return [r[0] for r in self._writer.execute("SELECT doc_id FROM documents ORDER BY doc_id")]

    def __len__(self) -> int:
        """Number of indexed chunks."""
        with self._lock:
            self._check_open()
            count: int = self._writer.execute("SELECT count(*) FROM chunk_meta").fetchone()[0]
            return count

    def __contains__(self, doc_id: object) -> bool:
        with self._lock:
            self._check_open()
            return self._writer.execute("SELECT 1 FROM documents WHERE doc_id = ?", (doc_id,)).fetchone() is not None

    # ---------------------------------------------------------------------------------------------
    # Writing

    def add_document(self, doc: Document, chunks: Sequence[Chunk] | None = None, *, origin: str = "") -> int:
        """Index ``doc`` (chunked with the defaults unless ``chunks`` is given), replacing any same-id document.

        Returns the number of chunks written.
        """
        chunks = chunk_document(doc) if chunks is None else chunks
        with self._transaction() as tx:
            tx.put(doc, chunks, origin)
        self.embed_missing()
        return len(chunks)

    def add_file(self, path: str | Path, *, doc_id: str | None = None) -> Document:
        """Parse, chunk and index one file; raises :class:`~rag.ingest.IngestError` when it cannot be read."""
        doc = load_file(path, doc_id=doc_id)
        self.add_document(doc)
        return doc

    def remove(self, doc_id: str) -> bool:
        """Drop a document and its chunks; False when it was not indexed."""
        with self._transaction() as tx:
            return tx.delete(doc_id)

    def sync_folder(self, folder: str | Path) -> SyncReport:
        """Make the index mirror ``folder``: index new and changed files, drop removed ones, skip the rest.

        Only documents that came from this folder are candidates for removal. Parsing happens before
        the write lock is taken, so searches keep running during a sync.
        """
        root = Path(folder).resolve()
        if not root.is_dir():
            raise IngestError(folder, "knowledge folder not found (or not a folder)")
        origin = str(root)
        with self._lock:
            self._check_open()
            known = dict(
                self._writer.execute("SELECT doc_id, fingerprint FROM documents WHERE origin = ?", (origin,)).fetchall()
            )
        report = SyncReport()
        writes: list[tuple[Document, list[Chunk]]] = []
        seen: set[str] = set()
        for doc_id, path in iter_files(root):
            seen.add(doc_id)
            try:
                data = path.read_bytes()
                fingerprint = _fingerprint_bytes(data)
                if known.get(doc_id) == fingerprint:
                    report.unchanged.append(doc_id)
                    continue
                doc = parse_bytes(data, name=str(path), doc_id=doc_id)
            except OSError as exc:
                error = IngestError(path, f"cannot read ({exc.strerror or exc})")
            except IngestError as exc:
                error = exc
            else:
                writes.append((doc, chunk_document(doc)))
                (report.updated if doc_id in known else report.added).append(doc_id)
                continue
            logger.warning("rag.ingest_failed file=%s: %s", doc_id, error.reason, extra={"file": doc_id})
            report.failed.append(error)
        report.removed = sorted(set(known) - seen)
        if writes or report.removed:
            with self._transaction() as tx:
                for doc, chunks in writes:
                    tx.put(doc, chunks, origin)
                for doc_id in report.removed:
                    tx.delete(doc_id)
        self.embed_missing()
        logger.info(
            "rag.index_synced folder=%s added=%d updated=%d removed=%d unchanged=%d failed=%d",
            origin,
            len(report.added),
            len(report.updated),
            len(report.removed),
            len(report.unchanged),
            len(report.failed),
        )
        return report

    def embed_missing(self) -> int:
        """Embed the chunks that have no vector of the embedder's model; returns how many were stored.

        Vectors of other models are dropped first. When the model now returns vectors of another size
        than the stored ones, all of them are recomputed. A failing call is logged and leaves the rest
        for the next write or sync (search falls back to BM25 for those chunks meanwhile). No-op
        without an embedder.
        """
        embedder = self.embedder
        if embedder is None:
            return 0
        model = embedder.model
        with self._transaction() as tx:
            tx.conn.execute("DELETE FROM chunk_vectors WHERE model != ?", (model,))
            stored_dims = {r[0] for r in tx.conn.execute("SELECT DISTINCT dim FROM chunk_vectors")}
            todo = tx.conn.execute(
                "SELECT rowid, title, heading, body FROM chunks "
                "WHERE rowid NOT IN (SELECT id FROM chunk_vectors) ORDER BY rowid"
            ).fetchall()
        done = 0
        for start in range(0, len(todo), EMBED_BATCH):
            batch = todo[start : start + EMBED_BATCH]
            texts = [Chunk("", "", title, heading, body).indexed_text for _, title, heading, body in batch]
            try:
                vectors = embedder.embed(texts)
            except Exception as exc:
                logger.warning(
                    "rag.embeddings_sync_failed model=%s missing=%d %s: %s",
                    model,
                    len(todo) - done,
                    type(exc).__name__,
                    exc,
                )
                return done
            dims = {len(v) for v in vectors}
            if stored_dims and dims != stored_dims:
                logger.warning(
                    "rag.embeddings_dimension_changed model=%s stored=%s now=%s: re-embedding every chunk",
                    model,
                    sorted(stored_dims),
                    sorted(dims),
                )
                with self._transaction() as tx:
                    tx.conn.execute("DELETE FROM chunk_vectors")
                return self.embed_missing()
            stored_dims = dims
            with self._transaction() as tx:
                for (rowid, *_), vector in zip(batch, vectors, strict=True):
                    # The chunk may have been removed while its batch was being embedded.
                    tx.conn.execute(
                        "INSERT OR REPLACE INTO chunk_vectors(id, model, dim, vector) "
                        "SELECT ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunk_meta WHERE id = ?)",
                        (rowid, model, len(vector), vector.tobytes(), rowid),
                    )
            done += len(batch)
        if done:
            logger.info("rag.embeddings_synced model=%s chunks=%d", model, done)
        return done

    def optimize(self) -> None:
        """Merge the FTS5 index segments (worth it after a large build; searches get a little faster)."""
        with self._transaction():
            self._writer.execute("INSERT INTO chunks(chunks) VALUES ('optimize')")

    # ---------------------------------------------------------------------------------------------
    # Lifecycle

    def close(self) -> None:
        """Close every connection; later calls raise ``RuntimeError``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            readers, self._readers = self._readers, []
        for conn in readers:
            conn.close()
        self._writer.close()

    def __enter__(self) -> FtsIndex:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FtsIndex {self.path!r}{' closed' if self._closed else ''}>"


def _fingerprint_bytes(data: bytes) -> str:
    return f"{hashlib.sha256(data).hexdigest()}/{CHUNKER_VERSION}"


class _Tx:
    """Statements run inside one write transaction (the caller holds the lock)."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def executescript_compat(self, script: str) -> None:
        # executescript() would COMMIT our open transaction first; run statements one by one instead.
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    def delete(self, doc_id: str) -> bool:
        conn = self.conn
        conn.execute("DELETE FROM chunks WHERE rowid IN (SELECT id FROM chunk_meta WHERE doc_id = ?)", (doc_id,))
        conn.execute("DELETE FROM chunk_vectors WHERE id IN (SELECT id FROM chunk_meta WHERE doc_id = ?)", (doc_id,))
        conn.execute("DELETE FROM chunk_meta WHERE doc_id = ?", (doc_id,))
        return conn.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,)).rowcount > 0

    def put(self, doc: Document, chunks: Sequence[Chunk], origin: str) -> None:
        self.delete(doc.doc_id)
        conn = self.conn
        conn.execute(
            "INSERT INTO documents(doc_id, title, source, fingerprint, origin, n_chunks) VALUES (?, ?, ?, ?, ?, ?)",
            (doc.doc_id, doc.title, doc.source, f"{doc.sha256}/{CHUNKER_VERSION}", origin, len(chunks)),
        )
        for chunk in chunks:
            if chunk.doc_id != doc.doc_id:
                raise ValueError(f"chunk {chunk.chunk_id!r} belongs to {chunk.doc_id!r}, not {doc.doc_id!r}")
            rowid = conn.execute(
                "INSERT INTO chunk_meta(doc_id, chunk_id) VALUES (?, ?)", (doc.doc_id, chunk.chunk_id)
            ).lastrowid
            conn.execute(
                "INSERT INTO chunks(rowid, title, heading, body) VALUES (?, ?, ?, ?)",
                (rowid, chunk.title, chunk.heading, chunk.text),
            )
